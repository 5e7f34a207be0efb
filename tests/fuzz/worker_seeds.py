#!/usr/bin/python3
"""worker_seeds.py -- writes the hand-made seeds of fuzz_worker (tests/fuzz/corpus/worker/seed_*; run it with /usr/bin/python3, which has python3-h2): one script each
for the scenarios issue 9 names, so the fuzzer starts from deep states. Run it after changing the script format.

An event is [op][client][origin][a][b][c][d] (raw bytes: `a` more bytes follow); see fuzz_worker.c (run_script).
An op with its high bit set runs no loop turn after it (the next event lands in the same poll batch)."""
import os

OPEN, CANNED, RAW, CFLUSH, CREAD, CCLOSE, ACCEPT, RESPOND, OFLUSH, STRAY, OREAD, OCLOSE, CLOCK, DRAIN = \
    0, 1, 3, 4, 5, 6, 7, 9, 11, 12, 13, 14, 15, 16
GET, HEAD, POST, POST_CHUNKED, GET_CLOSE, GET10, GET10_KA, PUT_BIG, STATIC, STATIC_BIG, HEAD_STATIC, DELETE, \
    OPTIONS, NOWHERE, POST_HUGE, GET_BODY = range(16)
# respond kinds and size classes
CL, CHUNKED, CLOSE_DELIM, R204, R304, INTERIM, CONN_CLOSE, GARBAGE, HTTP10, HINT, BOTH, R101, HEADLIE = range(13)
SZ_SMALL, SZ_16K, SZ_32K, SZ_64K, SZ_16K_PM1, SZ_4K_N, SZ_100K, SZ_ANY = range(8)
EXTRA, CUT, TRAILER = 1, 2, 4


def ev(op, c=0, o=0, *args):
    assert len(args) <= 4
    return bytes([op, c, o] + list(args) + [0] * (4 - len(args)))


def clock(ms):
    return ev(CLOCK, 0, 0, ms >> 8, ms & 255)


def raw(c, data):
    assert len(data) < 256
    return ev(RAW, c, 0, len(data)) + data


