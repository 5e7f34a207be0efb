"""Connection lifecycle over TLS, and TLS settings the other suites leave at their defaults.

Covers: max connection lifetime over TLS (HTTP/1.1: the first response after it says Connection: close,
then close_notify; HTTP/2: the two-step GOAWAY); eviction of the least recently used idle connection at
--max-connections over TLS (HTTP/1.1: close_notify, reason `evicted`) and for HTTP/2 (h2c and TLS: a
GOAWAY(NO_ERROR) naming the last stream, then the close, counted in tether_h2_goaway_sent_total{evicted});
session ticket key rotation (`[tls] ticket_rotation`: a ticket of the previous period resumes and is
renewed, an older one means a full handshake; both for a configured rotation and for the 1h default); a
certificate chain file (leaf + intermediate) verified by a client that trusts only the root; two
--tls-listen flags; curl --tlsv1.2 and --tls-max 1.2; and the defaults SETTINGS_MAX_CONCURRENT_STREAMS = 100
(advertised and enforced) and session_cache on.

Ticket rotation is at least 60 s (the configuration refuses less), so the rotation tests move tether's
clock instead of waiting: a small LD_PRELOAD library (compiled here with the system C compiler) shifts
time(2) -- what tether's ticket periods and OpenSSL's session times read -- by an offset read from a file
the test rewrites. Only tether runs with it; the clients keep the real clock. The clock only moves forward.
"""

import os
import re
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from conftest import SLOW, TETHER_BIN
from tls_util import (NO_ERROR, TlsConn, body_of, certs, chain_certs, client_context, curl,  # noqa: F401
                      plain_port, raw_h2, s_client, tls_args, tls_port)

MAX_ID = 2 ** 31 - 1


class RootTlsConn(TlsConn):
    """tls_util.TlsConn verified against `cafile` alone (ALPN http/1.1); closes with a bare FIN."""

    def __init__(self, cafile, port, timeout=5, **ctxkw):
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.set_alpn_protocols(["http/1.1"])
        for k, v in ctxkw.items():
            setattr(ctx, k, v)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
        self.buf = b""

    def get(self, path="/", **kw):
        kw.setdefault("host", "localhost")
        return super().get(path, **kw)

    def is_open(self, wait=0.05):
        """True when the server has not closed (no close_notify, FIN or RST) within `wait` s. Records that
        carry no data (TLS 1.3 NewSessionTicket) are read and processed on the way; data is kept in buf."""
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536)
            self.buf += chunk
            return bool(chunk)
        except socket.timeout:
            return True
        except (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError):
            return False
        finally:
            self.sock.settimeout(5 * SLOW)

    close = TlsConn.close_bare


@pytest.fixture
def root_tls_conns():
    opened = []

    def open_(cafile, port, **kw):
        c = RootTlsConn(cafile, port, **kw)
        opened.append(c)
        return c

    yield open_
    for c in opened:
        c.close()


# ---- 1. max lifetime over TLS ----

def test_max_lifetime_over_tls_http11(tether, site, certs, root_tls_conns):
    # 2 s: a handshake and two requests fit in it on a busy machine too (each response says whether they did)
    t = tether("--root", str(site), "--max-lifetime", "2s", "--idle-timeout", "5s", *tls_args(certs))
    born = time.monotonic()  # before the connect: the server's age of the connection is at most ours
    c = root_tls_conns(certs.ca, tls_port(t))
    for _ in range(2):
        r = c.get("/100.txt")
        assert r.status == 200 and r.header("Connection") is None, r
        assert r.keep_alive() == {"timeout": 5, "max": 1000 - _ - 1}, r
        time.sleep(0.2)
    time.sleep(max(0.0, 2.3 - (time.monotonic() - born)))
    assert c.is_open(0.01), "max_lifetime closed an idle TLS connection: it acts at a request boundary only"
    r = c.get("/4k.bin")
    assert r.status == 200 and r.body == body_of(site, "/4k.bin"), "a response is never cut"
    assert (r.header("Connection") or "").lower() == "close", r
    assert r.header("Keep-Alive") is None, r
    took, how = c.wait_closed_tls(3)
    assert took is not None and took < 2.0 * SLOW, took  # after the response, not at the 5 s idle timeout
    assert how == "close_notify", how
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="max_lifetime")
    lines = t.access_lines(wait_for=3)
    assert [l.split()[-1] for l in lines] == ["keep", "keep", "max_lifetime"], lines


