"""A scriptable raw HTTP/1.1 origin for the hostile-origin suite (test_proxy_hostile.py).

`HostileOrigin(script)` accepts connections (one thread each), reads one request head at a time, and asks
`script(req)` what to do with it. `req` is a `Req` (conn number, request number on that connection, method,
target, fields, content length). The script returns a list of steps, executed in order, or None for the
default answer (`echo(req)`, keep-alive):

    ("send", data)        one write of exactly `data` (SO_SNDBUF is large, so it is one send(2));
    ("sleep", seconds)    wait;
    ("mark", name)        record time.monotonic() in events[name];
    ("fin",)              shutdown(SHUT_WR), then read (and discard) until the peer closes, then close;
    ("rst",)              close with SO_LINGER 0 (an RST), whatever is unread;
    ("close",)            close(2) at once (an RST if request bytes are unread, else a FIN);
    ("hold_body",)        only as the first step: do not read the request content (it stays in the
                          socket: the upload is paused by backpressure); unless a ("drain_body",) step
                          reads it, the connection then only waits for the peer's close (discarding);
    ("drain_body",)       read the request content now (discarding it);

After the last step the connection waits for the next request (unless a step closed it). The request
content is read before the steps unless the first step is ("hold_body",). Only Content-Length and chunked
request content are understood.

Everything is recorded: `requests` (every Req in arrival order, with its `head` and, up to 1 MiB, its `content` as
received, and `complete` once all of it was read: whether the origin could have run the request; the script is
asked at the head), `events` (marks), `eof[conn]` (time the
origin saw the peer close, FIN or RST, a connection it was waiting on; `resets` holds the conns closed by
an RST), `accepted`. Nothing here asserts.
"""

import re
import socket
import struct
import threading
import time

import pytest

ECHO_RE = re.compile(rb"^echo (\S+) (\S+) conn=(\d+) req=(\d+)\n$")

POISON = b"HTTP/1.1 200 OK\r\nContent-Length: 19\r\nX-Poison: 1\r\n\r\nPOISONED-RESPONSE!\n"


class Req:
    def __init__(self, conn, num, method, target, fields, head):
        self.conn = conn
        self.num = num
        self.method = method
        self.target = target
        self.fields = fields  # [(name, value)]
        self.head = head
        self.content_length = 0
        self.chunked = False
        for k, v in fields:
            if k.lower() == "content-length":
                self.content_length = int(v)
            elif k.lower() == "transfer-encoding" and "chunked" in v.lower():
                self.chunked = True
        self.body_len = 0
        self.content = b""  # the content's bytes exactly as received (chunked framing and trailers included)
        self.complete = False  # the whole content arrived (the request could have been run)

    def field(self, name, default=None):
        for k, v in self.fields:
            if k.lower() == name.lower():
                return v
        return default

    def __repr__(self):
        return "<Req conn=%d req=%d %s %s>" % (self.conn, self.num, self.method, self.target)


def echo_body(req):
    return b"echo %s %s conn=%d req=%d\n" % (req.method.encode(), req.target.encode(), req.conn, req.num)


def echo(req, extra_fields=b""):
    """The default answer: 200 with `echo METHOD TARGET conn=N req=M\\n` (no content for HEAD)."""
    body = echo_body(req)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\nX-Echo: %s\r\n%s\r\n" % (
        len(body), req.target.encode(), extra_fields)
    return head if req.method == "HEAD" else head + body


