"""Helpers shared by the upstream-pool tests (test_proxy_pool.py, test_proxy_race.py, test_issue_16.py).

`pool_config(port, **keys)` writes an `[upstream backend]` section (one server) and `[route /]`;
`PoolView` reads the pool's metrics (labels upstream="backend", server="127.0.0.1:PORT") and the proxy
part of access-log lines; `origin_stats(o)` snapshots an in-process Origin's counters (read directly, so
looking does not open a connection that the origin would count); `Rounds` is a load of clients in
synchronised rounds with gaps around an upstream's idle timeout.
"""

import copy
import json
import random
import re
import socket
import struct
import threading
import time

from conftest import SLOW, HttpConn

UPSTREAM = "backend"
ACCESS_RE = re.compile(r'"(\S+) (\S+) HTTP/1\.[01]" (\d{3}) ')


def pool_config(port, route="/", **keys):
    """An `[upstream backend]` with one server and the given pool keys, and `[route ROUTE]` using it."""
    lines = ["[upstream %s]" % UPSTREAM, "server = 127.0.0.1:%d" % port]
    for k, v in keys.items():
        lines.append("%s = %s" % (k, v))
    lines += ["", "[route %s]" % route, "upstream = %s" % UPSTREAM, ""]
    return "\n".join(lines)


def origin_stats(o):
    with o.lock:
        return copy.deepcopy(o.stats)


def wait_until(pred, timeout, what, interval=0.01):
    """Polls pred() until true; returns the seconds it took (asserts on timeout, scaled by SLOW)."""
    start = time.monotonic()
    deadline = start + timeout * SLOW
    while True:
        v = pred()
        if v:
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout * SLOW, what))
        time.sleep(interval)


def parse_access(line):
    """{'method', 'target', 'status', and every key=value token of the line} (values as strings)."""
    out = {}
    m = ACCESS_RE.search(line)
    if m:
        out["method"], out["target"], out["status"] = m.group(1), m.group(2), int(m.group(3))
    for tok in line.split():
        k, eq, v = tok.partition("=")
        if eq and k.isidentifier():
            out[k] = v
    return out


class PoolView:
    """Metrics of the one pool of `[upstream backend]` -> 127.0.0.1:port in tether `t`."""

    def __init__(self, t, port):
        self.t = t
        self.server = "127.0.0.1:%d" % port

    def m(self, name, **extra):
        return self.t.metric(name, upstream=UPSTREAM, server=self.server, **extra)

    def wait(self, name, predicate, timeout=5, **extra):
        return self.t.wait_metric(name, predicate, timeout=timeout, upstream=UPSTREAM, server=self.server, **extra)

    def retired(self, reason):
        return self.m("tether_upstream_retired_total", reason=reason)

    def retired_all(self):
        """{reason: count} of the non-zero retirement counters."""
        out = {}
        prefix = 'tether_upstream_retired_total{upstream="%s",server="%s",reason="' % (UPSTREAM, self.server)
        for k, v in self.t.metrics().items():
            if k.startswith(prefix) and v:
                out[k[len(prefix):-2]] = int(v)
        return out

    def opened(self):
        return self.m("tether_upstream_connections_opened_total")

    def reused(self):
        return self.m("tether_upstream_requests_reused_total")

    def idle(self):
        return self.m("tether_upstream_idle_connections")

    def active(self):
        return self.m("tether_upstream_active_connections")

    def learned(self):
        return self.m("tether_upstream_learned_idle_timeout_seconds")

    def up(self, name, **extra):
        """A per-upstream series (label upstream only, plus `extra`)."""
        return self.t.metric(name, upstream=UPSTREAM, **extra)

    def replays(self, *causes):
        return sum(self.up("tether_upstream_replays_total", cause=c) for c in causes)

    def generated(self, *causes):
        return sum(self.up("tether_upstream_generated_total", cause=c) for c in causes)

    def proxied(self, wait_for=0):
        """Parsed access-log lines of proxied requests (waits until at least `wait_for` are there)."""
        deadline = time.monotonic() + 5 * SLOW
        while True:
            out = [parse_access(l) for l in self.t.access_lines() if "upstream=%s" % UPSTREAM in l]
            if len(out) >= wait_for or time.monotonic() > deadline:
                return out
            time.sleep(0.02)


