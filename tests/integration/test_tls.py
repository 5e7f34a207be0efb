"""TLS listeners: HTTP/1.1 over TLS, ALPN, minimum version, SNI, resumption, certificate reload on
SIGHUP, bad and abandoned handshakes, the keep-alive rules over TLS, close_notify, and the TLS metrics.

Certificates come from tls_util.certs (a throw-away CA made with the openssl CLI in tmp_path). Clients:
curl, `openssl s_client`, and Python's ssl module (with suppress_ragged_eofs=False, so a clean close --
close_notify, then FIN -- reads as b"" while a bare FIN raises SSLEOFError).
"""

import os
import shutil
import signal
import socket
import ssl
import time

import pytest

from conftest import SLOW
from tls_util import (TlsConn, body_of, certs, client_context, curl, peer_cert_fields,  # noqa: F401
                      s_client, tls_args, tls_conns, tls_port)



def tls_listen_config(certs, pairs=None, extra="", tls_section=""):
    """A config whose only listener is TLS on 127.0.0.1:0 with the given (cert, key) pairs."""
    pairs = pairs or [(certs.main.cert, certs.main.key)]
    lines = ["[listen tls]", "address = 127.0.0.1:0", "tls = on"]
    for cert, key in pairs:
        lines += ["tls_cert = %s" % cert, "tls_key = %s" % key]
    text = "\n".join(lines) + "\n" + extra + "\n"
    if tls_section:
        text += "[tls]\n" + tls_section + "\n"
    return text


# ---- HTTP/1.1 over TLS, ALPN ----

def test_http11_over_tls_with_verified_certificate(tether, site, certs):
    t = tether("--root", str(site), *tls_args(certs))
    assert t.schemes == ["https"]
    port = tls_port(t)
    for host in ("localhost", "127.0.0.1"):  # the certificate names both
        p = curl("--http1.1", "--cacert", certs.ca, "-w", "\n%{http_code} %{http_version} %{ssl_verify_result}",
                 "https://%s:%d/100.txt" % (host, port))
        assert p.returncode == 0, p.stderr
        body, _, info = p.stdout.rpartition(b"\n")
        assert body == body_of(site, "100.txt")
        assert info.decode().split() == ["200", "1.1", "0"]
    # a client that does not trust the CA refuses the certificate (so verification above meant something)
    p = curl("--http1.1", "https://localhost:%d/100.txt" % port)
    assert p.returncode != 0


def test_alpn_selects_h2_or_http11(tether, site, certs):
    t = tether("--root", str(site), *tls_args(certs))
    port = tls_port(t)
    url = "https://localhost:%d/index.html" % port
    p2 = curl("--http2", "--cacert", certs.ca, "-w", "\n%{http_version}", url)
    p1 = curl("--http1.1", "--cacert", certs.ca, "-w", "\n%{http_version}", url)
    assert p2.returncode == 0 and p1.returncode == 0, (p2.stderr, p1.stderr)
    b2, _, v2 = p2.stdout.rpartition(b"\n")
    b1, _, v1 = p1.stdout.rpartition(b"\n")
    assert (v2, v1) == (b"2", b"1.1")
    assert b2 == b1 == body_of(site, "index.html")
    s = TlsConn(certs, port, alpn=("h2", "http/1.1"))
    assert s.sock.selected_alpn_protocol() == "h2"
    s.close()
    lines = t.access_lines(wait_for=2)
    assert any('"GET /index.html HTTP/2.0" 200' in l for l in lines), lines
    assert any('"GET /index.html HTTP/1.1" 200' in l for l in lines), lines


