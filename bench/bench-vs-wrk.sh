#!/usr/bin/env bash
# bench/bench-vs-wrk.sh -- do `tether bench` and wrk measure the same thing? Both load one target, in turn.
#
# Starts `tether serve` (one worker, pinned to CPU 0) serving a 100-byte file, then alternates `tether bench`
# and `wrk` (each pinned to CPU 1: one thread, CONNS connections, SECONDS_PER_RUN each) ROUNDS times per
# scenario, and prints a markdown table per scenario: requests/s of each, their ratio per round (runs next to
# each other see the same machine), the server's CPU use during each run, and the medians.
#
# Scenarios:
#   static keep-alive      GET /100.txt on persistent connections
#   static close           a new connection per request (tether bench --close; wrk -H 'Connection: close')
#   proxied keep-alive     the same file through `tether serve --proxy` to a second tether, both on CPU 0:
#                          the server side costs about three times the client side, so the server is surely
#                          the bottleneck and both tools must report its capacity
#   nginx proxy keep-alive the same file through nginx (one worker, proxy_pass with an upstream keepalive pool)
#                          to that tether, both on CPU 0: server-bound, and a server that is not tether
# When the server's CPU stays well under 100 %, the load generator was the bottleneck: the tools then measure
# their own speed, not the server's (wrk re-registers its socket for writing with epoll_ctl twice per
# request; tether bench registers once, edge-triggered), and a ratio above 1 says tether bench is lighter.
# Env: SECONDS_PER_RUN (3), ROUNDS (5), CONNS (50), TETHER_BIN (build/tether).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  for p in nginx-light wrk util-linux; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="${missing:-} $p"
  done
  [ -z "${missing:-}" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
command -v wrk >/dev/null || { echo "bench-vs-wrk: wrk is not installed (apt-get install wrk)" >&2; exit 2; }
[ -x "${TETHER_BIN:-build/tether}" ] || { cmake -S . -B build >/dev/null && cmake --build build -j "$(nproc)" >/dev/null; }
ulimit -n "$(ulimit -Hn)"
exec /usr/bin/python3 - <<'PY'
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, "bench")
import benchlib as B  # noqa: E402

SECONDS = int(os.environ.get("SECONDS_PER_RUN", "3"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
CONNS = int(os.environ.get("CONNS", "50"))
TETHER = os.environ.get("TETHER_BIN", "build/tether")


def serve(args):
    port = B.free_port()
    p = subprocess.Popen(["taskset", "-c", B.SERVER_CPU, TETHER, "serve", "--listen", "127.0.0.1:%d" % port,
                          "--workers", "1", "--access-log", "off", "--max-requests", "0"] + args,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    B.wait_port(port)
    return p, port


NGINX = """worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000;
    client_body_temp_path {work}/tmp;
    proxy_temp_path {work}/tmp;
    fastcgi_temp_path {work}/tmp;
    uwsgi_temp_path {work}/tmp;
    scgi_temp_path {work}/tmp;
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}
}}
"""


def timed(pids, argv):
    """Runs argv; returns (stdout, the servers' CPU share over the run)."""
    c0, t0 = sum(B.cpu_seconds(p) for p in pids), time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    c1, t1 = sum(B.cpu_seconds(p) for p in pids), time.monotonic()
    return out, (c1 - c0) / (t1 - t0)


def tether_bench(pids, url, close):
    argv = ["taskset", "-c", B.CLIENT_CPU, TETHER, "bench", url, "-c", str(CONNS), "-t", "1", "-d", "%ds" % SECONDS,
            "--json"] + (["--close"] if close else [])
    out, cpu = timed(pids, argv)
    return json.loads(out)["rps"], cpu


def wrk(pids, url, close):
    argv = ["taskset", "-c", B.CLIENT_CPU, "wrk", "-t1", "-c%d" % CONNS, "-d%ds" % SECONDS, url]
    if close:
        argv[-1:-1] = ["-H", "Connection: close"]
    out, cpu = timed(pids, argv)
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1]), cpu
    raise RuntimeError("no Requests/sec in wrk output:\n" + out)


def scenario(title, pids, url, close):
    print("\n### %s\n" % title)
    print("| round | tether bench req/s | wrk req/s | tether bench / wrk | server CPU % (bench, wrk) |")
    print("|---:|---:|---:|---:|---:|")
    rows = []
    for r in range(1, ROUNDS + 1):
        t, tc = tether_bench(pids, url, close)
        w, wc = wrk(pids, url, close)
        rows.append((t, w, t / w, tc, wc))
        print("| %d | %.0f | %.0f | %.3f | %.0f, %.0f |" % (r, t, w, t / w, 100 * tc, 100 * wc), flush=True)
    med = [B.median([row[i] for row in rows]) for i in range(5)]
    print("| median | %.0f | %.0f | %.3f | %.0f, %.0f |" % (med[0], med[1], med[2], 100 * med[3], 100 * med[4]))


work = tempfile.mkdtemp(prefix="bench-vs-wrk-")
procs = []
try:
    site = os.path.join(work, "site")
    os.mkdir(site)
    with open(os.path.join(site, "100.txt"), "wb") as f:
        f.write(b"x" * 99 + b"\n")
    static, sport = serve(["--root", site])
    procs.append(static)
    url = "http://127.0.0.1:%d/100.txt" % sport
    print("tether serve: 1 worker on CPU %s; load generators on CPU %s, 1 thread, %d connections, %d s per run, "
          "%d rounds; %d CPUs, Linux %s; %s" % (B.SERVER_CPU, B.CLIENT_CPU, CONNS, SECONDS, ROUNDS, os.cpu_count(),
                                              platform.release(), subprocess.run(["wrk", "-v"], capture_output=True,
                                                                                 text=True).stdout.split("\n")[0]))
    scenario("static keep-alive (GET /100.txt)", [static.pid], url, False)
    scenario("static, a new connection per request", [static.pid], url, True)
    proxy, pport = serve(["--proxy", "http://127.0.0.1:%d" % sport])
    procs.append(proxy)
    scenario("proxied keep-alive (tether --proxy -> tether, both on CPU %s: server-bound)" % B.SERVER_CPU,
             [static.pid, proxy.pid], "http://127.0.0.1:%d/100.txt" % pport, False)
    os.mkdir(os.path.join(work, "tmp"))
    nport = B.free_port()
    with open(os.path.join(work, "nginx.conf"), "w") as f:
        f.write(NGINX.format(work=work, origin=sport, port=nport))
    nginx = subprocess.Popen(["taskset", "-c", B.SERVER_CPU, "nginx", "-c", os.path.join(work, "nginx.conf"),
                              "-e", "stderr"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(nginx)
    B.wait_port(nport)
    time.sleep(0.3)
    scenario("nginx proxy keep-alive (nginx proxy_pass -> tether, both on CPU %s: server-bound)" % B.SERVER_CPU,
             [static.pid] + B.children(nginx.pid), "http://127.0.0.1:%d/100.txt" % nport, False)
finally:
    B.stop_all(procs, work)
PY