def response_or_crash(c, t, method="GET"):
    """c.response(), but a connection closed without an answer is reported with tether's state (a crash
    shows as a signal exit status and, in sanitizer builds, the report on stderr)."""
    try:
        return c.response(method)
    except (EOFError, ConnectionResetError) as e:
        time.sleep(0.2)
        rc = t.proc.poll()
        raise AssertionError("no response (%s); tether %s\n%s" % (
            e, "is running" if rc is None else "exited with status %s" % rc, t.stderr()[-6000:])) from None


def one_request(host, port, method="GET", path="/", headers=None, body=b"", timeout=10):
    """Sends one request on a new connection; returns (Response, seconds) or raises."""
    c = HttpConn(host, port, timeout=timeout)
    try:
        start = time.monotonic()
        c.request(method, path, headers=headers, body=body)
        r = c.response(method)
        return r, time.monotonic() - start
    finally:
        c.close()


class Background:
    """Runs fn() in a thread; .result() returns its value or re-raises its exception."""

    def __init__(self, fn):
        self._value = None
        self._exc = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn):
        try:
            self._value = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            self._exc = e

    def done(self):
        return not self._thread.is_alive()

    def result(self, timeout=30):
        self._thread.join(timeout * SLOW)
        assert not self._thread.is_alive(), "background request still running"
        if self._exc is not None:
            raise self._exc
        return self._value


class RawOrigin:
    """A scripted origin: `script(conn_number, request_number)` returns what to do with each request:
    ("ok",) answers 200 with a small body and keeps the connection, ("ok_then_reset", delay) answers and
    resets the connection `delay` seconds later (while it is idle), ("partial_then_reset", bytes, delay)
    sends `bytes` (a piece of a response head), waits `delay` seconds and resets (RST). Counts every
    request head it reads in `requests` (method, conn, req)."""

    def __init__(self, script):
        self.script = script
        self.requests = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def stop(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self._conn, args=(c, self.conns), daemon=True).start()

    def _conn(self, c, num):
        buf = b""
        n = 0
        c.settimeout(30)
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                i = buf.index(b"\r\n\r\n")
                head, buf = buf[:i].decode("latin-1"), buf[i + 4:]
                clen = 0
                for line in head.split("\r\n")[1:]:
                    k, _, v = line.partition(":")
                    if k.strip().lower() == "content-length":
                        clen = int(v.strip())
                while len(buf) < clen:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                buf = buf[clen:]
                n += 1
                with self.lock:
                    self.requests.append((head.split(" ", 1)[0], num, n))
                action = self.script(num, n)
                if action[0] in ("ok", "ok_then_reset"):
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
                if action[0] == "ok_then_reset":
                    time.sleep(action[1])
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    c.close()
                    return
                elif action[0] == "partial_then_reset":
                    c.sendall(action[1])
                    time.sleep(action[2])
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    c.close()
                    return
        except OSError:
            return
        finally:
            try:
                c.close()
            except OSError:
                pass


