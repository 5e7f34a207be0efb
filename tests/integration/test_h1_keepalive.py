"""HTTP/1.x persistence: who keeps a connection open, what the response says about it, and for how long.

Covers `Connection: close` / HTTP/1.0 `keep-alive` negotiation, `--idle-timeout 0`, the exact
`Keep-Alive: timeout=T, max=M` field (`--max-requests`, `--keepalive-header off`, unlimited requests),
the idle timeout and the connection lifetime on the wire, pipelining order (with `Connection: close` in
the middle and HEAD), and the access-log line of every request.
"""

import re
import time

import pytest

from conftest import SLOW



def body_of(site, path):
    """Expected content of a site path (directories serve their index.html)."""
    path = path.split("?", 1)[0]
    rel = path.lstrip("/").replace("%20", " ")
    p = site / rel
    if p.is_dir():
        p = p / "index.html"
    return p.read_bytes()


def assert_closes(c, timeout=3):
    took = c.wait_closed(timeout)
    assert took is not None, "the server kept the connection open"
    return took


# ---- persistence negotiation ----

def test_http11_persists_by_default(tether, site, conns):
    t = tether("--root", str(site))
    c = conns(t)
    for path in ("/100.txt", "/4k.bin", "/style.css"):
        r = c.get(path)
        assert r.status == 200
        assert r.body == body_of(site, path)
        assert (r.header("Connection") or "").lower() != "close"
        assert r.header("Keep-Alive") is not None
    assert c.is_open(0.2)
    assert t.metric("tether_connections_accepted_total") == 1
    assert t.metric("tether_connections_open") == 1
    # (counted idle just after the response is written: the client may have read it first)
    t.wait_metric("tether_connections_idle", lambda v: v == 1)


@pytest.mark.parametrize("value", ["close", "Close", "keep-alive, close"])
def test_http11_connection_close_from_client(tether, site, conns, value):
    t = tether("--root", str(site))
    c = conns(t)
    r = c.get("/100.txt", headers={"Connection": value})
    assert r.status == 200
    assert r.body == body_of(site, "/100.txt")
    assert r.header("Connection") == "close"
    assert r.header("Keep-Alive") is None
    assert_closes(c)
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="client_close")
    t.wait_metric("tether_connections_open", lambda v: v == 0)  # (one step after the close is counted)


def test_http10_without_keepalive_closes(tether, site, conns):
    t = tether("--root", str(site))
    c = conns(t)
    c.request("GET", "/100.txt", version="HTTP/1.0")
    r = c.response()
    assert r.status == 200
    assert r.body == body_of(site, "/100.txt")
    assert (r.header("Connection") or "close").lower() == "close"
    assert r.header("Keep-Alive") is None
    assert_closes(c)
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="client_close")


def test_http10_keepalive_persists(tether, site, conns):
    t = tether("--root", str(site), "--max-requests", "10")
    c = conns(t)
    for i in range(3):
        c.request("GET", "/style.css", version="HTTP/1.0", headers={"Connection": "keep-alive"})
        r = c.response()
        assert r.status == 200
        assert r.body == body_of(site, "/style.css")
        assert r.header("Connection").lower() == "keep-alive"
        assert r.header("Keep-Alive") == "timeout=5, max=%d" % (9 - i)
    assert c.is_open(0.2)
    assert t.metric("tether_connections_accepted_total") == 1
    t.wait_metric("tether_connections_idle", lambda v: v == 1)


def test_idle_timeout_zero_turns_keepalive_off(tether, site, conns):
    t = tether("--root", str(site), "--idle-timeout", "0")
    a = conns(t)
    r = a.get("/100.txt")
    assert r.status == 200 and r.body == body_of(site, "/100.txt")
    assert r.header("Connection") == "close"
    assert r.header("Keep-Alive") is None
    assert_closes(a)
    b = conns(t)
    b.request("GET", "/100.txt", version="HTTP/1.0", headers={"Connection": "keep-alive"})
    r = b.response()
    assert r.status == 200
    assert r.header("Connection") == "close"
    assert r.header("Keep-Alive") is None
    assert_closes(b)
    t.wait_metric("tether_connections_closed_total", lambda v: v == 2, reason="idle_timeout")
    assert t.closed("client_close") == 0


