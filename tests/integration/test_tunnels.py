"""Tunnels and interim responses (issue 11): HTTP/1.1 Upgrade through a proxy route (RFC 9110 7.8, RFC 6455),
the tunnel's lifecycle (idle timeout, half-close, backpressure, drain, close reasons, the access-log line), and
1xx forwarding (RFC 9110 15.2: 103 Early Hints to HTTP/1.1 and HTTP/2 clients, one 100 Continue, none to
HTTP/1.0), plus server-sent events passing unbuffered.

Peers: `RawOrigin` below (a hand-written HTTP/1.1 origin for precise control of what goes on the wire), Debian's
`python3-websockets` for a real WebSocket origin and client, Node's `http` 'upgrade' event when node is
installed, the `h2` package for an HTTP/2 client.
"""

import asyncio
import base64
import hashlib
import os
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import SLOW, HttpConn
from proxy_util import RssSampler, clean_tether, procs, read_head, upstream_config, vm_rss_kib  # noqa: F401
from tls_util import H2Conn, certs, client_context, tls_args, tls_port  # noqa: F401

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85"
WS_REQ = (b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def ws_accept(key):
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


def deadline(seconds):
    return time.monotonic() + seconds * SLOW


# ---- a hand-written origin ----

class RawOrigin:
    """HTTP/1.1 origin on 127.0.0.1, a thread per connection; `heads` keeps every request head it read.

    Paths: /ws (101 with Sec-WebSocket-Accept, then a byte echo until EOF, then FIN), /upclose (101, "bye", FIN,
    then what it still reads lands in `late`), /flood (101, then bytes as fast as the socket takes them; `sent`
    counts them), /hints (103 with a Link field, then 200), /continue (100, then 200 once the content is read),
    /sse (200 chunked text/event-stream, one event every 200 ms, 5 of them), /plain or anything else (200 "plain",
    keep-alive; a 101 answer when the path is /bogus101)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.heads = []
        self.late = b""
        self.sent = 0
        self.conns = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _read_head(c, buf):
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                return None, b""
            buf += d
        head, _, rest = buf.partition(b"\r\n\r\n")
        return head, rest

    def _serve(self, c):
        try:
            buf = b""
            while True:
                head, buf = self._read_head(c, buf)
                if head is None:
                    return
                self.heads.append(head.decode("latin-1"))
                path = head.split(b" ")[1]
                fields = {k.strip().lower(): v.strip() for k, _, v in
                          (line.partition(b":") for line in head.split(b"\r\n")[1:])}
                if path in (b"/ws", b"/upclose", b"/flood", b"/bogus101"):
                    accept = ws_accept(fields.get(b"sec-websocket-key", b""))
                    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
                    return self._after_101(c, path, buf)
                if path == b"/hints":
                    c.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n")
                    time.sleep(0.1)
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
                elif path == b"/continue":
                    c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    n = int(fields.get(b"content-length", b"0"))
                    while len(buf) < n:
                        buf += c.recv(65536)
                    buf = buf[n:]
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                elif path == b"/sse":
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
                    for i in range(5):
                        ev = b"data: event %d\n\n" % i
                        c.sendall(b"%x\r\n%s\r\n" % (len(ev), ev))
                        time.sleep(0.2)
                    c.sendall(b"0\r\n\r\n")
                else:
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
        except OSError:
            return
        finally:
            c.close()

    def _after_101(self, c, path, ahead):
        if path == b"/flood":
            block = b"x" * 65536
            try:
                while not self._stop:
                    self.sent += c.send(block)
            except OSError:
                pass
            return
        if path == b"/upclose":
            c.sendall(b"bye")
            c.shutdown(socket.SHUT_WR)
            while True:
                d = c.recv(65536)
                if not d:
                    return
                self.late += d
        if ahead:
            c.sendall(ahead)
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
        c.shutdown(socket.SHUT_WR)

    def stop(self):
        self._stop = True
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


@pytest.fixture
def raw_origin():
    o = RawOrigin()
    yield o
    o.stop()


def proxy(tether, origin_port, *flags, route_keys="", extra_config=""):
    cfg = upstream_config(["127.0.0.1:%d" % origin_port]) + route_keys + "\n" + extra_config
    return tether(*flags, config=cfg)


def recv_exact(s, n, timeout=5):
    s.settimeout(timeout * SLOW)
    out = b""
    while len(out) < n:
        d = s.recv(n - len(out))
        if not d:
            break
        out += d
    return out


def upgrade(t, path=b"/ws", port=None):
    """A raw client socket through tether's plain listener, upgraded: (socket, the 101 head)."""
    s = socket.create_connection(("127.0.0.1", port or t.port), timeout=5 * SLOW)
    s.sendall(WS_REQ.replace(b"/ws", path))
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(1)
        assert d, "closed before the 101: %r" % head
        head += d
    return s, head


def wait_eof(s, timeout=5):
    """Reads until EOF (or RST); returns what was read, asserting the close came in time."""
    s.settimeout(timeout * SLOW)
    out = b""
    while True:
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            return out
        except socket.timeout:
            raise AssertionError("no close within %ss (read %r)" % (timeout, out[:100]))
        if not d:
            return out
        out += d


# ---- the handshake and the tunnel ----

def test_101_makes_a_tunnel_and_keeps_upgrade_fields(clean_tether, raw_origin):
    t = proxy(clean_tether, raw_origin.port)
    s, head = upgrade(t)
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert b"\r\nUpgrade: websocket\r\n" in head and b"\r\nConnection: Upgrade\r\n" in head, head
    assert b"Sec-WebSocket-Accept: " + ws_accept(b"dGhlIHNhbXBsZSBub25jZQ==") in head, head
    sent = raw_origin.heads[-1]
    assert "\r\nUpgrade: websocket" in sent and "\r\nConnection: Upgrade" in sent, sent
    assert "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==" in sent, sent
    for i in range(20):
        msg = b"message %d " % i * (i + 1)
        s.sendall(msg)
        assert recv_exact(s, len(msg)) == msg
    assert t.metric("tether_tunnels_open") == 1
    assert t.metric("tether_upstream_retired_total", upstream="backend", server="127.0.0.1:%d" % raw_origin.port,
                    reason="tunnel") == 1
    s.close()
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="tunnel_closed_by_client")
    t.wait_metric("tether_tunnels_open", lambda v: v == 0)
    line = [x for x in t.access_lines(wait_for=1) if '"GET /ws' in x][0]
    assert " 101 " in line and "tunnel_closed_by_client" in line and "upstream=backend" in line, line
    up = sum(len(b"message %d " % i * (i + 1)) for i in range(20))
    assert "tunnel_up=%d " % up in line and "tunnel_down=%d " % up in line and "tunnel_ms=" in line, line


