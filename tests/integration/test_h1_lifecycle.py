"""The life of one connection outside the happy path: deadlines, 100-continue, lingering close, socket
options, memory held while idle, and the connection metrics.

Covers `--header-timeout` (partial head with 408, silent connection, reused connection, slowloris next to
a served client), `--body-timeout`, `Expect: 100-continue` (within and above the body limit), lingering
close after an error response with unread request content, TCP_NODELAY and `--tcp-keepalive` on the
server's sockets, idle connections holding no buffers, and the connection gauges, counters and
histograms (`tether_requests_per_connection`, `tether_idle_gap_seconds`).
"""

import ctypes
import os
import select
import socket
import subprocess
import time

import pytest

from conftest import SLOW



def timed_close(c, timeout=4):
    """Seconds until the server closes `c` (FIN or RST), asserting that it does."""
    took = c.wait_closed(timeout)
    assert took is not None, "the server kept the connection open"
    return took


# ---- header timeout ----

def test_header_timeout_cuts_partial_head_with_408(tether, site, conns):
    t = tether("--root", str(site), "--header-timeout", "1s")
    start = time.monotonic()  # before the connect: the header clock cannot start earlier
    c = conns(t)
    c.send(b"GET / HTTP/1.1\r\nHo")
    timed_close(c)
    took = time.monotonic() - start
    assert 0.95 <= took <= 2.0 * SLOW, took
    assert c.buf.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), c.buf
    head = c.buf.split(b"\r\n\r\n")[0].lower()
    assert b"\r\nconnection: close" in head
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="header_timeout")
    assert t.metric("tether_requests_total", **{"class": "4xx"}) == 1


def test_header_timeout_closes_silent_connection(tether, site, conns):
    t = tether("--root", str(site), "--header-timeout", "1s")
    start = time.monotonic()
    c = conns(t)
    timed_close(c)
    took = time.monotonic() - start
    assert 0.95 <= took <= 2.0 * SLOW, took
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="header_timeout")
    assert t.closed("idle_timeout") == 0


def test_header_timeout_counts_from_first_byte_of_next_head(tether, site, conns):
    # Idle for 0.7 s (within the 5 s idle timeout), then a partial head: it gets the full 1 s from its first
    # byte, not 1 s from the previous response.
    t = tether("--root", str(site), "--header-timeout", "1s", "--idle-timeout", "5s")
    c = conns(t)
    assert c.get("/100.txt").status == 200
    time.sleep(0.7)
    start = time.monotonic()
    c.send(b"GET /100.txt HTTP/1.1\r\nHost")
    timed_close(c)
    took = time.monotonic() - start
    assert 0.95 <= took <= 2.0 * SLOW, took  # counted from the previous response it would be ~0.3 s
    assert c.buf.startswith(b"HTTP/1.1 408 "), c.buf
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="header_timeout")


