"""Issue 10, the proxy side: what tether forwards (RFC 9110 7.6, 6.5.1; RFC 9113 8.2.3; RFC 7239), asserted on the
exact bytes a capture origin (hostile_origin.HostileOrigin) received.

Covers: Host always sent, whatever the client's Connection field names; absolute-form's authority as Host and
the path normalized; dot-segments resolved before routing (/api/../admin never reaches the /api/ upstream);
Forwarded quoted and escaped; HTTP/2 cookies joined; trailers filtered both ways (a Content-Length trailer from the
origin no longer breaks HTTP/2 clients: h2, curl and nghttp read the stream); an HTTP/2 request reaching the
origin whole only once its framing is final (content-length: 0 then DATA, or more DATA than announced, leave the
origin with an incomplete request it never runs); Via with the version received; X-Forwarded-For and X-Real-IP
replaced unless the peer is a trusted proxy; expose_cause = off; and nginx's forwarding of the same requests.
"""

import re
import subprocess
import time

import pytest

from conftest import SLOW, split_verdicts
from hostile_origin import hostile  # noqa: F401 (a fixture)
from proxy_util import (access_line_for, closed_port, generated, procs, raw_status, read_chunked,  # noqa: F401
                        read_head, start_nginx)
from tls_util import DATA, HEADERS, PROTOCOL_ERROR, curl, h2conns, plain_port, raw_h2  # noqa: F401


def wait_until(pred, timeout=5):
    deadline = time.monotonic() + timeout * SLOW
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


RID = re.compile(rb"X-Request-Id: [0-9a-f]{32}\r\n")


def rid(head):
    """`head` without the one X-Request-Id tether generated for it (test_logs.py checks the id itself)."""
    out, n = RID.subn(b"", head)
    assert n == 1, head
    return out


def forwarding_fields(authority, version="1.1 tether", peer="127.0.0.1"):
    """The fields tether adds for a client at 127.0.0.1 that is not a trusted proxy."""
    out = b"Via: %s\r\nX-Forwarded-For: %s\r\nX-Real-IP: %s\r\nX-Forwarded-Proto: http\r\n" % (
        version.encode(), peer.encode(), peer.encode())
    if authority:
        out += b"X-Forwarded-Host: " + authority + b"\r\n"
    return out


@pytest.fixture
def proxied(tether, hostile):
    """proxied(script=None, config_extra="", **upstream_keys) -> (tether, origin): every path to one HostileOrigin."""
    def start(script=None, server_extra="", routes=None, **keys):
        o = hostile(script)
        lines = ["[server]", server_extra, "[upstream o]", "server = %s" % o.name]
        lines += ["%s = %s" % kv for kv in keys.items()]
        for prefix, name in (routes or {"/": "o"}).items():
            lines += ["[route %s]" % prefix, "upstream = %s" % name]
        return tether("--workers", "1", config="\n".join(lines) + "\n"), o
    return start


def one_request(t, raw):
    c = t.connect()
    try:
        c.send(raw)
        return c.response()
    finally:
        c.close()


# ---- Host, absolute-form, Connection ----

def test_connection_naming_host_never_removes_it(proxied):
    """`Connection: Host` used to send the upstream an HTTP/1.1 request with no Host. The request is sent split at
    every byte too: the origin receives the same head each time."""
    t, o = proxied()
    raw = (b"GET /x HTTP/1.1\r\nHost: www.example.test\r\nConnection: Host, X-Drop\r\nX-Drop: 1\r\nX-Keep: 2\r\n"
           b"\r\n")
    got = split_verdicts(t, raw)
    assert set(v[0] for v in got.values()) == {200}, got
    want = (b"GET /x HTTP/1.1\r\nHost: www.example.test\r\nX-Keep: 2\r\n" + forwarding_fields(b"www.example.test")
            + b"\r\n")
    assert len(o.requests) == len(got)
    for r in o.requests:
        assert rid(r.head) == want, r.head


