"""Shared pieces of tether's benchmarks: free ports, CPU pinning, /proc CPU and RSS, wrk runs.

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
    c0, t0 = cpu_seconds(pid), time.monotonic()
    reqs, p99, errors, _ = run_wrk(url, seconds, **kw)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    cpu = max(c1 - c0, 1e-9)
    return {"rps": reqs / (t1 - t0), "p99": p99, "cpu_pct": 100 * cpu / (t1 - t0), "per_core": reqs / cpu,
            "errors": errors, "reqs": reqs}


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
    """SIGTERM each Popen (SIGKILL after 10 s), then removes `work`."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
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