# ---- the Keep-Alive field ----

KA_RE = re.compile(r"^timeout=(\d+), max=(\d+)$")


def test_keepalive_max_counts_down_to_close(tether, site, conns):
    t = tether("--root", str(site), "--max-requests", "5", "--idle-timeout", "3s")
    c = conns(t)
    for left in (4, 3, 2, 1):
        r = c.get("/100.txt")
        assert r.status == 200
        assert r.header_all("Keep-Alive") == ["timeout=3, max=%d" % left]
        assert r.header("Connection") is None
    r = c.get("/100.txt")
    assert r.status == 200
    assert r.body == body_of(site, "/100.txt")
    assert r.header("Connection") == "close"
    assert r.header("Keep-Alive") is None
    assert_closes(c)
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="max_requests")
    lines = t.access_lines(wait_for=5)
    assert [l.rsplit(" ", 1)[1] for l in lines] == ["keep"] * 4 + ["max_requests"]


def test_keepalive_timeout_is_whole_seconds_rounded_down(tether, site, conns):
    t = tether("--root", str(site), "--idle-timeout", "2500ms")
    c = conns(t)
    r = c.get("/100.txt")
    assert r.header_all("Keep-Alive") == ["timeout=2, max=999"]
    m = KA_RE.match(r.header("Keep-Alive"))
    assert m, r.header("Keep-Alive")


def test_keepalive_header_off(tether, site, conns):
    t = tether("--root", str(site), "--keepalive-header", "off")
    c = conns(t)
    for _ in range(2):
        r = c.get("/100.txt")
        assert r.status == 200
        assert r.header("Keep-Alive") is None
        assert r.header("Connection") is None
    c.request("GET", "/100.txt", version="HTTP/1.0", headers={"Connection": "keep-alive"})
    r = c.response()
    assert r.status == 200
    assert r.header("Connection").lower() == "keep-alive"
    assert r.header("Keep-Alive") is None
    assert c.is_open(0.2)
    assert t.metric("tether_connections_accepted_total") == 1


def test_max_requests_zero_is_unlimited(tether, site, conns):
    t = tether("--root", str(site), "--max-requests", "0", "--idle-timeout", "4s")
    c = conns(t)
    for _ in range(5):
        r = c.get("/style.css")
        assert r.status == 200
        assert r.header_all("Keep-Alive") == ["timeout=4"]
    assert c.is_open(0.2)


# ---- idle timeout and lifetime ----

def test_idle_timeout_closes_after_last_response(tether, site, conns):
    t = tether("--root", str(site), "--idle-timeout", "1s")
    c = conns(t)
    start = time.monotonic()  # before the request: the idle clock cannot start earlier
    r = c.get("/100.txt")
    assert r.header("Keep-Alive") == "timeout=1, max=999"
    assert_closes(c, timeout=4)
    took = time.monotonic() - start
    assert 0.95 <= took <= 2.0 * SLOW, took  # (the server's clock counts whole milliseconds)
    assert c.buf == b"", "nothing may be sent on an idle close"
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="idle_timeout")
    t.wait_metric("tether_connections_open", lambda v: v == 0)  # (one step after the close is counted)
    assert t.metric("tether_connections_idle") == 0


def test_busy_connection_outlives_idle_timeout(tether, site, conns):
    # Requests 0.2 s apart on one connection for more than twice the 2 s idle timeout: each gap leaves 1.8 s
    # for a busy machine to run the client late, and the connection must live on.
    t = tether("--root", str(site), "--idle-timeout", "2s")
    c = conns(t)
    start = time.monotonic()
    while time.monotonic() - start < 4.5:
        r = c.get("/100.txt")
        assert r.status == 200 and r.header("Connection") is None
        time.sleep(0.2)
    r = c.get("/100.txt")  # more than 4.5 s after the first request, on the same connection
    assert r.status == 200
    assert t.metric("tether_connections_accepted_total") == 1
    assert t.closed("idle_timeout") == 0


