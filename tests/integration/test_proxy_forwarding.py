"""Reverse proxy: what is forwarded (RFC 9110 7.6) and how bodies stream.

Request fields the origin must and must not receive (Via, X-Forwarded-*, Forwarded, Host, hop-by-hop
fields and the ones the client's Connection field names), response fields the client must and must not
receive, path/query and routing, bodies both ways (Content-Length, chunked with trailers,
close-delimited re-framed for HTTP/1.1 and kept close-delimited for HTTP/1.0), memory bounded by
backpressure (1 GiB through, a slow reader, a slow origin), Expect: 100-continue, HEAD/204/304, and
nginx as a real origin.
"""

import hashlib
import os
import socket
import threading
import time
import urllib.parse

import pytest

from conftest import SLOW
from proxy_util import (PatternChecker, RssSampler, addr, clean_tether, echo, field_values, origins,  # noqa: F401
                        pattern, procs, read_chunked, read_head, read_to_eof, slow_upload_server, start_nginx,
                        stream_read, stream_server, upstream_config, vm_rss_kib)

ASAN = SLOW > 1


@pytest.fixture
def proxy(clean_tether, origins):
    """A tether proxying every path to one fresh origin: returns (tether, origin)."""
    def start(*args, origin_kw=None, config=None):
        o = origins(**(origin_kw or {}))
        if config is None:
            t = clean_tether("--proxy", "http://" + addr(o), "--workers", "1", "--drain-timeout", "3s", *args)
        else:
            t = clean_tether("--workers", "1", "--drain-timeout", "3s", *args,
                             config=config.replace("ORIGIN", addr(o)))
        return t, o
    return start


# The client (127.0.0.1) as a trusted proxy: its forwarding fields are appended to, not replaced (issue 10).
TRUSTED = "[server]\ntrusted_proxies = 127.0.0.0/8\n" + upstream_config(["ORIGIN"])


def get_echo(t, conns, path="/", headers=None, host="t", **kw):
    c = conns(t)
    c.request("GET", path, headers=headers, host=host, **kw)
    return echo(c.response())


# ---- request fields (RFC 9110 7.6) ----

def test_via_added_to_request(proxy, conns):
    t, o = proxy()
    e = get_echo(t, conns)
    assert field_values(e, "Via") == ["1.1 tether"]


def test_via_appended_to_existing_request_via(proxy, conns):
    t, o = proxy()
    e = get_echo(t, conns, headers={"Via": "1.0 edge, 1.1 lb"})
    assert field_values(e, "Via") == ["1.0 edge, 1.1 lb, 1.1 tether"]


def test_x_forwarded_for_added_and_appended(proxy, conns):
    """Appended to from a trusted peer; from any other, replaced (test_strict_proxy.py has the rest)."""
    t, o = proxy(config=TRUSTED)
    assert field_values(get_echo(t, conns), "X-Forwarded-For") == ["127.0.0.1"]
    e = get_echo(t, conns, headers={"X-Forwarded-For": "203.0.113.7, 198.51.100.2"})
    assert field_values(e, "X-Forwarded-For") == ["203.0.113.7, 198.51.100.2, 127.0.0.1"]
    t2, o2 = proxy()
    e = get_echo(t2, conns, headers={"X-Forwarded-For": "203.0.113.7, 198.51.100.2"})
    assert field_values(e, "X-Forwarded-For") == ["127.0.0.1"]


def test_multiple_x_forwarded_for_and_via_lines_are_all_kept(proxy, conns):
    """Several field lines of one name form one list (RFC 9110 5.3): every earlier hop must survive."""
    t, o = proxy(config=TRUSTED)
    c = conns(t)
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 198.51.100.2\r\n"
           b"Via: 1.0 edge\r\nVia: 1.1 lb\r\n\r\n")
    e = echo(c.response())
    assert field_values(e, "X-Forwarded-For") == ["203.0.113.7, 198.51.100.2, 127.0.0.1"]
    assert field_values(e, "Via") == ["1.0 edge, 1.1 lb, 1.1 tether"]


