"""Issue 12 (DNS): a server given by name is resolved again every `resolve_interval`; connections to addresses the
name no longer resolves to are retired at their next idle moment (reason `dns_changed`), never cut mid-exchange.

The name's resolution is made controllable without touching the machine: tether runs in a private mount namespace
(`unshare -m`, as root) where a temporary file is bind-mounted over /etc/hosts and another over /etc/nsswitch.conf
(`hosts: files`, so a name missing from the file fails at once instead of asking a DNS server). tether itself reads
the system's resolver (getaddrinfo) like any other program; the test rewrites the hosts file in place (same length,
one write) between resolutions. Origins A and B listen on the same port of 127.0.0.2 and 127.0.0.3. Skipped with the
reason when unshare or the bind mounts are not available.

Asserted: the name moving from A to B sends new requests to B within resolve_interval plus slack, A's idle
connections are closed with reason dns_changed (metrics, access log `up_open=dns_changed`, the error log line) and
A sees all its connections closed; a request in flight on A when the name moves completes (200, served by A) and its
connection is retired when it ends; a failed resolution keeps the old addresses (requests still reach A on the same
pooled connection) and is logged once, its recovery once; `resolve_interval = 0` and IP literals are never resolved
again; a bad `resolve_interval` stops start-up with FILE:LINE. An HTTP/2 server (h2c origins A and B) follows its
name too: new streams reach B, A's connection takes none, its stream in flight completes, then it gets
GOAWAY(NO_ERROR) and is counted as retired for dns_changed.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

import conftest
from conftest import SLOW, LATE, HttpConn
from origin import Origin

NAME = "dnstest.invalid"  # .invalid never resolves in real DNS (RFC 6761); the hosts file alone answers
INTERVAL = 1.0  # resolve_interval in the tests, seconds


def _unshare_reason():
    if os.geteuid() != 0:
        return "needs root for unshare -m and bind mounts"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    try:
        r = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind /etc/hosts /etc/hosts"], capture_output=True,
                           timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return "unshare -m failed: %s" % e
    if r.returncode != 0:
        return "unshare -m with a bind mount failed: %s" % (r.stdout + r.stderr).decode(errors="replace").strip()
    return None


# The resolver's thread publishes to the workers' loops: a ThreadSanitizer build runs this file (tests/CMakeLists.txt).
pytestmark = pytest.mark.multiworker

_REASON = _unshare_reason()
needs_ns = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


def hosts_line(ip):
    # Every version of the file has the same length, written with one write: a resolution never reads half of it.
    return ("127.0.0.1 localhost\n%-15s %s\n" % (ip, NAME)).encode()


class Resolution:
    """The private /etc/hosts and /etc/nsswitch.conf, and a wrapper that runs tether over them."""

    def __init__(self, tmp_path, ip):
        self.hosts = str(tmp_path / "hosts")
        with open(self.hosts, "wb") as f:
            f.write(hosts_line(ip))
        self.nss = str(tmp_path / "nsswitch.conf")
        with open(self.nss, "w") as f:
            f.write("hosts: files\n")
        self.wrapper = str(tmp_path / "tether-ns")
        with open(self.wrapper, "w") as f:
            f.write("#!/bin/sh\nexec unshare -m sh -c 'mount --bind \"$1\" /etc/hosts && "
                    "mount --bind \"$2\" /etc/nsswitch.conf && shift 2 && exec \"$@\"' tether-ns %s %s %s \"$@\"\n"
                    % (self.hosts, self.nss, conftest.TETHER_BIN))
        os.chmod(self.wrapper, 0o755)

    def point(self, ip):
        """Makes NAME resolve to `ip` (None: not at all)."""
        data = hosts_line(ip) if ip else hosts_line("0.0.0.0").replace(b"\n0", b"\n#", 1)
        with open(self.hosts, "r+b") as f:  # in place: the bind mount holds this inode
            f.write(data)
            f.truncate(len(data))


@pytest.fixture
def dns(tmp_path, monkeypatch):
    r = Resolution(tmp_path, "127.0.0.2")
    monkeypatch.setattr(conftest, "TETHER_BIN", r.wrapper)  # Tether() starts the wrapper, which execs tether
    return r


@pytest.fixture
def two_origins():
    """Origins A (127.0.0.2) and B (127.0.0.3) on the same port."""
    started = []
    for _ in range(20):
        a = Origin(host="127.0.0.2", port=0, idle_timeout=60.0)
        try:
            b = Origin(host="127.0.0.3", port=a.port, idle_timeout=60.0)
        except OSError:
            a.sock.close()
            continue
        started = [a.start(), b.start()]
        break
    assert started, "no port free on both 127.0.0.2 and 127.0.0.3"
    yield started
    for o in started:
        o.stop()


def config(port, interval="1s", server=None, workers=2):
    return """
