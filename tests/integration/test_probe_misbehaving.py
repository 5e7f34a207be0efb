"""tether probe against origins that misbehave on purpose: the probe must report what they really do, not
what a well-behaved server would do (test_probe.py only meets well-behaved ones).

  * a Keep-Alive: timeout=10 field while idle connections are closed after ~1 s: the timeout is false;
  * a silent close (FIN, or RST on the next request) after N requests: max requests N, closed_silently;
  * pipelined requests answered out of order, reversed, or cut short: not in order;
  * HTTP/1.0 with Connection: keep-alive not honoured (says close, or closes without saying so);
  * the live progress line on a terminal (stderr a pty), and none when stderr is not a terminal.

The origin here (`Origin`, also used by test_bench_errors.py) is a small threaded HTTP/1.1 server on
127.0.0.1 with a kernel-chosen port; every connection thread ends and is joined at teardown.
"""

import json
import os
import re
import select
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import SLOW, TETHER_BIN
from test_probe import advice_candidates, near, recommended_ms, secs

MISSING_PATH = "/.tether-probe-missing"  # the probe's pipelined request for a path that should not exist
BODY_OK = b"hello from a misbehaving origin\n"
BODY_MISSING = b"not here\n"


class _Conn:
    """A server-side connection; closing and the teardown's shutdown are serialised by a lock."""

    def __init__(self, sock, index):
        self.sock = sock
        self.index = index
        self.lock = threading.Lock()
        self.closed = False

    def close(self, rst=False):
        with self.lock:
            if self.closed:
                return
            self.closed = True
            try:
                if rst:  # SO_LINGER 0: close sends an RST instead of a FIN
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.sock.close()
            except OSError:
                pass

    def shutdown(self):
        with self.lock:
            if not self.closed:
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class Origin:
    """A threaded HTTP/1.1 origin (GET and HEAD, no request content) that misbehaves as told.

    Well-behaved by default: persistent HTTP/1.1, HTTP/1.0 keep-alive honoured, pipelined requests answered
    in order; 200 for every path but MISSING_PATH (404). Knobs:
      idle_close      close (FIN) a connection this many seconds after its last response (None: never)
      keep_alive      a Keep-Alive field value added to every response ("timeout=10")
      silent_after    after this many responses on a connection, end it without saying so:
      silent_mode     "fin": close right after the last response; "rst": read the next request, then RST
      pipeline        with several requests in one read: "swap" answers the first two in swapped order,
                      "reverse" answers all in reverse order, "cut" answers the first two, then closes (FIN)
      missing_status  the status of MISSING_PATH
      http10          HTTP/1.0 + Connection: keep-alive: None honours it; "says_close" answers HTTP/1.0
                      without keep-alive and closes; "closed_silently" answers "Connection: keep-alive" and
                      closes anyway
      delay           seconds to wait before each response (connections are served one request at a time)
      stall           (n, seconds): the n-th request of the origin (1-based) waits that long
      after           (k, action): on the (k+1)-th request of a connection: "rst" (read it, RST), "hang" (read
                      it, never answer), "truncate" (a 200 head + 10 of 100 bytes of content, then FIN),
                      "truncate_503" (the same with status 503), "stall_body" (a 200 head + 10 of 100 bytes of
                      content, then nothing)
      stop_listening_after  the n-th request of the origin stops the listener (connects are refused from
                      then on), then is answered with Connection: close
    """

    def __init__(self, idle_close=0.5, keep_alive=None, silent_after=None, silent_mode="fin", pipeline=None,
                 missing_status=404, http10=None, delay=0.0, stall=None, after=None, stop_listening_after=None):
        self.idle_close = idle_close
        self.keep_alive = keep_alive
        self.silent_after = silent_after
        self.silent_mode = silent_mode
        self.pipeline = pipeline
        self.missing_status = missing_status
        self.http10 = http10
        self.delay = delay
        self.stall = stall
        self.after = after
        self.stop_listening_after = stop_listening_after
        self.lock = threading.Lock()
        self.accepted = 0
        self.requests = 0
        self.idle_closes = 0
        self.pipelined_batches = 0
        self.conns = []
        self.threads = []
        self._stop = threading.Event()
        self._listening = True
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept_thread.start()

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    # ---- listening ----

    def stop_listening(self):
        """From now on connects are refused (the listening socket leaves the LISTEN state at once)."""
        with self.lock:
            if self._listening:
                self._listening = False
                try:
                    self.listener.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _accept_loop(self):
        try:
            while not self._stop.is_set():
                with self.lock:
                    if not self._listening:
                        break
                try:
                    ready, _, _ = select.select([self.listener], [], [], 0.05)
                except (OSError, ValueError):
                    break
                if not ready:
                    continue
                try:
                    sock, _ = self.listener.accept()
                except OSError:
                    continue  # the listener was shut down meanwhile: the loop ends at the check above
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self.lock:
                    conn = _Conn(sock, self.accepted)
                    self.accepted += 1
                    self.conns.append(conn)
                    t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
                    self.threads.append(t)
                t.start()
        finally:
            self.stop_listening()
            self.listener.close()

    def close(self):
        """Stops everything and joins every thread (asserts that they all ended)."""
        self._stop.set()
        self.stop_listening()
        self._accept_thread.join(5)
        with self.lock:
            conns, threads = list(self.conns), list(self.threads)
        for c in conns:
            c.shutdown()
        for t in threads:
            t.join(5)
        for c in conns:
            c.close()
        alive = [t for t in threads + [self._accept_thread] if t.is_alive()]
        assert not alive, "origin threads did not end: %r" % alive

    # ---- one connection ----

    def _wait_readable(self, conn, timeout):
        try:
            ready, _, _ = select.select([conn.sock], [], [], timeout)
            return bool(ready)
        except (OSError, ValueError):
            return True  # closed under us: the recv that follows says so

    def _recv(self, conn):
        try:
            return conn.sock.recv(65536)
        except OSError:
            return b""

    def _send(self, conn, data):
        try:
            conn.sock.sendall(data)
            return True
        except OSError:
            return False

    def _hang(self, conn):
        """Reads and ignores everything until the client closes (or the test ends); bounded."""
        deadline = time.monotonic() + 20
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self._wait_readable(conn, 0.05) and not self._recv(conn):
                return

    def _serve(self, conn):
        try:
            self._serve_requests(conn)
        finally:
            conn.close()

    def _serve_requests(self, conn):
        buf = b""
        served = 0
        last = time.monotonic()
        deadline = time.monotonic() + 60  # no connection outlives a test
        while not self._stop.is_set() and time.monotonic() < deadline:
            if b"\r\n\r\n" not in buf:
                wait = 0.05
                if self.idle_close is not None:
                    left = last + self.idle_close - time.monotonic()
                    if left <= 0:
                        with self.lock:
                            self.idle_closes += 1
                        return  # FIN, without a word: an idle timeout
                    wait = min(wait, left)
                if not self._wait_readable(conn, wait):
                    continue
                data = self._recv(conn)
                if not data:
                    return
                buf += data
                continue
            if self.pipeline:
                # collect the rest of a pipelined batch: read until nothing more comes for 30 ms
                while self._wait_readable(conn, 0.03):
                    data = self._recv(conn)
                    if not data:
                        break
                    buf += data
            reqs = []
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                reqs.append(self._parse(head))
            if len(reqs) > 1:
                with self.lock:
                    self.pipelined_batches += 1
            served, go_on = self._answer(conn, reqs, served)
            last = time.monotonic()
            if not go_on:
                return

    @staticmethod
    def _parse(head):
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = (lines[0].split(" ") + ["", "", ""])[:3]
        fields = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            fields[k.strip().lower()] = v.strip()
        return {"method": method, "target": target, "version": version, "fields": fields}

    def _response(self, req, close=False, http10=None):
        """(bytes, close_after) for one request."""
        missing = req["target"].split("?")[0] == MISSING_PATH
        status = self.missing_status if missing else 200
        body = BODY_MISSING if missing and status != 200 else BODY_OK
        reason = {200: "OK", 404: "Not Found"}.get(status, "Status")
        version = "HTTP/1.1"
        lines = []
        wants_close = "close" in req["fields"].get("connection", "").lower()
        close_after = close or wants_close
        if req["version"] == "HTTP/1.0":
            asks_keep_alive = "keep-alive" in req["fields"].get("connection", "").lower()
            if http10 == "says_close":
                version = "HTTP/1.0"  # no keep-alive token: the connection ends with this response
                close_after = True
            elif http10 == "closed_silently":
                lines.append("Connection: keep-alive")  # says it keeps the connection ...
                close_after = True  # ... and does not
            elif asks_keep_alive and not close_after:
                lines.append("Connection: keep-alive")
            else:
                close_after = True
        if close_after and version == "HTTP/1.1" and "Connection: keep-alive" not in lines:
            lines.append("Connection: close")
        if self.keep_alive and not close_after:
            lines.append("Keep-Alive: %s" % self.keep_alive)
        head = "%s %d %s\r\nServer: misbehaving\r\nContent-Length: %d\r\n%s\r\n" % (
            version, status, reason, len(body), "".join(l + "\r\n" for l in lines))
        out = head.encode()
        if req["method"] != "HEAD":
            out += body
        return out, close_after

    def _answer(self, conn, reqs, served):
        """Answers one read's worth of requests; (responses served on the connection, keep going)."""
        if len(reqs) > 1 and self.pipeline == "cut":
            reqs = reqs[:2]
            out = b"".join(self._response(r)[0] for r in reqs)
            with self.lock:
                self.requests += len(reqs)
            self._send(conn, out)
            return served + 2, False  # FIN with two requests unanswered
        if len(reqs) > 1 and self.pipeline in ("swap", "reverse"):
            order = list(range(len(reqs)))
            if self.pipeline == "swap":
                order[0], order[1] = order[1], order[0]
            else:
                order.reverse()
            out = b"".join(self._response(reqs[i])[0] for i in order)
            with self.lock:
                self.requests += len(reqs)
            self._send(conn, out)
            return served + len(reqs), True
        for req in reqs:
            if self.after is not None and served == self.after[0]:
                return served, self._after(conn, req)
            if self.silent_after is not None and served >= self.silent_after:
                # "rst": the request after the last one meets a reset, unanswered
                conn.close(rst=True)
                return served, False
            with self.lock:
                self.requests += 1
                n = self.requests
            last_one = self.stop_listening_after is not None and n >= self.stop_listening_after
            if last_one:
                self.stop_listening()  # before answering: the client's next connect is refused
            if self.delay:
                time.sleep(self.delay)
            if self.stall is not None and n == self.stall[0]:
                time.sleep(self.stall[1])
            out, close_after = self._response(req, close=last_one, http10=self.http10)
            if not self._send(conn, out):
                return served, False
            served += 1
            if close_after:
                return served, False
            if self.silent_after is not None and served >= self.silent_after and self.silent_mode == "fin":
                return served, False  # FIN right after the last response, which did not say close
        return served, True

    def _after(self, conn, req):
        action = self.after[1]
        with self.lock:
            self.requests += 1
        if action == "rst":
            conn.close(rst=True)
            return False
        if action == "hang":
            self._hang(conn)
            return False
        status = b"503 Service Unavailable" if action == "truncate_503" else b"200 OK"
        partial = b"HTTP/1.1 " + status + b"\r\nServer: misbehaving\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
        self._send(conn, partial)
        if action == "stall_body":
            self._hang(conn)
        return False  # "truncate", "truncate_503": FIN with 90 bytes of content missing


