"""HTTP/2 (RFC 9113): h2c with prior knowledge and h2 over TLS (ALPN).

Covers: static files served identically to HTTP/1.1 (status, content-type, body, HEAD, 404), the access
log (HTTP/2.0, stream=N), multiplexed streams, SETTINGS from the configuration, the two-step GOAWAY
(max requests, drain), PING (ACK, the idle timeout, the liveness timeout), the idle timeout only without
open streams, the rapid-reset limit, oversized header blocks, connection errors, request bodies with flow
control through a proxy route, h2load and nghttp runs, and the HTTP/2 metrics.

Clients: the `h2` package (tls_util.H2Conn) for ordinary frame-level exchanges, tls_util.RawH2 where the
client must go on reading after GOAWAY, curl, nghttp and h2load.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import SLOW
from origin import Origin
from tls_util import (DATA, ENHANCE_YOUR_CALM, GOAWAY, HEADERS, NO_ERROR, PING, PROTOCOL_ERROR,  # noqa: F401
                      RST_STREAM, SETTINGS, WINDOW_UPDATE, certs, curl, frame, h2conns, plain_port, raw_h2,
                      tls_args, tls_port)

MAX_ID = 2 ** 31 - 1



@pytest.fixture
def origin():
    o = Origin(idle_timeout=30.0).start()
    yield o
    o.stop()


def start(tether, site, *flags, certs=None, config=None, origin=None):
    """tether with a plain listener (h2c) and, with certs, a TLS one; `origin` is routed at /up/."""
    args = ["--root", str(site), "--listen", "127.0.0.1:0"]
    if certs is not None:
        args += tls_args(certs)
    if origin is not None:
        args += ["--route", "/up/=http://127.0.0.1:%d" % origin.port]
    return tether(*args, *flags, config=config, expect_listeners=2 if certs is not None else 1)


def wait_until(pred, timeout=5):
    deadline = time.monotonic() + timeout * SLOW
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def body_of(site, path):
    with open(os.path.join(str(site), path.lstrip("/")), "rb") as f:
        return f.read()


def open_at(c, sid, index):
    """True when stream `sid` had not ended by frame `index` of c.frames: the frames' order, not the time the
    test got round to reading them, says what the server sent while the stream was in flight."""
    return not any(f[3] == sid and f[1] in (DATA, HEADERS) and f[2] & 0x1 for f in c.frames[:index + 1])


def open_conn(h2conns, t, transport, certs, **kw):
    if transport == "tls":
        return h2conns(tls_port(t), tls_certs=certs, **kw)
    return h2conns(plain_port(t), **kw)


TRANSPORTS = ["h2c", "tls"]


# ---- static files over HTTP/2 ----

def curl_fetch(url, *flags, head=False):
    """(status, headers dict lower-case, body, http_version) via curl."""
    # -I prints the head on stdout by itself (with -D - it would come twice)
    args = list(flags) + (["-I"] if head else ["-D", "-"]) + ["-w", "\n@@%{http_version}"]
    p = curl(*args, url)
    assert p.returncode == 0, p.stderr
    out, _, ver = p.stdout.rpartition(b"\n@@")
    head_bytes, _, body = out.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body, ver.decode()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_static_files_over_h2_match_http11(tether, site, certs, transport):
    t = start(tether, site, certs=certs)
    if transport == "tls":
        base2 = ("https://localhost:%d" % tls_port(t), ["--http2", "--cacert", certs.ca])
    else:
        base2 = ("http://127.0.0.1:%d" % plain_port(t), ["--http2-prior-knowledge"])
    base1 = ("http://127.0.0.1:%d" % plain_port(t), ["--http1.1"])
    for path in ["/index.html", "/100.txt", "/4k.bin", "/big.bin", "/style.css", "/sub/", "/sub/a%20b.txt",
                 "/nope.txt", "/noindex/", "/sub"]:
        s1, h1, b1, v1 = curl_fetch(base1[0] + path, *base1[1])
        s2, h2, b2, v2 = curl_fetch(base2[0] + path, *base2[1])
        assert (v1, v2) == ("1.1", "2")
        assert s2 == s1, path
        assert b2 == b1, path
        assert h2.get("content-type") == h1.get("content-type"), path
        assert h2.get("content-length") == h1.get("content-length"), path
        assert h2.get("location") == h1.get("location"), path
        for k in ("connection", "keep-alive", "transfer-encoding"):  # connection-specific: never in HTTP/2
            assert k not in h2, (path, h2)
        if path in ("/100.txt", "/big.bin"):
            assert b2 == body_of(site, path)
            assert s2 == 200
        if path == "/nope.txt":
            assert s2 == 404
        # HEAD: the GET's fields, no content
        hs1, hh1, hb1, _ = curl_fetch(base1[0] + path, *base1[1], head=True)
        hs2, hh2, hb2, _ = curl_fetch(base2[0] + path, *base2[1], head=True)
        assert hs2 == hs1, path
        assert hh2.get("content-length") == hh1.get("content-length"), path
        assert hh2.get("content-type") == hh1.get("content-type"), path


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_head_over_h2_sends_no_data_frames(tether, site, certs, raw_h2, transport):
    t = start(tether, site, certs=certs)
    c = raw_h2(tls_port(t) if transport == "tls" else plain_port(t), tls_certs=certs if transport == "tls" else None)
    sid = c.request("/4k.bin", method="HEAD")
    st = c.response(sid)
    hdrs = dict(st["headers"])
    assert hdrs[":status"] == "200" and hdrs["content-length"] == "4096"
    assert st["body"] == b""
    assert not any(f[1] == DATA and f[3] == sid and f[4] for f in c.frames), "DATA with content for HEAD"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_access_log_says_http2_and_stream(tether, site, certs, h2conns, transport):
    t = start(tether, site, certs=certs)
    c = open_conn(h2conns, t, transport, certs)
    for path in ("/100.txt", "/index.html", "/nope"):
        sid = c.request(path)
        c.response(sid)
    lines = t.access_lines(wait_for=3)
    assert len(lines) == 3, lines
    for i, (line, path, status) in enumerate(zip(lines, ("/100.txt", "/index.html", "/nope"), (200, 200, 404))):
        assert '"GET %s HTTP/2.0" %d ' % (path, status) in line, line
        assert line.split()[-1] == "stream=%d" % (2 * i + 1), line
        assert " req=%d " % (i + 1) in line, line
    assert len({l.split("conn=")[1].split()[0] for l in lines}) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_twenty_multiplexed_streams(tether, site, certs, h2conns, transport):
    t = start(tether, site, certs=certs)
    c = open_conn(h2conns, t, transport, certs)
    paths = ["/100.txt", "/4k.bin", "/index.html", "/big.bin", "/style.css"] * 4
    sids = [c.request(p) for p in paths]  # all sent before anything is read
    for sid, p in zip(sids, paths):
        st = c.response(sid, timeout=20)
        assert st["headers"][":status"] == "200", (p, st["headers"])
        assert st["body"] == body_of(site, p), p
    lines = t.access_lines(wait_for=20)
    assert len(lines) == 20
    assert sorted(int(l.split("stream=")[1]) for l in lines) == sids
    assert t.metric("tether_connections_accepted_total") == 1


def test_settings_come_from_the_configuration(tether, site, certs, h2conns, raw_h2):
    cfg = ("[http2]\nh2_max_concurrent_streams = 7\nh2_initial_window = 131072\nh2_header_table_size = 8192\n"
           "[limits]\nmax_field_section = 16k\nmax_request_target = 4k\n")
    t = start(tether, site, certs=certs, config=cfg)
    for transport in TRANSPORTS:
        c = raw_h2(tls_port(t) if transport == "tls" else plain_port(t),
                   tls_certs=certs if transport == "tls" else None)
        assert c.wait(lambda: c.server_settings), "no SETTINGS from the server"
        s = c.server_settings
        assert s.get(0x3) == 7, s           # MAX_CONCURRENT_STREAMS
        assert s.get(0x4) == 131072, s      # INITIAL_WINDOW_SIZE
        assert s.get(0x1) == 8192, s        # HEADER_TABLE_SIZE
        assert s.get(0x2) == 0, s           # ENABLE_PUSH off
        assert s.get(0x6) == 16384 + 4096, s  # MAX_HEADER_LIST_SIZE: field section + target
        assert c.frames[0][1] == SETTINGS and not c.frames[0][2] & 1, "the server preface is not SETTINGS first"


def test_h2_size_keys_do_not_clobber_their_neighbours(tether, site, raw_h2):
    # h2_initial_window and h2_header_table_size are sizes ("64k"): each must set its own setting only,
    # whatever the order of the lines (the one written last must not reset the others).
    cfg = ("[http2]\nh2_ping_interval = 400ms\nh2_ping_timeout = 5s\nh2_header_table_size = 8192\n"
           "h2_initial_window = 128k\n")
    t = start(tether, site, "--idle-timeout", "30s", config=cfg)
    c = raw_h2(plain_port(t))
    assert c.wait(lambda: c.server_settings)
    s = c.server_settings
    assert (s.get(0x4), s.get(0x1)) == (131072, 8192), \
        "INITIAL_WINDOW_SIZE, HEADER_TABLE_SIZE = %s, %s (want 131072, 8192)" % (s.get(0x4), s.get(0x1))
    c.response(c.request("/100.txt"))
    assert c.wait_frame(PING, flags_mask=0, timeout=3) is not None, "h2_ping_interval = 400ms sent no PING"


def test_streams_beyond_max_concurrent_are_refused(tether, site, raw_h2, origin):
    # RFC 9113 5.1.2: a HEADERS frame beyond the advertised limit is a *stream* error (PROTOCOL_ERROR or
    # REFUSED_STREAM): that stream is reset, the accepted ones complete, the connection stays usable.
    t = start(tether, site, "--idle-timeout", "30s", config="[http2]\nh2_max_concurrent_streams = 3\n",
              origin=origin)
    c = raw_h2(plain_port(t))
    assert c.wait(lambda: c.server_settings.get(0x3) == 3)
    assert c.wait_frame(SETTINGS, flags_mask=1) is not None  # our SETTINGS were ACKed: the limit applies
    sids = [c.request("/up/slow?delay=800") for _ in range(4)]
    c.wait(lambda: all(c.streams[s]["ended"] or c.streams[s]["reset"] is not None for s in sids), 10)
    assert c.goaways() == [] and not c.closed, \
        "a 4th stream beyond SETTINGS_MAX_CONCURRENT_STREAMS=3 ended the whole connection: GOAWAY %s, " \
        "streams %s" % (c.goaways(), {s: (c.status(s), c.streams[s]["reset"]) for s in sids})
    assert c.streams[sids[3]]["reset"] == 7, c.streams[sids[3]]  # REFUSED_STREAM: safe to retry
    for sid in sids[:3]:
        assert c.response(sid)["reset"] is None and c.status(sid) == 200
    assert origin.stats["requests"] == 3
    assert t.metric("tether_h2_refused_streams_total") == 1
    sid = c.request("/100.txt")  # the connection is still usable, and the limit counts open streams only
    assert c.response(sid)["reset"] is None and c.status(sid) == 200


# ---- the two-step GOAWAY ----

def assert_two_step_goaway(c, last_sid):
    """First GOAWAY(2^31-1, NO_ERROR), the server's PING, our ACK, then GOAWAY(last_sid, NO_ERROR)."""
    gas = c.goaways()
    assert len(gas) == 2, gas
    (i1, l1, e1), (i2, l2, e2) = gas
    assert (l1, e1) == (MAX_ID, NO_ERROR), gas
    assert (l2, e2) == (last_sid, NO_ERROR), gas
    pings = [i for i, f in enumerate(c.frames) if f[1] == PING and not f[2] & 1]
    assert pings and pings[0] < i2, (gas, pings)
    # (that the PING comes after the first GOAWAY is test_goaway_notice_goes_out_before_its_ping)
    ack = [f for f in c.sent if f[1] == PING and f[2] & 1]
    assert ack and ack[0][0] <= c.frames[i2][0], "the second GOAWAY came before the PING was acknowledged"
    return gas


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_max_requests_two_step_goaway(tether, site, certs, raw_h2, origin, transport):
    t = start(tether, site, "--max-requests", "3", "--idle-timeout", "30s", certs=certs, origin=origin)
    c = raw_h2(tls_port(t) if transport == "tls" else plain_port(t), tls_certs=certs if transport == "tls" else None)
    for _ in range(2):
        sid = c.request("/100.txt")
        assert c.status(sid) is None
        c.response(sid)
        assert c.status(sid) == 200
    assert c.goaways() == []
    slow = c.request("/up/slow?delay=1500")  # the 3rd stream: accepted, and the connection starts to end
    i = c.wait_frame(GOAWAY)
    assert i is not None, "no GOAWAY after the 3rd stream"
    assert c.wait(lambda: len(c.goaways()) == 2, 3), c.goaways()
    assert open_at(c, slow, c.goaways()[1][0]), "the slow stream ended before the final GOAWAY (test timing)"
    assert_two_step_goaway(c, slow)
    st = c.response(slow, timeout=10)
    assert st["reset"] is None and c.status(slow) == 200
    assert json.loads(st["body"])["target"] == "/up/slow?delay=1500"
    took = c.wait_closed(5)
    assert took is not None, "the connection stayed open after its last stream"
    assert t.wait_metric("tether_h2_goaway_sent_total", lambda v: v == 1, reason="max_requests") == 1
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="max_requests")
    lines = t.access_lines(wait_for=3)
    assert len(lines) == 3, lines


