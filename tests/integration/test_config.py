"""The config file: every section, listen groups with their own policy, flags over the file, limits, and
start-up refusals with "tether: FILE:LINE: key: reason" and exit status 2."""

import json
import re
import subprocess
import threading
import time

import pytest

from conftest import LISTEN_RE, METRICS_RE, SLOW, TETHER_BIN, HttpConn, split_hostport

HUNDRED = b"x" * 99 + b"\n"


def head(*lines, method=b"GET", target=b"/100.txt"):
    out = method + b" " + target + b" HTTP/1.1\r\nHost: t\r\n"
    for line in lines:
        out += line + b"\r\n"
    return out + b"\r\n"


# ---- a working file ----

def full_config(site, tmp_path, extra=""):
    return """\
; every section, as an operator would write it
# hash comments too
[server]
workers = 2
max_connections = 500   ; per worker
drain_timeout = 2s
backlog = 128

[listen]
address = 127.0.0.1:0

[keepalive]
idle_timeout = 4s
header_timeout = 5s
body_timeout = 5s
send_timeout = 5s
max_requests = 20
max_lifetime = 1h
keepalive_header = on

[tcp_keepalive]
enabled = on
idle = 60s
interval = 10s
count = 3

[limits]
max_body_size = 64k
max_request_target = 1k
max_field_section = 4k
max_fields = 50

[static]
root = {root}
index = home.html

[log]
access_log = {alog}
level = info

[metrics]
listen = 127.0.0.1:0
path = /custom-metrics
{extra}""".format(root=site, alog=tmp_path / "from-config.log", extra=extra)