def test_long_forwarding_lists_are_kept_whole(proxy, conns):
    """A long X-Forwarded-For or Via (well within the request field limits) is appended to, never cut."""
    t, o = proxy(config=TRUSTED)
    xff = ", ".join("10.0.%d.%d" % (i // 200, i % 200 + 1) for i in range(100))
    via = ", ".join("1.1 hop%d" % i for i in range(80))
    e = get_echo(t, conns, headers={"X-Forwarded-For": xff, "Via": via})
    assert field_values(e, "X-Forwarded-For") == [xff + ", 127.0.0.1"]
    assert field_values(e, "Via") == [via + ", 1.1 tether"]


def test_x_forwarded_proto_and_host_and_host_unchanged(proxy, conns):
    t, o = proxy()
    e = get_echo(t, conns, host="www.example.test:8443")
    assert field_values(e, "Host") == ["www.example.test:8443"]
    assert field_values(e, "X-Forwarded-Proto") == ["http"]
    assert field_values(e, "X-Forwarded-Host") == ["www.example.test:8443"]


def test_http10_request_without_host_gets_one_upstream(proxy, conns):
    """tether speaks HTTP/1.1 upstream, where Host is mandatory (RFC 9112 3.2), even when its HTTP/1.0
    client sent none."""
    t, o = proxy()
    c = conns(t)
    c.request("GET", "/nohost", version="HTTP/1.0", host=None)
    e = echo(c.response())
    assert e["version"] == "HTTP/1.1"
    assert len(field_values(e, "Host")) == 1, e["headers"]


def test_host_replaced_with_upstream_host_key(proxy, conns):
    t, o = proxy(config=upstream_config(["ORIGIN"], host="backend.internal"))
    e = get_echo(t, conns, host="www.example.test")
    assert field_values(e, "Host") == ["backend.internal"]
    assert field_values(e, "X-Forwarded-Host") == ["www.example.test"]


def test_forwarded_only_when_configured(proxy, conns):
    t, o = proxy()
    assert field_values(get_echo(t, conns, host="www.example.test"), "Forwarded") == []
    t2, o2 = proxy(config=upstream_config(["ORIGIN"], forwarded="on"))
    e = get_echo(t2, conns, host="www.example.test")
    assert field_values(e, "Forwarded") == ['for=127.0.0.1;proto=http;host="www.example.test"']


def test_client_forwarding_fields_are_replaced_not_passed(proxy, conns):
    t, o = proxy(config=upstream_config(["ORIGIN"], forwarded="on"))
    e = get_echo(t, conns, host="real.test", headers={
        "X-Forwarded-Proto": "https", "X-Forwarded-Host": "spoofed.test",
        "Forwarded": 'for=198.51.100.9;proto=https;host="spoofed.test"'})
    assert field_values(e, "X-Forwarded-Proto") == ["http"]
    assert field_values(e, "X-Forwarded-Host") == ["real.test"]
    assert field_values(e, "Forwarded") == ['for=127.0.0.1;proto=http;host="real.test"']


def test_hop_by_hop_request_fields_not_forwarded(proxy, conns):
    t, o = proxy()
    e = get_echo(t, conns, headers={
        "Connection": "keep-alive", "Keep-Alive": "timeout=30", "Proxy-Connection": "keep-alive",
        "TE": "trailers", "Trailer": "X-Checksum", "Upgrade": "h2c", "X-End-To-End": "kept"})
    names = {k.lower() for k, _ in e["headers"]}
    for hop in ("connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"):
        assert hop not in names, e["headers"]
    assert field_values(e, "X-End-To-End") == ["kept"]


def test_fields_named_by_connection_not_forwarded(proxy, conns):
    t, o = proxy()
    c = conns(t)
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: X-Foo, keep-alive\r\nconnection: x-BAR\r\n"
           b"X-Foo: 1\r\nX-Bar: 2\r\nX-Foobar: 3\r\nX-Baz: 4\r\n\r\n")
    e = echo(c.response())
    names = {k.lower() for k, _ in e["headers"]}
    assert "x-foo" not in names and "x-bar" not in names, e["headers"]
    assert field_values(e, "X-Foobar") == ["3"]  # only whole names match
    assert field_values(e, "X-Baz") == ["4"]


# ---- response fields ----

def q(**kw):
    items = []
    for k, v in kw.items():
        for one in (v if isinstance(v, list) else [v]):
            items.append((k, one))
    return "/?" + urllib.parse.urlencode(items)


def test_hop_by_hop_response_fields_removed(proxy, conns):
    t, o = proxy()
    c = conns(t)
    r = c.get(q(hdr=["Connection: X-Secret", "X-Secret: 1", "Keep-Alive: timeout=99, max=7",
                     "TE: trailers", "Trailer: X-Checksum", "Upgrade: h2c", "Proxy-Connection: keep-alive",
                     "X-Visible: 2"]))
    assert r.status == 200, r
    assert r.header("X-Secret") is None
    assert r.header("X-Visible") == "2"
    assert r.header("TE") is None and r.header("Trailer") is None and r.header("Upgrade") is None
    assert r.header("Proxy-Connection") is None
    assert "X-Secret" not in (r.header("Connection") or "")
    ka = r.header_all("Keep-Alive")
    assert all("timeout=99" not in v and "max=7" not in v for v in ka), ka  # only tether's own
    # the connection to the client is still tether's to manage
    assert c.get("/").status == 200


def test_response_transfer_encoding_is_tethers_own(proxy, conns):
    t, o = proxy()
    c = conns(t)
    c.request("GET", q(size=1000, framing="chunked"))
    r = read_head(c)
    assert r.header_all("Transfer-Encoding") == ["chunked"], r
    body, trailers = read_chunked(c)
    assert body == pattern(1000)


def test_origin_date_and_server_replaced(proxy, conns):
    t, o = proxy()
    r = conns(t).get(q(hdr=["Server: origin-httpd/0.1", "Date: Mon, 01 Jan 2001 00:00:00 GMT"]))
    assert r.header_all("Server") == ["tether"], r
    dates = r.header_all("Date")
    assert len(dates) == 1 and "2001" not in dates[0], r


def test_via_added_and_end_to_end_response_fields_pass(proxy, conns):
    t, o = proxy()
    r = conns(t).get(q(hdr=["X-Custom: abc", "Cache-Control: no-store", "Set-Cookie: a=1", "Set-Cookie: b=2",
                            "ETag: \"v1\""]))
    assert r.header("X-Custom") == "abc"
    assert r.header("Cache-Control") == "no-store"
    assert r.header_all("Set-Cookie") == ["a=1", "b=2"]
    assert r.header("ETag") == '"v1"'
    assert r.header_all("Content-Type") == ["application/json"]
    assert "1.1 tether" in ", ".join(r.header_all("Via")), r


def test_response_via_appended_to_origin_via(proxy, conns):
    t, o = proxy()
    r = conns(t).get(q(hdr=["Via: 1.1 cache"]))
    assert ", ".join(r.header_all("Via")) == "1.1 cache, 1.1 tether", r


# ---- targets and routes ----

def test_path_and_query_pass_unchanged(proxy, conns):
    """The query passes as sent; the path in its normal form (issue 10, docs/security.md): an encoded unreserved
    character is decoded ("%7E" is "~", RFC 3986 6.2.2.2), every other byte and escape stays as sent."""
    t, o = proxy()
    target = "/a/b%20c/%2Fd;p=1/%7Euser/x.y?q=1&r=%41%2B&&empty=&plus=a+b&u=%E2%82%AC"
    assert get_echo(t, conns, target)["target"] == target.replace("%7E", "~", 1)
    assert get_echo(t, conns, "/only/path")["target"] == "/only/path"
    assert get_echo(t, conns, "/a/b%20c/%2Fd;p=1/~user/x.y?q=%7E")["target"] == "/a/b%20c/%2Fd;p=1/~user/x.y?q=%7E"


def test_routes_longest_prefix_wins(clean_tether, origins, conns):
    api, v2, other = origins(), origins(), origins()
    t = clean_tether("--route", "/api/=http://" + addr(api), "--route", "/api/v2/=http://" + addr(v2),
                     "--route", "/=http://" + addr(other), "--workers", "1")
    assert get_echo(t, conns, "/api/v2/users?id=1")["target"] == "/api/v2/users?id=1"
    assert (api.stats["requests"], v2.stats["requests"], other.stats["requests"]) == (0, 1, 0)
    assert get_echo(t, conns, "/api/v1/users")["target"] == "/api/v1/users"
    assert (api.stats["requests"], v2.stats["requests"], other.stats["requests"]) == (1, 1, 0)
    assert get_echo(t, conns, "/apiary")["target"] == "/apiary"
    assert (api.stats["requests"], v2.stats["requests"], other.stats["requests"]) == (1, 1, 1)


def test_static_root_serves_paths_no_route_claims(clean_tether, origins, conns, site):
    o = origins()
    config = upstream_config([addr(o)], route="/api/") + "\n[static]\nroot = %s\n" % site
    t = clean_tether("--workers", "1", config=config)
    c = conns(t)
    r = c.get("/index.html")
    assert r.status == 200 and r.body == b"<!doctype html><h1>index</h1>\n"
    assert r.header("Via") is None
    assert echo(c.get("/api/items?x=1"))["target"] == "/api/items?x=1"
    assert c.get("/100.txt").body == b"x" * 99 + b"\n"
    assert o.stats["requests"] == 1


# ---- bodies ----

def test_content_length_upload_5mib(proxy, conns):
    t, o = proxy(config=upstream_config(["ORIGIN"]) + "\n[limits]\nmax_body_size = 16m\n")
    body = os.urandom(5 * 1024 * 1024)
    c = conns(t, timeout=30)
    c.request("PUT", "/upload", body=body)
    e = echo(c.response())
    assert e["method"] == "PUT"
    assert e["body_len"] == len(body)
    assert e["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert field_values(e, "Content-Length") == [str(len(body))]
    assert field_values(e, "Transfer-Encoding") == []


def test_chunked_upload_with_trailers(proxy, conns):
    t, o = proxy()
    parts = [os.urandom(n) for n in (1, 4096, 70000, 333)]
    wire = b"".join(b"%x;ext=1\r\n" % len(p) + p + b"\r\n" for p in parts)
    c = conns(t)
    c.send(b"POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n" + wire +
           b"0\r\nX-Checksum: abc123\r\n\r\n")
    e = echo(c.response())
    body = b"".join(parts)
    assert e["body_len"] == len(body)
    assert e["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert field_values(e, "Transfer-Encoding") == ["chunked"]
    assert field_values(e, "Content-Length") == []
    assert e["trailers"] == ["X-Checksum: abc123"]
    assert c.get("/").status == 200  # the client connection is still in step


def test_chunked_response_trailers_reach_client(proxy, conns):
    t, o = proxy()
    c = conns(t)
    c.request("GET", q(size=50000, framing="chunked", trailers=1))
    r = read_head(c)
    assert r.status == 200 and r.header("Transfer-Encoding") == "chunked", r
    body, trailers = read_chunked(c)
    assert body == pattern(50000)
    assert trailers == ["X-Trailer: done"]
    assert c.get("/").status == 200


def test_content_length_response_passes(proxy, conns):
    t, o = proxy()
    c = conns(t)
    r = c.get(q(size=123457))
    assert r.header_all("Content-Length") == ["123457"], r
    assert r.header("Transfer-Encoding") is None
    assert r.body == pattern(123457)


@pytest.mark.parametrize("version,headers", [("HTTP/1.1", {"Connection": "close"}), ("HTTP/1.0", {})],
                         ids=["http11-connection-close", "http10"])
def test_response_complete_when_client_connection_closes_after_it(proxy, conns, version, headers):
    """A client connection that ends after this response (Connection: close, HTTP/1.0) still gets all of
    a streamed response before the close."""
    t, o = proxy()
    c = conns(t)
    c.request("GET", q(size=300000), version=version, headers=headers)
    r = read_head(c)
    assert r.header("Content-Length") == "300000", r
    data, closed = read_to_eof(c)
    assert closed
    assert len(data) == 300000 and data == pattern(300000)


def test_close_delimited_response_chunked_to_http11_client_and_persistent(proxy, conns):
    t, o = proxy()
    c = conns(t)
    c.request("GET", q(size=70000, framing="close"))
    r = read_head(c)
    assert r.header("Transfer-Encoding") == "chunked", r
    assert r.header("Content-Length") is None
    assert (r.header("Connection") or "").lower() != "close"
    body, _ = read_chunked(c)
    assert body == pattern(70000)
    assert c.is_open(0.2)
    assert echo(c.get("/second"))["target"] == "/second"


def test_close_delimited_response_ends_after_backpressure(proxy, conns):
    """The origin's FIN arrives while tether is paused by a slow client: once the client catches up, the
    end of the content must still be seen (the last chunk sent), not lost with the last short read."""
    t, o = proxy()
    c = conns(t)
    n = 2000000  # more than the socket buffers hold: tether must pause reading the origin
    c.request("GET", q(size=n, framing="close"))
    time.sleep(0.5)
    r = read_head(c)
    assert r.header("Transfer-Encoding") == "chunked", r
    body, _ = read_chunked(c)
    assert body == pattern(n)
    assert echo(c.get("/after"))["target"] == "/after"


def test_close_delimited_response_stays_close_delimited_for_http10(proxy, conns):
    t, o = proxy()
    c = conns(t)
    c.request("GET", q(size=70000, framing="close"), version="HTTP/1.0")
    r = read_head(c)
    assert r.header("Transfer-Encoding") is None and r.header("Content-Length") is None, r
    data, closed = read_to_eof(c)
    assert closed
    assert data == pattern(70000)


def test_close_delimited_response_closes_http10_keepalive_client(proxy, conns):
    """An HTTP/1.0 client that asked for keep-alive cannot get chunked: the unknown length ends with a close."""
    t, o = proxy()
    c = conns(t)
    c.request("GET", q(size=70000, framing="close"), version="HTTP/1.0", headers={"Connection": "keep-alive"})
    r = read_head(c)
    assert r.header("Transfer-Encoding") is None and r.header("Content-Length") is None, r
    assert (r.header("Connection") or "").lower() != "keep-alive", r
    data, closed = read_to_eof(c)
    assert closed
    assert data == pattern(70000)


# ---- memory: backpressure ----

GIB = 1 << 30
RSS_LIMIT_KIB = 16 * 1024


@pytest.mark.skipif(ASAN, reason="sanitizer allocators keep freed memory in quarantine; RSS says nothing")
def test_1gib_response_streams_with_bounded_rss(clean_tether, conns):
    big = stream_server()
    try:
        t = clean_tether("--proxy", "http://127.0.0.1:%d" % big.port, "--workers", "1")
        c = conns(t, timeout=60)
        r = c.get("/?size=100000")  # warm up: buffers, pool, connection
        assert r.status == 200 and r.body == pattern(100000)
        base = vm_rss_kib(t.proc.pid)
        sampler = RssSampler(t.proc.pid)
        c.request("GET", "/?size=%d" % GIB)
        r = read_head(c)
        assert r.header("Content-Length") == str(GIB), r
        check = PatternChecker()
        stream_read(c, GIB, check.feed)
        peak = sampler.stop()
        assert check.ok and check.off == GIB
        assert peak - base < RSS_LIMIT_KIB, "RSS grew %d KiB (from %d KiB)" % (peak - base, base)
        assert c.get("/?size=10").body == b"0123456789"  # the connection is still in step
    finally:
        big.stop()


@pytest.mark.skipif(ASAN, reason="sanitizer allocators keep freed memory in quarantine; RSS says nothing")
def test_slow_reader_does_not_grow_rss(clean_tether, conns):
    big = stream_server()
    try:
        t = clean_tether("--proxy", "http://127.0.0.1:%d" % big.port, "--workers", "1")
        c = conns(t, timeout=30)
        assert c.get("/?size=100000").status == 200
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        base = vm_rss_kib(t.proc.pid)
        sampler = RssSampler(t.proc.pid)
        n = 256 * 1024 * 1024
        c.request("GET", "/?size=%d" % n)
        r = read_head(c)
        assert r.header("Content-Length") == str(n)
        check = PatternChecker()
        check.feed(c.buf)
        c.buf = b""
        end = time.monotonic() + 4
        while time.monotonic() < end:
            check.feed(c.sock.recv(16384))
            time.sleep(0.05)
        peak = sampler.stop()
        assert check.ok
        assert check.off < 64 * 1024 * 1024  # it really was slow
        assert peak - base < RSS_LIMIT_KIB, "RSS grew %d KiB while the client read %d bytes" % (peak - base,
                                                                                              check.off)
    finally:
        big.stop()


@pytest.mark.skipif(ASAN, reason="sanitizer allocators keep freed memory in quarantine; RSS says nothing")
def test_large_upload_to_slow_origin_bounded(clean_tether, conns):
    # slow for 6 s, sampled after 3 s: 3 s for a busy machine to start the upload late
    slow = slow_upload_server(read_pause=0.05, read_size=16384, slow_for=6.0)
    try:
        config = upstream_config(["127.0.0.1:%d" % slow.port]) + "\n[limits]\nmax_body_size = 1g\n"
        t = clean_tether("--workers", "1", config=config)
        n = 128 * 1024 * 1024
        block = os.urandom(1 << 20)
        c = conns(t, timeout=60)
        base = vm_rss_kib(t.proc.pid)
        sampler = RssSampler(t.proc.pid)
        sent = [0]

        def upload():
            c.send(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % n)
            for _ in range(n // len(block)):
                c.sock.sendall(block)
                sent[0] += len(block)

        th = threading.Thread(target=upload, daemon=True)
        th.start()
        time.sleep(3)
        sent_while_slow = sent[0]
        th.join(60 * SLOW)
        assert not th.is_alive()
        r = c.response()
        peak = sampler.stop()
        expect = hashlib.sha256(block * (n // len(block))).hexdigest()
        assert r.status == 200 and r.body == b"%d %s" % (n, expect.encode()), r
        assert sent_while_slow < 48 * 1024 * 1024, "tether kept reading the upload: %d bytes" % sent_while_slow
        assert peak - base < RSS_LIMIT_KIB, "RSS grew %d KiB" % (peak - base)
    finally:
        slow.stop()


# ---- Expect: 100-continue ----

def test_expect_100_continue(proxy, conns):
    t, o = proxy()
    body = os.urandom(20000)
    c = conns(t)
    c.send(b"POST /?continue=1 HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    interim = read_head(c, skip_1xx=False)
    assert interim.status == 100 and interim.version == "HTTP/1.1", interim
    c.send(body)
    r = c.response(skip_1xx=False)
    assert r.status == 200, r  # exactly one 100 Continue: the origin's is not passed on
    e = echo(r)
    assert e["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert field_values(e, "Expect") == []


# ---- HEAD, 204, 304 ----

def test_head_gets_content_length_without_body_and_pipelining_works(proxy, conns):
    t, o = proxy()
    c = conns(t)
    c.send(b"HEAD /?size=5000 HTTP/1.1\r\nHost: t\r\n\r\nGET /?size=10 HTTP/1.1\r\nHost: t\r\n\r\n")
    r1 = c.response(method="HEAD")
    assert r1.status == 200 and r1.header("Content-Length") == "5000", r1
    assert r1.header("Transfer-Encoding") is None
    r2 = c.response()
    assert r2.status == 200 and r2.body == b"0123456789", r2


@pytest.mark.parametrize("status", [204, 304])
def test_no_content_status_keeps_connection_usable(proxy, conns, status):
    t, o = proxy()
    c = conns(t)
    c.send(("GET /?status=%d&hdr=ETag:%%22x%%22 HTTP/1.1\r\nHost: t\r\n\r\n" % status).encode() +
           b"GET /?size=10 HTTP/1.1\r\nHost: t\r\n\r\n")
    r1 = read_head(c)
    assert r1.status == status, r1
    assert r1.header("Transfer-Encoding") is None, r1
    assert r1.header("Content-Length") in (None, "0"), r1
    assert r1.header("ETag") == '"x"'
    r2 = c.response()
    assert r2.status == 200 and r2.body == b"0123456789", r2
    assert c.get("/").status == 200


# ---- nginx as a real origin ----

def test_nginx_origin_static_and_post_with_reuse(clean_tether, procs, conns):
    data = os.urandom(100000)
    port = start_nginx(procs, {"file.bin": data, "small.txt": b"hello\n"})
    up = "127.0.0.1:%d" % port
    t = clean_tether("--proxy", "http://" + up, "--workers", "1")
    c = conns(t)
    r = c.get("/file.bin")
    assert r.status == 200 and r.body == data, r
    assert r.header_all("Server") == ["tether"]
    r = c.get("/small.txt")
    assert r.status == 200 and r.body == b"hello\n"
    c.request("POST", "/post", body=os.urandom(30000))
    r = c.response()
    assert r.status == 200 and r.body == b"posted\n", r
    r = c.get("/missing")
    assert r.status == 404
    assert c.get("/small.txt").body == b"hello\n"
    assert t.metric("tether_upstream_requests_reused_total", upstream=up, server=up) >= 3
    assert t.metric("tether_upstream_connections_opened_total", upstream=up, server=up) == 1
