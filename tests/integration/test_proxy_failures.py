"""Reverse proxy: timeouts, failures, health and balancing.

Every 502/503/504 tether generates names its cause (X-Tether-Cause, the access log's cause= field and
tether_upstream_generated_total{cause}); failures after the response head reached the client show as a
truncated response and a closed connection instead. Connect failures and resets before any response
byte move an idempotent request to the next server; servers that keep refusing are marked down and
probed back. round_robin and least_conn spread requests.
"""

import re
import threading
import time

import pytest

from conftest import SLOW
from proxy_util import (Blackhole, SlowOrigin, addr, all_generated, clean_tether, closed_port,  # noqa: F401
                        echo, generated, origins, parse_chunked_prefix, pattern, read_head, read_to_eof,
                        reset_server, upstream_config)

UP = "backend"


def start(clean_tether, servers, **keys):
    return clean_tether("--workers", "1", "--drain-timeout", "3s", config=upstream_config(servers, **keys))


def assert_generated(t, r, status, cause):
    """`r` is tether's own `status` answer naming `cause` everywhere it should."""
    assert r.status == status, r
    assert r.header("X-Tether-Cause") == cause, r
    assert r.header("Via") is None  # generated, not forwarded
    line = t.access_lines(1)[-1]
    assert line.endswith(" cause=" + cause), line
    assert ('" %d ' % status) in line, line
    assert generated(t, UP, cause) >= 1


LOG_RE = re.compile(r" upstream=(?P<upstream>\S+) up_addr=(?P<up_addr>\S+) up_conn=(?P<up_conn>\d+) "
                    r"up_reused=(?P<up_reused>[01]) up_idle_ms=(?P<up_idle_ms>\d+) up_req=(?P<up_req>\d+) "
                    r"up_age_ms=(?P<up_age_ms>\d+) up_open=(?P<up_open>\S+) up_canary=(?P<up_canary>[01]) "
                    r"up_wait_ms=(?P<up_wait_ms>\d+) retries=(?P<retries>\d+) "
                    r"replays=(?P<replays>\d+) "
                    r"cause=(?P<cause>\S+)$")


def log_fields(line):
    m = LOG_RE.search(line)
    assert m, line
    return m.groupdict()


# ---- timeouts ----

def test_response_timeout_504(clean_tether, origins, conns):
    o = origins()
    t = start(clean_tether, [addr(o)], response_timeout="500ms")
    c = conns(t)
    t0 = time.monotonic()
    r = c.get("/?delay=8000")
    took = time.monotonic() - t0
    assert_generated(t, r, 504, "response_timeout")
    assert 0.49 <= took < 0.5 + 1.5 * SLOW, took  # not the origin's 8 s
    assert generated(t, UP, "response_timeout") == 1
    assert log_fields(t.access_lines(1)[-1])["cause"] == "response_timeout"


@pytest.mark.parametrize("framing", ["cl", "chunked"])
def test_read_timeout_between_body_bytes_truncates(clean_tether, origins, conns, framing):
    o = origins()
    t = start(clean_tether, [addr(o)], read_timeout="500ms")
    c = conns(t)
    n = 1000000
    c.request("GET", "/?size=%d&chunk_delay=6000&framing=%s" % (n, framing))
    r = read_head(c)
    assert r.status == 200, r
    t0 = time.monotonic()
    data, closed = read_to_eof(c, timeout=5)
    assert closed, "tether kept the connection open after the upstream stalled"
    assert time.monotonic() - t0 < 0.5 + 1.5 * SLOW  # the read timeout cut it, not the origin's next piece (6 s)
    if framing == "cl":
        assert r.header("Content-Length") == str(n)
        assert 0 < len(data) < n
        assert data == pattern(len(data))
    else:
        assert r.header("Transfer-Encoding") == "chunked"
        body, complete = parse_chunked_prefix(data)
        assert not complete, "a truncated response must not end with the last chunk"
        assert 0 < len(body) < n
    assert all_generated(t) == 0


def test_connect_timeout_504(clean_tether, conns):
    hole = Blackhole()
    try:
        if not hole.works():
            pytest.skip("a full accept queue does not hold back connects here")
        t = start(clean_tether, ["127.0.0.1:%d" % hole.port], connect_timeout="300ms")
        c = conns(t)
        t0 = time.monotonic()
        r = c.get("/")
        took = time.monotonic() - t0
        assert_generated(t, r, 504, "connect_timeout")
        assert 0.29 <= took < 0.3 + 0.8 * SLOW, took  # the configured 300 ms, not the 3 s default
    finally:
        hole.close()