def test_bytes_sent_with_the_handshake_pass_both_ways(clean_tether, raw_origin):
    """A client may send its first frame right behind the request head; the origin's first bytes may come in the
    same packet as its 101."""
    t = proxy(clean_tether, raw_origin.port)
    s = socket.create_connection(("127.0.0.1", t.port), timeout=5 * SLOW)
    s.sendall(WS_REQ + b"early")
    data = b""
    while not data.endswith(b"early"):
        d = s.recv(4096)
        assert d, data
        data += d
    assert data.startswith(b"HTTP/1.1 101 ") and data.count(b"early") == 1, data
    s.close()


@pytest.fixture
def ws_origin():
    """A python3-websockets echo server (asyncio in a thread): its port."""
    port, stop = start_ws_origin()
    yield port
    stop()


def start_ws_origin(ssl_ctx=None):
    """Starts a python3-websockets echo server (TLS with `ssl_ctx`): (port, stop function)."""
    websockets = pytest.importorskip("websockets")
    ready = threading.Event()
    box = {}

    def serve():
        async def echo(ws, path=None):
            async for msg in ws:
                await ws.send(msg)

        async def main():
            srv = await websockets.serve(echo, "127.0.0.1", 0, ssl=ssl_ctx)
            box["port"] = srv.sockets[0].getsockname()[1]
            box["loop"] = asyncio.get_running_loop()
            box["stop"] = asyncio.Event()
            ready.set()
            await box["stop"].wait()
            srv.close()
            await srv.wait_closed()

        asyncio.run(main())

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    assert ready.wait(10 * SLOW)

    def stop():
        box["loop"].call_soon_threadsafe(box["stop"].set)
        th.join(10)

    return box["port"], stop


