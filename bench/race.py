"""bench/race.py -- the keep-alive race and what reuse saves, through tether, nginx and HAProxy (run it through
bench/race.sh).

Four origins (tests/integration/origin.py, each in its own process) close idle connections the way real
servers do, all behind a relay that delays every packet and every close by RACE_RELAY_MS (default 2 ms) each
way (tests/integration/relay.py), as a network between a proxy and its backend does:
  a. "Keep-Alive: timeout=1", closes at 2 s (Node.js adds a second on purpose);
  b. no hint, closes at exactly 1 s;
  c. no hint, closes idle connections in a sweep every 0.8 s once idle 1 s or more (Tomcat, gunicorn);
  d. "Keep-Alive: timeout=5", closes at 5 s (Apache).
RACE_CLIENTS (32) clients send GET and POST (half each, never an Idempotency-Key) through the proxy in
synchronised rounds (tests/integration/pool_support.Rounds) with gaps around the origin's timeout, for
RACE_SECONDS (20; origin d: 1.5 times that). Every run starts a fresh proxy, origin and relay, so the first
rounds run before anything is learned; proxies alternate (tether, nginx, HAProxy, tether, ...) and each cell
is the median of RACE_RUNS (3) runs. Proxy, origin and relay run on CPU 0, the clients on CPU 1.

Printed: failures (anything but the origin's 200), the upstream connections each proxy opened (counted by
the origin), per request, and against nginx; then each proxy's configuration, as run.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
import benchlib as B  # noqa: E402
from pool_support import Rounds  # noqa: E402
from conftest import HttpConn  # noqa: E402

SECONDS = float(os.environ.get("RACE_SECONDS", "20"))
CLIENTS = int(os.environ.get("RACE_CLIENTS", "32"))
RUNS = int(os.environ.get("RACE_RUNS", "3"))
RELAY_MS = float(os.environ.get("RACE_RELAY_MS", "2"))
KINDS = os.environ.get("RACE_ORIGINS", "abcd")
PROXIES = os.environ.get("RACE_PROXIES", "tether,nginx,haproxy").split(",")
TETHER = B.TETHER
INTEGRATION = os.path.join(B.ROOT, "tests", "integration")

ORIGINS = {
    "a": dict(args=["--idle-timeout", "2", "--hint", "--hint-timeout", "1"], gap=(0.95, 1.05), seconds=1.0,
              what="timeout=1, closes at 2 s (Node.js)"),
    "b": dict(args=["--idle-timeout", "1"], gap=(0.95, 1.05), seconds=1.0, what="no hint, closes at 1 s"),
    "c": dict(args=["--idle-timeout", "1", "--sweep", "0.8"], gap=(0.95, 1.05), seconds=1.0,
              what="no hint, sweeps: closes at 1.0-1.8 s (Tomcat, gunicorn)"),
    "d": dict(args=["--idle-timeout", "5", "--hint"], gap=(4.6, 5.4), seconds=1.5,
              what="timeout=5, closes at 5 s (Apache)"),
}

# Everything that costs CPU or decides reuse is set alike: one worker or thread, no access log, 60 s idle
# timeouts on both sides, 128 idle upstream connections kept, 1000 requests per connection, a 3 s connect and a
# 30 s response timeout. What each does when a reused connection fails is its own default (nginx retries
# idempotent requests on the next attempt, HAProxy answers 502, tether replays idempotent requests).
TETHER_INI = """[server]
workers = 1
[keepalive]
idle_timeout = 60s
max_requests = 1000
[log]
access_log = off
level = warn
[upstream o]
server = 127.0.0.1:{origin}
max_idle = 128
idle_timeout = 60s
max_requests = 1000
connect_timeout = 3s
response_timeout = 30s
[route /]
upstream = o
"""

NGINX = """worker_processes 1;
daemon off;
master_process off;
error_log {dir}/nginx-error.log crit;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_timeout 60s;
  keepalive_requests 1000;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  upstream o {{ server 127.0.0.1:{origin}; keepalive 128; keepalive_timeout 60s; keepalive_requests 1000; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://o;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_connect_timeout 3s;
      proxy_read_timeout 30s;
      proxy_send_timeout 30s;
    }}
  }}
}}
"""

HAPROXY = """global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 3s
  timeout client 60s
  timeout server 30s
  timeout http-keep-alive 60s
  option http-keep-alive
frontend f
  bind 127.0.0.1:{port}
  default_backend o
backend o
  http-reuse always
  server o 127.0.0.1:{origin} pool-max-conn 128 pool-purge-delay 60s max-reuse 1000
