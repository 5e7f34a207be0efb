"""Shared fixtures for tether's integration tests.

Every test drives the real binary (TETHER_BIN, set by CTest) on 127.0.0.1 with ports chosen by the
kernel (`--listen 127.0.0.1:0`; tether logs the port it got). Every process a test starts is killed by
PID at teardown. `HttpConn` is a raw-socket HTTP/1.1 client that shows exactly what is on the wire.
"""

import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("TETHER_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
TETHER_BIN = os.environ.get("TETHER_BIN") or os.path.join(SOURCE_DIR, "build", "tether")
# Sanitizer builds (build-asan, build-tsan) are several times slower; timing tolerances scale with this.
SLOW = 3.0 if re.search(r"[at]san", TETHER_BIN) else 1.0
# How much later than due a scheduled event (a timer in tether, a close, a poll that sees it) may be seen when
# the machine is busy (other test files, other builds, one CPU): added to upper bounds where time is the
# behaviour. Lower bounds need no slack when they are measured from a stamp taken before the action that
# starts the clock (a busy machine makes nothing happen early).
LATE = 0.5 if SLOW == 1.0 else 1.0


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "multiworker: several tether threads work at once (workers, reloads, the metrics scraper, "
        "bench threads); `make test-tsan` runs these tests under ThreadSanitizer (tests/CMakeLists.txt)")


LISTEN_RE = re.compile(r"listening on (https?)://(\S+)")
METRICS_RE = re.compile(r"metrics on http://(\S+?)(/\S*)")