SEEDS = {
    # the 16 KiB poisoning: a response ending at the read buffer's end, a second response behind it
    "poison_16k": ev(OPEN, 0, 0, 0) + ev(OPEN, 0, 0, 0) + ev(CANNED, 0, 0, GET, 0) + ev(ACCEPT) +
    ev(RESPOND, 0, 0, CL, SZ_16K, 0, EXTRA) + ev(CANNED, 1, 0, GET, 0) + ev(RESPOND, 0, 0, CL, SZ_SMALL, 3, 0) +
    ev(ACCEPT) + ev(RESPOND, 0, 1, CL, SZ_SMALL, 3, 0),
    "poison_every_size": b"".join(ev(OPEN, 0, 0, 0) for _ in range(2)) + b"".join(
        ev(CANNED, 0, 0, GET, 0) + ev(ACCEPT) + ev(RESPOND, 0, i, CL, sz, fine, EXTRA) + ev(CANNED, 1, 0, GET, 0) +
        ev(ACCEPT) + ev(RESPOND, 0, i + 1, CL, SZ_SMALL, 1, 0)
        for i, (sz, fine) in enumerate([(SZ_32K, 0), (SZ_64K, 0), (SZ_16K_PM1, 0), (SZ_16K_PM1, 2), (SZ_4K_N, 3)])),
    "head_16k": ev(OPEN) + ev(CANNED, 0, 0, HEAD, 0) + ev(ACCEPT) + ev(RESPOND, 0, 0, CL, SZ_16K, 0, EXTRA) +
    ev(CANNED, 0, 0, GET, 0) + ev(RESPOND, 0, 0, CL, SZ_SMALL, 0, 0),
    "stray_while_parked": ev(OPEN) + ev(OPEN) + ev(CANNED, 0, 0, GET, 0) + ev(ACCEPT) +
    ev(RESPOND, 0, 0, CL, SZ_SMALL, 5, 0) + clock(50) + ev(STRAY, 0, 0, 1) + ev(CANNED, 1, 0, GET, 0) +
    ev(ACCEPT) + ev(RESPOND, 0, 1, CL, SZ_SMALL, 5, 0) + ev(RESPOND, 0, 0, CL, SZ_SMALL, 5, 0),
    "stray_same_turn": ev(OPEN) + ev(OPEN) + ev(CANNED, 0, 0, GET, 0) + ev(ACCEPT) +
    ev(RESPOND, 0, 0, CL, SZ_SMALL, 5, 0) + ev(STRAY, 0, 0, 1) + ev(CANNED, 1, 0, GET, 0) +
    ev(RESPOND, 0, 0, CL, SZ_SMALL, 5, 0) + ev(ACCEPT) + ev(RESPOND, 0, 1, CL, SZ_SMALL, 5, 0),
    # the client's request and stray bytes on the parked connection it will reuse, in one poll batch
    "stray_same_batch": ev(OPEN) + ev(OPEN) + ev(CANNED, 0, 0, GET, 0) + ev(ACCEPT) +
    ev(RESPOND, 0, 0, CL, SZ_SMALL, 5, 0) + ev(CANNED | 0x80, 1, 0, GET, 0) + ev(STRAY, 0, 0, 1) +
    ev(RESPOND, 0, 0, CL, SZ_SMALL, 5, 0) + ev(ACCEPT) + ev(RESPOND, 0, 1, CL, SZ_SMALL, 5, 0),
    "head_204_304_with_content": ev(OPEN) + ev(CANNED, 0, 0, HEAD, 0) + ev(ACCEPT) +
    ev(RESPOND, 0, 0, HEADLIE, SZ_SMALL, 0, 0) + ev(CANNED, 0, 0, GET, 0) + ev(RESPOND, 0, 0, R204, 0, 0, TRAILER) +
    ev(CANNED, 0, 0, GET, 0) + ev(ACCEPT) + ev(RESPOND, 0, 1, R304, 0, 0, TRAILER) + ev(CANNED, 0, 0, GET, 0) +
    ev(ACCEPT) + ev(RESPOND, 0, 2, CL, SZ_SMALL, 0, 0),
    "early_answer_paused_upload": ev(OPEN, 0, 0, 1) + ev(CANNED, 0, 0, POST_HUGE, 0) + ev(ACCEPT) + ev(OREAD) +
    ev(CFLUSH, 0, 0, 0, 0) + clock(1500) + ev(OREAD) + ev(RESPOND, 0, 0, CL, SZ_SMALL, 2, 0) +
    ev(CFLUSH, 0, 0, 0, 0) + ev(CANNED, 0, 0, GET, 0) + ev(ACCEPT) + ev(RESPOND, 0, 1, CL, SZ_SMALL, 2, 0),
    "expect_continue_put": ev(OPEN) + ev(CANNED, 0, 0, PUT_BIG, 0) + ev(ACCEPT) + ev(CFLUSH, 0, 0, 0, 0) +
    ev(RESPOND, 0, 0, INTERIM, SZ_SMALL, 0, 0),
    "close_mid_response": ev(OPEN) + ev(OPEN) + ev(CANNED, 0, 0, GET, 0) + ev(ACCEPT) +
    ev(RESPOND, 0, 0, CL, SZ_64K, 0, CUT) + ev(OCLOSE, 0, 0, 1) + ev(CANNED, 1, 0, GET, 0) + ev(ACCEPT) +
    ev(RESPOND, 0, 1, CHUNKED, SZ_16K, 3, CUT) + ev(OCLOSE, 0, 1, 0) + ev(CANNED, 1, 0, GET, 0) + ev(ACCEPT) +
    ev(RESPOND, 0, 2, CL, SZ_SMALL, 0, 0),
    "reuse_race_reset": ev(OPEN) + ev(CANNED, 0, 0, GET, 0) + ev(ACCEPT) + ev(RESPOND, 0, 0, CL, SZ_SMALL, 0, 0) +
    clock(3000) + ev(OCLOSE, 0, 0, 1) + ev(CANNED, 0, 0, GET, 0) + ev(ACCEPT) + ev(RESPOND, 0, 1, CL, SZ_SMALL, 0, 0),
    "idle_and_pool_deadlines": ev(OPEN) + ev(CANNED, 0, 0, GET, 0) + ev(ACCEPT) +
    ev(RESPOND, 0, 0, HINT, SZ_SMALL, 2, 1) + clock(4000) + ev(CANNED, 0, 0, GET, 0) +
    ev(RESPOND, 0, 0, CL, SZ_SMALL, 2, 0) + clock(6000) + ev(OPEN) + ev(CANNED, 1, 0, GET, 0) + ev(ACCEPT) +
    ev(RESPOND, 0, 1, CL, SZ_SMALL, 0, 0) + clock(25000),
    "pipelined_static_and_proxy": ev(OPEN) + ev(CANNED, 0, 0, STATIC, 0) + ev(CANNED, 0, 0, STATIC_BIG, 0) +
    ev(CANNED, 0, 0, HEAD_STATIC, 0) + ev(CANNED, 0, 0, OPTIONS, 0) + ev(CANNED, 0, 0, NOWHERE, 0) +
    ev(CANNED, 0, 0, GET, 0) + ev(ACCEPT) + ev(RESPOND, 0, 0, CL, SZ_SMALL, 0, 0) + ev(CANNED, 0, 0, DELETE, 0) +
    ev(RESPOND, 0, 0, CHUNKED, SZ_4K_N, 2, TRAILER) + ev(CANNED, 0, 0, POST_CHUNKED, 0) +
    ev(RESPOND, 0, 0, CL, SZ_SMALL, 0, 0),
    "backpressure_both_ways": ev(OPEN, 0, 0, 1) + ev(CREAD) + ev(CANNED, 0, 0, GET, 0) + ev(ACCEPT) +
    ev(RESPOND, 0, 0, CL, SZ_100K, 200, 0) + ev(OFLUSH, 0, 0, 0, 0) + clock(2000) + ev(CREAD) +
    ev(OFLUSH, 0, 0, 0, 0) + ev(OFLUSH, 0, 0, 0, 0),
    "queue_and_max_connections": b"".join(ev(OPEN) for _ in range(6)) +
    b"".join(ev(CANNED, i, 0, GET, 0) for i in range(6)) + b"".join(ev(ACCEPT) for _ in range(4)) +
    b"".join(ev(RESPOND, 0, i, CL, SZ_SMALL, i, 0) for i in range(4)) + clock(100) +
    b"".join(ev(RESPOND, 0, i, CL, SZ_SMALL, i, 0) for i in range(4)) + clock(6000),
    "client_gone_mid_exchange": ev(OPEN) + ev(OPEN) + ev(CANNED, 0, 0, GET, 0) + ev(ACCEPT) +
    ev(CCLOSE, 0, 0, 1) + ev(RESPOND, 0, 0, CL, SZ_SMALL, 0, 0) + ev(CANNED, 1, 0, GET, 0) +
    ev(RESPOND, 0, 0, CL, SZ_SMALL, 0, 0) + ev(CCLOSE, 1, 0, 0),
    "bad_upstream_responses": ev(OPEN) + ev(CANNED, 0, 0, GET, 0) + ev(ACCEPT) + ev(RESPOND, 0, 0, GARBAGE, 0, 0, 0) +
    ev(CANNED, 0, 0, GET, 0) + ev(ACCEPT) + ev(RESPOND, 0, 1, BOTH, 0, 0, 0) + ev(CANNED, 0, 0, GET, 0) +
    ev(ACCEPT) + ev(RESPOND, 0, 2, R101, 0, 0, 0) + ev(CANNED, 0, 0, GET10, 0) + ev(ACCEPT) +
    ev(RESPOND, 0, 3, CLOSE_DELIM, SZ_SMALL, 9, 0),
    "crlf_flood_and_raw": ev(OPEN) + raw(0, b"\r\n" * 127) + raw(0, b"\r\n" * 100) + ev(OPEN) +
    ev(CANNED, 1, 0, STATIC, 0) + raw(0, b"GET /p/7 HTTP/1.1\r\nHost: a\r\n\r\n") + ev(ACCEPT) +
    ev(RESPOND, 0, 0, CL, SZ_SMALL, 0, 0),
    "drain_with_work_in_flight": ev(OPEN) + ev(OPEN) + ev(CANNED, 0, 0, GET, 0) + ev(CANNED, 1, 0, STATIC, 0) +
    ev(ACCEPT) + ev(DRAIN, 0, 0, 0) + ev(RESPOND, 0, 0, CL, SZ_SMALL, 0, 0) + clock(6000),
    "http10_keepalive": ev(OPEN) + ev(CANNED, 0, 0, GET10_KA, 0) + ev(ACCEPT) + ev(RESPOND, 0, 0, CHUNKED, 0, 0, 0) +
    ev(CANNED, 0, 0, GET10_KA, 0) + ev(RESPOND, 0, 0, HTTP10, 0, 0, 0) + ev(CANNED, 0, 0, GET_CLOSE, 0) +
    ev(ACCEPT) + ev(RESPOND, 0, 1, CONN_CLOSE, SZ_SMALL, 0, 0),
    "split_requests": ev(OPEN) + ev(CANNED, 0, 0, POST, 7) + clock(500) + ev(CFLUSH, 0, 0, 1, 1) +
    ev(CFLUSH, 0, 0, 0, 0) + ev(ACCEPT) + ev(RESPOND, 0, 0, CL, SZ_SMALL, 0, CUT) + ev(OFLUSH, 0, 0, 0, 0) +
    ev(CANNED, 0, 0, GET_BODY, 3) + clock(11000),
}

