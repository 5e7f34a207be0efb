"""Issue 10, HTTP/2 conformance (RFC 9113) where tether used to fail the conformance suite, and the request rules of
the other two files as they apply to HTTP/2 streams.

Covers: HEADERS on a stream id below one the client already opened, that the client never opened, is a
connection error GOAWAY(PROTOCOL_ERROR) (5.1.1) over h2c and TLS, while HEADERS on a lower stream that is open
(trailers) is served; a client preface "PRI * HTTP/2.0\\r\\n\\r\\n" followed by anything but "SM\\r\\n\\r\\n" is
answered GOAWAY(PROTOCOL_ERROR) and a close, sent whole and split at every byte (3.4), never an HTTP/1.1 505 -- which
a request-line that is not the preface keeps; CONNECT without a tunnel route is 405; :path is normalized
before routing; one field over max_field_line is 431; a bad :authority is 400.
"""

import socket

import pytest

from conftest import SLOW
from hostile_origin import hostile  # noqa: F401 (a fixture)
from tls_util import (DATA, GOAWAY, HEADERS, PREFACE, PROTOCOL_ERROR, SETTINGS, certs, plain_port,  # noqa: F401
                      raw_h2, split_frames, tls_args, tls_port)

HUNDRED = b"x" * 99 + b"\n"


@pytest.fixture
def srv(tether, site, certs):
    return tether("--root", str(site), "--listen", "127.0.0.1:0", *tls_args(certs), expect_listeners=2)


def open_raw(raw_h2, t, transport, certs):
    return raw_h2(tls_port(t), tls_certs=certs) if transport == "tls" else raw_h2(plain_port(t))


def headers_block(c, path="/100.txt", method="GET", extra=()):
    return c.enc.encode([(":method", method), (":scheme", "https" if c.tls else "http"), (":path", path),
                         (":authority", "localhost")] + list(extra))


# ---- stream ids (RFC 9113 5.1.1) ----

@pytest.mark.parametrize("transport", ["h2c", "tls"])
def test_headers_on_a_skipped_lower_stream_id_is_a_connection_error(srv, raw_h2, certs, transport):
    c = open_raw(raw_h2, srv, transport, certs)
    c.send(HEADERS, 0x5, 5, headers_block(c))  # stream 5 first: 1 and 3 are closed for good
    c.streams[5] = {"headers": None, "body": b"", "ended": False, "reset": None, "trailers": None}
    c.response(5)
    assert c.status(5) == 200
    c.send(HEADERS, 0x5, 3, headers_block(c))
    assert c.wait_closed(timeout=5) is not None, c.frames
    assert [(last, err) for _, last, err in c.goaways()] == [(5, PROTOCOL_ERROR)], c.goaways()
    assert not any(f[1] == HEADERS and f[3] == 3 for f in c.frames), "stream 3 must not be served"
    srv.wait_metric("tether_h2_goaway_sent_total", lambda v: v == 1, reason="protocol_error")
    srv.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="bad_request")


def test_headers_on_a_lower_stream_that_is_open_are_its_trailers(tether, raw_h2, hostile):
    """Stream 1 stays open (content without END_STREAM) while stream 3 is served; its trailers then arrive on the
    lower id: legitimate, served, no GOAWAY."""
    o = hostile()
    t = tether("--proxy", "http://" + o.name)
    c = raw_h2(plain_port(t))
    c.streams[1] = {"headers": None, "body": b"", "ended": False, "reset": None, "trailers": None}
    c.send(HEADERS, 0x4, 1, headers_block(c, "/up", "POST"))
    c.send(DATA, 0, 1, b"hello")
    c.next_sid = 3
    sid = c.request("/other")
    c.response(sid)
    c.send(HEADERS, 0x5, 1, c.enc.encode([("x-checksum", "1")]))
    c.response(1)
    assert c.status(1) == 200 and c.status(3) == 200
    assert c.goaways() == [] and not c.closed
    assert [r.content for r in o.requests if r.target == "/up"] == [b"5\r\nhello\r\n0\r\nx-checksum: 1\r\n\r\n"]


def test_many_skipped_ranges_are_remembered(srv, raw_h2):
    """Every range of ids the client skipped is remembered (up to 16 ranges); a HEADERS on any of them ends it."""
    c = raw_h2(plain_port(srv))
    for sid in range(5, 5 + 4 * 10, 4):  # opens 5, 9, 13, ...: skips 1-3, 7, 11, ...
        c.streams[sid] = {"headers": None, "body": b"", "ended": False, "reset": None, "trailers": None}
        c.send(HEADERS, 0x5, sid, headers_block(c))
        c.response(sid)
    c.send(HEADERS, 0x5, 7, headers_block(c))
    assert c.wait_closed(timeout=5) is not None
    assert [err for _, _, err in c.goaways()] == [PROTOCOL_ERROR]


