"""HTTP/2 upstreams (issue 12): passive health and send_timeout, as for HTTP/1.1 servers.

Passive health: a server spoken to over HTTP/2 that refuses connects, or accepts and closes before its first
SETTINGS, is marked down after `max_fails` (metrics and log lines of HTTP/1.1 servers), requests go to the other
server meanwhile, and an HTTP/2 probe after `fail_backoff` brings it back once it lives again.
send_timeout: python3-h2 origins that never open a stream's window (the stream alone is reset, 504 send_timeout,
its connection goes on) or stop reading their socket (the connection is closed, a GET on it is replayed).
"""

import json
import os
import select
import socket
import threading
import time

import pytest

from conftest import LATE, SLOW, HttpConn
from pool_support import Background, one_request, wait_until
from proxy_util import closed_port

pytest.importorskip("h2.connection")
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import h2.settings  # noqa: E402
from test_h2_upstream import UP, H2Origin, h2m  # noqa: E402
from threaded_server import ThreadedServer  # noqa: E402
from tls_util import certs, tls_args, tls_port  # noqa: E402,F401


def config(servers, **keys):
    lines = ["[upstream %s]" % UP] + ["server = %s" % s for s in servers] + ["protocol = h2"]
    lines += ["%s = %s" % kv for kv in keys.items()]
    return "\n".join(lines + ["", "[route /]", "upstream = %s" % UP, ""])


class Closer(ThreadedServer):
    """Accepts TCP connections and closes each at once: an h2c server that never sends SETTINGS. `conns` counts
    them."""

    def handle(self, s, no):
        s.close()


# ---- passive health ----

def test_refusing_h2_server_is_marked_down_and_an_h2_probe_brings_it_back(tether):
    live = H2Origin()
    port = closed_port()
    dead = "127.0.0.1:%d" % port
    revived = None
    # a 3 s backoff: the requests and scrapes below, while it is down, fit in it on a busy machine too
    t = tether("--workers", "1", config=config([dead, "127.0.0.1:%d" % live.port], max_fails=2, fail_backoff="3s",
                                               fail_backoff_max="3s")).wait_ready()
    try:
        for i in range(8):
            r, _ = one_request("127.0.0.1", t.port, "GET", "/a%d" % i)
            assert r.status == 200 and r.body == b"/a%d " % i, r
        assert t.metric("tether_upstream_connect_failures_total", upstream=UP, server=dead) == 2
        assert t.metric("tether_upstream_down", upstream=UP, server=dead) == 1
        # a refused connect is a failure, not a connection opened
        assert t.metric("tether_upstream_h2_connections_opened_total", upstream=UP, server=dead) == 0
        assert t.metric("tether_upstream_h2_connections_opened_total", upstream=UP,
                        server="127.0.0.1:%d" % live.port) == 1
        assert "upstream %s/%s: down after 2 failed connects" % (UP, dead) in t.stderr()
        refused = t.metric("tether_upstream_next_server_total", upstream=UP, cause="connect_refused")
        for i in range(6):  # while it is down, requests go to the live server without trying it
            r, _ = one_request("127.0.0.1", t.port, "GET", "/b%d" % i)
            assert r.status == 200, r
        assert t.metric("tether_upstream_next_server_total", upstream=UP, cause="connect_refused") == refused
        assert t.metric("tether_upstream_connect_failures_total", upstream=UP, server=dead) == 2
        # it lives again: the probe after the backoff (an HTTP/2 connection, alive at the first SETTINGS) finds it
        revived = H2Origin(port=port)
        t.wait_metric("tether_upstream_down", lambda v: v == 0, timeout=3 + 5, upstream=UP, server=dead)
        assert "upstream %s/%s: up again" % (UP, dead) in t.stderr()
        assert revived.conns == 1
        for i in range(6):
            r, _ = one_request("127.0.0.1", t.port, "GET", "/c%d" % i)
            assert r.status == 200, r
        assert revived.conns == 1 and len(revived.requests) >= 2  # the probe's connection carries them
        assert t.metric("tether_upstream_h2_connections_opened_total", upstream=UP, server=dead) == 1
        assert all(v == 0 for k, v in t.metrics().items() if k.startswith("tether_upstream_generated_total"))
    finally:
        live.stop()
        if revived is not None:
            revived.stop()


def test_h2_server_closing_before_its_settings_counts_as_a_failed_connect(tether):
    """A server that accepts and closes at once: each connection is a failed connect (the request moves to the
    other server at once, not after the queue timeout), and max_fails of them mark it down."""
    live, closer = H2Origin(), Closer()
    bad = "127.0.0.1:%d" % closer.port
    t = tether("--workers", "1", config=config([bad, "127.0.0.1:%d" % live.port], max_fails=2, fail_backoff="5s",
                                               queue_timeout="20s")).wait_ready()
    try:
        for i in range(6):
            r, took = one_request("127.0.0.1", t.port, "GET", "/a%d" % i)
            assert r.status == 200 and took < 5 * SLOW, (r, took)
        assert closer.conns == 2
        assert t.metric("tether_upstream_connect_failures_total", upstream=UP, server=bad) == 2
        assert t.metric("tether_upstream_down", upstream=UP, server=bad) == 1
        assert t.metric("tether_upstream_next_server_total", upstream=UP, cause="connect_error") == 2
    finally:
        live.stop()
        closer.stop()


