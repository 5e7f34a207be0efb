"""The upstream connection pool, one rule per test (src/client/pool.h documents the rules).

Every test runs tether with `--workers 1` (so there is exactly one pool) in front of the controllable
origin (origin.py, in-process so its counters are read without opening a connection) or a scripted raw
origin, and checks each rule three ways where it can: the pool's metrics, the access-log line of the
proxied request (`up_conn=`, `up_reused=`, `up_req=`, `replays=`, `cause=`), and what the origin saw.
Timing rules (hint deadline, learned deadline, max_lifetime, detection of a close while parked) are
measured by polling metrics with deadlines; tolerances scale with SLOW (sanitizer builds).
"""

import json
import re
import subprocess
import time

import pytest

from conftest import SLOW
from origin import Origin
from pool_support import (Background, PoolView, RawOrigin, one_request, origin_stats, pool_config,
                          response_or_crash, wait_until)

RACE_CAUSES = ("closed_before_response", "reset_before_response")



@pytest.fixture
def origins():
    """Factory: origins(**Origin kwargs) -> a started Origin, stopped at teardown."""
    started = []

    def start(**kw):
        o = Origin(**kw).start()
        started.append(o)
        return o

    yield start
    for o in started:
        o.stop()


@pytest.fixture
def proxy(tether, origins):
    """Factory: proxy(origin=dict(...), **pool keys) -> (tether, origin, PoolView); one worker."""

    def start(origin=None, **keys):
        o = origins(**(origin or {}))
        t = tether("--workers", "1", config=pool_config(o.port, **keys))
        return t, o, PoolView(t, o.port)

    return start


def echo(r):
    """The origin's JSON echo of a 200 response."""
    assert r.status == 200, r
    return json.loads(r.body)


def upstream_sockets(t, port):
    """tether's own sockets connected to 127.0.0.1:port as [(state, ss line)] (`ss -tanoep`: sockets
    that no process holds, such as TIME-WAIT ones, are left out)."""
    out = subprocess.run(["ss", "-tanoep", "dst", "127.0.0.1:%d" % port], capture_output=True, text=True,
                         check=True).stdout
    socks = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5 and parts[4] == "127.0.0.1:%d" % port and "pid=%d," % t.proc.pid in line:
            socks.append((parts[0], line))
    return socks


def wait_close_wait(t, port, n=1, timeout=5):
    """Waits until n of tether's upstream sockets to `port` have received the origin's FIN."""
    wait_until(lambda: sum(1 for s, _ in upstream_sockets(t, port) if s == "CLOSE-WAIT") >= n, timeout,
               "tether's upstream socket to reach CLOSE-WAIT")


# ---- reuse ----

def test_sequential_requests_reuse_one_upstream_connection(proxy, conns):
    t, o, pool = proxy(origin=dict(idle_timeout=30))
    c = conns(t)
    for i in range(4):
        e = echo(c.get("/seq?i=%d" % i))
        assert (e["conn"], e["req"]) == (1, i + 1)
    # a second client connection gets the same pooled upstream connection
    e = echo(conns(t).get("/seq?i=4"))
    assert (e["conn"], e["req"]) == (1, 5)

    st = origin_stats(o)
    assert st["accepted"] == 1 and st["requests"] == 5 and st["per_conn"] == {1: 5}
    assert pool.opened() == 1
    assert pool.reused() == 4
    assert pool.up("tether_upstream_requests_total") == 5
    lines = pool.proxied(wait_for=5)
    assert len(lines) == 5
    assert [l["up_reused"] for l in lines] == ["0", "1", "1", "1", "1"]
    assert [l["up_req"] for l in lines] == ["1", "2", "3", "4", "5"]
    assert len({l["up_conn"] for l in lines}) == 1
    assert all(l["up_addr"] == pool.server and l["cause"] == "-" and l["replays"] == "0" for l in lines)
    assert pool.idle() == 1 and pool.active() == 0