@pytest.mark.parametrize("trigger", ["max_requests", "drain"])
def test_goaway_notice_goes_out_before_its_ping(tether, site, raw_h2, origin, trigger):
    # RFC 9113 6.8: the PING's ACK is the proof that the client has seen the GOAWAY notice (so every stream
    # it opened before seeing it has arrived): the PING must follow the notice on the wire, not precede it.
    flags = ["--max-requests", "1"] if trigger == "max_requests" else []
    t = start(tether, site, "--idle-timeout", "30s", *flags, origin=origin)
    c = raw_h2(plain_port(t))
    sid = c.request("/up/x?delay=800")
    if trigger == "drain":
        wait_until(lambda: origin.stats["requests"] >= 1)
        t.send_signal(signal.SIGTERM)
    assert c.wait(lambda: len(c.goaways()) == 2, 5), c.goaways()
    first = c.goaways()[0][0]
    pings = [i for i, f in enumerate(c.frames) if f[1] == PING and not f[2] & 1]
    assert pings, "no PING"
    order = [(i, {GOAWAY: "GOAWAY", PING: "PING"}[f[1]]) for i, f in enumerate(c.frames) if f[1] in (GOAWAY, PING)]
    assert first < pings[0], "server frames in order: %s" % order
    assert c.response(sid)["reset"] is None and c.status(sid) == 200