[server]
workers = %d

[upstream backend]
server = %s
resolve_interval = %s
idle_timeout = 60s

[route /]
upstream = backend
""" % (workers, server or "%s:%d" % (NAME, port), interval)


def start_resolved(tether, port, workers, text=None, resolutions=1):
    """Starts tether on config(port, workers) (or `text`) under the private hosts file and waits until its resolver
    thread has resolved NAME `resolutions` times. Returns (tether, the `server` label of its metrics, the resolutions
    counted)."""
    server = "%s:%d" % (NAME, port)
    t = tether(config=text or config(port, workers=workers))
    n = t.wait_metric("tether_upstream_dns_resolutions_total", lambda v: v >= resolutions, upstream="backend",
                      server=server)
    return t, server, n


def get(t, path="/"):
    c = t.connect()
    try:
        return c.get(path)
    finally:
        c.close()


def retired(t, server, reason="dns_changed"):
    return t.metric("tether_upstream_retired_total", upstream="backend", server=server, reason=reason)


def wait_until(what, predicate, timeout):
    deadline = time.monotonic() + timeout * SLOW
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for %s" % what
        time.sleep(0.05)


def wait_log(t, text, timeout=10):
    wait_until("%r in the error log:\n%s" % (text, t.stderr()[-2000:]), lambda: text in t.stderr(), timeout)


def in_flight(t, path):
    """Sends GET `path` on a client connection of its own from a thread; returns (thread, result), where result["resp"]
    is the response once the thread ends."""
    result = {}

    def request():
        c = t.connect(timeout=30)
        try:
            result["resp"] = c.get(path)
        finally:
            c.close()

    th = threading.Thread(target=request)
    th.start()
    return th, result


def finished(th, result):
    """The response of an in_flight() request, once its thread ends (30 s at most)."""
    th.join(30 * SLOW)
    assert not th.is_alive()
    return result["resp"]


def move_and_follow(t, dns, reached, interval=INTERVAL):
    """Points NAME at 127.0.0.3 (origin B), then sends requests until `reached()` says B got one: within the resolve
    `interval` plus slack for a busy machine."""
    dns.point("127.0.0.3")
    deadline = time.monotonic() + (interval + 3 + LATE) * SLOW
    while not reached():
        assert time.monotonic() < deadline, "no request reached B:\n%s" % t.stderr()[-2000:]
        assert get(t).status == 200
        time.sleep(0.05)


@needs_ns
def test_name_moves_new_requests_follow_idle_connections_retire_inflight_completes(tether, dns, two_origins):
    a, b = two_origins
    # The first resolution on the thread brings the whole set (the start-up one kept its first address).
    t, server, _ = start_resolved(tether, a.port, workers=1)
    assert t.metric("tether_upstream_dns_addresses", upstream="backend", server=server) == 1

    # A request in flight on A when the name moves: the origin holds its answer for 3 s.
    th, slow = in_flight(t, "/?delay=3000")
    wait_until("the slow request at A", lambda: a.stats["requests"] >= 1, 5)
    # Meanwhile a parked connection to A: a keep-alive client whose requests reuse one upstream connection.
    c = t.connect()
    for _ in range(3):
        assert c.get("/").status == 200
    c.close()
    assert a.stats["requests"] == 4 and b.stats["requests"] == 0
    t.wait_metric("tether_upstream_idle_connections", lambda v: v == 1, upstream="backend", server=server)

    # New requests go to B within resolve_interval (+ slack for a busy machine).
    move_and_follow(t, dns, lambda: b.stats["requests"] > 0)
    wait_log(t, "dns: %s now resolves to 127.0.0.3:%d (was 127.0.0.2:%d)" % (server, a.port, a.port))
    assert b.stats["requests"] >= 1
    served_by_a = a.stats["requests"]
    for _ in range(3):  # and stay there
        assert get(t).status == 200
    assert a.stats["requests"] == served_by_a

    # The idle connection to A was retired for the change: counted, and the next new connection says why.
    t.wait_metric("tether_upstream_retired_total", lambda v: v >= 1, upstream="backend", server=server,
                  reason="dns_changed")
    lines = t.access_lines()
    assert any("up_open=dns_changed" in line for line in lines), "\n".join(lines[-10:])

    # The request in flight on A completes, answered by A, and its connection is retired once it is idle.
    resp = finished(th, slow)
    assert resp.status == 200, resp
    assert json.loads(resp.body)["target"] == "/?delay=3000"
    t.wait_metric("tether_upstream_retired_total", lambda v: v >= 2, upstream="backend", server=server,
                  reason="dns_changed")
    wait_until("A to see every connection closed", lambda: a.stats["open"] == 0, 5)
    assert retired(t, server) == 2
    assert t.metric("tether_upstream_generated_total", upstream="backend", cause="reset_before_response") == 0
    assert t.metric("tether_upstream_dns_changes_total", upstream="backend", server=server) == 1
    assert t.metric("tether_upstream_dns_failures_total", upstream="backend", server=server) == 0


@needs_ns
def test_failed_resolution_keeps_the_last_addresses(tether, dns, two_origins):
    a, b = two_origins
    t, server, _ = start_resolved(tether, a.port, workers=2)
    c = t.connect()
    assert c.get("/").status == 200
    first_conn = json.loads(c.get("/").body)["conn"]

    dns.point(None)  # the name no longer resolves at all
    failures = t.wait_metric("tether_upstream_dns_failures_total", lambda v: v >= 3, timeout=(3 * INTERVAL + 5),
                             upstream="backend", server=server)
    assert failures >= 3
    # Logged once for the change of state, not once per failure.
    assert t.stderr().count("dns: resolving %s failed" % server) == 1, t.stderr()[-2000:]
    # The last good address stays: requests reach A, on the same pooled connection, nothing retired.
    r = c.get("/")
    assert r.status == 200
    assert json.loads(r.body)["conn"] == first_conn
    assert b.stats["requests"] == 0
    assert retired(t, server) == 0
    assert t.metric("tether_upstream_dns_addresses", upstream="backend", server=server) == 1

    dns.point("127.0.0.2")  # back: logged once, nothing moves
    wait_log(t, "dns: %s resolves again: 127.0.0.2:%d" % (server, a.port), timeout=3 * INTERVAL + 5)
    r = c.get("/")
    assert json.loads(r.body)["conn"] == first_conn
    assert t.stderr().count("dns: resolving %s failed" % server) == 1
    assert retired(t, server) == 0
    c.close()


@needs_ns
def test_resolve_interval_0_and_ip_literals_are_never_resolved_again(tether, dns, two_origins):
    a, b = two_origins
    named = "%s:%d" % (NAME, a.port)
    literal = "127.0.0.2:%d" % a.port
    text = """
