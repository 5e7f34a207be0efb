"""tether bench over HTTP/2 and https: --h2 -n counts exactly against tether (cleartext prior knowledge and ALPN
h2 over TLS, as tether's h2 metrics see it), RST_STREAM and GOAWAY counted as errors of their own kinds,
--tls-resume on/off as tether counts the handshakes, --compare's HTTP/2 and TLS rows, and failures (no h2,
untrusted certificate) ending with a clear message and exit 1."""

import json
import os
import socket
import subprocess
import threading

import pytest

from conftest import SLOW, TETHER_BIN
from tls_util import certs, tls_args, tls_port  # noqa: F401 (certs is a fixture)


def bench(*args, ca=None, timeout=60):
    env = dict(os.environ)
    env.pop("SSL_CERT_DIR", None)
    if ca:
        env["SSL_CERT_FILE"] = ca
    else:
        env.pop("SSL_CERT_FILE", None)
    return subprocess.run([TETHER_BIN, "bench"] + list(args), capture_output=True, text=True, env=env,
                          timeout=timeout * SLOW)


def bench_json(*args, ca=None):
    out = bench("--json", *args, ca=ca)
    assert out.returncode == 0, out
    return json.loads(out.stdout)


@pytest.fixture
def origin(tether, site, certs):
    return tether("--root", str(site), "--workers", "1", *tls_args(certs), "--listen", "127.0.0.1:0",
                  expect_listeners=2)


def plain_url(t, path="/100.txt"):
    for (host, port), scheme in zip(t.listen, t.schemes):
        if scheme == "http":
            return "http://127.0.0.1:%d%s" % (port, path)
    raise AssertionError(t.schemes)


def tls_url(t, path="/100.txt"):
    return "https://127.0.0.1:%d%s" % (tls_port(t), path)


def h2_streams(t):
    """(connections, streams) tether's h2 histogram observed at close."""
    m = t.metrics()
    return (m.get("tether_h2_streams_per_connection_count", 0), m.get("tether_h2_streams_per_connection_sum", 0))


def wait_h2_closed(t, conns):
    t.wait_metric("tether_h2_streams_per_connection_count", lambda v: v >= conns)


# ---- --h2 against tether ----

@pytest.mark.multiworker
def test_h2_cleartext_n_counts_exactly(origin):
    r = bench_json(plain_url(origin), "--h2", "-n", "500", "-c", "2", "-m", "8")
    assert r["protocol"] == "h2" and r["mode"] == "h2" and r["streams"] == 8
    assert r["requests"] == 500 and r["status"]["2xx"] == 500
    assert sum(r["errors"].values()) == 0, r["errors"]
    assert r["connections_opened"] == 2 and r["requests_per_connection"] == 250
    assert r["tls"] == {"full": 0, "resumed": 0}
    wait_h2_closed(origin, 2)
    assert h2_streams(origin) == (2, 500)
    assert origin.metric("tether_requests_total", **{"class": "2xx"}) == 500
    assert origin.metric("tether_tls_handshakes_total", kind="full") == 0
    # split over threads, still exact
    r = bench_json(plain_url(origin), "--h2", "-n", "301", "-c", "4", "-t", "2")
    assert r["requests"] == 301 and r["streams"] == 10
    wait_h2_closed(origin, 6)
    assert h2_streams(origin) == (6, 801)


def test_h2_over_tls_selects_h2_by_alpn(origin, certs):
    r = bench_json(tls_url(origin), "--h2", "-n", "400", "-c", "2", ca=certs.ca)
    assert r["requests"] == 400 and sum(r["errors"].values()) == 0
    assert r["url"] == tls_url(origin) and r["protocol"] == "h2" and r["tls_resume"] is True
    assert r["tls"]["full"] + r["tls"]["resumed"] == 2
    wait_h2_closed(origin, 2)
    assert h2_streams(origin) == (2, 400)
    hs = origin.metric("tether_tls_handshakes_total", kind="full") + \
        origin.metric("tether_tls_handshakes_total", kind="resumed")
    assert hs == 2


def test_h2_max_requests_goaway_opens_new_connections_without_errors(tether, site):
    # tether's two-step GOAWAY (RFC 9113 6.8) after 50 streams: in-flight streams are still served
    t = tether("--root", str(site), "--workers", "1", "--max-requests", "50")
    r = bench_json(t.url("/100.txt"), "--h2", "-n", "300", "-c", "1", "-m", "4")
    assert r["requests"] == 300 and sum(r["errors"].values()) == 0, r
    assert r["connections_opened"] >= 6