def test_websocket_library_peers_through_h1_and_tls(clean_tether, certs, ws_origin):
    """python3-websockets on both ends: the real handshake (key, accept), frames, a close handshake."""
    import websockets
    if True:
        t = clean_tether(*tls_args(certs), "--listen", "127.0.0.1:0", expect_listeners=2,
                         config=upstream_config(["127.0.0.1:%d" % ws_origin]))
        plain = [p for (h, p), sc in zip(t.listen, t.schemes) if sc == "http"][0]
        ctx = client_context(certs, alpn=("http/1.1",))

        async def client(uri, **kw):
            async with websockets.connect(uri, **kw) as ws:
                for i in range(10):
                    msg = "hello %d" % i
                    await ws.send(msg)
                    assert await asyncio.wait_for(ws.recv(), 5 * SLOW) == msg
                await ws.send(b"\x00\x01binary" * 1000)
                assert await asyncio.wait_for(ws.recv(), 5 * SLOW) == b"\x00\x01binary" * 1000

        asyncio.run(client("ws://127.0.0.1:%d/chat" % plain))
        asyncio.run(client("wss://localhost:%d/chat" % tls_port(t), ssl=ctx))
        # after the close handshake the server closes the TCP connection first (RFC 6455 7.1.1); either way the
        # tunnel ended on its own
        end = deadline(5)
        while t.closed("tunnel_closed_by_client") + t.closed("tunnel_closed_by_upstream") != 2:
            assert time.monotonic() < end, t.metrics_text()
            time.sleep(0.05)


def test_websocket_to_an_https_origin(clean_tether, certs):
    """The upstream side of the tunnel over TLS (server = https://...): the upstream's transport carries it."""
    import websockets
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.main.cert, certs.main.key)
    port, stop = start_ws_origin(ctx)
    try:
        t = clean_tether(config=upstream_config(["https://127.0.0.1:%d" % port], tls_ca=certs.ca))

        async def client():
            async with websockets.connect("ws://127.0.0.1:%d/secure" % t.port) as ws:
                for i in range(5):
                    await ws.send("over tls %d" % i * 100)
                    assert await asyncio.wait_for(ws.recv(), 5 * SLOW) == "over tls %d" % i * 100

        asyncio.run(client())
        end = deadline(5)
        while t.closed("tunnel_closed_by_client") + t.closed("tunnel_closed_by_upstream") != 1:
            assert time.monotonic() < end, t.metrics_text()
            time.sleep(0.05)
    finally:
        stop()


# ---- WebSockets over HTTP/2 (RFC 8441) ----

def ws_frame(payload, opcode=0x1):
    """A masked client frame (RFC 6455 5.2), payload under 126 bytes."""
    mask = os.urandom(4)
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def extended_connect(c, path="/chat", protocol="websocket"):
    import h2.events
    ev = c.wait_for(lambda e: isinstance(e, h2.events.RemoteSettingsChanged) and 8 in e.changed_settings)
    assert ev is not None and ev.changed_settings[8].new_value == 1  # SETTINGS_ENABLE_CONNECT_PROTOCOL
    sid = c.h2.get_next_available_stream_id()
    c.h2.send_headers(sid, [(":method", "CONNECT"), (":protocol", protocol), (":scheme", "http"), (":path", path),
                            (":authority", "localhost"), ("sec-websocket-version", "13")])
    c.flush()
    resp = c.wait_for(lambda e: isinstance(e, (h2.events.ResponseReceived, h2.events.StreamReset))
                      and e.stream_id == sid)
    return sid, resp


