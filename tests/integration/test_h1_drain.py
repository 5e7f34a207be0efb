"""Graceful drain on SIGTERM and SIGINT.

Covers: the listener stops accepting (connect refused while the process still runs), idle keep-alive
connections and new connections that sent nothing close at once, a request whose head is still arriving
is answered with `Connection: close`, a large response being read slowly completes, the process exits
with status 0 when the last connection is done, and `--drain-timeout` is a hard deadline for a client
that never completes its request or never reads its response.
"""

import signal
import socket
import subprocess
import time

import pytest

from conftest import SLOW



def connect_refused_within(t, limit):
    """Seconds until a new connection to `t` is refused, or None if it still accepts after `limit` s."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        try:
            s = socket.create_connection(t.addr, timeout=0.5)
        except (ConnectionRefusedError, ConnectionResetError):
            # Reset: the listener closed while this connect's handshake was in flight (the kernel resets
            # what its queue held); refused from then on.
            return time.monotonic() - start
        s.close()
        time.sleep(0.01)
    return None


def wait_exit(t, timeout):
    try:
        return t.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.multiworker
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_drain_closes_idle_refuses_new_and_finishes_in_flight(tether, site, conns, sig):
    t = tether("--root", str(site), "--idle-timeout", "30s", "--header-timeout", "30s", "--workers", "2")
    idle = conns(t)
    assert idle.get("/100.txt").status == 200
    fresh = conns(t)  # connected, nothing sent yet
    busy = conns(t)
    busy.send(b"GET /4k.bin HTTP/1.1\r\nHost: t\r\nUser-")
    t.wait_metric("tether_connections_open", lambda v: v == 3)
    # (a connection is counted idle just after its response is written: the client may read it first)
    t.wait_metric("tether_connections_idle", lambda v: v == 1)

    t.send_signal(sig)
    # "at once": well before the 30 s idle and header timeouts and the 10 s drain timeout, whatever the load
    took = idle.wait_closed(3)
    assert took is not None and took < 2.0 * SLOW, "an idle connection was not closed at once: %s" % took
    assert idle.buf == b""
    took = fresh.wait_closed(3)
    assert took is not None and took < 2.0 * SLOW, took
    refused = connect_refused_within(t, 2 * SLOW)
    assert refused is not None, "the listener still accepts during the drain"
    assert t.proc.poll() is None, "exited before the in-flight request was answered"
    assert busy.is_open(0.05)

    busy.send(b"Agent: x\r\n\r\n")
    r = busy.response()
    assert r.status == 200
    assert r.body == bytes(range(256)) * 16
    assert r.header("Connection") == "close"
    assert r.header("Keep-Alive") is None
    assert busy.wait_closed(3) is not None
    assert wait_exit(t, 3 * SLOW) == 0
    lines = t.access_lines(wait_for=2)
    assert lines[-1].endswith(" shutdown"), lines


def test_drain_lets_a_slow_reader_finish_a_large_response(tether, site, conns):
    # Larger than the kernel's largest send buffer (tcp_wmem max, 4 MiB by default), so part of it is still
    # in the server, not in the socket, when the drain starts.
    expected = bytes(range(251)) * (12 * 1024 * 1024 // 251)
    (site / "huge.bin").write_bytes(expected)
    t = tether("--root", str(site), "--workers", "1", "--drain-timeout", "20s")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    s.settimeout(10 * SLOW)
    s.connect(t.addr)
    try:
        s.sendall(b"GET /huge.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(4096)
        head, _, rest = buf.partition(b"\r\n\r\n")
        body = bytearray(rest)
        assert b"\r\nContent-Length: %d\r\n" % len(expected) in head + b"\r\n", head
        time.sleep(0.2)  # the server fills the socket and waits for the window
        assert t.access_lines() == [], "the whole response was already sent: nothing is in flight"
        t.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert t.proc.poll() is None, "exited with a response in flight"
        slow_until = time.monotonic() + 0.3
        while len(body) < len(expected):
            chunk = s.recv(65536)
            assert chunk, "closed after %d of %d bytes" % (len(body), len(expected))
            body += chunk
            if time.monotonic() < slow_until:
                time.sleep(0.005)  # read slowly for a while
        assert bytes(body) == expected
        s.settimeout(3 * SLOW)
        assert s.recv(1) == b"", "the connection stays open after its response during a drain"
    finally:
        s.close()
    assert wait_exit(t, 3 * SLOW) == 0
    assert len(t.access_lines()) == 1


@pytest.mark.parametrize("stall", ["partial_head", "unread_response"])
def test_drain_timeout_is_a_hard_deadline(tether, site, conns, stall):
    t = tether("--root", str(site), "--drain-timeout", "1s", "--header-timeout", "30s", "--send-timeout", "30s")
    if stall == "partial_head":
        c = conns(t)
        c.send(b"GET /100.txt HTTP/1.1\r\nHo")
        sock = c.sock
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(t.addr)
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")  # and never read it
    try:
        t.wait_metric("tether_connections_open", lambda v: v == 1)
        start = time.monotonic()
        t.send_signal(signal.SIGTERM)
        status = wait_exit(t, 5 * SLOW)
        took = time.monotonic() - start
        assert status == 0, status
        assert 0.95 <= took <= 1.0 + 2.0 * SLOW, took  # not the 30 s header or send timeout
    finally:
        sock.close()


def test_drain_with_nothing_open_exits_at_once(tether, site):
    t = tether("--root", str(site))
    start = time.monotonic()
    t.send_signal(signal.SIGINT)
    assert wait_exit(t, 3 * SLOW) == 0
    assert time.monotonic() - start < 2.0 * SLOW  # not the 10 s drain timeout
