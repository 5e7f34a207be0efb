"""Helpers for the reverse-proxy suites (test_proxy_forwarding.py, test_proxy_failures.py).

Origins: the project's `origin.Origin` in-process, plus purpose-built servers (a fast streamer for huge
responses, a slowly reading upload sink, one that resets every request whatever the query says, a
listener whose full accept queue swallows SYNs); wire-level readers that show truncation and trailers;
RSS sampling of the tether process; a throw-away nginx.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import SLOW, Response
from origin import PATTERN, Origin


# ---- fixtures ----

@pytest.fixture
def clean_tether(tether):
    """conftest's factory, which checks a clean exit (status 0 after SIGTERM) at teardown."""
    return tether


@pytest.fixture
def origins():
    """Factory of in-process origins (origin.Origin or a subclass); all stopped at teardown."""
    started = []

    def start(cls=Origin, **kw):
        kw.setdefault("idle_timeout", 30.0)
        o = cls(**kw).start()
        started.append(o)
        return o

    yield start
    for o in started:
        o.stop()


@pytest.fixture
def procs():
    """Subprocesses started through it are killed (by PID) at teardown: procs(Popen) -> Popen."""
    started = []

    def add(p):
        started.append(p)
        return p

    yield add
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


# ---- small helpers ----

def addr(o):
    return "127.0.0.1:%d" % o.port


def closed_port():
    """A port nothing listens on (bound by the kernel, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def upstream_config(servers, route="/", name="backend", extra="", **keys):
    """An INI text: [upstream NAME] with `servers` and `keys`, and [route ROUTE] to it."""
    lines = ["[upstream %s]" % name]
    for s in servers:
        lines.append("server = %s" % s)
    for k, v in keys.items():
        lines.append("%s = %s" % (k, v))
    lines += ["", "[route %s]" % route, "upstream = %s" % name, ""]
    return "\n".join(lines) + extra


def echo(resp):
    """The origin's JSON echo in a response."""
    assert resp.status == 200, resp
    return json.loads(resp.body)


def field_values(e, name):
    """Every value of field `name` the origin received (in order)."""
    return [v for k, v in e["headers"] if k.lower() == name.lower()]


def pattern(n):
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RssSampler:
    """Samples VmRSS of `pid` every 50 ms in a thread; `.peak` is the highest seen (KiB)."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = vm_rss_kib(pid)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, vm_rss_kib(self.pid))
            except (OSError, AssertionError):
                return

    def stop(self):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, vm_rss_kib(self.pid))
        return self.peak


def parse_head(head):
    lines = head[:-4].decode("latin-1").split("\r\n")
    version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k, v.strip()))
    return Response(version, int(status), reason, headers, b"", head)


def read_head(c, skip_1xx=True):
    """Reads one response head from HttpConn `c` (the content stays in c.buf)."""
    while True:
        r = parse_head(c._read_until(b"\r\n\r\n"))
        if skip_1xx and 100 <= r.status < 200:
            continue
        return r


def read_to_eof(c, timeout=10):
    """Everything until the server closes (FIN or RST); returns (bytes, closed)."""
    closed = c.wait_closed(timeout) is not None
    data, c.buf = c.buf, b""
    return data, closed


def read_chunked(c):
    """Reads chunked content after a head: (body, trailer lines)."""
    body = []
    while True:
        line = c._read_until(b"\r\n")[:-2]
        size = int(line.split(b";")[0], 16)
        if size == 0:
            break
        body.append(c._read_exact(size))
        assert c._read_exact(2) == b"\r\n"
    trailers = []
    while True:
        line = c._read_until(b"\r\n")[:-2]
        if not line:
            break
        trailers.append(line.decode("latin-1"))
    return b"".join(body), trailers


def parse_chunked_prefix(data):
    """Decodes as much chunked content as `data` holds: (content, complete) -- complete when the last
    chunk and the end of the trailer section are there."""
    out = []
    i = 0
    while True:
        j = data.find(b"\r\n", i)
        if j < 0:
            return b"".join(out), False
        size = int(data[i:j].split(b";")[0], 16)
        i = j + 2
        if size == 0:
            return b"".join(out), data.find(b"\r\n\r\n", i - 2) >= 0 or data[i:i + 2] == b"\r\n"
        out.append(data[i:i + size])
        if len(data) < i + size + 2:
            return b"".join(out), False
        i += size + 2


def stream_read(c, n, feed, chunk=1 << 20):
    """Reads exactly `n` content bytes after a Content-Length head, handing each piece to `feed` (nothing
    is kept); raises EOFError when the server closes first."""
    got = 0
    if c.buf:
        take, c.buf = c.buf[:n], c.buf[n:]
        feed(take)
        got = len(take)
    while got < n:
        data = c.sock.recv(min(chunk, n - got))
        if not data:
            raise EOFError("closed after %d of %d bytes" % (got, n))
        feed(data)
        got += len(data)
    return got


def access_line_for(t, needle, timeout=5):
    """The access-log line that contains `needle` (waits for it)."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        for line in t.access_lines():
            if needle in line:
                return line
        if time.monotonic() > deadline:
            raise AssertionError("no access-log line with %r:\n%s" % (needle, "\n".join(t.access_lines())))
        time.sleep(0.02)