def test_max_requests_streams_sent_before_the_notice_are_served(tether, site, raw_h2, origin):
    # A client that opened streams 5 and 7 before it saw the first GOAWAY: both were accepted (the notice
    # says 2^31-1), so both are served and the final GOAWAY names 7.
    t = start(tether, site, "--max-requests", "3", "--idle-timeout", "30s", origin=origin)
    c = raw_h2(plain_port(t))
    for _ in range(2):
        c.response(c.request("/100.txt"))
    s5 = c.request("/up/a?delay=500")
    s7 = c.request("/4k.bin")
    assert c.wait(lambda: len(c.goaways()) == 2, 5), c.goaways()
    assert_two_step_goaway(c, s7)
    for sid in (s5, s7):
        assert c.response(sid)["reset"] is None and c.status(sid) == 200
    assert c.streams[s7]["body"] == body_of(site, "/4k.bin")
    assert c.wait_closed(5) is not None
    assert t.metric("tether_h2_goaway_sent_total", reason="max_requests") == 1


def test_second_goaway_follows_within_a_second_without_ping_ack(tether, site, raw_h2, origin):
    t = start(tether, site, "--max-requests", "1", "--idle-timeout", "30s", origin=origin)
    c = raw_h2(plain_port(t), auto_ack_ping=False)
    sid = c.request("/up/x?delay=2500")
    assert c.wait(lambda: len(c.goaways()) == 1, 3), c.goaways()
    t0 = c.frames[c.goaways()[0][0]][0]
    assert c.wait(lambda: len(c.goaways()) == 2, 3), c.goaways()
    dt = c.frames[c.goaways()[1][0]][0] - t0
    # 1 s after the first (times of reading, so a busy client may see less); not at once, and not when the
    # stream ends (2.5 s)
    assert 0.5 < dt < 1.0 + 1.2 * SLOW, "second GOAWAY %.2fs after the first (at most 1 s without an ACK)" % dt
    assert open_at(c, sid, c.goaways()[1][0]), "the second GOAWAY waited for the stream to end"
    assert [g[1:] for g in c.goaways()] == [(MAX_ID, NO_ERROR), (sid, NO_ERROR)]
    assert c.response(sid, timeout=10)["reset"] is None and c.status(sid) == 200


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_drain_two_step_goaway_finishes_in_flight_stream(tether, site, certs, raw_h2, origin, transport):
    t = start(tether, site, "--idle-timeout", "30s", "--drain-timeout", "20s", certs=certs, origin=origin)
    port = tls_port(t) if transport == "tls" else plain_port(t)
    tls_certs = certs if transport == "tls" else None
    busy = raw_h2(port, tls_certs=tls_certs)
    idle = raw_h2(port, tls_certs=tls_certs)
    sid0 = busy.request("/100.txt")
    busy.response(sid0)
    idle.response(idle.request("/100.txt"))
    sid = busy.request("/up/slow?delay=4000")
    wait_until(lambda: origin.stats["requests"] >= 1)  # the slow request is at the origin
    t.send_signal(signal.SIGTERM)
    # the idle connection gets the same sequence, and closes
    assert idle.wait(lambda: len(idle.goaways()) == 2, 5), idle.goaways()
    assert_two_step_goaway(idle, 1)
    assert idle.wait_closed(5) is not None, "the idle h2 connection stayed open during the drain"
    # the busy one: both GOAWAYs, while its stream is still in flight
    assert busy.wait(lambda: len(busy.goaways()) == 2, 5), busy.goaways()
    assert_two_step_goaway(busy, sid)
    assert open_at(busy, sid, busy.goaways()[1][0]), "the slow stream ended before the final GOAWAY (test timing)"
    assert t.metric("tether_h2_goaway_sent_total", reason="shutdown") == 2
    if not busy.streams[sid]["ended"]:  # (what was read so far; tether exits once the stream is done)
        assert t.proc.poll() is None, "exited with a stream in flight"
    st = busy.response(sid, timeout=10)
    assert st["reset"] is None and busy.status(sid) == 200
    assert json.loads(st["body"])["target"] == "/up/slow?delay=4000"
    assert busy.wait_closed(5) is not None
    assert t.proc.wait(10 * SLOW) == 0
    lines = t.access_lines(wait_for=3)
    slow = [l for l in lines if "/up/slow" in l]
    assert len(slow) == 1 and '" 200 ' in slow[0], lines