@pytest.fixture
def origin():
    """Factory: origin(**knobs) -> a running Origin; all are stopped (threads joined) at teardown."""
    started = []

    def start(**kw):
        o = Origin(**kw)
        started.append(o)
        return o

    yield start
    for o in started:
        o.close()


def probe(*args, timeout=30):
    return subprocess.run([TETHER_BIN, "probe", "--timeout", "3s"] + list(args), capture_output=True, text=True,
                          timeout=timeout * SLOW)


def probe_json(*args):
    out = probe("--json", *args)
    assert out.returncode == 0, out
    assert out.stderr == "", out.stderr
    return json.loads(out.stdout)


def probe_text(*args):
    out = probe(*args)
    assert out.returncode == 0, out
    return out.stdout


def field(text, name):
    """The value of a report line such as "  HTTP/1.0 keep-alive    persists"."""
    m = re.search(r"^\s*%s\s{2,}(.*)$" % re.escape(name), text, re.M)
    assert m, "no %r line in:\n%s" % (name, text)
    return m.group(1)


# ---- (a) Keep-Alive: timeout=10, but idle connections are closed after ~1 s ----

def test_keep_alive_timeout_that_lies_is_reported_false(origin):
    o = origin(idle_close=1.0, keep_alive="timeout=10")
    r = probe_json(o.url("/page"), "--max-wait", "5s", "--max-requests", "20")
    ka = r["keep_alive"]
    assert ka["field"] == "timeout=10" and ka["timeout_s"] == 10, ka
    assert ka["timeout_true"] is False, ka
    assert ka["timeout_verdict"].startswith("false"), ka
    assert "max_true" not in ka  # no max= in the field: nothing to judge
    idle = r["idle_timeout"]
    assert idle["measured"] is True and idle["longer_than_max_wait"] is False, idle
    assert near(idle["ms"], 1000), idle  # the real timeout, not the advertised one
    assert idle["closed"] == idle["connections"] == 8, idle
    # from the measured 1 s (500 ms), not the advertised 10 s
    assert r["recommended_client_idle_ms"] == recommended_ms(idle["ms"])[1] <= 1000, r
    said = [v for v in r["verdicts"] if v.startswith("do not trust this server's Keep-Alive: timeout=10: it closed "
                                                     "idle connections after ")]
    assert len(said) == 1, r["verdicts"]
    assert said[0].endswith(" s") and near(float(said[0].split()[-2]) * 1000, 1000), said
    assert o.idle_closes >= 8

    text = probe_text(o.url("/page"), "--max-wait", "5s", "--max-requests", "20", "--client-idle", "9s")
    assert field(text, "Keep-Alive field") == "timeout=10"
    assert field(text, "timeout") == "false: the server closes idle connections before the advertised timeout"
    assert "do not trust this server's Keep-Alive: timeout=10" in text
    # a client that believed the field (9 s < 10 s) is told it is too long ("the server's 1 s" at 1.0 s)
    assert any("your client keeps idle connections for 9 s, longer than the server's %s" % secs(t) in text
               for t, _ in advice_candidates(text)), text


