"""Downstream race detection and the latency/lifecycle metrics (issue 14).

When tether closes a connection its client may reuse at that moment (idle timeout, eviction, the close after the
last response of max_requests), it half-closes and keeps reading for `race_window`: a request that arrives then
crossed tether's FIN (the request a load balancer turns into a 502). Such requests are counted in
`tether_close_races_total{listener,reason}`, their gap since the last response goes to
`tether_close_race_gap_seconds`, and the access log gets a line with decision `race`.

A race is made certain here by waiting, on the client side, until tether's FIN has arrived (a recv that returns
b"") before sending the request: whatever the machine's load, that request crossed the close.

Also: the histograms of request duration, upstream timings, TLS handshakes, connection lifetime and requests
per connection, `tether_build_info`, `tether_start_time_seconds`, and `promtool check metrics` on the whole
exposition.
"""

import json
import select
import shutil
import socket
import subprocess
import time

import pytest

from conftest import LATE, SLOW, TETHER_BIN
from origin import Origin
from proxy_util import origins  # noqa: F401 (fixture)


def config(site, keepalive="", server="", listen=""):
    return """\
[server]
workers = 1
%s
[keepalive]
%s
[listen]
address = 127.0.0.1:0
%s
[static]
root = %s
""" % (server, keepalive, listen, site)


