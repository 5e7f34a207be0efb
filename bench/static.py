"""bench/static.py -- tether vs nginx serving static files, one worker each (run it through bench/static.sh).

Scenarios (each alternates tether and nginx ROUNDS times in one run, wrk -t1 -c50 for SECONDS):
  keep-alive 100 B, keep-alive 4 KiB, Connection: close 100 B, 16 pipelined requests per write 100 B,
  then the RSS cost of 10,000 idle keep-alive connections.
Prints a markdown table per scenario with medians and the tether/nginx ratio of requests per
server-core-second (the server's utime+stime from /proc/PID/stat over each run).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

SECONDS = int(os.environ.get("SECONDS_PER_RUN", "5"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
IDLE_CONNS = int(os.environ.get("IDLE_CONNS", "10000"))
TETHER = os.environ.get("TETHER_BIN", os.path.join(B.ROOT, "build", "tether"))

NGINX_CONF = """
worker_processes 1;
worker_rlimit_nofile 30000;
daemon off;
master_process on;
error_log {dir}/nginx-error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  sendfile off;
  open_file_cache max=1000 inactive=60s;
  open_file_cache_valid 60s;
  keepalive_timeout 120s;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""

PIPELINE_LUA = """
init = function(args)
   local r = {}
   for i = 1, 16 do r[i] = wrk.format(nil, "/100.txt") end
   req = table.concat(r)
end
request = function() return req end
"""


class Server:
    def __init__(self, name, argv, port, worker_pid_fn):
        self.name = name
        self.port = port
        self.argv = argv
        self.conf_text = ""
        self.proc = subprocess.Popen(["taskset", "-c", B.SERVER_CPU] + argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        B.wait_port(port)
        time.sleep(0.2)
        self.pid = worker_pid_fn(self.proc.pid)

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_servers(work, root):
    tport, nport = B.free_port(), B.free_port()
    tether = Server("tether", [TETHER, "serve", "--root", root, "--listen", "127.0.0.1:%d" % tport, "--workers", "1",
                               "--access-log", "off", "--idle-timeout", "120s", "--max-requests", "0",
                               "--max-connections", "15000", "--log-level", "warn"], tport, lambda pid: pid)
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(dir=work, port=nport, root=root))
    # nginx's master forks one worker: that worker does the serving and is the one measured.
    nginx = Server("nginx", ["nginx", "-c", conf], nport, lambda pid: B.children(pid)[0])
    nginx.conf_text = NGINX_CONF.format(dir=work, port=nport, root=root)
    return tether, nginx


def table(title, rows, servers):
    print("\n### %s\n" % title)
    print("| server | requests/s | p99 ms | server CPU % | requests per core-second | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    med = {}
    for s in servers:
        rs = rows[s]
        med[s] = {k: B.median([r[k] for r in rs]) for k in ("rps", "p99", "cpu_pct", "per_core")}
        # With a pipelining script wrk times a batch, not a request, and its percentiles can come out as
        # 0.00us (seen against tether at ~950k requests/s): no usable p99 there.
        p99 = "%.3f" % med[s]["p99"] if med[s]["p99"] > 0 else "n/a"
        print("| %s | %.0f | %s | %.0f | %.0f | %d |" % (s, med[s]["rps"], p99, med[s]["cpu_pct"],
                                                     med[s]["per_core"], sum(r["errors"] for r in rs)))
    ratio = med["tether"]["per_core"] / med["nginx"]["per_core"]
    print("\ntether / nginx requests per server-core-second: **%.2fx** (medians of %d alternating runs of %d s)"
          % (ratio, ROUNDS, SECONDS))
    sys.stdout.flush()
    return ratio


def scenario(title, servers, path, **kw):
    rows = {s.name: [] for s in servers}
    for i in range(ROUNDS):
        for s in servers:
            r = B.measure(s.pid, s.url(path), SECONDS, **kw)
            if r["errors"]:
                raise SystemExit("%s answered %d errors or non-2xx responses in '%s': the comparison would be void"
                                 % (s.name, r["errors"], title))
            rows[s.name].append(r)
            B.log("  %s round %d: %.0f req/s, %.0f req/core-s, cpu %.0f%%" % (s.name, i + 1, r["rps"], r["per_core"], r["cpu_pct"]))
    return table(title, rows, [s.name for s in servers])


def idle_rss(servers):
    print("\n### RSS of %d idle keep-alive connections\n" % IDLE_CONNS)
    print("| server | RSS before KiB | RSS with connections KiB | KiB per idle connection |")
    print("|---|---:|---:|---:|")
    per = {}
    for s in servers:
        before = B.rss_kib(s.pid)
        socks = B.hold_idle_connections(s.port, IDLE_CONNS)
        time.sleep(0.5)
        after = B.rss_kib(s.pid)
        for c in socks:
            c.close()
        per[s.name] = (after - before) / IDLE_CONNS
        print("| %s | %d | %d | %.2f |" % (s.name, before, after, per[s.name]))
        time.sleep(1)
    print("\ntether / nginx RSS per idle connection: **%.2fx**" % (per["tether"] / max(per["nginx"], 1e-9)))


def main():
    B.raise_nofile()
    work = tempfile.mkdtemp(prefix="tether-bench-")
    os.chmod(work, 0o755)  # nginx's workers run as www-data and must read the files
    root = os.path.join(work, "site")
    os.makedirs(root, mode=0o755)
    with open(os.path.join(root, "100.txt"), "wb") as f:
        f.write(b"x" * 99 + b"\n")
    with open(os.path.join(root, "4k.bin"), "wb") as f:
        f.write(bytes(range(256)) * 16)
    for name in ("100.txt", "4k.bin"):
        os.chmod(os.path.join(root, name), 0o644)
    lua = os.path.join(work, "pipeline.lua")
    with open(lua, "w") as f:
        f.write(PIPELINE_LUA)
    tether, nginx = start_servers(work, root)
    servers = [tether, nginx]
    try:
        print("## tether vs nginx, static files, one worker each\n")
        print("Server pinned to CPU %s, wrk (-t1 -c50) to CPU %s; %s; tether %s; %s." % (
            B.SERVER_CPU, B.CLIENT_CPU, subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
            subprocess.run([TETHER, "--version"], capture_output=True, text=True).stdout.strip(),
            subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0] if shutil.which("wrk") else ""))
        scenario("keep-alive, 100-byte file", servers, "/100.txt")
        scenario("keep-alive, 4 KiB file", servers, "/4k.bin")
        scenario("Connection: close, 100-byte file", servers, "/100.txt", headers=("Connection: close",))
        scenario("16 pipelined requests per write, 100-byte file", servers, "/100.txt", script=lua)
        idle_rss(servers)
        print("\nLoad average (1, 5, 15 min) at the end: %s. Each server as run (DIR, PORT: this run's scratch directory and port):\n"
              % B.loadavg())
        subst = [(work, "DIR"), (TETHER, "tether"), ("127.0.0.1:%d" % tether.port, "127.0.0.1:PORT"),
                 ("127.0.0.1:%d" % nginx.port, "127.0.0.1:PORT")]
        B.print_config("tether", " ".join(tether.argv), subst)
        B.print_config("nginx (`nginx -c nginx.conf`; its worker measured)", nginx.conf_text, subst)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