def test_max_lifetime_over_tls_h2_two_step_goaway(tether, site, certs, raw_h2):
    t = tether("--root", str(site), "--max-lifetime", "2s", "--idle-timeout", "30s", *tls_args(certs))
    c = raw_h2(tls_port(t), tls_certs=certs)
    s1 = c.request("/100.txt")  # within the lifetime: no GOAWAY (checked below, after it has passed)
    assert c.response(s1)["reset"] is None and c.status(s1) == 200
    c.wait(lambda: False, 2.2 / SLOW)  # (wait() scales by SLOW)
    assert c.goaways() == [] and not c.closed, "max_lifetime acts at a request boundary only"
    s3 = c.request("/4k.bin")  # the first stream after the lifetime: served, and the connection ends
    assert c.wait(lambda: len(c.goaways()) == 2, 5), c.goaways()
    assert [g[1:] for g in c.goaways()] == [(MAX_ID, NO_ERROR), (s3, NO_ERROR)]
    st = c.response(s3)
    assert st["reset"] is None and c.status(s3) == 200 and st["body"] == body_of(site, "/4k.bin")
    assert c.wait_closed(5) is not None
    assert t.metric("tether_h2_goaway_sent_total", reason="max_lifetime") == 1
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="max_lifetime")


# ---- 1. eviction at max connections, HTTP/1.1 over TLS ----

def test_eviction_over_tls_closes_least_recently_used_idle_with_close_notify(tether, site, certs, root_tls_conns):
    t = tether("--root", str(site), "--workers", "1", "--max-connections", "4", "--idle-timeout", "30s",
               *tls_args(certs))
    port = tls_port(t)
    cs = []
    for _ in range(3):  # 1, 2, 3 of 4 open: at most 75 %, so each keeps the full idle timeout
        c = root_tls_conns(certs.ca, port)
        assert c.get("/100.txt").status == 200
        cs.append(c)
        time.sleep(0.005)  # distinct idle timestamps (milliseconds)
    assert cs[0].get("/style.css").status == 200  # use order now: 1, 2, 0
    time.sleep(0.005)
    busy = root_tls_conns(certs.ca, port)  # handshake done, no request yet: not idle, cannot be evicted
    t.wait_metric("tether_connections_open", lambda v: v == 4)
    t.wait_metric("tether_connections_idle", lambda v: v == 3)
    assert t.closed("evicted") == 0, "evicted at the limit before a fifth connection arrived"

    fifth = root_tls_conns(certs.ca, port)
    r = fifth.get("/4k.bin")
    assert r.status == 200 and r.body == body_of(site, "/4k.bin")
    took, how = cs[1].wait_closed_tls(2)
    assert took is not None, "the least recently used idle TLS connection was not evicted"
    assert how == "close_notify", how
    assert [c.is_open(0.01) for c in (cs[0], cs[2], busy)] == [True, True, True]
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="evicted")
    t.wait_metric("tether_connections_open", lambda v: v == 4)  # (one step after the close is counted)
    assert t.closed("idle_timeout") == 0 and t.closed("tls_error") == 0
    assert cs[2].get("/100.txt").status == 200  # survivors still work
    assert busy.get("/100.txt").status == 200


# ---- 2. eviction of an idle HTTP/2 connection: GOAWAY, then close ----