def fin_seen(c, timeout):
    """Waits up to `timeout` s for tether's FIN on `c`; True once recv returns b"" (nothing else may come first)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([c.sock], [], [], left)
        if r:
            data = c.sock.recv(65536, socket.MSG_DONTWAIT)
            assert data == b"", "bytes after the response: %r" % data
            return True


def after_fin(c):
    """Sends a request on a connection tether has half-closed; returns what came back (b"" or None on RST)."""
    c.request("GET", "/100.txt")
    c.sock.settimeout(5 * SLOW)
    try:
        out = b""
        while True:
            chunk = c.sock.recv(65536)
            if not chunk:
                return out
            out += chunk
    except ConnectionResetError:
        return None


def race_lines(t, n, timeout=5):
    deadline = time.monotonic() + timeout * SLOW
    while True:
        lines = [ln for ln in t.access_lines() if " race " in ln]
        if len(lines) >= n or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def races(t, reason, listener="default"):
    return t.metric("tether_close_races_total", listener=listener, reason=reason)


# ---- the race window ----

def test_request_after_idle_fin_is_a_race(tether, site, conns):
    t = tether(config=config(site, keepalive="idle_timeout = 1s\nrace_window = 3s"))
    c = conns(t)
    assert c.get("/100.txt").status == 200
    sent_at = time.monotonic()
    assert fin_seen(c, 3 + LATE), "no FIN after the idle timeout"
    assert time.monotonic() - sent_at >= 0.95
    # The FIN is counted as the close, before the window ends.
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="idle_timeout")
    assert t.metric("tether_connections_racing") == 1 and t.metric("tether_connections_open") == 0
    back = after_fin(c)
    assert not back, "no answer may follow the FIN: %r" % back
    t.wait_metric("tether_connections_racing", lambda v: v == 0)
    t.wait_metric("tether_close_races_total", lambda v: v == 1, listener="default", reason="idle_timeout")
    assert races(t, "evicted") == 0 and races(t, "max_requests") == 0
    m = t.metrics()
    assert m['tether_close_race_gap_seconds_count{listener="default"}'] == 1
    assert m['tether_close_race_gap_seconds_sum{listener="default"}'] >= 0.95
    assert m['tether_close_race_gap_seconds_bucket{listener="default",le="0.5"}'] == 0
    lines = race_lines(t, 1)
    assert len(lines) == 1, t.access_lines()
    line = lines[0]
    assert '"GET /100.txt HTTP/1.1" 0 0 ' in line, line
    assert " req=2 race race_reason=idle_timeout race_gap_ms=" in line, line
    gap_ms = int(line.rsplit("race_gap_ms=", 1)[1].split()[0])
    assert gap_ms >= 950, line
    # Counted once: the connection's close reason stays idle_timeout.
    assert t.closed("idle_timeout") == 1


def test_reuse_at_the_idle_timeout_races(tether, site, conns):
    # A client that reuses its connections after about 1 s: some reuses land in tether's close. The ones sent after
    # the FIN was seen are races for certain; the others may be served or race, never anything else.
    t = tether(config=config(site, keepalive="idle_timeout = 1s\nrace_window = 2s"))
    certain, served = 0, 0
    for gap in (0.9, 0.95, 1.0, 1.05, 1.1, 1.2):
        c = conns(t)
        assert c.get("/100.txt").status == 200
        time.sleep(gap)
        if fin_seen(c, 0):
            certain += 1
            assert not after_fin(c)
            continue
        c.request("GET", "/100.txt")
        try:
            r = c.response()
            assert r.status == 200
            served += 1
        except (EOFError, ConnectionResetError, socket.timeout):
            pass
    c = conns(t)  # at least one certain race, whatever the timing above
    assert c.get("/100.txt").status == 200
    assert fin_seen(c, 2 + LATE)
    assert not after_fin(c)
    certain += 1
    v = t.wait_metric("tether_close_races_total", lambda v: v >= certain, listener="default",
                      reason="idle_timeout")
    assert v <= 7 - served, (v, served)


def test_idle_timeout_above_the_reuse_gap_stops_races(tether, site, conns):
    # The advisor's remedy for the client above: an idle timeout longer than its reuse gap. Races stop.
    t2 = tether(config=config(site, keepalive="idle_timeout = 5s\nrace_window = 2s"))
    for _ in range(3):
        c = conns(t2)
        assert c.get("/100.txt").status == 200
        time.sleep(1.0)
        assert c.get("/100.txt").status == 200, "reused within the idle timeout"
        c.close()
    t2.wait_metric("tether_connections_closed_total", lambda v: v == 3, reason="client_close")
    assert races(t2, "idle_timeout") == 0
    assert race_lines(t2, 1, timeout=0) == []


def test_the_advisors_idle_timeout_stops_the_races(tether, site, conns):
    """The loop the issue asks for: races counted for a client that reuses at tether's idle timeout, `tether advise`
    reads them and names the idle timeout to set, and with that value the same client's reuses are served."""
    t = tether(config=config(site, keepalive="idle_timeout = 1s\nrace_window = 2s"))
    for _ in range(3):  # certain races: each request goes out after tether's FIN was seen
        c = conns(t)
        assert c.get("/100.txt").status == 200
        assert fin_seen(c, 2 + LATE)
        assert not after_fin(c)
    t.wait_metric("tether_close_races_total", lambda v: v == 3, listener="default", reason="idle_timeout")
    gaps = [int(ln.rsplit("race_gap_ms=", 1)[1].split()[0]) / 1000.0 for ln in race_lines(t, 3)]
    assert len(gaps) == 3 and min(gaps) >= 0.95, gaps
    url = "http://%s:%d/metrics" % t.metrics_addr
    out = subprocess.run([TETHER_BIN, "advise", "--metrics", url, "--json"], capture_output=True, text=True,
                         timeout=20 * SLOW)
    assert out.returncode == 0, out
    advice = [a for a in json.loads(out.stdout) if a["key"] == "idle_timeout" and a["level"] == "change"]
    assert len(advice) == 1, out.stdout
    a = advice[0]
    assert a["current"] == "1s" and "race" in a["reason"], a
    suggested = a["suggested"]
    seconds = float(suggested[:-1]) * {"s": 1, "m": 60, "h": 3600}[suggested[-1]]
    assert seconds > max(gaps), (suggested, gaps)
    # the same client, reusing after the longest gap that raced, against the advised timeout: served, no race
    t2 = tether(config=config(site, keepalive="idle_timeout = %s\nrace_window = 2s" % suggested))
    for _ in range(3):
        c = conns(t2)
        assert c.get("/100.txt").status == 200
        time.sleep(max(gaps))
        assert c.get("/100.txt").status == 200
        c.close()
    t2.wait_metric("tether_connections_closed_total", lambda v: v == 3, reason="client_close")
    assert races(t2, "idle_timeout") == 0


def test_race_window_zero_closes_at_once(tether, site, conns):
    t = tether(config=config(site, keepalive="idle_timeout = 1s\nrace_window = 0"))
    c = conns(t)
    assert c.get("/100.txt").status == 200
    assert fin_seen(c, 2 + LATE)
    back = after_fin(c)
    # The socket is gone: the request meets a reset (or the FIN alone), never a response.
    assert not back
    time.sleep(0.2)
    assert races(t, "idle_timeout") == 0
    assert t.closed("idle_timeout") == 1
    assert race_lines(t, 1, timeout=0) == []