def h2_request_bytes(path, method="GET", body=None):
    """A client preface, SETTINGS and one request, as an h2 client sends them (python3-h2)."""
    import h2.config
    import h2.connection
    c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(1, [(":method", method), (":path", path), (":scheme", "http"), (":authority", "a")],
                   end_stream=body is None)
    if body is not None:
        c.send_data(1, body, end_stream=True)
    return c.data_to_send()


try:
    SEEDS["h2_client_through_proxy"] = ev(OPEN) + raw(0, h2_request_bytes("/p/3")) + ev(ACCEPT) + \
        ev(RESPOND, 0, 0, CHUNKED, SZ_4K_N, 2, TRAILER) + raw(0, h2_request_bytes("/p/4", "POST", b"x" * 30)[24:])
    SEEDS["h2_client_static"] = ev(OPEN) + raw(0, h2_request_bytes("/s/big.bin")) + clock(100)
except ImportError:  # python3-h2 missing: those two seeds are skipped
    pass

# issue 10: requests refused before a route (or an origin) sees them, and what passes on when they are not
SEEDS["strict_requests"] = ev(OPEN) + ev(OPEN) + \
    raw(0, b"POST /p/1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n") + \
    raw(1, b"GET /s/../p/2 HTTP/1.1\r\nHost: a\r\nConnection: Host, X-A\r\nX-A: 1\r\n\r\n") + ev(ACCEPT) + \
    ev(RESPOND, 0, 0, CHUNKED, SZ_SMALL, 0, TRAILER) + \
    raw(1, b"GET http://b:8/p/%2e/3?q HTTP/1.1\r\nHost: c\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n") + \
    ev(RESPOND, 0, 0, CL, SZ_SMALL, 0, 0) + raw(1, b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n")
SEEDS["strict_refusals"] = b"".join(ev(OPEN) + raw(i, r) for i, r in enumerate([
    b"POST /p/1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
    b"POST /p/1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n0\r\n\r\n",
    b"GET /p/1 HTTP/1.1\r\nHost: a\", for=6.6.6.6;host=\"b\r\n\r\n",
    b"GET http://u@a/p/1 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /p/../../x HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /p/..%2fx HTTP/1.1\r\nHost: a\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
]))


def h2_frame(typ, flags, sid, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([typ, flags]) + sid.to_bytes(4, "big") + payload


try:
    import hpack
    _block = hpack.Encoder().encode([(":method", "GET"), (":path", "/s/x"), (":scheme", "http"), (":authority", "a")])
    # stream 5 first, then HEADERS on 3, which the client skipped: GOAWAY(PROTOCOL_ERROR)
    SEEDS["h2_skipped_stream_id"] = ev(OPEN) + raw(0, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0) +
                                                   h2_frame(1, 5, 5, _block) + h2_frame(1, 5, 3, _block))
except ImportError:
    pass

if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "worker")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, "seed_" + name), "wb") as f:
            f.write(data)
    print("wrote %d seeds to %s" % (len(SEEDS), out))