# ---- send_timeout ----

class StallOrigin(ThreadedServer):
    """An h2c origin that takes request content badly. mode "window": the connection's window is opened wide but no
    stream's window ever grows past its first 64 KiB (content is never acknowledged). mode "deaf": every window is
    wide open, the socket's receive buffer small, and the connection stops reading for good once a request to a
    path starting "/stuck" arrives. Other requests are answered 200 "PATH" at their end. `resets` records
    (conn_no, stream_id, error_code) of each RST_STREAM received."""

    def __init__(self, mode):
        self.mode = mode
        self.paths = []  # (conn_no, path) of each request head received
        self.resets = []
        self.stuck = threading.Event()
        ThreadedServer.__init__(self, backlog=16, rcvbuf=4096 if mode == "deaf" else None)

    def handle(self, s, no):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        if self.mode == "deaf":
            conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2 ** 31 - 1})
        conn.increment_flow_control_window(2 ** 31 - 1 - 65535)
        s.sendall(conn.data_to_send())
        paths = {}
        deadline = time.monotonic() + 60 * SLOW
        try:
            while not self.stopping and time.monotonic() < deadline:
                r, _, _ = select.select([s], [], [], 0.05)
                if not r:
                    continue
                data = s.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        path = dict(ev.headers)[":path"]
                        paths[ev.stream_id] = path
                        with self.lock:
                            self.paths.append((no, path))
                        if path.startswith("/stuck") and self.mode == "deaf":
                            s.sendall(conn.data_to_send())
                            self.stuck.set()
                            while not self.stopping:  # reads nothing more: the socket fills up
                                time.sleep(0.05)
                            return
                    elif isinstance(ev, h2.events.StreamReset):
                        with self.lock:
                            self.resets.append((no, ev.stream_id, ev.error_code))
                    elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in paths:
                        body = paths.pop(ev.stream_id).encode()
                        conn.send_headers(ev.stream_id, [(":status", "200"), ("content-length", str(len(body)))])
                        conn.send_data(ev.stream_id, body, end_stream=True)
                s.sendall(conn.data_to_send())
        except Exception:  # noqa: BLE001 - the peer went away
            return



def post_in_background(t, path, size):
    """A POST of `size` bytes sent from a thread (tether stops reading it when the upstream takes nothing);
    returns (HttpConn, Background of the sending)."""
    c = HttpConn(*t.addr, timeout=20 * SLOW)

    def send():
        try:
            c.request("POST", path, body=b"x" * size)
        except OSError:
            pass  # tether answered and closed before taking it all

    return c, Background(send)


def finish(c, sender):
    try:
        c.sock.shutdown(socket.SHUT_RDWR)  # wakes the sender if it still waits
    except OSError:
        pass  # tether closed it already
    c.close()
    sender.result()


def test_a_stream_whose_window_stays_closed_is_reset_alone(tether):
    """The origin never opens the POST's stream window: after send_timeout the stream is reset (CANCEL) and the
    client gets 504 send_timeout; a GET on the same connection meanwhile is answered, and the connection goes on."""
    o = StallOrigin("window")
    t = tether("--workers", "1", config=config(["127.0.0.1:%d" % o.port], send_timeout="600ms")).wait_ready()
    try:
        r, _ = one_request("127.0.0.1", t.port, "GET", "/first")
        assert r.status == 200 and r.body == b"/first", r
        start = time.monotonic()
        c, sender = post_in_background(t, "/stuck", 300000)
        wait_until(lambda: (1, "/stuck") in o.paths, 5, "the POST at the origin")
        r, _ = one_request("127.0.0.1", t.port, "GET", "/meanwhile")
        assert r.status == 200 and r.body == b"/meanwhile", r
        r = c.response("POST")
        took = time.monotonic() - start
        assert r.status == 504 and r.header("X-Tether-Cause") == "send_timeout", r
        assert 0.6 <= took < 0.6 + 2 * LATE + 3 * SLOW, took
        wait_until(lambda: [x for x in o.resets if x[2] == 8], 5, "RST_STREAM CANCEL at the origin")
        assert [(n, e) for n, _, e in o.resets] == [(1, 8)]
        r, _ = one_request("127.0.0.1", t.port, "GET", "/after")
        assert r.status == 200 and o.conns == 1  # the connection went on
        assert t.metric("tether_upstream_generated_total", upstream=UP, cause="send_timeout") == 1
        assert h2m(t, "tether_upstream_h2_streams") == 0
        finish(c, sender)
    finally:
        o.stop()