def test_race_window_bad_value_is_refused(tether, site, tmp_path):
    cfg = tmp_path / "bad.ini"
    cfg.write_text("[keepalive]\nrace_window = 2m\n")
    p = subprocess.run([TETHER_BIN, "serve", "--config", str(cfg)],
                       capture_output=True, timeout=10 * SLOW)
    assert p.returncode != 0
    assert "bad.ini:2: race_window:" in p.stderr.decode(), p.stderr


def test_max_requests_close_has_a_race_window(tether, site, conns):
    t = tether(config=config(site, keepalive="max_requests = 1\nrace_window = 3s"))
    c = conns(t)
    r = c.get("/100.txt")
    assert r.status == 200 and r.header("Connection") == "close"
    assert fin_seen(c, 2 + LATE)
    assert not after_fin(c)
    t.wait_metric("tether_close_races_total", lambda v: v == 1, listener="default", reason="max_requests")
    lines = race_lines(t, 1)
    assert "race_reason=max_requests" in lines[0], lines


def evict_first_of_three(t, conns):
    """Two connections at max_connections = 2, then a third: the oldest idle one (returned) is evicted."""
    a = conns(t)
    assert a.get("/100.txt").status == 200
    time.sleep(0.05)  # a strictly older than b (idle connections entered in the same millisecond tie)
    b = conns(t)
    assert b.get("/100.txt").status == 200
    c = conns(t)
    assert c.get("/100.txt").status == 200
    assert fin_seen(a, 2 + LATE), "the oldest idle connection was not evicted"
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="evicted")
    return a


def test_evicted_connection_has_a_race_window(tether, site, conns):
    t = tether(config=config(site, server="max_connections = 2", keepalive="idle_timeout = 30s\nrace_window = 20s"))
    a = evict_first_of_three(t, conns)
    assert not after_fin(a)
    t.wait_metric("tether_close_races_total", lambda v: v == 1, listener="default", reason="evicted")
    assert "race_reason=evicted" in race_lines(t, 1)[0]


def test_race_window_is_cut_first_when_a_slot_is_needed(tether, site, conns):
    t = tether(config=config(site, server="max_connections = 2", keepalive="idle_timeout = 30s\nrace_window = 20s"))
    a = evict_first_of_three(t, conns)  # a is in its race window, holding a descriptor
    d = conns(t)  # a slot is needed again: a's window is cut (not another idle connection evicted)
    assert d.get("/100.txt").status == 200
    assert not after_fin(a)  # a is gone: the request meets a reset, no race is seen
    time.sleep(0.2)
    assert races(t, "evicted") == 0
    assert t.closed("evicted") == 1, "a counted once, at its FIN; nothing else evicted"
    assert t.metric("tether_accept_pauses_total") == 0


def test_drain_closes_race_window_at_once(tether, site, conns):
    t = tether(config=config(site, server="drain_timeout = 30s", keepalive="idle_timeout = 1s\nrace_window = 30s"))
    c = conns(t)
    assert c.get("/100.txt").status == 200
    assert fin_seen(c, 2 + LATE)
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="idle_timeout")
    start = time.monotonic()
    assert t.stop() == 0
    took = time.monotonic() - start
    assert took < 5 * SLOW, "the drain waited for the race window: %.1f s" % took
    assert c.wait_closed(2) is not None


# ---- histograms and info ----

def test_latency_and_lifecycle_histograms(tether, site, conns, origins):
    o = origins(Origin)
    t = tether(config=config(site) + "[upstream app]\nserver = 127.0.0.1:%d\n[route /api/]\nupstream = app\n" % o.port)
    before = time.time()
    c = conns(t)
    for _ in range(3):
        assert c.get("/100.txt").status == 200
    for _ in range(2):
        assert c.get("/api/x").status == 200
    c.close()
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="client_close")
    m = t.metrics()
    key = 'tether_request_duration_seconds_count{listener="default",protocol="http1"}'
    assert m[key] == 5
    assert m['tether_request_duration_seconds_bucket{listener="default",protocol="http1",le="+Inf"}'] == 5
    assert m['tether_request_duration_seconds_count{listener="default",protocol="h2"}'] == 0
    assert m['tether_connection_lifetime_seconds_count{reason="client_close"}'] == 1
    assert m['tether_connection_requests_count{reason="client_close"}'] == 1
    assert m['tether_connection_requests_sum{reason="client_close"}'] == 5
    assert m['tether_connection_requests_bucket{reason="client_close",le="2"}'] == 0
    assert m['tether_connection_requests_bucket{reason="client_close",le="5"}'] == 1
    up = 'upstream="app",server="127.0.0.1:%d"' % o.port
    assert m["tether_upstream_connect_seconds_count{%s}" % up] == 1
    assert m["tether_upstream_first_byte_seconds_count{%s}" % up] == 2
    assert m["tether_upstream_exchange_seconds_count{%s}" % up] == 2
    assert m["tether_upstream_exchange_seconds_sum{%s}" % up] >= m["tether_upstream_first_byte_seconds_sum{%s}" % up]
    assert m['tether_tls_handshake_seconds_count{resumed="false"}'] == 0
    text = t.metrics_text()
    assert 'tether_build_info{version="' in text
    assert [v for k, v in m.items() if k.startswith("tether_build_info{")] == [1.0]
    assert before - 60 <= m["tether_start_time_seconds"] <= time.time() + 1
    # A second connection: counts grow.
    c = conns(t)
    assert c.get("/100.txt").status == 200
    t.wait_metric(key, lambda v: v == 6)