def test_most_recently_used_connection_is_reused_first(proxy, conns):
    t, o, pool = proxy(origin=dict(idle_timeout=30))
    # A: opened first, released last (normally); B: opened second, released first.
    ca = conns(t)
    ca.request("GET", "/a?delay=900")
    wait_until(lambda: origin_stats(o)["requests"] == 1, 5, "request A at the origin")
    eb = echo(conns(t).get("/b?delay=50"))
    ea = echo(ca.response())
    assert ea["conn"] != eb["conn"]
    pool.wait("tether_upstream_idle_connections", lambda v: v == 2)
    lines = pool.proxied(wait_for=2)  # in the order the exchanges ended, which is the order of release
    by_target = {l["target"]: l for l in lines}
    conn_a, conn_b = by_target["/a?delay=900"]["up_conn"], by_target["/b?delay=50"]["up_conn"]
    assert conn_a != conn_b
    # On a busy machine B may end after A after all; what the rule says is "the one released last".
    last = lines[-1]["up_conn"]

    # MRU: the connection parked last carries the next request (LRU/FIFO would pick the other)
    e = echo(conns(t).get("/c"))
    line = [l for l in pool.proxied(wait_for=3) if l["target"] == "/c"][0]
    assert line["up_conn"] == last, "reused upstream connection %s, the most recently used is %s (A %s, B %s)" % (
        line["up_conn"], last, conn_a, conn_b)
    assert e["conn"] == (ea["conn"] if last == conn_a else eb["conn"])
    assert line["up_reused"] == "1" and line["up_req"] == "2"
    assert pool.opened() == 2


# ---- prevent: retirement before the upstream closes ----

@pytest.mark.parametrize("hint_timeout", [3, 1], ids=["timeout3", "timeout1"])
def test_parked_connection_retired_at_hint_minus_measured_margin(proxy, conns, hint_timeout):
    """Keep-Alive: timeout=T -> retired at T minus the margin measured from the exchanges' round trips (on
    loopback the floor, 25 ms, or more on a busy machine: the metric says which), before the origin's own close
    (10 s). Learning above the hint is off here: at its deadline the connection is retired, not kept as a canary."""
    t, o, pool = proxy(origin=dict(idle_timeout=10, hint=True, hint_timeout=hint_timeout), learn_above_hint="off")
    c = conns(t)
    start = time.monotonic()  # before the request: the connection cannot be parked earlier
    r = c.get("/")
    asked = time.monotonic() - start  # ... nor later than this
    assert r.status == 200
    assert r.header_all("Keep-Alive") != ["timeout=%d" % hint_timeout]  # hop-by-hop: tether's own, not the origin's
    assert pool.idle() == 1
    margin = pool.m("tether_upstream_margin_seconds")
    # a busy machine measures longer round trips: anything up to hint_margin (1 s) is right; a connection's deadline
    # takes at most half its timeout
    assert 0.025 <= margin <= 1.0, "margin %.3fs: the floor is 25 ms, hint_margin (1 s) the bound" % margin
    expect = hint_timeout - min(margin, hint_timeout / 2)
    wait_until(lambda: pool.retired("hint_deadline") == 1, expect + 3, "retired{hint_deadline}")
    took = time.monotonic() - start
    assert expect - 0.01 <= took <= asked + expect + 0.6 * SLOW, "retired after %.2fs, expected %.2fs" % (took, expect)
    assert pool.idle() == 0
    wait_until(lambda: origin_stats(o)["open"] == 0, 3, "the origin to see tether's close")
    st = origin_stats(o)
    assert st["idle_closes"] == 0, "the origin closed it first"
    assert pool.retired("peer_closed_while_idle") == 0 and pool.retired("idle_timeout") == 0


def test_hint_max_retires_after_the_last_allowed_request(proxy, conns):
    t, o, pool = proxy(origin=dict(idle_timeout=30, hint=True, hint_timeout=30, hint_max=3))
    c = conns(t)
    for i in range(3):
        e = echo(c.get("/m?i=%d" % i))
        assert (e["conn"], e["req"]) == (1, i + 1)
        if i < 2:
            assert pool.retired("max_requests") == 0 and pool.idle() == 1
    # the third response said max=0: closed at release, not parked
    pool.wait("tether_upstream_retired_total", lambda v: v == 1, reason="max_requests")
    assert pool.idle() == 0
    e = echo(c.get("/m?i=3"))
    assert (e["conn"], e["req"]) == (2, 1)
    assert pool.opened() == 2
    line = pool.proxied(wait_for=4)[-1]
    assert line["up_reused"] == "0" and line["up_req"] == "1"
    st = origin_stats(o)
    assert st["per_conn"] == {1: 3, 2: 1} and st["idle_closes"] == 0