def test_max_lifetime_ends_h2_with_the_two_step_goaway(tether, site, raw_h2):
    t = start(tether, site, "--max-lifetime", "1s", "--idle-timeout", "30s")
    c = raw_h2(plain_port(t))
    s1 = c.request("/100.txt")
    assert c.response(s1)["reset"] is None and c.status(s1) == 200
    c.wait(lambda: False, 1.2)
    assert c.goaways() == [] and not c.closed  # checked at a request boundary only
    s3 = c.request("/4k.bin")  # the first stream after the lifetime: served, and the connection ends
    assert c.wait(lambda: len(c.goaways()) == 2, 5), c.goaways()
    assert_two_step_goaway(c, s3)
    st = c.response(s3)
    assert st["reset"] is None and c.status(s3) == 200 and st["body"] == body_of(site, "/4k.bin")
    assert c.wait_closed(5) is not None
    assert t.metric("tether_h2_goaway_sent_total", reason="max_lifetime") == 1
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="max_lifetime")


def test_incomplete_header_block_is_cut_by_header_timeout(tether, site, raw_h2):
    # --header-timeout applies to HTTP/2 too: a HEADERS frame whose block never ends (no END_HEADERS, no
    # CONTINUATION) is a slowloris, bounded by the header timeout, not by the (long) idle timeout.
    t = start(tether, site, "--header-timeout", "1s", "--idle-timeout", "30s")
    c = raw_h2(plain_port(t))
    c.response(c.request("/100.txt"))
    block = c.enc.encode([(":method", "GET"), (":scheme", "http"), (":path", "/100.txt"), (":authority", "x")])
    c.send(HEADERS, 0x1, 3, block)  # END_STREAM, but no END_HEADERS: CONTINUATION must follow
    took = c.wait_closed(4)
    assert took is not None, "an unfinished header block held the connection (header timeout 1s)"
    assert took < 1.0 + 1.5 * SLOW, took
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="header_timeout")