def test_absolute_form_authority_replaces_host(proxied):
    """RFC 9112 3.2.2: the target's authority is the request's; the origin gets origin-form and that Host."""
    t, o = proxied()
    raw = b"GET http://real.test:8080/a/../b?x=%7E HTTP/1.1\r\nHost: other.test\r\n\r\n"
    got = split_verdicts(t, raw)
    assert set(got.values()) == {(200, "", True, False)}, got
    want = b"GET /b?x=%7E HTTP/1.1\r\nHost: real.test:8080\r\n" + forwarding_fields(b"real.test:8080") + b"\r\n"
    assert [rid(r.head) for r in o.requests] == [want] * len(got)


def test_http10_without_host_names_the_server(proxied):
    t, o = proxied()
    assert one_request(t, b"GET /p HTTP/1.0\r\n\r\n").status == 200
    assert rid(o.requests[0].head) == (b"GET /p HTTP/1.1\r\nHost: %s\r\n" % o.name.encode()
                                  + forwarding_fields(b"", "1.0 tether") + b"\r\n")


# ---- dot-segments and routing ----

@pytest.fixture
def two_routes(tether, hostile):
    api, admin = hostile(), hostile()
    cfg = ("[upstream api]\nserver = %s\n[upstream admin]\nserver = %s\n[route /api/]\nupstream = api\n"
           "[route /]\nupstream = admin\n" % (api.name, admin.name))
    return tether("--workers", "1", config=cfg), api, admin


# `/api/../admin` is `/admin`: it never reaches the /api/ upstream; the upstream is sent the normalized path, the one
# routing decided on (nginx routes the same way but forwards the raw target).
@pytest.mark.parametrize("target,to,path", [
    (b"/api/../admin", "admin", b"/admin"),
    (b"/api/%2e%2e/admin?q", "admin", b"/admin?q"),
    (b"/api/./x/.%2E/y", "api", b"/api/y"),
    (b"/x/../api/y", "api", b"/api/y"),
    (b"/%61pi/y", "api", b"/api/y"),
    (b"/api/x/..", "api", b"/api/"),
])
def test_routing_follows_the_normalized_path(two_routes, target, to, path):
    t, api, admin = two_routes
    raw = b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    got = split_verdicts(t, raw)
    assert set(v[0] for v in got.values()) == {200}, got
    reached, other = (api, admin) if to == "api" else (admin, api)
    assert other.requests == []
    assert [r.head.split(b"\r\n", 1)[0] for r in reached.requests] == [b"GET " + path + b" HTTP/1.1"] * len(got)