def test_slowloris_is_cut_while_others_are_served(tether, site, conns):
    # One worker: while a client drips its head a byte at a time, another one is answered again and again
    # (each answer comes while the slow connection is still open), and the dripping one is cut at the header
    # timeout. A worker blocked on the slow client would answer the fast one only after the cut.
    t = tether("--root", str(site), "--header-timeout", "1s", "--workers", "1")
    start = time.monotonic()  # before the connect: the header clock cannot start earlier
    slow = conns(t)
    fast = conns(t)
    drip = b"GET /100.txt HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 100
    cut_at = None
    got = b""
    served_meanwhile = 0
    for i in range(len(drip)):
        try:
            slow.send(drip[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            cut_at = time.monotonic() - start
            break
        r = fast.get("/4k.bin")
        assert r.status == 200 and len(r.body) == 4096
        readable, _, _ = select.select([slow.sock], [], [], 0.1)
        if readable:
            try:
                chunk = slow.sock.recv(4096)
            except ConnectionResetError:
                chunk = b""
            got += chunk
            if not chunk or b"\r\n\r\n" in got:
                cut_at = time.monotonic() - start
                break
        served_meanwhile += 1  # answered, and the slow connection still open after it
        if time.monotonic() - start > 4 * SLOW:
            break
    assert cut_at is not None, "the slow client was never cut"
    assert 0.95 <= cut_at <= 2.0 * SLOW, cut_at
    assert got == b"" or got.startswith(b"HTTP/1.1 408 "), got
    assert served_meanwhile >= 2, "only %d answers to the other client while the slow one dripped" % served_meanwhile
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="header_timeout")
    assert fast.is_open(0.05)


# ---- body timeout ----

def test_body_timeout_closes_stalled_content(tether, site, conns):
    t = tether("--root", str(site), "--body-timeout", "1s", "--header-timeout", "10s")
    c = conns(t)
    c.send(b"GET /100.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
    start = time.monotonic()
    r = c.response()  # static routes answer first and discard the content
    assert r.status == 200
    took = c.wait_closed(4)
    assert took is not None, "a stalled body was never cut"
    took = time.monotonic() - start
    assert 0.8 <= took <= 2.0 * SLOW, took
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="body_timeout")


def test_body_timeout_is_between_reads(tether, site, conns):
    # Content every 0.7 s (1.3 s to spare for a busy machine) outlives the 2 s body timeout in total; then it
    # stops, and the connection is cut 2 s after the last piece.
    t = tether("--root", str(site), "--body-timeout", "2s")
    c = conns(t)
    c.send(b"GET /100.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\nabc")
    assert c.response().status == 200
    first = time.monotonic()
    for _ in range(3):
        time.sleep(0.7)
        assert c.is_open(0.01), "cut although content kept arriving"
        last = time.monotonic()  # before the piece: the clock restarts when it arrives
        c.send(b"def")
    timed_close(c, timeout=6)
    now = time.monotonic()
    assert now - first >= 2.1, now - first
    assert 1.95 <= now - last <= 2.0 + 1.0 * SLOW, now - last
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="body_timeout")


# ---- 100-continue ----

@pytest.mark.parametrize("method,status", [("POST", 405), ("GET", 200)])
def test_expect_100_continue(tether, site, conns, method, status):
    t = tether("--root", str(site))
    c = conns(t)
    c.send("%s /100.txt HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n" % method)
    interim = c.response(skip_1xx=False)
    assert interim.status == 100
    assert interim.raw_head == b"HTTP/1.1 100 Continue\r\n\r\n"
    r = c.response()
    assert r.status == status
    if status == 200:
        assert r.body == b"x" * 99 + b"\n"
    else:
        assert "GET" in (r.header("Allow") or "")
    assert r.header("Connection") is None
    c.send(b"hello")
    r = c.get("/style.css")
    assert r.status == 200 and r.body == b"body{}\n"
    assert c.is_open(0.05)
    assert t.metric("tether_connections_accepted_total") == 1


def test_expect_100_continue_over_limit_gets_413_only(tether, site, conns):
    t = tether("--root", str(site))
    c = conns(t)
    c.send(b"POST /100.txt HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\n\r\n")
    r = c.response(skip_1xx=False)
    assert r.status == 413, r
    assert r.header("Connection") == "close"
    timed_close(c, timeout=3)
    assert b"100 Continue" not in c.buf
    c.sock.shutdown(socket.SHUT_WR)
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="bad_request")


# ---- lingering close ----