def test_h2_off_makes_alpn_pick_http11(tether, site, certs, tls_conns):
    t = tether("--root", str(site), config=tls_listen_config(certs, extra="h2 = off"))
    port = tls_port(t)
    c = tls_conns(port, alpn=("h2", "http/1.1"))
    assert c.sock.selected_alpn_protocol() == "http/1.1"
    r = c.get("/100.txt", host="localhost")
    assert r.version == "HTTP/1.1" and r.status == 200 and r.body == body_of(site, "100.txt")
    p = curl("--http2", "--cacert", certs.ca, "-w", "\n%{http_version}", "https://localhost:%d/100.txt" % port)
    assert p.returncode == 0, p.stderr
    assert p.stdout.rpartition(b"\n")[2] == b"1.1"


# ---- versions ----

def test_tls_min_version_13_refuses_tls12(tether, site, certs):
    t = tether("--root", str(site), config=tls_listen_config(certs, extra="tls_min_version = 1.3"))
    port = tls_port(t)
    rc, out = s_client(port, "-tls1_2", "-servername", "localhost")
    assert rc != 0 and "New, TLSv1.2" not in out, out[-2000:]
    rc, out = s_client(port, "-tls1_3", "-servername", "localhost", "-CAfile", certs.ca, "-verify_return_error")
    assert rc == 0 and "New, TLSv1.3" in out, out[-2000:]
    assert "Verify return code: 0 (ok)" in out
    with pytest.raises(ssl.SSLError):
        TlsConn(certs, port, max_version=ssl.TLSVersion.TLSv1_2)
    t.wait_metric("tether_tls_handshake_failures_total", lambda v: v == 2)
    t.wait_metric("tether_connections_closed_total", lambda v: v == 2, reason="tls_error")
    assert t.metric("tether_tls_handshakes_total", kind="full") == 1


def test_tls12_accepted_by_default(tether, site, certs, tls_conns):
    t = tether("--root", str(site), *tls_args(certs))
    c = tls_conns(tls_port(t), max_version=ssl.TLSVersion.TLSv1_2)
    assert c.sock.version() == "TLSv1.2"
    assert c.get("/100.txt", host="localhost").status == 200


# ---- SNI ----

def test_sni_picks_the_certificate_naming_the_host(tether, site, certs, tls_conns):
    cfg = tls_listen_config(certs, pairs=[(certs.main.cert, certs.main.key), (certs.other.cert, certs.other.key)])
    t = tether("--root", str(site), config=cfg)
    port = tls_port(t)
    assert peer_cert_fields(port, "other.test") == ("other.test", certs.other.serial)
    assert peer_cert_fields(port, "localhost") == ("localhost", certs.main.serial)
    assert peer_cert_fields(port, "unknown.example") == ("localhost", certs.main.serial)  # the first is the default
    assert peer_cert_fields(port, None) == ("localhost", certs.main.serial)
    # a verifying client for each name gets a certificate it accepts, and a response
    for name, leaf in (("other.test", certs.other), ("localhost", certs.main)):
        c = tls_conns(port, server_name=name)
        assert c.peer() == (leaf.cn, leaf.serial)
        assert c.get("/100.txt", host=name).status == 200


# ---- resumption ----

@pytest.mark.multiworker
@pytest.mark.parametrize("tickets,cache", [("on", 20000), ("off", 20000), ("off", 0)],
                         ids=["tickets", "session_cache", "neither"])
def test_tls12_resumption_with_reconnect(tether, site, certs, tickets, cache):
    # tickets off: resumption by session id from the per-worker cache, so one worker
    t = tether("--root", str(site), "--workers", "1" if tickets == "off" else "2",
               config=tls_listen_config(certs, tls_section="tickets = %s\nsession_cache = %d" % (tickets, cache)))
    port = tls_port(t)
    rc, out = s_client(port, "-reconnect", "-tls1_2", "-servername", "localhost")
    assert rc == 0, out[-2000:]
    new = out.count("New, TLSv1.2")
    reused = out.count("Reused, TLSv1.2")
    if tickets == "off" and cache == 0:
        assert reused == 0 and new >= 5, out[-3000:]  # nothing to resume with
        t.wait_metric("tether_tls_handshakes_total", lambda v: v == new, kind="full")
        assert t.metric("tether_tls_handshakes_total", kind="resumed") == 0
        return
    assert new == 1 and reused >= 4, out[-3000:]
    v = t.wait_metric("tether_tls_handshakes_total", lambda v: v >= reused, kind="resumed")
    assert v == reused
    assert t.metric("tether_tls_handshakes_total", kind="full") == new