def test_pool_max_requests_retires_connection(proxy, conns):
    t, o, pool = proxy(origin=dict(idle_timeout=30), max_requests=2)
    c = conns(t)
    echo(c.get("/1"))
    assert pool.idle() == 1 and pool.retired("max_requests") == 0
    echo(c.get("/2"))
    pool.wait("tether_upstream_retired_total", lambda v: v == 1, reason="max_requests")
    assert pool.idle() == 0
    e = echo(c.get("/3"))
    assert (e["conn"], e["req"]) == (2, 1)
    assert origin_stats(o)["per_conn"] == {1: 2, 2: 1}
    assert [l["up_req"] for l in pool.proxied(wait_for=3)] == ["1", "2", "1"]


def test_max_lifetime_retires_at_release(proxy, conns):
    """max_lifetime=1s (+/-10 %): a connection busy past it is closed when released, not parked."""
    t, o, pool = proxy(origin=dict(idle_timeout=30), max_lifetime="1s")
    c = conns(t)
    e = echo(c.get("/slow?delay=1300"))
    assert e["conn"] == 1
    pool.wait("tether_upstream_retired_total", lambda v: v == 1, timeout=1, reason="max_lifetime")
    assert pool.idle() == 0
    e = echo(c.get("/next"))
    assert (e["conn"], e["req"]) == (2, 1)
    assert pool.opened() == 2


def test_max_lifetime_retires_parked_connection_when_it_expires(proxy, conns):
    t, o, pool = proxy(origin=dict(idle_timeout=30), max_lifetime="1s")
    start = time.monotonic()  # the request starts the connect
    echo(conns(t).get("/"))
    wait_until(lambda: pool.retired("max_lifetime") == 1, 4, "retired{max_lifetime}")
    took = time.monotonic() - start
    assert 0.85 <= took <= 1.1 + 0.5 * SLOW, "retired %.2fs after the connect; max_lifetime 1s +/-10%%" % took
    assert pool.idle() == 0 and origin_stats(o)["idle_closes"] == 0


def test_max_lifetime_jitter_spreads_retirements(proxy, conns):
    """Five connections opened together with max_lifetime=2s retire between 1.8 s and 2.2 s, not all at once."""
    t, o, pool = proxy(origin=dict(idle_timeout=30), max_lifetime="2s")
    n = 5
    holders = [conns(t) for _ in range(n)]
    start = time.monotonic()  # before the requests: no upstream connection is opened earlier
    for c in holders:
        c.request("GET", "/j?delay=300")
    for c in holders:
        echo(c.response())
    opened_by = time.monotonic() - start
    assert pool.opened() == n
    wait_until(lambda: pool.retired("max_lifetime") == n, 4, "%d retirements for max_lifetime" % n)
    # When each was closed: as the origin saw it, one thread per connection (a poll of the metrics, one
    # scrape at a time, could see several retirements at once on a busy machine, and no jitter)
    wait_until(lambda: len(o.peer_closed_at) == n, 3, "the origin to see the %d closes" % n)
    with o.lock:
        times = sorted(at - start for at in o.peer_closed_at)
    assert min(times) >= 1.8 - 0.05, times
    assert max(times) <= opened_by + 2.2 + 0.5 * SLOW, times
    assert max(times) - min(times) >= 0.03, "no jitter: %s" % times


# ---- learning ----

def test_learns_idle_timeout_without_hint_and_retires_before_it(proxy, conns):
    # the deadline layer alone: with canary_requests on, a connection past the learned deadline stays open as an
    # observer for requests that can be replayed (test_issue_16's origin c)
    t, o, pool = proxy(origin=dict(idle_timeout=1.5), canary_requests="off")
    start = time.monotonic()  # before the request: the origin's idle clock cannot start earlier
    echo(conns(t).get("/first"))
    asked = time.monotonic() - start
    # the origin closes the parked connection at 1.5 s; tether sees it and learns its age
    wait_until(lambda: pool.retired("peer_closed_while_idle") == 1, 5, "retired{peer_closed_while_idle}")
    took = time.monotonic() - start
    assert 1.45 <= took <= asked + 1.5 + 0.5 * SLOW, took
    learned = pool.learned()
    # the age tether saw: 1.5 s, less if it parked the connection late (busy), more if it saw the close late
    assert 1.3 <= learned <= 1.5 + 0.3 * SLOW, "learned %.3fs, the origin closes at 1.5s" % learned
    assert origin_stats(o)["idle_closes"] == 1

    # from now on a parked connection leaves service at 1.5 - min(1s, 0.75s) = 0.75 s
    deadline = learned - min(1.0, learned / 2)
    for i in range(2):
        c = conns(t)
        start = time.monotonic()
        e = echo(c.get("/after%d" % i))
        asked = time.monotonic() - start
        assert e["req"] == 1, "reused a connection past its learned deadline"
        wait_until(lambda: pool.idle() == 0, 4, "the parked connection to leave the pool")
        took = time.monotonic() - start
        assert deadline - 0.05 <= took <= asked + deadline + 0.5 * SLOW, \
            "left the pool after %.2fs, expected ~%.2fs" % (took, deadline)
    # (the first one may be kept aside as a canary that watches for a longer timeout; the next is retired)
    assert pool.retired("learned_deadline") >= 1
    # no connection was closed by the origin except the ones tether saw closing while parked
    time.sleep(1.0)
    st = origin_stats(o)
    assert st["idle_closes"] == pool.retired("peer_closed_while_idle") <= 2
    assert pool.generated(*RACE_CAUSES) == 0 and pool.replays(*RACE_CAUSES) == 0
    assert pool.retired("stale_on_reuse") == 0


