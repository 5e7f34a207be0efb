"""bench/h2-upstream.py -- HTTP/2 to upstreams: tether vs HAProxy (`proto h2` servers) in front of an h2o origin
over h2c (via bench/h2-upstream.sh).

h2load -t1 -c50 -m10 (h2c, prior knowledge) -> proxy (one worker / thread, CPU 0) -> h2o (one thread, h2c, CPU 1,
beside h2load), a 100-byte file. Logging off on both proxies; both multiplex streams onto HTTP/2 connections to the
origin as its SETTINGS allow (tether's pool per server; HAProxy `http-reuse always`), no limit on the number of
upstream connections on either. HAProxy runs twice: configured to add the forwarding fields tether adds by default
(`haproxy`, the comparison the target is about) and forwarding only what the client sent (`haproxy-bare`, shown
so that the cost of those fields stays visible). The proxies alternate ROUNDS times. Reported: requests/s, proxy CPU %, the proxy's
CPU microseconds per proxied request (utime+stime from /proc/PID/stat), and the upstream connections it opened.
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

REQUESTS = int(os.environ.get("H2_REQUESTS", "300000"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
TETHER = B.TETHER

H2O = """num-threads: 1
listen:
  host: 127.0.0.1
  port: {port}
access-log: /dev/null
hosts:
  default:
    paths:
      /:
        file.dir: {root}
"""

TETHER_INI = """[upstream o]
server = h2c://127.0.0.1:{origin}
max_connections = 0
[route /]
upstream = o
"""

HAPROXY_BARE = """global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 3s
  timeout client 120s
  timeout server 120s
  timeout http-keep-alive 120s
frontend f
  bind 127.0.0.1:{port} proto h2
  default_backend b
backend b
  http-reuse always
  server o 127.0.0.1:{origin} proto h2
"""

# The fields tether adds to every forwarded request and response by default (docs/config.md: Via, X-Forwarded-For,
# X-Real-IP, X-Forwarded-Proto, X-Forwarded-Host, a random X-Request-Id; Via on the response), added by HAProxy
# too: the work of building, compressing (HPACK) and sending them is the same on both sides.
HAPROXY = HAPROXY_BARE.replace("""  default_backend b
""", """  option forwardfor
  unique-id-format %[uuid()]
  unique-id-header X-Request-Id
  http-request set-header X-Real-IP %[src]
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request add-header Via "2 haproxy"
  http-response add-header Via "2 haproxy"
  default_backend b
""")


def established_to(port, pid):
    """The proxy's (process `pid`) established connections to the origin."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", "( dport = :%d )" % port],
                         capture_output=True, text=True).stdout
    return len([ln for ln in out.splitlines() if "pid=%d," % pid in ln])


def run(pid, port, origin):
    (done, out), cpu, wall = B.cpu_during(pid, lambda: B.h2load("http://127.0.0.1:%d/100.txt" % port, REQUESTS))
    if done != REQUESTS:
        raise SystemExit("port %d: not every request succeeded: the comparison would be void\n%s" % (port, out))
    return {"rps": REQUESTS / wall, "cpu_pct": 100 * cpu / wall, "us_per_req": cpu / REQUESTS * 1e6,
            "up_conns": established_to(origin, pid)}


