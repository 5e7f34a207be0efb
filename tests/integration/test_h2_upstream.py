"""HTTP/2 and gRPC to upstreams (issue 12): `[upstream NAME] protocol = h2` and `--proxy h2c://HOST:PORT`.

Real peers: a Python gRPC server and client (Debian's python3-grpcio) through tether over h2c and TLS; origins
written with python3-h2 (`H2Origin` below) that send GOAWAY with a chosen last-stream-id or stop answering PINGs;
nghttpd (nghttp2-server) behind tether with h2load (nghttp2-client) in front.
"""

import os
import select
import shutil
import socket
import subprocess
import threading
import time
from concurrent import futures

import pytest

from conftest import LATE, SLOW, HttpConn
from pool_support import one_request, wait_until
from proxy_util import closed_port, procs  # noqa: F401
from threaded_server import ThreadedServer
from tls_util import certs, tls_args, tls_port  # noqa: F401

grpc = pytest.importorskip("grpc")
h2_connection = pytest.importorskip("h2.connection")
import hpack  # noqa: E402
import h2.config  # noqa: E402
import h2.events  # noqa: E402
import h2.settings  # noqa: E402
from hyperframe.frame import GoAwayFrame  # noqa: E402

UP = "backend"
PATTERN = b"0123456789abcdef" * 4096  # 64 KiB


def h2_config(server, **keys):
    lines = ["[upstream %s]" % UP, "server = %s" % server, "protocol = h2"]
    lines += ["%s = %s" % kv for kv in keys.items()]
    lines += ["", "[route /]", "upstream = %s" % UP, ""]
    return "\n".join(lines)


def h2m(t, name, **labels):
    return sum(v for k, v in t.metrics().items()
               if k.startswith(name + "{") and all('%s="%s"' % kv in k for kv in labels.items()))


# ---- a python3-h2 origin ----