def response_of_size(total, status=b"200 OK", fields=b"", content=True):
    """A Content-Length response of exactly `total` bytes (head + content); a pad field or the content
    makes up the size. With content=False (a HEAD answer) the head alone is `total` bytes and announces
    Content-Length: 16344 as the GET would."""
    if content:
        for digits in range(1, 8):
            head = b"HTTP/1.1 %s\r\nContent-Length: %s\r\nContent-Type: application/octet-stream\r\n%s\r\n" % (
                status, b"0" * digits, fields)
            n = total - len(head)
            if n >= 0 and len(str(n)) == digits:
                head = head.replace(b"0" * digits, str(n).encode(), 1)
                body = (b"0123456789" * (n // 10 + 1))[:n]
                out = head + body
                assert len(out) == total
                return out
        raise ValueError("no Content-Length fits %d" % total)
    base = b"HTTP/1.1 %s\r\nContent-Length: 16344\r\nContent-Type: application/octet-stream\r\n%sX-Pad: \r\n\r\n" % (
        status, fields)
    pad = total - len(base)
    assert pad >= 0, total
    out = base.replace(b"X-Pad: ", b"X-Pad: " + b"p" * pad)
    assert len(out) == total
    return out


class HostileOrigin:
    def __init__(self, script=None, rcvbuf=None):
        self.script = script or (lambda req: None)
        self.lock = threading.Lock()
        self.requests = []
        self.events = {}
        self.eof = {}
        self.resets = set()
        self.accepted = 0
        self.errors = []
        self._conns = []
        self._stopped = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # inherited by accepted ones
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.name = "127.0.0.1:%d" % self.port
        threading.Thread(target=self._serve, daemon=True).start()

    # ---- looking ----

    def requests_for(self, target):
        with self.lock:
            return [r for r in self.requests if r.target == target]

    def conn_of(self, target):
        """The connection number the (one) request for `target` arrived on, or None."""
        rs = self.requests_for(target)
        return rs[0].conn if rs else None

    def mark(self, name):
        with self.lock:
            self.events[name] = time.monotonic()

    # ---- serving ----

    def stop(self):
        self._stopped = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.close()
            except OSError:
                pass

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                num = self.accepted
                self._conns.append(c)
            threading.Thread(target=self._conn, args=(c, num), daemon=True).start()

    def _recv(self, c, buf):
        chunk = c.recv(65536)
        if not chunk:
            raise EOFError
        return buf + chunk

    def _read_content(self, c, req, buf):
        """Reads the request content (kept in req.content when small); returns what follows it."""
        keep = 1 << 20
        if req.chunked:
            while True:
                while b"\r\n" not in buf:
                    buf = self._recv(c, buf)
                line, buf = buf.split(b"\r\n", 1)
                req.content += line + b"\r\n"
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while True:
                        while b"\r\n" not in buf:
                            buf = self._recv(c, buf)
                        tl, buf = buf.split(b"\r\n", 1)
                        req.content += tl + b"\r\n"
                        if not tl:
                            req.complete = True
                            return buf
                while len(buf) < size + 2:
                    buf = self._recv(c, buf)
                req.body_len += size
                if len(req.content) < keep:
                    req.content += buf[:size + 2]
                buf = buf[size + 2:]
        left = req.content_length
        take = min(left, len(buf))
        req.content += buf[:take]
        buf = buf[take:]
        left -= take
        req.body_len += take
        while left > 0:
            chunk = c.recv(min(left, 1 << 20))
            if not chunk:
                raise EOFError
            left -= len(chunk)
            req.body_len += len(chunk)
            if len(req.content) < keep:
                req.content += chunk
        req.complete = True
        return buf

    def _conn(self, c, num):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        c.settimeout(60)
        buf = b""
        n = 0
        try:
            while True:
                try:
                    while b"\r\n\r\n" not in buf:
                        buf = self._recv(c, buf)
                except (EOFError, ConnectionResetError) as e:
                    # tether closed it (a close with unread bytes in its socket is an RST)
                    with self.lock:
                        self.eof[num] = time.monotonic()
                        if isinstance(e, ConnectionResetError):
                            self.resets.add(num)
                    return
                i = buf.index(b"\r\n\r\n") + 4
                head, buf = buf[:i], buf[i:]
                lines = head[:-4].decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[:2]
                fields = []
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    fields.append((k.strip(), v.strip()))
                n += 1
                req = Req(num, n, method, target, fields, head)
                with self.lock:
                    self.requests.append(req)
                steps = self.script(req)
                if steps is None:
                    steps = [("send", echo(req))]
                held = bool(steps) and steps[0][0] == "hold_body"
                if not held:
                    buf = self._read_content(c, req, buf)
                alive, buf, drained = self._run(c, req, steps, buf)
                if not alive:
                    return
                if held and not drained:
                    # the content was never read: no next request can be found in it; wait for the close
                    c.settimeout(30)
                    try:
                        while c.recv(1 << 20):
                            pass
                    except OSError:
                        pass
                    with self.lock:
                        self.eof[num] = time.monotonic()
                    return
        except (OSError, EOFError) as e:
            with self.lock:
                self.errors.append((num, repr(e)))
        finally:
            try:
                c.close()
            except OSError:
                pass

    def _run(self, c, req, steps, buf):
        """Executes the steps: (alive, rest of the input, content drained by a step)."""
        drained = False
        for step in steps:
            what = step[0]
            if what == "send":
                c.sendall(step[1])
            elif what == "sleep":
                time.sleep(step[1])
            elif what == "mark":
                self.mark(step[1])
            elif what == "hold_body":
                pass
            elif what == "drain_body":
                buf = self._read_content(c, req, buf)
                drained = True
            elif what == "fin":
                c.shutdown(socket.SHUT_WR)
                c.settimeout(10)
                try:
                    while c.recv(65536):
                        pass
                except OSError:
                    pass
                with self.lock:
                    self.eof[req.conn] = time.monotonic()
                c.close()
                return False, buf, drained
            elif what == "rst":
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.close()
                return False, buf, drained
            elif what == "close":
                c.close()
                return False, buf, drained
            else:
                raise ValueError("unknown step %r" % (step,))
        return True, buf, drained


@pytest.fixture
def hostile():
    """Factory: hostile(script, **kw) -> a HostileOrigin, stopped at teardown."""
    started = []

    def start(script=None, **kw):
        o = HostileOrigin(script, **kw)
        started.append(o)
        return o

    yield start
    for o in started:
        o.stop()
