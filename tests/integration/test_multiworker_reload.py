"""Several workers and several TLS listener groups under concurrent traffic, with SIGHUP reloads in the middle
of it (issue 9). This is the test `make test-tsan` runs to find data races between the workers, the main
thread (signals, reloads) and the metrics scraper; in the normal build it checks the same behaviour.

tether runs 4 workers and four listener groups: `plain` (HTTP/1.1 and h2c), `a` (TLS, ticket_rotation 1m,
its certificate files replaced before every SIGHUP), `b` (TLS, ticket_rotation 1h, two addresses, two
certificates chosen by SNI) and `c` (TLS 1.3 only, the default rotation). Client threads send HTTP/1.1
(keep-alive, a new connection every few requests) and HTTP/2 (four streams at once) to every group, for
static files (from memory and with sendfile) and a proxy route to an in-process origin, while a thread
scrapes /metrics and /status and the main thread sends SIGHUP five times. Every client makes requests
before the first reload and after each one is logged (counted, not timed). Asserted: every response
complete and correct, every reload logged for 3 of 3 groups, the request, handshake and upstream counters
equal to what the clients did, exit status 0 after SIGTERM, and no ThreadSanitizer report (the `tether`
fixture checks both as well).
"""

import json
import os
import shutil
import signal
import threading
import time

import pytest

from conftest import SLOW, HttpConn
from proxy_util import origins, pattern  # noqa: F401
from tls_util import H2Conn, TlsConn, body_of, certs  # noqa: F401

pytestmark = pytest.mark.multiworker

WORKERS = 4
RELOADS = 5
PER_PHASE = 20  # requests every client makes before the first reload and after each one
MAX_REQUESTS = 3000  # per client: a bound, never reached in a passing run
PROXY_SIZES = (100, 5000, 70000)  # the last one streams through the proxy in several reads


def install(leaf, cert_path, key_path):
    for src, dst in ((leaf.cert, cert_path), (leaf.key, key_path)):
        shutil.copyfile(src, dst + ".tmp")
        os.replace(dst + ".tmp", dst)


def config(site, origin, live, certs):
    return """
[server]
workers = %d

[listen plain]
address = 127.0.0.1:0

[listen a]
address = 127.0.0.1:0
tls = on
tls_cert = %s
tls_key = %s
ticket_rotation = 1m

[listen b]
address = 127.0.0.1:0
address = 127.0.0.1:0
tls_cert = %s
tls_key = %s
tls_cert = %s
tls_key = %s
ticket_rotation = 1h

[listen c]
address = 127.0.0.1:0
tls_cert = %s
tls_key = %s
tls_min_version = 1.3

[keepalive]
idle_timeout = 30s
header_timeout = 30s

[static]
root = %s

[upstream origin]
server = 127.0.0.1:%d

[route /api]
upstream = origin
""" % (WORKERS, live[0], live[1], certs.main.cert, certs.main.key, certs.other.cert, certs.other.key,
       certs.main.cert, certs.main.key, site, origin.port)


class Client(threading.Thread):
    """One client: HTTP/1.1 or HTTP/2 requests in a loop until told to stop; failures are collected, never
    raised. `done` counts correct responses, `conns` the connections it opened."""

    def __init__(self, name, proto, connect, requests, stop, deadline):
        super().__init__(name=name, daemon=True)
        self.proto, self.connect, self.requests = proto, connect, requests
        self.stop, self.deadline = stop, deadline
        self.done = 0
        self.proxied = 0  # of them, through the proxy route
        self.conns = 0
        self.errors = []

    def check(self, path, status, body, extra=""):
        want = self.requests[path]
        if status != 200 or body != want:
            self.errors.append("%s %s: status %s, %d bytes (want 200, %d bytes)%s" % (
                self.name, path, status, len(body), len(want), extra))
            return False
        self.done += 1
        self.proxied += path.startswith("/api/")
        return True

    def running(self):
        return not self.stop.is_set() and self.done < MAX_REQUESTS and time.monotonic() < self.deadline

    def run(self):
        try:
            (self.run_h1 if self.proto == "h1" else self.run_h2)()
        except Exception as e:  # noqa: BLE001 -- any failure is the test's failure, reported by the main thread
            self.errors.append("%s: %r" % (self.name, e))

    def run_h1(self):
        paths = list(self.requests)
        conn, i = None, 0
        while self.running() and not self.errors:
            if conn is None or i % 5 == 4:  # keep-alive, and a new connection (a new handshake) now and then
                if conn is not None:
                    conn.close()
                conn = self.connect()
                self.conns += 1
            path = paths[i % len(paths)]
            r = conn.get(path, host="localhost")
            self.check(path, r.status, r.body)
            i += 1
        if conn is not None:
            conn.close()

    def run_h2(self):
        paths = list(self.requests)
        conn, i = None, 0
        while self.running() and not self.errors:
            if conn is None or i % 3 == 2:
                if conn is not None:
                    conn.close()
                conn = self.connect()
                self.conns += 1
            batch = [paths[(i + k) % len(paths)] for k in range(4)]
            sids = [(conn.request(p), p) for p in batch]
            for sid, path in sids:
                st = conn.response(sid, timeout=20)
                status = int(st["headers"][":status"]) if st["headers"] else None
                self.check(path, status, st["body"], " reset %s, ended %s" % (st["reset"], st["ended"]))
            i += 1
        if conn is not None:
            conn.close()


