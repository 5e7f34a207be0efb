"""Issue 13: SIGHUP (and `tether reload`) re-reads the whole configuration and applies it without closing any
connection; a configuration with errors is refused and the running one stays.

Every test rewrites tether's config file and sends SIGHUP, then waits for the log line that says every worker
applied the new generation ("reload: applied (generation N)") or that the reload was refused. Asserted:
an open keep-alive connection (HTTP/1.1 and h2c) is never closed by a reload and HTTP/1.1 takes the new policy at
its next request (its `Keep-Alive: timeout=` changes); under load, ten reloads lose no request, close no client
connection and keep the upstream pool's idle connections; a bad value is refused with FILE:LINE and the old
policy stays; a listener added accepts, a removed one refuses new connections while its open connection still
gets its next response; routing follows the new routes; `tether reload` sends SIGHUP through the pid file and
says clearly why it cannot. The `tether` fixture checks a clean exit (status 0, so LeakSanitizer ran in the ASan
build) and no ThreadSanitizer report.
"""

import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import SLOW, TETHER_BIN, HttpConn
from proxy_util import addr, closed_port, origins  # noqa: F401
from tls_util import H2Conn

WORKERS = 2


def base_config(site, idle="5s", extra="", max_requests=1000):
    return """
[server]
workers = %d

[listen]
address = 127.0.0.1:0

[keepalive]
idle_timeout = %s
max_requests = %d

[static]
root = %s
%s
""" % (WORKERS, idle, max_requests, site, extra)


def wait_log(t, text, count=1, timeout=10):
    """Polls tether's error log until `text` appears `count` times; returns the log."""
    deadline = time.monotonic() + timeout * SLOW
    while t.stderr().count(text) < count:
        assert time.monotonic() < deadline, "no %r in the log:\n%s" % (text, t.stderr()[-3000:])
        assert t.proc.poll() is None, "tether exited:\n%s" % t.stderr()[-3000:]
        time.sleep(0.02)
    return t.stderr()


def reload(t, config, generation):
    """Writes `config` and sends SIGHUP; returns once every worker applied generation `generation`."""
    with open(t.config_path, "w") as f:
        f.write(config)
    t.send_signal(signal.SIGHUP)
    wait_log(t, "reload: applied (generation %d)" % generation)


def closes(t):
    """Connections tether closed for any reason but the client's own close."""
    return sum(v for k, v in t.metrics().items()
               if k.startswith("tether_connections_closed_total{") and "client_close" not in k)


def requests(t):
    return sum(v for k, v in t.metrics().items() if k.startswith("tether_requests_total{"))


def wait_requests(t, n, timeout=30):
    deadline = time.monotonic() + timeout * SLOW
    while requests(t) < n:
        assert time.monotonic() < deadline, "only %d requests served" % requests(t)
        time.sleep(0.02)


def h2_get(h, path):
    sid = h.request(path)
    r = h.response(sid)
    assert r["ended"] and r["reset"] is None, r
    return r


# ---- 1. the next response on the same connection carries the new policy ----

@pytest.mark.multiworker
def test_open_connections_take_the_new_idle_timeout_at_their_next_request(tether, site):
    t = tether(config=base_config(site, idle="5s"))
    conns = [t.connect() for _ in range(4)]  # a few, so that both workers likely hold one
    for c in conns:
        r = c.get("/index.html")
        assert r.status == 200 and r.header("Keep-Alive") == "timeout=5, max=999", r
    h = H2Conn(t.port)
    assert h2_get(h, "/index.html")["headers"][":status"] == "200"
    local = [c.sock.getsockname() for c in conns]

    reload(t, base_config(site, idle="7s"), 2)
    for c, name in zip(conns, local):
        assert c.is_open(), "a reload closed an idle keep-alive connection"
        r = c.get("/index.html")
        assert r.status == 200 and r.header("Keep-Alive") == "timeout=7, max=998", r
        assert c.sock.getsockname() == name
    # h2: the connection stays (its SETTINGS too); new streams are served by the new generation
    assert h2_get(h, "/100.txt")["headers"][":status"] == "200"
    assert not h.closed
    # a new connection gets the new policy from its first response
    assert t.connect().get("/").header("Keep-Alive") == "timeout=7, max=999"

    reload(t, base_config(site, idle="3s"), 3)
    for c in conns:
        assert c.get("/index.html").header("Keep-Alive") == "timeout=3, max=997"
    assert closes(t) == 0, t.metrics_text()
    assert t.metric("tether_reloads_total", result="ok") == 2
    assert t.metric("tether_config_generation") == 3


