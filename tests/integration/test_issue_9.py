"""Regressions of issue 9 ("No client ever receives another client's bytes, and no request object outlives its
owner"), each driven through the real binary: the 431 built from another connection's request (leading empty
lines without bound), the proxy touching a finished client request (an early answer during a paused upload),
HTTP/2 response fields and trailers cut at a fixed count, and a worker thread that cannot be started.

The pool's own defects (poisoning, the waiter called twice) are covered in test_proxy_hostile.py and the unit
tests of src/client (test_pool.c, test_upstream.c)."""

import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import SLOW, TETHER_BIN
from pool_support import wait_until
from proxy_util import RawServer, access_line_for, closed_port, recv_head, upstream_config
from tls_util import H2Conn


def read_response(s, timeout=10):
    """Reads one response (head and Content-Length content) from a raw socket; returns (status, head, body)."""
    s.settimeout(timeout * SLOW)
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            return None, buf, b""
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v.strip())
    while len(rest) < n:
        d = s.recv(65536)
        if not d:
            break
        rest += d
    return status, head, rest[:n]


def read_to_eof(s, timeout=10):
    s.settimeout(timeout * SLOW)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return out
            out += d
    except (ConnectionResetError, socket.timeout):
        return out


# ---- defect 2: leading empty lines, and the 431 built from a shared scratch ----

def test_empty_lines_before_a_request_are_bounded_and_never_show_another_request(tether, site):
    """Connection A floods ~64 KB of empty lines (they were skipped without bound until the buffer filled and
    the 431 was built from the worker's parse target, which then held views into connection B's freed buffer:
    ASan heap-use-after-free, or B's request-target in A's log line). A now gets 400 once a request-line's
    worth of empty lines has passed, B is served, and A's log line names no request of B's."""
    t = tether("--root", str(site), "--workers", "1")
    a = socket.create_connection(t.addr)
    b = socket.create_connection(t.addr)
    try:
        a.sendall(b"\r\n" * 31800)  # 63,600 bytes
        secret = "/secret-of-b-" + "x" * 19000
        b.sendall(("GET %s HTTP/1.1\r\nHost: b\r\n\r\n" % secret).encode())
        status_b, _, _ = read_response(b)
        assert status_b == 414  # a request-target over max_request_target (8k): B's own answer
        try:
            a.sendall(b"\r\n")
        except OSError:
            pass  # A may already be closed: its refusal came first
        reply = read_to_eof(a)
        assert reply.startswith(b"HTTP/1.1 400 "), reply[:200]
        assert b"Connection: close" in reply
        line = access_line_for(t, '" 400 ')
        assert "secret-of-b" not in line, line
        for ln in t.access_lines():
            if '" 400 ' in ln or '" 431 ' in ln:
                assert "secret-of-b" not in ln, ln
    finally:
        a.close()
        b.close()
    # the worker goes on
    c = t.connect()
    assert c.get("/index.html").status == 200


# ---- defect 3: an early answer while the client's upload is paused ----

