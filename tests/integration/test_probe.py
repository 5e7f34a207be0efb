"""tether probe: the idle timeout and max requests of servers with known settings (tether itself, Debian's
nginx), the --client-idle verdict, --json, an origin that never closes idle connections, and every failure
mode ending with a clear message and a non-zero exit. https (TLS, ALPN, resumption): test_probe_tls.py."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import LATE, SLOW, TETHER_BIN


def probe(*args, timeout=60):
    return subprocess.run([TETHER_BIN, "probe"] + list(args), capture_output=True, text=True,
                          timeout=timeout * SLOW)


def probe_json(*args):
    out = probe("--json", *args)
    assert out.returncode == 0, out
    return json.loads(out.stdout)


def near(measured_ms, want_ms):
    """Within 10 % or 200 ms (the issue's tolerance), plus LATE above and half of it below: the probe times an
    idle connection from reading its response to seeing it closed, and a busy machine delays either read."""
    tol = max(0.10 * want_ms, 200)
    return want_ms - tol - LATE * 500 <= measured_ms <= want_ms + tol + LATE * 1000


def recommended_ms(idle_ms):
    """The probe's advice for a measured idle timeout (docs/probe-bench.md): the timeout to the nearest 100 ms,
    minus max(1 s, 20 %), never below half of it, rounded down to 100 ms. Returns (timeout, advice) in ms.
    Tests compare the advice with the rule applied to what was measured, not with a constant: a measurement
    50 ms late (a busy machine) moves the advice by 100 ms."""
    t = (int(idle_ms) + 50) // 100 * 100
    margin = max(1000, t // 5)
    rec = max(t - margin if t > margin else 0, t // 2)
    return t, rec // 100 * 100


def timeout_verdict(said_ms, idle_ms):
    """The probe's verdict on `Keep-Alive: timeout=` (docs/probe-bench.md): true within [T, T + 1 s], give or
    take max(100 ms, 5 %) of the measured timeout."""
    got = int(idle_ms)
    tol = max(100, got // 20)
    if got + tol < said_ms:
        return "false: the server closes idle connections before the advertised timeout"
    if got > said_ms + 1000 + tol:
        return "understated: the server waits longer than it says (harmless)"
    return "true"


def secs(ms):
    """The probe's way of writing a duration in seconds ("2 s", "2.1 s")."""
    return "%d s" % (ms // 1000) if ms % 1000 == 0 else "%.1f s" % (ms / 1000.0)


def advice_candidates(text):
    """(server timeout, advice) pairs the report's idle timeout line allows: it prints the earliest close in
    seconds with 2 decimals (in ms with 1 below a second), so the millisecond value the advice was computed
    from is known to +-5 ms."""
    m = re.search(r"^idle timeout +(\d+\.\d+) (m?s) \(earliest close", text, re.M)
    assert m, text
    ms = float(m.group(1)) * (1 if m.group(2) == "ms" else 1000)
    return {recommended_ms(v) for v in (ms - 5, ms, ms + 4.99)}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- tether with known settings ----

@pytest.fixture
def known(tether, site):
    return tether("--root", str(site), "--idle-timeout", "2s", "--max-requests", "7", "--workers", "1")


def test_tether_idle_timeout_and_max_requests_are_measured(known):
    r = probe_json(known.url("/100.txt"), "--max-wait", "20s")
    idle = r["idle_timeout"]
    assert idle["measured"] and not idle["longer_than_max_wait"], r
    assert near(idle["ms"], 2000), idle
    assert idle["connections"] == 8 and idle["closed"] == 8
    assert r["max_requests"] == {"count": 7, "end": "said_close", "at_least": False, "bound": 1000}
    assert r["http11_persists"] is True
    assert r["http10_keepalive"] == "persists"
    ka = r["keep_alive"]
    assert ka["field"] == "timeout=2, max=6"
    assert ka["timeout_s"] == 2 and ka["max"] == 6
    # tether's field is true (near() above); the probe judges it from its measurement, which on a busy machine
    # can come out more than 100 ms short (it times from reading the response, maybe late): its verdict must
    # follow its rule on what it measured -- "true" when it measured 2.0 s
    assert ka["timeout_verdict"] == timeout_verdict(2000, idle["ms"]), (ka, idle)
    assert ka["timeout_true"] is (ka["timeout_verdict"] == "true") and ka["max_true"] is True
    assert r["pipelining"] == {"result": "in_order", "in_order": True, "statuses": [200, 404, 200, 200]}
    assert r["recommended_client_idle_ms"] == recommended_ms(idle["ms"])[1]  # 1000 when measured at 2.0 s
    assert r["status"] == 200 and r["server"] == "tether" and r["tls"] is None
    assert r["url"] == known.url("/100.txt") and r["origin"] == "127.0.0.1:%d" % known.port
    assert r["reuse"]["reused_samples"] == 6
    # the stated bounds hold
    assert r["connections_opened"] <= 16
    assert r["requests_sent"] <= 1000 + 19


def test_client_idle_verdict_says_what_to_set(known):
    out = probe(known.url("/100.txt"), "--max-wait", "20s", "--client-idle", "60s")
    assert out.returncode == 0, out
    text = out.stdout
    # "within 1.0 s" and "the server's 2 s ... at most 1 s" when the close is measured at 2.0 s; a busy
    # machine may measure 2.05 s, which the probe rounds to 2.1 s: the rule, applied to what it printed
    said = [("a client or proxy must retire idle connections to this origin within %.1f s" % (rec / 1000.0),
             "your client keeps idle connections for 60 s, longer than the server's %s: expect stale-connection "
             "failures (502, ECONNRESET); set it to at most %s" % (secs(t), secs(rec)))
            for t, rec in advice_candidates(text)]
    assert any(a in text and b in text for a, b in said), (said, text)
    assert all(near(t, 2000) for t, _ in advice_candidates(text)), text
    assert "7 per connection" in text
    assert "answered in order" in text
    # a safe client idle timeout is called safe
    out = probe(known.url("/100.txt"), "--max-wait", "20s", "--client-idle", "500ms", "--max-requests", "3")
    assert any("safely under the server's %s" % secs(t) in out.stdout for t, _ in advice_candidates(out.stdout)), \
        out.stdout


def test_origin_that_never_closes_idle_connections_is_longer_than_max_wait(tether, site):
    t = tether("--root", str(site), "--idle-timeout", "1h", "--workers", "1")
    start = time.monotonic()
    r = probe_json(t.url("/100.txt"), "--max-wait", "2s", "--max-requests", "50")
    took = time.monotonic() - start
    assert r["idle_timeout"]["longer_than_max_wait"] is True
    assert r["idle_timeout"]["measured"] is False and r["idle_timeout"]["closed"] == 0
    assert r["recommended_client_idle_ms"] is None
    assert r["max_requests"]["count"] == 50 and r["max_requests"]["at_least"] is True
    # it waited --max-wait for the parked connections, then stopped (1 h would time the test out)
    assert 2.0 <= took < 2.0 + 8 * SLOW
    out = probe(t.url("/100.txt"), "--max-wait", "1500ms", "--max-requests", "5")
    assert out.returncode == 0
    assert "longer than 1.5 s" in out.stdout


# ---- nginx with known settings ----

NGINX_CONF = """
worker_processes 1;
daemon off;
master_process off;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 256; }}
http {{
  access_log off;
  keepalive_timeout 3s;
  keepalive_requests 11;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""


@pytest.fixture
def nginx(tmp_path, site):
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    work = tmp_path / "nginx"
    work.mkdir()
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=work, port=port, root=site))
    proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(work)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start: %s" % proc.stderr.read().decode())
                time.sleep(0.05)
        yield "http://127.0.0.1:%d" % port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_nginx_idle_timeout_and_max_requests_are_measured(nginx):
    r = probe_json(nginx + "/100.txt", "--max-wait", "20s", "--client-idle", "60s")
    assert near(r["idle_timeout"]["ms"], 3000), r["idle_timeout"]
    assert r["max_requests"]["count"] == 11 and r["max_requests"]["end"] == "said_close"
    assert r["server"].startswith("nginx")
    assert r["keep_alive"]["field"] is None  # keepalive_timeout without a header timeout sends none
    # 2000 and "the server's 3 s ... at most 2 s" when measured at 3.0 s (nginx's own timer may close later)
    t, rec = recommended_ms(r["idle_timeout"]["ms"])
    assert r["recommended_client_idle_ms"] == rec
    assert r["client_idle_ms"] == 60000
    assert any("longer than the server's %s" % secs(t) in v and "at most %s" % secs(rec) in v
               for v in r["verdicts"]), r["verdicts"]
    assert r["pipelining"]["in_order"] is True


# ---- what reuse saves: claimed only when measured ----

class DelayRelay:
    """A TCP relay in front of `port` that holds back data the client sends, as `hold(conn, chunk, data)` says
    (seconds; conn and chunk count from 1 in accept and read order, data is what the client's read returned).
    It makes one kind of request or handshake slower than the other by far more than any machine's noise, so
    the probe's verdict on what reuse or resumption saves can be checked whatever the machine's speed.
    Closes pass through as half-closes; every thread ends at close()."""

    def __init__(self, port, hold):
        self.target = ("127.0.0.1", port)
        self.hold = hold
        self.lock = threading.Lock()
        self.accepted = 0
        self.held = []  # (conn, chunk) of every chunk held back
        self.socks, self.threads = [], []
        self.stopping = False
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._spawn(self._accept)

    def _spawn(self, fn, *args):
        th = threading.Thread(target=fn, args=args, daemon=True)
        with self.lock:
            self.threads.append(th)
        th.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.stopping:
                    c.close()
                    return
                self.accepted += 1
                n = self.accepted
                self.socks.append(c)
            self._spawn(self._conn, c, n)

    def _conn(self, c, n):
        try:
            up = socket.create_connection(self.target, timeout=10 * SLOW)
        except OSError:
            c.close()
            return
        up.settimeout(None)
        with self.lock:
            self.socks.append(up)
        self._spawn(self._pipe, up, c, None)
        self._pipe(c, up, n)

    def _pipe(self, src, dst, n):
        """Copies src to dst until EOF, holding back client chunks (n set) as told; then half-closes dst."""
        chunk = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if n is not None:
                    chunk += 1
                    wait = self.hold(n, chunk, data)
                    if wait:
                        with self.lock:
                            self.held.append((n, chunk))
                        time.sleep(wait)
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        with self.lock:
            self.stopping = True
            socks = list(self.socks)
        for s in [self.listener] + socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.listener.close()
        with self.lock:
            threads = list(self.threads)
        for th in threads:
            th.join(5 * SLOW)
        for s in socks:
            s.close()
        assert not any(th.is_alive() for th in threads), "relay threads did not end"


@pytest.fixture
def relay():
    """Factory: relay(port, hold) -> a running DelayRelay; all are closed (threads joined) at teardown."""
    started = []

    def start(port, hold):
        r = DelayRelay(port, hold)
        started.append(r)
        return r

    yield start
    for r in started:
        r.close()


HOLD = 0.3 * SLOW  # far above a request's or a handshake's time on loopback, whatever the load


# Over http the probe opens 5 new connections one after another (one request each), then one for its
# sequential requests (the 6th): the relay delays the requests on the reused connection, or the new ones.
@pytest.mark.parametrize("slow", ["reused", "new"])
def test_reuse_saving_is_claimed_only_when_measured(tether, site, relay, slow):
    t = tether("--root", str(site), "--idle-timeout", "1s", "--workers", "1")
    if slow == "reused":  # every request after the first on connection 6: reusing is slower
        hold = lambda conn, chunk, data: HOLD if conn == 6 and chunk > 1 else 0  # noqa: E731
    else:  # the one request on each of the first 5 connections: reusing is faster by HOLD at least
        hold = lambda conn, chunk, data: HOLD if conn <= 5 else 0  # noqa: E731
    rl = relay(t.port, hold)
    r = probe_json("http://127.0.0.1:%d/100.txt" % rl.port, "--max-wait", "5s", "--max-requests", "4")
    assert r["max_requests"]["count"] == 4 and r["reuse"]["reused_samples"] == 3, r
    held = {c for c, _ in rl.held}
    assert held == ({6} if slow == "reused" else {1, 2, 3, 4, 5}), rl.held  # the probe's order, as assumed
    reuse = r["reuse"]
    new, reused = reuse["new_connection_ms"], reuse["reused_ms"]
    saving = [v for v in r["verdicts"] if v.startswith("reusing a connection sav")]
    assert len(saving) == 1, r["verdicts"]
    if slow == "reused":
        assert reused >= HOLD * 1000 > new, reuse
        assert reuse["saving_ms"] is None, reuse
        assert saving[0].startswith("reusing a connection saved no measurable time here (median request times: "
                                    "new connection "), saving
    else:
        assert new >= HOLD * 1000 > reused, reuse
        assert abs(reuse["saving_ms"] - (new - reused)) < 0.01, reuse
        assert re.fullmatch(r"reusing a connection saves \d+(\.\d+)? m?s per request \(\d+\.\dx faster than a new "
                            r"connection\)", saving[0]), saving
    assert not any(re.search(r"saves? -|saved? -", v) for v in r["verdicts"]), r["verdicts"]


# ---- failures: a clear message and a non-zero exit ----

def test_refused_port_is_a_clear_error():
    port = free_port()
    out = probe("http://127.0.0.1:%d/" % port, "--max-wait", "2s")
    assert out.returncode == 1
    assert out.stderr.startswith("tether probe: cannot connect to 127.0.0.1:%d: connection refused" % port), out.stderr
    out = probe("--json", "http://127.0.0.1:%d/" % port)
    assert out.returncode == 1
    assert "connection refused" in json.loads(out.stdout)["error"]


class RawServer:
    """Accepts connections and runs `handle(sock)` on each, in threads."""

    def __init__(self, handle):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.handle = handle
        self.conns = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self.handle, args=(c,), daemon=True).start()

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def raw_server():
    servers = []

    def start(handle):
        s = RawServer(handle)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def test_garbage_speaking_port_is_a_clear_error(raw_server):
    def garbage(c):
        try:
            c.recv(4096)
            c.sendall(b"\x00\x01SSH-2.0-not-http garbage\r\n\r\n")
        except OSError:
            pass

    s = raw_server(garbage)
    out = probe("http://127.0.0.1:%d/" % s.port, "--max-wait", "2s")
    assert out.returncode == 1
    assert "is not a valid HTTP/1.x response" in out.stderr, out.stderr
    assert out.stdout == ""


def test_silent_server_times_out_with_a_clear_error(raw_server):
    s = raw_server(lambda c: c.recv(4096))
    start = time.monotonic()
    out = probe("http://127.0.0.1:%d/" % s.port, "--timeout", "1s")
    assert out.returncode == 1
    assert "no response within 1.0 s" in out.stderr, out.stderr
    assert time.monotonic() - start < 5 * SLOW


def test_bad_arguments_exit_2():
    for bad in (["ftp://x/"], [], ["http://x:99999/"], ["--max-wait", "soon", "http://x/"], ["a", "b"]):
        out = probe(*bad)
        assert out.returncode == 2 and out.stderr.startswith("tether probe: "), (bad, out)


def test_help_states_the_bounds():
    out = probe("--help")
    assert out.returncode == 0
    assert out.stdout.startswith("usage: tether probe URL")
    for flag in ("--json", "--max-wait", "--client-idle", "--insecure", "--max-requests", "--timeout"):
        assert flag in out.stdout
    assert "at most 16 connections" in out.stdout and "--max-requests + 19 requests" in out.stdout


# ---- issue 13: first contact (-H, a warning for 3xx/4xx) ----

def answer_once(status_line, extra=b""):
    """A raw_server handler: records the request head, answers one response and closes."""
    heads = []

    def handle(c):
        try:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = c.recv(4096)
                if not chunk:
                    return
                buf += chunk
            heads.append(buf.split(b"\r\n\r\n")[0].decode())
            c.sendall(b"HTTP/1.1 " + status_line + b"\r\nContent-Length: 2\r\nConnection: close\r\n" + extra +
                      b"\r\nok")
        except OSError:
            pass
        finally:
            c.close()

    return handle, heads


def fields_of(head):
    return [tuple(part.strip() for part in line.split(":", 1)) for line in head.split("\r\n")[1:]]


def test_header_flags_are_sent_and_host_replaces_the_urls(raw_server):
    handle, heads = answer_once(b"200 OK")
    s = raw_server(handle)
    out = probe("http://127.0.0.1:%d/x" % s.port, "-H", "Host: vhost.test", "--header", "X-Probe:  one ",
                "-H", "Accept: text/html", "--max-wait", "2s", "--max-requests", "2")
    assert out.returncode == 0, out.stderr
    assert heads, "no request reached the server"
    for head in heads:
        fields = fields_of(head)
        hosts = [v for k, v in fields if k.lower() == "host"]
        assert hosts == ["vhost.test"], head
        assert ("X-Probe", "one") in fields and ("Accept", "text/html") in fields, head
    assert "warning" not in out.stderr, out.stderr


def test_header_flags_that_probe_sets_itself_or_are_malformed_exit_2():
    for bad in ("Connection: close", "content-length: 5", "User-Agent: x", "no colon", ": empty name",
                "Bad Name: x", "Host:"):
        out = probe("-H", bad, "http://127.0.0.1:1/")
        assert out.returncode == 2 and out.stderr.startswith("tether probe: --header "), (bad, out.stderr)


def test_a_4xx_answer_is_measured_with_a_warning(tether, site):
    t = tether("--root", str(site), "--idle-timeout", "1s", "--workers", "1")
    out = probe("http://127.0.0.1:%d/no-such-page" % t.port, "--max-wait", "5s", "--max-requests", "3")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^tether probe: warning: http://127\.0\.0\.1:\d+/no-such-page answered 404 Not Found: "
                     r"you are measuring an error page", out.stderr, re.M), out.stderr
    # the page that exists: no warning
    out = probe("http://127.0.0.1:%d/100.txt" % t.port, "--max-wait", "5s", "--max-requests", "3")
    assert out.returncode == 0 and "warning" not in out.stderr, out.stderr


def test_a_redirect_is_measured_with_a_warning_naming_its_location(raw_server):
    handle, _ = answer_once(b"301 Moved Permanently", b"Location: https://example.test/x\r\n")
    s = raw_server(handle)
    out = probe("--json", "http://127.0.0.1:%d/x" % s.port, "--max-wait", "2s", "--max-requests", "2")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == 301
    assert "answered 301 Moved Permanently, a redirect to https://example.test/x: you are measuring the redirect" \
        in out.stderr, out.stderr