def split_hostport(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


class Tether:
    """One tether process. Use the `tether` fixture to start it."""

    def __init__(self, args, config=None, workdir=None, expect_listeners=1, metrics=True, env=None):
        self.workdir = workdir or tempfile.mkdtemp(prefix="tether-test-")
        self.access_log_path = os.path.join(self.workdir, "access.log")
        self.stderr_lines = []
        self.listen = []
        self.schemes = []  # "http" or "https", parallel to listen
        self.metrics_addr = None
        self._ready = threading.Event()
        argv = [TETHER_BIN, "serve"]
        if config is not None:
            path = os.path.join(self.workdir, "tether.ini")
            with open(path, "w") as f:
                f.write(config)
            self.config_path = path
            argv += ["--config", path]
        if (not any(a.startswith("--listen") or a.startswith("--tls-listen") for a in args)
                and not (config and "[listen" in config)):
            argv += ["--listen", "127.0.0.1:0"]
        if metrics and not any(a.startswith("--metrics") for a in args):
            argv += ["--metrics", "127.0.0.1:0"]
        if not any(a.startswith("--access-log") for a in args):
            argv += ["--access-log", self.access_log_path]
        argv += list(args)
        self.argv = argv
        self.expect_listeners = expect_listeners
        self.want_metrics = metrics
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.stdout_lines = []
        self._pumps = [threading.Thread(target=self._pump, args=args, daemon=True)
                       for args in ((self.proc.stderr, self.stderr_lines, True),
                                    (self.proc.stdout, self.stdout_lines, False))]
        for p in self._pumps:
            p.start()

    def _pump(self, stream, sink, parse):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            sink.append(line)
            if not parse:
                continue
            m = LISTEN_RE.search(line)
            if m:
                self.listen.append(split_hostport(m.group(2)))
                self.schemes.append(m.group(1))
            m = METRICS_RE.search(line)
            if m:
                self.metrics_addr = split_hostport(m.group(1))
                self.metrics_path = m.group(2)
            if len(self.listen) >= self.expect_listeners and (self.metrics_addr or not self.want_metrics):
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout=10):
        if not self._ready.wait(timeout * SLOW) or self.proc.poll() is not None:
            raise RuntimeError("tether did not start: %s\n%s" % (" ".join(self.argv), self.stderr()))
        return self

    @property
    def port(self):
        return self.listen[0][1]

    @property
    def addr(self):
        return self.listen[0]

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def stderr(self):
        return "\n".join(self.stderr_lines)

    def connect(self, timeout=5, index=0):
        return HttpConn(self.listen[index][0], self.listen[index][1], timeout=timeout)

    def metrics_text(self):
        c = HttpConn(*self.metrics_addr)
        try:
            c.send(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
            r = c.response()
            assert r.status == 200, r
            return r.body.decode()
        finally:
            c.close()

    def metrics(self):
        """All samples as {'name{labels}': value}; labels as written by tether."""
        out = {}
        for line in self.metrics_text().splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
        return out

    def metric(self, name, **labels):
        key = name
        if labels:
            key += "{" + ",".join('%s="%s"' % kv for kv in labels.items()) + "}"
        return self.metrics().get(key, 0.0)

    def closed(self, reason):
        return self.metric("tether_connections_closed_total", reason=reason)

    def wait_metric(self, name, predicate, timeout=5, **labels):
        """Polls until predicate(value) holds; returns the value (asserts on timeout)."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            v = self.metric(name, **labels)
            if predicate(v):
                return v
            if time.monotonic() > deadline:
                raise AssertionError("%s%s stayed at %s" % (name, labels, v))
            time.sleep(0.02)

    def access_lines(self, wait_for=0, timeout=5):
        """Access log lines (waits until at least `wait_for` are written: they are flushed per loop turn)."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            try:
                with open(self.access_log_path) as f:
                    lines = f.read().splitlines()
            except FileNotFoundError:
                lines = []
            if len(lines) >= wait_for or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)

    def join_output(self, timeout=5):
        """After the process exited: waits until its stdout and stderr are read to the end."""
        for p in self._pumps:
            p.join(timeout)

    def sanitizer_reports(self):
        """ThreadSanitizer warnings on stderr (the other sanitizers abort the process instead)."""
        return [line for line in self.stderr_lines if "WARNING: ThreadSanitizer" in line]

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Sends `sig` and waits; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("tether did not exit within %ss after %s" % (timeout, sig))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def tether(tmp_path):
    """Factory: tether(*flags, config=None, expect_listeners=1, metrics=True) -> a ready Tether.

    At teardown every server still running gets SIGTERM and must exit with status 0: a sanitizer report, a
    leak found at exit or a drain that hangs fails the test that caused it. A ThreadSanitizer report fails it
    too, whatever the exit status was."""
    started = []

    def start(*args, config=None, expect_listeners=1, metrics=True, ready=True, env=None):
        t = Tether(args, config=config, workdir=str(tmp_path), expect_listeners=expect_listeners,
                   metrics=metrics, env=env)
        started.append(t)
        if ready:
            t.wait_ready()
        return t

    yield start
    unclean = []
    for t in started:
        try:
            if t.proc.poll() is None:
                rc = t.stop()
                if rc != 0:
                    unclean.append("tether exited with %s after SIGTERM:\n%s" % (rc, t.stderr()[-4000:]))
        except AssertionError as e:  # did not exit in time
            unclean.append(str(e))
        finally:
            t.kill()
        t.join_output()
        if t.sanitizer_reports():
            unclean.append("ThreadSanitizer reported:\n%s" % t.stderr()[-8000:])
    assert not unclean, "\n\n".join(unclean)