@pytest.mark.parametrize("transport", ["h2c", "tls"])
def test_evicted_h2_connection_gets_goaway(tether, site, certs, raw_h2, conns, transport):
    t = tether("--root", str(site), "--workers", "1", "--max-connections", "3", "--idle-timeout", "30s",
               "--listen", "127.0.0.1:0", *tls_args(certs), expect_listeners=2)
    port, tls_certs = (tls_port(t), certs) if transport == "tls" else (plain_port(t), None)
    a = raw_h2(port, tls_certs=tls_certs)
    assert a.response(a.request("/100.txt"))["reset"] is None
    time.sleep(0.005)
    b = raw_h2(port, tls_certs=tls_certs)
    sb = b.request("/100.txt")
    assert b.response(sb)["reset"] is None and b.status(sb) == 200
    time.sleep(0.005)
    assert a.response(a.request("/style.css"))["reset"] is None  # a used last: b is the oldest idle now
    t.wait_metric("tether_connections_idle", lambda v: v == 2)
    busy = conns(plain_port(t))
    busy.send(b"GET /100.txt HTTP/1.1\r\n")  # 3 of 3 open; this one is not idle
    t.wait_metric("tether_connections_open", lambda v: v == 3)
    assert b.goaways() == [] and a.goaways() == []

    fourth = conns(plain_port(t))
    r = fourth.get("/4k.bin")
    assert r.status == 200 and len(r.body) == 4096
    assert b.wait(lambda: b.goaways() != [], 2), "the evicted h2 connection got no GOAWAY"
    assert [g[1:] for g in b.goaways()] == [(sb, NO_ERROR)], b.goaways()
    assert b.wait_closed(2) is not None, "the evicted h2 connection was not closed after its GOAWAY"
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="evicted")
    assert t.metric("tether_h2_goaway_sent_total", reason="evicted") == 1
    # the more recently used h2 connection was left alone and still works
    a.pump(0.05)
    assert a.goaways() == [] and not a.closed
    s = a.request("/100.txt")
    assert a.response(s)["reset"] is None and a.status(s) == 200
    busy.send(b"Host: t\r\n\r\n")
    assert busy.response().status == 200


# ---- 3. session ticket key rotation (with a moved clock) ----

CLOCK_SHIM = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* time(2) shifted by the number of seconds in the file named by TETHER_TEST_CLOCK_OFFSET. */
static long long offset_s(void)
{
    const char *path = getenv("TETHER_TEST_CLOCK_OFFSET");
    if (path == NULL) return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[32];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    return strtoll(buf, NULL, 10);
}