def test_sighup_reloads_under_concurrent_traffic_on_several_workers_and_tls_listeners(tether, site, certs,
                                                                                      origins, tmp_path):
    (site / "mid.bin").write_bytes(os.urandom(40000))  # above the in-memory cache size: sendfile (pread on TLS)
    origin = origins()
    live = (str(tmp_path / "live.pem"), str(tmp_path / "live.key"))
    install(certs.main, *live)
    t = tether(config=config(site, origin, live, certs), expect_listeners=5)
    assert t.schemes == ["http", "https", "https", "https", "https"], t.schemes
    ports = {name: t.listen[i][1] for i, name in enumerate(("plain", "a", "b1", "b2", "c"))}

    requests = {p: body_of(site, p) for p in ("/100.txt", "/4k.bin", "/mid.bin", "/index.html")}
    requests.update({"/api/blob?size=%d" % n: pattern(n) for n in PROXY_SIZES})

    def h1(port, tls, sni="localhost"):
        return (lambda: TlsConn(certs, port, server_name=sni, timeout=20)) if tls else \
            (lambda: HttpConn("127.0.0.1", port, timeout=20))

    def h2(port, tls):
        return lambda: H2Conn(port, tls_certs=certs if tls else None, timeout=20)

    stop = threading.Event()
    deadline = time.monotonic() + 80 * SLOW  # within CTest's 300 s, also under a sanitizer
    clients = [
        Client("plain-h1", "h1", h1(ports["plain"], False), requests, stop, deadline),
        Client("plain-h2c", "h2", h2(ports["plain"], False), requests, stop, deadline),
        Client("a-h1", "h1", h1(ports["a"], True), requests, stop, deadline),
        Client("a-h2", "h2", h2(ports["a"], True), requests, stop, deadline),
        Client("b1-h1", "h1", h1(ports["b1"], True), requests, stop, deadline),
        Client("b2-h1-sni", "h1", h1(ports["b2"], True, "other.test"), requests, stop, deadline),
        Client("b2-h2", "h2", h2(ports["b2"], True), requests, stop, deadline),
        Client("c-h1", "h1", h1(ports["c"], True), requests, stop, deadline),
        Client("c-h2", "h2", h2(ports["c"], True), requests, stop, deadline),
    ]
    scrapes, scrape_errors = [0], []

    def scrape():  # the admin thread reads every worker's shard while the workers write them
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                assert "tether_requests_total" in t.metrics_text()
                c = HttpConn(*t.metrics_addr)
                r = c.get("/status.json")
                c.close()
                assert r.status == 200 and json.loads(r.body)["workers"] == WORKERS, r
                scrapes[0] += 1
                time.sleep(0.01)
        except Exception as e:  # noqa: BLE001
            scrape_errors.append(repr(e))

    def failures():
        return [e for c in clients for e in c.errors] + scrape_errors

    def wait_each_client_for(n):
        """Until every client has `n` more correct responses than now (or something failed, or the deadline
        passed): traffic is ongoing on every listener, counted rather than timed."""
        want = [c.done + n for c in clients]
        while not failures() and time.monotonic() < deadline and any(c.done < w for c, w in zip(clients, want)):
            time.sleep(0.01)
        assert not failures(), failures()
        assert all(c.done >= w for c, w in zip(clients, want)), [(c.name, c.done, w) for c, w in zip(clients, want)]

    scraper = threading.Thread(target=scrape, daemon=True)
    for c in clients:
        c.start()
    scraper.start()
    try:
        wait_each_client_for(PER_PHASE)
        for k in range(1, RELOADS + 1):
            install(certs.new if k % 2 else certs.main, *live)
            t.send_signal(signal.SIGHUP)
            while t.stderr().count("reloaded the certificates of 3 of 3 TLS listener groups") < k:
                assert time.monotonic() < deadline and t.proc.poll() is None, t.stderr()[-4000:]
                time.sleep(0.01)
            wait_each_client_for(PER_PHASE)
    finally:
        stop.set()
        for c in clients:
            c.join(30 * SLOW)
        scraper.join(30 * SLOW)
    assert not failures(), failures()
    assert not any(c.is_alive() for c in clients) and not scraper.is_alive()
    assert scrapes[0] > 0
    assert "not reloaded" not in t.stderr()

    served = sum(c.done for c in clients)
    tls_conns = sum(c.conns for c in clients if not c.name.startswith("plain"))
    t.wait_metric("tether_requests_total", lambda v: v == served, timeout=10, **{"class": "2xx"})
    t.wait_metric("tether_tls_handshakes_total", lambda v: v == tls_conns, timeout=10, kind="full")
    assert t.metric("tether_tls_handshake_failures_total") == 0
    proxied = sum(c.proxied for c in clients)
    assert proxied > 0 and t.metric("tether_upstream_requests_total", upstream="origin") == proxied

    assert t.stop() == 0, t.stderr()[-4000:]
    t.join_output()
    assert t.sanitizer_reports() == [], t.stderr()[-8000:]
    assert "stopped" in t.stderr()