def test_learned_deadline_applies_to_connections_parked_before_learning(proxy, conns):
    """A parked when the origin's close of A teaches 1.5 s, B parked 0.6 s later is already past the
    learned deadline (1.5 - 0.75 s): it must leave service then, not be handed out at an idle age the pool
    now knows to be in the upstream's closing window (a POST on it could lose the race with no replay)."""
    t, o, pool = proxy(origin=dict(idle_timeout=1.5))
    ca, cb = conns(t), conns(t)
    ca.request("GET", "/a")
    cb.request("GET", "/b?delay=600")
    echo(ca.response())
    echo(cb.response())
    assert pool.opened() == 2
    wait_until(lambda: pool.retired("peer_closed_while_idle") == 1, 5, "the origin's close of A")
    assert pool.learned() > 0
    # B: idle ~0.9 s now, past 0.75 s
    time.sleep(0.1)
    parked = pool.idle()
    e = echo(conns(t).get("/c"))
    assert e["req"] == 1, "reused a connection idle for %s ms, past the learned deadline (%d still parked)" % (
        pool.proxied(wait_for=3)[-1]["up_idle_ms"], parked)


# ---- detect ----

def test_parked_connection_closed_by_origin_is_closed_at_once(proxy, conns):
    t, o, pool = proxy(origin=dict(idle_timeout=1.0), keepalive_hint="off", learn="off")
    c = conns(t)
    start = time.monotonic()  # before the request: the origin's idle clock cannot start earlier
    echo(c.get("/"))
    asked = time.monotonic() - start
    wait_until(lambda: pool.retired("peer_closed_while_idle") == 1, 5, "retired{peer_closed_while_idle}")
    took = time.monotonic() - start
    assert 0.95 <= took <= asked + 1.0 + 0.4 * SLOW, "closed %.2fs after the request; the origin closed at 1.0s" % took
    assert pool.idle() == 0
    assert upstream_sockets(t, o.port) == [], "tether kept its end open"
    assert pool.learned() == 0
    e = echo(c.get("/next"))
    assert (e["conn"], e["req"]) == (2, 1)
    line = pool.proxied(wait_for=2)[-1]
    assert line["up_reused"] == "0" and line["replays"] == "0" and line["cause"] == "-"
    assert pool.retired("stale_on_reuse") == 0 and pool.replays(*RACE_CAUSES) == 0


def test_peek_discards_connection_closed_by_origin(proxy, conns):
    t, o, pool = proxy(origin=dict(idle_timeout=1.0), keepalive_hint="off", learn="off", idle_watch="off")
    c = conns(t)
    echo(c.get("/"))
    wait_close_wait(t, o.port)  # the origin's FIN is there; with idle_watch off nobody looks
    assert pool.idle() == 1 and pool.retired("peer_closed_while_idle") == 0
    e = echo(c.get("/next"))
    assert (e["conn"], e["req"]) == (2, 1)
    assert pool.retired("stale_on_reuse") == 1
    assert pool.replays(*RACE_CAUSES) == 0 and pool.retired("error") == 0
    line = pool.proxied(wait_for=2)[-1]
    assert line["up_reused"] == "0" and line["replays"] == "0"
    assert origin_stats(o)["requests"] == 2


# ---- recover: replay ----

# Every detection layer off, and the guard for requests that cannot be replayed too (safe_idle longer than any
# test waits): a POST takes the dead parked connection, so that what the recover layer does with it shows.
STALE = dict(keepalive_hint="off", learn="off", idle_watch="off", peek="off", safe_idle="60s")