def h2_read(c, sid, n, timeout=5):
    import h2.events
    got = b""
    end = deadline(timeout)
    while len(got) < n and time.monotonic() < end and not c.closed:
        for e in c.pump(0.2):
            if isinstance(e, h2.events.DataReceived) and e.stream_id == sid:
                got += e.data
    return got


@pytest.mark.parametrize("transport", ["h2c", "tls"])
def test_websocket_over_http2_to_an_http11_origin(clean_tether, certs, ws_origin, transport):
    """RFC 8441: SETTINGS_ENABLE_CONNECT_PROTOCOL, :method CONNECT + :protocol websocket, a 200 and DATA both ways;
    the origin (python3-websockets, strict about the handshake) sees an HTTP/1.1 GET with Upgrade and a key."""
    import h2.events
    t = clean_tether(*tls_args(certs), "--listen", "127.0.0.1:0", expect_listeners=2,
                     config=upstream_config(["127.0.0.1:%d" % ws_origin]))
    plain = [p for (h, p), sc in zip(t.listen, t.schemes) if sc == "http"][0]
    c = H2Conn(plain) if transport == "h2c" else H2Conn(tls_port(t), tls_certs=certs)
    try:
        sid, resp = extended_connect(c)
        assert isinstance(resp, h2.events.ResponseReceived), resp
        hdrs = dict(resp.headers)
        assert hdrs[":status"] == "200" and "sec-websocket-accept" not in hdrs, hdrs
        c.h2.send_data(sid, ws_frame(b"over h2"))
        c.flush()
        assert h2_read(c, sid, 9) == b"\x81\x07over h2"  # the origin's unmasked echo frame
        c.h2.send_data(sid, ws_frame(b"\x03\xe8", opcode=0x8))  # close (1000)
        c.flush()
        assert h2_read(c, sid, 4)[:2] == b"\x88\x02"
        assert c.wait_for(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == sid) is not None
    finally:
        c.sock.close()
    line = [x for x in t.access_lines(wait_for=1) if "CONNECT /chat HTTP/2.0" in x][0]
    assert " 200 " in line and "upstream=backend" in line, line


def test_websocket_over_http2_origin_sees_get_with_a_key(clean_tether, raw_origin):
    import h2.events
    t = proxy(clean_tether, raw_origin.port)
    c = H2Conn(t.port)
    try:
        sid, resp = extended_connect(c, path="/ws")
        assert dict(resp.headers)[":status"] == "200"
        head = raw_origin.heads[-1]
        assert head.startswith("GET /ws HTTP/1.1\r\n") and "\r\nUpgrade: websocket\r\n" in head, head
        key = [x for x in head.split("\r\n") if x.startswith("Sec-WebSocket-Key: ")][0].split(": ")[1]
        assert len(base64.b64decode(key)) == 16, key
        c.h2.send_data(sid, b"raw bytes")
        c.flush()
        assert h2_read(c, sid, 9) == b"raw bytes"
        c.h2.end_stream(sid)  # the client's END_STREAM is a FIN to the origin, which then ends too
        c.flush()
        assert c.wait_for(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == sid) is not None
        # the connection goes on serving
        sid2 = c.request("/plain")
        r = c.wait_for(lambda e: isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid2)
        assert dict(r.headers)[":status"] == "200"
    finally:
        c.sock.close()


