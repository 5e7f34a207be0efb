"""bench/tls.py -- what persistent connections and session resumption save over TLS: tether vs nginx (via bench/tls.sh).

Table 1: HTTPS GETs of a 100-byte file with wrk -c50, once on keep-alive connections and once with
`Connection: close` (a new TCP connection and TLS handshake per request). Table 2: `openssl s_time` handshakes
one after another, `-new` (always a full handshake) and `-reuse` (resuming the first session), each fetching the
file. Both servers run one worker on CPU 0 with session tickets and a session cache; the client runs on CPU 1.
The measure is the server's own CPU (utime+stime from /proc/PID/stat) per request or per handshake, and the ratios
keep-alive vs new connection and full vs resumed are the cost the two mechanisms remove.
"""

import os
import re
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

SECONDS = int(os.environ.get("SECONDS_PER_RUN", "5"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
TETHER = os.environ.get("TETHER_BIN", os.path.join(B.ROOT, "build", "tether"))

NGINX = """worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    keepalive_requests 100000;
    keepalive_timeout 120s;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    ssl_protocols TLSv1.2 TLSv1.3;
    client_body_temp_path {work}/tmp;
    proxy_temp_path {work}/tmp;
    fastcgi_temp_path {work}/tmp;
    uwsgi_temp_path {work}/tmp;
    scgi_temp_path {work}/tmp;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {root};
    }}
}}
"""


def s_time(port, mode):
    """One s_time run; returns the number of connections it completed."""
    out = subprocess.run(["taskset", "-c", B.CLIENT_CPU, "openssl", "s_time", "-connect", "127.0.0.1:%d" % port,
                          mode, "-time", str(SECONDS), "-www", "/100.txt"],
                         capture_output=True, text=True, timeout=SECONDS + 30).stdout
    m = re.search(r"(\d+) connections in [\d.]+ real seconds", out)
    if not m:
        raise SystemExit("openssl s_time %s against port %d printed no result:\n%s" % (mode, port, out))
    return int(m.group(1))


def handshakes(pid, port, mode):
    c0, t0 = B.cpu_seconds(pid), time.monotonic()
    n = s_time(port, mode)
    c1, t1 = B.cpu_seconds(pid), time.monotonic()
    cpu = max(c1 - c0, 1e-9)
    return {"per_s": n / (t1 - t0), "us_each": 1e6 * cpu / max(n, 1), "cpu_pct": 100 * cpu / (t1 - t0)}


def tether_handshakes(metrics_port):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics_port, timeout=5).read().decode()
    found = dict(re.findall(r'^tether_tls_handshakes_total\{kind="(\w+)"\} (\d+)', text, re.M))
    return int(found.get("full", 0)), int(found.get("resumed", 0))


def main():
    work, root = B.make_workdir("tether-tls-bench-")
    os.makedirs(os.path.join(work, "tmp"))
    cert, key = B.make_cert(work)
    procs = []
    try:
        tp, mp = B.free_port(), B.free_port()
        targs = ["serve", "--root", root, "--tls-listen", "127.0.0.1:%d" % tp, "--listen", "127.0.0.1:%d" % B.free_port(),
                 "--tls-cert", cert, "--tls-key", key, "--workers", "1", "--access-log", "off", "--max-requests", "0",
                 "--idle-timeout", "120s", "--metrics", "127.0.0.1:%d" % mp, "--log-level", "warn"]
        tether = subprocess.Popen(["taskset", "-c", B.SERVER_CPU, TETHER] + targs)
        procs.append(tether)
        np_ = B.free_port()
        conf = os.path.join(work, "nginx.conf")
        nginx_conf = NGINX.format(work=work, port=np_, cert=cert, key=key, root=root)
        with open(conf, "w") as f:
            f.write(nginx_conf)
        nginx = subprocess.Popen(["taskset", "-c", B.SERVER_CPU, "nginx", "-c", conf, "-e", "stderr"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(nginx)
        for p in (tp, mp, np_):
            B.wait_port(p)
        time.sleep(0.3)
        nginx_worker = B.children(nginx.pid)[0]
        servers = {"tether": (tether.pid, tp), "nginx": (nginx_worker, np_)}
        ossl = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
        print("## TLS: tether vs nginx, what keep-alive and session resumption remove\n")
        print("One worker each on CPU %s, the client on CPU %s, %ds per run, medians of %d alternating runs; "
              "ECDSA P-256 certificate, TLS 1.3, %s." % (B.SERVER_CPU, B.CLIENT_CPU, SECONDS, ROUNDS, ossl))

        ka = {n: [] for n in servers}
        close = {n: [] for n in servers}
        f0 = tether_handshakes(mp)
        for i in range(ROUNDS):
            for n, (pid, port) in servers.items():
                url = "https://127.0.0.1:%d/100.txt" % port
                ka[n].append(B.measure(pid, url, SECONDS))
                close[n].append(B.measure(pid, url, SECONDS, headers=("Connection: close",)))
                B.log("  %s round %d: keep-alive %.0f req/core-s, new connection %.0f req/core-s" % (
                    n, i + 1, ka[n][-1]["per_core"], close[n][-1]["per_core"]))
        f1 = tether_handshakes(mp)
        for rows in (ka, close):
            for n, rs in rows.items():
                if sum(r["errors"] for r in rs):
                    raise SystemExit("%s: wrk reported errors, the comparison would be void" % n)
        print("\n### HTTPS requests: keep-alive vs a new connection per request (wrk -t1 -c50)\n")
        print("| server | keep-alive req/s | keep-alive µs CPU/req | new-connection req/s | new-connection µs CPU/req "
              "| keep-alive saves |")
        print("|---|---:|---:|---:|---:|---:|")
        for n in servers:
            k = B.median([1e6 / r["per_core"] for r in ka[n]])
            c = B.median([1e6 / r["per_core"] for r in close[n]])
            print("| %s | %.0f | %.1f | %.0f | %.1f | **%.1fx** |" % (
                n, B.median([r["rps"] for r in ka[n]]), k, B.median([r["rps"] for r in close[n]]), c, c / k))
        print("\nwrk resumes some sessions on reconnect: tether counted %d full and %d resumed handshakes during "
              "these runs." % (f1[0] - f0[0], f1[1] - f0[1]))

        hs = {n: {"-new": [], "-reuse": []} for n in servers}
        for i in range(ROUNDS):
            for n, (pid, port) in servers.items():
                for mode in ("-new", "-reuse"):
                    hs[n][mode].append(handshakes(pid, port, mode))
                B.log("  %s round %d: full %.0f µs, resumed %.0f µs of server CPU per handshake" % (
                    n, i + 1, hs[n]["-new"][-1]["us_each"], hs[n]["-reuse"][-1]["us_each"]))
        f2 = tether_handshakes(mp)
        print("\n### TLS handshakes: full vs resumed (`openssl s_time -new` / `-reuse`, one at a time)\n")
        print("| server | full/s | full µs CPU each | resumed/s | resumed µs CPU each | resumption saves |")
        print("|---|---:|---:|---:|---:|---:|")
        for n in servers:
            full, res = hs[n]["-new"], hs[n]["-reuse"]
            fu, ru = B.median([r["us_each"] for r in full]), B.median([r["us_each"] for r in res])
            print("| %s | %.0f | %.1f | %.0f | %.1f | **%.1fx** |" % (
                n, B.median([r["per_s"] for r in full]), fu, B.median([r["per_s"] for r in res]), ru, fu / ru))
        print("\ntether's metrics for the handshake runs: %d full, %d resumed." % (f2[0] - f1[0], f2[1] - f1[1]))
        t_full = B.median([r["us_each"] for r in hs["tether"]["-new"]])
        n_full = B.median([r["us_each"] for r in hs["nginx"]["-new"]])
        t_ka = B.median([1e6 / r["per_core"] for r in ka["tether"]])
        n_ka = B.median([1e6 / r["per_core"] for r in ka["nginx"]])
        print("\nServer CPU tether / nginx: full handshake %.2fx, keep-alive request %.2fx (lower is cheaper)." % (
            t_full / n_full, t_ka / n_ka))
        print("\nLoad average (1, 5, 15 min) at the end: %s. Each server as run (DIR: this run's scratch directory):\n"
              % B.loadavg())
        subst = [(work, "DIR"), ("127.0.0.1:%d" % tp, "127.0.0.1:PORT"), ("127.0.0.1:%d" % np_, "127.0.0.1:PORT"),
                 ("127.0.0.1:%d" % mp, "127.0.0.1:METRICS")]
        B.print_config("tether", "tether " + " ".join(targs), subst)
        B.print_config("nginx (`nginx -c nginx.conf`; its worker measured)", nginx_conf, subst)
    finally:
        B.stop_all(procs, work)


if __name__ == "__main__":
    main()