def generated(t, upstream, cause):
    return t.metric("tether_upstream_generated_total", upstream=upstream, cause=cause)


def all_generated(t):
    return sum(v for k, v in t.metrics().items() if k.startswith("tether_upstream_generated_total"))


# ---- purpose-built origins ----

class SlowOrigin(Origin):
    """An origin that waits `slow` seconds before every answer, whatever the query says."""

    def __init__(self, slow=1.0, **kw):
        super().__init__(**kw)
        self.slow = slow

    def respond(self, c, req, num, served):
        time.sleep(self.slow)
        return super().respond(c, req, num, served)


class RawServer:
    """Accepts connections and hands each one to `handler(sock)` in its own thread."""

    def __init__(self, handler, backlog=128):
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(c)
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c):
        try:
            self.handler(c)
        except OSError:
            pass

    def stop(self):
        try:
            self.sock.close()
        except OSError:
            pass
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def recv_head(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = c.recv(65536)
        if not chunk:
            return None, b""
        buf += chunk
    i = buf.index(b"\r\n\r\n") + 4
    return buf[:i], buf[i:]


def rst(c):
    import struct
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def reset_server():
    """Every request is answered with an RST before any response byte."""
    def handler(c):
        while True:
            head, _ = recv_head(c)
            if head is None:
                c.close()
                return
            rst(c)
            return
    return RawServer(handler)


def slow_upload_server(read_pause=0.05, read_size=16384, slow_for=4.0):
    """Reads request content slowly (`read_size` bytes every `read_pause` s) for `slow_for` seconds, then
    quickly; answers 200 with "LEN SHA256" of the content (Content-Length framing only)."""
    def handler(c):
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        head, rest = recv_head(c)
        if head is None:
            return
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        n = int(m.group(1)) if m else 0
        h = hashlib.sha256(rest[:n])
        got = len(rest[:n])
        start = time.monotonic()
        while got < n:
            slow = time.monotonic() - start < slow_for
            data = c.recv(min(read_size if slow else 1 << 20, n - got))
            if not data:
                return
            h.update(data)
            got += len(data)
            if slow:
                time.sleep(read_pause)
        body = b"%d %s" % (got, h.hexdigest().encode())
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        c.close()
    return RawServer(handler)


def stream_server():
    """A fast origin for huge responses: GET /?size=N answers N bytes of the origin's pattern with
    Content-Length, sent in 1 MiB writes (origin.Origin builds the whole content in memory first)."""
    block = memoryview(pattern(1 << 20))

    def handler(c):
        while True:
            head, _ = recv_head(c)
            if head is None:
                c.close()
                return
            m = re.search(rb"[?&]size=(\d+)", head.split(b"\r\n", 1)[0])
            n = int(m.group(1)) if m else 0
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
            off = 0
            while off < n:
                # `block` holds whole periods of the pattern, so every write starts where the last ended.
                take = min(n - off, len(block) - len(block) % 10)
                c.sendall(block[:take])
                off += take
    return RawServer(handler)


class PatternChecker:
    """Checks streamed content against the origin's pattern without keeping it."""

    def __init__(self):
        self.big = pattern((1 << 21) + 10)
        self.off = 0
        self.ok = True

    def feed(self, data):
        while data:
            part = data[:1 << 21]
            data = data[len(part):]
            s = self.off % 10
            if part != self.big[s:s + len(part)]:
                self.ok = False
            self.off += len(part)


class Blackhole:
    """A listening socket whose accept queue is full and never drained: the kernel drops further SYNs, so a
    connect to it neither completes nor is refused."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(s)
        time.sleep(0.2)

    def works(self, wait=0.5):
        """True when a new connect to it stays pending for `wait` seconds."""
        s = socket.socket()
        s.settimeout(wait)
        try:
            s.connect(("127.0.0.1", self.port))
            return False
        except socket.timeout:
            return True
        except OSError:
            return False
        finally:
            s.close()

    def close(self):
        for s in self.fillers:
            s.close()
        self.sock.close()


# ---- nginx ----

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 60s;
    keepalive_requests 1000;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        location = /post {{ return 200 "posted\\n"; }}
{extra}
    }}
}}
"""


def raw_status(port, raw):
    """Sends `raw` on a new connection to 127.0.0.1:`port`; the status of the answer (None when it is not HTTP/1.x).
    For servers tether is compared with."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
    try:
        s.sendall(raw)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else None
    finally:
        s.close()


def start_nginx(procs, files, extra=""):
    """Starts nginx on a free port serving `files` ({name: bytes}; "a/b" makes the directory); `extra` is more
    configuration for its server block (locations, proxy_pass). Returns its port."""
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx is not installed")
    d = tempfile.mkdtemp(prefix="tether-nginx-")
    os.mkdir(os.path.join(d, "www"))
    for name, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(d, "www", name)), exist_ok=True)
        with open(os.path.join(d, "www", name), "wb") as f:
            f.write(data)
    for attempt in range(5):
        port = closed_port()
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(d=d, port=port, extra=extra))
        p = procs(subprocess.Popen([NGINX, "-p", d, "-c", conf], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 5 * SLOW
        while time.monotonic() < deadline and p.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port
            except OSError:
                time.sleep(0.05)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()
    with open(os.path.join(d, "error.log")) as f:
        raise AssertionError("nginx did not start:\n" + f.read())