def test_websocket_over_http2_refused_and_idle(clean_tether, raw_origin):
    import h2.events
    t = proxy(clean_tether, raw_origin.port, route_keys="upgrade = off\n")
    c = H2Conn(t.port)
    try:
        sid, resp = extended_connect(c, path="/ws")
        assert dict(resp.headers)[":status"] == "501"
    finally:
        c.sock.close()
    t2 = proxy(clean_tether, raw_origin.port, route_keys="tunnel_idle_timeout = 1s\n")
    c = H2Conn(t2.port)
    try:
        sid, resp = extended_connect(c, path="/ws")
        assert dict(resp.headers)[":status"] == "200"
        start = time.monotonic()
        ev = c.wait_for(lambda e: isinstance(e, h2.events.StreamReset) and e.stream_id == sid, timeout=10)
        assert ev is not None and time.monotonic() - start >= 0.9
    finally:
        c.sock.close()
    end = deadline(5)  # both servers write to the test's one access log
    while not [x for x in t2.access_lines() if "CONNECT /ws" in x and " 200 " in x]:
        assert time.monotonic() < end, t2.access_lines()
        time.sleep(0.05)
    line = [x for x in t2.access_lines() if "CONNECT /ws" in x and " 200 " in x][0]
    assert "tunnel_end=tunnel_idle" in line, line


NODE_ORIGIN = r"""
const http = require('http');
const crypto = require('crypto');
const srv = http.createServer((req, res) => { res.end('not an upgrade'); });
srv.on('upgrade', (req, socket, head) => {
  const key = req.headers['sec-websocket-key'] || '';
  const accept = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC11B85').digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
               'Sec-WebSocket-Accept: ' + accept + '\r\nX-Node: ' + (req.headers['upgrade'] || '') + '\r\n\r\n');
  if (head.length) socket.write(head);
  socket.on('data', (d) => socket.write(d));
  socket.on('end', () => socket.end());
});
srv.listen(0, '127.0.0.1', () => { console.log(srv.address().port); });
"""