# ---- PING ----

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_client_ping_is_acked_with_the_same_data(tether, site, certs, h2conns, transport):
    t = start(tether, site, certs=certs)
    c = open_conn(h2conns, t, transport, certs)
    for data in (b"12345678", b"\x00\xffpingxx"):
        c.h2.ping(data)
        c.flush()
        ev = c.wait_for(lambda e: type(e).__name__ == "PingAckReceived" and e.ping_data == data)
        assert ev is not None, "no PING ACK for %r" % data
    assert c.response(c.request("/100.txt"))["headers"][":status"] == "200"


def test_client_pings_do_not_restart_the_idle_timeout(tether, site, h2conns):
    t = start(tether, site, "--idle-timeout", "1s")
    c = h2conns(plain_port(t))
    t0 = time.monotonic()  # before the request: the idle clock cannot start earlier
    st = c.response(c.request("/100.txt"))
    assert st["headers"][":status"] == "200"
    acks = 0
    while not c.closed and time.monotonic() - t0 < 4 * SLOW:
        if any(type(e).__name__ == "ConnectionTerminated" for e in c.events):
            c.wait_closed(2)
            break
        c.h2.ping(b"%08d" % acks)
        c.flush()
        if c.wait_for(lambda e: type(e).__name__ == "PingAckReceived" and e.ping_data == b"%08d" % acks, 0.3):
            acks += 1
        c.pump(0.3)
    took = time.monotonic() - t0
    assert c.closed, "client PINGs kept the connection open for %.1fs (idle timeout 1s)" % took
    # PINGs went on until the close (each answered): with a PING restarting the timeout it never comes
    acks = sum(1 for e in c.events if type(e).__name__ == "PingAckReceived")
    assert acks >= 2, acks
    assert 0.95 <= took < 1.0 + 1.5 * SLOW, took
    ga = [e for e in c.events if type(e).__name__ == "ConnectionTerminated"]
    assert ga and ga[0].error_code == 0 and ga[0].last_stream_id == 1, ga
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="idle_timeout")
    assert t.metric("tether_h2_goaway_sent_total", reason="idle_timeout") == 1


def test_unanswered_ping_closes_with_ping_timeout(tether, site, raw_h2):
    cfg = "[http2]\nh2_ping_interval = 500ms\nh2_ping_timeout = 1s\n"
    t = start(tether, site, "--idle-timeout", "30s", config=cfg)
    c = raw_h2(plain_port(t), auto_ack_ping=False)
    t0 = time.monotonic()  # before the request: the silence the PING follows starts after it
    c.response(c.request("/100.txt"))
    i = c.wait_frame(PING, flags_mask=0, timeout=3)
    assert i is not None, "no liveness PING from the server"
    sent = c.frames[i][0]
    assert 0.45 < sent - t0 < 0.5 + 1.2 * SLOW, sent - t0
    took = c.wait_closed(5)
    assert took is not None, "not closed without a PING ACK"
    # 1 s after the PING was sent (read here, maybe late on a busy machine: the lower bound only rules out
    # a close at once)
    assert 0.5 < time.monotonic() - sent < 1.0 + 1.5 * SLOW, time.monotonic() - sent
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="ping_timeout")


def test_answered_pings_keep_the_connection_and_measure_rtt(tether, site, raw_h2):
    cfg = "[http2]\nh2_ping_interval = 300ms\nh2_ping_timeout = 1s\n"
    t = start(tether, site, "--idle-timeout", "30s", config=cfg)
    c = raw_h2(plain_port(t))
    c.response(c.request("/100.txt"))
    c.wait(lambda: False, 1.6)
    assert not c.closed
    pings = [f for f in c.frames if f[1] == PING and not f[2] & 1]
    assert len(pings) >= 2, "expected a PING every ~300ms of silence, got %d" % len(pings)
    assert t.metric("tether_h2_ping_rtt_seconds_count") >= 2
    assert t.metric("tether_connections_closed_total", reason="ping_timeout") == 0
    sid = c.request("/4k.bin")
    assert c.response(sid)["reset"] is None and c.status(sid) == 200


# ---- idle timeout ----

def test_idle_timeout_only_runs_without_open_streams(tether, site, h2conns, origin):
    t = start(tether, site, "--idle-timeout", "1s", origin=origin)
    c = h2conns(plain_port(t))
    t0 = time.monotonic()
    sid = c.request("/up/slow?delay=2500")
    st = c.response(sid, timeout=10)
    took = time.monotonic() - t0
    assert st["reset"] is None and st["headers"][":status"] == "200", st
    assert took >= 2.4, took
    assert not any(type(e).__name__ == "ConnectionTerminated" for e in c.events), "GOAWAY during an open stream"
    t1 = time.monotonic()
    assert c.wait_closed(5) is not None
    # 1 s after the stream ended (seen here, maybe late: the lower bound rules out a timer that ran during
    # the stream and fired as it ended)
    assert 0.5 < time.monotonic() - t1 < 1.0 + 1.5 * SLOW
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="idle_timeout")


def test_new_h2_connection_without_streams_closes_at_idle_timeout(tether, site, h2conns):
    t = start(tether, site, "--idle-timeout", "1s")
    t0 = time.monotonic()  # before the connect: the idle clock cannot start earlier
    c = h2conns(plain_port(t))
    took = c.wait_closed(5)
    assert took is not None, "not closed at the idle timeout"
    took = time.monotonic() - t0
    assert 0.95 <= took < 1.0 + 1.5 * SLOW, took
    ga = [e for e in c.events if type(e).__name__ == "ConnectionTerminated"]
    assert ga and ga[0].error_code == 0 and ga[0].last_stream_id == 0, ga
    assert t.metric("tether_h2_goaway_sent_total", reason="idle_timeout") == 1