time_t time(time_t *out)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    time_t v = ts.tv_sec + (time_t)offset_s();
    if (out != NULL) *out = v;
    return v;
}
"""


@pytest.fixture(scope="module")
def clock_shim(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler to build the clock shim")
    d = tmp_path_factory.mktemp("clock")
    src, so = d / "clock_shim.c", d / "clock_shim.so"
    src.write_text(CLOCK_SHIM)
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(so), str(src)], check=True, timeout=60,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return str(so)


class FakeClock:
    """tether's wall clock (time(2)) at `origin + k` seconds (plus the real time elapsed since set(k)).
    `origin` is a multiple of `period` in the future, so a ticket period starts exactly there."""

    def __init__(self, shim, directory, period):
        self.shim = shim
        self.path = os.path.join(str(directory), "clock-offset")
        self.real0 = int(time.time())
        self.origin = (self.real0 // period + 1) * period
        self.k = None

    def set(self, k):
        assert self.k is None or k > self.k, "the clock only moves forward"
        self.k = k
        with open(self.path + ".tmp", "w") as f:
            f.write(str(self.origin + k - self.real0))
        os.replace(self.path + ".tmp", self.path)

    def env(self):
        preload = [self.shim]
        # A sanitizer build must have its runtime first in the library list; its own time() interceptor
        # then calls the shim's (the next definition).
        out = subprocess.run(["ldd", TETHER_BIN], stdout=subprocess.PIPE, stderr=subprocess.PIPE).stdout.decode()
        m = re.search(r"lib[at]san\.so\S*\s+=>\s+(\S+)", out)
        if m:
            preload.insert(0, m.group(1))
        return dict(os.environ, LD_PRELOAD=" ".join(preload), TETHER_TEST_CLOCK_OFFSET=self.path)


VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class Resumer:
    """Python ssl client connections pinned to one TLS version; one context, so its sessions can be offered."""

    def __init__(self, certs, port, version):
        v = VERSIONS[version]
        self.ctx = client_context(certs, alpn=("http/1.1",), min_version=v, max_version=v)
        self.port = port
        self.version = "TLSv" + version

    def connect(self, session=None):
        """One connection (offering `session`) with one request; returns (resumed?, the session after it)."""
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=5 * SLOW)
        s = self.ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        try:
            assert s.version() == self.version
            s.sendall(b"GET /100.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while True:  # to the server's close: under TLS 1.3 the tickets arrive after the handshake
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 "), data[:200]
            return s.session_reused, s.session
        finally:
            s.close()


@pytest.mark.multiworker
def test_ticket_of_previous_period_resumes_and_older_one_does_not(tether, site, certs, clock_shim, tmp_path):
    clock = FakeClock(clock_shim, tmp_path, 60)
    clock.set(5)  # 5 s into period P
    t = tether("--root", str(site), "--workers", "2", *tls_args(certs), env=clock.env(),
               config="[tls]\nticket_rotation = 1m\nsession_cache = 0\n")  # tickets only: no id resumption
    port = tls_port(t)
    clients = {v: Resumer(certs, port, v) for v in VERSIONS}
    first, renewed = {}, {}
    for v, c in clients.items():
        reused, first[v] = c.connect()
        assert not reused and first[v].has_ticket, v
        assert c.connect(first[v])[0], "TLS %s: a ticket of the current period did not resume" % v
    clock.set(65)  # period P+1: P's key is the previous one, still kept
    for v, c in clients.items():
        reused, renewed[v] = c.connect(first[v])
        assert reused, "TLS %s: a ticket of the previous period did not resume" % v
    clock.set(125)  # period P+2: P's key is gone; P+1's is the previous one
    for v, c in clients.items():
        assert not c.connect(first[v])[0], "TLS %s: a ticket two periods old still resumed" % v
        assert c.connect(renewed[v])[0], "TLS %s: the ticket renewed in the previous period did not resume" % v
    t.wait_metric("tether_tls_handshakes_total", lambda v: v == 6, kind="resumed")
    assert t.metric("tether_tls_handshakes_total", kind="full") == 4
    assert t.metric("tether_tls_handshake_failures_total") == 0


def test_default_ticket_rotation_is_one_hour(tether, site, certs, clock_shim, tmp_path):
    # No [tls] section. Ages stay well below OpenSSL's 2 h session lifetime, so only the key period decides.
    clock = FakeClock(clock_shim, tmp_path, 3600)
    clock.set(5)  # 0:00:05 into hour H
    t = tether("--root", str(site), *tls_args(certs), env=clock.env())
    port = tls_port(t)
    clients = {v: Resumer(certs, port, v) for v in VERSIONS}
    early = {v: c.connect()[1] for v, c in clients.items()}
    # (the real time since the clock was made adds to every setting: 3550 leaves 50 s for a busy machine)
    clock.set(3550)  # 0:59:10: still hour H
    late = {v: c.connect()[1] for v, c in clients.items()}
    clock.set(3605)  # 1:00:05, hour H+1: a ticket an hour old, from the previous period, resumes
    for v, c in clients.items():
        assert c.connect(early[v])[0], "TLS %s: a ticket 1 h old (previous hourly period) did not resume" % v
    clock.set(7205)  # 2:00:05, hour H+2: a ticket 1 h 0 min 55 s old, but from two periods ago
    for v, c in clients.items():
        assert not c.connect(late[v])[0], "TLS %s: a ticket from two hourly periods ago still resumed" % v
    t.wait_metric("tether_tls_handshakes_total", lambda v: v == 2, kind="resumed")
    assert t.metric("tether_tls_handshakes_total", kind="full") == 6


@pytest.mark.multiworker
def test_two_listener_groups_keep_their_own_ticket_rotation(tether, site, certs, clock_shim, tmp_path):
    """Issue 9: `ticket_rotation` in a listen section is that group's own. It was one process global, set by
    whichever group's contexts a worker built last, so both groups rotated with the same period."""
    clock = FakeClock(clock_shim, tmp_path, 3600)  # an hour boundary is also a minute boundary
    clock.set(5)
    groups = "".join("[listen %s]\naddress = 127.0.0.1:0\ntls_cert = %s\ntls_key = %s\nticket_rotation = %s\n\n"
                     % (name, certs.main.cert, certs.main.key, rot) for name, rot in (("fast", "1m"), ("slow", "1h")))
    t = tether("--root", str(site), "--workers", "2", env=clock.env(), expect_listeners=2,
               config=groups + "[tls]\nticket_rotation = 2h\nsession_cache = 0\n")  # tickets only
    fast, slow = (Resumer(certs, port, "1.3") for _, port in t.listen)
    slow.ctx = fast.ctx  # one client context: a session of either group may be offered to the other
    f0, s0 = fast.connect()[1], slow.connect()[1]
    clock.set(65)  # the fast group's next minute: its previous key still resumes (and renews)
    reused, f1 = fast.connect(f0)
    assert reused, "a 1m group's ticket of the previous minute did not resume"
    clock.set(125)  # two minutes on: the fast group's first key is gone, the slow group is in the same hour
    assert not fast.connect(f0)[0], "a 1m group's ticket two minutes old still resumed"
    assert fast.connect(f1)[0]
    assert slow.connect(s0)[0], "a 1h group's ticket two minutes old did not resume"
    # different rotations, different keys: neither group takes the other's tickets
    assert not fast.connect(s0)[0] and not slow.connect(f1)[0]
    assert t.metric("tether_tls_handshake_failures_total") == 0