def test_node_upgrade_origin(clean_tether, procs, tmp_path):
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed")
    script = tmp_path / "origin.js"
    script.write_text(NODE_ORIGIN)
    p = procs(subprocess.Popen([node, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
    port = int(p.stdout.readline())
    t = proxy(clean_tether, port)
    s, head = upgrade(t)
    assert head.startswith(b"HTTP/1.1 101 ") and b"X-Node: websocket" in head, head
    s.sendall(b"through node")
    assert recv_exact(s, 12) == b"through node"
    s.shutdown(socket.SHUT_WR)  # node ends its side on 'end': the half-close went through
    assert wait_eof(s) == b""
    s.close()
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="tunnel_closed_by_client")


# ---- what is refused, what is ordinary ----

def test_upgrade_off_is_501_with_a_cause(clean_tether, raw_origin):
    t = proxy(clean_tether, raw_origin.port, route_keys="upgrade = off\n")
    c = t.connect()
    c.send(WS_REQ)
    r = c.response()
    assert r.status == 501 and b"off" in r.body and b"websocket" in r.body, (r, r.body)
    assert raw_origin.heads == []  # never a silent downgrade: nothing went upstream
    r = c.get("/plain")  # the connection stays usable
    assert r.status == 200 and r.body == b"plain"
    line = [x for x in t.access_lines(wait_for=1) if '"GET /ws' in x][0]
    assert " 501 " in line and "cause=upgrade_refused" in line, line


def test_other_protocols_need_upgrade_any(clean_tether, raw_origin):
    req = WS_REQ.replace(b"Upgrade: websocket", b"Upgrade: foo/2")
    t = proxy(clean_tether, raw_origin.port)
    c = t.connect()
    c.send(req)
    assert c.response().status == 501
    t2 = proxy(clean_tether, raw_origin.port, route_keys="upgrade = any\n")
    s = socket.create_connection(("127.0.0.1", t2.port), timeout=5 * SLOW)
    s.sendall(req)
    head = recv_exact(s, 12)
    assert head == b"HTTP/1.1 101", head
    assert "\r\nUpgrade: foo/2" in raw_origin.heads[-1]
    s.close()


def test_h2c_upgrade_and_http10_are_not_forwarded(clean_tether, raw_origin):
    t = proxy(clean_tether, raw_origin.port, route_keys="upgrade = any\n")
    c = t.connect()
    c.send(b"GET /plain HTTP/1.1\r\nHost: t\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
           b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
    r = c.response()
    assert r.status == 200 and r.body == b"plain"
    assert "pgrade" not in raw_origin.heads[-1], raw_origin.heads[-1]
    c.send(WS_REQ.replace(b"/ws", b"/plain").replace(b"HTTP/1.1", b"HTTP/1.0"))
    r = c.response()
    assert r.status == 200 and r.body == b"plain"
    assert "pgrade" not in raw_origin.heads[-1], raw_origin.heads[-1]


def test_a_non_101_answer_is_an_ordinary_response(clean_tether, raw_origin):
    t = proxy(clean_tether, raw_origin.port)
    c = t.connect()
    c.send(WS_REQ.replace(b"/ws", b"/plain"))
    r = c.response()
    assert r.status == 200 and r.body == b"plain" and r.header("Upgrade") is None, r
    for _ in range(3):  # the client connection is still HTTP and reusable; so is the upstream one
        r = c.get("/plain")
        assert r.status == 200 and r.body == b"plain"
    assert t.metric("tether_upstream_requests_reused_total", upstream="backend",
                    server="127.0.0.1:%d" % raw_origin.port) >= 1
    assert t.metric("tether_tunnels_open") == 0


def test_101_to_a_request_without_upgrade_is_502(clean_tether, raw_origin):
    t = proxy(clean_tether, raw_origin.port, extra_config="")
    c = t.connect()
    r = c.get("/bogus101")
    assert r.status == 502
    assert t.metric("tether_upstream_generated_total", upstream="backend", cause="invalid_response") == 1


# ---- lifecycle ----

def test_half_close_passes_through_both_ways(clean_tether, raw_origin):
    t = proxy(clean_tether, raw_origin.port)
    # client first: its FIN reaches the origin, which answers what it still had and closes
    s, _ = upgrade(t)
    s.sendall(b"last words")
    s.shutdown(socket.SHUT_WR)
    assert wait_eof(s) == b"last words"
    s.close()
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="tunnel_closed_by_client")
    # upstream first: the client sees EOF, and can still send (the origin reads it), then closes
    s, _ = upgrade(t, b"/upclose")
    assert wait_eof(s) == b"bye"
    s.sendall(b"still talking")
    end = deadline(5)
    while raw_origin.late != b"still talking":
        assert time.monotonic() < end, raw_origin.late
        time.sleep(0.02)
    s.close()
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="tunnel_closed_by_upstream")
    line = [x for x in t.access_lines(wait_for=2) if "/upclose" in x][0]
    assert "tunnel_closed_by_upstream" in line and "tunnel_up=13 " in line and "tunnel_down=3 " in line, line


def test_both_sockets_of_a_tunnel_have_tcp_keepalive(clean_tether, raw_origin):
    """The listener's TCP keepalive on the client side, the upstream's (`auto`: derived from its idle_timeout) on the
    upstream side: a quiet tunnel behind a NAT is probed both ways. `ss -tnoe` shows the kernel's timers."""
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed")
    t = proxy(clean_tether, raw_origin.port, "--tcp-keepalive", "60s:20s:3")
    s, _ = upgrade(t)
    client_port = s.getsockname()[1]
    end = deadline(5)
    while True:
        out = subprocess.run(["ss", "-tnoH", "state", "established"], stdout=subprocess.PIPE, text=True).stdout
        socks = [(x.split()[2], x.split()[3], x) for x in out.splitlines() if len(x.split()) >= 4]
        down = [x for local, peer, x in socks  # tether's end of the client connection
                if local.endswith(":%d" % t.port) and peer.endswith(":%d" % client_port)]
        up = [x for local, peer, x in socks  # tether's end of the upstream connection
              if peer.endswith(":%d" % raw_origin.port) and not local.endswith(":%d" % raw_origin.port)]
        if down and up and all("keepalive" in x for x in down + up):
            break
        assert time.monotonic() < end, (down, up)
        time.sleep(0.1)
    s.close()


def test_idle_tunnel_is_closed_after_tunnel_idle_timeout(clean_tether, raw_origin):
    t = proxy(clean_tether, raw_origin.port, route_keys="tunnel_idle_timeout = 1s\n")
    s, _ = upgrade(t)
    # traffic keeps it open past the timeout
    for _ in range(4):
        s.sendall(b"ping")
        assert recv_exact(s, 4) == b"ping"
        last = time.monotonic()
        time.sleep(0.4)
    assert t.metric("tether_tunnels_open") == 1
    assert wait_eof(s, timeout=10) == b""
    assert time.monotonic() - last >= 0.9
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="tunnel_idle")
    line = [x for x in t.access_lines(wait_for=1) if '"GET /ws' in x][0]
    assert "tunnel_idle" in line, line