def main():
    work, root = B.make_workdir("tether-h2up-bench-")
    procs = []
    try:
        origin = B.free_port()
        with open(os.path.join(work, "h2o.conf"), "w") as f:
            f.write(H2O.format(port=origin, root=root))
        procs.append(B.start(["h2o", "-c", os.path.join(work, "h2o.conf")], cpu=B.CLIENT_CPU,
                             stdout=subprocess.DEVNULL))
        tp = B.free_port()
        with open(os.path.join(work, "tether.ini"), "w") as f:
            f.write(TETHER_INI.format(origin=origin))
        tether = B.start([TETHER, "serve", "--config", os.path.join(work, "tether.ini"), "--listen",
                          "127.0.0.1:%d" % tp, "--workers", "1", "--access-log", "off", "--max-requests", "0",
                          "--idle-timeout", "120s", "--log-level", "warn"])
        procs.append(tether)
        proxies = {"tether": (tether.pid, tp)}
        ports = {"h2o": origin, "tether": tp}
        for name, cfg in (("haproxy", HAPROXY), ("haproxy-bare", HAPROXY_BARE)):
            hp = B.free_port()
            with open(os.path.join(work, name + ".cfg"), "w") as f:
                f.write(cfg.format(port=hp, origin=origin))
            haproxy = B.start(["haproxy", "-f", os.path.join(work, name + ".cfg"), "-db"], stdout=subprocess.DEVNULL)
            procs.append(haproxy)
            proxies[name] = (haproxy.pid, hp)
            ports[name] = hp
        B.wait_ports(ports)
        time.sleep(0.3)
        for pid, port in proxies.values():  # warm-up, not counted: connections, allocator arenas, page faults
            B.h2load("http://127.0.0.1:%d/100.txt" % port, 20000)
        rows = {n: [] for n in proxies}
        for i in range(ROUNDS):
            for n, (pid, port) in proxies.items():
                r = run(pid, port, origin)
                rows[n].append(r)
                B.log("  %s round %d: %.0f req/s, %.2f us CPU/request, %d upstream connections"
                      % (n, i + 1, r["rps"], r["us_per_req"], r["up_conns"]))
        print("## HTTP/2 to upstreams: tether vs HAProxy in front of h2o over h2c (`bench/h2-upstream.sh`)\n")
        print("h2load -t1 -c50 -m10 -n %d (h2c) on CPU %s with the h2o origin (one thread); the proxy (one worker / "
              "thread) on CPU %s; a 100-byte file; medians of %d alternating runs; load average at the end: %s. "
              "%s; %s; %s.\n" % (REQUESTS, B.CLIENT_CPU, B.SERVER_CPU, ROUNDS, B.loadavg(),
                                 B.version([TETHER, "--version"]), B.version(["haproxy", "-v"]),
                                 B.version(["h2o", "--version"])))
        print("| proxy | requests/s | proxy CPU % | proxy CPU µs per request | upstream connections | vs tether |")
        print("|---|---:|---:|---:|---:|---:|")
        med = {n: {k: B.median([r[k] for r in rs]) for k in ("rps", "cpu_pct", "us_per_req", "up_conns")}
               for n, rs in rows.items()}
        for n, m in med.items():
            print("| %s | %.0f | %.0f | %.2f | %d | %.2fx |" % (n, m["rps"], m["cpu_pct"], m["us_per_req"], m["up_conns"],
                                                              m["us_per_req"] / med["tether"]["us_per_req"]))
        t, ha, bare = (med[n]["us_per_req"] for n in ("tether", "haproxy", "haproxy-bare"))
        print("\nTarget: tether's CPU per proxied request no more than HAProxy's, both adding the same forwarding "
              "fields (%.2f <= %.2f: %s). Against HAProxy forwarding the client's fields alone (haproxy-bare, less "
              "work than tether does): %.2f against %.2f (%s).\n"
              % (t, ha, "met" if t <= ha else "NOT met", t, bare, "not more" if t <= bare else "more"))
        print("tether (`--workers 1 --access-log off --max-requests 0 --idle-timeout 120s`; its defaults add Via, "
              "X-Forwarded-For, X-Real-IP, X-Forwarded-Proto, X-Forwarded-Host and X-Request-Id to the request and Via "
              "to the response):\n\n```ini\n%s```\n" % TETHER_INI.format(origin="ORIGIN"))
        print("haproxy (the same fields added):\n\n```\n%s```\n" % HAPROXY.format(port="PORT", origin="ORIGIN"))
        print("haproxy-bare (no field added):\n\n```\n%s```" % HAPROXY_BARE.format(port="PORT", origin="ORIGIN"))
    finally:
        B.stop_all(procs, work)


if __name__ == "__main__":
    main()
