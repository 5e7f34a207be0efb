"""bench/proxy.py -- tether, nginx and HAProxy as reverse proxies in front of one origin (via bench/proxy.sh).

The origin is nginx serving a 100-byte file. Each proxy runs one worker (HAProxy: nbthread 1) and keeps
upstream connections alive (nginx: keepalive 32 + proxy_http_version 1.1; HAProxy: http-reuse always;
tether: its pool). Proxy and origin are pinned to CPU 0, wrk (-t1 -c50) to CPU 1; the proxies alternate
ROUNDS times. Reported per proxy: requests/s, p99, the proxy's CPU time per request (utime+stime of the
proxy process from /proc/PID/stat) and ratios. tether also runs with pooling off (max_idle = 0: a new
upstream connection per request) to show what reuse buys. TETHER_BASELINE_BIN=PATH adds another tether
binary, configured the same, to the alternation ("tether baseline"): the cost of a change, measured in one run.
"""

import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

SECONDS = int(os.environ.get("SECONDS_PER_RUN", "5"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
TETHER = os.environ.get("TETHER_BIN", os.path.join(B.ROOT, "build", "tether"))
BASELINE = os.environ.get("TETHER_BASELINE_BIN")

TEMP = ("client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi; "
        "uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;")

ORIGIN = """
worker_processes 1;
daemon off;
error_log {dir}/origin-error.log;
pid {dir}/origin.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off; sendfile off; open_file_cache max=100; keepalive_requests 1000000; keepalive_timeout 120s;
  """ + TEMP + """
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""

NGINX = """
worker_processes 1;
daemon off;
error_log {dir}/nginx-error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  """ + TEMP + """
  upstream origin {{ server 127.0.0.1:{origin}; keepalive 32; keepalive_requests 1000000; keepalive_timeout 60s; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""

HAPROXY = """
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 3s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  option http-keep-alive
frontend f
  bind 127.0.0.1:{port}
  default_backend b
backend b
  http-reuse always
  server o 127.0.0.1:{origin}
"""


class Proc:
    def __init__(self, name, argv, port, pid_fn=lambda pid: pid):
        self.name = name
        self.port = port
        self.proc = subprocess.Popen(["taskset", "-c", B.SERVER_CPU] + argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        B.wait_port(port)
        time.sleep(0.2)
        self.pid = pid_fn(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main():
    work, root = B.make_workdir("tether-proxy-bench-")
    procs = []
    try:
        oport = B.free_port()
        with open(os.path.join(work, "origin.conf"), "w") as f:
            f.write(ORIGIN.format(dir=work, port=oport, root=root))
        procs.append(Proc("origin", ["nginx", "-c", os.path.join(work, "origin.conf")], oport,
                          lambda pid: B.children(pid)[0]))
        proxies = []
        tethers = [("tether", TETHER, ""), ("tether, no max_connections", TETHER, "max_connections = 0\n"),
                   ("tether, pooling off", TETHER, "max_idle = 0\n")]
        if BASELINE:
            tethers.insert(1, ("tether baseline", BASELINE, ""))
        for name, binary, extra in tethers:
            port = B.free_port()
            conf = os.path.join(work, "tether-%d.ini" % port)
            with open(conf, "w") as f:
                f.write("[upstream o]\nserver = 127.0.0.1:%d\nmax_requests = 0\n%s[route /]\nupstream = o\n"
                        % (oport, extra))
            proxies.append(Proc(name, [binary, "serve", "--config", conf, "--listen", "127.0.0.1:%d" % port,
                                       "--workers", "1", "--access-log", "off", "--max-requests", "0",
                                       "--idle-timeout", "120s", "--log-level", "warn"], port))
        port = B.free_port()
        with open(os.path.join(work, "nginx.conf"), "w") as f:
            f.write(NGINX.format(dir=work, port=port, origin=oport))
        proxies.append(Proc("nginx", ["nginx", "-c", os.path.join(work, "nginx.conf")], port,
                            lambda pid: B.children(pid)[0]))
        port = B.free_port()
        with open(os.path.join(work, "haproxy.cfg"), "w") as f:
            f.write(HAPROXY.format(port=port, origin=oport))
        proxies.append(Proc("haproxy", ["haproxy", "-f", os.path.join(work, "haproxy.cfg"), "-db"], port))
        procs += proxies

        rows = {p.name: [] for p in proxies}
        for i in range(ROUNDS):
            for p in proxies:
                r = B.measure(p.pid, "http://127.0.0.1:%d/100.txt" % p.port, SECONDS)
                if r["errors"]:
                    raise SystemExit("%s: %d errors: the comparison would be void" % (p.name, r["errors"]))
                r["us_per_req"] = 1e6 / r["per_core"]
                rows[p.name].append(r)
                B.log("  %s round %d: %.0f req/s, %.1f us CPU/request" % (p.name, i + 1, r["rps"], r["us_per_req"]))

        print("## Reverse proxies in front of one nginx origin (100-byte file), one worker each\n")
        print("Proxy and origin pinned to CPU %s, wrk -t1 -c50 to CPU %s; medians of %d alternating runs of %d s.\n"
              % (B.SERVER_CPU, B.CLIENT_CPU, ROUNDS, SECONDS))
        print("| proxy | requests/s | p99 ms | proxy CPU % | proxy CPU µs per request | vs tether |")
        print("|---|---:|---:|---:|---:|---:|")
        med = {n: {k: B.median([r[k] for r in rs]) for k in ("rps", "p99", "cpu_pct", "us_per_req")}
               for n, rs in rows.items()}
        for n, m in med.items():
            print("| %s | %.0f | %.3f | %.0f | %.2f | %.2fx |" % (n, m["rps"], m["p99"], m["cpu_pct"], m["us_per_req"],
                                                               m["us_per_req"] / med["tether"]["us_per_req"]))
        t, ng, ha = med["tether"]["us_per_req"], med["nginx"]["us_per_req"], med["haproxy"]["us_per_req"]
        print("\nTargets: tether's CPU per proxied request at most nginx's / 1.2 (%.2f <= %.2f: %s) and no more than "
              "HAProxy's (%.2f <= %.2f: %s)." % (t, ng / 1.2, "met" if t <= ng / 1.2 else "NOT met", t, ha,
                                                 "met" if t <= ha else "NOT met"))
        if BASELINE:
            b = med["tether baseline"]["us_per_req"]
            print("This build: %.2f µs of CPU per proxied request; the baseline (%s): %.2f µs (%+.1f %%)."
                  % (t, BASELINE, b, (t - b) / b * 100))
        print("Pooling saves %.1f µs of tether CPU per request (%.2fx)." % (
            med["tether, pooling off"]["us_per_req"] - t, med["tether, pooling off"]["us_per_req"] / t))
        print("\nLoad average (1, 5, 15 min) at the end: %s. Each proxy as run (DIR: this run's scratch directory, "
              "PORT and ORIGIN: the proxy's and the origin's ports):\n" % B.loadavg())
        subst = [(work, "DIR"), ("127.0.0.1:%d" % oport, "127.0.0.1:ORIGIN")]
        for name, _binary, extra in tethers:
            B.print_config("%s (`tether serve --config tether.ini --listen 127.0.0.1:PORT --workers 1 --access-log off "
                           "--max-requests 0 --idle-timeout 120s --log-level warn`)" % name,
                           "[upstream o]\nserver = 127.0.0.1:%d\nmax_requests = 0\n%s[route /]\nupstream = o\n"
                           % (oport, extra), subst)
        B.print_config("nginx (`nginx -c nginx.conf`; its worker measured)",
                       NGINX.format(dir=work, port=0, origin=oport).replace("127.0.0.1:0", "127.0.0.1:PORT"), subst)
        B.print_config("haproxy (`haproxy -f haproxy.cfg -db`)",
                       HAPROXY.format(port=0, origin=oport).replace("127.0.0.1:0", "127.0.0.1:PORT"), subst)
        B.print_config("origin, nginx (`nginx -c origin.conf`; on CPU %s beside the proxy)" % B.SERVER_CPU,
                       ORIGIN.format(dir=work, port=oport, root=root), subst)
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
