"""bench/h2.py -- HTTP/2: tether vs h2o with h2load (-c50 -m10), cleartext prior knowledge and TLS (via bench/h2.sh).

One worker / thread each, the server on CPU 0 and h2load (-t1) on CPU 1, the same 100-byte file; the servers
alternate ROUNDS times per transport. Reported: requests/s, server CPU %, requests per server-core-second
(requests / (utime+stime of the server from /proc/PID/stat)) and the tether/h2o ratio, the load average before
and after, and each server's configuration as run.

Configured alike on what costs CPU: no access log on either (h2o has none without an `access-log` key; tether
`--access-log off`), one thread, the same idle timeout (120 s), connection limit (10000) and concurrent streams
(100), no limit of requests per connection (h2o has none for HTTP/2), the same TLS 1.3 suite (h2load offers only
TLS_AES_256_GCM_SHA384, the suite tether's server preference picks; h2o 2.2.5 takes the client's first choice,
which was AES-128 by default), session tickets on in both (h2load resumes nothing: 50 handshakes per run).
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

REQUESTS = int(os.environ.get("H2_REQUESTS", "400000"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
TETHER = B.TETHER

H2O = """num-threads: 1
listen:
  host: 127.0.0.1
  port: {port}
listen:
  host: 127.0.0.1
  port: {tport}
  ssl:
    certificate-file: {cert}
    key-file: {key}
    ocsp-update-interval: 0
max-connections: 10000
http2-idle-timeout: 120
http2-max-concurrent-requests-per-connection: 100
hosts:
  default:
    paths:
      /:
        file.dir: {root}
"""


TLS13_SUITE = "TLS_AES_256_GCM_SHA384"


H2LOAD_OPTS = ["--tls13-ciphers=" + TLS13_SUITE]


def run(pid, url):
    (done, out), cpu, wall = B.cpu_during(pid, lambda: B.h2load(url, REQUESTS, H2LOAD_OPTS))
    failed = REQUESTS - done
    if failed:
        raise SystemExit("%s: %d requests failed: the comparison would be void\n%s" % (url, failed, out))
    return {"rps": done / wall, "cpu_pct": 100 * cpu / wall, "per_core": done / cpu}


def profile(pid, tp, tt):
    """PERF=1: `perf record -g` on tether during one more h2load run per transport; functions over 2 % (self)."""
    for label, url in (("cleartext", "http://127.0.0.1:%d/100.txt" % tp), ("TLS", "https://127.0.0.1:%d/100.txt" % tt)):
        data = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".perf-h2-%s.data" % label)
        rec = subprocess.Popen(["perf", "record", "-g", "-o", data, "-p", str(pid)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        subprocess.run(B.h2load_cmd(url, REQUESTS, H2LOAD_OPTS), capture_output=True)
        rec.send_signal(2)
        rec.wait()
        rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--percent-limit", "2", "--stdio",
                              "-g", "none", "-q"], capture_output=True, text=True).stdout
        dso = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso", "--stdio", "-g", "none",
                              "-q"], capture_output=True, text=True).stdout
        os.unlink(data)
        print("\n#### tether's profile, %s (`perf record -g`, functions over 2 %% self)\n" % label)
        print("```\n%s\nby object:\n%s```" % (rep.rstrip(), dso.rstrip() + "\n"))


def main():
    work, root = B.make_workdir("tether-h2-bench-")
    cert, key = B.make_cert(work)
    procs = []
    try:
        tp, tt = B.free_port(), B.free_port()
        targs = ["serve", "--root", root, "--listen", "127.0.0.1:%d" % tp, "--tls-listen", "127.0.0.1:%d" % tt,
                 "--tls-cert", cert, "--tls-key", key, "--workers", "1", "--access-log", "off", "--max-requests", "0",
                 "--idle-timeout", "120s", "--max-connections", "10000", "--log-level", "warn"]
        tether = B.start([TETHER] + targs)
        procs.append(tether)
        hp, ht = B.free_port(), B.free_port()
        conf = os.path.join(work, "h2o.conf")
        h2o_conf = H2O.format(port=hp, tport=ht, cert=cert, key=key, root=root)
        with open(conf, "w") as f:
            f.write(h2o_conf)
        h2o = B.start(["h2o", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(h2o)
        B.wait_ports({"tether": tp, "tether TLS": tt, "h2o": hp, "h2o TLS": ht})
        time.sleep(0.3)
        servers = {"tether": (tether.pid, tp, tt), "h2o": (h2o.pid, hp, ht)}
        print("Load average (1, 5, 15 min) at the start: %s.\n" % B.loadavg())
        print("## HTTP/2: tether vs h2o, h2load -t1 -c50 -m10 -n %d, 100-byte file, one worker each\n" % REQUESTS)
        print("Server on CPU %s, h2load on CPU %s; medians of %d alternating runs. %s; %s." % (
            B.SERVER_CPU, B.CLIENT_CPU, ROUNDS,
            B.version([TETHER, "--version"]), B.version(["h2o", "--version"])))
        for label, scheme, idx in (("cleartext (prior knowledge)", "http", 1), ("TLS (ALPN h2)", "https", 2)):
            rows = {n: [] for n in servers}
            for i in range(ROUNDS):
                for n, s in servers.items():
                    r = run(s[0], "%s://127.0.0.1:%d/100.txt" % (scheme, s[idx]))
                    rows[n].append(r)
                    B.log("  %s %s round %d: %.0f req/s, %.0f req/core-s" % (label, n, i + 1, r["rps"], r["per_core"]))
            print("\n### %s\n" % label)
            print("| server | requests/s | server CPU % | requests per core-second |")
            print("|---|---:|---:|---:|")
            med = {n: {k: B.median([r[k] for r in rs]) for k in ("rps", "cpu_pct", "per_core")} for n, rs in rows.items()}
            for n, m in med.items():
                print("| %s | %.0f | %.0f | %.0f |" % (n, m["rps"], m["cpu_pct"], m["per_core"]))
            print("\ntether / h2o requests per server-core-second: **%.2fx**; every round (requests per core-second): %s"
                  % (med["tether"]["per_core"] / med["h2o"]["per_core"],
                     "; ".join("%s %s" % (n, "/".join("%.0f" % r["per_core"] for r in rs)) for n, rs in rows.items())))
            print("Load average after: %s." % B.loadavg())
            sys.stdout.flush()
        if os.environ.get("PERF", "0") == "1":
            profile(tether.pid, tp, tt)
        print("\nEach server as run (PORT, TLSPORT, DIR: this run's ports and scratch directory); h2load: `%s`\n"
              % " ".join(B.h2load_cmd("URL", REQUESTS, H2LOAD_OPTS)[3:]))
        subst = [(work, "DIR"), ("127.0.0.1:%d" % tt, "127.0.0.1:TLSPORT"), ("127.0.0.1:%d" % tp, "127.0.0.1:PORT"),
                 ("port: %d" % ht, "port: TLSPORT"), ("port: %d" % hp, "port: PORT")]

        def anon(text):
            for a, b in subst:
                text = text.replace(a, b)
            return text
        print("<details><summary>tether</summary>\n\n```\ntether %s\n```\n</details>\n" % anon(" ".join(targs)))
        print("<details><summary>h2o (`h2o -c h2o.conf`)</summary>\n\n```\n%s```\n</details>" % anon(h2o_conf))
    finally:
        B.stop_all(procs, work)


if __name__ == "__main__":
    main()
