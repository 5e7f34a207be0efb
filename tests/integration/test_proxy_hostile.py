"""Hostile origins: an origin that writes more, less, or other than the response it owes must never make
tether hand one client's bytes to another, nor crash it (issue 9).

The rule under test (docs/design.md, "Lifetimes"): an upstream connection is parked only when its socket is
known drained after the response and nothing follows the response; stray bytes found at any point (in the
read that ends the response, left in the socket after a read that filled the buffer exactly, or arriving
while the connection is parked) retire it with reason `stray_bytes`
(`tether_upstream_retired_total{upstream,server,reason="stray_bytes"}`), never reach a client, and never
teach the idle-timeout learner.

The poison is a complete second response, `HTTP/1.1 200 OK ... X-Poison: 1 ... POISONED-RESPONSE!`,
written by the origin after (or together with) the response it owes. Every test then sends a *victim*
request on another client connection (20-200 ms later, a GET, so a young parked connection is reused
without a peek) and checks that it gets its own echo (`echo METHOD TARGET conn=N req=M`) from the origin,
never poison.

  1. the poisoning reproduction (a 16,384-byte response and the poison in one write) through h1, h2c, TLS
     (h1 and h2) fronts, and with `reuse = safe`;
  2. a response ending on every 4 KiB step from 4 KiB to 64 KiB (and +-1 around 16, 32 and 64 KiB) with the
     poison in the same write; a HEAD answer whose head alone is 16 KiB;
  3. the poison written 50 ms after the response, while the connection is parked (and the learner learns
     nothing from it);
  4. HEAD, 204 and 304 answered with content;
  5. an early answer (413) while the client's 64 MB upload is paused by backpressure;
  6. FIN or RST at every point of a response;
  7. 1xx responses before the final one.

Every tether runs with one worker (one pool per server), so the victim meets the connection the hostile
answer left, and with glibc's MALLOC_PERTURB_ (freed memory overwritten, no thread cache) so that a use after
free crashes a normal build too. The origin is hostile_origin.HostileOrigin: it writes exactly the scripted
bytes. Time is never raced: the hostile condition is scripted (one write, or a write 50 ms later followed by
a wait for tether's close of that connection), and metrics are polled with bounds scaled by SLOW.
"""

import os
import socket
import threading
import time

import pytest

from conftest import SLOW, HttpConn
from hostile_origin import ECHO_RE, POISON, echo, hostile, response_of_size  # noqa: F401 (hostile: a fixture)
from pool_support import PoolView, pool_config, response_or_crash, wait_until
from proxy_util import parse_chunked_prefix, read_head, read_to_eof
from tls_util import Certs, H2Conn, TlsConn, tls_args, tls_port

FRONTS = ["h1", "h2c", "tls", "tls-h2"]
VICTIM_DELAY = 0.05  # the victim's request follows the hostile answer by this much (20-200 ms)


# ---- fixtures and clients ----

