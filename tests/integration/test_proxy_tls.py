"""Reverse proxy to https:// upstream servers (issue 4, "TLS to upstreams").

`[upstream NAME] server = https://HOST:PORT` with `tls_ca`, `tls_verify`, `tls_sni`, `tls_cert` and
`tls_key` (docs/config.md): certificate chain and name verification, SNI, client certificates, TLS session
resumption across upstream connections, keep-alive pooling over TLS, a close-delimited response ended by a
bare TCP close, and a concurrent load that once freed a pooled session still in use.

Two kinds of origin: a second tether (`--tls-listen`: realistic TLS 1.3 with tickets, and its own
`tether_tls_handshakes_total{kind}` to cross-check the proxy's counts), and `TlsOrigin` below, a Python
`ssl` server that records what the proxy sent in each handshake (SNI, ALPN offer, client certificate)
and echoes it back as JSON, so the client of the proxy sees it on the wire.
"""

import json
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse

import pytest

from conftest import SLOW, TETHER_BIN
from proxy_util import clean_tether, pattern, read_chunked, read_head, read_to_eof  # noqa: F401
from tls_util import CertFactory, certs, tls_args, tls_port  # noqa: F401

ASAN = SLOW > 1


# ---- a Python TLS origin that shows what the proxy sent ----

class TlsOrigin:
    """An HTTP/1.1-over-TLS origin on 127.0.0.1, one thread per connection.

    Every accepted connection appends one record to `.handshakes` (in accept order):
    {"sni": the server name the client sent or None, "alpn": the protocol chosen from the client's offer
    (this server prefers h2, so "http/1.1" means h2 was not offered), "client_cn": the CN of the client
    certificate or None, "error": why the handshake failed or None}.

    Requests: `/close-delimited?size=N[&end=...]` answers `HTTP/1.0 200` with N pattern bytes and no
    Content-Length, then closes the TCP connection without a TLS close_notify (see _close_delimited);
    anything else gets a keep-alive JSON echo of the connection's record plus {"conn", "req", "target"}."""

    def __init__(self, leaf, client_ca=None, alpn=("h2", "http/1.1"), max_version=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(leaf.cert, leaf.key)
        if max_version is not None:
            ctx.maximum_version = max_version
        if client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(client_ca)
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        ctx.sni_callback = self._on_sni
        self.ctx = ctx
        self.handshakes = []
        self._sni = {}  # id(SSLSocket) -> name; OpenSSL 3 calls back for every ClientHello, None without SNI
        self._lock = threading.Lock()
        self._socks = []
        self._threads = []
        self._stopping = False
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.port = self.lsock.getsockname()[1]

    def start(self):
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _on_sni(self, sslsock, name, ctx):
        self._sni[id(sslsock)] = name

    def _accept_loop(self):
        while True:
            try:
                raw, _ = self.lsock.accept()
            except OSError:
                return
            with self._lock:
                if self._stopping:
                    raw.close()
                    return
                self._socks.append(raw)
                t = threading.Thread(target=self._serve, args=(raw,), daemon=True)
                self._threads.append(t)
            t.start()

    def _serve(self, raw):
        raw.settimeout(10 * SLOW)
        rec = {"sni": None, "alpn": None, "client_cn": None, "error": None}
        s = None
        try:
            s = self.ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            with self._lock:
                self._socks.append(s)
            s.do_handshake()
        except (ssl.SSLError, OSError) as e:
            rec["error"] = str(e)
            rec["sni"] = self._sni.pop(id(s), None) if s is not None else None
            with self._lock:
                self.handshakes.append(rec)
            raw.close()
            return
        rec["sni"] = self._sni.pop(id(s), None)
        rec["alpn"] = s.selected_alpn_protocol()
        cert = s.getpeercert()
        if cert:
            rec["client_cn"] = dict(x[0] for x in cert["subject"]).get("commonName")
        with self._lock:
            self.handshakes.append(rec)
            conn_no = len(self.handshakes)
        buf = b""
        req_no = 0
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = s.recv(65536)
                    if not data:
                        s.close()
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
                req_no += 1
                url = urllib.parse.urlsplit(target)
                if url.path == "/close-delimited":
                    self._close_delimited(s, urllib.parse.parse_qs(url.query))
                    return
                body = json.dumps(dict(rec, conn=conn_no, req=req_no, target=target)).encode()
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                          % len(body) + body)
        except (ssl.SSLError, OSError):
            try:
                s.close()
            except OSError:
                pass

    def wait_handshakes(self, n, timeout=5):
        """The records once at least `n` connections have finished (or failed) their handshake."""
        deadline = time.monotonic() + timeout * SLOW
        while len(self.handshakes) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            assert len(self.handshakes) >= n, self.handshakes
            return list(self.handshakes)

    @staticmethod
    def _close_delimited(s, q):
        """HTTP/1.0 200, `size` pattern bytes, then a bare TCP close (no close_notify): at once
        (end=close), after a pause so that the EOF reaches the client on its own (end=pause), or after an
        invalid TLS record sent in the same TCP segment as the content (end=bad_record) or on its own after
        a pause (end=pause_bad_record)."""
        size, end = int(q["size"][0]), q.get("end", ["close"])[0]
        # Everything below the TLS layer goes through a duplicate descriptor; shutting it down first means
        # nothing the TLS object might still write when it is freed (a close_notify) can go out.
        d = socket.fromfd(s.fileno(), socket.AF_INET, socket.SOCK_STREAM)
        data = b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n" + pattern(size)
        if end in ("bad_record", "pause_bad_record"):
            bad = b"\x17\x03\x03\x00\x20" + os.urandom(32)  # application data that fails to decrypt
            if end == "bad_record":
                d.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)  # content and bad record: one segment
                s.sendall(data)
                d.sendall(bad)
                d.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
            else:
                s.sendall(data)
                time.sleep(0.2 * SLOW)
                d.sendall(bad)
            time.sleep(0.3 * SLOW)  # the verdict must come from the record, not from the close
        else:
            s.sendall(data)
            if end == "pause":
                time.sleep(0.2 * SLOW)
        try:
            d.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        d.close()
        s.close()

    def stop(self):
        with self._lock:
            self._stopping = True
            socks = list(self._socks)
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone would not)
        except OSError:
            pass
        try:
            self.lsock.close()
        except OSError:
            pass
        for s in socks:
            try:  # wake a thread blocked in recv(): shut the socket down through a duplicate descriptor
                d = socket.fromfd(s.fileno(), socket.AF_INET, socket.SOCK_STREAM)
                d.shutdown(socket.SHUT_RDWR)
                d.close()
            except OSError:
                pass
        for t in list(self._threads):
            t.join(5)