@pytest.fixture
def site(tmp_path):
    """A document root with known files."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><h1>index</h1>\n")
    (root / "100.txt").write_bytes(b"x" * 99 + b"\n")
    (root / "4k.bin").write_bytes(bytes(range(256)) * 16)
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))  # above the in-memory size: sendfile
    (root / "style.css").write_text("body{}\n")
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_text("<h1>sub</h1>\n")
    (root / "sub" / "a b.txt").write_text("space\n")
    (root / "noindex").mkdir()
    (root / "noindex" / "file.txt").write_text("f\n")
    return root


# ---- a raw HTTP/1.1 client ----

class Response:
    def __init__(self, version, status, reason, headers, body, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value) as sent
        self.body = body
        self.raw_head = raw_head

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def keep_alive(self):
        """Parsed Keep-Alive field: {'timeout': int, 'max': int} or None."""
        v = self.header("Keep-Alive")
        if v is None:
            return None
        out = {}
        for part in v.split(","):
            k, _, val = part.strip().partition("=")
            out[k] = int(val)
        return out

    def __repr__(self):
        return "<Response %d %s %r>" % (self.status, self.reason, self.headers)


class HttpConn:
    """One TCP connection; send raw bytes, read responses exactly as framed."""

    def __init__(self, host, port, timeout=5):
        self.sock = socket.create_connection((host, port), timeout=timeout * SLOW)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def request(self, method="GET", path="/", headers=None, body=b"", version="HTTP/1.1", host="t"):
        lines = ["%s %s %s" % (method, path, version)]
        if host is not None:
            lines.append("Host: %s" % host)
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        if body and not any(k.lower() in ("content-length", "transfer-encoding") for k in (headers or {})):
            lines.append("Content-Length: %d" % len(body))
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by server")
        self.buf += chunk

    def _read_until(self, marker):
        while marker not in self.buf:
            self._fill()
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self, method="GET", skip_1xx=True):
        """Reads one response (skipping 1xx interim ones unless skip_1xx is False)."""
        while True:
            head = self._read_until(b"\r\n\r\n")
            lines = head[:-4].decode("latin-1").split("\r\n")
            version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
            status = int(status)
            headers = []
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers.append((k, v.strip()))
            r = Response(version, status, reason, headers, b"", head)
            if 100 <= status < 200:
                if skip_1xx:
                    continue
                return r
            break
        if method == "HEAD" or status in (204, 304):
            return r
        te = r.header("Transfer-Encoding")
        cl = r.header("Content-Length")
        if te and te.lower() == "chunked":
            body = b""
            while True:
                size = int(self._read_until(b"\r\n")[:-2].split(b";")[0], 16)
                if size == 0:
                    self._read_until(b"\r\n\r\n") if not self.buf.startswith(b"\r\n") else self._read_exact(2)
                    break
                body += self._read_exact(size)
                self._read_exact(2)
            r.body = body
        elif cl is not None:
            r.body = self._read_exact(int(cl))
        else:
            while True:
                try:
                    self._fill()
                except EOFError:
                    break
            r.body, self.buf = self.buf, b""
        return r

    def get(self, path="/", **kw):
        self.request("GET", path, **kw)
        return self.response()

    def wait_closed(self, timeout=10):
        """Waits for FIN or RST from the server; returns the seconds it took, or None on timeout."""
        start = time.monotonic()
        self.sock.settimeout(timeout * SLOW)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return time.monotonic() - start
                self.buf += chunk
        except socket.timeout:
            return None
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start

    def is_open(self, wait=0.05):
        """True when the server has not closed the connection (nothing readable, no FIN) within `wait` s."""
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536, socket.MSG_PEEK)
            return bool(chunk)
        except socket.timeout:
            return True
        except (ConnectionResetError, BrokenPipeError):
            return False
        finally:
            self.sock.settimeout(5 * SLOW)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def conns():
    """Connections opened through it are closed at teardown: conns(port_or_tether) -> HttpConn."""
    opened = []

    def open_(target, timeout=5, index=0):
        c = target.connect(timeout=timeout, index=index) if isinstance(target, Tether) else HttpConn("127.0.0.1", target, timeout)
        opened.append(c)
        return c

    yield open_
    for c in opened:
        c.close()


# ---- one input, whole and split at every byte ----

def verdict(c, timeout=5):
    """What a client learns from one answer on HttpConn `c`: (status, Connection field, Keep-Alive advertised,
    closed). `closed` is looked at only when the answer says close (then the server must close, within
    `timeout`); ("none",) when no answer came."""
    try:
        r = c.response()
    except (EOFError, OSError):
        return ("none",)
    conn = (r.header("Connection") or "").lower()
    closed = c.wait_closed(timeout) is not None if conn == "close" else False
    return (r.status, conn, r.header("Keep-Alive") is not None, closed)


def split_verdicts(t, raw, points=None, batch=48):
    """Sends `raw` whole, and in two writes split at each of `points` (every byte by default), each on its own
    connection to tether `t`; returns {split: verdict} with split 0 for the whole input. A batch of connections
    gets its first parts, then its second parts, so the server reads each part on its own (as far as TCP lets
    a test tell); answers are read after both parts went out."""
    plan = [0] + list(range(1, len(raw)) if points is None else points)
    out = {}
    for i in range(0, len(plan), batch):
        group = []
        try:
            for k in plan[i:i + batch]:
                c = t.connect()
                group.append((k, c))
                c.send(raw if k == 0 else raw[:k])
            for k, c in group:
                if k:
                    try:
                        c.send(raw[k:])
                    except OSError:
                        pass  # refused already: the answer is waiting in the socket
            for k, c in group:
                out[k] = verdict(c)
        finally:
            for _, c in group:
                c.close()
    return out