def test_keep_alive_timeout_that_tells_the_truth_is_reported_true(origin):
    """The control for the test above: the same origin whose field matches its behaviour. (T counts whole
    seconds, rounded down, as tether's does: a 1.5 s timeout is "timeout=1", and sits in the middle of what
    the probe calls true, [T - 100 ms, T + 1 s + 100 ms], on a busy machine too, where the probe may
    measure it some 100 ms short.)"""
    o = origin(idle_close=1.5, keep_alive="timeout=1")
    r = probe_json(o.url("/page"), "--max-wait", "5s", "--max-requests", "20")
    assert r["keep_alive"]["timeout_true"] is True and r["keep_alive"]["timeout_verdict"] == "true", r
    assert not any("do not trust" in v for v in r["verdicts"]), r["verdicts"]


# ---- (b) max requests: the server ends the connection without Connection: close ----

@pytest.mark.parametrize("mode", ["fin", "rst"])
def test_silent_close_after_n_requests(origin, mode):
    o = origin(idle_close=0.4, silent_after=5, silent_mode=mode, keep_alive="timeout=1, max=99")
    r = probe_json(o.url("/page"), "--max-wait", "5s", "--max-requests", "50")
    assert r["max_requests"] == {"count": 5, "end": "closed_silently", "at_least": False, "bound": 50}, r
    assert r["http11_persists"] is True
    ka = r["keep_alive"]
    assert ka["max"] == 99 and ka["max_true"] is False, ka  # max=99 promised 100 requests; 5 were served
    assert ka["max_verdict"].startswith("false: the server ended the connection sooner"), ka
    assert ("the server closes a connection after 5 requests without saying so: a client reusing it sees a "
            "failed request; cap requests per connection at 4") in r["verdicts"], r["verdicts"]
    assert r["reuse"]["reused_samples"] == 4
    # the other phases still see a well-behaved origin
    assert r["pipelining"]["result"] == "in_order" and r["http10_keepalive"] == "persists", r

    text = probe_text(o.url("/page"), "--max-wait", "5s", "--max-requests", "50")
    assert field(text, "max requests") == \
        "5 per connection (then the server closed the connection without saying so)"
    assert field(text, "max") == "false: the server ended the connection sooner"
    assert "cap requests per connection at 4" in text