@pytest.mark.multiworker
def test_tls13_resumption_with_session_file(tether, site, certs, tmp_path):
    t = tether("--root", str(site), "--workers", "2", *tls_args(certs))
    port = tls_port(t)
    sess = str(tmp_path / "sess.pem")
    req = b"GET /100.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    rc, out = s_client(port, "-tls1_3", "-servername", "localhost", "-sess_out", sess, "-ign_eof", stdin=req)
    assert rc == 0 and "New, TLSv1.3" in out and "200 OK" in out, out[-2000:]
    assert os.path.getsize(sess) > 0
    for _ in range(3):  # several connections: stateless tickets work on either worker
        rc, out = s_client(port, "-tls1_3", "-servername", "localhost", "-sess_in", sess, "-ign_eof", stdin=req)
        assert rc == 0 and "Reused, TLSv1.3" in out and "200 OK" in out, out[-2000:]
    t.wait_metric("tether_tls_handshakes_total", lambda v: v == 3, kind="resumed")
    assert t.metric("tether_tls_handshakes_total", kind="full") == 1


# ---- SIGHUP: certificate reload ----

def install(src_leaf, cert_path, key_path, cert=True, key=True):
    """Atomically replaces the live cert/key files with src_leaf's."""
    for want, src, dst in ((cert, src_leaf.cert, cert_path), (key, src_leaf.key, key_path)):
        if want:
            shutil.copyfile(src, dst + ".tmp")
            os.replace(dst + ".tmp", dst)


def wait_stderr(t, needle, timeout=5):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        if needle in t.stderr():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.multiworker
def test_sighup_swaps_the_certificate_for_new_connections_only(tether, site, certs, tls_conns, tmp_path):
    live_cert, live_key = str(tmp_path / "live.pem"), str(tmp_path / "live.key")
    install(certs.main, live_cert, live_key)
    t = tether("--root", str(site), "--idle-timeout", "30s", "--workers", "2", "--tls-listen", "127.0.0.1:0",
               "--tls-cert", live_cert, "--tls-key", live_key)
    port = tls_port(t)
    old = tls_conns(port)
    assert old.peer() == ("localhost", certs.main.serial)
    assert old.get("/100.txt", host="localhost").status == 200

    install(certs.new, live_cert, live_key)
    t.send_signal(signal.SIGHUP)
    assert wait_stderr(t, "reloaded the certificates of 1 of 1"), t.stderr()
    # every new connection (whichever worker takes it) now gets the new certificate
    for _ in range(6):
        c = tls_conns(port)
        assert c.peer() == ("localhost-new", certs.new.serial)
        assert c.get("/100.txt", host="localhost").status == 200
        c.close()
    assert peer_cert_fields(port, "localhost") == ("localhost-new", certs.new.serial)
    # the connection opened before keeps working, with its certificate
    r = old.get("/4k.bin", host="localhost")
    assert r.status == 200 and r.body == body_of(site, "4k.bin")
    assert old.peer() == ("localhost", certs.main.serial)
    assert t.metric("tether_connections_closed_total", reason="tls_error") == 0