class IdleUpgradeOrigin:
    """One thread, many connections: answers every request head with a 101 and then holds the connection."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(2048)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ)
        self.held = {}
        self._stop = False
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        while not self._stop:
            for key, _ in self.sel.select(0.1):
                if key.fileobj is self.sock:
                    try:
                        c, _ = self.sock.accept()
                    except OSError:
                        continue
                    c.setblocking(False)
                    self.held[c] = b""
                    self.sel.register(c, selectors.EVENT_READ)
                    continue
                c = key.fileobj
                try:
                    d = c.recv(65536)
                except OSError:
                    d = b""
                if not d:
                    self.sel.unregister(c)
                    c.close()
                    self.held.pop(c, None)
                    continue
                self.held[c] += d
                if self.held[c] is not None and b"\r\n\r\n" in self.held[c]:
                    c.setblocking(True)
                    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                    c.setblocking(False)
                    self.held[c] = b""

    def stop(self):
        self._stop = True
        self.th.join(5)
        for c in list(self.held):
            c.close()
        self.sock.close()


def test_a_thousand_idle_tunnels(clean_tether, raw_origin):
    n = 1000
    o = IdleUpgradeOrigin()
    socks = []
    try:
        cfg = upstream_config(["127.0.0.1:%d" % o.port], max_connections=0) + "\n"
        t = clean_tether("--workers", "1", config=cfg)
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", t.port), timeout=5 * SLOW)
            s.sendall(WS_REQ)
            socks.append(s)
        for s in socks:
            assert recv_exact(s, 12) == b"HTTP/1.1 101"
        t.wait_metric("tether_tunnels_open", lambda v: v == n, timeout=20)
        rss = vm_rss_kib(t.proc.pid)
        # still responsive: a plain request on another route answers at once
        c = HttpConn("127.0.0.1", t.metrics_addr[1])
        c.send(b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
        start = time.monotonic()
        assert c.response().status == 200
        assert time.monotonic() - start < 2 * SLOW
        c.close()
        assert rss < 200 * 1024, rss  # idle tunnels hold no buffers: far below 1000 x 2 x 64 KiB extra
    finally:
        for s in socks:
            s.close()
        o.stop()
    t.wait_metric("tether_tunnels_open", lambda v: v == 0, timeout=20)


def test_a_client_that_stops_reading_does_not_grow_memory(clean_tether, raw_origin):
    t = proxy(clean_tether, raw_origin.port, "--workers", "1")
    s, _ = upgrade(t, b"/flood")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    base = vm_rss_kib(t.proc.pid)
    sampler = RssSampler(t.proc.pid)
    # the origin floods until every buffer on the way is full; then nothing moves
    end = deadline(10)
    last, stable_since = -1, time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.1)
        if raw_origin.sent != last:
            last, stable_since = raw_origin.sent, time.monotonic()
        elif time.monotonic() - stable_since > 1.0:
            break
    peak = sampler.stop()
    assert raw_origin.sent < 32 * 1024 * 1024, raw_origin.sent  # blocked, not swallowed by tether
    assert peak - base < 16 * 1024, (base, peak)
    got = 0
    s.settimeout(5 * SLOW)
    while got < 1024 * 1024:  # and it still flows once the client reads
        d = s.recv(65536)
        assert d
        got += len(d)
    s.close()


def test_drain_lets_tunnels_run_until_drain_timeout(tether, raw_origin):
    cfg = upstream_config(["127.0.0.1:%d" % raw_origin.port]) + "\n[server]\ndrain_timeout = 1s\n"
    t = tether(config=cfg)
    s, _ = upgrade(t)
    t.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    s.sendall(b"during drain")  # still a working tunnel
    assert recv_exact(s, 12) == b"during drain"
    assert wait_eof(s, timeout=10) == b""
    assert t.proc.wait(10 * SLOW) == 0
    line = [x for x in t.access_lines(wait_for=1) if '"GET /ws' in x][0]
    assert " 101 " in line and " shutdown " in line, line


# ---- interim responses ----

def test_103_early_hints_reach_an_http11_client_before_the_final_response(clean_tether, raw_origin):
    t = proxy(clean_tether, raw_origin.port)
    c = t.connect()
    c.send(b"GET /hints HTTP/1.1\r\nHost: t\r\n\r\n")
    first = read_head(c, skip_1xx=False)
    assert first.status == 103 and first.header("Link") == "</style.css>; rel=preload; as=style", first
    final = read_head(c)
    assert final.status == 200
    assert c._read_exact(5) == b"final"
    # HTTP/1.0 clients never get a 1xx (RFC 9110 15.2)
    c = t.connect()
    c.send(b"GET /hints HTTP/1.0\r\nHost: t\r\n\r\n")
    r = c.response(skip_1xx=False)
    assert r.status == 200 and r.body == b"final"


def test_103_early_hints_reach_an_http2_client(clean_tether, raw_origin):
    import h2.events
    t = proxy(clean_tether, raw_origin.port)
    c = H2Conn(t.port)
    try:
        sid = c.request("/hints")
        final = c.wait_for(lambda e: isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid)
        assert final is not None
        evs = [e for e in c.events if getattr(e, "stream_id", None) == sid]
        info = [e for e in evs if isinstance(e, h2.events.InformationalResponseReceived)]
        assert info and evs.index(info[0]) < evs.index(final)
        hdrs = dict(info[0].headers)
        assert hdrs[":status"] == "103" and hdrs["link"] == "</style.css>; rel=preload; as=style", hdrs
        assert dict(final.headers)[":status"] == "200"
    finally:
        c.sock.close()


def test_one_100_continue_not_two(clean_tether, raw_origin):
    t = proxy(clean_tether, raw_origin.port)
    c = t.connect()
    c.send(b"POST /continue HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert read_head(c, skip_1xx=False).status == 100
    c.send(b"body")
    r = read_head(c, skip_1xx=False)
    assert r.status == 200, r  # the origin's own 100 was not passed on as a second one
    assert c._read_exact(2) == b"ok"
    # without Expect, the origin's (unsolicited) 100 goes on: one interim response before the final one
    c.send(b"POST /continue HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody")
    assert read_head(c, skip_1xx=False).status == 100
    assert read_head(c, skip_1xx=False).status == 200


# ---- streaming ----

def test_server_sent_events_pass_unbuffered(clean_tether, raw_origin):
    t = proxy(clean_tether, raw_origin.port)
    s = socket.create_connection(("127.0.0.1", t.port), timeout=5 * SLOW)
    s.sendall(b"GET /sse HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
    s.settimeout(5 * SLOW)
    data, seen = b"", []
    start = time.monotonic()
    while len(seen) < 5:
        d = s.recv(65536)
        assert d, data
        data += d
        for i in range(5):
            if i not in dict(seen) and b"data: event %d" % i in data:
                seen.append((i, time.monotonic() - start))
    # the origin spaces the events 200 ms apart (800 ms first to last): each one came as it was sent, not all at
    # the end together
    assert seen[0][1] < seen[-1][1] - 0.4, seen
    s.close()