# ---- 4. a chain file ----

def test_chain_file_verifies_with_only_the_root_trusted(tether, site, chain_certs, root_tls_conns):
    cc = chain_certs
    t = tether("--root", str(site), "--tls-listen", "127.0.0.1:0", "--tls-cert", cc.chain, "--tls-key", cc.leaf.key)
    port = tls_port(t)
    p = curl("--cacert", cc.root, "-w", "\n%{http_code} %{ssl_verify_result}", "https://localhost:%d/100.txt" % port)
    assert p.returncode == 0, p.stderr
    body, _, info = p.stdout.rpartition(b"\n")
    assert body == body_of(site, "/100.txt") and info.split() == [b"200", b"0"], info
    c = root_tls_conns(cc.root, port)  # Python ssl, trusting the root only
    assert c.get("/100.txt").status == 200
    # both certificates are on the wire, leaf first
    rc, out = s_client(port, "-servername", "localhost", "-CAfile", cc.root, "-verify_return_error", "-showcerts")
    assert rc == 0 and "Verify return code: 0 (ok)" in out, out[-2000:]
    subjects = re.findall(r"^\s*(\d+) s:.*?CN ?= ?([^,\n]+)", out, re.M)
    assert [(d, cn.strip()) for d, cn in subjects] == [("0", "localhost"), ("1", "tether test intermediate CA")], \
        subjects
    # the same leaf without its intermediate does not verify against the root: the chain file is what works
    t2 = tether("--root", str(site), "--tls-listen", "127.0.0.1:0", "--tls-cert", cc.leaf.cert,
                "--tls-key", cc.leaf.key)
    p = curl("--cacert", cc.root, "https://localhost:%d/100.txt" % tls_port(t2))
    assert p.returncode != 0, "a leaf alone verified without its intermediate (the test proves nothing)"