class Rounds:
    """`clients` threads, each with its own keep-alive connection to tether (`addr`), sending GET or POST (a small
    random body) in rounds: when every response of a round is in, a gap is drawn with `gap(rng)` and all clients
    send together after it. So every parked connection is about `gap` old when the next round takes them, and a
    gap near the upstream's idle timeout meets connections the upstream is closing right then (with independent
    per-client gaps, MRU reuse would hand nearly every request a connection parked milliseconds before, and the
    race would hardly ever be exercised). Runs `rounds` rounds, or as many as start within `duration` seconds.

    Every response is checked (200, the origin's echo of the right method and body length); anything else is a
    failure, kept in `results` (status) or `errors` (no response). `rounds_log[k]` is (gap drawn, time the
    previous round's last response came in, time this round's first request left, time its last one left)."""

    def __init__(self, addr, seed, clients=8, gap=lambda rng: rng.uniform(0.8, 1.2), rounds=None, duration=None,
                 on_round=None):
        self.addr = addr
        self.seed = seed
        self.clients = clients
        self.gap = gap
        self.max_rounds = rounds
        self.duration = duration
        self.on_round = on_round  # called in the barrier action with the round about to start (from 0)
        self.rng = random.Random(seed)
        self.results = []  # (t_sent, t_done, method, status, cause, client, target, round)
        self.errors = []  # (t, client, repr, method, round)
        self.rounds_log = []  # [gap, prev_done, first_sent, last_sent]
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(clients, action=self._next_round)
        self.fire_at = 0.0
        self.end = 0.0
        self.round = -1
        self.stopped = False

    def _next_round(self):
        if self.on_round is not None:
            self.on_round(self.round + 1)
        now = time.monotonic()
        gap = self.gap(self.rng) if self.round >= 0 else 0.0
        self.round += 1
        self.fire_at = now + gap
        if (self.max_rounds is not None and self.round >= self.max_rounds) or (
                self.duration is not None and self.fire_at >= self.end):
            self.stopped = True
            return
        self.rounds_log.append([gap, now, None, None])

    def client(self, i):
        rng = random.Random(self.seed * 1000 + i)
        c = None
        n = 0
        while True:
            try:
                self.barrier.wait(60 * SLOW)
            except threading.BrokenBarrierError:
                break
            if self.stopped:
                break
            k = self.round
            time.sleep(max(0.0, self.fire_at - time.monotonic()))
            n += 1
            post = rng.random() < 0.5
            method = "POST" if post else "GET"
            body = bytes(rng.randrange(32, 127) for _ in range(rng.randint(1, 300))) if post else b""
            target = "/r?c=%d&n=%d" % (i, n)
            sent = time.monotonic()
            with self.lock:
                log = self.rounds_log[k]
                log[2] = sent if log[2] is None else min(log[2], sent)
                log[3] = sent if log[3] is None else max(log[3], sent)
            try:
                if c is None:
                    c = HttpConn(*self.addr, timeout=10)
                c.request(method, target, body=body)
                r = c.response(method)
                cause = r.header("X-Tether-Cause", "-")
                if r.status == 200:
                    e = json.loads(r.body)
                    if e["method"] != method or e["body_len"] != len(body):
                        raise AssertionError("wrong echo for %s: %s" % (method, r.body[:200]))
                with self.lock:
                    self.results.append((sent, time.monotonic(), method, r.status, cause, i, target, k))
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                with self.lock:
                    self.errors.append((sent, i, repr(e), method, k))
                if c is not None:
                    c.close()
                c = None
        if c is not None:
            c.close()

    def run(self):
        """Runs the rounds; returns the start time (monotonic)."""
        start = time.monotonic()
        self.end = start + (self.duration if self.duration is not None else 1e9)
        threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(self.clients)]
        for th in threads:
            th.start()
        limit = (self.duration or 0) + (self.max_rounds or 0) * 10 + 60 * SLOW
        for th in threads:
            th.join(limit)
        self.barrier.abort()
        assert not any(th.is_alive() for th in threads), "a client thread hung"
        return start

    def failures(self):
        """Requests that did not get their 200 (status, cause, method, round), and those that got no answer."""
        return [(r[3], r[4], r[2], r[7]) for r in self.results if r[3] != 200] + [("error", e[2]) for e in self.errors]

    def access(self, t, upstream=UPSTREAM):
        """{target: parsed access-log line} of this load's proxied requests."""
        mine = {r[6] for r in self.results}
        out = {}
        for line in t.access_lines(wait_for=len(self.results)):
            if "upstream=%s" % upstream not in line:
                continue
            a = parse_access(line)
            if a.get("target") in mine:
                out[a["target"]] = a
        return out