# ---- (c) pipelining answered wrongly ----

def test_pipelined_answers_swapped_are_wrong(origin):
    o = origin(idle_close=0.4, pipeline="swap")
    r = probe_json(o.url("/page"), "--max-wait", "5s", "--max-requests", "5")
    p = r["pipelining"]
    assert p == {"result": "wrong", "in_order": False, "statuses": [404, 200, 200, 200]}, p
    assert o.pipelined_batches == 1  # the probe did pipeline, and only once
    assert "do not pipeline requests to this origin: the answers did not match the requests" in r["verdicts"]
    text = probe_text(o.url("/page"), "--max-wait", "5s", "--max-requests", "5")
    assert field(text, "pipelining") == \
        "answers do not match the requests (4 requests in one write; statuses 404 200 200 200)"
    assert "answered in order" not in text


def test_pipelined_answers_reversed_break_the_framing(origin):
    """Every path answers 200, so statuses cannot show the order; the HEAD answered out of place must."""
    o = origin(idle_close=0.4, pipeline="reverse", missing_status=200)
    r = probe_json(o.url("/page"), "--max-wait", "5s", "--max-requests", "5")
    p = r["pipelining"]
    assert p["in_order"] is False and p["result"] in ("wrong", "failed"), p
    assert o.pipelined_batches == 1
    assert "do not pipeline requests to this origin: the answers did not match the requests" in r["verdicts"]


