"""Early responses (issue 11): an origin's final response that arrives while the request content is still
being sent -- 413, 401, 302 with Location -- is forwarded to the client (never a 502); tether stops sending
the content upstream and retires that upstream connection (request bytes were left unsent, so it is never
parked: tether_upstream_retired_total{reason="upstream_close"}); on HTTP/1.1 the client connection gets
`Connection: close` and then EOF, the unread content never read as a next request (RFC 9112 9.6); on HTTP/2
the stream is answered and then reset with NO_ERROR (RFC 9113 8.1) while the connection goes on.

The origin (upload_origin.UploadOrigin) answers /early/NNN right after the request head, then reads and counts
what still comes until tether closes the connection (with an RST: request bytes left unsent): far less than
the 8 MB announced. A second client's
request on another connection is served normally after each early answer.
"""

import json
import threading
import time

import pytest

from conftest import SLOW, HttpConn
from pool_support import pool_config, wait_until
from tls_util import H2Conn
from upload_origin import UploadOrigin

BODY = 8 << 20
PIECE = 65536


@pytest.fixture
def origin():
    o = UploadOrigin()
    yield o
    o.stop()


def start(tether, o):
    return tether("--workers", "1", config=pool_config(o.port) + "\n[limits]\nmax_body_size = 64m\n")


def retired(t, reason):
    return sum(v for k, v in t.metrics().items()
               if k.startswith("tether_upstream_retired_total{") and 'reason="%s"' % reason in k)


class H1Sender:
    """Sends a request head and FIRST bytes of content from a thread, waits for go(), then sends the rest until
    all is sent, the socket fails, or stop(): the response comes while the content is surely unfinished."""

    FIRST = 1 << 20

    def __init__(self, t, target, chunked):
        self.c = HttpConn(*t.addr, timeout=20)
        self.sent = 0
        self.chunked = chunked
        self._stop = threading.Event()
        self._go = threading.Event()
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % BODY
        self.c.send(b"POST %s HTTP/1.1\r\nHost: t\r\n%s\r\n\r\n" % (target.encode(), framing))
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        piece = b"p" * PIECE
        if self.chunked:
            piece = b"%x\r\n%s\r\n" % (PIECE, piece)
        deadline = time.monotonic() + 30 * SLOW
        try:
            while self.sent < BODY and not self._stop.is_set() and time.monotonic() < deadline:
                if self.sent == self.FIRST:
                    self._go.wait(20 * SLOW)
                self.c.sock.sendall(piece)
                self.sent += PIECE
            if self.chunked and self.sent >= BODY:
                self.c.sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass

    def go(self):
        self._go.set()

    def stop(self):
        self._stop.set()
        self._go.set()
        self._t.join(10 * SLOW)
        self.c.close()


def check_after(t, o, early_conn):
    """The upstream connection that carried the early answer was closed by tether with far less than the
    content read, retired (not parked), and a second client on another connection is served on a new one."""
    wait_until(lambda: [r for r in o.snapshot() if r["conn"] == early_conn][0]["done_at"] is not None,
               15 * SLOW, "tether to close the upstream connection of the early answer")
    rec = [r for r in o.snapshot() if r["conn"] == early_conn][0]
    assert rec["eof"], "tether kept the upstream connection open after the early answer: %r" % rec
    assert rec["received"] < BODY // 2, "tether kept sending the content upstream: %r" % rec
    wait_until(lambda: retired(t, "upstream_close") == 1, 5 * SLOW, "the upstream connection to be retired")
    c = HttpConn(*t.addr)
    try:
        c.request("POST", "/after", body=b"x" * 1000)
        r = c.response("POST")
        assert r.status == 200, r
        e = json.loads(r.body)
        assert e["len"] == 1000 and e["conn"] != early_conn, e
    finally:
        c.close()
    assert t.proc.poll() is None, t.stderr()[-4000:]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("status", [413, 401, 302])