@pytest.mark.multiworker
@pytest.mark.parametrize("bad", ["garbage_cert", "garbage_key", "mismatched_key", "missing_cert"])
def test_sighup_with_a_bad_file_keeps_the_old_certificate(tether, site, certs, tls_conns, tmp_path, bad):
    live_cert, live_key = str(tmp_path / "live.pem"), str(tmp_path / "live.key")
    install(certs.main, live_cert, live_key)
    t = tether("--root", str(site), "--idle-timeout", "30s", "--workers", "2", "--tls-listen", "127.0.0.1:0",
               "--tls-cert", live_cert, "--tls-key", live_key)
    port = tls_port(t)
    old = tls_conns(port)
    assert old.get("/100.txt", host="localhost").status == 200

    if bad == "garbage_cert":
        with open(live_cert, "wb") as f:
            f.write(b"this is not a certificate\n" + os.urandom(64))
    elif bad == "garbage_key":
        with open(live_key, "wb") as f:
            f.write(b"-----BEGIN PRIVATE KEY-----\nbm9wZQ==\n-----END PRIVATE KEY-----\n")
    elif bad == "mismatched_key":
        install(certs.new, live_cert, live_key, key=False)  # new certificate, old key
    else:
        os.unlink(live_cert)
    t.send_signal(signal.SIGHUP)
    assert wait_stderr(t, "reloaded the certificates of 0 of 1"), t.stderr()
    errs = [l for l in t.stderr_lines if "certificates not reloaded" in l]
    assert len(errs) == 1, t.stderr()
    assert live_cert in errs[0] or live_key in errs[0], errs
    # new connections still get the old certificate, the open one keeps working, nothing was closed
    for _ in range(4):
        c = tls_conns(port)
        assert c.peer() == ("localhost", certs.main.serial)
        assert c.get("/100.txt", host="localhost").status == 200
        c.close()
    r = old.get("/100.txt", host="localhost")
    assert r.status == 200
    assert t.metric("tether_connections_closed_total", reason="tls_error") == 0
    assert t.metric("tether_tls_handshake_failures_total") == 0

    # repaired files load on the next SIGHUP
    install(certs.new, live_cert, live_key)
    t.send_signal(signal.SIGHUP)
    assert wait_stderr(t, "reloaded the certificates of 1 of 1"), t.stderr()
    c = tls_conns(port)
    assert c.peer() == ("localhost-new", certs.new.serial)


# ---- bad and abandoned handshakes ----

def client_hello(certs):
    """The bytes of a real ClientHello (from an in-memory handshake)."""
    ctx = client_context(certs, alpn=("http/1.1",))
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    data = out.read()
    assert data[0] == 0x16 and len(data) > 100
    return data


def read_until_closed(sock, timeout):
    """Seconds until the server closed this raw socket (FIN or RST), None on timeout; and what it sent."""
    start = time.monotonic()
    sock.settimeout(timeout)
    got = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return time.monotonic() - start, got
            got += chunk
    except socket.timeout:
        return None, got
    except (ConnectionResetError, BrokenPipeError):
        return time.monotonic() - start, got