# ---- the client preface (RFC 9113 3.4) ----

def preface_verdict(port, raw, split=None, timeout=5):
    """Sends `raw` (whole, or in two writes at `split`) and reads to the close: ("goaway", error code) when the
    answer is HTTP/2 frames ending in a GOAWAY, ("http1", status) for an HTTP/1.1 answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    try:
        if split:
            s.sendall(raw[:split])
            s.sendall(raw[split:])
        else:
            s.sendall(raw)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    if data.startswith(b"HTTP/1.1 "):
        return ("http1", int(data[9:12]))
    frames = split_frames(data)
    goaways = [int.from_bytes(p[4:8], "big") for t, _, _, p in frames if t == GOAWAY]
    assert frames and frames[0][0] == SETTINGS, data[:64]  # the server preface comes first
    return ("goaway", goaways[-1] if goaways else None)


@pytest.mark.parametrize("rest", [b"XX\r\n\r\n", b"SM\r\n\r", b"SM\n\n\n\n", b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"],
                         ids=["garbage", "short_then_more", "bare_lf", "http11_after"])
def test_broken_preface_is_goaway_protocol_error_whole_and_split(srv, rest):
    port = plain_port(srv)
    raw = b"PRI * HTTP/2.0\r\n\r\n" + rest + b"\x00" * 9
    for k in [None] + list(range(1, len(raw))):
        assert preface_verdict(port, raw, k) == ("goaway", PROTOCOL_ERROR), k
    assert srv.metric("tether_h2_goaway_sent_total", reason="protocol_error") == len(raw)
    srv.wait_metric("tether_connections_closed_total", lambda v: v == len(raw), reason="bad_request")


def test_an_http1_request_line_is_not_a_preface(srv, tether, site):
    port = plain_port(srv)
    assert preface_verdict(port, b"PRI * HTTP/1.1\r\nHost: t\r\n\r\n") == ("http1", 400)
    assert preface_verdict(port, b"PRI * HTTP/2.0\r\nHost: t\r\n\r\n") == ("http1", 505)
    # where HTTP/2 is off, the preface is an HTTP/1.1 request for a version tether does not speak there
    off = tether("--root", str(site), config="[http2]\nh2 = off\n")
    assert preface_verdict(off.port, PREFACE) == ("http1", 505)


# ---- request rules over HTTP/2 ----

def test_connect_is_405_and_never_forwarded(tether, raw_h2, hostile):
    o = hostile()
    t = tether("--proxy", "http://" + o.name)
    c = raw_h2(plain_port(t))
    c.streams[1] = {"headers": None, "body": b"", "ended": False, "reset": None, "trailers": None}
    c.send(HEADERS, 0x5, 1, c.enc.encode([(":method", "CONNECT"), (":authority", "example.test:443")]))
    c.response(1)
    assert c.status(1) == 405 and dict(c.streams[1]["headers"])["allow"] == ""
    assert o.requests == [] and o.accepted == 0
    assert any('"CONNECT example.test:443 HTTP/2.0" 405' in x for x in t.access_lines(wait_for=1))


@pytest.mark.parametrize("path,status,body", [
    ("/sub/../100.txt", 200, HUNDRED),
    ("/sub/%2e%2E/100.txt", 200, HUNDRED),
    ("/%31%30%30.txt", 200, HUNDRED),
    ("/../100.txt", 400, b"400 Bad Request\n"),
    ("/sub/..%2f100.txt", 400, b"400 Bad Request\n"),
])
def test_paths_are_normalized_like_http11(srv, raw_h2, path, status, body):
    c = raw_h2(plain_port(srv))
    sid = c.request(path)
    st = c.response(sid)
    assert c.status(sid) == status and st["body"] == body, st


def test_one_field_over_the_line_limit_is_431(srv, raw_h2):
    c = raw_h2(plain_port(srv))
    ok = c.request("/100.txt", headers=[("x-long", "v" * (8192 - len("x-long: ")))])
    bad = c.request("/100.txt", headers=[("x-long", "v" * (8193 - len("x-long: ")))])
    c.response(bad)
    c.response(ok)
    assert (c.status(ok), c.status(bad)) == (200, 431)


@pytest.mark.parametrize("authority", ['a", for=6.6.6.6;host="b', "a,b", "u@a", "a:8x"])
def test_a_bad_authority_is_400_or_refused_by_nghttp2(tether, raw_h2, hostile, authority):
    o = hostile()
    t = tether("--proxy", "http://" + o.name)
    c = raw_h2(plain_port(t))
    sid = c.request("/", authority=authority)
    st = c.response(sid)
    assert c.status(sid) == 400 or st["reset"] == PROTOCOL_ERROR, st
    assert o.requests == []