def test_error_response_survives_unread_content(tether, site, conns):
    # A client that writes its whole request before reading: 100 KB of the body, then (the 413 has been sent
    # by then) 400 KB more. An abortive close with unread input would reset the connection under its writes.
    t = tether("--root", str(site))
    c = conns(t)
    c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n" + b"z" * 100_000)
    assert select.select([c.sock], [], [], 2 * SLOW)[0], "no response to an oversized request"
    time.sleep(0.1)  # a reset, if any, arrives by now
    try:
        for _ in range(40):
            c.sock.sendall(b"z" * 10_000)
    except (ConnectionResetError, BrokenPipeError) as e:
        pytest.fail("the server reset the connection while the client was still sending: %s" % e)
    try:
        r = c.response()
    except ConnectionResetError:
        pytest.fail("the connection was reset before the 413 response could be read")
    assert r.status == 413
    assert r.header("Connection") == "close"
    assert int(r.header("Content-Length")) == len(r.body)
    timed_close(c, timeout=3)  # the server's FIN (half-close); it lingers until ours or its linger timeout
    assert c.buf == b""
    c.sock.shutdown(socket.SHUT_WR)
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="bad_request")


# ---- socket options on the server's side of the connection ----

def server_sockets(pid):
    """Duplicates of the server's connected TCP sockets, {peer address: socket} (pidfd_getfd(2))."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError) as e:
        pytest.skip("pidfd_open: %s" % e)
    libc = ctypes.CDLL(None, use_errno=True)
    out = {}
    try:
        for name in os.listdir("/proc/%d/fd" % pid):
            try:
                if not os.readlink("/proc/%d/fd/%s" % (pid, name)).startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = libc.syscall(438, pidfd, int(name), 0)  # pidfd_getfd on x86_64 and arm64
            if fd < 0:
                pytest.skip("pidfd_getfd: errno %d" % ctypes.get_errno())
            try:
                s = socket.socket(fileno=fd)
            except OSError:
                os.close(fd)
                continue
            try:
                out[s.getpeername()] = s
            except OSError:
                s.close()
    finally:
        os.close(pidfd)
    return out


def test_server_sockets_have_nodelay_and_tcp_keepalive(tether, site, conns):
    t = tether("--root", str(site), "--tcp-keepalive", "900s:60s:5")
    c = conns(t)
    assert c.get("/100.txt").status == 200
    socks = server_sockets(t.proc.pid)
    try:
        s = socks[c.sock.getsockname()]
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 900
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 60
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 5
    finally:
        for s in socks.values():
            s.close()


def test_tcp_keepalive_off_by_default(tether, site, conns):
    t = tether("--root", str(site))
    c = conns(t)
    assert c.get("/100.txt").status == 200
    socks = server_sockets(t.proc.pid)
    try:
        s = socks[c.sock.getsockname()]
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        for s in socks.values():
            s.close()


def ss_established(port):
    try:
        out = subprocess.run(["ss", "-tnoe", "state", "established", "( sport = :%d )" % port],
                             capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        pytest.skip("ss (iproute2) is not installed")
    return out.stdout


@pytest.mark.parametrize("flag", [True, False])
def test_ss_shows_keepalive_timer(tether, site, conns, flag):
    t = tether("--root", str(site), *(["--tcp-keepalive", "900s:60s:5"] if flag else []))
    c = conns(t)
    assert c.get("/100.txt").status == 200
    out = ss_established(t.port)
    assert ":%d" % c.sock.getsockname()[1] in out, out
    assert ("timer:(keepalive," in out) == flag, out


# ---- idle connections hold no buffers ----

def test_idle_connections_hold_no_buffers(tether, site, conns):
    t = tether("--root", str(site), "--workers", "1", "--idle-timeout", "30s")
    cs = [conns(t) for _ in range(50)]
    for i, c in enumerate(cs):
        r = c.get("/4k.bin" if i % 2 else "/100.txt")
        assert r.status == 200
    t.wait_metric("tether_connections_idle", lambda v: v == 50)
    m = t.metrics()
    assert m["tether_connections_open"] == 50
    assert m["tether_buffers_in_use"] <= 2, m["tether_buffers_in_use"]
    # A connection in the middle of a request head holds its input buffer; going idle again gives it back.
    cs[0].send(b"GET /100.txt HTTP/1.1\r\n")
    t.wait_metric("tether_connections_idle", lambda v: v == 49)
    assert t.metric("tether_buffers_in_use") >= 1
    cs[0].send(b"Host: t\r\n\r\n")
    assert cs[0].response().status == 200
    t.wait_metric("tether_connections_idle", lambda v: v == 50)
    assert t.metric("tether_buffers_in_use") <= 2


# ---- connection metrics ----

def test_connection_gauges_and_counters(tether, site, conns):
    t = tether("--root", str(site), "--workers", "2")
    cs = [conns(t) for _ in range(3)]
    t.wait_metric("tether_connections_open", lambda v: v == 3)
    assert t.metric("tether_connections_accepted_total") == 3
    assert t.metric("tether_connections_idle") == 0, "a new connection is not idle"
    for c in cs:
        assert c.get("/100.txt").status == 200
    t.wait_metric("tether_connections_idle", lambda v: v == 3)
    cs[0].send(b"GET /100.txt HTTP/1.1\r\n")  # busy again
    t.wait_metric("tether_connections_idle", lambda v: v == 2)
    assert t.metric("tether_connections_open") == 3
    cs[1].close()  # client FIN on an idle connection
    t.wait_metric("tether_connections_open", lambda v: v == 2)
    assert t.metric("tether_connections_idle") == 1
    assert t.closed("client_close") == 1
    cs[0].send(b"Host: t\r\nConnection: close\r\n\r\n")
    assert cs[0].response().status == 200
    t.wait_metric("tether_connections_open", lambda v: v == 1)
    assert t.metric("tether_connections_idle") == 1
    assert t.metric("tether_connections_accepted_total") == 3
    assert t.closed("client_close") == 2
    assert t.metric("tether_requests_total", **{"class": "2xx"}) == 4


def test_requests_per_connection_histogram(tether, site, conns):
    t = tether("--root", str(site))
    for n in (1, 2, 5):
        c = conns(t)
        for i in range(n):
            r = c.get("/100.txt", headers={"Connection": "close"} if i == n - 1 else None)
            assert r.status == 200
        timed_close(c)
    t.wait_metric("tether_requests_per_connection_count", lambda v: v == 3)
    m = t.metrics()
    assert m["tether_requests_per_connection_sum"] == 8
    assert m['tether_requests_per_connection_bucket{le="1"}'] == 1
    assert m['tether_requests_per_connection_bucket{le="2"}'] == 2
    assert m['tether_requests_per_connection_bucket{le="5"}'] == 3
    assert m['tether_requests_per_connection_bucket{le="+Inf"}'] == 3


def test_idle_gap_histogram(tether, site, conns):
    t = tether("--root", str(site))
    c = conns(t)
    before_first = time.monotonic()
    assert c.get("/100.txt").status == 200
    after_first = time.monotonic()
    assert t.metric("tether_idle_gap_seconds_count") == 0, "a first request is not a reuse"
    time.sleep(0.3)
    before_second = time.monotonic()
    assert c.get("/100.txt").status == 200
    after_second = time.monotonic()
    # The server's gap (end of the first response to the second request) lies between what the client saw
    # from its side of each end: ~0.3 s, more on a busy machine.
    lo, hi = before_second - after_first, after_second - before_first
    m = t.metrics()
    assert m["tether_idle_gap_seconds_count"] == 1
    gap = m["tether_idle_gap_seconds_sum"]
    assert lo - 0.002 <= gap <= hi + 0.002, (lo, gap, hi)
    bounds = sorted(float(k.split('"')[1]) for k in m
                    if k.startswith("tether_idle_gap_seconds_bucket") and '"+Inf"' not in k)
    assert 0.25 in bounds and 0.5 in bounds, bounds
    for le in bounds:  # the one observation is in every bucket from the first bound at or above it
        assert m['tether_idle_gap_seconds_bucket{le="%g"}' % le] == (1 if gap <= le else 0), (le, gap, m)