class H2Origin(ThreadedServer):
    """An h2c origin, one thread per connection. Each request is answered 200 with "PATH BODY" unless `hook`
    (called as hook(origin, conn_no, stream_id, path)) returns False: then the request is left unanswered.
    `requests` records (conn_no, stream_id, method, path, body) in arrival order; `conns` counts accepts.
    `goaway_after` = (N, LAST): once N requests arrived on the first connection a GOAWAY(NO_ERROR, LAST) is written,
    then the streams at or below LAST are answered and those above never are. `deaf_after` = N: on the first
    connection, after N requests were answered, the origin stops reading (and answering PINGs) for good.
    `refuse_first` = K: the first K requests are reset with REFUSED_STREAM. A path starting "/hang" is never
    answered. `resets` records (conn_no, stream_id, error_code) of every RST_STREAM received. A path "/big" is
    answered with `big` bytes of pattern, sent as the stream's flow-control window allows (`big_sent` counts them).
    A path starting "/hold" is answered once `release` is set. `host` and `port` say where it listens."""

    def __init__(self, goaway_after=None, deaf_after=None, max_streams=100, refuse_first=0, big=0, host="127.0.0.1",
                 port=0):
        self.goaway_after = goaway_after
        self.deaf_after = deaf_after
        self.max_streams = max_streams
        self.refuse_left = refuse_first
        self.big = big
        self.big_sent = 0
        self.refused = []
        self.resets = []
        self.heads = {}  # path -> the request's header list, as received
        self.goaways = []  # (conn_no, error_code) of every GOAWAY received
        self.requests = []
        self.pings = 0
        self.goaway_sent = threading.Event()
        self.release = threading.Event()
        self.deaf = threading.Event()
        ThreadedServer.__init__(self, host, port)

    def handle(self, s, no):
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        conn = h2_connection.H2Connection(config=cfg)
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams})
        s.sendall(conn.data_to_send())
        streams = {}  # id -> [method, path, body]
        pending = []  # complete requests held back until the GOAWAY
        answered = 0
        bigs = {}  # stream id -> bytes of /big still to send
        deadline = time.monotonic() + 60 * SLOW
        try:
            while not self.stopping and time.monotonic() < deadline:
                if no == 1 and self.deaf_after is not None and answered >= self.deaf_after and not pending:
                    self.deaf.set()
                    while not self.stopping:  # a black hole: nothing read, no PING answered
                        time.sleep(0.05)
                    return
                r, _, _ = select.select([s], [], [], 0.05)
                held = any(p[1].startswith("/hold") for p in pending)
                if not r and not (held and self.release.is_set()):
                    continue
                data = s.recv(65536) if r else None
                if r and not data:
                    return
                for ev in conn.receive_data(data) if data else []:
                    if isinstance(ev, h2.events.PingReceived):
                        self.pings += 1
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        with self.lock:
                            self.goaways.append((no, ev.error_code))
                    elif isinstance(ev, h2.events.StreamReset) and ev.stream_id in bigs:
                        del bigs[ev.stream_id]
                        with self.lock:
                            self.resets.append((no, ev.stream_id, ev.error_code))
                    elif isinstance(ev, h2.events.StreamReset):
                        with self.lock:
                            self.resets.append((no, ev.stream_id, ev.error_code))
                    elif isinstance(ev, h2.events.RequestReceived):
                        hd = dict(ev.headers)
                        streams[ev.stream_id] = [hd[":method"], hd[":path"], b""]
                        with self.lock:
                            self.heads[hd[":path"]] = list(ev.headers)
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        if ev.stream_id in streams:
                            streams[ev.stream_id][2] += ev.data
                    elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in streams:
                        method, path, body = streams.pop(ev.stream_id)
                        with self.lock:
                            self.requests.append((no, ev.stream_id, method, path, body))
                        pending.append((ev.stream_id, path, body))
                if no == 1 and self.goaway_after is not None:
                    n, last = self.goaway_after
                    if not self.goaway_sent.is_set():
                        if len(pending) < n:
                            s.sendall(conn.data_to_send())
                            continue
                        f = GoAwayFrame(0)
                        f.last_stream_id = last
                        f.error_code = 0
                        s.sendall(conn.data_to_send() + f.serialize())  # behind h2's back: it still answers
                        self.goaway_sent.set()
                    pending = [p for p in pending if p[0] <= last]
                kept = []  # held back for `release`
                for sid, path, body in pending:
                    if path.startswith("/hang"):
                        continue
                    if path.startswith("/hold") and not self.release.is_set():
                        kept.append((sid, path, body))
                        continue
                    if path == "/big":
                        conn.send_headers(sid, [(":status", "200"), ("content-length", str(self.big))])
                        bigs[sid] = self.big
                        answered += 1
                        continue
                    with self.lock:
                        refuse = self.refuse_left > 0
                        self.refuse_left -= refuse
                    if refuse:
                        self.refused.append(path)
                        conn.reset_stream(sid, error_code=7)  # REFUSED_STREAM: not processed (RFC 9113 8.7)
                        continue
                    payload = ("%s " % path).encode() + body
                    conn.send_headers(sid, [(":status", "200"), ("content-length", str(len(payload)))])
                    conn.send_data(sid, payload, end_stream=True)
                    answered += 1
                pending = kept
                for sid in list(bigs):  # as much as the windows allow
                    while bigs[sid] > 0:
                        n = min(bigs[sid], conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                        if n <= 0:
                            break
                        conn.send_data(sid, PATTERN[:n], end_stream=n == bigs[sid])
                        bigs[sid] -= n
                        self.big_sent += n
                    if bigs[sid] == 0:
                        del bigs[sid]
                s.sendall(conn.data_to_send())
        except (OSError, Exception):
            return
        finally:
            if not self.deaf.is_set() or no != 1:
                s.close()


@pytest.fixture
def h2origins():
    started = []

    def start(**kw):
        o = H2Origin(**kw)
        started.append(o)
        return o

    yield start
    for o in started:
        o.stop()


# ---- basics ----

def test_h1_and_h2_clients_reach_an_h2c_origin_over_one_connection(tether, h2origins):
    o = h2origins()
    t = tether("--workers", "1", "--proxy", "h2c://127.0.0.1:%d" % o.port).wait_ready()
    for i in range(5):
        r, _ = one_request("127.0.0.1", t.port, "POST", "/p%d?q=1" % i, body=b"x" * (1000 * i))
        assert r.status == 200, r
        assert r.body == b"/p%d?q=1 " % i + b"x" * (1000 * i)
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--data-binary", "hello", t.url("/h2c")],
                         stdout=subprocess.PIPE, timeout=20 * SLOW)
    assert out.stdout == b"/h2c hello"
    r, _ = one_request("127.0.0.1", t.port, "GET", "/te", headers={"TE": "trailers, deflate", "X-A": "1"})
    assert r.status == 200
    head = o.heads["/te"]
    assert ("te", "trailers") in head and ("x-a", "1") in head  # TE: trailers passes, lower-case names
    assert dict(head)[":authority"] == "t" and dict(head)[":scheme"] == "http"  # the Host forwarded, as to HTTP/1.1
    assert not {n for n, _ in head} & {"host", "connection", "keep-alive", "transfer-encoding", "upgrade"}
    # the request id is new for every request: never indexed, so it does not churn the HPACK table (RFC 7541 6.2.3)
    never = {n for n, _ in (h for h in head if isinstance(h, hpack.NeverIndexedHeaderTuple))}
    assert never == {"x-request-id"}, head
    assert r.header("Via") == "2 tether"  # the protocol received from the origin (RFC 9110 7.6.3)
    assert o.conns == 1  # seven exchanges from seven client connections: one upstream connection
    assert {r[0] for r in o.requests} == {1}
    assert h2m(t, "tether_upstream_h2_connections_opened_total") == 1
    assert h2m(t, "tether_upstream_h2_streams") == 0