# ---- connect failures, next server, health ----

def test_connect_refused_502(clean_tether, conns):
    t = start(clean_tether, ["127.0.0.1:%d" % closed_port()])
    r = conns(t).get("/")
    assert_generated(t, r, 502, "connect_refused")


def test_refused_server_skipped_to_next(clean_tether, origins, conns):
    o = origins()
    dead = "127.0.0.1:%d" % closed_port()
    t = start(clean_tether, [dead, addr(o)])
    for i in range(8):
        c = conns(t)
        r = c.get("/r%d" % i)
        assert echo(r)["target"] == "/r%d" % i
        c.close()
    assert t.metric("tether_upstream_next_server_total", upstream=UP, cause="connect_refused") > 0
    assert all_generated(t) == 0
    retried = [log_fields(line) for line in t.access_lines(8) if " retries=1 " in line]
    assert retried and all(f["up_addr"] == addr(o) for f in retried)


def test_all_servers_down_503(clean_tether, conns):
    a, b = closed_port(), closed_port()
    t = start(clean_tether, ["127.0.0.1:%d" % a, "127.0.0.1:%d" % b], max_fails=1, fail_backoff="5s")
    c = conns(t)
    r1 = c.get("/1")
    assert r1.status in (502, 503) and r1.header("X-Tether-Cause") in ("connect_refused", "all_servers_down"), r1
    failures = sum(t.metric("tether_upstream_connect_failures_total", upstream=UP, server="127.0.0.1:%d" % p)
                   for p in (a, b))
    assert failures == 2
    for p in (a, b):
        assert t.metric("tether_upstream_down", upstream=UP, server="127.0.0.1:%d" % p) == 1
    r2 = c.get("/2")
    assert_generated(t, r2, 503, "all_servers_down")
    # down servers are not tried again before the backoff
    assert sum(t.metric("tether_upstream_connect_failures_total", upstream=UP, server="127.0.0.1:%d" % p)
               for p in (a, b)) == 2


def test_passive_health_marks_down_and_probes_back(clean_tether, origins, conns):
    live = origins()
    port = closed_port()
    dead = "127.0.0.1:%d" % port
    # a 3 s backoff: the 14 requests and scrapes below, while it is down, fit in it on a busy machine too (a
    # probe after the backoff would add a connect failure)
    t = start(clean_tether, [dead, addr(live)], max_fails=3, fail_backoff="3s", fail_backoff_max="3s")
    for i in range(8):
        assert conns(t).get("/a%d" % i).status == 200
    assert t.metric("tether_upstream_connect_failures_total", upstream=UP, server=dead) == 3
    assert t.metric("tether_upstream_down", upstream=UP, server=dead) == 1
    refused = t.metric("tether_upstream_next_server_total", upstream=UP, cause="connect_refused")
    for i in range(6):
        assert conns(t).get("/b%d" % i).status == 200
    # while down, requests do not try it
    assert t.metric("tether_upstream_next_server_total", upstream=UP, cause="connect_refused") == refused
    # it comes back: a probe connect within the backoff finds it listening
    revived = origins(port=port)
    t.wait_metric("tether_upstream_down", lambda v: v == 0, timeout=6, upstream=UP, server=dead)
    for i in range(6):
        assert conns(t).get("/c%d" % i).status == 200
    assert revived.stats["requests"] >= 2


# ---- broken upstream responses ----

def test_invalid_response_502(clean_tether, origins, conns):
    o = origins()
    t = start(clean_tether, [addr(o)])
    r = conns(t).get("/?garbage=1")
    assert_generated(t, r, 502, "invalid_response")


@pytest.mark.parametrize("knob,cause", [("reset=before_head", "reset_before_response"),
                                        ("close=before_head", "closed_before_response")])
def test_upstream_gone_before_response_post_502(clean_tether, origins, conns, knob, cause):
    """A POST on a fresh connection whose upstream resets (or closes) before any response byte."""
    o = origins()
    t = start(clean_tether, [addr(o)])
    c = conns(t)
    c.request("POST", "/?" + knob, body=b"x" * 1000)
    r = c.response()
    assert_generated(t, r, 502, cause)
    f = log_fields(t.access_lines(1)[-1])
    assert f["up_reused"] == "0" and f["retries"] == "0" and f["replays"] == "0"
    assert o.stats["accepted"] == 1  # a POST is not sent twice
    assert c.get("/").status == 200  # the client connection goes on