# ---- abuse and errors ----

RESET_CFG = "[http2]\nh2_reset_burst = 50\nh2_reset_rate = 10\n"


def reset_flood(c, n=1000, path="/4k.bin"):
    """n streams, each opened and at once cancelled (HEADERS + RST_STREAM), in one write."""
    c.wait(lambda: c.server_settings)
    hdr = c.enc.encode([(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", "x")])
    burst = b"".join(frame(HEADERS, 0x5, sid, hdr) + frame(RST_STREAM, 0, sid, (8).to_bytes(4, "big"))  # CANCEL
                     for sid in range(1, 2 * n, 2))
    try:
        c.sock.sendall(burst)
    except OSError:
        pass  # the server may close before it read everything


def test_rapid_reset_flood_gets_enhance_your_calm(tether, site, h2conns, raw_h2):
    t = start(tether, site, "--idle-timeout", "30s", config=RESET_CFG)
    other = h2conns(plain_port(t))
    assert other.response(other.request("/100.txt"))["headers"][":status"] == "200"
    c = raw_h2(plain_port(t))
    reset_flood(c)
    assert c.wait_closed(10) is not None, "the flood did not end the connection"
    # the other connection is unaffected
    st = other.response(other.request("/4k.bin"))
    assert st["headers"][":status"] == "200" and st["body"] == body_of(site, "/4k.bin")
    t.wait_metric("tether_connections_open", lambda v: v == 1)  # (the close is counted as it is made)
    # the flood's GOAWAY says ENHANCE_YOUR_CALM, and is counted so
    gas = c.goaways()
    assert len(gas) == 1 and gas[0][2] == ENHANCE_YOUR_CALM, "GOAWAY (index, last_stream_id, error_code): %s" % gas
    assert t.wait_metric("tether_h2_goaway_sent_total", lambda v: v >= 1, reason="enhance_your_calm") == 1


def test_rapid_reset_flood_is_not_served(tether, site, raw_h2):
    # The limit exists so that a flood costs the server nothing: once it decided to end the connection,
    # no stream above the GOAWAY's last_stream_id may be processed (RFC 9113 6.8: "were not and will not
    # be processed"), so the handler runs for about h2_reset_burst streams, not for the whole flood.
    t = start(tether, site, "--idle-timeout", "30s", config=RESET_CFG)
    c = raw_h2(plain_port(t))
    reset_flood(c)
    assert c.wait_closed(10) is not None, "the flood did not end the connection"
    gas = c.goaways()
    assert gas, "no GOAWAY"
    last = gas[0][1]
    served = [int(l.split("stream=")[1].split()[0]) for l in t.access_lines()]
    above = [s for s in served if s > last]
    assert not above and len(served) < 200, \
        "GOAWAY last_stream_id=%d, but %d streams were dispatched (%d above it, up to stream %d)" % (
            last, len(served), len(above), max(served))


def test_resets_within_the_burst_are_fine(tether, site, raw_h2):
    cfg = "[http2]\nh2_reset_burst = 50\nh2_reset_rate = 10\n"
    t = start(tether, site, "--idle-timeout", "30s", config=cfg)
    c = raw_h2(plain_port(t))
    c.wait(lambda: c.server_settings)
    hdr = c.enc.encode([(":method", "GET"), (":scheme", "http"), (":path", "/4k.bin"), (":authority", "x")])
    burst = b""
    for sid in range(1, 81, 2):  # 40 resets: below the burst of 50
        burst += frame(HEADERS, 0x5, sid, hdr) + frame(RST_STREAM, 0, sid, (8).to_bytes(4, "big"))
    c.sock.sendall(burst)
    c.next_sid = 81
    sid = c.request("/100.txt")
    st = c.response(sid)
    assert st["reset"] is None and c.status(sid) == 200 and st["body"] == body_of(site, "/100.txt")
    assert c.goaways() == [] and not c.closed
    assert t.metric("tether_h2_goaway_sent_total", reason="enhance_your_calm") == 0


@pytest.mark.parametrize("kind", ["above_field_section", "above_field_section_and_target", "many_fields"])
def test_oversized_header_block_fails_that_stream_only(tether, site, h2conns, conns, kind):
    # max_field_section = 4k: the same fields that HTTP/1.1 refuses with 431 are refused over HTTP/2
    t = start(tether, site, "--idle-timeout", "30s", config="[limits]\nmax_field_section = 4k\n")
    if kind == "above_field_section":
        hdrs = [("x-big", "a" * 3000), ("x-big2", "b" * 3000)]  # 6 KB of fields (+ a short path)
    elif kind == "above_field_section_and_target":
        hdrs = [("x-big", "a" * 10000), ("x-big2", "b" * 10000)]
    else:
        hdrs = [("x-f-%d" % i, "v") for i in range(101)]
    h1 = conns(t)
    assert h1.get("/100.txt", headers=dict(hdrs)).status == 431  # the HTTP/1.1 reference
    c = h2conns(plain_port(t))
    sid = c.request("/100.txt", headers=hdrs)
    st = c.response(sid)
    if st["reset"] is None:
        assert st["headers"][":status"] == "431", st["headers"]
    assert not any(type(e).__name__ == "ConnectionTerminated" for e in c.events)
    # the next stream on the same connection works
    st = c.response(c.request("/100.txt", headers=[("x-ok", "1")]))
    assert st["headers"][":status"] == "200" and st["body"] == body_of(site, "/100.txt")
    # ... and one just under the limits too
    ok = [("x-f-%d" % i, "v") for i in range(90)] if kind == "many_fields" else [("x-big", "a" * 3000)]
    st = c.response(c.request("/100.txt", headers=ok))
    assert st["headers"][":status"] == "200"


BAD_FRAMES = {
    "data_on_stream_0": (frame(DATA, 0, 0, b"xxxx"), PROTOCOL_ERROR, "protocol_error"),
    "window_update_zero": (frame(WINDOW_UPDATE, 0, 0, (0).to_bytes(4, "big")), PROTOCOL_ERROR, "protocol_error"),
    "settings_bad_length": (frame(SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00"), 6, "other_error"),  # FRAME_SIZE_ERROR
    "headers_on_even_stream": (None, PROTOCOL_ERROR, "protocol_error"),
}


@pytest.mark.parametrize("kind", list(BAD_FRAMES))
def test_connection_error_goaway_on_that_connection_only(tether, site, certs, h2conns, raw_h2, kind):
    t = start(tether, site, "--idle-timeout", "30s", certs=certs)
    other = h2conns(tls_port(t), tls_certs=certs)
    assert other.response(other.request("/100.txt"))["headers"][":status"] == "200"
    c = raw_h2(plain_port(t))
    c.response(c.request("/100.txt"))
    data, code, metric = BAD_FRAMES[kind]
    if data is None:
        data = frame(HEADERS, 0x5, 2, c.enc.encode([(":method", "GET"), (":scheme", "http"), (":path", "/"),
                                                   (":authority", "x")]))
    c.sock.sendall(data)
    assert c.wait_closed(5) is not None, "the connection stayed open after a connection error"
    gas = c.goaways()
    assert gas and gas[-1][2] == code, gas
    assert gas[-1][1] == 1, gas  # the last stream it processed
    t.wait_metric("tether_h2_goaway_sent_total", lambda v: v == 1, reason=metric)
    st = other.response(other.request("/4k.bin"))
    assert st["headers"][":status"] == "200" and st["body"] == body_of(site, "/4k.bin")
    t.wait_metric("tether_connections_open", lambda v: v == 1)  # (the close is counted as it is made)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_fields_beyond_the_streams_inline_room_reach_the_origin_intact(tether, site, certs, h2conns, origin, transport):
    """A stream keeps a usual request's fields inside itself (12 fields, 384 bytes of names and values) and moves
    them to memory of their own when they outgrow that: 40 fields of 600 bytes and more, sent on streams
    interleaved with small ones on one connection, all reach the origin as sent, in order."""
    t = start(tether, site, certs=certs, origin=origin)
    c = open_conn(h2conns, t, transport, certs)
    big = [("x-field-%02d" % i, ("v%02d-" % i) * (5 + i)) for i in range(40)]
    small = [("x-one", "1")]
    sids = []
    for k in range(6):
        sids.append((c.request("/up/echo?k=%d" % k, headers=big if k % 2 == 0 else small), k))
    for sid, k in sids:
        st = c.response(sid, timeout=20)
        assert st["reset"] is None and st["headers"][":status"] == "200", st
        got = [(n, v) for n, v in json.loads(st["body"])["headers"] if n.lower().startswith("x-field-") or
               n.lower() == "x-one"]
        want = big if k % 2 == 0 else small
        assert [(n.lower(), v) for n, v in got] == want, (k, got[:3])


# ---- request bodies through a proxy route ----

@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("length", ["content-length", "none"])
def test_request_body_reaches_the_origin_with_flow_control(tether, site, certs, h2conns, origin, transport, length):
    t = start(tether, site, certs=certs, origin=origin, config="[limits]\nmax_body_size = 4m\n")
    c = open_conn(h2conns, t, transport, certs)
    body = os.urandom(1024 * 1024 + 12345)  # far beyond the 65535-byte initial window
    hdrs = [("content-type", "application/octet-stream")]
    if length == "content-length":
        hdrs.append(("content-length", str(len(body))))
    sid = c.request("/up/echo", method="POST", headers=hdrs, end=False)
    c.send_body(sid, body)
    st = c.response(sid, timeout=30)
    assert st["reset"] is None and st["headers"][":status"] == "200", st
    echo = json.loads(st["body"])
    assert echo["method"] == "POST" and echo["target"] == "/up/echo"
    assert echo["body_len"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    # more than one window's worth went through: the server returned credit as it read
    updates = [e for e in c.events if type(e).__name__ == "WindowUpdated"]
    assert updates, "no WINDOW_UPDATE from the server"
    # and the connection carries on
    st = c.response(c.request("/100.txt"))
    assert st["headers"][":status"] == "200"


@pytest.mark.multiworker
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_proxied_response_larger_than_the_stream_buffer_completes(tether, site, certs, h2conns, origin, transport):
    """The origin sends faster than the client's windows let tether pass on: the proxy waits for the stream's
    buffer to drain and is called back (on_writable). It was never called back over HTTP/2: the response
    stopped after 64 KiB until the upstream read timeout reset the stream (issue 9, found by the multi-worker
    reload test). The access line keeps the proxy's fields, copied when the handler finished (it was read
    from freed memory)."""
    t = start(tether, site, "--idle-timeout", "60s", certs=certs, origin=origin)
    c = open_conn(h2conns, t, transport, certs)
    sizes = [70000, 300000, 2 * 1024 * 1024, 70000]
    sids = [c.request("/up/blob?size=%d" % n) for n in sizes]  # at once: they share the connection window
    for sid, n in zip(sids, sizes):
        st = c.response(sid, timeout=20)
        assert st["reset"] is None and st["headers"][":status"] == "200", (n, st["reset"], len(st["body"]))
        assert st["body"] == (b"0123456789" * (n // 10 + 1))[:n], (n, len(st["body"]))
    lines = [ln for ln in t.access_lines(wait_for=len(sizes)) if "/up/blob" in ln]
    assert len(lines) == len(sizes), lines
    for ln in lines:
        assert ln.isprintable() and " 200 " in ln and "upstream=" in ln and ln.endswith("cause=-"), ln


def test_request_body_larger_than_max_body_size_is_refused(tether, site, h2conns, origin):
    t = start(tether, site, origin=origin, config="[limits]\nmax_body_size = 64k\n")
    c = h2conns(plain_port(t))
    body = b"z" * (100 * 1024)
    sid = c.request("/up/echo", method="POST", headers=[("content-length", str(len(body)))], end=False)
    st = c.response(sid)
    assert st["headers"] is not None and st["headers"][":status"] == "413", st
    st = c.response(c.request("/100.txt"))
    assert st["headers"][":status"] == "200"


# ---- external clients ----

H2LOAD_RE = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout")


@pytest.mark.multiworker
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_h2load_completes_without_errors(tether, site, certs, transport):
    t = start(tether, site, "--idle-timeout", "30s", certs=certs)
    url = ("https://127.0.0.1:%d/100.txt" % tls_port(t)) if transport == "tls" else \
        ("http://127.0.0.1:%d/100.txt" % plain_port(t))
    p = subprocess.run(["h2load", "-n", "2000", "-c", "10", "-m", "10", url], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60 * SLOW)
    out = p.stdout.decode(errors="replace")
    m = H2LOAD_RE.search(out)
    assert p.returncode == 0 and m, out
    total, started, done, ok, failed, errored, timeout = map(int, m.groups())
    assert (done, ok, failed, errored, timeout) == (2000, 2000, 0, 0, 0), out
    assert "status codes: 2000 2xx" in out, out
    if transport == "tls":
        assert "Application protocol: h2" in out, out
    t.wait_metric("tether_connections_open", lambda v: v == 0)
    assert t.metric("tether_requests_total", **{"class": "2xx"}) == 2000
    assert t.metric("tether_h2_streams_per_connection_count") == 10
    assert t.metric("tether_h2_streams_per_connection_sum") == 2000


def test_nghttp_shows_the_goaway_sequence(tether, site, origin):
    t = start(tether, site, "--max-requests", "2", "--idle-timeout", "30s", origin=origin)
    base = "http://127.0.0.1:%d" % plain_port(t)
    p = subprocess.run(["nghttp", "-nv", "--no-dep", base + "/100.txt", base + "/up/slow?delay=600"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30 * SLOW)
    out = p.stdout.decode(errors="replace")
    gas = [(m.start(), int(m.group(1)), m.group(2)) for m in
           re.finditer(r"recv GOAWAY frame <[^>]*>\s*\(last_stream_id=(\d+), error_code=(\w+)", out)]
    assert len(gas) == 2, out
    assert gas[0][1:] == (MAX_ID, "NO_ERROR"), out
    sids = [int(s) for s in re.findall(r"send HEADERS frame <[^>]*stream_id=(\d+)>", out)]
    assert gas[1][1:] == (max(sids), "NO_ERROR"), out
    ping = out.find("recv PING frame")
    ack = out.find("send PING frame <length=8, flags=0x01")
    assert -1 < ping < ack < gas[1][0] and gas[0][0] < gas[1][0], out
    assert out.count(":status: 200") == 2, out
    assert p.returncode == 0, out


# ---- metrics ----

def test_streams_per_connection_histogram_counts_at_close(tether, site, h2conns):
    t = start(tether, site, "--idle-timeout", "30s")
    assert t.metric("tether_h2_streams_per_connection_count") == 0
    a = h2conns(plain_port(t))
    for _ in range(3):
        a.response(a.request("/100.txt"))
    b = h2conns(plain_port(t))
    b.response(b.request("/100.txt"))
    t.wait_metric("tether_connections_open_by", lambda v: v == 2, protocol="h2", transport="tcp")
    assert t.metric("tether_h2_streams_per_connection_count") == 0  # observed at close only
    a.close()
    t.wait_metric("tether_h2_streams_per_connection_count", lambda v: v == 1)
    assert t.metric("tether_h2_streams_per_connection_sum") == 3
    b.close()
    t.wait_metric("tether_h2_streams_per_connection_count", lambda v: v == 2)
    assert t.metric("tether_h2_streams_per_connection_sum") == 4
    assert t.metric("tether_h2_streams_per_connection_bucket", le="1") == 1
    assert t.metric("tether_h2_streams_per_connection_bucket", le="5") == 2
    assert t.metric("tether_connections_open_by", protocol="h2", transport="tcp") == 0
    t.wait_metric("tether_connections_closed_total", lambda v: v == 2, reason="client_close")