def test_max_lifetime_closes_at_first_response_after_it(tether, site, conns):
    # 2 s: two requests fit in it on a busy machine too (each response says whether it did)
    t = tether("--root", str(site), "--max-lifetime", "2s", "--idle-timeout", "5s")
    born = time.monotonic()  # before the connect: the server's age of the connection is at most ours
    c = conns(t)
    for _ in range(2):
        r = c.get("/100.txt")
        assert r.status == 200
        assert r.header("Connection") is None, "a response within the lifetime said close"
        assert r.header("Keep-Alive") is not None
        time.sleep(0.2)
    time.sleep(max(0.0, 2.3 - (time.monotonic() - born)))
    assert c.is_open(0.01), "max_lifetime must only act at a request boundary"
    r = c.get("/100.txt")
    assert r.status == 200
    assert r.body == body_of(site, "/100.txt"), "a response is never cut"
    assert r.header("Connection") == "close"
    assert r.header("Keep-Alive") is None
    assert_closes(c)
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="max_lifetime")
    assert t.access_lines(wait_for=3)[-1].endswith(" max_lifetime")


# ---- pipelining ----

def pipeline(paths, method="GET", extra=None):
    out = b""
    for i, p in enumerate(paths):
        hdrs = "".join("%s: %s\r\n" % kv for kv in (extra or {}).get(i, {}).items())
        out += ("%s %s HTTP/1.1\r\nHost: t\r\n%s\r\n" % (method, p, hdrs)).encode()
    return out


def test_pipelined_requests_answered_in_order(tether, site, conns):
    t = tether("--root", str(site))
    c = conns(t)
    paths = ["/4k.bin", "/100.txt", "/big.bin", "/style.css", "/sub/", "/index.html", "/sub/a%20b.txt"]
    c.send(pipeline(paths))
    for p in paths:
        r = c.response()
        assert r.status == 200, p
        assert r.body == body_of(site, p), p
        assert int(r.header("Content-Length")) == len(body_of(site, p))
    assert c.is_open(0.1)
    # A file sent with sendfile(2) is logged when its send finishes: order the lines by req=.
    lines = t.access_lines(wait_for=len(paths))
    lines.sort(key=lambda l: int(re.search(r" req=(\d+) ", l).group(1)))
    assert [l.split('"')[1].split(" ")[1] for l in lines] == paths


def test_fifty_pipelined_requests(tether, site, conns):
    t = tether("--root", str(site))
    c = conns(t)
    base = ["/100.txt", "/4k.bin", "/style.css", "/index.html", "/sub/", "/sub/a%20b.txt"]
    paths = ["%s?n=%d" % (base[i % len(base)], i) for i in range(50)]
    c.send(pipeline(paths))
    for p in paths:
        r = c.response()
        assert r.status == 200, p
        assert r.body == body_of(site, p), p
    assert c.is_open(0.1)
    lines = t.access_lines(wait_for=50)
    assert len(lines) == 50
    assert [l.split('"')[1].split(" ")[1] for l in lines] == paths
    assert [int(re.search(r" req=(\d+) ", l).group(1)) for l in lines] == list(range(1, 51))
    assert t.metric("tether_connections_accepted_total") == 1


def test_pipelined_connection_close_stops_the_pipeline(tether, site, conns):
    t = tether("--root", str(site))
    c = conns(t)
    paths = ["/100.txt", "/style.css", "/4k.bin", "/index.html"]
    c.send(pipeline(paths, extra={1: {"Connection": "close"}}))
    r = c.response()
    assert r.status == 200 and r.body == body_of(site, "/100.txt")
    assert r.header("Connection") is None
    r = c.response()
    assert r.status == 200 and r.body == body_of(site, "/style.css")
    assert r.header("Connection") == "close"
    assert assert_closes(c) is not None
    assert c.buf == b"", "nothing may follow the Connection: close response"
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="client_close")
    lines = t.access_lines(wait_for=2)
    time.sleep(0.1)
    lines = t.access_lines()
    assert len(lines) == 2
    assert lines[1].endswith(" client_close")


