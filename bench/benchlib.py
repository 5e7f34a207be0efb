"""Shared pieces of tether's benchmarks: free ports, pinned processes started and stopped, /proc CPU and RSS, wrk and
h2load runs.

Servers are pinned to CPU 0 and the load generator to CPU 1 (this machine has two cores). A server's
cost is its own utime+stime from /proc/PID/stat over the run, so "requests per server-core-second" is
comparable even when the load generator, not the server, is the bottleneck.
"""

import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CPU = "0"
CLIENT_CPU = "1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TETHER = os.environ.get("TETHER_BIN", os.path.join(ROOT, "build", "tether"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    """utime + stime of a process, seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listening on port %d" % port)


def wait_ports(named, timeout=10):
    """Waits until each of `named` ({server name: port}) accepts a connection; exits naming the first that does not."""
    for name, port in named.items():
        try:
            wait_port(port, timeout)
        except RuntimeError as e:
            raise SystemExit("%s: %s" % (name, e))


def start(argv, cpu=SERVER_CPU, **popen):
    """Starts `argv` pinned to `cpu` (taskset) with no standard input; `popen` goes to subprocess.Popen. Stop it
    with stop() or stop_all()."""
    return subprocess.Popen(["taskset", "-c", cpu] + list(argv), stdin=subprocess.DEVNULL, **popen)


def stop(p):
    """SIGTERM to a Popen still running, SIGKILL if it has not exited 10 s later; reaps it."""
    if p.poll() is None:
        p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def version(argv):
    """The first line a program prints for `argv` (its version command)."""
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    return out.strip().splitlines()[0] if out.strip() else ""


def cpu_during(pid, fn):
    """Runs fn(); returns (its result, the CPU seconds process `pid` used meanwhile (at least 1e-9), wall seconds)."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    result = fn()
    c1, t1 = cpu_seconds(pid), time.monotonic()
    return result, max(c1 - c0, 1e-9), t1 - t0


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def parse_latency(text):
    """wrk --latency: the 99% line, in ms."""
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        return float("nan")
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v


def run_wrk(url, seconds, conns=50, script=None, headers=()):
    cmd = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--latency"]
    for h in headers:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return reqs, parse_latency(out), errors, out


def measure(pid, url, seconds, **kw):
    """Runs wrk and returns a dict of requests/s, p99 ms, server CPU %, requests per core-second."""
    (reqs, p99, errors, _), cpu, wall = cpu_during(pid, lambda: run_wrk(url, seconds, **kw))
    return {"rps": reqs / wall, "p99": p99, "cpu_pct": 100 * cpu / wall, "per_core": reqs / cpu,
            "errors": errors, "reqs": reqs}


def h2load_cmd(url, n, extra=()):
    """The h2load command line of the HTTP/2 benches: one thread, 50 connections, 10 streams each, `n` requests, on
    CLIENT_CPU; `extra` options go before -n."""
    return ["taskset", "-c", CLIENT_CPU, "h2load", "-t1", "-c50", "-m10"] + list(extra) + ["-n", str(n), url]


def h2load(url, n, extra=()):
    """Runs h2load_cmd(); returns (the requests it counted as succeeded, 0 when its summary is missing, its output)."""
    out = subprocess.run(h2load_cmd(url, n, extra), capture_output=True, text=True).stdout
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    return (int(m.group(2)) if m else 0), out


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def hold_idle_connections(port, n, path="/100.txt"):
    """Opens n keep-alive connections, makes one request on each, reads the response, returns the sockets."""
    socks = []
    req = ("GET %s HTTP/1.1\r\nHost: b\r\n\r\n" % path).encode()
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        socks.append(s)
        if len(socks) % 500 == 0:
            drain(socks[-500:])
    drain(socks[len(socks) - len(socks) % 500:])
    return socks


def drain(socks):
    for s in socks:
        s.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("server closed a connection that should stay idle")
            data += chunk


def make_cert(work):
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def make_workdir(prefix):
    """A scratch directory readable by nginx's www-data workers, with site/100.txt (99 x's and a newline).
    Returns (workdir, site root)."""
    work = tempfile.mkdtemp(prefix=prefix)
    os.chmod(work, 0o755)
    root = os.path.join(work, "site")
    os.makedirs(root, mode=0o755)
    with open(os.path.join(root, "100.txt"), "wb") as f:
        f.write(b"x" * 99 + b"\n")
    os.chmod(os.path.join(root, "100.txt"), 0o644)
    return work, root


def stop_all(procs, work=None):
    """stop() each Popen, then removes `work`."""
    for p in procs:
        stop(p)
    if work:
        shutil.rmtree(work, ignore_errors=True)


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def print_config(title, text, subst=()):
    """Prints a peer's configuration as run, in a collapsed markdown block; `subst` (old, new) pairs hide this
    run's scratch directory and ports."""
    for a, b in subst:
        text = text.replace(a, b)
    print("<details><summary>%s</summary>\n\n```\n%s\n```\n</details>\n" % (title, text.strip("\n")))


def loadavg():
    """The load average of the last 1, 5 and 15 minutes, as /proc/loadavg says it."""
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def log(msg):
    print(msg, file=sys.stderr, flush=True)
