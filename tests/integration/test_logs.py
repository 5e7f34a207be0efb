"""The log points of issue 13: access-log formats (main, combined, json, templates), request ids, upstream
timings, every answer logged (408 included), and the error log sent to syslog.

Each test starts tether with an inline config and reads its access log file (conftest's `tether` fixture).
HTTP/2 requests go through curl --http2-prior-knowledge; the proxy tests use origin.Origin, whose JSON echo
shows the fields the upstream received.
"""

import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import SLOW, TETHER_BIN
from proxy_util import addr, echo, field_values, origins, upstream_config  # noqa: F401 (fixture)

HEX32 = re.compile(r"^[0-9a-f]{32}$")
# nginx's combined: $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
# "$http_referer" "$http_user_agent"
COMBINED = re.compile(r'^(\S+) - (\S+) \[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] '
                      r'"((?:[^"\\]|\\x[0-9A-F]{2})*)" (\d{3}) (\d+) "((?:[^"\\]|\\x[0-9A-F]{2})*)" '
                      r'"((?:[^"\\]|\\x[0-9A-F]{2})*)"$')


def log_config(fmt, extra=""):
    return "[log]\nlog_format = %s\n%s\n" % (fmt, extra)


def curl(*args):
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", str(10 * SLOW)]
                       + list(args), capture_output=True, timeout=20 * SLOW)
    return int(r.stdout or b"0")


def json_lines(t, n):
    lines = t.access_lines(wait_for=n)
    assert len(lines) >= n, lines
    return [json.loads(line) for line in lines]


def wait_json(t, pred, timeout=5):
    deadline = time.monotonic() + timeout * SLOW
    while True:
        recs = [json.loads(line) for line in t.access_lines()]
        hits = [r for r in recs if pred(r)]
        if hits:
            return hits[0]
        if time.monotonic() > deadline:
            raise AssertionError("no matching line in:\n%s" % "\n".join(t.access_lines()))
        time.sleep(0.02)


# ---- formats ----

def test_combined_format_is_nginx_combined_for_h1_and_h2(tether, site):
    t = tether("--root", str(site), config=log_config("combined"))
    assert curl("-A", 'Agent "q" \\ x', "-e", "http://ref.example/p", t.url("/100.txt")) == 200
    assert curl("--http2-prior-knowledge", t.url("/index.html")) == 200
    lines = t.access_lines(wait_for=2)
    m = [COMBINED.match(line) for line in lines]
    assert all(m), lines
    addr_, user, _, request, status, body, referer, agent = m[0].groups()
    assert (addr_, user, request, status, body) == ("127.0.0.1", "-", "GET /100.txt HTTP/1.1", "200", "100")
    assert referer == "http://ref.example/p"
    assert agent == "Agent \\x22q\\x22 \\x5C x"  # nginx's escaping: \xHH for quote and backslash
    assert m[1].group(4) == "GET /index.html HTTP/2.0" and m[1].group(7) == "-"  # no referer: "-"
    assert m[1].group(6) == str(len((site / "index.html").read_bytes()))