def test_h2_open_loop_holds_its_rate(origin):
    r = bench_json(plain_url(origin), "--h2", "-n", "400", "-c", "2", "--rate", "400")
    assert r["requests"] == 400 and r["target_rate"] == 400
    assert 0.95 <= r["elapsed_s"] <= 1.0 + 0.5 * SLOW, r  # the last is due at 0.9975 s


# ---- RST_STREAM and GOAWAY from a misbehaving server ----

class H2Server:
    """A tiny HTTP/2 cleartext server (the h2 package): `policy(conn, stream_id, n)` answers the n-th stream."""

    def __init__(self, policy):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.policy = policy
        self.streams = 0
        self.conns = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self.handle, args=(c,), daemon=True).start()

    def handle(self, s):
        import h2.config
        import h2.connection
        import h2.events
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        try:
            s.sendall(conn.data_to_send())
            while True:
                data = s.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        with self.lock:
                            self.streams += 1
                            n = self.streams
                        self.policy(conn, ev.stream_id, n)
                out = conn.data_to_send()
                if out:
                    s.sendall(out)
        except Exception:
            return
        finally:
            s.close()

    def close(self):
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


@pytest.fixture
def h2server():
    servers = []

    def start(policy):
        s = H2Server(policy)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def respond(conn, sid):
    conn.send_headers(sid, [(":status", "200"), ("content-length", "2")])
    conn.send_data(sid, b"ok", end_stream=True)


def test_rst_stream_is_an_error_of_its_own(h2server):
    def policy(conn, sid, n):
        if n % 2 == 0:
            conn.reset_stream(sid, error_code=2)  # INTERNAL_ERROR
        else:
            respond(conn, sid)

    s = h2server(policy)
    r = bench_json("http://127.0.0.1:%d/" % s.port, "--h2", "-n", "40", "-c", "1", "-m", "1")
    assert r["requests"] == 20 and r["errors"]["rst_stream"] == 20, r
    assert r["errors"]["goaway"] == 0 and r["errors"]["reset"] == 0
    out = bench("http://127.0.0.1:%d/" % s.port, "--h2", "-n", "10", "-c", "1", "-m", "1")
    assert out.returncode == 0 and "rst_stream 5" in out.stdout, out.stdout


def test_streams_refused_by_goaway_are_counted_as_goaway(h2server):
    def policy(conn, sid, n):
        # the first stream of each connection is answered, then GOAWAY says nothing later was processed
        if getattr(conn, "goaway_sent", False):
            return
        respond(conn, sid)
        conn.close_connection(error_code=0, last_stream_id=sid)
        conn.goaway_sent = True

    s = h2server(policy)
    r = bench_json("http://127.0.0.1:%d/" % s.port, "--h2", "-n", "30", "-c", "1", "-m", "3")
    assert r["requests"] + r["errors"]["goaway"] == 30, r
    assert r["requests"] >= 5 and r["errors"]["goaway"] >= 10, r
    assert r["connections_opened"] == r["requests"]
    assert r["errors"]["rst_stream"] == 0


# ---- TLS session resumption, as tether counts it ----

def handshakes(t):
    return (t.metric("tether_tls_handshakes_total", kind="full"),
            t.metric("tether_tls_handshakes_total", kind="resumed"))


def test_tls_resume_on_and_off_as_tether_counts_handshakes(origin, certs):
    full0, res0 = handshakes(origin)
    r = bench_json(tls_url(origin), "--close", "-n", "40", "-c", "1", "--tls-resume", "off", ca=certs.ca)
    assert r["requests"] == 40 and r["tls"] == {"full": 40, "resumed": 0} and r["tls_resume"] is False
    full1, res1 = handshakes(origin)
    assert (full1 - full0, res1 - res0) == (40, 0)
    r = bench_json(tls_url(origin), "--close", "-n", "40", "-c", "1", ca=certs.ca)  # on by default
    assert r["requests"] == 40 and r["tls_resume"] is True
    assert r["tls"]["full"] + r["tls"]["resumed"] == 40
    # tether renews the ticket on every resumed TLS 1.3 handshake, so every connection after the first resumes
    # (a server that renewed none would let only every other one resume: about 20 of 40)
    assert r["tls"]["resumed"] >= 36, r["tls"]
    full2, res2 = handshakes(origin)
    assert (full2 - full1, res2 - res1) == (r["tls"]["full"], r["tls"]["resumed"])
    # keep-alive over TLS: one handshake per connection
    r = bench_json(tls_url(origin), "-n", "300", "-c", "3", "--insecure")
    assert r["requests"] == 300 and r["tls"]["full"] + r["tls"]["resumed"] == 3


# ---- --compare ----