def test_protocol_key_is_checked(tether):
    cfg = "[upstream b]\nserver = 127.0.0.1:1\nprotocol = h3\n\n[route /]\nupstream = b\n"
    t = tether("-t", config=cfg, ready=False)
    assert t.proc.wait(10 * SLOW) == 2
    t.join_output()
    assert "tether.ini:3: protocol: expected http1, h2 or auto" in t.stderr()


def test_h2c_server_with_another_protocol_is_refused(tether):
    cfg = "[upstream b]\nserver = h2c://127.0.0.1:1\nprotocol = http1\n\n[route /]\nupstream = b\n"
    t = tether("-t", config=cfg, ready=False)
    assert t.proc.wait(10 * SLOW) == 2
    t.join_output()
    assert "[upstream b] an h2c:// server needs protocol = h2 (the section sets http1)" in t.stderr()


def test_h2_over_tls_to_a_server_without_alpn_h2_is_a_tls_error(tether, certs):
    """protocol = h2 (not auto) to an https:// server that selects http/1.1: 502 tls_error, never HTTP/1.1."""
    from test_proxy_tls import TlsOrigin
    h1 = TlsOrigin(certs.main, alpn=("http/1.1",))
    h1.start()
    try:
        t = tether("--workers", "1", config=h2_config("https://127.0.0.1:%d" % h1.port, tls_ca=certs.ca)).wait_ready()
        for _ in range(2):
            r, _ = one_request("127.0.0.1", t.port, "GET", "/x")
            assert r.status == 502 and r.header("X-Tether-Cause") == "tls_error", r
        wait_until(lambda: len(h1.handshakes) == 2, 5, "the origin's handshake records")  # its threads note them
        assert [h["alpn"] for h in h1.handshakes] == ["http/1.1", "http/1.1"]  # h2 offered each time, refused
    finally:
        h1.stop()


def test_a_slow_client_holds_its_stream_back_not_tether_memory(tether, h2origins):
    """h2_upstream_window = 256k: a client that reads nothing stops its stream at the origin (the stream's credit
    comes back only as the client takes the bytes), then gets every byte once it reads."""
    total = 64 << 20
    o = h2origins(big=total)
    t = tether("--workers", "1", config=h2_config("127.0.0.1:%d" % o.port, h2_upstream_window="256k")).wait_ready()
    c = HttpConn(*t.addr, timeout=30)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    c.request("GET", "/big")
    wait_until(lambda: o.big_sent > 0, 5, "the origin sending")
    prev = -1
    deadline = time.monotonic() + 10 * SLOW
    while o.big_sent != prev and time.monotonic() < deadline:  # until the origin is stalled by the window
        prev = o.big_sent
        time.sleep(0.3)
    assert o.big_sent < 16 << 20, o.big_sent  # the window, tether's output mark and socket buffers; not 64 MiB
    got = 0
    data = b""
    while got < total:
        chunk = c.sock.recv(1 << 20)
        assert chunk, got
        if not data.endswith(b"\r\n\r\n") and b"\r\n\r\n" not in data:
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % total in head, head
                got += len(rest)
                data = b"\r\n\r\n"
            continue
        got += len(chunk)
    assert got == total and o.big_sent == total


