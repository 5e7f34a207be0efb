#!/usr/bin/env python3
"""bench/advise.py -- the downstream race scenario the advisor is for, run live, then `tether advise` on it.

A balancer-like client in front of tether: it keeps its connections to tether for up to 60 s idle (an ALB's
default), so it reuses each connection after gaps of 0.5 s to 58 s, and never looks at the connection before
reusing it. tether closes idle connections at `idle_timeout = 5s`; its race window (`race_window = 60s`, the
largest) counts every request that arrives after that close: the requests an ALB would answer with 502. Then
`tether advise --metrics URL` reads the counters and says what to change. About 70 s.

Env: TETHER_BIN (build/tether), ADVISE_CLIENTS (24).
"""
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import free_port, wait_port  # noqa: E402

TETHER = os.environ.get("TETHER_BIN", "build/tether")
CLIENTS = int(os.environ.get("ADVISE_CLIENTS", "24"))
GAPS = [0.5, 1.0, 2.0, 3.0, 4.0, 4.5, 5.5, 8.0, 15.0, 30.0, 45.0, 58.0]
REQ = b"GET / HTTP/1.1\r\nHost: app\r\n\r\n"


def read_response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    while len(body) < n:
        chunk = s.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head.split(b" ", 2)[1]


def client(port, gap, out):
    """One connection: a request, `gap` seconds idle, a reuse without looking (what a balancer does)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(REQ)
        first = read_response(s)
        time.sleep(gap)
        try:
            s.sendall(REQ)
            second = read_response(s)
        except OSError:
            second = None
        out.append((gap, first, second))
    finally:
        s.close()


def main():
    work = tempfile.mkdtemp(prefix="tether-advise-")
    site = os.path.join(work, "site")
    os.mkdir(site)
    with open(os.path.join(site, "index.html"), "w") as f:
        f.write("hello\n")
    port, mport = free_port(), free_port()
    conf = os.path.join(work, "tether.ini")
    with open(conf, "w") as f:
        f.write("[server]\nworkers = 1\n[keepalive]\nidle_timeout = 5s\nrace_window = 60s\n"
                "[listen]\naddress = 127.0.0.1:%d\n[static]\nroot = %s\n[log]\naccess_log = off\n"
                "[metrics]\nlisten = 127.0.0.1:%d\n" % (port, site, mport))
    proc = subprocess.Popen([TETHER, "serve", "-c", conf], stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        wait_port(mport)
        rng = random.Random(1)
        results, threads = [], []
        for i in range(CLIENTS):
            gap = GAPS[i % len(GAPS)] * rng.uniform(0.97, 1.0)
            th = threading.Thread(target=client, args=(port, gap, results))
            th.start()
            threads.append(th)
        for th in threads:
            th.join(90)
        failed = sum(1 for _, _, second in results if second != b"200")
        print("tether idle_timeout = 5s; %d balancer-like connections reused after %.1f-%.1f s idle: %d reuses "
              "failed (each one a 502 at a real balancer)" % (len(results), min(GAPS) * 0.97, max(GAPS), failed))
        time.sleep(1)
        url = "http://127.0.0.1:%d/metrics" % mport
        print("$ tether advise --metrics %s" % url.replace(str(mport), "9901"))
        out = subprocess.run([TETHER, "advise", "--metrics", url], capture_output=True, text=True, timeout=30)
        sys.stdout.write(out.stdout)
        return out.returncode
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    sys.exit(main())