def test_json_lines_parse_with_every_variable_and_hostile_bytes(tether, site, conns):
    t = tether("--root", str(site), config=log_config("json"))
    c = conns(t)
    # a user agent with a quote, a backslash, a tab, a byte that is not UTF-8, valid UTF-8 and a cut sequence
    c.send(b"GET /100.txt?q=%22 HTTP/1.1\r\nHost: Example.org:8080\r\nReferer: r\r\n"
           b"User-Agent: a\"b\\c\td\xff\xc3\xa9\xe2\x82\r\n\r\n")
    assert c.response().status == 200
    # a refused request-line: logged with what was read of it
    c2 = conns(t)
    c2.send(b"GET /a\"b\x01 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c2.response().status == 400
    recs = json_lines(t, 2)
    ok = [r for r in recs if r["status"] == 200][0]
    assert ok["http_user_agent"] == 'a"b\\c\tdÿé\u00e2\u0082'  # each bad byte as \u00XX
    assert ok["http_referer"] == "r" and ok["host"] == "Example.org"
    assert ok["request"] == "GET /100.txt?q=%22 HTTP/1.1" and ok["request_uri"] == "/100.txt?q=%22"
    assert ok["request_method"] == "GET" and ok["server_protocol"] == "HTTP/1.1" and ok["protocol"] == "h1"
    assert ok["body_bytes_sent"] == 100 and ok["bytes_sent"] > 100
    assert isinstance(ok["request_time"], float) and isinstance(ok["msec"], float)
    assert ok["remote_addr"] == "127.0.0.1" and ok["remote_port"] == c.sock.getsockname()[1]
    assert ok["connection"] >= 1 and ok["connection_requests"] == 1
    assert ok["keepalive"] == "keep" and ok["close_reason"] is None and ok["stream_id"] is None
    assert HEX32.match(ok["request_id"])
    assert ok["remote_user"] is None and ok["upstream_name"] is None and ok["upstream_connect_time"] is None
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$", ok["time_iso8601"])
    bad = [r for r in recs if r["status"] == 400][0]
    assert bad["keepalive"] == "close" and bad["close_reason"] == "bad_request"
    # every variable, in both lines
    assert set(ok) == set(bad) and len(ok) >= 32


def test_json_h2_request_names_its_stream(tether, site):
    t = tether("--root", str(site), config=log_config("json"))
    assert curl("--http2-prior-knowledge", "-A", "h2-agent", t.url("/index.html")) == 200
    r = json_lines(t, 1)[0]
    assert (r["protocol"], r["stream_id"], r["server_protocol"]) == ("h2", 1, "HTTP/2.0")
    assert r["http_user_agent"] == "h2-agent" and r["status"] == 200 and HEX32.match(r["request_id"])
    assert r["body_bytes_sent"] == r["bytes_sent"] == len((site / "index.html").read_bytes())


def test_template_variables_in_both_spellings(tether, site, conns):
    fmt = "$status|${request_method}|$http_x_custom|$$|$protocol|$keepalive|$close_reason|$connection_requests|x${host}y"
    t = tether("--root", str(site), config=log_config(fmt))
    c = conns(t)
    assert c.get("/index.html", headers={"X-Custom": "v1"}, host="h.example").status == 200
    assert c.get("/index.html", headers={"Connection": "close"}).status == 200
    assert t.access_lines(wait_for=2) == ["200|GET|v1|$|h1|keep|-|1|xh.exampley",
                                          "200|GET|-|$|h1|close|client_close|2|xty"]


def test_template_fields_of_a_file_sent_later_are_kept(tether, site, conns):
    """A big file is sent with sendfile after the head is gone: the line still has the request's fields."""
    t = tether("--root", str(site), config=log_config("$http_user_agent $request_uri $body_bytes_sent"))
    c = conns(t)
    r = c.get("/big.bin", headers={"User-Agent": "slow-reader"})
    assert r.status == 200
    assert t.access_lines(wait_for=1) == ["slow-reader /big.bin %d" % len(r.body)]


@pytest.mark.parametrize("fmt,why", [
    ("$status $foo", "unknown variable $foo"),
    ("${status", "a ${ without a name"),
    ("cost $", "a $ without a variable name"),
])
def test_bad_template_is_a_start_up_error_with_file_and_line(tmp_path, fmt, why):
    ini = tmp_path / "t.ini"
    ini.write_text("[static]\nroot = %s\n\n[log]\nlog_format = %s\n" % (tmp_path, fmt))
    r = subprocess.run([TETHER_BIN, "serve", "--config", str(ini), "--check"], capture_output=True, timeout=20)
    assert r.returncode == 2
    assert "%s:5: log_format: %s" % (ini, why) in r.stderr.decode(), r.stderr


def test_main_format_stays_the_default(tether, site, conns):
    t = tether("--root", str(site))
    assert conns(t).get("/index.html").status == 200
    line = t.access_lines(wait_for=1)[0]
    assert re.match(r'^127\.0\.0\.1 - - \[[^]]+\] "GET /index\.html HTTP/1\.1" 200 \d+ \d+\.\d{3} conn=\d+ req=1 keep$',
                    line), line


# ---- every answer logged ----

def test_header_timeout_408_is_logged_in_json(tether, site, conns):
    t = tether("--root", str(site), config=log_config("json") + "[keepalive]\nheader_timeout = 1s\n")
    c = conns(t)
    c.send(b"GET /slow HTTP/1.1\r\nHost: a\r\nUser-Agent: cut")
    assert c.response().status == 408
    r = wait_json(t, lambda r: r["status"] == 408)
    assert r["request"] == "GET /slow HTTP/1.1" and r["close_reason"] == "header_timeout"
    assert r["keepalive"] == "close" and HEX32.match(r["request_id"]) and r["body_bytes_sent"] == 0


# ---- request ids ----

def proxy_tether(tether, o, fmt="json", extra=""):
    return tether(config=upstream_config([addr(o)]) + "\n" + log_config(fmt, extra))


def test_request_id_generated_logged_and_forwarded(tether, origins, conns):
    o = origins()
    t = proxy_tether(tether, o)
    e = echo(conns(t).get("/a"))
    sent = field_values(e, "X-Request-Id")
    r = json_lines(t, 1)[0]
    assert len(sent) == 1 and HEX32.match(sent[0]) and r["request_id"] == sent[0]


def test_request_id_kept_when_valid_and_replaced_when_not(tether, origins, conns):
    o = origins()
    t = proxy_tether(tether, o)
    c = conns(t)
    e = echo(c.get("/kept", headers={"X-Request-Id": "client-id-42"}))
    assert field_values(e, "X-Request-Id") == ["client-id-42"]
    for bad in ("has space", "x" * 201):
        e = echo(c.get("/replaced", headers={"X-Request-Id": bad}))
        ids = field_values(e, "X-Request-Id")
        assert len(ids) == 1 and HEX32.match(ids[0]), (bad, ids)
    recs = json_lines(t, 3)
    assert recs[0]["request_id"] == "client-id-42"
    assert HEX32.match(recs[1]["request_id"]) and HEX32.match(recs[2]["request_id"])
    assert recs[1]["request_id"] != recs[2]["request_id"]


def test_request_id_off_and_generate(tether, origins, conns):
    o = origins()
    t = proxy_tether(tether, o, fmt="$request_id", extra="request_id = off")
    c = conns(t)
    assert field_values(echo(c.get("/off")), "X-Request-Id") == []
    assert field_values(echo(c.get("/off", headers={"X-Request-Id": "mine"})), "X-Request-Id") == ["mine"]
    assert t.access_lines(wait_for=2) == ["-", "-"]
    t2 = proxy_tether(tether, o, fmt="$request_id", extra="request_id = generate")
    ids = field_values(echo(conns(t2).get("/gen", headers={"X-Request-Id": "mine"})), "X-Request-Id")
    assert len(ids) == 1 and HEX32.match(ids[0])
    assert t2.access_lines(wait_for=3)[2:] == ids  # both servers write to the test's one access log


@pytest.mark.parametrize("log", ["off", "main"])
def test_request_id_still_goes_upstream_when_the_access_log_does_not_read_it(tether, origins, conns, log):
    """The id is made when something first reads it (reqid.c), not for every request: with the access log off, or in
    the main format (which does not show $request_id), nothing in the log asks for it, and a proxied request must
    still carry one upstream as documented: generated and new for each request, the client's when it is valid (over
    HTTP/1.1 and HTTP/2), a bad one replaced by a single generated field, and none where a field rule removes it."""
    o = origins()
    drop = "request_remove_header = X-Request-Id\n"
    cfg = upstream_config([addr(o)]) + "\n" + upstream_config([addr(o)], route="/dropped/", name="dropped", extra=drop)
    t = tether(*(["--access-log", "off"] if log == "off" else []), config=cfg)
    c = conns(t)
    ids = [field_values(echo(c.get("/a%d" % i)), "X-Request-Id") for i in range(3)]
    assert all(len(v) == 1 and HEX32.match(v[0]) for v in ids), ids
    assert len({v[0] for v in ids}) == 3, ids
    assert field_values(echo(c.get("/kept", headers={"X-Request-Id": "client-id-7"})), "X-Request-Id") == [
        "client-id-7"]
    bad = field_values(echo(c.get("/replaced", headers={"X-Request-Id": "has space"})), "X-Request-Id")
    assert len(bad) == 1 and HEX32.match(bad[0]), bad
    assert field_values(echo(c.get("/dropped/x", headers={"X-Request-Id": "client-id-8"})), "X-Request-Id") == []
    assert field_values(echo(c.get("/dropped/y")), "X-Request-Id") == []
    for sent, want in ((None, HEX32), ("h2-id", re.compile("^h2-id$"))):
        args = ["curl", "-s", "--max-time", str(10 * SLOW), "--http2-prior-knowledge", t.url("/via-h2")]
        r = subprocess.run(args + (["-H", "X-Request-Id: " + sent] if sent else []), capture_output=True,
                           timeout=20 * SLOW)
        got = field_values(json.loads(r.stdout), "X-Request-Id")
        assert len(got) == 1 and want.match(got[0]), (sent, got)
    if log == "off":
        assert t.access_lines() == []


# ---- upstream timings ----

def test_upstream_timings_new_then_reused_connection(tether, origins, conns):
    o = origins()
    t = proxy_tether(tether, o)
    c = conns(t)
    assert c.get("/one?delay=50").status == 200
    assert c.get("/two").status == 200
    first, second = json_lines(t, 2)
    assert first["upstream_name"] == "backend" and first["upstream_addr"] == addr(o)
    assert first["upstream_status"] == 200 and first["upstream_cause"] is None
    assert first["upstream_reused"] == 0 and first["upstream_connect_time"] > 0
    assert first["upstream_header_time"] >= 0.05  # the origin waited 50 ms before its head
    assert first["upstream_connect_time"] <= first["upstream_header_time"] <= first["upstream_response_time"]
    assert second["upstream_reused"] == 1 and second["upstream_connect_time"] == 0
    assert 0 <= second["upstream_header_time"] <= second["upstream_response_time"]


def test_upstream_fields_of_a_proxied_h2_request_and_a_failure(tether, origins):
    o = origins()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    cfg = (upstream_config([addr(o)]) + "\n" + upstream_config(["127.0.0.1:%d" % port], route="/dead/", name="dead")
           + "\n" + log_config("json"))
    t = tether(config=cfg)
    assert curl("--http2-prior-knowledge", "-H", "X-Request-Id: h2-id", t.url("/via-h2")) == 200
    assert curl(t.url("/dead/x")) == 502
    ok = wait_json(t, lambda r: r["request_uri"] == "/via-h2")
    assert ok["protocol"] == "h2" and ok["upstream_status"] == 200 and ok["request_id"] == "h2-id"
    assert ok["upstream_response_time"] >= ok["upstream_header_time"] >= 0
    bad = wait_json(t, lambda r: r["request_uri"] == "/dead/x")
    assert bad["upstream_cause"] == "connect_refused" and bad["upstream_status"] is None
    assert bad["upstream_name"] == "dead" and bad["upstream_connect_time"] is None


def test_captured_fields_of_an_asynchronous_request(tether, origins, conns):
    """A proxied request's line is written after its head is gone: the fields it names were copied."""
    o = origins()
    t = proxy_tether(tether, o, fmt="$http_x_custom|$http_user_agent|$host|$upstream_status")
    assert conns(t).get("/x?delay=20", headers={"X-Custom": "abc", "User-Agent": "ua"}, host="h:1").status == 200
    assert t.access_lines(wait_for=1) == ["abc|ua|h|200"]


# ---- the error log to syslog ----

def test_error_log_to_a_syslog_socket(tmp_path, site):
    path = str(tmp_path / "log.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    sink.settimeout(10 * SLOW)
    ini = tmp_path / "t.ini"
    ini.write_text("[static]\nroot = %s\n[listen]\naddress = 127.0.0.1:0\n[log]\n"
                   "error_log = syslog:%s,facility=local0,tag=tt-test\n" % (site, path))
    p = subprocess.Popen([TETHER_BIN, "serve", "--config", str(ini), "--access-log", "off"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        got = []

        def until(pred):
            deadline = time.monotonic() + 10 * SLOW
            while time.monotonic() < deadline:
                d = sink.recv(4096).decode()
                got.append(d)
                if pred(d):
                    return d
            raise AssertionError(got)

        d = until(lambda d: "listening on" in d)
        m = re.match(r"^<(\d+)>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) tt-test\[(\d+)\]: (.*)$", d)
        assert m, d
        assert int(m.group(1)) == 16 * 8 + 6  # local0, info
        assert int(m.group(3)) == p.pid
        assert "listening on http://127.0.0.1:" in m.group(4)
        p.send_signal(signal.SIGUSR1)  # reconnects to the socket, and says so there
        until(lambda d: "SIGUSR1: reopened the logs" in d)
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(20 * SLOW) == 0
        sink.close()
    assert b"listening on" not in p.stderr.read()


def test_bad_syslog_spec_is_a_start_up_error(tmp_path):
    ini = tmp_path / "t.ini"
    ini.write_text("[static]\nroot = %s\n[log]\nerror_log = syslog:facility=nope\n" % tmp_path)
    r = subprocess.run([TETHER_BIN, "serve", "--config", str(ini), "--check"], capture_output=True, timeout=20)
    assert r.returncode == 2 and "t.ini:4: error_log: unknown syslog facility" in r.stderr.decode(), r.stderr


# ---- tunnels ----

def test_tunnel_line_in_json_has_its_bytes_and_duration(tether):
    from test_tunnels import RawOrigin, recv_exact, upgrade
    o = RawOrigin()
    try:
        t = tether(config=upstream_config(["127.0.0.1:%d" % o.port]) + "\n" + log_config("json"))
        s, head = upgrade(t)
        assert head.startswith(b"HTTP/1.1 101 "), head
        s.sendall(b"twenty bytes, really")
        assert recv_exact(s, 20) == b"twenty bytes, really"
        s.close()
        r = wait_json(t, lambda r: r["status"] == 101)
        assert (r["tunnel_up"], r["tunnel_down"]) == (20, 20) and isinstance(r["tunnel_time"], float)
        assert r["close_reason"] == "tunnel_closed_by_client" and r["upstream_name"] == "backend"
        assert HEX32.match(r["request_id"]) and "X-Request-Id: %s\r\n" % r["request_id"] in o.heads[-1]
    finally:
        o.stop()


# ---- reload ----

def test_the_format_and_request_ids_outlive_the_configuration_a_reload_replaced(tether, site):
    """The compiled format belongs to the running server, not to the first configuration: after two reloads have
    released that configuration (no connection uses it), lines are still JSON with generated ids (a freed format
    would be garbage, and an error under ASan)."""
    cfg = log_config("json", "[keepalive]\nidle_timeout = %s\n")
    t = tether("--root", str(site), config=cfg % "5s")
    assert curl("http://127.0.0.1:%d/" % t.port) == 200
    for gen, idle in ((2, "6s"), (3, "7s")):
        with open(t.config_path, "w") as f:
            f.write(cfg % idle)
        t.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10 * SLOW
        while "reload: applied (generation %d)" % gen not in t.stderr():
            assert time.monotonic() < deadline, t.stderr()
            time.sleep(0.02)
    assert curl("http://127.0.0.1:%d/" % t.port) == 200
    recs = json_lines(t, 2)
    assert all(HEX32.match(r["request_id"]) for r in recs), recs
