"""The command line: version, help, commands, repeated and IPv6 listeners, workers, access-log targets,
and the /status.json JSON."""

import json
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import SLOW, TETHER_BIN, HttpConn

HUNDRED = b"x" * 99 + b"\n"

SERVE_FLAGS = ["--config", "--root", "--listen", "--workers", "--idle-timeout", "--max-requests", "--max-lifetime",
               "--header-timeout", "--max-connections", "--keepalive-header", "--tcp-keepalive", "--access-log",
               "--metrics", "--body-timeout", "--send-timeout", "--drain-timeout", "--log-level"]


def run(*args, timeout=10):
    return subprocess.run([TETHER_BIN] + list(args), capture_output=True, text=True, timeout=timeout * SLOW)


def test_version():
    for arg in ("--version", "version"):
        out = run(arg)
        assert out.returncode == 0
        assert re.fullmatch(r"tether \d+\.\d+\.\d+\n", out.stdout), out.stdout
        assert out.stderr == ""


def test_help_exits_0():
    for arg in ("--help", "-h", "help"):
        out = run(arg)
        assert out.returncode == 0, out
        assert out.stdout.startswith("usage: tether")
        assert "serve" in out.stdout
        assert "tether serve --help" in out.stdout
        assert "--version" in out.stdout


@pytest.mark.parametrize("arg", ["--help", "-h"])
def test_serve_help_lists_every_flag(arg):
    out = run("serve", arg)
    assert out.returncode == 0, out
    assert out.stdout.startswith("usage: tether serve")
    for flag in SERVE_FLAGS:
        # a flag's line may start with its short form ("-c, --config FILE")
        assert re.search(r"^\s+(-\w, )?%s\b" % re.escape(flag), out.stdout, re.M), "%s missing from serve --help" % flag


def test_serve_help_wins_over_other_flags(site):
    out = run("serve", "--root", str(site), "--help", "--listen", "127.0.0.1:0")
    assert out.returncode == 0 and "--idle-timeout" in out.stdout


@pytest.mark.parametrize("args", [["frobnicate"], ["--bogus"], ["Serve"]])
def test_unknown_command_exits_2(args):
    out = run(*args)
    assert out.returncode == 2
    assert "unknown command" in out.stderr
    assert out.stdout == ""


def test_no_command_exits_2():
    out = run()
    assert out.returncode == 2
    assert "usage: tether" in out.stderr


# ---- listeners ----

def fetch(host, port, path="/100.txt"):
    c = HttpConn(host, port)
    try:
        return c.get(path)
    finally:
        c.close()


def test_listen_twice_listens_on_both(tether, site):
    t = tether("--root", str(site), "--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0", expect_listeners=2)
    assert len(t.listen) == 2
    assert t.listen[0][1] != t.listen[1][1]
    for host, port in t.listen:
        r = fetch(host, port)
        assert r.status == 200 and r.body == HUNDRED
    assert t.metric("tether_connections_accepted_total") == 2


def ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s.bind(("::1", 0))
        finally:
            s.close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="::1 is not available")
def test_ipv6_listener(tether, site):
    t = tether("--root", str(site), "--listen", "[::1]:0", "--listen", "127.0.0.1:0", expect_listeners=2)
    hosts = sorted(h for h, _ in t.listen)
    assert hosts == ["127.0.0.1", "::1"]
    for host, port in t.listen:
        r = fetch(host, port)
        assert r.status == 200 and r.body == HUNDRED
    assert "listening on http://[::1]:" in t.stderr()
    # the access log writes the v6 peer
    lines = t.access_lines(wait_for=2)
    assert any(line.startswith("::1 ") for line in lines), lines


@pytest.mark.multiworker
@pytest.mark.parametrize("n", [1, 2, 3])
def test_workers(tether, site, n):
    t = tether("--root", str(site), "--workers", str(n))
    assert "workers=%d" % n in t.stderr()
    conns = [t.connect() for _ in range(6)]
    try:
        for c in conns:
            r = c.get("/100.txt")
            assert r.status == 200 and r.body == HUNDRED
    finally:
        for c in conns:
            c.close()
    st = status_json(t)
    assert st["workers"] == n
    assert st["connections"]["accepted"] == 6


