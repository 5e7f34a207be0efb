"""Request buffering (issue 11): `request_buffering = on` on a route reads the whole request content -- in memory up
to `request_buffer_memory`, then in an unlinked temporary file -- before a server is picked and an upstream
connection taken, so a slow upload holds no origin connection; the content then goes upstream with Content-Length
(a chunked request de-chunked), intact (sha256 at the origin), through HTTP/1.1 and HTTP/2 fronts. The temporary file
is gone when the exchange ends, whether it completed, was refused (413) or the client went away mid-upload (the fds
of the tether process are counted before and after).
"""

import hashlib
import json
import os
import socket
import time

import pytest

from conftest import SLOW, HttpConn
from pool_support import pool_config, wait_until
from tls_util import H2Conn
from upload_origin import UploadOrigin


@pytest.fixture
def origin():
    o = UploadOrigin()
    yield o
    o.stop()


def start(tether, o, buffering="on", memory="64k", limit="8m", temp_dir=None):
    route = "request_buffering = %s\nrequest_buffer_memory = %s\n" % (buffering, memory)
    if temp_dir:
        route += "temp_dir = %s\n" % temp_dir
    return tether("--workers", "1", config=pool_config(o.port) + route + "\n[limits]\nmax_body_size = %s\n" % limit)


def fds(t):
    """The open fds of the tether process: {fd: link target}."""
    out = {}
    d = "/proc/%d/fd" % t.proc.pid
    for name in os.listdir(d):
        try:
            out[name] = os.readlink(os.path.join(d, name))
        except OSError:
            pass
    return out


def temp_files(t):
    return [v for v in fds(t).values() if "(deleted)" in v or "tether-body" in v]


def metric_sum(t, name):
    return sum(v for k, v in t.metrics().items() if k.startswith(name + "{"))


def body_of(size):
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


def h1_post(t, body, chunked, piece=65536):
    c = HttpConn(*t.addr, timeout=20)
    try:
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
        c.send(b"POST /up HTTP/1.1\r\nHost: t\r\n%s\r\n\r\n" % framing)
        for i in range(0, len(body), piece):
            p = body[i:i + piece]
            c.send(b"%x\r\n%s\r\n" % (len(p), p) if chunked else p)
        if chunked:
            c.send(b"0\r\n\r\n")
        r = c.response("POST")
        return r.status, r.body
    finally:
        c.close()


def h2_post(t, body, chunked):
    c = H2Conn(t.port, timeout=20)
    try:
        hdrs = [] if chunked else [("content-length", str(len(body)))]
        sid = c.request("/up", method="POST", headers=hdrs, body=body)
        st = c.response(sid, timeout=20)
        return int(st["headers"][":status"]), st["body"]
    finally:
        c.close()