def test_compare_over_https_has_h2_and_tls_rows(origin, certs):
    r = bench_json(tls_url(origin), "-n", "200", "-c", "2", "--compare", "-m", "4", ca=certs.ca)
    labels = [run["label"] for run in r["runs"]]
    assert labels == ["keep-alive", "new connection, TLS resumed", "new connection, TLS full handshake",
                      "HTTP/2, 4 streams per connection"], labels
    ka, resumed, full, h2 = r["runs"]
    assert all(run["requests"] == 200 for run in r["runs"])
    assert resumed["tls"]["resumed"] > 0 and full["tls"]["resumed"] == 0 and full["tls"]["full"] == 200
    assert h2["protocol"] == "h2" and h2["connections_opened"] == 2 and h2["streams"] == 4
    assert set(r["ratios"]) == {"keepalive_vs_close", "h2_vs_h1", "tls_resumed_vs_full"}
    assert r["ratios"]["h2_vs_h1"]["rps"] > 0 and r["ratios"]["tls_resumed_vs_full"]["rps"] > 0
    assert r["skipped"] == []
    out = bench(tls_url(origin), "-n", "100", "-c", "2", "--compare", ca=certs.ca)
    assert out.returncode == 0, out
    for row in ("keep-alive advantage", "TLS resumption advantage", "HTTP/2, 10 streams per connection",
                "HTTP/2 vs HTTP/1.1 keep-alive"):
        assert row in out.stdout, out.stdout
    assert "skipped" not in out.stdout


def test_compare_over_http_runs_h2c_and_skips_tls(origin):
    r = bench_json(plain_url(origin), "-n", "100", "-c", "2", "--compare")
    assert [run["mode"] for run in r["runs"]] == ["keep-alive", "close", "h2"]
    assert set(r["ratios"]) == {"keepalive_vs_close", "h2_vs_h1"}
    assert r["skipped"] == [{"row": "TLS resumed vs full handshake", "reason": "the origin is http://"}]


def test_compare_lists_h2_as_skipped_when_the_origin_has_none(tether, site, certs):
    t = tether("--root", str(site), "--workers", "1", *tls_args(certs), "--listen", "127.0.0.1:0",
               expect_listeners=2, config="[http2]\nh2 = off\n")
    r = bench_json(tls_url(t), "-n", "50", "-c", "1", "--compare", "--insecure")
    assert len(r["runs"]) == 3 and "h2_vs_h1" not in r["ratios"]
    assert r["skipped"] == [{"row": "HTTP/1.1 vs HTTP/2",
                             "reason": "the origin does not speak HTTP/2: the server selected http/1.1 in ALPN"}]
    r = bench_json(plain_url(t), "-n", "50", "-c", "1", "--compare")
    assert [s["row"] for s in r["skipped"]] == ["TLS resumed vs full handshake", "HTTP/1.1 vs HTTP/2"]
    assert r["skipped"][1]["reason"].startswith("the origin does not speak HTTP/2 with prior knowledge")
    # and --h2 alone fails clearly
    out = bench(tls_url(t), "--h2", "-n", "5", "--insecure")
    assert out.returncode == 1
    assert "failed: no_h2: the server selected http/1.1 in ALPN" in out.stderr, out.stderr


# ---- failures and arguments ----

def test_untrusted_certificate_fails_clearly(origin):
    out = bench(tls_url(origin), "-n", "5", "-c", "1")
    assert out.returncode == 1
    assert "certificate verification failed" in out.stderr and "--insecure" in out.stderr, out.stderr
    out = bench(tls_url(origin), "--h2", "-n", "5", "-c", "1")
    assert out.returncode == 1 and "certificate verification failed" in out.stderr, out.stderr


def test_insecure_with_http_is_accepted_and_ignored(origin):
    """--insecure only relaxes certificate checks, so an http:// run takes it and measures as without it (as curl
    and `tether probe` do)."""
    r = bench_json(plain_url(origin), "-n", "20", "-c", "1", "--insecure")
    assert r["requests"] == 20 and sum(r["errors"].values()) == 0, r


@pytest.mark.parametrize("args, message", [
    (["--tls-resume", "on", "http://127.0.0.1:1/"], "--tls-resume applies to https:// URLs only"),
    (["--tls-resume", "maybe", "https://127.0.0.1:1/"], "expected on or off"),
    (["-m", "4", "http://127.0.0.1:1/"], "-m sets HTTP/2 streams per connection"),
    (["--h2", "--close", "http://127.0.0.1:1/"], "not both"),
    (["--h2", "--compare", "http://127.0.0.1:1/"], "drop --h2"),
    (["--h2", "-m", "0", "http://127.0.0.1:1/"], "-m 0"),
])
def test_bad_h2_and_tls_arguments_exit_2(args, message):
    out = bench(*args)
    assert out.returncode == 2, out
    assert message in out.stderr, out.stderr