# ---- access log targets ----

LOG_LINE = re.compile(r'^127\.0\.0\.1 - - \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] "GET /100\.txt HTTP/1\.1" '
                      r'200 \d+ \d+\.\d{3} conn=\d+ req=(\d+) (\w+)$')


def wait_lines(sink, n, timeout=5):
    deadline = time.monotonic() + timeout * SLOW
    while len(sink) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return list(sink)


def test_access_log_to_stdout(tether, site):
    t = tether("--root", str(site), "--access-log", "-")
    c = t.connect()
    try:
        for _ in range(3):
            assert c.get("/100.txt").status == 200
    finally:
        c.close()
    lines = wait_lines(t.stdout_lines, 3)
    assert len(lines) == 3, lines
    reqs = []
    for line in lines:
        m = LOG_LINE.match(line)
        assert m, line
        reqs.append(int(m.group(1)))
        assert m.group(2) == "keep"
    assert reqs == [1, 2, 3]
    assert not any("GET /100.txt" in line for line in t.stderr_lines)


def test_access_log_off(tether, site):
    t = tether("--root", str(site), "--access-log", "off")
    c = t.connect()
    try:
        for path in ("/100.txt", "/missing", "/"):
            c.get(path)
        c.send(b"BAD\x01\r\n\r\n")
        assert c.response().status == 400
    finally:
        c.close()
    t.wait_metric("tether_requests_total", lambda v: v == 2, **{"class": "4xx"})
    time.sleep(0.3 * SLOW)
    assert t.stdout_lines == []
    assert not any('"GET ' in line for line in t.stderr_lines)


def test_access_log_file(tether, site):
    t = tether("--root", str(site))  # the fixture passes --access-log FILE
    c = t.connect()
    try:
        c.send(b"GET /100.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert c.response().status == 200
    finally:
        c.close()
    lines = t.access_lines(wait_for=1)
    assert len(lines) == 1
    m = LOG_LINE.match(lines[0])
    assert m and m.group(2) == "client_close", lines
    assert t.stdout_lines == []


# ---- /status ----

def status_json(t):
    c = HttpConn(*t.metrics_addr)
    try:
        r = c.get("/status.json")
    finally:
        c.close()
    assert r.status == 200
    assert r.header("Content-Type") == "application/json"
    return json.loads(r.body)


def test_status_json(tether, site):
    t = tether("--root", str(site))
    st = status_json(t)
    assert st["connections"]["accepted"] == 0
    assert st["requests"] == {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0}
    c = t.connect()
    try:
        assert c.get("/100.txt").status == 200
        assert c.get("/missing").status == 404
        st = status_json(t)
        assert st["connections"]["accepted"] == 1
        assert st["connections"]["open"] == 1
        assert st["requests"]["2xx"] == 1 and st["requests"]["4xx"] == 1
    finally:
        c.close()
    deadline = time.monotonic() + 5 * SLOW
    while status_json(t)["connections"]["closed"]["client_close"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    st = status_json(t)
    assert st["connections"]["open"] == 0
    assert set(st["connections"]["closed"]) >= {"client_close", "idle_timeout", "bad_request", "shutdown", "reset"}
    # the admin listener does not count itself
    assert st["connections"]["accepted"] == 1


def test_metrics_off(tether, site):
    t = tether("--root", str(site), "--metrics", "off", metrics=False)
    assert t.metrics_addr is None
    assert fetch(*t.addr).status == 200
    time.sleep(0.1)
    assert "metrics on" not in t.stderr()


def test_sigint_drains_and_exits_0(tether, site):
    t = tether("--root", str(site))
    assert fetch(*t.addr).status == 200
    assert t.stop(signal.SIGINT) == 0