def test_listener_names_label_the_listener_series(tether, site, conns):
    t = tether(config="""\
[server]
workers = 2
[listen]
address = 127.0.0.1:0
[listen edge]
address = 127.0.0.1:0
address = 127.0.0.1:0
[static]
root = %s
""" % site, expect_listeners=3)
    for i in range(3):
        c = conns(t, index=i)
        assert c.get("/100.txt").status == 200
    m = t.metrics()
    assert m['tether_request_duration_seconds_count{listener="default",protocol="http1"}'] == 1
    assert m['tether_request_duration_seconds_count{listener="edge",protocol="http1"}'] == 2
    text = t.metrics_text()
    # one series per name, whatever the number of addresses and workers
    assert text.count('tether_close_races_total{listener="edge",reason="idle_timeout"}') == 1


def test_tls_handshake_histogram(tether, site, conns, tmp_path):
    from tls_util import Certs, tls_args, tls_connect, tls_port
    certs = Certs(tmp_path / "pki")
    t = tether("--root", str(site), *tls_args(certs))
    s = tls_connect(certs, tls_port(t))
    s.sendall(b"GET /100.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    while s.recv(65536):
        pass
    s.close()
    t.wait_metric("tether_tls_handshake_seconds_count", lambda v: v == 1, resumed="false")
    assert t.metric("tether_tls_handshake_seconds_count", resumed="true") == 0


def test_tls_race_is_read_after_close_notify(tether, site, tmp_path):
    # On TLS the close is close_notify, then FIN; a request that crosses it is decrypted and counted.
    from tls_util import Certs, tls_connect, tls_port
    certs = Certs(tmp_path / "pki")
    t = tether(config=config(site, keepalive="idle_timeout = 1s\nrace_window = 3s",
                             listen="tls = on\ntls_cert = %s\ntls_key = %s" % (certs.main.cert, certs.main.key)))
    s = tls_connect(certs, tls_port(t))
    try:
        s.sendall(b"GET /100.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got or len(got.split(b"\r\n\r\n", 1)[1]) < 100:
            chunk = s.recv(65536)
            assert chunk, got
            got += chunk
        s.settimeout(3 + LATE)
        assert s.recv(100) == b"", "close_notify expected after the idle timeout"
        s.sendall(b"GET /tls-race HTTP/1.1\r\nHost: t\r\n\r\n")
        t.wait_metric("tether_close_races_total", lambda v: v == 1, listener="default", reason="idle_timeout")
        lines = race_lines(t, 1)
        assert '"GET /tls-race HTTP/1.1" 0 0 ' in lines[0], lines
    finally:
        s.close()


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (Debian package prometheus, listed in scripts/install-deps.sh)")
def test_promtool_accepts_the_exposition(tether, site, conns, origins):
    o = origins(Origin)
    t = tether(config=config(site, keepalive="idle_timeout = 1s\nrace_window = 2s") +
               "[upstream app]\nserver = 127.0.0.1:%d\n[route /api/]\nupstream = app\n" % o.port)
    c = conns(t)
    assert c.get("/100.txt").status == 200
    assert c.get("/api/x").status == 200
    assert fin_seen(c, 2 + LATE)
    after_fin(c)
    t.wait_metric("tether_close_races_total", lambda v: v == 1, listener="default", reason="idle_timeout")
    text = t.metrics_text()
    p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), (p.stdout, p.stderr)