def stale_setup(proxy, conns, **keys):
    """A parked connection the origin has closed, with every detection layer off."""
    t, o, pool = proxy(origin=dict(idle_timeout=1.0), **dict(STALE, **keys))
    c = conns(t)
    echo(c.get("/"))
    wait_close_wait(t, o.port)
    assert pool.idle() == 1
    return t, o, pool, c


def test_get_on_stale_connection_is_replayed(proxy, conns):
    t, o, pool, c = stale_setup(proxy, conns)
    e = echo(c.get("/again"))
    assert (e["conn"], e["req"]) == (2, 1)
    assert pool.replays(*RACE_CAUSES) == 1
    assert pool.generated(*RACE_CAUSES) == 0
    line = pool.proxied(wait_for=2)[-1]
    assert line["status"] == 200 and line["replays"] == "1"
    assert origin_stats(o)["requests"] == 2
    assert pool.retired("error") == 1


def test_get_on_stale_connection_without_replay_is_502(proxy, conns):
    t, o, pool, c = stale_setup(proxy, conns, replay="off")
    r = c.get("/again")
    assert r.status == 502
    assert r.header("X-Tether-Cause") in RACE_CAUSES
    assert pool.generated(r.header("X-Tether-Cause")) == 1
    assert pool.replays(*RACE_CAUSES) == 0
    line = pool.proxied(wait_for=2)[-1]
    assert line["status"] == 502 and line["cause"] == r.header("X-Tether-Cause") and line["replays"] == "0"
    assert origin_stats(o)["requests"] == 1


def test_post_on_stale_connection_is_not_replayed(proxy, conns):
    t, o, pool, c = stale_setup(proxy, conns)
    c.request("POST", "/p", body=b"x" * 100)
    r = response_or_crash(c, t)
    assert r.status == 502, r
    assert r.header("X-Tether-Cause") in RACE_CAUSES
    assert pool.replays(*RACE_CAUSES) == 0
    assert origin_stats(o)["requests"] == 1, "the origin saw the POST"


def test_post_never_takes_a_connection_idle_past_safe_idle_while_the_timeout_is_unknown(proxy, conns):
    """The same dead parked connection (1 s old, nothing hinted or learned, detection off), with the default
    safe_idle (250 ms): a POST never goes on it. It gets a new connection and its answer, and the access log
    says why the connection was new."""
    t, o, pool, c = stale_setup(proxy, conns, safe_idle="250ms")
    c.request("POST", "/p", body=b"x" * 100)
    e = echo(response_or_crash(c, t))
    assert (e["conn"], e["req"]) == (2, 1), "the POST went on the parked connection"
    line = pool.proxied(wait_for=2)[-1]
    assert line["up_reused"] == "0" and line["up_open"] == "not_replayable" and line["replays"] == "0", line
    assert pool.m("tether_upstream_open_reasons_total", reason="not_replayable") == 1
    assert pool.generated(*RACE_CAUSES) == 0 and pool.replays(*RACE_CAUSES) == 0


def test_post_with_idempotency_key_on_stale_connection_is_replayed(proxy, conns):
    t, o, pool, c = stale_setup(proxy, conns)
    body = b"payload-" * 50
    c.request("POST", "/p", headers={"Idempotency-Key": "k1"}, body=body)
    e = echo(c.response())
    assert e["method"] == "POST" and e["body_len"] == len(body) and (e["conn"], e["req"]) == (2, 1)
    assert ["Idempotency-Key", "k1"] in e["headers"]
    assert pool.replays(*RACE_CAUSES) == 1
    assert pool.proxied(wait_for=2)[-1]["replays"] == "1"
    assert origin_stats(o)["requests"] == 2


