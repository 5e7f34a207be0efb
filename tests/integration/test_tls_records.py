"""TLS reads: one socket read may hold many TLS records, and an edge-triggered reader must consume them all.

SSL_read returns at most one record, so a short read over TLS does not mean the socket is empty. These tests
send requests as many small records in a row (one record per send) and expect every answer promptly;
without the fix the server waited for an edge that never came and answered one or two.
"""

import os
import socket
import ssl
import subprocess
import time

from conftest import SLOW


def make_cert(tmp_path):
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def tls_client(port):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5))


def read_responses(s, count, deadline_s):
    data = b""
    end = time.monotonic() + deadline_s
    s.settimeout(0.5)
    while data.count(b"HTTP/1.1 ") < count and time.monotonic() < end:
        try:
            chunk = s.recv(65536)
        except (socket.timeout, TimeoutError):
            continue
        if not chunk:
            break
        data += chunk
    return data


def test_pipelined_requests_in_separate_records_are_all_answered(tether, site, tmp_path):
    cert, key = make_cert(tmp_path)
    t = tether("--root", str(site), "--tls-listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key)
    s = tls_client(t.port)
    req = b"GET /100.txt HTTP/1.1\r\nHost: t\r\n\r\n"
    for _ in range(50):
        s.send(req)  # one TLS record each
    data = read_responses(s, 50, 5 * SLOW)
    s.close()
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 50


def test_request_content_in_many_records_is_read_to_the_end(tether, site, tmp_path):
    cert, key = make_cert(tmp_path)
    t = tether("--root", str(site), "--tls-listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key)
    s = tls_client(t.port)
    body = b"y" * 100
    s.send(b"POST /100.txt HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (len(body) * 200))
    for _ in range(200):
        s.send(body)  # 200 records of 100 bytes, then one more request behind them
    s.send(b"GET /100.txt HTTP/1.1\r\nHost: t\r\n\r\n")
    data = read_responses(s, 2, 5)
    s.close()
    assert data.count(b"HTTP/1.1 ") == 2, data[:400]
    assert data.rstrip().endswith(b"x" * 99), data[-200:]


def get_over(s):
    s.sendall(b"GET /100.txt HTTP/1.1\r\nHost: t\r\n\r\n")
    data = read_responses(s, 1, 5)
    while not data.endswith(b"x" * 99 + b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_tls13_sessions_resume_one_after_another(tether, site, tmp_path):
    """A TLS 1.3 client uses each ticket once (RFC 8446 C.4): a resumed handshake must bring a new ticket, or
    every other new connection pays a full handshake."""
    cert, key = make_cert(tmp_path)
    t = tether("--root", str(site), "--tls-listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    session, reused, ids = None, [], set()
    for _ in range(4):
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", t.port), timeout=5), session=session)
        assert get_over(s).startswith(b"HTTP/1.1 200 OK")  # the tickets arrive with the response
        reused.append(s.session_reused)
        session = s.session
        ids.add(session.id)  # a new ticket is a new session; without one the client holds the used ticket
        s.close()
    assert reused == [False, True, True, True]
    assert len(ids) == 4
    assert t.metric("tether_tls_handshakes_total", kind="resumed") == 3


def close_notify_right_after(port, request):
    """Handshake, then the request, close_notify and the TCP close leave together (as a load generator does
    when its run ends): tether reads all three before it writes its first response byte."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out)
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(out.read())
            inc.write(sock.recv(65536))
    sock.sendall(out.read())
    obj.write(request)
    try:
        obj.unwrap()
    except ssl.SSLWantReadError:
        pass
    sock.sendall(out.read())
    sock.close()


def test_peer_close_notify_while_writing_does_not_spin_the_worker(tether, site, tmp_path):
    """After the client's close_notify and close, tether's writes fail (EPIPE, which OpenSSL reports as the
    end of the stream): the connection must close. A write once returned 0 there, which the writer took for
    progress: the worker spun at 100 % CPU and served no one again."""
    cert, key = make_cert(tmp_path)
    t = tether("--root", str(site), "--tls-listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key,
               "--workers", "1")
    for _ in range(10):
        close_notify_right_after(t.port, b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    t.wait_metric("tether_connections_open", lambda v: v == 0, timeout=5)
    s = tls_client(t.port)  # the one worker must still answer, at once
    start = time.monotonic()
    assert get_over(s).startswith(b"HTTP/1.1 200 OK")
    assert time.monotonic() - start < 2 * SLOW  # a spinning worker would never answer
    s.close()
    c0 = cpu_seconds(t.proc.pid)
    time.sleep(1)
    assert cpu_seconds(t.proc.pid) - c0 < 0.5  # idle, not spinning


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