@pytest.mark.parametrize("target", [b"/api/../../admin", b"/api/..%2fadmin", b"/api/..%5Cadmin", b"/api/..\\admin"])
def test_paths_that_climb_or_hide_a_dot_segment_are_refused(two_routes, target):
    t, api, admin = two_routes
    got = split_verdicts(t, b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    assert set(got.values()) == {(400, "close", False, True)}, got
    assert api.requests == [] and admin.requests == []


# ---- Forwarded, Via, X-Forwarded-For, X-Real-IP ----

def test_forwarded_is_quoted_and_a_host_cannot_inject_elements(proxied):
    t, o = proxied(forwarded="on")
    assert one_request(t, b"GET / HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n").status == 200
    assert b'\r\nForwarded: for=127.0.0.1;proto=http;host="[::1]:8443"\r\n' in o.requests[0].head
    # the injection of the issue is a bad Host: refused, nothing forwarded
    bad = b'GET / HTTP/1.1\r\nHost: a", for=6.6.6.6;proto=https;host="b\r\n\r\n'
    assert set(split_verdicts(t, bad).values()) == {(400, "close", False, True)}
    assert len(o.requests) == 1


def test_forwarding_fields_from_an_untrusted_peer_are_replaced(proxied):
    t, o = proxied(forwarded="on")
    claims = (b"GET / HTTP/1.1\r\nHost: h.test\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n"
              b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: spoof.test\r\nForwarded: for=6.6.6.6\r\n\r\n")
    assert one_request(t, claims).status == 200
    assert rid(o.requests[0].head) == (b"GET / HTTP/1.1\r\nHost: h.test\r\n" + forwarding_fields(b"h.test")
                                  + b'Forwarded: for=127.0.0.1;proto=http;host="h.test"\r\n\r\n')


def test_forwarding_fields_from_a_trusted_proxy_are_appended_to(proxied):
    t, o = proxied(forwarded="on", server_extra="trusted_proxies = 10.0.0.0/8, 127.0.0.1")
    claims = (b"GET / HTTP/1.1\r\nHost: h.test\r\nX-Forwarded-For: 203.0.113.9, 10.1.1.1\r\n"
              b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: www.test\r\nForwarded: for=203.0.113.9\r\n\r\n")
    assert one_request(t, claims).status == 200
    assert rid(o.requests[0].head) == (
        b"GET / HTTP/1.1\r\nHost: h.test\r\nVia: 1.1 tether\r\nX-Forwarded-For: 203.0.113.9, 10.1.1.1, 127.0.0.1\r\n"
        b"X-Real-IP: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: www.test\r\n"
        b'Forwarded: for=203.0.113.9, for=127.0.0.1;proto=http;host="h.test"\r\n\r\n')


def test_trusted_proxies_rejects_a_bad_block(tether):
    t = tether("--proxy", "http://127.0.0.1:9", config="[server]\ntrusted_proxies = 10.0.0.0/33\n", ready=False)
    assert t.proc.wait(10 * SLOW) == 2
    t.join_output()
    assert "tether.ini:2: trusted_proxies: an IPv4 prefix is at most /32" in t.stderr(), t.stderr()


def test_response_via_names_the_version_received(proxied):
    t, o = proxied(lambda req: [("send", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")])
    r = one_request(t, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert r.status == 200 and r.header_all("Via") == ["1.0 tether"], r


# ---- tether's own errors ----

def test_expose_cause_off_keeps_the_cause_in_metrics_and_log(tether):
    dead = closed_port()
    t = tether("--workers", "1", config="[upstream dead]\nserver = 127.0.0.1:%d\nexpose_cause = off\n"
               "[route /]\nupstream = dead\n" % dead)
    r = one_request(t, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert r.status == 502 and r.header("X-Tether-Cause") is None, r
    assert generated(t, "dead", "connect_refused") == 1
    assert "cause=connect_refused" in access_line_for(t, '"GET /x ')


def test_expose_cause_on_by_default(tether):
    t = tether("--proxy", "http://127.0.0.1:%d" % closed_port())
    r = one_request(t, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert r.status == 502 and r.header("X-Tether-Cause") == "connect_refused", r


# ---- chunked content through the proxy ----

def test_malformed_chunked_content_never_reaches_the_origin(proxied):
    t, o = proxied()
    raw = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"
    assert split_verdicts(t, raw, [])[0] == (400, "close", False, True)
    assert o.requests == []


# ---- trailers (RFC 9110 6.5.1) ----

def test_request_trailers_are_filtered(proxied):
    t, o = proxied()
    raw = (b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
           b"X-Checksum: 1\r\nContent-Length: 99\r\nHost: evil\r\nAuthorization: x\r\nTransfer-Encoding: gzip\r\n\r\n")
    assert one_request(t, raw).status == 200
    assert o.requests[0].content == b"5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n"


ORIGIN_TRAILERS = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
                   b"5\r\nhello\r\n0\r\nContent-Length: 99\r\nX-Trailer: done\r\nHost: evil\r\nSet-Cookie: s=1\r\n\r\n")


def test_response_trailers_are_filtered_for_http11_clients(proxied):
    t, o = proxied(lambda req: [("send", ORIGIN_TRAILERS)])
    c = t.connect()
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\nTE: trailers\r\n\r\n")
    r = read_head(c)
    assert r.status == 200 and r.header("Transfer-Encoding") == "chunked"
    assert read_chunked(c) == (b"hello", ["X-Trailer: done"])
    c.close()


def test_response_trailers_are_filtered_for_http2_clients(proxied, h2conns):
    """A Content-Length trailer used to reach HTTP/2 clients, and curl and nghttp failed the whole stream."""
    t, o = proxied(lambda req: [("send", ORIGIN_TRAILERS)])
    c = h2conns(plain_port(t))
    st = c.response(c.request("/t", headers=[("te", "trailers")]))
    assert st["headers"][":status"] == "200" and st["body"] == b"hello" and st["reset"] is None
    assert st["trailers"] == {"x-trailer": "done"}
    url = "http://127.0.0.1:%d/t" % plain_port(t)
    p = curl("--http2-prior-knowledge", url)
    assert p.returncode == 0 and p.stdout == b"hello", p.stderr
    p = subprocess.run(["nghttp", "-n", "-s", url], capture_output=True, timeout=30 * SLOW)
    assert p.returncode == 0, p.stderr


def test_http2_request_trailers_are_filtered(proxied, h2conns):
    t, o = proxied()
    c = h2conns(plain_port(t))
    sid = c.request("/up", method="POST", body=b"hello", end=False)
    c.h2.send_headers(sid, [("x-checksum", "1"), ("content-type", "x"), ("authorization", "y")], end_stream=True)
    c.flush()
    assert c.response(sid)["headers"][":status"] == "200"
    assert o.requests[0].content == b"5\r\nhello\r\n0\r\nx-checksum: 1\r\n\r\n"


# ---- HTTP/2 requests: forwarded whole only once the framing is final ----

def test_http2_cookies_are_joined_and_via_says_2(proxied, raw_h2):
    t, o = proxied()
    c = raw_h2(plain_port(t))
    sid = c.request("/c", headers=[("cookie", "a=1"), ("x-a", "b"), ("cookie", "b=2")], authority="h2.test")
    st = c.response(sid)
    assert c.status(sid) == 200 and st["reset"] is None
    assert rid(o.requests[0].head) == (b"GET /c HTTP/1.1\r\nHost: h2.test\r\nx-a: b\r\nCookie: a=1; b=2\r\n"
                                  + forwarding_fields(b"h2.test", "2 tether") + b"\r\n")


def contradicting_client(raw_h2, t, content_length):
    """HEADERS with `content-length` and no END_STREAM, then one DATA frame with END_STREAM."""
    c = raw_h2(plain_port(t))
    sid = c.next_sid
    c.next_sid += 2
    c.streams[sid] = {"headers": None, "body": b"", "ended": False, "reset": None, "trailers": None}
    block = c.enc.encode([(":method", "POST"), (":scheme", "http"), (":path", "/run"), (":authority", "h"),
                          ("content-length", str(content_length))])
    c.send(HEADERS, 0x4, sid, block)
    return c, sid


@pytest.mark.parametrize("content_length,data", [(0, b"x"), (5, b"hello!"), (5, b"hell")],
                         ids=["zero_then_data", "more_than_announced", "less_than_announced"])
def test_http2_framing_contradiction_never_runs_at_the_origin(proxied, raw_h2, content_length, data):
    """The origin used to receive (and run) the request while the client got RST_STREAM: now the request's last byte
    waits for END_STREAM, so the origin holds an incomplete request when the client's framing is refused (no
    complete head, or a Content-Length it never got all of), and its connection is closed."""
    t, o = proxied()
    c, sid = contradicting_client(raw_h2, t, content_length)
    time.sleep(0.1)  # let the head go upstream: it must not be complete yet
    assert not any(r.complete for r in o.requests)
    c.send(DATA, 0x1, sid, data)
    st = c.response(sid)
    assert st["reset"] == PROTOCOL_ERROR or c.status(sid) == 400, st

    def settled():
        """tether dropped the upstream connection and the origin saw it go; or (a slow machine) the connection came
        only after the request was refused, and went to the pool unused"""
        if o.eof or o.errors:
            return True
        labels = {"upstream": "o", "server": o.name}
        return (not o.requests and t.metric("tether_upstream_active_connections", **labels) == 0
                and t.metric("tether_upstream_idle_connections", **labels) == 1)
    wait_until(settled)
    assert not any(r.complete for r in o.requests), [(r.head, r.content) for r in o.requests]
    if content_length == 0 or len(data) > content_length:
        assert o.requests == []  # not even the head's last byte went out
    # the same stream sent in agreement with its content-length goes through whole
    assert one_h2_post(raw_h2, t, b"hello") == 200
    assert o.requests[-1].complete and o.requests[-1].content == b"hello"


def one_h2_post(raw_h2, t, body):
    c = raw_h2(plain_port(t))
    sid = c.request("/run", method="POST", headers=[("content-length", str(len(body)))], body=body, authority="h")
    c.response(sid)
    return c.status(sid)


def test_http2_content_length_zero_waits_for_end_stream(proxied, raw_h2):
    t, o = proxied()
    c, sid = contradicting_client(raw_h2, t, 0)
    time.sleep(0.1)
    assert o.requests == []  # the head's last byte waits for the end of the stream
    c.send(DATA, 0x1, sid, b"")
    c.response(sid)
    assert c.status(sid) == 200
    assert len(o.requests) == 1 and o.requests[0].complete and b"\r\nContent-Length: 0\r\n" in o.requests[0].head


# ---- the same requests through nginx ----

@pytest.fixture
def nginx_to(procs, hostile):
    def start():
        o = hostile(lambda req: [("send", ORIGIN_TRAILERS)] if req.target == "/trailers" else None)
        port = start_nginx(procs, {}, extra="""
        location / {
            proxy_pass http://%s;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
        }""" % o.name)
        return port, o
    return start


def test_nginx_forwards_as_recorded_in_security_md(nginx_to):
    """nginx 1.22 with the customary proxy settings, for the comparison table: it sends its proxy_host as Host
    whatever Connection says, appends to X-Forwarded-For from anyone, routes on the normalized path but forwards the
    raw one, and passes HTTP/1.1 cookie lines as they came."""
    port, o = nginx_to()
    assert raw_status(port, b"GET /x HTTP/1.1\r\nHost: www.example.test\r\nConnection: Host\r\n\r\n") == 200
    assert raw_status(port, b"GET /a/../b?q HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\n"
                               b"Cookie: a=1\r\nCookie: b=2\r\n\r\n") == 200
    assert raw_status(port, b"GET http://real.test/c HTTP/1.1\r\nHost: other.test\r\n\r\n") == 200
    heads = [r.head for r in o.requests]
    assert heads[0].startswith(b"GET /x HTTP/1.1\r\n") and b"\r\nHost: %s\r\n" % o.name.encode() in heads[0], heads[0]
    assert heads[1].startswith(b"GET /a/../b?q HTTP/1.1\r\n"), heads[1]
    assert b"\r\nX-Forwarded-For: 6.6.6.6, 127.0.0.1\r\n" in heads[1] and b"\r\nX-Real-IP: 127.0.0.1\r\n" in heads[1]
    assert b"\r\nCookie: a=1\r\nCookie: b=2\r\n" in heads[1]
    assert heads[2].startswith(b"GET /c HTTP/1.1\r\n"), heads[2]
    assert b"Via:" not in b"".join(heads)
    # an origin's chunked trailers: nginx drops them all (tether passes the ones that may be trailers)
    from conftest import HttpConn
    c = HttpConn("127.0.0.1", port)
    try:
        c.send(b"GET /trailers HTTP/1.1\r\nHost: h\r\nTE: trailers\r\n\r\n")
        r = read_head(c)
        assert r.status == 200 and r.header("Transfer-Encoding") == "chunked", r
        assert read_chunked(c) == (b"hello", [])
    finally:
        c.close()