@pytest.mark.parametrize("method,keys,expect", [
    ("GET", {}, 200),
    ("GET", {"replay": "off"}, 502),
    ("POST", {}, 502),
    ("POST-key", {}, 200),
], ids=["get", "get-replay-off", "post", "post-idempotency-key"])
def test_connection_reset_while_parked(tether, conns, method, keys, expect):
    """The origin resets (RST) a parked connection and no detection layer looks: the request head is
    written to a dead socket. Replayable: sent again on a new connection (200); else 502
    reset_before_response."""
    raw = RawOrigin(lambda conn, req: ("ok_then_reset", 0.2) if conn == 1 else ("ok",))
    try:
        t = tether("--workers", "1", config=pool_config(raw.port, **dict(STALE, **keys)))
        pool = PoolView(t, raw.port)
        c = conns(t)
        assert c.get("/warm").status == 200
        wait_until(lambda: upstream_sockets(t, raw.port) == [], 5, "the reset to reach tether's socket")
        assert pool.idle() == 1
        headers = {"Idempotency-Key": "k2"} if method == "POST-key" else {}
        c.request(method.split("-")[0], "/after-reset", headers=headers, body=b"" if method == "GET" else b"body")
        r = response_or_crash(c, t)
        assert r.status == expect, r
        if expect == 200:
            assert pool.replays(*RACE_CAUSES) == 1
            assert raw.conns == 2
        else:
            assert r.header("X-Tether-Cause") in RACE_CAUSES
            assert pool.replays(*RACE_CAUSES) == 0
            assert raw.conns == 1
        with raw.lock:
            assert len(raw.requests) == (2 if expect == 200 else 1), raw.requests
        assert c.get("/still-serving").status == 200
    finally:
        raw.stop()


@pytest.mark.parametrize("method,headers", [("POST", {"Idempotency-Key": "k1"}), ("GET", {})], ids=["post-key", "get"])
def test_no_replay_once_a_response_byte_arrived(tether, conns, method, headers):
    """The reused connection sends part of a response head, then resets: the request may have been
    processed, so it is not sent again (not even when it would be replayable): 502."""
    def script(conn, req):
        if conn == 1 and req == 2:
            return ("partial_then_reset", b"HTTP/1.1 200 OK\r\nContent-Le", 0.3)
        return ("ok",)

    raw = RawOrigin(script)
    try:
        t = tether("--workers", "1", config=pool_config(raw.port))
        pool = PoolView(t, raw.port)
        c = conns(t)
        assert c.get("/warm").status == 200
        c.request(method, "/once", headers=headers, body=b"data" if method == "POST" else b"")
        r = response_or_crash(c, t)
        assert r.status == 502, r
        assert r.header("X-Tether-Cause") == "reset_before_response"
        time.sleep(0.3)
        with raw.lock:
            seen = [m for m in raw.requests if m[0] == method and m != ("GET", 1, 1)]
        assert len(seen) == 1, "the origin saw the request %d times: %s" % (len(seen), raw.requests)
        assert raw.conns == 1
        assert pool.replays(*RACE_CAUSES) == 0
        assert pool.proxied(wait_for=2)[-1]["replays"] == "0"
    finally:
        raw.stop()


def test_non_replayable_request_avoids_connection_idle_over_safe_idle_while_timeout_unknown(proxy, conns):
    """The origin sends no hint and never closes (nothing learned): a POST may reuse a connection parked for
    less than safe_idle (250 ms), a GET one of any age within idle_timeout, a POST not one parked 2.5 s."""
    t, o, pool = proxy(origin=dict(idle_timeout=30), idle_timeout="4s")
    c = conns(t)
    echo(c.get("/park"))
    # fresh: a POST may reuse it
    c.request("POST", "/fresh", body=b"a")
    e = echo(c.response())
    assert (e["conn"], e["req"]) == (1, 2) and pool.opened() == 1
    # idle 2.5 s of a 4 s deadline: a GET (replayable) still reuses it ...
    time.sleep(2.5)
    e = echo(c.get("/get-late"))
    assert (e["conn"], e["req"]) == (1, 3), "GET did not reuse"
    assert pool.opened() == 1
    line = pool.proxied(wait_for=3)[-1]
    assert line["up_reused"] == "1" and int(line["up_idle_ms"]) >= 2400
    # ... a POST without Idempotency-Key does not: it gets a new connection
    time.sleep(2.5)
    c.request("POST", "/post-late", body=b"b")
    e = echo(c.response())
    assert e["conn"] == 2 and e["req"] == 1, "POST went on a connection idle for 2.5 s of 4 s"
    assert pool.opened() == 2
    assert pool.proxied(wait_for=4)[-1]["up_reused"] == "0"
    assert pool.proxied(wait_for=4)[-1]["up_open"] == "not_replayable"


def test_reuse_safe_first_request_of_a_client_connection_opens_new(proxy, conns):
    t, o, pool = proxy(origin=dict(idle_timeout=30), reuse="safe")
    c1 = conns(t)
    assert echo(c1.get("/1"))["conn"] == 1
    assert echo(c1.get("/2"))["conn"] == 1  # second request of the client connection: reuses
    assert pool.opened() == 1 and pool.idle() == 1
    c2 = conns(t)
    e = echo(c2.get("/3"))
    assert e["conn"] == 2, "first request of a new client connection reused a parked connection"
    assert pool.opened() == 2
    e = echo(c2.get("/4"))
    assert e["conn"] in (1, 2) and e["req"] >= 2
    assert pool.opened() == 2
    assert [l["up_reused"] for l in pool.proxied(wait_for=4)] == ["0", "1", "0", "1"]