# ---- 5. --tls-listen twice; curl --tlsv1.2 and --tls-max 1.2 ----

def test_two_tls_listeners_and_curl_tls12(tether, site, certs):
    t = tether("--root", str(site), "--tls-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0",
               "--tls-cert", certs.main.cert, "--tls-key", certs.main.key, expect_listeners=2)
    assert t.schemes == ["https", "https"], t.schemes
    ports = [p for _, p in t.listen]
    assert len(set(ports)) == 2, ports
    for port in ports:
        url = "https://localhost:%d/100.txt" % port
        for flags, want in ((["--tlsv1.2"], None), (["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2")):
            p = curl("-v", "--http1.1", "--cacert", certs.ca, *flags, "-w", "\n%{http_code}", url)
            assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
            body, _, code = p.stdout.rpartition(b"\n")
            assert code == b"200" and body == body_of(site, "/100.txt")
            m = re.search(r"SSL connection using (TLSv1\.\d)", p.stderr.decode(errors="replace"))
            assert m, p.stderr[-2000:]
            if want:
                assert m.group(1) == want, "curl --tls-max 1.2 negotiated %s" % m.group(1)
    t.wait_metric("tether_tls_handshakes_total", lambda v: v == 4, kind="full")
    t.wait_metric("tether_connections_closed_total", lambda v: v == 4, reason="client_close")


# ---- 6. defaults ----

@pytest.mark.parametrize("transport", ["h2c", "tls"])
def test_default_max_concurrent_streams_is_100(tether, site, certs, raw_h2, transport):
    t = tether("--root", str(site), "--idle-timeout", "30s", "--listen", "127.0.0.1:0", *tls_args(certs),
               expect_listeners=2)
    port, tls_certs = (tls_port(t), certs) if transport == "tls" else (plain_port(t), None)
    # INITIAL_WINDOW_SIZE 0: no response can send DATA, so every accepted stream stays open
    c = raw_h2(port, tls_certs=tls_certs, settings=[(0x4, 0)])
    assert c.wait(lambda: c.server_settings), "no SETTINGS from the server"
    assert c.server_settings.get(0x3) == 100, c.server_settings  # SETTINGS_MAX_CONCURRENT_STREAMS
    assert c.wait_frame(4, flags_mask=1) is not None  # our SETTINGS (window 0) were ACKed
    sids = [c.request("/100.txt") for _ in range(101)]
    assert c.wait(lambda: c.streams[sids[-1]]["reset"] is not None and
                  all(c.streams[s]["headers"] is not None for s in sids[:100]), 10), \
        (c.goaways(), [s for s in sids if c.streams[s]["reset"] is not None])
    assert c.streams[sids[-1]]["reset"] == 7  # REFUSED_STREAM
    assert [s for s in sids[:100] if c.streams[s]["reset"] is not None] == []
    assert t.metric("tether_h2_refused_streams_total") == 1
    c.send(4, 0, 0, (0x4).to_bytes(2, "big") + (65535).to_bytes(4, "big"))  # open the windows
    for s in sids[:100]:
        st = c.response(s)
        assert st["reset"] is None and st["body"] == body_of(site, "/100.txt"), s
    assert c.goaways() == [] and not c.closed


def test_default_session_cache_resumes_by_session_id(tether, site, certs):
    # tickets off, no session_cache key: the per-worker cache (default 20000) resumes by session id
    t = tether("--root", str(site), "--workers", "1", *tls_args(certs), config="[tls]\ntickets = off\n")
    rc, out = s_client(tls_port(t), "-reconnect", "-tls1_2", "-servername", "localhost")
    assert rc == 0, out[-2000:]
    assert out.count("New, TLSv1.2") == 1 and out.count("Reused, TLSv1.2") >= 4, out[-3000:]
    assert "TLS session ticket:" not in out  # resumed by id, not by a ticket
    t.wait_metric("tether_tls_handshakes_total", lambda v: v >= 4, kind="resumed")