@pytest.fixture
def py_origins():
    """Factory of TlsOrigin(leaf, client_ca=None, alpn=...); all stopped at teardown."""
    started = []

    def start(*a, **kw):
        o = TlsOrigin(*a, **kw).start()
        started.append(o)
        return o

    yield start
    for o in started:
        o.stop()


# ---- helpers ----

@pytest.fixture
def tls_origin(clean_tether, site, certs):
    """A tether serving `site` over TLS only (certs.main: localhost, 127.0.0.1); returns (tether, port).
    Its access log is off: tethers of one test share a work directory, and the proxy's log is the one read."""
    def start(leaf=None, workers=1):
        o = clean_tether("--root", str(site), "--workers", str(workers), "--access-log", "off",
                         *tls_args(certs, leaf))
        return o, tls_port(o)
    return start


def client_leaf(certs, name, cn):
    """A client certificate (extendedKeyUsage clientAuth) signed by the test CA: CertFactory.leaf only
    makes serverAuth ones, which a server verifying its clients refuses (unsupported purpose)."""
    d = certs.dir
    key, csr, cert, ext = (os.path.join(d, name + s) for s in (".key", ".csr", ".pem", ".ext"))
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
    for argv in (["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                  "-keyout", key, "-out", csr, "-subj", "/CN=%s" % cn],
                 ["openssl", "x509", "-req", "-in", csr, "-CA", certs.ca, "-CAkey", certs.factory.ca_key,
                  "-set_serial", "0x7E57", "-days", "2", "-extfile", ext, "-out", cert]):
        p = subprocess.run(argv, cwd=d, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        assert p.returncode == 0, p.stderr.decode(errors="replace")
    return cert, key


def ini(*upstreams):
    """INI text for upstreams given as (name, route, servers, {key: value})."""
    lines = []
    for name, route, servers, keys in upstreams:
        lines.append("[upstream %s]" % name)
        lines += ["server = %s" % s for s in servers]
        lines += ["%s = %s" % kv for kv in keys.items()]
        lines += ["", "[route %s]" % route, "upstream = %s" % name, ""]
    return "\n".join(lines)


def proxy_to(clean_tether, server, route="/", name="b", **keys):
    """A one-worker tether proxying `route` to `server` (an https:// URL) with the upstream `keys`."""
    return clean_tether("--workers", "1", "--drain-timeout", "3s", config=ini((name, route, [server], keys)))


def get(t, conns, path, c=None):
    c = c or conns(t)
    c.request("GET", path)
    return c.response()


def up_metric(t, name, upstream="b", server=None, **labels):
    """An upstream metric: pool metrics carry `server` (HOST:PORT as configured), others only `upstream`."""
    lab = {"upstream": upstream}
    if server is not None:
        lab["server"] = server
    lab.update(labels)
    return t.metric(name, **lab)


def handshakes(t, server):
    return (up_metric(t, "tether_upstream_tls_full_handshakes_total", server=server),
            up_metric(t, "tether_upstream_tls_resumed_handshakes_total", server=server))


# ---- 1. a trusted CA ----

def test_https_upstream_verified_with_tls_ca_serves_requests(clean_tether, tls_origin, certs, site, conns):
    o, op = tls_origin()
    server = "localhost:%d" % op
    t = proxy_to(clean_tether, "https://" + server, tls_ca=certs.ca)
    c = conns(t)
    r = get(t, conns, "/100.txt", c)
    assert r.status == 200 and r.body == b"x" * 99 + b"\n" and r.header("X-Tether-Cause") is None
    r = get(t, conns, "/4k.bin", c)
    assert r.status == 200 and r.body == (site / "4k.bin").read_bytes()
    r = get(t, conns, "/missing", c)
    assert r.status == 404 and r.header("X-Tether-Cause") is None  # the origin's 404, not tether's
    assert handshakes(t, server) == (1, 0)
    assert up_metric(t, "tether_upstream_requests_total") == 3
    # the origin really spoke TLS: it counted the handshake and serves these connections over tls
    assert o.metric("tether_tls_handshakes_total", kind="full") == 1
    assert o.metric("tether_connections_open_by", protocol="h1", transport="tls") == 1
    line = t.access_lines(3)[-1]
    assert "upstream=b up_addr=%s" % server in line and "cause=-" in line


# ---- 2. verification failures ----

def two_routes_config(op, bad_keys, ca):
    """/bad/ to the origin with `bad_keys`, / to the same origin with the right CA."""
    return ini(("bad", "/bad/", ["https://localhost:%d" % op], bad_keys),
               ("good", "/", ["https://localhost:%d" % op], {"tls_ca": ca}))


@pytest.mark.parametrize("which", ["system_store", "foreign_ca"])
def test_unverifiable_certificate_is_502_tls_error(clean_tether, tls_origin, certs, conns, tmp_path, which):
    o, op = tls_origin()
    if which == "system_store":
        bad = {}  # no tls_ca: the system store, which does not hold the throw-away test CA
    else:
        bad = {"tls_ca": CertFactory(tmp_path / "foreign").ca}  # a CA that did not sign the origin's certificate
    t = clean_tether("--workers", "1", "--drain-timeout", "3s", config=two_routes_config(op, bad, certs.ca))
    # (two failures, below max_fails = 3: a third would mark the server down, then 503 all_servers_down)
    c = conns(t)
    r = get(t, conns, "/bad/100.txt", c)
    assert r.status == 502 and r.header("X-Tether-Cause") == "tls_error", r
    assert up_metric(t, "tether_upstream_generated_total", upstream="bad", cause="tls_error") == 1
    assert up_metric(t, "tether_upstream_connections_opened_total", upstream="bad",
                     server="localhost:%d" % op) == 0
    assert "upstream=bad" in t.access_lines(1)[-1] and "cause=tls_error" in t.access_lines(1)[-1]
    # the proxy refused the origin's certificate: the origin saw the handshake abandoned, nothing served
    assert o.wait_metric("tether_tls_handshake_failures_total", lambda v: v >= 1) >= 1
    assert o.metric("tether_requests_total", **{"class": "2xx"}) == 0
    # the proxy goes on serving: the other route on the same client connection, then the failing one again
    r = get(t, conns, "/100.txt", c)
    assert r.status == 200 and r.body == b"x" * 99 + b"\n"
    r = get(t, conns, "/bad/100.txt", conns(t))
    assert r.status == 502 and r.header("X-Tether-Cause") == "tls_error", r
    assert up_metric(t, "tether_upstream_generated_total", upstream="bad", cause="tls_error") == 2
    # the reason is logged once per streak of failures, naming the upstream and OpenSSL's verdict
    logged = [line for line in t.stderr().splitlines() if "TLS handshake failed" in line]
    assert len(logged) == 1 and "upstream bad" in logged[0] and "certificate verif" in logged[0], logged


# ---- 3. tls_verify = off ----

def test_tls_verify_off_accepts_an_unverifiable_certificate(clean_tether, tls_origin, certs, conns):
    o, op = tls_origin(certs.other)  # no tls_ca: a CA the proxy does not know, and a name it does not ask for
    t = proxy_to(clean_tether, "https://localhost:%d" % op, tls_verify="off")
    r = get(t, conns, "/100.txt")
    assert r.status == 200 and r.body == b"x" * 99 + b"\n"
    assert handshakes(t, "localhost:%d" % op) == (1, 0)
    # and with verification on, the same origin is refused
    t2 = proxy_to(clean_tether, "https://localhost:%d" % op)
    r = get(t2, conns, "/100.txt")
    assert r.status == 502 and r.header("X-Tether-Cause") == "tls_error"


# ---- 4. the name check, and tls_sni ----

def test_certificate_for_another_name_fails_the_hostname_check(clean_tether, py_origins, certs, conns):
    po = py_origins(certs.other)  # names only other.test; the chain is fine (tls_ca)
    t = proxy_to(clean_tether, "https://localhost:%d" % po.port, tls_ca=certs.ca)
    r = get(t, conns, "/")
    assert r.status == 502 and r.header("X-Tether-Cause") == "tls_error", r
    hs = po.wait_handshakes(1)
    assert len(hs) == 1 and hs[0]["sni"] == "localhost"
    assert hs[0]["error"] is not None  # the proxy abandoned the handshake: nothing was served


def test_tls_sni_is_sent_and_checked_instead_of_the_host(clean_tether, py_origins, certs, conns):
    po = py_origins(certs.other)
    t = proxy_to(clean_tether, "https://localhost:%d" % po.port, tls_ca=certs.ca, tls_sni="other.test")
    r = get(t, conns, "/")
    assert r.status == 200, r
    e = json.loads(r.body)
    assert e["sni"] == "other.test" and e["error"] is None
    assert [h["sni"] for h in po.wait_handshakes(1)] == ["other.test"]


# ---- 5. the default SNI ----

def test_default_sni_is_the_host_name_and_alpn_offers_only_http11(clean_tether, py_origins, certs, conns):
    po = py_origins(certs.main)  # prefers h2: it would be chosen had the proxy offered it
    t = proxy_to(clean_tether, "https://localhost:%d" % po.port, tls_ca=certs.ca)
    r = get(t, conns, "/")
    assert r.status == 200, r
    e = json.loads(r.body)
    assert e["sni"] == "localhost"
    assert e["alpn"] == "http/1.1"  # the proxy speaks HTTP/1.1 upstream and offers nothing else
    assert e["client_cn"] is None


def test_ip_literal_server_sends_no_sni(clean_tether, py_origins, certs, conns):
    """RFC 6066 3: "Literal IPv4 and IPv6 addresses are not permitted in HostName"."""
    po = py_origins(certs.main)  # has IP:127.0.0.1
    t = proxy_to(clean_tether, "https://127.0.0.1:%d" % po.port, tls_ca=certs.ca)
    r = get(t, conns, "/")
    assert r.status == 200, r
    assert json.loads(r.body)["sni"] is None


def test_ip_literal_server_certificate_is_checked_against_the_address(clean_tether, py_origins, certs, conns):
    """No SNI, but the name check still applies: the certificate must name the address (docs/config.md,
    tls_verify: "Check the server's certificate chain and its name")."""
    po = py_origins(certs.other)  # a good chain, but names only DNS:other.test, not IP:127.0.0.1
    t = proxy_to(clean_tether, "https://127.0.0.1:%d" % po.port, tls_ca=certs.ca)
    r = get(t, conns, "/")
    assert r.status == 502 and r.header("X-Tether-Cause") == "tls_error", r
    assert po.wait_handshakes(1)[0]["error"] is not None


# ---- 6. client certificates ----

def test_client_certificate_is_presented(clean_tether, py_origins, certs, conns):
    cert, key = client_leaf(certs, "client", "tether proxy client")
    po = py_origins(certs.main, client_ca=certs.ca)
    t = proxy_to(clean_tether, "https://localhost:%d" % po.port, tls_ca=certs.ca, tls_cert=cert, tls_key=key)
    r = get(t, conns, "/")
    assert r.status == 200, r
    assert json.loads(r.body)["client_cn"] == "tether proxy client"
    assert [h["client_cn"] for h in po.wait_handshakes(1)] == ["tether proxy client"]


@pytest.mark.parametrize("version", ["tls1.2", "tls1.3"])
def test_without_a_client_certificate_the_origin_refuses_with_502_tls_error(
        clean_tether, py_origins, certs, conns, version):
    """Under TLS 1.2 the refusal ends the handshake; under TLS 1.3 the client has finished its handshake
    and sent the request when the server's certificate_required alert arrives -- still a TLS failure,
    not a network reset."""
    po = py_origins(certs.main, client_ca=certs.ca,
                    max_version=ssl.TLSVersion.TLSv1_2 if version == "tls1.2" else None)
    t = proxy_to(clean_tether, "https://localhost:%d" % po.port, tls_ca=certs.ca)
    r = get(t, conns, "/")
    hs = po.wait_handshakes(1)
    assert len(hs) == 1 and "certificate" in (hs[0]["error"] or "").lower(), hs
    assert r.status == 502 and r.header("X-Tether-Cause") == "tls_error", r
    assert up_metric(t, "tether_upstream_generated_total", cause="tls_error") == 1


# ---- 7. resumption ----

N_RESUME = 6


def test_every_new_upstream_connection_resumes_the_session(clean_tether, tls_origin, certs, conns):
    """max_requests = 1: each request opens a new upstream connection; all but the first resume."""
    o, op = tls_origin()
    server = "localhost:%d" % op
    t = proxy_to(clean_tether, "https://" + server, tls_ca=certs.ca, max_requests=1)
    for i in range(N_RESUME):
        r = get(t, conns, "/100.txt")
        assert r.status == 200, (i, r)
    assert up_metric(t, "tether_upstream_connections_opened_total", server=server) == N_RESUME
    assert handshakes(t, server) == (1, N_RESUME - 1)
    assert o.metric("tether_tls_handshakes_total", kind="full") == 1
    assert o.metric("tether_tls_handshakes_total", kind="resumed") == N_RESUME - 1


def test_connections_retired_after_a_parked_life_resume_too(clean_tether, tls_origin, certs, conns):
    """max_requests = 2: each connection serves two requests (parked once in between) and then a new one
    opens; each new one after the first resumes."""
    o, op = tls_origin()
    server = "localhost:%d" % op
    t = proxy_to(clean_tether, "https://" + server, tls_ca=certs.ca, max_requests=2)
    for i in range(N_RESUME):
        assert get(t, conns, "/100.txt").status == 200
    n = N_RESUME // 2
    assert up_metric(t, "tether_upstream_connections_opened_total", server=server) == n
    assert handshakes(t, server) == (1, n - 1)
    assert o.metric("tether_tls_handshakes_total", kind="resumed") == n - 1


# ---- 8. keep-alive over TLS ----

def test_sequential_requests_share_one_tls_connection(clean_tether, tls_origin, certs, conns):
    o, op = tls_origin()
    server = "localhost:%d" % op
    t = proxy_to(clean_tether, "https://" + server, tls_ca=certs.ca)
    for i in range(20):
        r = get(t, conns, "/100.txt")  # a new client connection each time: the pool is the proxy's
        assert r.status == 200 and len(r.body) == 100
    assert up_metric(t, "tether_upstream_connections_opened_total", server=server) == 1
    assert up_metric(t, "tether_upstream_requests_reused_total", server=server) == 19
    assert handshakes(t, server) == (1, 0)
    assert o.metric("tether_connections_accepted_total") == 1
    assert o.metric("tether_tls_handshakes_total", kind="full") == 1
    assert t.access_lines(20)[-1].count("up_reused=1") == 1


# ---- 9. concurrency (a use-after-free of pooled sessions) ----

@pytest.mark.multiworker
def test_concurrent_load_with_short_lived_tls_connections(clean_tether, tls_origin, certs):
    """32 clients over 2 workers, every upstream connection good for 2 requests: sessions are replaced in
    the pool while connections that were offered the previous one are still handshaking. All 200, and a
    clean exit (an ASan build aborts with a non-zero status on a use-after-free)."""
    o, op = tls_origin(workers=2)
    server = "localhost:%d" % op
    t = clean_tether("--workers", "2", "--drain-timeout", "3s",
                     config=ini(("b", "/", ["https://" + server], {"tls_ca": certs.ca, "max_requests": 2})))
    n = 1000 if ASAN else 3000
    p = subprocess.run([TETHER_BIN, "bench", t.url("/100.txt"), "-n", str(n),
                        "-c", "32", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60 * SLOW)
    r = json.loads(p.stdout) if p.returncode in (0, 1) else None
    ok = r is not None and r["requests"] == n and r["status"]["2xx"] == n and sum(r["errors"].values()) == 0
    assert ok, "bench: rc=%s %s\nproxy (exit %s):\n%s" % (p.returncode, r or p.stderr.decode(errors="replace"),
                                                        t.proc.poll(), t.stderr()[-4000:])
    full, resumed = handshakes(t, server)
    opened = up_metric(t, "tether_upstream_connections_opened_total", server=server)
    assert opened >= n / 2 and full + resumed == opened
    assert resumed > full, (full, resumed)  # most reconnects resume
    assert (o.metric("tether_tls_handshakes_total", kind="full"),
            o.metric("tether_tls_handshakes_total", kind="resumed")) == (full, resumed)  # the origin agrees
    assert sum(v for k, v in t.metrics().items() if k.startswith("tether_upstream_generated_total")) == 0
    rc = t.stop()
    assert rc == 0, "proxy exited with %s:\n%s" % (rc, t.stderr()[-4000:])


# ---- 10. a close-delimited response ended by a bare TCP close ----

SIZE = 300_000


@pytest.mark.parametrize("end", ["close", "pause"])
def test_close_delimited_response_without_close_notify_is_complete(clean_tether, py_origins, certs, conns, end):
    """Most servers end a close-delimited response with a plain close, no close_notify (RFC 8446 6.1
    allows it; HTTP framing, not TLS, tells complete from truncated). "pause" makes the EOF arrive alone,
    not in the same read as the last content."""
    po = py_origins(certs.main)
    server = "localhost:%d" % po.port
    t = proxy_to(clean_tether, "https://" + server, tls_ca=certs.ca)
    # an HTTP/1.1 client: re-framed as chunked, ended with the last chunk (not cut)
    c = conns(t)
    c.request("GET", "/close-delimited?size=%d&end=%s" % (SIZE, end))
    r = read_head(c)
    assert r.status == 200 and r.header("Transfer-Encoding") == "chunked", r
    body, _ = read_chunked(c)
    assert len(body) == SIZE and body == pattern(SIZE)
    # the client connection survives it
    r = get(t, conns, "/", c)
    assert r.status == 200 and json.loads(r.body)["req"] == 1
    # an HTTP/1.0 client: close-delimited through to it, all bytes before the close
    c2 = conns(t)
    c2.send("GET /close-delimited?size=%d&end=%s HTTP/1.0\r\nHost: t\r\n\r\n" % (SIZE, end))
    data, closed = read_to_eof(c2)
    assert closed
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length" not in head.lower(), head
    assert len(body) == SIZE and body == pattern(SIZE)
    assert up_metric(t, "tether_upstream_retired_total", server=server, reason="upstream_close") == 2
    assert up_metric(t, "tether_upstream_retired_total", server=server, reason="error") == 0
    # two upstream connections: the first ended by the origin's close; the second carried the JSON
    # request, was parked, and was reused for c2's request, which the origin ended by its close
    assert up_metric(t, "tether_upstream_connections_opened_total", server=server) == 2
    assert [h["error"] for h in po.wait_handshakes(2)] == [None, None]


@pytest.mark.parametrize("end", ["bad_record", "pause_bad_record"])
def test_invalid_tls_record_after_close_delimited_content_is_not_its_end(clean_tether, py_origins, certs, conns,
                                                                         end):
    """A record that fails to decrypt is an error (bad_record_mac), not the end of the stream: the client
    must see the close-delimited response cut, never a complete-looking one -- whether the record arrives
    in the same read as the content (bad_record) or on its own (pause_bad_record)."""
    po = py_origins(certs.main)
    server = "localhost:%d" % po.port
    t = proxy_to(clean_tether, "https://" + server, tls_ca=certs.ca)
    c = conns(t)
    c.request("GET", "/close-delimited?size=1000&end=" + end)
    r = read_head(c)
    assert r.status == 200 and r.header("Transfer-Encoding") == "chunked", r
    with pytest.raises(EOFError):
        read_chunked(c)  # the content may arrive, the last chunk must not
    assert up_metric(t, "tether_upstream_retired_total", server=server, reason="error") == 1
    assert up_metric(t, "tether_upstream_retired_total", server=server, reason="upstream_close") == 0


# ---- 9. a connection parked without ever being used ----

class SlowFirstHandshakeOrigin:
    """An HTTP/1.1-over-TLS origin whose first connection finishes its handshake only after `delay` s and then
    closes at its first request without answering (an idle close crossing the request, as the keep-alive race
    does); every later connection answers each request `200 ok`."""

    def __init__(self, leaf, delay):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(leaf.cert, leaf.key)
        self.delay = delay
        self.accepted = 0
        self.answered = 0
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self._stop = False
        self._conns = []
        self._threads = []

    def start(self):
        th = threading.Thread(target=self._accept, daemon=True)
        th.start()
        self._threads.append(th)
        return self

    def _accept(self):
        self.lsock.settimeout(0.2)
        while not self._stop:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                continue
            self.accepted += 1
            self._conns.append(s)
            th = threading.Thread(target=self._serve, args=(s, self.accepted), daemon=True)
            th.start()
            self._threads.append(th)

    def _serve(self, raw, n):
        try:
            raw.settimeout(10 * SLOW)
            if n == 1:
                time.sleep(self.delay)
            s = self.ctx.wrap_socket(raw, server_side=True)
            buf = b""
            while not self._stop:
                data = s.recv(65536)
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    if n == 1:
                        s.close()
                        return
                    self.answered += 1
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (OSError, ssl.SSLError):
            pass
        finally:
            raw.close()

    def stop(self):
        self._stop = True
        self.lsock.close()
        for s in self._conns:
            try:
                s.close()
            except OSError:
                pass
        for th in self._threads:
            th.join(5)


def test_a_request_on_a_connection_parked_unused_is_replayed_when_the_origin_closed_it(clean_tether, certs, conns):
    """A request that leaves while its upstream connection is still in its TLS handshake leaves the connection to
    the pool, parked without having carried a request. The next request takes it from the park: if the origin closes
    it as that request arrives, that is the keep-alive race like any reuse, and the GET is replayed on a new
    connection (it was answered 502 closed_before_response when only a connection that had carried a request
    counted as reused)."""
    o = SlowFirstHandshakeOrigin(certs.main, delay=1.0).start()
    try:
        t = proxy_to(clean_tether, "https://localhost:%d" % o.port, tls_ca=certs.ca, connect_timeout="10s")
        server = "localhost:%d" % o.port
        s = socket.create_connection(("127.0.0.1", t.port), timeout=5)
        s.sendall(b"GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n")
        deadline = time.monotonic() + 5 * SLOW
        while o.accepted < 1:
            assert time.monotonic() < deadline, "the origin saw no connection"
            time.sleep(0.01)
        s.close()  # the request leaves during the handshake
        t.wait_metric("tether_upstream_idle_connections", lambda v: v == 1, timeout=10, upstream="b", server=server)
        r = get(t, conns, "/second")
        assert r.status == 200 and r.body == b"ok", (r.status, r.header("X-Tether-Cause"))
        assert o.accepted == 2 and o.answered == 1
        assert up_metric(t, "tether_upstream_replays_total", cause="closed_before_response") == 1
    finally:
        o.stop()