@pytest.mark.parametrize("size", [10000, 1 << 20], ids=["memory", "file"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("front", ["h1", "h2c"])
def test_buffered_content_reaches_the_origin_intact_with_content_length(tether, origin, front, chunked, size):
    """The origin gets the client's exact bytes (sha256) with Content-Length, for content kept in memory (10 kB) and
    content that went to a temporary file (1 MB over 64k); the file is counted and gone afterwards."""
    t = start(tether, origin)
    body = body_of(size)
    status, got = (h1_post if front == "h1" else h2_post)(t, body, chunked)
    assert status == 200, got
    e = json.loads(got)
    assert e["len"] == size and e["sha256"] == hashlib.sha256(body).hexdigest(), e
    assert e["framing"] == "cl", "the buffered content must go upstream with Content-Length: %r" % e
    assert metric_sum(t, "tether_request_buffered_total") == 1
    assert metric_sum(t, "tether_request_buffer_files_total") == (1 if size > 65536 else 0)
    wait_until(lambda: not temp_files(t), 5 * SLOW, "the temporary file to be closed")


def trickle(t, origin, size, seconds, during=None):
    """POSTs `size` bytes in 20 pieces over `seconds`; `during(i)` runs after piece i. Returns (response, the
    monotonic time the last byte was sent)."""
    c = HttpConn(*t.addr, timeout=20)
    try:
        c.send(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        body = body_of(size)
        n = 20
        step = size // n
        for i in range(n):
            c.send(body[i * step:(i + 1) * step if i < n - 1 else size])
            last = time.monotonic()
            if during:
                during(i)
            if i < n - 1:
                time.sleep(seconds / n)
        r = c.response("POST")
        return r, last
    finally:
        c.close()


@pytest.mark.parametrize("buffering", ["on", "off"])
def test_a_slow_upload_holds_no_upstream_connection(tether, origin, buffering):
    """A client trickles 200 kB over ~2 s. Buffering on: the origin gets no connection and no request head until the
    client's last byte was sent; off: the request head arrives while the upload is still going on."""
    t = start(tether, origin, buffering=buffering)
    seen_mid = []

    def during(i):
        if i == 10:  # half way: has the origin been contacted?
            if buffering == "off":
                wait_until(lambda: origin.accepted == 1 and origin.snapshot(), 5 * SLOW, "the request head upstream")
            seen_mid.append((origin.accepted, len(origin.snapshot())))

    r, last = trickle(t, origin, 200000, 2.0, during)
    assert r.status == 200, r
    e = json.loads(r.body)
    assert e["len"] == 200000, e
    if buffering == "on":
        assert seen_mid == [(0, 0)], "the origin was contacted during the upload: %r" % seen_mid
        assert e["head_at"] >= last, "the origin got the head %.3f s before the client's last byte" % (
            last - e["head_at"])
        assert origin.max_open == 1
    else:
        assert seen_mid == [(1, 1)], seen_mid
        assert e["head_at"] < last


def test_content_over_the_memory_limit_goes_to_a_deleted_temporary_file(tether, origin, tmp_path):
    """While a 300 kB upload (request_buffer_memory 64k, temp_dir set) is half sent, tether holds an unlinked file in
    temp_dir and counts it; the directory stays empty; when the exchange ends the file is closed."""
    d = tmp_path / "bodies"
    d.mkdir()
    t = start(tether, origin, temp_dir=str(d))
    seen = []

    def during(i):
        if i == 10:
            wait_until(lambda: temp_files(t), 5 * SLOW, "a temporary file in tether's fds")
            seen.extend(temp_files(t))
            assert os.listdir(str(d)) == [], "the temporary file has a name"

    r, _ = trickle(t, origin, 300000, 0.5, during)
    assert r.status == 200, r
    assert seen and all(str(d) in f for f in seen), seen
    assert metric_sum(t, "tether_request_buffer_files_total") == 1
    wait_until(lambda: not temp_files(t), 5 * SLOW, "the temporary file to be closed")


@pytest.mark.parametrize("front", ["h1", "h2c"])
def test_a_client_that_goes_away_mid_upload_leaves_nothing_open(tether, origin, front):
    """The client sends 400 kB of a 1 MB upload (in a temporary file by then) and resets its connection: the file and
    every fd go, the origin never got the request, and tether serves the next request."""
    t = start(tether, origin)
    status, got = h1_post(t, b"warm", False)  # every fd of a serving tether is open, one upstream connection parked
    assert status == 200, got
    before = len(fds(t))
    if front == "h1":
        c = HttpConn(*t.addr, timeout=20)
        c.send(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (1 << 20))
        c.send(body_of(400000))
    else:
        c = H2Conn(t.port, timeout=20)
        sid = c.request("/up", method="POST", headers=[("content-length", str(1 << 20))], body=body_of(400000),
                        end=False)
        assert sid
    wait_until(lambda: temp_files(t), 5 * SLOW, "a temporary file in tether's fds")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()
    wait_until(lambda: len(fds(t)) <= before, 5 * SLOW, "tether's fds back to the %d before: %r" % (before, fds(t)))
    assert origin.accepted == 1 and len(origin.snapshot()) == 1, "the origin was contacted for the abandoned upload"
    status, got = h1_post(t, b"after", False)
    assert status == 200 and json.loads(got)["len"] == 5, got


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_content_over_max_body_size_is_413_and_its_file_closed(tether, origin, chunked):
    """max_body_size 100k: a 200 kB upload is refused with 413 (at once for Content-Length, when the limit is crossed
    for chunked content); the origin is never contacted and no temporary file stays open."""
    t = start(tether, origin, memory="16k", limit="100k")
    c = HttpConn(*t.addr, timeout=20)
    try:
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: 200000"
        c.send(b"POST /up HTTP/1.1\r\nHost: t\r\n%s\r\n\r\n" % framing)
        try:
            for i in range(0, 200000, 8192):
                p = body_of(8192)
                c.send(b"%x\r\n%s\r\n" % (len(p), p) if chunked else p)
        except OSError:
            pass  # tether closed after its 413
        r = c.response("POST")
        assert r.status == 413, r
    finally:
        c.close()
    wait_until(lambda: not temp_files(t), 5 * SLOW, "the temporary file to be closed")
    assert origin.accepted == 0


def test_temp_dir_must_exist(tether, origin, tmp_path):
    """A temp_dir that does not exist stops start-up with FILE:LINE: temp_dir: DIR: reason."""
    t = tether("--workers", "1", config=pool_config(origin.port) + "request_buffering = on\ntemp_dir = %s\n"
               % (tmp_path / "nope"), ready=False)
    assert t.proc.wait(10 * SLOW) != 0
    t.join_output()
    assert "temp_dir: %s: No such file or directory" % (tmp_path / "nope") in t.stderr(), t.stderr()