@pytest.fixture(scope="module")
def module_certs(tmp_path_factory):
    """tls_util's throw-away CA and leaves, made once for the module (openssl takes about a second)."""
    return Certs(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def clients():
    """Factory: clients(front, t, certs) -> a Client (one connection), closed at teardown."""
    opened = []

    def open_(front, t, certs=None, timeout=10):
        c = Client(front, t, certs, timeout)
        opened.append(c)
        return c

    yield open_
    for c in opened:
        c.close()


# glibc: no per-thread cache, and freed memory filled with 0xa5, so that a use after free in a normal build
# reads garbage (a crash) instead of the stale values it would otherwise find (sanitizer builds ignore it).
PERTURB_ENV = dict(os.environ, MALLOC_PERTURB_="165", GLIBC_TUNABLES="glibc.malloc.tcache_count=0")


def start_proxy(tether, request, front, o, extra="", **keys):
    """tether with one worker, [upstream backend] -> origin `o`, and the listener `front` needs (run with
    PERTURB_ENV). Returns (tether, PoolView, certs or None)."""
    certs = request.getfixturevalue("module_certs") if front.startswith("tls") else None
    args = ["--workers", "1", "--drain-timeout", "3s"]
    if certs is not None:
        args += tls_args(certs)
    t = tether(*args, config=pool_config(o.port, **keys) + extra, env=PERTURB_ENV)
    return t, PoolView(t, o.port), certs


class Got:
    """A response as a client saw it: status (None for an h2 stream reset), fields (lower-case names),
    content, and every byte seen (for "no poison anywhere")."""

    def __init__(self, status, fields, body, raw, reset=None):
        self.status = status
        self.fields = fields
        self.body = body
        self.raw = raw
        self.reset = reset

    def field(self, name):
        for k, v in self.fields:
            if k == name.lower():
                return v
        return None

    def __repr__(self):
        return "<Got %s %r body=%r>" % (self.status, self.fields, self.body[:120])


class Client:
    """One client connection to tether: h1 (plain), tls (h1 over TLS), h2c (prior knowledge), tls-h2."""

    def __init__(self, front, t, certs=None, timeout=10):
        self.front = front
        self.h2 = front in ("h2c", "tls-h2")
        if front == "h1":
            self.c = HttpConn(*t.addr, timeout=timeout)
        elif front == "tls":
            self.c = TlsConn(certs, tls_port(t), timeout=timeout)
        elif front == "h2c":
            self.c = H2Conn(t.port, timeout=timeout)
        elif front == "tls-h2":
            self.c = H2Conn(tls_port(t), tls_certs=certs, timeout=timeout)
        else:
            raise ValueError(front)

    def fetch(self, method, path, headers=()):
        if self.h2:
            sid = self.c.request(path, method=method, headers=list(headers))
            st = self.c.response(sid)
            hdrs = st["headers"] or {}
            status = int(hdrs[":status"]) if ":status" in hdrs else None
            fields = [(k.lower(), v) for k, v in hdrs.items() if not k.startswith(":")]
            raw = repr(hdrs).encode() + st["body"] + repr(st["trailers"]).encode()
            return Got(status, fields, st["body"], raw, st["reset"])
        self.c.request(method, path, headers=dict(headers))
        r = self.c.response(method)
        return Got(r.status, [(k.lower(), v) for k, v in r.headers], r.body, r.raw_head + r.body)

    def close(self):
        if isinstance(self.c, TlsConn):
            self.c.close_bare()
        else:
            self.c.close()


def check_echo(got, method, target, who="the victim"):
    """`got` is the origin's own echo of METHOD TARGET and nothing else; returns the upstream conn number."""
    assert b"POISON" not in got.raw and got.field("x-poison") is None, \
        "%s got another response's bytes: %r" % (who, got.raw[:300])
    assert got.status == 200, "%s: %r" % (who, got)
    m = ECHO_RE.match(got.body)
    assert m, "%s got a body that is not its echo: %r" % (who, got.body[:300])
    assert (m.group(1).decode(), m.group(2).decode()) == (method, target), \
        "%s got the echo of another request: %r" % (who, got.body)
    return int(m.group(3))


class Checks:
    """Soft checks, reported together (so one run shows every way a test fails)."""

    def __init__(self):
        self.problems = []

    def check(self, cond, msg):
        if not cond:
            self.problems.append(msg)

    def run(self, fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except AssertionError as e:
            self.problems.append(str(e).split("\nassert ")[0])  # without pytest's rewritten explanation
            return None

    def none(self, problem):
        """Records `problem` unless it is None."""
        if problem is not None:
            self.problems.append(problem)

    def done(self):
        assert not self.problems, "\n".join(self.problems)


def wait_stray(pool, n, timeout=1):
    """Waits until n stray_bytes retirements are counted (one per connection that got stray bytes); returns
    a problem text or None. The poll covers only the scrape running beside the worker: callers look after a
    victim's response, which the worker produced after it handled the stray bytes."""
    try:
        v = pool.wait("tether_upstream_retired_total", lambda v: v >= n, timeout=timeout, reason="stray_bytes")
    except AssertionError:
        v = pool.retired("stray_bytes")
    if v == n:
        return None
    return "tether_upstream_retired_total{reason=\"stray_bytes\"} is %d, expected %d (retired: %r)" % (
        v, n, pool.retired_all())


def content_of(resp):
    return resp.split(b"\r\n\r\n", 1)[1]


# ---- 1. the poisoning reproduction ----

@pytest.mark.parametrize("front", FRONTS + ["h1-reuse-safe"])
def test_poisoned_leftover_reaches_no_other_client(tether, hostile, clients, request, front):
    """The origin answers GET /a in one write with exactly 16,384 bytes (Content-Length framing) followed by
    a complete second response. Another client, on another connection, 50 ms later, gets its own echo on
    another upstream connection, and the connection with the leftover is retired as stray_bytes."""
    owed = response_of_size(16384)
    o = hostile(lambda req: [("send", owed + POISON)] if req.target == "/a" else None)
    safe = front.endswith("-reuse-safe")
    front = front.replace("-reuse-safe", "")
    t, pool, certs = start_proxy(tether, request, front, o, **({"reuse": "safe"} if safe else {}))
    victim = clients(front, t, certs)
    if safe:
        # reuse = safe sends a client connection's first request to a new upstream connection: the victim's
        # warm-up request is that one, and its next request may reuse the most recently parked connection.
        check_echo(victim.fetch("GET", "/warm"), "GET", "/warm", "the warm-up request")
    got = clients(front, t, certs).fetch("GET", "/a")
    assert got.status == 200 and got.body == content_of(owed), got
    time.sleep(VICTIM_DELAY)
    checks = Checks()
    conn = checks.run(check_echo, victim.fetch("GET", "/victim"), "GET", "/victim")
    checks.check(conn is None or conn != o.conn_of("/a"),
                 "the victim's request went on the connection that still held the leftover response")
    if front == "h1":
        checks.check(victim.c.is_open(0.05) and not victim.c.buf, "bytes after the victim's response: %r"
                     % victim.c.buf[:200])
    checks.none(wait_stray(pool, 1))
    checks.done()


# ---- 2. every read-buffer size ----

SIZES = sorted(set(list(range(4096, 65537, 4096)) + [16383, 16385, 32767, 32769, 65535, 65537]))


@pytest.mark.parametrize("front", ["h1", "h2c", "tls"])
def test_response_ending_on_every_buffer_size_with_stray_bytes_in_the_same_write(tether, hostile, clients,
                                                                                 request, front):
    """For every size N in SIZES, the origin answers GET /size/N with a response of exactly N bytes and the
    poison in the same write. After each, a victim on a new client connection gets its own echo, never
    on that upstream connection; each poisoned connection is counted once as stray_bytes."""
    o = hostile(lambda req: ([("send", response_of_size(int(req.target.rsplit("/", 1)[1])) + POISON)]
                             if req.target.startswith("/size/") else None))
    t, pool, certs = start_proxy(tether, request, front, o)
    checks = Checks()
    for n in SIZES:
        got = clients(front, t, certs).fetch("GET", "/size/%d" % n)
        assert got.status == 200 and got.body == content_of(response_of_size(n)), (n, got)
        time.sleep(0.02)
        target = "/victim/%d" % n
        conn = checks.run(check_echo, clients(front, t, certs).fetch("GET", target), "GET", target,
                          "the victim after a %d-byte response" % n)
        checks.check(conn is None or conn != o.conn_of("/size/%d" % n),
                     "after a %d-byte response the victim went on the connection holding the poison" % n)
    checks.none(wait_stray(pool, len(SIZES)))
    checks.done()


@pytest.mark.parametrize("front", ["h1", "h2c", "tls"])
def test_head_answer_whose_head_is_16k_with_stray_bytes(tether, hostile, clients, request, front):
    """HEAD /h is answered with a head of exactly 16,384 bytes (Content-Length: 16344, as the GET would be)
    and the poison in the same write: the HEAD client gets that head without content, the victim its echo."""
    owed = response_of_size(16384, content=False)
    o = hostile(lambda req: [("send", owed + POISON)] if req.target == "/h" else None)
    t, pool, certs = start_proxy(tether, request, front, o)
    got = clients(front, t, certs).fetch("HEAD", "/h")
    assert got.status == 200 and got.body == b"" and got.field("x-poison") is None, got
    if front in ("h1", "tls"):
        # (over h2, tether passes only the first 4 KiB of response fields: the 16 KiB X-Pad is dropped)
        assert len(got.field("x-pad") or "") > 16000, got.fields
    time.sleep(VICTIM_DELAY)
    checks = Checks()
    conn = checks.run(check_echo, clients(front, t, certs).fetch("GET", "/victim"), "GET", "/victim")
    checks.check(conn is None or conn != o.conn_of("/h"), "the victim went on the connection holding the poison")
    checks.none(wait_stray(pool, 1))
    checks.done()


# ---- 3. stray bytes while parked ----

@pytest.mark.parametrize("size", [0, 16384, 65536], ids=["small", "exact16k", "exact64k"])
@pytest.mark.parametrize("front", ["h1", "h2c", "tls"])
def test_stray_bytes_written_while_parked(tether, hostile, clients, request, front, size):
    """The origin answers GET /a (a small echo, or exactly 16 or 64 KiB), then writes the poison 50 ms later
    while the connection is parked. tether retires it (stray_bytes) and closes it; the victim, sent once
    the origin saw that close, gets its own echo; and the learner learned nothing (no Keep-Alive hint was
    sent, and stray bytes are not an idle close)."""
    def script(req):
        if req.target != "/a":
            return None
        owed = echo(req) if size == 0 else response_of_size(size)
        return [("send", owed), ("sleep", 0.05), ("mark", "stray"), ("send", POISON)]

    o = hostile(script)
    t, pool, certs = start_proxy(tether, request, front, o)
    got = clients(front, t, certs).fetch("GET", "/a")
    assert got.status == 200 and b"POISON" not in got.raw, got
    wait_until(lambda: "stray" in o.events, 3, "the origin's stray write")
    a = o.conn_of("/a")
    checks = Checks()
    try:
        wait_until(lambda: a in o.eof, 3, "tether to close the upstream connection that got stray bytes")
    except AssertionError as e:
        checks.check(False, str(e))
    conn = checks.run(check_echo, clients(front, t, certs).fetch("GET", "/victim"), "GET", "/victim")
    checks.check(conn is None or conn != a, "the victim went on the connection holding the poison")
    checks.none(wait_stray(pool, 1))
    checks.check(pool.learned() == 0, "the learner learned %ss from stray bytes 50 ms after a response"
                 % pool.learned())
    checks.done()


# ---- 4. HEAD, 204 and 304 with content ----

BODILESS = {
    # name: (method, request fields, answer head, content the origin should not have sent, later?)
    "head-cl": ("HEAD", {}, b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", b"hello world", False),
    "head-chunked": ("HEAD", {}, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                     b"b\r\nhello world\r\n0\r\n\r\n", False),
    "head-cl-later": ("HEAD", {}, b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", b"hello world", True),
    "204-cl": ("GET", {}, b"HTTP/1.1 204 No Content\r\nContent-Length: 11\r\n\r\n", b"hello world", False),
    "204-chunked": ("GET", {}, b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
                    b"b\r\nhello world\r\n0\r\n\r\n", False),
    "204-later": ("GET", {}, b"HTTP/1.1 204 No Content\r\n\r\n", b"hello world", True),
    "304-cl": ("GET", {"If-None-Match": '"v1"'},
               b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 11\r\n\r\n", b"hello world", False),
}


@pytest.mark.parametrize("front", ["h1", "h2c"])
@pytest.mark.parametrize("case", sorted(BODILESS))
def test_bodiless_answer_with_content(tether, hostile, clients, request, front, case):
    """The origin answers HEAD, 204 or 304 and then sends content (in the same write, or 50 ms later): the
    client of that request gets a correct bodiless response and its next request on the same connection its
    own echo; another client gets its own echo; the content is counted as stray bytes."""
    method, fields, head, junk, later = BODILESS[case]
    status = int(head.split(b" ")[1])

    def script(req):
        if req.target != "/x":
            return None
        if later:
            return [("send", head), ("sleep", 0.05), ("mark", "stray"), ("send", junk)]
        return [("send", head + junk), ("mark", "stray")]

    o = hostile(script)
    t, pool, certs = start_proxy(tether, request, front, o)
    c = clients(front, t, certs)
    got = c.fetch(method, "/x", fields.items())
    assert got.status == status and got.body == b"" and b"hello" not in got.raw, got
    wait_until(lambda: "stray" in o.events, 3, "the origin's content write")
    a = o.conn_of("/x")
    checks = Checks()
    try:
        wait_until(lambda: a in o.eof, 3, "tether to close the upstream connection that got content")
    except AssertionError as e:
        checks.check(False, str(e))
    if not c.h2:
        # nothing of the content reached the client after the response
        checks.check(c.c.is_open(0.1) and not c.c.buf, "bytes after the bodiless response: %r" % c.c.buf)
    checks.run(check_echo, c.fetch("GET", "/again"), "GET", "/again", "the same client's next request")
    conn = checks.run(check_echo, clients(front, t, certs).fetch("GET", "/victim"), "GET", "/victim")
    checks.check(conn is None or conn != a, "the victim went on the connection that got content")
    checks.none(wait_stray(pool, 1))
    checks.check(pool.learned() == 0, "the learner learned %ss from content after a bodiless answer"
                 % pool.learned())
    checks.done()


# ---- 5. early answer during a paused upload ----

UPLOAD = 64 << 20


class H1Upload:
    """POST /upload with Content-Length 64 MB, content sent from a thread until done, refused or stopped."""

    def __init__(self, t):
        self.c = HttpConn(*t.addr, timeout=20)
        self.sent = 0
        self.error = None
        self._stop = threading.Event()
        self.c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % UPLOAD)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        piece = b"u" * 65536
        deadline = time.monotonic() + 30 * SLOW
        try:
            while self.sent < UPLOAD and not self._stop.is_set() and time.monotonic() < deadline:
                self.c.sock.sendall(piece)
                self.sent += len(piece)
        except OSError as e:
            self.error = e

    def response(self, timeout):
        """(status, body) or ("closed", what) when the connection ended without a response."""
        self.c.sock.settimeout(timeout)
        try:
            r = self.c.response("POST")
            return r.status, r.body
        except (EOFError, ConnectionResetError, BrokenPipeError) as e:
            return "closed", repr(e) + " after %r" % self.c.buf[:200]
        except socket.timeout:
            return "timeout", self.c.buf[:200]

    def stop(self):
        self._stop.set()
        try:
            self.c.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._t.join(10 * SLOW)
        self.c.close()


def h2_upload(t, o, timeout):
    """POST /upload (64 MB announced) over h2c, sending DATA while the flow-control window allows, until the
    response ends, the stream is reset or the connection closes. Returns (status or "reset"/"closed",
    body, bytes sent when the origin answered)."""
    import h2.exceptions
    c = H2Conn(t.port, timeout=10)
    try:
        sid = c.request("/upload", method="POST", headers=[("content-length", str(UPLOAD))], end=False)
        sent = 0
        sent_at_answer = None
        deadline = time.monotonic() + timeout
        piece = b"u" * 16384
        can_send = True
        while time.monotonic() < deadline:
            if sent_at_answer is None and "answered" in o.events:
                sent_at_answer = sent
            st = c.streams.get(sid)
            if st is not None and (st["ended"] or st["reset"] is not None):
                break
            if c.closed:
                break
            try:
                win = min(c.h2.local_flow_control_window(sid), c.h2.max_outbound_frame_size)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                win = 0
            if win > 0 and sent < UPLOAD and can_send:
                try:
                    c.h2.send_data(sid, piece[:win])
                    c.flush()
                    sent += min(win, len(piece))
                    continue
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, OSError):
                    can_send = False  # the stream or the connection is over: only read what comes
            c.pump(0.05)
        st = c.stream_state(sid)
        if st["headers"] is not None and st["ended"]:
            return int(st["headers"][":status"]), st["body"], sent_at_answer
        if st["reset"] is not None:
            return "reset", st["reset"], sent_at_answer
        return ("closed" if c.closed else "timeout"), st, sent_at_answer
    finally:
        c.close()


@pytest.mark.parametrize("after", ["close", "drain"])
@pytest.mark.parametrize("front", ["h1", "h2c"])
def test_early_answer_during_paused_upload(tether, hostile, clients, request, front, after):
    """The origin reads the head of a 64 MB POST, reads none of its content for 1.5 s (tether's upload to it
    is paused by backpressure, and so is the client's), then answers 413 (Content-Length: 2) and closes, or
    keeps reading. The uploader gets that 413 (or a close without any response), tether keeps running,
    and a second client is served."""
    answer = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 2\r\n%s\r\nno" % (
        b"Connection: close\r\n" if after == "close" else b"")

    def script(req):
        if req.target != "/upload":
            return None
        tail = [("sleep", 0.3), ("close",)] if after == "close" else [("drain_body",)]
        return [("hold_body",), ("sleep", 1.5), ("mark", "answered"), ("send", answer)] + tail

    o = hostile(script, rcvbuf=65536)
    t, pool, certs = start_proxy(tether, request, front, o, extra="\n[limits]\nmax_body_size = 512m\n")
    if front == "h1":
        up = H1Upload(t)
        try:
            wait_until(lambda: "answered" in o.events, 5, "the origin's early answer")
            sent_at_answer = up.sent
            status, body = up.response(10 * SLOW)
        finally:
            up.stop()
    else:
        status, body, sent_at_answer = h2_upload(t, o, 15 * SLOW)
    assert sent_at_answer is not None and sent_at_answer < UPLOAD, \
        "the upload was not paused when the origin answered (%r bytes sent)" % sent_at_answer
    assert t.proc.poll() is None, "tether exited with %s:\n%s" % (t.proc.returncode, t.stderr()[-6000:])
    assert (status, body) == (413, b"no") or status in ("closed", "reset"), \
        "the uploader got %r %r" % (status, body)
    c = clients("h1", t)
    c.c.request("GET", "/after")
    r = response_or_crash(c.c, t)
    check_echo(Got(r.status, [(k.lower(), v) for k, v in r.headers], r.body, r.raw_head + r.body),
               "GET", "/after", "the next client")
    assert t.proc.poll() is None, t.stderr()[-6000:]


# ---- 6. FIN and RST at every point of a response ----

def cut_points(target):
    x = target.encode()
    cl = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nX-Req: %s\r\n\r\n" % x
    ch = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\nX-Req: %s\r\n\r\n" % x
    return {
        "status-line": (b"HTTP/1.1 20", None),
        "head": (b"HTTP/1.1 200 OK\r\nContent-Len", None),
        "head-end": (cl[:-2], None),
        "after-head": (cl, "cl"),
        "mid-content": (cl + b"0123456789" * 5, "cl"),
        "after-chunked-head": (ch, "chunked"),
        "chunk-size": (ch + b"a\r\n0123456789\r\n1", "chunked"),
        "chunk-data": (ch + b"a\r\n01234", "chunked"),
        "trailers": (ch + b"a\r\n0123456789\r\n0\r\nX-T: do", "chunked"),
    }


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("point", list(cut_points("/")))
def test_close_at_every_point_of_a_response(tether, hostile, clients, request, how, point):
    """The origin sends part of a response and closes (FIN) or resets (RST). The client of that request gets
    a 502 (always when the head never came whole) or its own response head with truncated content and a
    closed connection, never a complete response; a victim on another connection gets its own echo."""
    target = "/cut/%s/%s" % (point, how)
    prefix, framing = cut_points(target)[point]
    o = hostile(lambda req: [("send", prefix), ("sleep", 0.05), (how,)] if req.target == target else None)
    t, pool, certs = start_proxy(tether, request, "h1", o)
    c = clients("h1", t).c
    c.request("GET", target)
    try:
        r = read_head(c)
    except (EOFError, ConnectionResetError) as e:
        raise AssertionError("no response head (%r); tether %s\n%s" % (
            e, "running" if t.proc.poll() is None else "exited %s" % t.proc.returncode, t.stderr()[-6000:]))
    if r.status == 502:
        assert r.header("X-Tether-Cause"), r
        assert b"X-Req" not in r.raw_head, r
        c._read_exact(int(r.header("Content-Length", "0")))
    else:
        assert framing is not None, "a response came although its head was cut: %r" % r
        assert r.status == 200 and r.header("X-Req") == target, r
        data, closed = read_to_eof(c, 5)
        assert closed, "the truncated response was not ended by a close: %r" % data[:200]
        if r.header("Transfer-Encoding"):
            content, complete = parse_chunked_prefix(data)
            assert not complete, "a complete chunked response for a cut one: %r" % data
        else:
            content = data
            assert len(data) < int(r.header("Content-Length")), "complete content for a cut response"
        assert b"0123456789"[:len(content)] == content[:10] and b"POISON" not in data and b"echo" not in data, data
    got = clients("h1", t).fetch("GET", "/victim")
    check_echo(got, "GET", "/victim")
    assert t.proc.poll() is None


# ---- 7. 1xx responses ----

def final_echo(req):
    return echo(req)


INTERIM = {
    # name: list of writes before the final response (a write of None: the final response goes with it)
    "100": [b"HTTP/1.1 100 Continue\r\n\r\n"],
    "103": [b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"],
    "several": [b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 102 Processing\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </b.js>; rel=preload\r\n\r\n"],
    "separate-writes": [b"HTTP/1.1 100 Continue\r\n\r\n", 0.05,
                        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", 0.05],
    # a 1xx never has content (RFC 9112 6.3): its Content-Length announces nothing
    "103-with-content-length": [b"HTTP/1.1 103 Early Hints\r\nContent-Length: 10\r\nLink: </a.css>\r\n\r\n"],
}


@pytest.mark.parametrize("front", ["h1", "h2c"])
@pytest.mark.parametrize("case", list(INTERIM) + ["100-after-final"])
def test_interim_responses(tether, hostile, clients, request, front, case):
    """1xx responses (100, 102, 103, several, in the final response's write or in their own) are not taken
    for the final response: the client gets its own echo, and so do its next request and another client's.
    A 100 written after the final response (in the same write) is stray bytes: it reaches no one and
    retires the connection."""
    def script(req):
        if not req.target.startswith("/i"):
            return None
        if case == "100-after-final":
            return [("send", echo(req) + b"HTTP/1.1 100 Continue\r\n\r\n")]
        steps = []
        pending = b""
        for w in INTERIM[case]:
            if isinstance(w, float):
                steps += [("send", pending), ("sleep", w)]
                pending = b""
            else:
                pending += w
        return steps + [("send", pending + echo(req))]

    o = hostile(script)
    t, pool, certs = start_proxy(tether, request, front, o)
    c = clients(front, t, certs)
    check_echo(c.fetch("GET", "/i1"), "GET", "/i1", "the client")
    if not c.h2:
        assert c.c.is_open(0.05) and not c.c.buf, "bytes after the final response: %r" % c.c.buf
    check_echo(c.fetch("GET", "/again"), "GET", "/again", "the same client's next request")
    time.sleep(VICTIM_DELAY)
    check_echo(clients(front, t, certs).fetch("GET", "/victim"), "GET", "/victim")
    if case == "100-after-final":
        problem = wait_stray(pool, 1)
        assert problem is None, problem
    else:
        assert pool.retired_all() == {}, pool.retired_all()