def test_websocket_upgrade_to_an_h2_upstream_is_501(tether, h2origins):
    o = h2origins()
    t = tether("--workers", "1", config=h2_config("127.0.0.1:%d" % o.port)).wait_ready()
    r, _ = one_request("127.0.0.1", t.port, "GET", "/ws", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13"})
    assert r.status == 501, r
    assert o.requests == []


def test_least_conn_counts_streams_in_flight(tether, h2origins):
    a, b = h2origins(), h2origins()
    cfg = ("[upstream %s]\nserver = 127.0.0.1:%d\nserver = 127.0.0.1:%d\nprotocol = h2\nbalance = least_conn\n\n"
           "[route /]\nupstream = %s\n" % (UP, a.port, b.port, UP))
    t = tether("--workers", "1", config=cfg).wait_ready()
    c = HttpConn(*t.addr, timeout=20)
    c.request("GET", "/hang")
    wait_until(lambda: len(a.requests) + len(b.requests) == 1, 5, "the hanging request at an origin")
    busy, idle = (a, b) if a.requests else (b, a)
    for i in range(4):
        r, _ = one_request("127.0.0.1", t.port, "GET", "/n%d" % i)
        assert r.status == 200, r
    assert [p for _, _, _, p, _ in busy.requests] == ["/hang"]  # one stream in flight there: the others go on
    assert len(idle.requests) == 4
    c.close()


# ---- gRPC ----

SVC = "tether.test.Echo"


def _unary(req, ctx):
    return b"echo:" + req


def _server_stream(req, ctx):
    for i in range(int(req)):
        yield b"item%d" % i


def _client_stream(it, ctx):
    return b"|".join(it)


def _bidi(it, ctx):
    for m in it:
        yield m.upper()


def _slow(req, ctx):
    for _ in range(100):
        if not ctx.is_active():
            break
        time.sleep(0.05)
    return b"late"


def _fail(req, ctx):
    ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + req.decode())