# ---- 2. ten reloads under load ----

def proxy_config(site, origin, idle, pool_idle):
    return base_config(site, idle=idle, max_requests=0, extra="""
[upstream backend]
server = %s
idle_timeout = %s

[route /api/]
upstream = backend
""" % (addr(origin), pool_idle))


@pytest.mark.multiworker
def test_ten_reloads_under_load_lose_no_request_and_close_no_connection(tether, site, origins):
    origin = origins(idle_timeout=60.0)
    configs = [proxy_config(site, origin, "5s", "20s"), proxy_config(site, origin, "9s", "25s")]
    t = tether(config=configs[0])
    stop = threading.Event()
    results = []
    lock = threading.Lock()

    def client(k):
        c = HttpConn(*t.addr, timeout=10)
        name = c.sock.getsockname()
        ok = failed = 0
        errors = []
        deadline = time.monotonic() + 120 * SLOW
        for i in range(20000):  # bounded; the main thread stops us long before
            if stop.is_set() or time.monotonic() > deadline:
                break
            path = "/api/x?k=%d&i=%d" % (k, i) if i % 2 else "/100.txt"
            try:
                r = c.get(path)
                if r.status == 200 and c.sock.getsockname() == name:
                    ok += 1
                else:
                    failed += 1
                    errors.append((path, r.status))
            except (OSError, EOFError, AssertionError) as e:
                failed += 1
                errors.append((path, repr(e)))
                break
        open_at_end = c.is_open()
        c.close()
        with lock:
            results.append((ok, failed, errors[:5], open_at_end))

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(4)]
    for th in threads:
        th.start()
    # a steady state first: the pool holds what the load needs
    wait_requests(t, 200)
    opened_before = origin.stats["accepted"]
    for n in range(10):
        reload(t, configs[(n + 1) % 2], n + 2)
        wait_requests(t, requests(t) + 40)  # traffic between reloads
    stop.set()
    for th in threads:
        th.join(30 * SLOW)
    assert len(results) == 4, results
    for ok, failed, errors, open_at_end in results:
        assert failed == 0, (errors, t.access_lines()[-20:], t.stderr()[-2000:])
        assert ok > 0 and open_at_end
    assert closes(t) == 0, t.metrics_text()
    # the kept server's pool kept its idle connections: at most a few more than the load had before
    assert origin.stats["accepted"] - opened_before <= 2 * WORKERS, origin.stats
    assert t.metric("tether_reloads_total", result="ok") == 10
    assert "reload: refused" not in t.stderr()


# ---- 3. a configuration with errors is refused ----