"""


class Proc:
    """A process on CPU 0 that prints "PORT n" when it listens (origin.py, relay.py)."""

    def __init__(self, argv):
        self.p = B.start(argv, stdout=subprocess.PIPE)
        line = self.p.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError("%s did not start: %r" % (argv, line))
        self.port = int(line.split()[1])

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def origin_accepted(port):
    """Connections the origin accepted (its /__stats, minus the connection that asks)."""
    c = HttpConn("127.0.0.1", port)
    try:
        import json
        c.request("GET", "/__stats", headers={"Connection": "close"})
        return json.loads(c.response().body)["accepted"] - 1
    finally:
        c.close()


def start_proxy(name, work, upstream_port):
    port = B.free_port()
    if name == "tether":
        conf = os.path.join(work, "tether.ini")
        text = TETHER_INI.format(origin=upstream_port)
        with open(conf, "w") as f:
            f.write(text)
        argv = [TETHER, "serve", "--config", conf, "--listen", "127.0.0.1:%d" % port]
    elif name == "nginx":
        conf = os.path.join(work, "nginx.conf")
        text = NGINX.format(dir=work, port=port, origin=upstream_port)
        with open(conf, "w") as f:
            f.write(text)
        argv = ["nginx", "-p", work, "-c", conf]
    else:
        conf = os.path.join(work, "haproxy.cfg")
        text = HAPROXY.format(port=port, origin=upstream_port)
        with open(conf, "w") as f:
            f.write(text)
        argv = ["haproxy", "-f", conf, "-db"]
    p = B.start(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    B.wait_ports({name: port})
    return p, port


def run(kind, proxy, seed):
    spec = ORIGINS[kind]
    work = tempfile.mkdtemp(prefix="tether-race-")
    origin = Proc([sys.executable, os.path.join(INTEGRATION, "origin.py"), "--port", "0"] + spec["args"])
    relay = Proc([sys.executable, os.path.join(INTEGRATION, "relay.py"), "--target", str(origin.port), "--delay",
                  str(RELAY_MS / 1000.0), "--max-seconds", str(SECONDS * 3 + 120)]) if RELAY_MS > 0 else None
    p = None
    try:
        p, port = start_proxy(proxy, work, relay.port if relay else origin.port)
        lo, hi = spec["gap"]
        load = Rounds(("127.0.0.1", port), seed, clients=CLIENTS, gap=lambda r: r.uniform(lo, hi),
                      duration=SECONDS * spec["seconds"])
        load.run()
        res = load.results
        row = {"requests": len(res) + len(load.errors), "opened": origin_accepted(origin.port)}
        for m in ("GET", "POST"):
            row[m] = sum(1 for r in res if r[2] == m and r[3] != 200) + sum(1 for e in load.errors if e[3] == m)
        row["failures"] = sum(1 for r in res if r[3] != 200) + len(load.errors)
        B.log("  %s %s: %d requests, %d failures (GET %d, POST %d), %d upstream connections" % (
            kind, proxy, row["requests"], row["failures"], row["GET"], row["POST"], row["opened"]))
        return row
    finally:
        if p is not None:
            B.stop(p)
        if relay:
            relay.stop()
        origin.stop()


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def main():
    os.sched_setaffinity(0, {int(B.CLIENT_CPU)})  # the clients; servers go to CPU 0 through taskset
    B.raise_nofile()
    rows = {(k, p): [] for k in KINDS for p in PROXIES}
    seed = int(time.time())
    for k in KINDS:
        for i in range(RUNS):
            for p in PROXIES:
                rows[(k, p)].append(run(k, p, seed + i))  # the same draws for every proxy within a run
    work = tempfile.mkdtemp(prefix="tether-race-conf-")
    print("\n### The keep-alive race and what reuse saves: upstream connections opened per request\n")
    print("%d clients in synchronised rounds, half GET and half POST; %s each way between proxy and origin; "
          "%g s per run (origin d: %g s); medians of %d runs, proxies alternating; proxy, origin and relay on CPU 0, "
          "clients on CPU 1.\n" % (CLIENTS, "a relay delaying packets and closes by %g ms" % RELAY_MS if RELAY_MS
                                   else "no relay", SECONDS, SECONDS * 1.5, RUNS))
    print("| origin | gaps | proxy | requests | failures (GET / POST) | upstream connections | per request | "
          "vs nginx | reused |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for k in KINDS:
        spec = ORIGINS[k]
        ng = med(rows[(k, "nginx")], "opened") if "nginx" in PROXIES else None
        for p in PROXIES:
            rs = rows[(k, p)]
            req, opened = med(rs, "requests"), med(rs, "opened")
            per = statistics.median(r["opened"] / max(r["requests"], 1) for r in rs)
            print("| %s: %s | %.2f-%.2f s | %s | %d | %d (%d / %d) | %d | %.3f | %s | %.1f %% |" % (
                k, spec["what"], spec["gap"][0], spec["gap"][1], p, req, med(rs, "failures"), med(rs, "GET"),
                med(rs, "POST"), opened, per, "%.2fx" % (opened / ng) if ng else "-",
                100.0 * statistics.median(1 - r["opened"] / max(r["requests"], 1) for r in rs)))
    print("\nFailures and connections are medians over the runs (a cell's parts need not add up); \"reused\" is "
          "1 - connections / requests. Every run: %s\n" % ", ".join(
              "%s %s" % (p, "/".join("%d" % r["failures"] for k in KINDS for r in rows[(k, p)])) for p in PROXIES))
    print("Each proxy's configuration, as run (ORIGIN is the relay's port):\n")
    for p in PROXIES:
        text = {"tether": TETHER_INI.format(origin="ORIGIN"),
                "nginx": NGINX.format(dir=work, port="PORT", origin="ORIGIN"),
                "haproxy": HAPROXY.format(port="PORT", origin="ORIGIN")}[p]
        print("<details><summary>%s</summary>\n\n```\n%s```\n</details>\n" % (p, text))


if __name__ == "__main__":
    main()