[server]
workers = 1

[upstream fixed]
server = %s
resolve_interval = 0

[upstream literal]
server = %s
resolve_interval = 1s

[route /fixed/]
upstream = fixed

[route /literal/]
upstream = literal
""" % (named, literal)
    t = tether(config=text)
    assert get(t, "/fixed/x").status == 200
    assert get(t, "/literal/x").status == 200
    dns.point("127.0.0.3")
    time.sleep(3 * INTERVAL)  # three resolutions would have happened, had either been resolved again
    assert get(t, "/fixed/y").status == 200
    assert b.stats["requests"] == 0
    m = t.metrics_text()
    assert "tether_upstream_dns_resolutions_total{" not in m
    assert "dns: " not in t.stderr()


def test_bad_resolve_interval_is_refused_at_start(tmp_path):
    path = tmp_path / "t.ini"
    path.write_text("[upstream a]\nserver = 127.0.0.1:9\nresolve_interval = 200ms\n[route /]\nupstream = a\n")
    r = subprocess.run([conftest.TETHER_BIN, "serve", "--check", "--config", str(path)], capture_output=True,
                       timeout=30)
    assert r.returncode == 2
    assert "%s:3: resolve_interval: must be 0 (never resolve again) or at least 1s" % path in r.stderr.decode()


@needs_ns
def test_a_reload_keeps_following_the_name(tether, dns, two_origins):
    """A reload keeps the pool of a server given by name (its parked connection is reused) and the pool follows the
    new configuration's resolution: with the same resolve_interval the name's counters go on, and after a reload that
    changes it the name still moves the traffic."""
    a, b = two_origins
    t, server, resolved = start_resolved(tether, a.port, workers=2, resolutions=2)
    c = t.connect()
    conn = json.loads(c.get("/").body)["conn"]
    with open(t.config_path, "w") as f:
        f.write(config(a.port, workers=2) + "\n; same name, port and interval\n")
    t.send_signal(signal.SIGHUP)
    wait_log(t, "reload: applied (generation 2)")
    assert t.metric("tether_upstream_dns_resolutions_total", upstream="backend", server=server) >= resolved
    assert json.loads(c.get("/").body)["conn"] == conn  # the kept pool's parked connection

    with open(t.config_path, "w") as f:
        f.write(config(a.port, interval="2s", workers=2))
    t.send_signal(signal.SIGHUP)
    wait_log(t, "reload: applied (generation 3)")
    assert json.loads(c.get("/").body)["conn"] == conn
    move_and_follow(t, dns, lambda: b.stats["requests"] > 0, interval=2)
    # The client connection whose upstream connection was kept through both reloads: that one is retired, and its
    # next request goes to B.
    at_b = b.stats["requests"]
    assert c.get("/").status == 200
    assert b.stats["requests"] == at_b + 1
    t.wait_metric("tether_upstream_retired_total", lambda v: v >= 1, upstream="backend", server=server,
                  reason="dns_changed")
    c.close()


try:  # the python3-h2 origin of the HTTP/2 upstream tests
    from test_h2_upstream import H2Origin
except (ImportError, pytest.skip.Exception):
    H2Origin = None


@pytest.fixture
def two_h2_origins():
    """h2c origins A (127.0.0.2) and B (127.0.0.3) on the same port."""
    started = []
    for _ in range(20):
        a = H2Origin(host="127.0.0.2")
        try:
            b = H2Origin(host="127.0.0.3", port=a.port)
        except OSError:
            a.stop()
            continue
        started = [a, b]
        break
    assert started, "no port free on both 127.0.0.2 and 127.0.0.3"
    yield started
    for o in started:
        o.stop()


@needs_ns
@pytest.mark.skipif(H2Origin is None, reason="python3-h2 (and grpc, for test_h2_upstream) are not installed")
def test_h2_server_follows_its_name_and_retires_the_old_connection_after_its_streams(tether, dns, two_h2_origins):
    """An HTTP/2 server given by name: after the name moves, new streams go on a connection to the new address; the
    connection to the old one takes no new stream, its stream in flight completes, then it is closed with
    GOAWAY(NO_ERROR) and counted as retired for dns_changed."""
    a, b = two_h2_origins
    h2 = config(a.port, workers=1).replace("idle_timeout = 60s", "idle_timeout = 60s\nprotocol = h2")
    t, server, _ = start_resolved(tether, a.port, workers=1, text=h2)
    assert get(t).status == 200
    assert len(a.requests) == 1 and a.conns == 1

    # A stream in flight on A's connection when the name moves: A answers it only once released.
    th, held = in_flight(t, "/hold")
    wait_until("the held stream at A", lambda: any(r[3] == "/hold" for r in a.requests), 5)

    move_and_follow(t, dns, lambda: len(b.requests) > 0)
    at_a = len(a.requests)
    for _ in range(3):  # new streams stay at B, on one connection
        assert get(t).status == 200
    assert len(a.requests) == at_a and b.conns == 1
    # A's connection still carries the held stream: neither closed nor counted yet.
    assert a.goaways == []
    assert retired(t, server) == 0
    assert t.metric("tether_upstream_h2_connections", upstream="backend", server=server) == 2

    a.release.set()
    resp = finished(th, held)
    assert resp.status == 200, resp
    assert resp.body == b"/hold "
    t.wait_metric("tether_upstream_retired_total", lambda v: v == 1, upstream="backend", server=server,
                  reason="dns_changed")
    wait_until("GOAWAY(NO_ERROR) at A", lambda: a.goaways == [(1, 0)], 5)
    t.wait_metric("tether_upstream_h2_connections", lambda v: v == 1, upstream="backend", server=server)
    assert a.conns == 1  # never reopened
    assert get(t).status == 200 and len(a.requests) == at_a