def test_h1_early_answer_is_forwarded_then_the_connection_closes(tether, origin, status, chunked):
    """h1 client: the origin's early status and content arrive (not 502), with Connection: close, then EOF."""
    t = start(tether, origin)
    s = H1Sender(t, "/early/%d" % status, chunked)
    try:
        s.c.sock.settimeout(15 * SLOW)
        r = s.c.response("POST")
        assert r.status == status, r
        assert r.body == b"early %d" % status, r
        if status == 302:
            assert r.header("Location") == "http://example.test/elsewhere", r
        assert (r.header("Connection") or "").lower() == "close", \
            "the client connection must close after an answer that left the content unread: %r" % r
        s.go()  # the rest of the content: tether drains it a moment while closing, and never sends it upstream
        assert s.c.wait_closed(10) is not None, "no EOF after the early answer"
        assert s.c.buf == b"", "bytes after the response: %r" % s.c.buf[:200]
    finally:
        s.stop()
    early_conn = [r for r in origin.snapshot() if r["target"].startswith("/early/")][0]["conn"]
    check_after(t, origin, early_conn)


def h2_upload(t, target, chunked, other=None):
    """POSTs `target` over h2c (content-length announced unless `chunked`), sending DATA while the window
    allows until the stream is answered and ended or reset. `other`, when set, is a path requested on the same
    connection once the first response head came. Returns (stream state, other's state or None, conn)."""
    import h2.exceptions
    c = H2Conn(t.port, timeout=10)
    hdrs = [] if chunked else [("content-length", str(BODY))]
    sid = c.request(target, method="POST", headers=hdrs, end=False)
    sent, other_sid = 0, None
    deadline = time.monotonic() + 20 * SLOW
    piece = b"p" * 16384
    can_send = True
    while time.monotonic() < deadline and not c.closed:
        st = c.streams.get(sid)
        if other is not None and other_sid is None and st is not None and st["headers"] is not None:
            other_sid = c.request(other)
        if st is not None and st["reset"] is not None:
            break
        if st is not None and st["ended"] and (other_sid is None or other_sid in c.streams and
                                                c.streams[other_sid]["ended"]):
            # the response ended: RST_STREAM(NO_ERROR) follows (or the client finished its content)
            c.wait_for(lambda ev: type(ev).__name__ == "StreamReset" and ev.stream_id == sid, 5)
            break
        try:
            win = min(c.h2.local_flow_control_window(sid), c.h2.max_outbound_frame_size)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            win = 0
        if win > 0 and sent < BODY and can_send:
            try:
                c.h2.send_data(sid, piece[:win])
                c.flush()
                sent += min(win, len(piece))
                continue
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, OSError):
                can_send = False
        c.pump(0.05)
    return c, sid, other_sid, sent


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "no-content-length"])
@pytest.mark.parametrize("status", [413, 401, 302])
def test_h2_early_answer_is_forwarded_then_the_stream_is_reset_no_error(tether, origin, status, chunked):
    """h2 client: the early status and content arrive on the stream, then RST_STREAM NO_ERROR stops the
    upload; the connection stays usable (a second stream on it is served)."""
    t = start(tether, origin)
    c, sid, other_sid, sent = h2_upload(t, "/early/%d" % status, chunked, other="/other")
    try:
        st = c.stream_state(sid)
        assert st["headers"] is not None, "no response head: %r (closed=%s)" % (st, c.closed)
        assert int(st["headers"][":status"]) == status, st
        assert st["body"] == b"early %d" % status, st
        if status == 302:
            assert st["headers"].get("location") == "http://example.test/elsewhere", st
        assert st["ended"], st
        assert sent < BODY, "the client could send all the content: nothing was stopped"
        resets = [ev for ev in c.events if type(ev).__name__ == "StreamReset" and ev.stream_id == sid]
        assert resets and resets[0].error_code == 0, \
            "expected RST_STREAM NO_ERROR after the response (RFC 9113 8.1): %r" % resets
        assert not c.closed, "the connection closed"
        o = c.response(other_sid)
        assert int(o["headers"][":status"]) == 200, o
    finally:
        c.close()
    early_conn = [r for r in origin.snapshot() if r["target"].startswith("/early/")][0]["conn"]
    check_after(t, origin, early_conn)