@pytest.mark.parametrize("what", ["plain_http", "garbage", "half_client_hello", "nothing"])
def test_bad_or_abandoned_handshake_closes_that_connection_only(tether, site, certs, tls_conns, what):
    abandoned = what in ("half_client_hello", "nothing")
    # An abandoned handshake is cut at the 1 s header timeout; bad bytes at once, which a 10 s header timeout
    # tells apart from "at the header timeout" with room for a busy machine.
    t = tether("--root", str(site), "--header-timeout", "1s" if abandoned else "10s", "--idle-timeout", "30s",
               *tls_args(certs))
    port = tls_port(t)
    good = tls_conns(port)
    assert good.get("/100.txt", host="localhost").status == 200
    start = time.monotonic()  # before the connect: the header clock cannot start earlier
    bad = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        if what == "plain_http":
            bad.sendall(b"GET /100.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        elif what == "garbage":
            bad.sendall(b"\x00\x01\x02\x03 this is not TLS \xff\xfe" * 40)
        elif what == "half_client_hello":
            hello = client_hello(certs)
            bad.sendall(hello[:len(hello) // 2])
        took, got = read_until_closed(bad, 6 * SLOW)
        took = None if took is None else time.monotonic() - start
    finally:
        bad.close()
    assert took is not None, "the server did not close the %s connection" % what
    assert b"HTTP/1.1" not in got  # never answered in plain text
    if abandoned:
        assert 0.95 <= took < 1.0 + 1.5 * SLOW, "abandoned handshake closed after %.2fs (header timeout 1s)" % took
    else:
        assert took < 1.0 + 1.0 * SLOW, "bad TLS bytes: closed only after %.2fs (header timeout 10 s)" % took
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="tls_error")
    t.wait_metric("tether_tls_handshake_failures_total", lambda v: v == 1)
    assert t.metric("tether_connections_closed_total", reason="header_timeout") == 0
    # the other connection is untouched
    r = good.get("/4k.bin", host="localhost")
    assert r.status == 200 and r.body == body_of(site, "4k.bin")
    t.wait_metric("tether_connections_open", lambda v: v == 1)  # (one step after the close is counted)


# ---- keep-alive rules over TLS ----

def test_keepalive_header_and_max_requests_over_tls(tether, site, certs, tls_conns):
    t = tether("--root", str(site), "--idle-timeout", "7s", "--max-requests", "3", *tls_args(certs))
    c = tls_conns(tls_port(t))
    r1 = c.get("/100.txt", host="localhost")
    r2 = c.get("/100.txt", host="localhost")
    assert r1.keep_alive() == {"timeout": 7, "max": 2}, r1
    assert r2.keep_alive() == {"timeout": 7, "max": 1}, r2
    r3 = c.get("/100.txt", host="localhost")
    assert r3.status == 200 and r3.body == body_of(site, "100.txt")
    assert (r3.header("Connection") or "").lower() == "close" and r3.keep_alive() is None
    took, how = c.wait_closed_tls(3)
    assert took is not None and took < 2 * SLOW, took  # after the last response, not at the 7 s idle timeout
    assert how == "close_notify", how
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="max_requests")
    lines = t.access_lines(wait_for=3)
    assert [l.split()[-1] for l in lines] == ["keep", "keep", "max_requests"], lines


def test_idle_timeout_over_tls_closes_with_close_notify(tether, site, certs, tls_conns):
    t = tether("--root", str(site), "--idle-timeout", "1s", *tls_args(certs))
    c = tls_conns(tls_port(t))
    start = time.monotonic()  # before the request: the idle clock cannot start earlier
    r = c.get("/100.txt", host="localhost")
    assert r.keep_alive()["timeout"] == 1
    took, how = c.wait_closed_tls(5)
    assert took is not None, "not closed after the idle timeout"
    took = time.monotonic() - start
    assert 0.95 <= took < 1.0 + 1.5 * SLOW, took
    assert how == "close_notify", how
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="idle_timeout")


def test_connection_close_over_tls(tether, site, certs, tls_conns):
    t = tether("--root", str(site), "--idle-timeout", "30s", *tls_args(certs))
    c = tls_conns(tls_port(t))
    r = c.get("/100.txt", host="localhost", headers={"Connection": "close"})
    assert r.status == 200 and (r.header("Connection") or "").lower() == "close"
    took, how = c.wait_closed_tls(3)
    assert took is not None and how == "close_notify", (took, how)
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="client_close")