def test_head_has_get_fields_and_no_body(tether, site, conns):
    t = tether("--root", str(site))
    c = conns(t)
    g = c.get("/4k.bin")
    gbig = c.get("/big.bin")
    c.send(b"HEAD /4k.bin HTTP/1.1\r\nHost: t\r\n\r\n"
           b"HEAD /big.bin HTTP/1.1\r\nHost: t\r\n\r\n"
           b"GET /100.txt HTTP/1.1\r\nHost: t\r\n\r\n")
    for get in (g, gbig):
        h = c.response(method="HEAD")
        assert h.status == 200
        assert c.buf == b"" or c.buf.startswith(b"HTTP/1.1 "), "HEAD response carried content"
        strip = lambda hs: [(k, v) for k, v in hs if k.lower() not in ("date", "keep-alive")]
        assert strip(h.headers) == strip(get.headers)
        assert int(h.header("Content-Length")) == len(get.body)
    r = c.response()
    assert r.status == 200
    assert r.body == body_of(site, "/100.txt")
    assert c.is_open(0.1)


# ---- access log ----

LOG_RE = re.compile(
    r'^(?P<addr>\S+) - - \[(?P<ts>\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000)\] '
    r'"(?P<method>\S+) (?P<target>\S+) (?P<version>HTTP/1\.[01])" (?P<status>\d{3}) (?P<bytes>\d+) '
    r'(?P<secs>\d+\.\d+) conn=(?P<conn>\d+) req=(?P<req>\d+) (?P<decision>\S+)$')


def test_access_log_one_line_per_request(tether, site, conns):
    t = tether("--root", str(site), "--max-requests", "3", "--workers", "1")
    a = conns(t)
    sizes = []
    for p in ("/100.txt", "/style.css", "/4k.bin"):
        r = a.get(p)
        sizes.append(len(r.raw_head) + len(r.body))
    assert_closes(a)
    b = conns(t)
    b.request("HEAD", "/index.html", version="HTTP/1.0")
    r = b.response(method="HEAD")
    sizes.append(len(r.raw_head))
    assert_closes(b)
    c = conns(t)
    r = c.get("/nope", headers={"Connection": "close"})
    assert r.status == 404
    sizes.append(len(r.raw_head) + len(r.body))
    assert_closes(c)

    lines = t.access_lines(wait_for=5)
    assert len(lines) == 5, lines
    recs = []
    for line in lines:
        m = LOG_RE.match(line)
        assert m, line
        recs.append(m.groupdict())
    # Lines are written per loop turn (and a file's when its send ends): order them by connection, request.
    recs.sort(key=lambda r: (int(r["conn"]), int(r["req"])))
    assert all(r["addr"] == "127.0.0.1" for r in recs)
    assert [(r["method"], r["target"], r["version"], r["status"]) for r in recs] == [
        ("GET", "/100.txt", "HTTP/1.1", "200"), ("GET", "/style.css", "HTTP/1.1", "200"),
        ("GET", "/4k.bin", "HTTP/1.1", "200"), ("HEAD", "/index.html", "HTTP/1.0", "200"),
        ("GET", "/nope", "HTTP/1.1", "404")]
    assert [int(r["bytes"]) for r in recs] == sizes
    assert [int(r["req"]) for r in recs] == [1, 2, 3, 1, 1]
    assert [r["decision"] for r in recs] == ["keep", "keep", "max_requests", "client_close", "client_close"]
    ids = [r["conn"] for r in recs]
    assert ids[0] == ids[1] == ids[2]
    assert len({ids[0], ids[3], ids[4]}) == 3
    assert all(float(r["secs"]) < 1.0 * SLOW for r in recs)