def early_origin(wait=1.5):
    """Reads a request head, then nothing for `wait` seconds (an upload to /upload backs up), then answers 413
    with `Content-Length: 2` and closes; anything else gets 200 "ok"."""

    def handle(c):
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        head, _ = recv_head(c)
        if head is None:
            return
        if b"/upload" in head.split(b"\r\n", 1)[0]:
            time.sleep(wait)
            c.sendall(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno")
        else:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        time.sleep(0.5)
        c.close()

    return RawServer(handle)


def test_an_early_answer_during_a_paused_upload_reaches_the_client_and_frees_nothing_twice(tether):
    """A 64 MB POST to an origin that reads nothing for 1.5 s, then answers 413: the proxy's backpressure has
    paused the client's upload when the answer comes. tether finished the client request and then paused its
    body through the freed request (use-after-free, a call through freed memory). Now the client gets the 413,
    and tether serves the next client and exits cleanly (the fixture checks the exit status)."""
    o = early_origin()
    try:
        t = tether("--workers", "1",
                   config=upstream_config(["127.0.0.1:%d" % o.port]) + "\n[limits]\nmax_body_size = 512m\n")
        s = socket.create_connection(t.addr)
        size = 64 << 20
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        sent = [0]

        def upload():
            chunk = b"u" * 65536
            try:
                while sent[0] < size:
                    s.sendall(chunk)
                    sent[0] += len(chunk)
            except OSError:
                pass

        th = threading.Thread(target=upload, daemon=True)
        th.start()
        status, head, body = read_response(s, timeout=20)
        assert status == 413, head
        assert body == b"no"
        assert sent[0] < size  # the upload was still under way: the answer was early
        s.close()
        th.join(10 * SLOW)
        # another client is served
        c = t.connect()
        r = c.get("/after")
        assert r.status == 200 and r.body == b"ok"
    finally:
        o.stop()


# ---- defect 5: HTTP/2 response fields and trailers, all of them ----

def many_fields_origin(nfields=60, ntrailers=40):
    """Answers every request with `nfields` fields X-F-00.. and, chunked, `ntrailers` trailer fields X-T-00.."""

    def handle(c):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            _, _, buf = buf.partition(b"\r\n\r\n")
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T-00\r\n"
            for i in range(nfields):
                head += b"X-F-%02d: value-%02d-%s\r\n" % (i, i, b"v" * 60)  # 60 x 80 bytes: over 4 KiB
            trailers = b"".join(b"X-T-%02d: t-%02d\r\n" % (i, i) for i in range(ntrailers))
            c.sendall(head + b"\r\n5\r\nhello\r\n0\r\n" + trailers + b"\r\n")

    return RawServer(handle)


def test_every_response_field_and_trailer_reaches_h1_and_h2_clients(tether):
    """An origin's 60 fields reached an h1 client as 60 and an h2 client as 41 (a 4 KiB copy and 64 name/value
    pairs in submit_head), and 40 trailers were cut to 32. Both protocols now get every one."""
    o = many_fields_origin()
    try:
        t = tether("--workers", "1", config=upstream_config(["127.0.0.1:%d" % o.port]))
        # HTTP/1.1
        c = t.connect()
        r = c.get("/fields")
        assert r.status == 200 and r.body == b"hello"
        got = {k.lower() for k, _ in r.headers}
        assert all("x-f-%02d" % i in got for i in range(60)), sorted(got)
        # HTTP/2 with prior knowledge
        h = H2Conn(t.port)
        sid = h.request("/fields")
        st = h.response(sid)
        names = list(st["headers"])
        assert sum(1 for k in names if k.startswith("x-f-")) == 60, names
        assert st["headers"]["x-f-59"] == "value-59-" + "v" * 60
        assert st["body"] == b"hello"
        tnames = list(st["trailers"] or {})
        assert sum(1 for k in tnames if k.startswith("x-t-")) == 40, tnames
        h.close()
    finally:
        o.stop()


def test_a_response_head_over_the_limit_is_a_502_with_its_cause_never_a_cut(tether):
    """The only limit on response fields is the response-head limit (100 fields): past it the client gets 502
    invalid_response, over HTTP/1.1 and HTTP/2 alike, never a response with some fields missing."""
    o = many_fields_origin(nfields=150, ntrailers=0)
    try:
        t = tether("--workers", "1", config=upstream_config(["127.0.0.1:%d" % o.port]))
        r = t.connect().get("/too-many")
        assert r.status == 502 and r.header("X-Tether-Cause") == "invalid_response", r
        h = H2Conn(t.port)
        st = h.response(h.request("/too-many"))
        assert st["headers"][":status"] == "502" and st["headers"]["x-tether-cause"] == "invalid_response", st
        h.close()
    finally:
        o.stop()


# ---- defect 7: a worker thread that cannot be started ----

@pytest.mark.skipif("asan" in TETHER_BIN, reason="ASan reserves terabytes of address space; RLIMIT_AS cannot apply")
def test_a_worker_thread_that_cannot_start_is_a_clean_error(site):
    """With the address space too small for 200 thread stacks, pthread_create fails part-way: tether says why
    and exits 1 promptly, after draining and joining the workers it had started (never a hang or a crash)."""
    p = subprocess.Popen(["/bin/sh", "-c", "ulimit -v 400000; exec \"$0\" \"$@\"", TETHER_BIN, "serve", "--root",
                          str(site), "--listen", "127.0.0.1:0", "--workers", "200", "--metrics", "off", "--access-log",
                          "off"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, err = p.communicate(timeout=30 * SLOW)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 1, (p.returncode, err)
    assert b"starting workers:" in err, err


# ---- found by fuzz_worker: an HTTP/2 connection that waited on its client without a deadline ----

def h2_stalled_client(port, initial_window=None, end_stream=True, method="GET", path="/big.bin"):
    """An h2 client that sends one request and then nothing at all (no WINDOW_UPDATE, no content)."""
    import h2.config
    import h2.connection
    import h2.settings
    s = socket.create_connection(("127.0.0.1", port))
    c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    if initial_window is not None:
        c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window})
    c.send_headers(1, [(":method", method), (":path", path), (":scheme", "http"), (":authority", "a")],
                   end_stream=end_stream)
    s.sendall(c.data_to_send())
    return s


def closed_within(s, seconds):
    """Reads until tether closes (True) or `seconds` pass (False)."""
    s.settimeout(seconds)
    try:
        while s.recv(65536):
            pass
        return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("stall", ["window", "content"])
def test_an_h2_client_that_stalls_a_stream_is_closed_at_its_timeout(tether, tmp_path, stall):
    """A client that grants no flow-control window for the response (INITIAL_WINDOW_SIZE 0, no WINDOW_UPDATE),
    or announces request content and never sends it, held its h2 connection for ever: no stream was idle, the
    socket was not full, and nothing else had a deadline (fuzz_worker: "still connected after 400 s"). Now the
    send timeout covers a response held by the window, the body timeout awaited content, as over HTTP/1.1."""
    (tmp_path / "big.bin").write_bytes(b"b" * 200000)
    flags = ("--workers", "1", "--idle-timeout", "60s", "--send-timeout", "1s", "--body-timeout", "1s")
    if stall == "window":
        t = tether("--root", str(tmp_path), *flags)
        s = h2_stalled_client(t.port, initial_window=0)
        reason = "send_timeout"
    else:
        # A handler that awaits the content: a route with request_buffering reads it whole before anything else (a
        # static file answered at once ends the stream with RST_STREAM NO_ERROR, RFC 9113 8.1: nothing is awaited).
        t = tether(*flags, config="[upstream never]\nserver = 127.0.0.1:%d\n\n[route /]\nupstream = never\n"
                   "request_buffering = on\n" % closed_port())
        s = h2_stalled_client(t.port, end_stream=False, method="PUT")
        reason = "body_timeout"
    try:
        assert closed_within(s, 20 * SLOW), "the stalled h2 connection was never closed"
    finally:
        s.close()
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason=reason)
    assert t.closed("idle_timeout") == 0