def test_a_socket_that_takes_nothing_closes_the_connection_and_its_get_is_replayed(tether):
    """The origin stops reading its socket under a large POST: after send_timeout without a byte taken the
    connection is closed, the POST (not replayable: too large to hold) gets 504 send_timeout, and a GET that waited
    on that connection is replayed on a new one."""
    o = StallOrigin("deaf")
    cfg = config(["127.0.0.1:%d" % o.port], send_timeout="800ms") + "\n[limits]\nmax_body_size = 64m\n"
    t = tether("--workers", "1", config=cfg).wait_ready()
    try:
        c, sender = post_in_background(t, "/stuck", 32 << 20)
        wait_until(o.stuck.is_set, 5, "the origin going deaf")
        g = Background(lambda: one_request("127.0.0.1", t.port, "GET", "/waits", timeout=20 * SLOW)[0])
        r = c.response("POST")
        assert r.status == 504 and r.header("X-Tether-Cause") == "send_timeout", r
        r = g.result()
        assert r.status == 200 and r.body == b"/waits", r
        assert (2, "/waits") in o.paths and o.conns == 2
        assert t.metric("tether_upstream_h2_replays_total", upstream=UP, reason="send_timeout") == 1
        assert t.metric("tether_upstream_generated_total", upstream=UP, cause="send_timeout") == 1
        finish(c, sender)
    finally:
        o.stop()


# ---- protocol = auto asks ALPN again ----

class Relay(ThreadedServer):
    """A TCP relay on 127.0.0.1 to `target` (a port), which the test may change: new connections go to the new
    target, those open stay where they went. Thread per connection, bounded by `stop`."""

    def __init__(self, target):
        self.target = target
        ThreadedServer.__init__(self)

    def handle(self, a, no):
        try:
            b = socket.create_connection(("127.0.0.1", self.target), timeout=5)
        except OSError:
            a.close()
            return
        with self.lock:
            self.socks.append(b)
        try:
            while not self.stopping:
                r, _, _ = select.select([a, b], [], [], 0.05)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()


def test_auto_asks_alpn_again_after_h2_alpn_recheck(tether, certs):
    """protocol = auto, h2_alpn_recheck = 1s: the server first answers http/1.1 (requests take HTTP/1.1), then is
    "upgraded" (the relay in front of it now leads to an origin that selects h2): a request after the recheck time
    offers h2 again on a new connection, and HTTP/2 carries the requests from then on."""
    from test_proxy_tls import TlsOrigin
    h1 = TlsOrigin(certs.main, alpn=("http/1.1",)).start()
    www = os.path.join(certs.dir, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "f.txt"), "w") as f:
        f.write("from h2 origin\n")
    h2o = tether("--workers", "1", "--root", www, *tls_args(certs)).wait_ready()
    relay = Relay(h1.port)
    sv = "127.0.0.1:%d" % relay.port
    cfg = ("[upstream %s]\nserver = https://%s\nprotocol = auto\ntls_ca = %s\nh2_alpn_recheck = 1s\n\n"
           "[route /]\nupstream = %s\n" % (UP, sv, certs.ca, UP))
    t = tether("--workers", "1", config=cfg).wait_ready()
    try:
        asked = time.monotonic()  # the http/1.1 answer comes after this
        for _ in range(2):
            r, _ = one_request("127.0.0.1", t.port, "GET", "/f.txt")
            assert r.status == 200 and json.loads(r.body)["target"] == "/f.txt", r  # the HTTP/1.1 origin's echo
        # ALPN asked once (answered http/1.1: no HTTP/2 connection opened), then one HTTP/1.1 connection
        assert relay.conns == 2 or time.monotonic() - asked >= 1.0  # a recheck may have come on a slow machine
        assert t.metric("tether_upstream_h2_connections_opened_total", upstream=UP, server=sv) == 0
        relay.target = tls_port(h2o)
        deadline = time.monotonic() + 10 * SLOW
        while True:  # the parked HTTP/1.1 connection serves until the recheck time, then HTTP/2 takes over
            r, _ = one_request("127.0.0.1", t.port, "GET", "/f.txt")
            assert r.status == 200, r
            if r.body == b"from h2 origin\n":
                break
            assert time.monotonic() < deadline, "still HTTP/1.1"
            time.sleep(0.1)
        assert time.monotonic() - asked >= 1.0  # not before the recheck time
        assert t.metric("tether_upstream_h2_connections_opened_total", upstream=UP, server=sv) == 1
        for _ in range(3):
            r, _ = one_request("127.0.0.1", t.port, "GET", "/f.txt")
            assert r.status == 200 and r.body == b"from h2 origin\n", r
        assert t.metric("tether_upstream_h2_connections_opened_total", upstream=UP, server=sv) == 1
    finally:
        relay.stop()
        h1.stop()