# ---- max_connections, queueing ----

@pytest.mark.parametrize("mode", ["queued", "queue_timeout", "no_pending"])
def test_max_connections_queues_then_serves_or_refuses(proxy, mode):
    keys = {"max_connections": 1}
    if mode == "queue_timeout":
        keys["queue_timeout"] = "300ms"
    elif mode == "no_pending":
        keys["max_pending"] = 0
    t, o, pool = proxy(origin=dict(idle_timeout=30), **keys)
    host, port = t.addr
    sent_first = time.monotonic()  # the origin answers the first request 2.5 s after it gets it, not sooner
    first = Background(lambda: one_request(host, port, path="/first?delay=2500"))
    wait_until(lambda: origin_stats(o)["requests"] == 1, 5, "the first request at the origin")
    assert pool.active() == 1
    second = Background(lambda: one_request(host, port, path="/second"))
    if mode == "queued":
        pool.wait("tether_upstream_queue_length", lambda v: v == 1)
        queued_by = time.monotonic()  # the second was queued by now, and waits for the first's release
        assert not first.done()
        r, took = second.result()
        assert r.status == 200, r
        assert echo(r)["conn"] == 1 and echo(r)["req"] == 2, "the queued request did not get the released connection"
        assert pool.m("tether_upstream_queue_length") == 0
        assert pool.m("tether_upstream_queue_wait_seconds_count") == 1
        waited = pool.m("tether_upstream_queue_wait_seconds_sum")
        # from its queueing (before queued_by) to the first's release (after sent_first + 2.5 s), and within
        # the second's own round trip
        assert sent_first + 2.5 - queued_by - 0.01 <= waited <= took + 0.01, (waited, took)
        assert pool.m("tether_upstream_queue_timeouts_total") == 0
        assert origin_stats(o)["accepted"] == 1
    else:
        r, took = second.result()
        assert r.status == 503, r
        assert r.header("X-Tether-Cause") == "pool_exhausted"
        assert not first.done(), "the refusal waited for the first request"
        if mode == "queue_timeout":
            assert 0.3 - 0.01 <= took <= 0.3 + 1.0 * SLOW, took
            assert pool.m("tether_upstream_queue_timeouts_total") == 1
        else:  # at once, not at the 5 s default queue timeout (nor at the first's release)
            assert took <= 1.0 * SLOW, "max_pending=0 refused only after %.2fs" % took
            assert pool.m("tether_upstream_queue_timeouts_total") == 0
        assert pool.generated("pool_exhausted") == 1
        assert pool.m("tether_upstream_queue_length") == 0
        line = [l for l in pool.proxied(wait_for=1) if l["target"] == "/second"][0]
        assert line["status"] == 503 and line["cause"] == "pool_exhausted"
        assert origin_stats(o)["requests"] == 1
    r, _ = first.result()
    assert r.status == 200
    assert pool.opened() == 1


def test_active_gauge_counts_concurrent_slow_requests(proxy):
    t, o, pool = proxy(origin=dict(idle_timeout=30))
    host, port = t.addr
    n = 3
    jobs = [Background(lambda i=i: one_request(host, port, path="/slow%d?delay=2500" % i)) for i in range(n)]
    pool.wait("tether_upstream_active_connections", lambda v: v == n)
    assert pool.idle() == 0
    wait_until(lambda: origin_stats(o)["open"] == n, 3, "the origin to hold %d connections" % n)
    assert not any(j.done() for j in jobs), "a slow request ended early"
    assert pool.active() == n
    for j in jobs:
        assert j.result()[0].status == 200
    pool.wait("tether_upstream_active_connections", lambda v: v == 0)
    assert pool.idle() == n and pool.opened() == n


# ---- leaks, max_idle ----