def test_reset_before_response_get_goes_to_next_server(clean_tether, origins, conns):
    rs = reset_server()
    try:
        o = origins()
        t = start(clean_tether, ["127.0.0.1:%d" % rs.port, addr(o)])
        for i in range(4):
            c = conns(t)
            assert echo(c.get("/g%d" % i))["target"] == "/g%d" % i
            c.close()
        assert rs.accepted >= 1
        assert t.metric("tether_upstream_next_server_total", upstream=UP, cause="reset_before_response") >= 1
        assert all_generated(t) == 0
        assert any(log_fields(line)["retries"] == "1" for line in t.access_lines(4))
    finally:
        rs.stop()


@pytest.mark.parametrize("where", ["after_head", "mid_body"])
def test_reset_after_head_truncates_without_5xx(clean_tether, origins, conns, where):
    o = origins()
    t = start(clean_tether, [addr(o)])
    c = conns(t)
    n = 200000
    c.request("GET", "/?size=%d&reset=%s" % (n, where))
    r = read_head(c)
    assert r.status == 200 and r.header("Content-Length") == str(n), r
    data, closed = read_to_eof(c, timeout=3)
    assert closed, "the upstream's reset did not reach the client promptly"
    assert len(data) < n
    assert data == pattern(len(data))
    assert all_generated(t) == 0
    assert '" 200 ' in t.access_lines(1)[-1]


def test_access_log_upstream_fields(clean_tether, origins, conns):
    o = origins()
    t = start(clean_tether, [addr(o)])
    c = conns(t)
    assert c.get("/one").status == 200
    time.sleep(0.05)
    assert c.get("/two").status == 200
    lines = t.access_lines(2)
    one = log_fields([line for line in lines if "/one" in line][0])
    two = log_fields([line for line in lines if "/two" in line][0])
    assert one["upstream"] == UP and one["up_addr"] == addr(o)
    assert one["up_reused"] == "0" and one["up_req"] == "1" and one["up_idle_ms"] == "0"
    assert two["up_reused"] == "1" and two["up_req"] == "2" and two["up_conn"] == one["up_conn"]
    assert int(two["up_idle_ms"]) >= 30
    assert int(two["up_age_ms"]) >= int(two["up_idle_ms"])
    assert one["retries"] == two["retries"] == "0" and one["replays"] == two["replays"] == "0"
    assert one["cause"] == two["cause"] == "-"


# ---- balancing ----

def test_round_robin_spreads_evenly(clean_tether, origins, conns):
    os_ = [origins() for _ in range(3)]
    t = start(clean_tether, [addr(o) for o in os_], balance="round_robin")
    c = conns(t)
    for i in range(30):
        assert c.get("/rr%d" % i).status == 200
    counts = [o.stats["requests"] for o in os_]
    assert sum(counts) == 30
    assert min(counts) >= 5, counts


def test_least_conn_prefers_the_less_busy_server(clean_tether, origins, conns):
    """While the slow server holds one exchange (3 s), every request goes to the fast one, which has none in
    flight. The requests go one at a time: with concurrent ones, how many the fast server has in flight depends
    on how fast it answers on a busy machine, and ties are fair game."""
    slow = origins(SlowOrigin, slow=3.0)
    fast = origins()
    t = start(clean_tether, [addr(slow), addr(fast)], balance="least_conn")
    results = []

    def one(path):
        results.append(conns(t, timeout=10 + 3).get(path).status)

    # occupy the slow server: one request at a time in the background until one lands there
    held, occupied_at = [], None
    deadline = time.monotonic() + 10 * SLOW
    while occupied_at is None:
        assert time.monotonic() < deadline, "no request reached the slow server"
        at = time.monotonic()
        th = threading.Thread(target=one, args=("/occupy%d" % len(held),), daemon=True)
        th.start()
        held.append(th)
        while th.is_alive() and slow.stats["requests"] == 0:
            time.sleep(0.005)
        if slow.stats["requests"]:
            occupied_at = at  # it is answered 3 s after it got there, which is after `at`
    c = conns(t)
    counted = 0
    for i in range(12):
        before = fast.stats["requests"]
        r = c.get("/lc%d" % i)
        if time.monotonic() >= occupied_at + 3.0:
            break  # the slow server may have been free for this one: it proves nothing
        assert r.status == 200
        assert fast.stats["requests"] == before + 1, "request %d went to the busy server: %s" % (i, slow.stats)
        counted += 1
    assert counted >= 3, "only %d requests while the slow server was busy" % counted
    for th in held:
        th.join(15 * SLOW)
    assert results == [200] * len(held)
