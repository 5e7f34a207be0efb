"""bench/instructions.py -- user-space instructions per proxied request, counted by callgrind (via
bench/instructions.sh): a figure this host's noise does not move, beside the CPU-time benches.

Each proxy runs alone under `valgrind --tool=callgrind` (one worker / thread), h2load (-t1 -c50) sends WARMUP
requests, the counters are zeroed (`callgrind_control -z`), h2load sends REQUESTS more, and the proxy is stopped:
its instructions (all threads, user space only: the kernel's share is not counted) divided by REQUESTS. Scenarios:
`h2`: HTTP/2 client (-m10) -> proxy -> h2o over h2c (as bench/h2-upstream.sh); `h1`: HTTP/1.1 client -> proxy ->
h2o over HTTP/1.1 keep-alive. Peers: tether as in bench/h2-upstream.sh, HAProxy adding the same forwarding fields
(`haproxy`) and adding none (`haproxy-bare`). The origin runs outside valgrind.
"""

import glob
import importlib.util
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

_spec = importlib.util.spec_from_file_location("h2up", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                    "h2-upstream.py"))
H2UP = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(H2UP)

REQUESTS = int(os.environ.get("REQUESTS", "20000"))
WARMUP = int(os.environ.get("WARMUP", "3000"))
TETHER = os.environ.get("TETHER_BIN", os.path.join(B.ROOT, "build", "tether"))
SCENARIOS = os.environ.get("SCENARIOS", "h2 h1").split()


def configs(scenario):
    """{peer: (file name, text)}; text has {port} and {origin}; tether's is an ini, HAProxy's a cfg."""
    tether, ha, bare = H2UP.TETHER_INI, H2UP.HAPROXY, H2UP.HAPROXY_BARE
    if scenario == "h1":
        tether = tether.replace("h2c://", "")
        ha, bare = (c.replace(" proto h2", "").replace('"2 haproxy"', '"1.1 haproxy"') for c in (ha, bare))
    return {"tether": ("tether.ini", tether), "haproxy": ("haproxy.cfg", ha), "haproxy-bare": ("bare.cfg", bare)}


def load(port, n, scenario):
    cmd = ["h2load", "-t1", "-c50", "-n", str(n), "http://127.0.0.1:%d/100.txt" % port]
    cmd[1:1] = ["--h1"] if scenario == "h1" else ["-m10"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    m = re.search(r"(\d+) succeeded", out)
    if m is None or int(m.group(1)) != n:
        raise SystemExit("port %d: not every request succeeded\n%s" % (port, out))


def measure(peer, name, text, origin, scenario, work):
    path = os.path.join(work, name)
    port = B.free_port()
    with open(path, "w") as f:
        f.write(text.format(port=port, origin=origin))
    if peer == "tether":
        cmd = [TETHER, "serve", "--config", path, "--listen", "127.0.0.1:%d" % port, "--workers", "1",
               "--access-log", "off", "--max-requests", "0", "--idle-timeout", "120s", "--log-level", "warn"]
    else:
        cmd = ["haproxy", "-f", path, "-db"]
    out = os.path.join(work, "cg-%s-%s" % (scenario, peer))
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=%s.%%p" % out] + cmd,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        B.wait_port(port, timeout=60)
        load(port, WARMUP, scenario)
        subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True, check=True)
        load(port, REQUESTS, scenario)
    finally:
        B.stop_all([p])
    total = 0
    for f in glob.glob(out + ".*"):
        with open(f, errors="ignore") as fh:
            for line in fh:
                if line.startswith("summary:"):
                    total += int(line.split()[1])
                    break
    return total / REQUESTS


def main():
    work, root = B.make_workdir("tether-instr-bench-")
    procs = []
    try:
        rows = {}
        for scenario in SCENARIOS:
            origin = B.free_port()
            with open(os.path.join(work, "h2o-%s.conf" % scenario), "w") as f:
                f.write(H2UP.H2O.format(port=origin, root=root))
            h2o = subprocess.Popen(["h2o", "-c", os.path.join(work, "h2o-%s.conf" % scenario)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(h2o)
            B.wait_port(origin)
            for peer, (name, text) in configs(scenario).items():
                rows[(scenario, peer)] = measure(peer, name, text, origin, scenario, work)
                B.log("  %s %s: %.0f instructions per request" % (scenario, peer, rows[(scenario, peer)]))
            B.stop_all([h2o])
        print("## User-space instructions per proxied request (callgrind; `bench/instructions.sh`)\n")
        print("%d requests after %d of warm-up, h2load -t1 -c50 (-m10 for h2), a 100-byte file from h2o; %s; %s.\n"
              % (REQUESTS, WARMUP, subprocess.run([TETHER, "--version"], capture_output=True, text=True).stdout.strip(),
                 subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0]))
        print("| scenario | tether | haproxy (same fields) | haproxy-bare | tether / haproxy | tether / haproxy-bare |")
        print("|---|---:|---:|---:|---:|---:|")
        for s in SCENARIOS:
            t, h, b = (rows[(s, p)] for p in ("tether", "haproxy", "haproxy-bare"))
            label = {"h2": "HTTP/2 client -> h2c origin", "h1": "HTTP/1.1 client -> HTTP/1.1 origin"}[s]
            print("| %s | %.0f | %.0f | %.0f | %.2fx | %.2fx |" % (label, t, h, b, t / h, t / b))
        print("\nConfigurations: those of bench/h2-upstream.sh (`h1`: without `h2c://` and `proto h2`).")
    finally:
        B.stop_all(procs, work)


if __name__ == "__main__":
    main()