def test_invalid_configuration_is_refused_with_file_line_and_the_old_one_stays(tether, site):
    t = tether(config=base_config(site, idle="5s"))
    c = t.connect()
    assert c.get("/").header("Keep-Alive") == "timeout=5, max=999"
    bad = base_config(site, idle="soon")
    line = bad.splitlines().index("idle_timeout = soon") + 1
    with open(t.config_path, "w") as f:
        f.write(bad)
    t.send_signal(signal.SIGHUP)
    log = wait_log(t, "reload: refused")
    assert "%s:%d: idle_timeout" % (t.config_path, line) in log, log
    assert c.is_open()
    assert c.get("/").header("Keep-Alive") == "timeout=5, max=998"
    assert t.connect().get("/").header("Keep-Alive") == "timeout=5, max=999"
    t.wait_metric("tether_reloads_total", lambda v: v == 1, result="failed")
    assert t.metric("tether_config_generation") == 1
    # `tether reload -c` checks the file first and sends nothing
    r = subprocess.run([TETHER_BIN, "reload", "-c", t.config_path], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r
    assert "%s:%d: idle_timeout" % (t.config_path, line) in r.stderr and "nothing sent" in r.stderr, r.stderr
    # fixed, it applies
    reload(t, base_config(site, idle="6s"), 2)
    assert c.get("/").header("Keep-Alive") == "timeout=6, max=997"


# ---- 4. listeners added and removed ----

def test_added_listener_accepts_removed_one_refuses_while_its_open_connection_finishes(tether, site):
    old_port, new_port = closed_port(), closed_port()
    extra = "\n[listen side]\naddress = 127.0.0.1:%d\nidle_timeout = 4s\n"
    t = tether(config=base_config(site, extra=extra % old_port))
    on_old = HttpConn("127.0.0.1", old_port)
    r = on_old.get("/")
    assert r.status == 200 and r.header("Keep-Alive") == "timeout=4, max=999"
    main = t.connect()
    assert main.get("/").status == 200

    reload(t, base_config(site, extra=extra.replace("4s", "6s") % new_port), 2)
    assert "reload: listening on http://127.0.0.1:%d" % new_port in t.stderr()
    r = HttpConn("127.0.0.1", new_port).get("/")
    assert r.status == 200 and r.header("Keep-Alive") == "timeout=6, max=999"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", old_port), timeout=5 * SLOW)
    # the connection on the removed listener finishes under its old policy
    assert on_old.is_open()
    r = on_old.get("/100.txt")
    assert r.status == 200 and r.header("Keep-Alive") == "timeout=4, max=998"
    assert main.get("/").status == 200
    assert closes(t) == 0
    # the status page numbers listeners as the new generation does: the added one, not the removed one
    r = HttpConn("127.0.0.1", t.metrics_addr[1]).get("/status.json")
    assert r.status == 200
    listed = json.dumps(json.loads(r.body))
    assert "127.0.0.1:%d" % new_port in listed and "127.0.0.1:%d" % old_port not in listed, listed


def test_a_listener_that_cannot_be_bound_refuses_the_whole_reload(tether, site):
    t = tether(config=base_config(site, idle="5s"))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        with open(t.config_path, "w") as f:
            f.write(base_config(site, idle="8s", extra="\n[listen side]\naddress = 127.0.0.1:%d\n" % port))
        t.send_signal(signal.SIGHUP)
        log = wait_log(t, "reload: refused")
        assert "127.0.0.1:%d" % port in log.split("reload: refused")[1], log
    finally:
        taken.close()
    assert t.connect().get("/").header("Keep-Alive") == "timeout=5, max=999"


# ---- 5. routes and upstreams ----

def test_routes_follow_the_reload_on_the_same_connection(tether, site, origins):
    o1, o2 = origins(), origins()
    route = "\n[upstream backend]\nserver = %s\n\n[route /api/]\nupstream = backend\n"
    t = tether(config=base_config(site, extra=route % addr(o1)))
    c = t.connect()
    assert c.get("/api/a").status == 200
    assert o1.stats["requests"] == 1
    assert o1.stats["open"] == 1  # parked in the pool
    reload(t, base_config(site, extra=route % addr(o2)), 2)  # same upstream, another server
    assert c.get("/api/b").status == 200
    assert o2.stats["requests"] == 1 and o1.stats["requests"] == 1
    # the removed server's pool drains: once nothing uses the old generation, its parked connection is closed
    deadline = time.monotonic() + 5 * SLOW
    while o1.stats["open"] > 0:
        assert time.monotonic() < deadline, o1.stats
        time.sleep(0.02)
    reload(t, base_config(site), 3)  # the route and its upstream removed: /api/ is a static path now
    assert c.get("/api/c").status == 404
    assert c.get("/index.html").status == 200
    assert o1.stats["requests"] + o2.stats["requests"] == 2
    assert closes(t) == 0


# ---- 6. tether reload and the pid file ----

def test_tether_reload_signals_the_server_named_by_the_pid_file(tether, site, tmp_path):
    pid_file = str(tmp_path / "tether.pid")
    t = tether(config=base_config(site).replace("[server]\n", "[server]\npid_file = %s\n" % pid_file))
    with open(pid_file) as f:
        assert int(f.read()) == t.proc.pid
    with open(t.config_path) as f:
        text = f.read()
    with open(t.config_path, "w") as f:
        f.write(text.replace("idle_timeout = 5s", "idle_timeout = 8s"))
    r = subprocess.run([TETHER_BIN, "reload", "--pid-file", pid_file], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "sent SIGHUP to process %d" % t.proc.pid in r.stdout, r
    wait_log(t, "reload: applied (generation 2)")
    assert t.connect().get("/").header("Keep-Alive") == "timeout=8, max=999"
    r = subprocess.run([TETHER_BIN, "reload", "-c", t.config_path], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r
    wait_log(t, "reload: applied (generation 3)")

    missing = str(tmp_path / "nothing.pid")
    r = subprocess.run([TETHER_BIN, "reload", "--pid-file", missing], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and missing in r.stderr and "No such file" in r.stderr, r
    stale = str(tmp_path / "stale.pid")
    with open(stale, "w") as f:
        f.write("%d\n" % dead_pid())
    r = subprocess.run([TETHER_BIN, "reload", "--pid-file", stale], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "stale pid file" in r.stderr, r
    other = str(tmp_path / "other.pid")
    with open(other, "w") as f:
        f.write("%d\n" % os.getpid())  # python, not tether
    r = subprocess.run([TETHER_BIN, "reload", "--pid-file", other], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "is not tether" in r.stderr, r
    assert t.stop() == 0
    assert not os.path.exists(pid_file), "the pid file outlived the server"


def dead_pid():
    """The pid of a process that has exited (reaped)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


# ---- 7. a request in flight keeps the generation it started with ----

@pytest.mark.multiworker
def test_requests_in_flight_finish_on_the_route_and_pool_they_started_with(tether, site, origins):
    origin = origins()
    route = "\n[upstream backend]\nserver = %s\n\n[route /api/]\nupstream = backend\n" % addr(origin)
    t = tether(config=base_config(site, extra=route))
    h1 = t.connect(timeout=30)
    h1.send(b"GET /api/slow?delay=1500 HTTP/1.1\r\nHost: t\r\n\r\n")
    h2c = H2Conn(t.port, timeout=30)
    sid = h2c.request("/api/slow2?delay=1500")
    deadline = time.monotonic() + 10 * SLOW
    while origin.stats["requests"] < 2:  # both reached the origin under generation 1
        assert time.monotonic() < deadline, origin.stats
        time.sleep(0.01)
    reload(t, base_config(site), 2)  # the route and its upstream are gone
    r = h1.response()
    assert r.status == 200 and b"slow" in r.body, r
    r2 = h2c.response(sid)
    assert r2["headers"][":status"] == "200" and r2["reset"] is None, r2
    # the next request on each connection takes the new routing
    assert h1.get("/api/slow").status == 404
    assert h2_get(h2c, "/api/slow")["headers"][":status"] == "404"
    assert origin.stats["requests"] == 2
    assert closes(t) == 0


def test_a_changed_log_format_takes_a_restart_and_the_running_one_stays(tether, site):
    """The access log's format is compiled once for the server's life: a reload that changes it says so and
    lines stay in the running format (without the warning the change would pass silently)."""
    t = tether(config=base_config(site, extra="[log]\nlog_format = json\n"))
    assert t.connect().get("/index.html").status == 200
    assert json.loads(t.access_lines(wait_for=1)[-1])["status"] == 200
    reload(t, base_config(site, extra="[log]\nlog_format = combined\n"), 2)
    assert "reload: [log] log_format changed: it takes a restart, the running value stays" in t.stderr()
    assert t.connect().get("/100.txt").status == 200
    lines = t.access_lines(wait_for=2)
    assert len(lines) == 2 and json.loads(lines[-1])["status"] == 200, lines
    # compared with the running format, not the last file: combined again warns again, json back does not
    reload(t, base_config(site, extra="[log]\nlog_format = combined\n"), 3)
    assert t.stderr().count("[log] log_format changed") == 2
    reload(t, base_config(site, extra="[log]\nlog_format = json\n"), 4)
    assert t.stderr().count("[log] log_format changed") == 2