@pytest.fixture
def grpc_server(certs):
    handler = grpc.method_handlers_generic_handler(SVC, {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
        "Slow": grpc.unary_unary_rpc_method_handler(_slow),
        "Fail": grpc.unary_unary_rpc_method_handler(_fail),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    plain = server.add_insecure_port("127.0.0.1:0")
    with open(certs.main.key, "rb") as f:
        key = f.read()
    with open(certs.main.cert, "rb") as f:
        cert = f.read()
    secure = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    server.start()
    yield plain, secure
    server.stop(0)


def grpc_channel(t, certs, tls):
    if not tls:
        return grpc.insecure_channel("127.0.0.1:%d" % t.port)
    with open(certs.ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    return grpc.secure_channel("127.0.0.1:%d" % tls_port(t), creds,
                               options=(("grpc.ssl_target_name_override", "localhost"),))


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
def test_grpc_calls_through_tether(tether, certs, grpc_server, tls):
    plain, secure = grpc_server
    if tls:  # TLS on both sides: the client to tether, tether to the origin (ALPN h2)
        cfg = h2_config("https://127.0.0.1:%d" % secure, tls_ca=certs.ca)
        t = tether("--workers", "1", *tls_args(certs), config=cfg).wait_ready()
    else:
        t = tether("--workers", "1", config=h2_config("127.0.0.1:%d" % plain)).wait_ready()
    ch = grpc_channel(t, certs, tls)
    try:
        timeout = 20 * SLOW
        assert ch.unary_unary("/%s/Unary" % SVC)(b"hi", timeout=timeout) == b"echo:hi"
        assert list(ch.unary_stream("/%s/ServerStream" % SVC)(b"5", timeout=timeout)) == [
            b"item%d" % i for i in range(5)]
        assert ch.stream_unary("/%s/ClientStream" % SVC)(iter([b"a", b"bb", b"ccc"]), timeout=timeout) == b"a|bb|ccc"
        # bidirectional, one message at a time: each answer comes before the next message is sent (no buffering)
        q = []
        cv = threading.Condition()

        def gen():
            for m in (b"one", b"two", b"three"):
                with cv:
                    yield m
                    cv.wait_for(lambda: len(q) > 0, timeout=timeout)
                    q.pop()

        got = []
        for m in ch.stream_stream("/%s/Bidi" % SVC)(gen(), timeout=timeout):
            got.append(m)
            with cv:
                q.append(m)
                cv.notify_all()
        assert got == [b"ONE", b"TWO", b"THREE"]
        # a status code with a message passes through (trailers, or a Trailers-Only head)
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/%s/Fail" % SVC)(b"x", timeout=timeout)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert e.value.details() == "no such thing: x"
        # a deadline
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/%s/Slow" % SVC)(b"", timeout=0.5)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        ch.close()
    assert h2m(t, "tether_upstream_h2_connections_opened_total") == 1


def test_grpc_timeout_is_the_exchange_deadline(tether, h2origins):
    """An HTTP/1.1 client without a deadline of its own, an origin that ignores grpc-timeout (it never answers
    /hang): tether ends the call at grpc-timeout with DEADLINE_EXCEEDED (grpc-status 4 in the trailers) and resets
    the upstream stream with CANCEL."""
    o = h2origins()
    t = tether("--workers", "1", config=h2_config("127.0.0.1:%d" % o.port)).wait_ready()
    c = HttpConn(*t.addr, timeout=20)
    msg = b"\x00\x00\x00\x00\x00"  # one empty gRPC message
    start = time.monotonic()
    c.send(b"POST /hang/Slow HTTP/1.1\r\nHost: t\r\nContent-Type: application/grpc\r\nTE: trailers\r\n"
           b"grpc-timeout: 300m\r\nContent-Length: %d\r\n\r\n%s" % (len(msg), msg))
    data = b""
    while b"\r\n0\r\n" not in data or not data.endswith(b"\r\n\r\n"):
        chunk = c.sock.recv(65536)
        assert chunk, data
        data += chunk
    took = time.monotonic() - start
    assert data.startswith(b"HTTP/1.1 200"), data
    assert b"grpc-status: 4" in data, data
    assert 0.3 <= took < 0.3 + 2 * LATE + 1.0 * SLOW, took
    assert t.metric("tether_upstream_generated_total", upstream=UP, cause="grpc_deadline") == 1
    wait_until(lambda: o.resets == [(1, 1, 8)], 5, "RST_STREAM CANCEL at the origin")
    hd = [r for r in o.requests if r[3] == "/hang/Slow"]
    assert len(hd) == 1 and hd[0][4] == msg


def test_tether_errors_are_grpc_shaped(tether):
    """The origin is down: a gRPC client reads UNAVAILABLE with the cause, not an HTTP 502."""
    t = tether("--workers", "1", config=h2_config("127.0.0.1:%d" % closed_port())).wait_ready()
    ch = grpc.insecure_channel("127.0.0.1:%d" % t.port)
    try:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/%s/Unary" % SVC)(b"hi", timeout=20 * SLOW)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "connect_refused" in e.value.details()
    finally:
        ch.close()


# ---- GOAWAY, REFUSED_STREAM, PING ----

def test_goaway_replays_the_streams_above_last_stream_id(tether, h2origins):
    n, last = 50, 51  # client stream ids are odd: 1..99; 1..51 are 26 streams, 24 are above
    o = h2origins(goaway_after=(n, last))
    t = tether("--workers", "1", config=h2_config("127.0.0.1:%d" % o.port)).wait_ready()
    results = [None] * n

    def one(i):
        try:
            r, _ = one_request("127.0.0.1", t.port, "POST", "/r%d" % i, body=b"b%d" % i, timeout=30)
            results[i] = (r.status, r.body)
        except Exception as e:  # noqa: BLE001
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60 * SLOW)
    for i, r in enumerate(results):
        assert r == (200, b"/r%d b%d" % (i, i)), (i, r)
    first = [(sid, path) for c, sid, _, path, _ in o.requests if c == 1]
    later = [path for c, _, _, path, _ in o.requests if c != 1]
    below = [p for sid, p in first if sid <= last]
    above = [p for sid, p in first if sid > last]
    assert len(first) == n and len(below) == 26 and len(above) == 24, first
    assert sorted(later) == sorted(above)  # every stream above was replayed (POST: whatever the method) ...
    assert not set(below) & set(later)  # ... and none at or below was sent twice
    assert t.metric("tether_upstream_h2_replays_total", upstream=UP, reason="goaway") == 24
    assert h2m(t, "tether_upstream_h2_goaways_total", code="NO_ERROR") == 1
    assert all(v == 0 for k, v in t.metrics().items() if k.startswith("tether_upstream_generated_total"))


def test_missed_ping_closes_the_connection_and_fails_over(tether, h2origins):
    """The origin answers one request, then reads nothing more (PINGs unanswered) while a GET is in flight:
    the connection is closed within h2_ping_interval + h2_ping_timeout, the GET is replayed on a new connection."""
    o = h2origins(deaf_after=1)
    t = tether("--workers", "1", config=h2_config("127.0.0.1:%d" % o.port, h2_ping_interval="300ms",
                                                  h2_ping_timeout="300ms")).wait_ready()
    r, _ = one_request("127.0.0.1", t.port, "GET", "/first")
    assert r.status == 200 and o.conns == 1
    wait_until(o.deaf.is_set, 5, "the origin going deaf")
    start = time.monotonic()
    r, took = one_request("127.0.0.1", t.port, "GET", "/second", timeout=30)
    assert r.status == 200 and r.body == b"/second ", r
    assert took < 0.6 + 2 * LATE + 1.0 * SLOW, took
    assert o.conns == 2
    assert [(c, p) for c, _, _, p, _ in o.requests] == [(1, "/first"), (2, "/second")]
    assert t.metric("tether_upstream_h2_ping_timeouts_total", upstream=UP, server="127.0.0.1:%d" % o.port) == 1
    assert t.metric("tether_upstream_h2_replays_total", upstream=UP, reason="ping_timeout") == 1
    assert time.monotonic() - start >= 0.3


def test_idle_connection_answers_pings_and_closes_with_goaway_after_idle_timeout(tether, h2origins):
    o = h2origins()
    t = tether("--workers", "1", config=h2_config("127.0.0.1:%d" % o.port, h2_ping_interval="200ms",
                                                  idle_timeout="1500ms")).wait_ready()
    r, _ = one_request("127.0.0.1", t.port, "GET", "/x")
    assert r.status == 200
    wait_until(lambda: o.pings >= 2, 5, "PINGs on the idle connection")
    assert t.metric("tether_upstream_h2_ping_rtt_seconds", upstream=UP, server="127.0.0.1:%d" % o.port) > 0
    wait_until(lambda: h2m(t, "tether_upstream_h2_idle_closed_total") == 1, 5, "the idle close")
    wait_until(lambda: o.goaways == [(1, 0)], 5, "GOAWAY(NO_ERROR) at the origin")
    assert h2m(t, "tether_upstream_h2_connections") == 0
    r, _ = one_request("127.0.0.1", t.port, "GET", "/y")
    assert r.status == 200 and o.conns == 2
    assert t.stop() == 0  # shutdown: the open connection goes with GOAWAY too
    wait_until(lambda: o.goaways == [(1, 0), (2, 0)], 5, "GOAWAY(NO_ERROR) at shutdown")


def test_refused_stream_is_replayed_whatever_the_method(tether, h2origins):
    o = h2origins(refuse_first=3)
    t = tether("--workers", "1", config=h2_config("127.0.0.1:%d" % o.port)).wait_ready()
    for i in range(5):
        r, _ = one_request("127.0.0.1", t.port, "POST", "/r%d" % i, body=b"b%d" % i)
        assert r.status == 200 and r.body == b"/r%d b%d" % (i, i), r
    paths = [p for _, _, _, p, _ in o.requests]
    assert o.refused == ["/r0", "/r0", "/r0"]  # refused three times, answered the fourth: at most 3 replays
    assert paths.count("/r0") == 4 and all(paths.count("/r%d" % i) == 1 for i in range(1, 5))
    assert t.metric("tether_upstream_h2_replays_total", upstream=UP, reason="refused_stream") == 3


def test_refused_stream_beyond_three_replays_is_a_502(tether, h2origins):
    o = h2origins(refuse_first=4)
    t = tether("--workers", "1", config=h2_config("127.0.0.1:%d" % o.port)).wait_ready()
    r, _ = one_request("127.0.0.1", t.port, "POST", "/r", body=b"b")
    assert r.status == 502 and r.header("X-Tether-Cause") == "reset_before_response", r
    assert len(o.requests) == 4


def test_a_client_that_leaves_resets_its_upstream_stream(tether, h2origins):
    o = h2origins()
    t = tether("--workers", "1", config=h2_config("127.0.0.1:%d" % o.port)).wait_ready()
    c = HttpConn(*t.addr)
    c.request("GET", "/hang")
    wait_until(lambda: len(o.requests) == 1, 5, "the request at the origin")
    assert h2m(t, "tether_upstream_h2_streams") == 1
    c.close()
    wait_until(lambda: o.resets == [(1, 1, 8)], 5, "RST_STREAM CANCEL at the origin")
    assert h2m(t, "tether_upstream_h2_streams") == 0
    r, _ = one_request("127.0.0.1", t.port, "GET", "/after")
    assert r.status == 200 and o.conns == 1  # the connection goes on


def test_protocol_auto_takes_alpn_answer(tether, certs):
    """protocol = auto on https://: an origin that selects h2 gets HTTP/2, one that only speaks http/1.1 gets
    HTTP/1.1 (the first request included: it moves to the HTTP/1.1 pool before anything was sent)."""
    from test_proxy_tls import TlsOrigin
    h1 = TlsOrigin(certs.main, alpn=("http/1.1",))
    h1.start()
    www = os.path.join(certs.dir, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "f.txt"), "w") as f:
        f.write("from h2 origin\n")
    h2o = tether("--workers", "1", "--root", www, *tls_args(certs)).wait_ready()
    cfg = ("[upstream a]\nserver = https://127.0.0.1:%d\nprotocol = auto\ntls_ca = %s\n\n"
           "[upstream b]\nserver = https://127.0.0.1:%d\nprotocol = auto\ntls_ca = %s\n\n"
           "[route /f.txt]\nupstream = a\n\n[route /]\nupstream = b\n"
           % (tls_port(h2o), certs.ca, h1.port, certs.ca))
    t = tether("--workers", "1", config=cfg).wait_ready()
    try:
        for _ in range(2):
            r, _ = one_request("127.0.0.1", t.port, "GET", "/f.txt")
            assert r.status == 200 and r.body == b"from h2 origin\n", r
            r, _ = one_request("127.0.0.1", t.port, "GET", "/echo")
            assert r.status == 200, r
        assert t.metric("tether_upstream_h2_connections_opened_total", upstream="a",
                        server="127.0.0.1:%d" % tls_port(h2o)) == 1
        # b answered http/1.1 in ALPN: no HTTP/2 connection was opened; its requests took one HTTP/1.1 connection
        assert t.metric("tether_upstream_h2_connections_opened_total", upstream="b", server="127.0.0.1:%d" % h1.port) == 0
        assert t.metric("tether_upstream_connections_opened_total", upstream="b", server="127.0.0.1:%d" % h1.port) == 1
        assert t.metric("tether_upstream_connections_opened_total", upstream="a",
                        server="127.0.0.1:%d" % tls_port(h2o)) == 0
    finally:
        h1.stop()


@pytest.mark.parametrize("max_connections", [0, 2])
def test_streams_fill_connections_as_the_servers_settings_allow(tether, h2origins, max_connections):
    """The origin allows 2 concurrent streams (SETTINGS_MAX_CONCURRENT_STREAMS): 5 requests in flight take 3
    connections; with max_connections = 2, 4 are in flight and the fifth waits, then gets 503 pool_exhausted."""
    o = h2origins(max_streams=2)
    t = tether("--workers", "1", config=h2_config("127.0.0.1:%d" % o.port, max_connections=max_connections,
                                                  queue_timeout="1s")).wait_ready()
    clients = []
    try:
        for i in range(5):
            c = HttpConn(*t.addr, timeout=20)
            c.request("GET", "/hang%d" % i)
            clients.append(c)
        want = 5 if max_connections == 0 else 4
        wait_until(lambda: len(o.requests) == want, 10, "%d streams at the origin" % want)
        assert o.conns == (3 if max_connections == 0 else 2)
        assert sorted(sum(1 for r in o.requests if r[0] == n) for n in range(1, o.conns + 1))[-1] == 2
        if max_connections:
            r = clients[4].response()
            assert r.status == 503 and r.header("X-Tether-Cause") == "pool_exhausted", r
            assert len(o.requests) == 4
    finally:
        for c in clients:
            c.close()
    wait_until(lambda: h2m(t, "tether_upstream_h2_streams") == 0, 5, "every stream reset")


def test_tls_reconnects_resume_the_session(tether, certs):
    """protocol = h2 to an https:// origin (a second tether, ALPN h2): after the idle close the next connection
    resumes the TLS session the first one received."""
    www = os.path.join(certs.dir, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "f.txt"), "w") as f:
        f.write("tls\n")
    origin = tether("--workers", "1", "--root", www, *tls_args(certs)).wait_ready()
    sv = "127.0.0.1:%d" % tls_port(origin)
    t = tether("--workers", "1", config=h2_config("https://" + sv, tls_ca=certs.ca, idle_timeout="300ms")).wait_ready()
    r, _ = one_request("127.0.0.1", t.port, "GET", "/f.txt")
    assert r.status == 200 and r.body == b"tls\n", r
    wait_until(lambda: t.metric("tether_upstream_h2_idle_closed_total", upstream=UP, server=sv) == 1, 5, "idle close")
    r, _ = one_request("127.0.0.1", t.port, "GET", "/f.txt")
    assert r.status == 200
    assert t.metric("tether_upstream_h2_tls_full_handshakes_total", upstream=UP, server=sv) == 1
    assert t.metric("tether_upstream_h2_tls_resumed_handshakes_total", upstream=UP, server=sv) == 1