def test_an_h2_client_that_keeps_granting_window_is_not_cut(tether, tmp_path):
    """The window deadline starts over with every WINDOW_UPDATE: a slow reader that keeps granting credit gets
    the whole response, however long it takes, with the send timeout shorter than the transfer."""
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings
    (tmp_path / "big.bin").write_bytes(b"b" * 60000)
    t = tether("--root", str(tmp_path), "--workers", "1", "--send-timeout", "2s", "--body-timeout", "2s")
    s = socket.create_connection(("127.0.0.1", t.port))
    c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 10000})
    c.send_headers(1, [(":method", "GET"), (":path", "/big.bin"), (":scheme", "http"), (":authority", "a")],
                   end_stream=True)
    s.sendall(c.data_to_send())
    s.settimeout(10 * SLOW)
    got, ended, started = 0, False, time.monotonic()
    try:
        while not ended:
            d = s.recv(65536)
            assert d, "tether closed the connection after %d bytes" % got
            for ev in c.receive_data(d):
                if isinstance(ev, h2.events.DataReceived):
                    got += len(ev.data)
                    time.sleep(0.5)  # 6 grants of 10 KB, 0.5 s apart: 3 s in all, more than the send timeout
                    c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    ended = True
            s.sendall(c.data_to_send())
    finally:
        s.close()
    assert got == 60000
    assert time.monotonic() - started > 2.0  # the transfer outlasted the send timeout: the grants restarted it
