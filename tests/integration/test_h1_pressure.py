"""Connection pressure at `--max-connections` (one worker, so the per-worker limit is the server's).

Covers eviction of the least recently used idle connection when a new one arrives at the limit (and
nothing evicted before one arrives), the adaptive idle timeout above 75 % of the limit (advertised in
`Keep-Alive: timeout=` and really armed), pausing accept when every connection is busy (without
spinning) and resuming it when a connection closes or becomes idle, and 10,000 idle connections: all
counted, a new client still served promptly, and the memory each one costs.
"""

import os
import resource
import select
import socket
import time

import pytest

from conftest import SLOW


PARTIAL = b"GET /100.txt HTTP/1.1\r\n"
REST = b"Host: t\r\n\r\n"


def cpu_seconds(pid):
    """utime + stime of process `pid`, seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def readable(sock, wait):
    return bool(select.select([sock], [], [], wait)[0])


# ---- eviction ----

def test_nothing_is_evicted_before_the_limit_is_exceeded(tether, site, conns):
    t = tether("--root", str(site), "--workers", "1", "--max-connections", "8", "--idle-timeout", "30s")
    cs = []
    for _ in range(8):
        c = conns(t)
        assert c.get("/100.txt").status == 200
        cs.append(c)
    # (each is counted idle just after its response is written, which the client may read first)
    t.wait_metric("tether_connections_idle", lambda v: v == 8)
    time.sleep(0.1)  # an eviction, if any, would show by now
    m = t.metrics()
    assert m['tether_connections_closed_total{reason="evicted"}'] == 0, \
        "an idle connection was evicted although no ninth connection arrived"
    assert m["tether_connections_open"] == 8
    assert m["tether_connections_idle"] == 8
    assert all(c.is_open(0.01) for c in cs)


def test_ninth_connection_evicts_least_recently_used_idle(tether, site, conns):
    t = tether("--root", str(site), "--workers", "1", "--max-connections", "8", "--idle-timeout", "30s")
    cs = []
    for _ in range(8):
        c = conns(t)
        assert c.get("/100.txt").status == 200
        cs.append(c)
        time.sleep(0.005)  # distinct idle timestamps: the server keeps them in milliseconds
    assert t.metric("tether_connections_open") == 8
    # Use order now: 1, 2, ..., 7, 0 (connection 0 was opened first but used last).
    assert cs[0].get("/style.css").status == 200
    time.sleep(0.005)
    ninth = conns(t)
    r = ninth.get("/4k.bin")
    assert r.status == 200 and len(r.body) == 4096
    assert cs[1].wait_closed(2) is not None, "the least recently used idle connection was not evicted"
    # cs[2..6] went idle below 75 % of the limit (or just above) and keep their long timeouts. cs[7] and cs[0]
    # (and the ninth) went idle at 8 of 8, which arms 1 s: a busy machine may get here after that, so they
    # may be closed by then -- by their idle timeout, never evicted.
    assert [c.is_open(0.01) for c in cs[2:7]] == [True] * 5
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="evicted")

    def accounted():
        m = t.metrics()  # one scrape: 9 accepted = 8 open + 1 evicted, or fewer open and idle timeouts
        return (m['tether_connections_closed_total{reason="evicted"}'] == 1 and
                m["tether_connections_open"] + m['tether_connections_closed_total{reason="idle_timeout"}'] == 8)

    deadline = time.monotonic() + 5 * SLOW
    while not accounted():
        assert time.monotonic() < deadline, t.metrics_text()
        time.sleep(0.02)
    assert t.metric("tether_accept_paused") == 0
    assert cs[2].get("/100.txt").status == 200  # survivors still work


# ---- adaptive idle timeout ----

def test_adaptive_idle_timeout_is_advertised(tether, site, conns):
    t = tether("--root", str(site), "--workers", "1", "--max-connections", "8", "--idle-timeout", "10s")
    cs = [conns(t) for _ in range(5)]
    r = cs[0].get("/100.txt")
    assert r.keep_alive()["timeout"] == 10  # 5 of 8 open: below 75 %
    cs.append(conns(t))
    r = cs[1].get("/100.txt")
    assert r.keep_alive()["timeout"] == 10  # 6 of 8 open: exactly 75 %
    assert t.metric("tether_idle_timeout_cuts_total") == 0
    cs.append(conns(t))
    t.wait_metric("tether_connections_open", lambda v: v == 7)
    # 7 of 8: 10 s - 9 s * (28 - 24) / 8 = 5.5 s, rounded down to 5
    for c in (cs[2], cs[0]):
        r = c.get("/100.txt")
        assert r.header("Keep-Alive").startswith("timeout=5, "), r.header("Keep-Alive")
    assert t.metric("tether_idle_timeout_cuts_total") == 2  # what the advisor counts against max_connections


def test_adaptive_idle_timeout_is_armed(tether, site, conns):
    t = tether("--root", str(site), "--workers", "1", "--max-connections", "8", "--idle-timeout", "4s")
    cs = [conns(t) for _ in range(6)]
    t.wait_metric("tether_connections_open", lambda v: v == 6)
    full = cs[0]
    assert full.get("/100.txt").keep_alive()["timeout"] == 4  # 6 of 8: the configured timeout
    short = conns(t)
    t.wait_metric("tether_connections_open", lambda v: v == 7)
    start = time.monotonic()  # before the request: the idle clock cannot start earlier
    r = short.get("/100.txt")
    # 7 of 8: 4 s - 3 s * 4 / 8 = 2.5 s, armed and advertised as 2 s
    assert r.keep_alive()["timeout"] == 2, r.header("Keep-Alive")
    assert short.wait_closed(6) is not None
    took = time.monotonic() - start
    assert 1.95 <= took <= 2.0 + 1.0 * SLOW, took
    assert full.is_open(0.01), "an idle connection keeps the timeout it was promised"
    assert t.closed("idle_timeout") == 1


# ---- accept pause ----

def fill_with_busy(t, conns, n=8):
    cs = []
    for _ in range(n):
        c = conns(t)
        c.send(PARTIAL)
        cs.append(c)
    t.wait_metric("tether_connections_open", lambda v: v == n)
    return cs


def test_accept_pauses_when_all_busy_without_spinning(tether, site, conns):
    t = tether("--root", str(site), "--workers", "1", "--max-connections", "8", "--header-timeout", "30s")
    cs = fill_with_busy(t, conns)
    ninth = conns(t)  # completes in the kernel's backlog
    ninth.send(b"GET /4k.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    assert not readable(ninth.sock, 0.3), "the ninth connection was served above the limit"
    assert t.metric("tether_accept_paused") == 1
    assert t.metric("tether_accept_pauses_total") >= 1
    assert t.metric("tether_connections_open") == 8
    assert t.metric("tether_connections_accepted_total") == 8
    cpu0 = cpu_seconds(t.proc.pid)
    time.sleep(1.0)
    used = cpu_seconds(t.proc.pid) - cpu0
    assert used < 0.3, "the server spun while paused: %.2f s CPU in 1 s" % used
    assert not readable(ninth.sock, 0)
    start = time.monotonic()
    cs[0].close()
    r = ninth.response()
    took = time.monotonic() - start
    assert r.status == 200 and len(r.body) == 4096
    assert took < 2.0 * SLOW, took  # at the close: the other 7 would hold it for their 30 s header timeout
    assert t.metric("tether_accept_paused") == 0
    assert t.metric("tether_connections_accepted_total") == 9
    # The other busy connections were left alone and can finish their requests.
    cs[1].send(REST)
    assert cs[1].response().status == 200


def test_accept_resumes_when_a_busy_connection_goes_idle(tether, site, conns):
    t = tether("--root", str(site), "--workers", "1", "--max-connections", "8", "--header-timeout", "30s",
               "--idle-timeout", "30s")
    cs = fill_with_busy(t, conns)
    ninth = conns(t)
    # Connection: close, so that the ninth never idles (its own 1 s idle timeout would blur the count below)
    ninth.send(b"GET /style.css HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert not readable(ninth.sock, 0.3)
    assert t.metric("tether_accept_paused") == 1
    # Connection 0 finishes its request and becomes idle: it can now be evicted to make room.
    cs[0].send(REST)
    assert cs[0].response().status == 200
    # At 8 of 8 the adaptive idle timeout arms 1 s for connection 0: being served only when that expires
    # is the bug this looks for. The close reason tells the two apart whatever the machine's speed: evicted
    # as it went idle (the fix), or closed by that idle timeout (the bug).
    assert readable(ninth.sock, 3 * SLOW), "the ninth connection waits although an idle one could be evicted"
    r = ninth.response()
    assert r.status == 200 and r.body == b"body{}\n"
    assert cs[0].wait_closed(1) is not None
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="evicted")
    assert t.closed("idle_timeout") == 0, "connection 0 was closed by its idle timeout, not evicted"
    assert t.metric("tether_accept_paused") == 0


# ---- 10,000 idle connections ----

N_IDLE = 10_000


def _request_batch(socks, path=b"/100.txt", expect_len=100):
    req = b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    for s in socks:
        s.sendall(req)
    for s in socks:
        buf = b""
        while True:
            chunk = s.recv(4096)
            assert chunk, "closed before the response"
            buf += chunk
            head, sep, body = buf.partition(b"\r\n\r\n")
            if sep and len(body) >= expect_len:
                break
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert len(body) == expect_len


def test_ten_thousand_idle_connections(tether, site, conns):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < N_IDLE + 1000:
        pytest.skip("RLIMIT_NOFILE hard limit %d is below %d" % (hard, N_IDLE + 1000))
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = []
    began = time.monotonic()
    try:
        t = tether("--root", str(site), "--workers", "1", "--max-connections", "12000", "--idle-timeout", "60s",
                   "--header-timeout", "60s")
        warm = conns(t)
        assert warm.get("/100.txt").status == 200
        warm.close()
        t.wait_metric("tether_connections_open", lambda v: v == 0)
        rss0 = vm_rss_kib(t.proc.pid)

        batch = []
        for i in range(N_IDLE):
            s = socket.create_connection(t.addr, timeout=10 * SLOW)
            socks.append(s)
            batch.append(s)
            if len(batch) == 500:
                _request_batch(batch)
                batch = []
            assert time.monotonic() - began < 45 * SLOW, "opening %d connections took too long (%d done)" % (N_IDLE, i)
        _request_batch(batch)
        opened = time.monotonic() - began
        t.wait_metric("tether_connections_idle", lambda v: v == N_IDLE, timeout=10)
        m = t.metrics()
        assert m["tether_connections_open"] == N_IDLE
        assert m["tether_connections_accepted_total"] == N_IDLE + 1
        assert m["tether_buffers_in_use"] <= 2
        rss1 = vm_rss_kib(t.proc.pid)

        start = time.monotonic()
        fresh = conns(t)
        r = fresh.get("/4k.bin")
        took = time.monotonic() - start
        assert r.status == 200 and len(r.body) == 4096
        assert took < 2.0 * SLOW, "a new client waited %.3f s next to %d idle connections" % (took, N_IDLE)
        # An old idle connection is still usable.
        _request_batch([socks[0], socks[N_IDLE // 2], socks[-1]])

        per_conn = (rss1 - rss0) / N_IDLE
        print("\n%d idle connections: opened in %.1f s, server RSS %d -> %d KiB, %.2f KiB per connection, "
              "fresh request %.1f ms" % (N_IDLE, opened, rss0, rss1, per_conn, took * 1000))
        # AddressSanitizer adds redzones to every allocation: the sanitizer build gets a looser bound.
        assert per_conn < 4.0 * SLOW, "%.2f KiB per idle connection" % per_conn
        # The server closes them all on SIGTERM (so the TIME_WAITs are on its side).
        assert t.stop() == 0
        assert time.monotonic() - began < 60 * SLOW
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