class Proc:
    """tether started without the fixture's flags (only what the test gives)."""

    def __init__(self, argv, listeners=1, want_metrics=False):
        self.argv = [TETHER_BIN] + argv
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.lines, self.listen, self.metrics_addr = [], [], None
        self.ready = threading.Event()
        self.want = (listeners, want_metrics)
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=lambda: self.proc.stdout.read(), daemon=True).start()
        if not self.ready.wait(10 * SLOW) or self.proc.poll() is not None:
            self.proc.kill()  # never leave a half-started server behind
            self.proc.wait()
            raise RuntimeError("did not start: %s\n%s" % (self.argv, "\n".join(self.lines)))

    def _pump(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            m = LISTEN_RE.search(line)
            if m:
                self.listen.append(split_hostport(m.group(2)))
            m = METRICS_RE.search(line)
            if m:
                self.metrics_addr = split_hostport(m.group(1))
            if len(self.listen) >= self.want[0] and (self.metrics_addr or not self.want[1]):
                self.ready.set()
        self.ready.set()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def procs():
    started = []

    def start(argv, **kw):
        p = Proc(argv, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


def wait_for(pred, timeout=5):
    deadline = time.monotonic() + timeout * SLOW
    while not pred():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def get(addr, raw, method="GET"):
    c = HttpConn(*addr)
    try:
        c.send(raw)
        return c.response(method=method)
    finally:
        c.close()


def test_full_config_file_is_honoured(procs, site, tmp_path):
    (site / "home.html").write_text("home\n")
    cfg = tmp_path / "full.ini"
    cfg.write_text(full_config(site, tmp_path))
    p = procs(["serve", "--config", str(cfg)], want_metrics=True)
    addr = p.listen[0]
    c = HttpConn(*addr)
    try:
        r = c.get("/")  # [static] index
        assert r.status == 200 and r.body == b"home\n"
        assert r.keep_alive() == {"timeout": 4, "max": 19}  # [keepalive]
        assert c.get("/sub/").status == 403  # no home.html there
        c.request("GET", "/100.txt", body=b"a" * (64 * 1024))  # [limits] max_body_size (at the limit)
        assert c.response().status == 200
        c.send(b"GET /" + b"a" * 1100 + b" HTTP/1.1\r\nHost: t\r\n\r\n")  # [limits] max_request_target
        assert c.response().status == 414
    finally:
        c.close()
    # [metrics] listen and path; [server] workers
    m = get(p.metrics_addr, b"GET /custom-metrics HTTP/1.1\r\nHost: m\r\n\r\n")
    assert m.status == 200 and b"tether_connections_accepted_total" in m.body
    assert get(p.metrics_addr, b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n").status == 404
    status = json.loads(get(p.metrics_addr, b"GET /status.json HTTP/1.1\r\nHost: m\r\n\r\n").body)
    assert status["workers"] == 2
    # [log] access_log
    alog = tmp_path / "from-config.log"
    wait_for(lambda: alog.exists() and len(alog.read_text().splitlines()) >= 4)
    lines = alog.read_text().splitlines()
    assert '"GET / HTTP/1.1" 200' in lines[0]
    assert not any("GET /" in line for line in p.lines)  # not in the error log


def test_full_config_tcp_keepalive_on_accepted_sockets(procs, site, tmp_path):
    """[tcp_keepalive] enabled: the server's accepted socket shows a keepalive timer (ss -tnoe)."""
    if subprocess.run(["sh", "-c", "command -v ss"], capture_output=True).returncode != 0:
        pytest.skip("ss is not installed")
    cfg = tmp_path / "full.ini"
    cfg.write_text(full_config(site, tmp_path))
    p = procs(["serve", "--config", str(cfg)], want_metrics=True)
    c = HttpConn(*p.listen[0])
    try:
        assert c.get("/100.txt").status == 200
        out = subprocess.run(["ss", "-tnoH", "state", "established", "( sport = :%d )" % p.listen[0][1]],
                             capture_output=True, text=True).stdout
        assert "keepalive" in out, out
    finally:
        c.close()


def test_listen_groups_have_their_own_policy(tether, site):
    t = tether(config="""\
[keepalive]
idle_timeout = 4s
max_requests = 100

[listen]
address = 127.0.0.1:0

[listen internal]
address = 127.0.0.1:0
idle_timeout = 9s
max_requests = 7

[static]
root = %s
""" % site, expect_listeners=2)
    assert len(t.listen) == 2 and t.listen[0] != t.listen[1]
    seen = []
    for i in range(2):
        c = t.connect(index=i)
        try:
            r = c.get("/100.txt")
            assert r.status == 200 and r.body == HUNDRED
            seen.append(r.keep_alive())
        finally:
            c.close()
    assert sorted(seen, key=lambda k: k["timeout"]) == [{"timeout": 4, "max": 99}, {"timeout": 9, "max": 6}]


def test_listen_group_max_requests_closes(tether, site):
    t = tether(config="""\
[listen]
address = 127.0.0.1:0
max_requests = 2
[static]
root = %s
""" % site)
    c = t.connect()
    try:
        assert c.get("/100.txt").keep_alive() == {"timeout": 5, "max": 1}
        r = c.get("/100.txt")
        assert r.header("Connection") == "close"
        assert c.wait_closed(timeout=5) is not None
    finally:
        c.close()
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="max_requests")


@pytest.mark.parametrize("where", ["keepalive", "listen"])
def test_flag_overrides_file(tether, site, where):
    if where == "keepalive":
        cfg = "[listen]\naddress = 127.0.0.1:0\n[keepalive]\nidle_timeout = 7s\nmax_requests = 30\n"
    else:
        cfg = "[listen]\naddress = 127.0.0.1:0\nidle_timeout = 7s\nmax_requests = 30\n"
    cfg += "[static]\nroot = /nonexistent-root-overridden\n"
    t = tether("--idle-timeout", "2s", "--root", str(site), config=cfg)
    c = t.connect()
    try:
        r = c.get("/100.txt")
        assert r.status == 200 and r.body == HUNDRED  # --root beat [static] root
        assert r.keep_alive() == {"timeout": 2, "max": 29}  # the flag beat 7s; max_requests from the file
    finally:
        c.close()


def test_file_value_without_flag(tether, site):
    t = tether(config="[listen]\naddress = 127.0.0.1:0\n[keepalive]\nidle_timeout = 7s\n[static]\nroot = %s\n" % site)
    c = t.connect()
    try:
        assert c.get("/100.txt").keep_alive() == {"timeout": 7, "max": 999}
    finally:
        c.close()


def test_listen_flag_replaces_file_listeners(tether, site):
    t = tether("--listen", "127.0.0.1:0",
               config="[listen]\naddress = 127.0.0.1:1\n[listen b]\naddress = 127.0.0.1:2\n[static]\nroot = %s\n" % site)
    assert len(t.listen) == 1 and t.listen[0][1] not in (1, 2)
    c = t.connect()
    try:
        assert c.get("/100.txt").status == 200
    finally:
        c.close()
    time.sleep(0.1)
    assert sum("listening on" in line for line in t.stderr_lines) == 1


@pytest.mark.parametrize("size,status", [(10, 200), (11, 413)])
def test_max_body_size(tether, site, size, status):
    t = tether("--root", str(site), config="[limits]\nmax_body_size = 10\n")
    c = t.connect()
    try:
        c.request("GET", "/100.txt", body=b"b" * size)
        r = c.response()
        assert r.status == status
        if status == 413:
            assert r.header("Connection") == "close"
            assert c.wait_closed(timeout=5) is not None
        else:
            assert c.get("/style.css").body == b"body{}\n"
    finally:
        c.close()


def test_max_body_size_chunked(tether, site):
    t = tether("--root", str(site), config="[limits]\nmax_body_size = 10\n")
    c = t.connect()
    try:
        c.send(head(b"Transfer-Encoding: chunked") + b"6\r\nabcdef\r\n4\r\nghij\r\n0\r\n\r\n"
               + head(b"Transfer-Encoding: chunked") + b"6\r\nabcdef\r\n5\r\nghijk\r\n0\r\n\r\n" + head())
        assert c.response().status == 200
        r = c.response()  # the content came with its head: counted before any answer (issue 10)
        assert r.status == 413 and r.header("Connection") == "close", r
        assert c.wait_closed(timeout=5) is not None
        assert c.buf == b""
    finally:
        c.close()
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="bad_request")


def status_of(t, raw):
    c = t.connect()
    try:
        c.send(raw)
        return c.response().status
    finally:
        c.close()


LIMIT_CASES = {
    "max_request_target": ("max_request_target = 100", [
        (b"GET /100.txt?" + b"a" * 91 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 200),  # a 100-byte target
        (b"GET /100.txt?" + b"a" * 92 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    ]),
    "max_field_section": ("max_field_section = 1024", [
        (head(b"X-A: " + b"a" * 900), 200),
        (head(b"X-A: " + b"a" * 1100), 431),
    ]),
    "max_fields": ("max_fields = 5", [
        (head(*[b"X-%d: v" % i for i in range(4)]), 200),  # Host + 4
        (head(*[b"X-%d: v" % i for i in range(5)]), 431),  # Host + 5
    ]),
    # all three small at once (the smallest values the key table accepts are 64 and 1024)
    "all_small": ("max_request_target = 100\nmax_field_section = 1024\nmax_fields = 5", [
        (head(), 200),
        (b"GET /100.txt?" + b"a" * 91 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 200),
        (head(b"X-A: " + b"a" * 900), 200),
        (b"GET /100.txt?" + b"a" * 92 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
        (head(b"X-A: " + b"a" * 1100), 431),
    ]),
    "minimum_values": ("max_request_target = 64\nmax_field_section = 1024", [
        (head(), 200),
        (b"GET /" + b"a" * 64 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    ]),
}


@pytest.mark.parametrize("keys,cases", list(LIMIT_CASES.values()), ids=list(LIMIT_CASES.keys()))
def test_limits_in_config(tether, site, keys, cases):
    t = tether("--root", str(site), config="[limits]\n%s\n" % keys)
    got = [(raw[:40], status_of(t, raw)) for raw, _ in cases]
    assert got == [(raw[:40], status) for raw, status in cases]


def test_limits_in_listen_group(tether, site):
    t = tether(config="""\
[listen]
address = 127.0.0.1:0
[listen strict]
address = 127.0.0.1:0
max_fields = 2
[static]
root = %s
""" % site, expect_listeners=2)
    statuses = set()
    for i in range(2):
        c = t.connect(index=i)
        try:
            c.send(head(b"X-A: 1", b"X-B: 2"))
            statuses.add(c.response().status)
        finally:
            c.close()
    assert statuses == {200, 431}


# ---- refusals at start-up ----

def run_bad(args, timeout=10):
    out = subprocess.run([TETHER_BIN] + args, capture_output=True, timeout=timeout * SLOW, text=True)
    return out.returncode, out.stderr


BAD_CONFIGS = {
    "unknown_key": ("[server]\nworkers = 2\nbogus = 1\n", 3, "bogus", "unknown key"),
    "key_in_wrong_section": ("[server]\n\nidle_timeout = 5s\n", 3, "idle_timeout", "unknown key"),
    "unknown_section": ("[server]\nworkers = 1\n\n[bogus]\nx = 1\n", 4, "[bogus]", "unknown section"),
    "bad_duration": ("[keepalive]\n; comment\nidle_timeout = 5 parsecs\n", 3, "idle_timeout",
                     "unknown unit (use ms, s, m or h)"),
    "negative_duration": ("[keepalive]\nidle_timeout = -5s\n", 2, "idle_timeout", "must not be negative"),
    "out_of_range_fields": ("[limits]\nmax_body_size = 1m\n\n\nmax_fields = 500\n", 5, "max_fields", "100"),
    "out_of_range_target": ("[limits]\nmax_request_target = 10\n", 2, "max_request_target", "must be between"),
    "bad_size": ("[limits]\nmax_body_size = 10 parsecs\n", 2, "max_body_size", "unknown unit"),
    "bad_bool": ("[keepalive]\nkeepalive_header = maybe\n", 2, "keepalive_header", "expected on or off"),
    "bad_address": ("[listen]\naddress = 127.0.0.1\n", 2, "address", "expected HOST:PORT"),
    "bad_port": ("[listen]\naddress = 127.0.0.1:99999\n", 2, "address", "port must be"),
    "bad_tcp_keepalive": ("[static]\nroot = /tmp\n[listen]\naddress = 127.0.0.1:0\ntcp_keepalive = 1:2\n", 5,
                          "tcp_keepalive", "IDLE:INTERVAL:COUNT"),
    "bad_workers": ("[server]\nworkers = lots\n", 2, "workers", "auto"),
    "bad_level": ("[log]\nlevel = chatty\n", 2, "level", "expected error, warn, info or debug"),
    "bad_metrics": ("[metrics]\nlisten = nowhere\n", 2, "listen", "HOST:PORT"),
    "empty_root": ("[static]\nroot =\n", 2, "root", "must not be empty"),
    "bad_upgrade": ("[upstream b]\nserver = 127.0.0.1:9\n[route /ws/]\nupstream = b\nupgrade = maybe\n", 5, "upgrade",
                    "expected websocket, any or off"),
    "bad_tunnel_idle_timeout": ("[upstream b]\nserver = 127.0.0.1:9\n[route /ws/]\nupstream = b\n"
                                "tunnel_idle_timeout = 0s\n", 5, "tunnel_idle_timeout", "must be between"),
}


@pytest.mark.parametrize("text,line,key,why", list(BAD_CONFIGS.values()), ids=list(BAD_CONFIGS.keys()))
def test_bad_config_value(tmp_path, site, text, line, key, why):
    cfg = tmp_path / "bad.ini"
    cfg.write_text(text)
    rc, err = run_bad(["serve", "--config", str(cfg), "--root", str(site), "--listen", "127.0.0.1:0"])
    assert rc == 2, err
    m = re.search(r"^tether: (.+):(\d+): ([a-z_]+|\[[a-z_ ]+\]): (.+)$", err, re.M)
    assert m, err
    assert m.group(1) == str(cfg)
    assert int(m.group(2)) == line, err
    assert m.group(3) == key
    assert why in m.group(4), err
    assert "listening" not in err


def test_syntax_error_line(tmp_path, site):
    cfg = tmp_path / "bad.ini"
    cfg.write_text("[server]\nworkers = 1\n\njust some words\n")
    rc, err = run_bad(["serve", "--config", str(cfg), "--root", str(site)])
    assert rc == 2
    assert re.search(r"^tether: %s:4: syntax error" % re.escape(str(cfg)), err, re.M), err


def test_unclosed_section_header(tmp_path, site):
    cfg = tmp_path / "bad.ini"
    cfg.write_text("[server\nworkers = 1\n")
    rc, err = run_bad(["serve", "--config", str(cfg), "--root", str(site)])
    assert rc == 2
    assert re.search(r"^tether: %s:1: " % re.escape(str(cfg)), err, re.M), err


def test_empty_unknown_section_is_refused(tmp_path, site):
    """docs/config.md: an unknown section stops start-up -- also one without keys (a typo like
    [keeaplive] would otherwise be dropped silently)."""
    cfg = tmp_path / "bad.ini"
    cfg.write_text("[server]\nworkers = 1\n[keeaplive]\n")
    try:
        rc, err = run_bad(["serve", "--config", str(cfg), "--root", str(site), "--listen", "127.0.0.1:0",
                           "--access-log", "off"], timeout=2)
    except subprocess.TimeoutExpired as e:
        pytest.fail("started with the unknown empty section [keeaplive]: %s" % (e.stderr or b"").decode())
    assert rc == 2, err
    assert "keeaplive" in err


def test_listen_group_without_address(tmp_path, site):
    cfg = tmp_path / "bad.ini"
    cfg.write_text("[listen]\naddress = 127.0.0.1:0\n[listen extra]\nidle_timeout = 3s\n")
    rc, err = run_bad(["serve", "--config", str(cfg), "--root", str(site)])
    assert rc == 2
    assert "[listen extra] has no address" in err


def test_missing_config_file(tmp_path, site):
    missing = tmp_path / "nope.ini"
    rc, err = run_bad(["serve", "--config", str(missing), "--root", str(site)])
    assert rc == 2
    assert str(missing) in err
    assert "No such file or directory" in err


@pytest.mark.parametrize("args,needle", [
    (["--idle-timeout", "banana"], "--idle-timeout:"),
    (["--idle-timeout", "-1s"], "--idle-timeout: must not be negative"),
    (["--max-requests", "many"], "--max-requests:"),
    (["--workers", "0x10"], "--workers:"),
    (["--tcp-keepalive", "1:2"], "--tcp-keepalive:"),
    (["--keepalive-header", "perhaps"], "--keepalive-header: expected on or off"),
    (["--listen", "localhost"], "--listen localhost:"),
    (["--metrics", "nowhere"], "--metrics:"),
    (["--log-level", "loud"], "--log-level:"),
    (["--no-such-flag"], "no-such-flag"),
    (["--root"], "root"),
    (["stray-argument"], "stray-argument"),
])
def test_bad_flags(site, args, needle):
    rc, err = run_bad(["serve", "--root", str(site), "--listen", "127.0.0.1:0"] + args)
    assert rc == 2, err
    assert needle in err, err


def test_bad_flag_beats_good_file(tmp_path, site):
    cfg = tmp_path / "ok.ini"
    cfg.write_text("[keepalive]\nidle_timeout = 5s\n")
    rc, err = run_bad(["serve", "--config", str(cfg), "--root", str(site), "--idle-timeout", "5 parsecs"])
    assert rc == 2 and "--idle-timeout: unknown unit" in err


def test_nothing_to_serve(tmp_path):
    rc, err = run_bad(["serve", "--listen", "127.0.0.1:0"])
    assert rc == 2
    assert "nothing to serve" in err
    cfg = tmp_path / "noroot.ini"
    cfg.write_text("[listen]\naddress = 127.0.0.1:0\n")
    rc, err = run_bad(["serve", "--config", str(cfg)])
    assert rc == 2 and "nothing to serve" in err


def test_root_from_config_file(tether, site):
    t = tether(config="[static]\nroot = %s\n" % site)
    c = t.connect()
    try:
        assert c.get("/100.txt").body == HUNDRED
    finally:
        c.close()


def test_config_comments_and_inline_comments(tether, site):
    t = tether(config="""\
; leading comment
# another
[listen]
address = 127.0.0.1:0   ; inline comment
[keepalive]
idle_timeout = 1.5s ; fractional, rounded down in the header
max_requests = 3
[static]
root = %s
""" % site)
    c = t.connect()
    try:
        assert c.get("/100.txt").keep_alive() == {"timeout": 1, "max": 2}
    finally:
        c.close()
    assert "idle_timeout=1500ms" in t.stderr()