def test_pipelined_answers_cut_short_are_closed(origin):
    o = origin(idle_close=0.4, pipeline="cut")
    # --timeout 1s: a probe that missed the FIN would wait that long for the third response, then say "failed"
    r = probe_json(o.url("/page"), "--max-wait", "5s", "--max-requests", "5", "--timeout", "1s")
    p = r["pipelining"]
    assert p == {"result": "closed", "in_order": False, "statuses": [200, 404]}, p
    assert ("do not pipeline requests to this origin: it closed the connection before answering all"
            in r["verdicts"]), r["verdicts"]
    text = probe_text(o.url("/page"), "--max-wait", "5s", "--max-requests", "5", "--timeout", "1s")
    assert field(text, "pipelining") == \
        "not all answered: the server closed the connection (4 requests in one write; statuses 200 404)"


# ---- (d) HTTP/1.0 with Connection: keep-alive not honoured ----

@pytest.mark.parametrize("mode, text", [
    ("says_close", "does not persist (the response does not keep the connection)"),
    ("closed_silently", "does not persist (closed after the response without saying so)"),
])
def test_http10_keep_alive_not_honoured(origin, mode, text):
    o = origin(idle_close=0.4, http10=mode)
    r = probe_json(o.url("/page"), "--max-wait", "5s", "--max-requests", "5")
    assert r["http10_keepalive"] == mode, r
    assert r["http11_persists"] is True  # HTTP/1.1 still persists: the probe tells the two apart
    assert "HTTP/1.0 clients asking for keep-alive get a new connection per request" in r["verdicts"]
    out = probe_text(o.url("/page"), "--max-wait", "5s", "--max-requests", "5")
    assert field(out, "HTTP/1.0 keep-alive") == text
    assert field(out, "HTTP/1.1") == "persists"