# ---- one connection for 100 concurrent streams ----

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def established_to(port):
    out = subprocess.run(["ss", "-Htn", "state", "established", "( dport = :%d )" % port],
                         stdout=subprocess.PIPE, timeout=10).stdout.decode()
    return len([ln for ln in out.splitlines() if ln.strip()])


@pytest.mark.skipif(not shutil.which("nghttpd") or not shutil.which("h2load"), reason="nghttp2-server/-client")
def test_h2load_100_streams_use_one_upstream_connection(tether, procs, tmp_path):  # noqa: F811
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_bytes(b"x" * 1024)
    port = free_port()
    procs(subprocess.Popen(["nghttpd", "--no-tls", "-d", str(www), str(port)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL))
    wait_until(lambda: subprocess.run(["nghttp", "-s", "http://127.0.0.1:%d/" % port], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL).returncode == 0, 10, "nghttpd")
    t = tether("--workers", "1", "--proxy", "h2c://127.0.0.1:%d" % port).wait_ready()
    load = procs(subprocess.Popen(["h2load", "-n", "900", "-c", "1", "-m", "100", t.url("/index.html")],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    most = 0
    deadline = time.monotonic() + 60 * SLOW
    while load.poll() is None and time.monotonic() < deadline:
        most = max(most, established_to(port))
        time.sleep(0.05)
    out = load.communicate(timeout=60 * SLOW)[0].decode()
    most = max(most, established_to(port))  # the connection stays open (idle_timeout): a fast run is seen too
    assert "900 succeeded" in out, out  # under the client side's max_requests (1000)
    assert most == 1
    assert h2m(t, "tether_upstream_h2_connections_opened_total") == 1