def test_pipelined_requests_over_tls(tether, site, certs, tls_conns):
    t = tether("--root", str(site), "--idle-timeout", "30s", *tls_args(certs))
    c = tls_conns(tls_port(t))
    paths = ["/100.txt", "/4k.bin", "/style.css", "/index.html", "/big.bin", "/100.txt"]
    c.send(b"".join(b"GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % p.encode() for p in paths))
    for p in paths:
        r = c.response()
        assert r.status == 200 and r.body == body_of(site, p), p
    lines = t.access_lines(wait_for=len(paths))
    # (a file sent in pieces is logged when its send finishes, so lines need not be in request order)
    reqs = sorted(int(l.split("req=")[1].split()[0]) for l in lines)
    assert reqs == list(range(1, len(paths) + 1)), lines
    assert len({l.split("conn=")[1].split()[0] for l in lines}) == 1, lines


def test_large_file_over_tls(tether, site, certs, tls_conns):
    # big.bin is above the in-memory size: on cleartext it would go by sendfile(2)
    t = tether("--root", str(site), *tls_args(certs))
    c = tls_conns(tls_port(t))
    r = c.get("/big.bin", host="localhost")
    assert r.status == 200 and r.body == body_of(site, "big.bin")
    lines = t.access_lines(wait_for=1)
    assert int(lines[0].split('"')[2].split()[1]) >= len(r.body), lines


def test_drain_closes_idle_tls_connection_with_close_notify(tether, site, certs, tls_conns):
    t = tether("--root", str(site), "--idle-timeout", "30s", *tls_args(certs))
    c = tls_conns(tls_port(t))
    assert c.get("/100.txt", host="localhost").status == 200
    t.send_signal(signal.SIGTERM)
    took, how = c.wait_closed_tls(5)
    assert took is not None and how == "close_notify", (took, how)
    assert t.proc.wait(10 * SLOW) == 0


@pytest.mark.parametrize("how", ["close_notify", "fin_only"])
def test_client_closing_an_idle_tls_connection_is_client_close(tether, site, certs, tls_conns, how):
    # A client may end an idle TLS connection with close_notify or just with FIN (Python's ssl, curl, most
    # browsers): either is the client closing its side, not a TLS error (docs: tls_error is a failed or
    # abandoned handshake, or invalid records).
    t = tether("--root", str(site), "--idle-timeout", "30s", *tls_args(certs))
    c = tls_conns(tls_port(t))
    assert c.get("/100.txt", host="localhost").status == 200
    if how == "close_notify":
        c.close()
    else:
        c.close_bare()
    t.wait_metric("tether_connections_open", lambda v: v == 0)
    closed = {k: v for k, v in t.metrics().items() if k.startswith("tether_connections_closed_total") and v}
    assert closed == {'tether_connections_closed_total{reason="client_close"}': 1.0}, closed
    assert t.metric("tether_tls_handshake_failures_total") == 0


def test_curl_over_tls_closes_as_client_close(tether, site, certs):
    t = tether("--root", str(site), *tls_args(certs))
    for flag in ("--http1.1", "--http2"):
        p = curl(flag, "--cacert", certs.ca, "https://localhost:%d/100.txt" % tls_port(t))
        assert p.returncode == 0, p.stderr
    t.wait_metric("tether_connections_open", lambda v: v == 0)
    t.wait_metric("tether_connections_closed_total", lambda v: v == 2, reason="client_close")
    assert t.metric("tether_connections_closed_total", reason="tls_error") == 0


# ---- metrics ----

def test_open_by_gauge_for_tls_connections(tether, site, certs, tls_conns):
    t = tether("--root", str(site), "--idle-timeout", "30s", *tls_args(certs))
    port = tls_port(t)
    c1 = tls_conns(port)
    assert c1.get("/100.txt", host="localhost").status == 200
    t.wait_metric("tether_connections_open_by", lambda v: v == 1, protocol="h1", transport="tls")
    c2 = tls_conns(port, alpn=("h2",))
    assert c2.sock.selected_alpn_protocol() == "h2"
    t.wait_metric("tether_connections_open_by", lambda v: v == 1, protocol="h2", transport="tls")
    assert t.metric("tether_connections_open_by", protocol="h1", transport="tls") == 1
    assert t.metric("tether_connections_open_by", protocol="h1", transport="tcp") == 0
    assert t.metric("tether_connections_open_by", protocol="h2", transport="tcp") == 0
    c1.close()
    c2.close()
    t.wait_metric("tether_connections_open_by", lambda v: v == 0, protocol="h1", transport="tls")
    t.wait_metric("tether_connections_open_by", lambda v: v == 0, protocol="h2", transport="tls")
    assert t.metric("tether_tls_handshakes_total", kind="full") == 2
