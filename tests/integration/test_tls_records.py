"""TLS reads: one socket read may hold many TLS records, and an edge-triggered reader must consume them all.

SSL_read returns at most one record, so a short read over TLS does not mean the socket is empty. These tests
send requests as many small records in a row (one record per send) and expect every answer promptly;
without the fix the server waited for an edge that never came and answered one or two.
"""

import socket
import ssl
import subprocess
import time


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
    data = read_responses(s, 50, 5)
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
