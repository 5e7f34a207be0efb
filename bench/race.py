"""bench/race.py -- the keep-alive race through tether, nginx and HAProxy (run it through bench/race.sh).

An origin (tests/integration/origin.py) closes idle connections at exactly IDLE seconds. Each proxy
keeps idle upstream connections longer than that (tether: pool idle_timeout 10s; nginx: upstream
keepalive 32, keepalive_timeout 10s; HAProxy: http-reuse always, timeout server 10s), which is the
misconfiguration every operator meets. CLIENTS threads send GET and POST through the proxy with gaps
drawn uniformly from 0.8-1.2 x IDLE, for SECONDS each, proxies one after another. Each client has its
own lane (path /laneN/, its own upstream block and so its own pool in every proxy): a shared pool would
reuse its most recent connection long before the origin's timeout and hide the race. Printed: requests,
502s and their rate, per method and proxy, as a markdown table.
"""

import http.client
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "integration"))
import benchlib as B  # noqa: E402
from origin import Origin  # noqa: E402

SECONDS = float(os.environ.get("RACE_SECONDS", "40"))
CLIENTS = int(os.environ.get("RACE_CLIENTS", "8"))
IDLE = float(os.environ.get("RACE_IDLE", "1.0"))
HINT = os.environ.get("RACE_HINT", "0") == "1"
LATENCY = float(os.environ.get("RACE_LATENCY", "0.005"))  # emulated one-way delay origin <-> proxy
TETHER = os.environ.get("TETHER_BIN", os.path.join(B.ROOT, "build", "tether"))

NGINX = """
worker_processes 1;
daemon off;
error_log {dir}/nginx-error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
{upstreams}
  server {{
    listen 127.0.0.1:{port};
{locations}
  }}
}}
"""
NGINX_UPSTREAM = "  upstream lane{i} {{ server 127.0.0.1:{origin}; keepalive 32; keepalive_timeout 10s; }}\n"
NGINX_LOCATION = ("    location /lane{i}/ {{ proxy_pass http://lane{i}; proxy_http_version 1.1; "
                  "proxy_set_header Connection \"\"; }}\n")

HAPROXY = """
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 3s
  timeout client 30s
  timeout server 10s
  timeout http-keep-alive 10s
  option http-keep-alive
frontend f
  bind 127.0.0.1:{port}
{rules}
{backends}
"""
HAPROXY_RULE = "  use_backend lane{i} if {{ path_beg /lane{i}/ }}\n"
HAPROXY_BACKEND = "backend lane{i}\n  http-reuse always\n  server o 127.0.0.1:{origin}\n"


def client(port, stop, results, lock, seed):
    rnd = random.Random(seed)
    conn = None
    while not stop.is_set():
        method = "GET" if rnd.random() < 0.5 else "POST"
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            body = b"x" * 200 if method == "POST" else None
            conn.request(method, "/lane%d/race" % seed, body=body)
            r = conn.getresponse()
            r.read()
            status = r.status
            if r.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            status = "error"
            conn = None
        with lock:
            key = (method, status)
            results[key] = results.get(key, 0) + 1
        time.sleep(rnd.uniform(0.8, 1.2) * IDLE)
    if conn:
        conn.close()


def run(name, port, origin):
    raced0 = origin.stats["raced"]
    stop, lock, results = threading.Event(), threading.Lock(), {}
    threads = [threading.Thread(target=client, args=(port, stop, results, lock, i)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(SECONDS)
    stop.set()
    for t in threads:
        t.join()
    row = {}
    for m in ("GET", "POST"):
        total = sum(v for (mm, _), v in results.items() if mm == m)
        bad = sum(v for (mm, s), v in results.items() if mm == m and s != 200)
        row[m] = (total, bad)
    row["raced"] = origin.stats["raced"] - raced0
    B.log("  %s: %s, races %d" % (name, results, row["raced"]))
    return row


def main():
    work = tempfile.mkdtemp(prefix="tether-race-")
    origin = Origin(idle_timeout=IDLE, hint=HINT, latency=LATENCY).start()
    rows = {}
    procs = []
    try:
        port = B.free_port()
        conf = os.path.join(work, "tether.ini")
        with open(conf, "w") as f:
            for i in range(CLIENTS):
                f.write("[upstream lane%d]\nserver = 127.0.0.1:%d\nidle_timeout = 10s\n[route /lane%d/]\nupstream = lane%d\n"
                        % (i, origin.port, i, i))
        p = subprocess.Popen([TETHER, "serve", "--config", conf, "--listen", "127.0.0.1:%d" % port, "--workers", "1",
                              "--access-log", "off", "--log-level", "warn"])
        procs.append(p)
        B.wait_port(port)
        rows["tether"] = run("tether", port, origin)
        p.terminate()
        p.wait()

        port = B.free_port()
        nconf = os.path.join(work, "nginx.conf")
        with open(nconf, "w") as f:
            f.write(NGINX.format(dir=work, port=port,
                                 upstreams="".join(NGINX_UPSTREAM.format(i=i, origin=origin.port) for i in range(CLIENTS)),
                                 locations="".join(NGINX_LOCATION.format(i=i) for i in range(CLIENTS))))
        p = subprocess.Popen(["nginx", "-c", nconf], stderr=subprocess.DEVNULL)
        procs.append(p)
        B.wait_port(port)
        rows["nginx"] = run("nginx", port, origin)
        p.terminate()
        p.wait()

        port = B.free_port()
        hconf = os.path.join(work, "haproxy.cfg")
        with open(hconf, "w") as f:
            f.write(HAPROXY.format(port=port, rules="".join(HAPROXY_RULE.format(i=i) for i in range(CLIENTS)),
                                   backends="".join(HAPROXY_BACKEND.format(i=i, origin=origin.port)
                                                    for i in range(CLIENTS))))
        p = subprocess.Popen(["haproxy", "-f", hconf, "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        B.wait_port(port)
        rows["haproxy"] = run("haproxy", port, origin)
        p.terminate()
        p.wait()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        origin.stop()

    print("\n### The keep-alive race: origin closes idle connections at %.1f s%s, proxies keep them 10 s\n" %
          (IDLE, " (and says so: Keep-Alive: timeout)" if HINT else " (no Keep-Alive hint)"))
    print("%d clients, gaps uniform in %.1f-%.1f s, %d s per proxy, %.0f ms emulated one-way latency between proxy "
          "and origin (the race window).\n" % (CLIENTS, 0.8 * IDLE, 1.2 * IDLE, SECONDS, LATENCY * 1000))
    print("| proxy | races at the origin | GET requests | GET 502 | GET 502 rate | POST requests | POST 502 | POST 502 rate |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        g, p_ = row["GET"], row["POST"]
        print("| %s | %d | %d | %d | %.2f %% | %d | %d | %.2f %% |" % (
            name, row["raced"], g[0], g[1], 100.0 * g[1] / max(g[0], 1), p_[0], p_[1], 100.0 * p_[1] / max(p_[0], 1)))
    print("\n\"Races at the origin\": requests that reached the origin as it closed the idle connection they came "
          "on (lost; the proxy saw an RST). A proxy without 502s despite races re-sent them itself.")


if __name__ == "__main__":
    main()