def test_leak_warning_names_upstream_and_route(proxy, conns):
    t, o, pool = proxy(origin=dict(idle_timeout=30), leak_threshold="1s")
    echo(conns(t).get("/fast"))
    assert pool.m("tether_upstream_leaks_total") == 0
    echo(conns(t).get("/slow?delay=2500"))
    assert pool.m("tether_upstream_leaks_total") == 1, "one slow checkout, reported once"
    pat = re.compile(r"upstream backend/127\.0\.0\.1:%d: connection \d+ checked out for (\d+) ms by route / " % o.port)
    hits = [pat.search(l) for l in t.stderr_lines]
    hits = [h for h in hits if h]
    assert len(hits) == 1, t.stderr()
    assert 1000 <= int(hits[0].group(1)) <= 2500
    assert "warn" in [l for l in t.stderr_lines if pat.search(l)][0].lower()


def test_max_idle_limits_parked_connections(proxy):
    """Four requests end one after another; max_idle=2 keeps the two used last (LRU ones are closed)."""
    t, o, pool = proxy(origin=dict(idle_timeout=30), max_idle=2)
    host, port = t.addr
    jobs = [Background(lambda i=i: one_request(host, port, path="/c%d?delay=%d" % (i, 600 + 200 * i)))
            for i in range(4)]
    pool.wait("tether_upstream_active_connections", lambda v: v == 4)
    conn_of = {"/c%d?delay=%d" % (i, 600 + 200 * i): echo(j.result()[0])["conn"] for i, j in enumerate(jobs)}
    pool.wait("tether_upstream_active_connections", lambda v: v == 0)
    assert pool.opened() == 4
    assert pool.idle() == 2
    assert pool.retired("max_idle") == 2
    wait_until(lambda: origin_stats(o)["open"] == 2, 3, "the origin to see 2 connections closed")
    assert len(upstream_sockets(t, o.port)) == 2
    # the two parked ones are those released last: /c2 and /c3 normally; on a busy machine the order in which
    # the exchanges ended (the access log's) is what counts
    ended = [conn_of[l["target"]] for l in pool.proxied(wait_for=4)]
    again = [Background(lambda i=i: one_request(host, port, path="/again%d?delay=300" % i)) for i in range(2)]
    got = sorted(echo(j.result()[0])["conn"] for j in again)
    assert got == sorted(ended[2:]), "kept %s, the most recently used were %s" % (got, ended[2:])
    assert pool.opened() == 4


def test_max_idle_zero_turns_pooling_off(proxy, conns):
    t, o, pool = proxy(origin=dict(idle_timeout=30), max_idle=0)
    c = conns(t)
    for i in range(3):
        e = echo(c.get("/n%d" % i))
        assert (e["conn"], e["req"]) == (i + 1, 1)
    assert pool.opened() == 3 and pool.reused() == 0 and pool.idle() == 0
    assert pool.retired("max_idle") == 3


# ---- TCP keepalive ----

KA_RE = re.compile(r"timer:\(keepalive,([^,]*),\d+\)")


def ss_timer_seconds(text):
    """ss prints timers as e.g. '13sec', '1.996ms' (1 s 996 ms), '996ms', '2min5sec'."""
    m = re.fullmatch(r"(?:(\d+)min)?(?:(\d+)(sec|\.))?(?:(\d+)ms)?", text)
    assert m and text, "unexpected ss timer %r" % text
    mins, secs, _, ms = m.groups()
    return int(mins or 0) * 60 + int(secs or 0) + int(ms or 0) / 1000.0


@pytest.mark.parametrize("keys,idle_s", [
    ({}, 15),
    ({"idle_timeout": "8s"}, 2),
    ({"idle_timeout": "2s"}, 1),
    ({"tcp_keepalive": "3s:1s:3"}, 3),
    ({"tcp_keepalive": "off"}, None),
], ids=["default-60s", "idle8s", "idle2s-clamped", "explicit", "off"])
def test_tcp_keepalive_on_upstream_sockets(proxy, conns, keys, idle_s):
    """Derived by default: idle = clamp(idle_timeout/4, 1s, 300s); `ss -o` shows the keepalive timer."""
    t, o, pool = proxy(origin=dict(idle_timeout=30), **keys)
    echo(conns(t).get("/"))
    socks = upstream_sockets(t, o.port)
    assert len(socks) == 1, socks
    state, line = socks[0]
    assert state == "ESTAB", line
    m = KA_RE.search(line)
    if idle_s is None:
        assert m is None, line
        return
    assert m, "no keepalive timer on tether's upstream socket: %s" % line
    v = ss_timer_seconds(m.group(1))
    assert idle_s - 1.5 <= v <= idle_s, "keepalive timer %.1fs, expected idle %ds: %s" % (v, idle_s, line)