def test_well_behaved_origin_control(origin):
    """The same origin without its faults gets a clean report: the tests above fail for the fault alone."""
    o = origin(idle_close=0.4)
    r = probe_json(o.url("/page"), "--max-wait", "5s", "--max-requests", "5")
    assert r["http10_keepalive"] == "persists"
    assert r["pipelining"] == {"result": "in_order", "in_order": True, "statuses": [200, 404, 200, 200]}
    assert r["max_requests"]["end"] == "bound" and r["max_requests"]["count"] == 5
    assert near(r["idle_timeout"]["ms"], 400), r["idle_timeout"]
    assert not any(v.startswith("do not") or "HTTP/1.0 clients" in v for v in r["verdicts"]), r["verdicts"]


# ---- live progress on a terminal ----

def run_with_pty_stderr(argv, timeout=30, swap=False):
    """Runs argv with stderr on a pseudo-terminal and stdout on a pipe: (returncode, stdout, pty text).
    With `swap`, stdout is the terminal and stderr the pipe: (returncode, stderr, pty text)."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave if swap else subprocess.PIPE,
                                stderr=subprocess.PIPE if swap else slave)
    finally:
        os.close(slave)
    got = b""
    try:
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal's last slave
                    chunk = b""
                if not chunk:
                    break
                got += chunk
            elif proc.poll() is not None:
                break
        out, err = proc.communicate(timeout=10 * SLOW)
        if swap:
            out = err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return proc.returncode, out.decode(), got.decode("utf-8", "replace")


PROBE_PROGRESS = re.compile(r"\r\x1b\[Kprobe (\d+\.\d) s: waiting for the server to close 8 idle connections: "
                            r"(\d) closed, (\d+\.\d) s of at most 5 s")


def test_probe_shows_progress_on_a_terminal_only(origin):
    o = origin(idle_close=1.0)
    argv = [TETHER_BIN, "probe", "--max-wait", "5s", "--max-requests", "5", o.url("/page")]
    rc, out, tty = run_with_pty_stderr(argv)
    assert rc == 0, (out, tty)
    lines = PROBE_PROGRESS.findall(tty)
    assert len(lines) >= 2, repr(tty)  # every 200 ms while it waits about 1 s
    waited = [float(w) for _, _, w in lines]
    assert waited == sorted(waited) and waited[-1] >= 0.4, lines  # the wait is shown growing
    assert tty.endswith("\r\x1b[K"), repr(tty[-80:])  # the line is cleared before the report
    assert out.startswith("tether probe http://127.0.0.1:%d/page" % o.port) and "\r" not in out, out

    # stderr not a terminal (stdout either): no progress at all, over a probe that lasts > 200 ms
    o = origin(idle_close=0.5)
    argv = [TETHER_BIN, "probe", "--max-wait", "5s", "--max-requests", "5", o.url("/page")]
    start = time.monotonic()
    plain = subprocess.run(argv, capture_output=True, text=True, timeout=30 * SLOW)
    assert plain.returncode == 0 and plain.stderr == "", plain
    assert time.monotonic() - start >= 0.5
    # stdout a terminal but stderr not: still none (the progress belongs to stderr's terminal)
    rc, err, tty = run_with_pty_stderr(argv + ["--json"], swap=True)
    assert rc == 0 and err == "", err
    assert json.loads(tty)["max_requests"]["count"] == 5  # the report went to the terminal, nothing else
