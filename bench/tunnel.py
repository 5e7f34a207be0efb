"""bench/tunnel.py -- WebSocket tunnels through tether, nginx and HAProxy (via bench/tunnel.sh; issue 11).

One echo origin, identical for all proxies: this file run as `tunnel.py origin PORT`, a single-threaded epoll loop
that answers the RFC 6455 handshake by hand (101 with Sec-WebSocket-Accept) and then echoes raw bytes. The load
client (`tunnel.py client ...`) opens K tunnels through a proxy, then plays ping-pong on each of them for SECONDS:
one pre-built masked 100-byte text frame (106 bytes on the wire) goes out, the echo (the same 106 bytes: the origin
returns the client's frame as it is) comes back, the next one goes out. Messages are counted by bytes read back;
nothing parses frames, so the client is cheap, and a message is one round trip through the proxy (client ->
origin -> client): two reads and two writes for the proxy.

Pinning: the proxy under test alone on CPU 0; the origin and the client on CPU 1. A proxy's cost is its own
utime+stime (/proc/PID/stat, all threads) over the run divided by the messages: µs of proxy CPU per message, robust
to the client or origin being the bottleneck (messages/s is not: shown, not compared).

Scenarios, proxies alternating ROUNDS times in one run (medians):
  1. CPU per message: K (TUNNELS, 50) tunnels in ping-pong for SECONDS_PER_RUN (5).
  2. RSS per idle tunnel: each proxy started fresh, one tunnel opened and closed (warm-up), VmRSS read, then
     IDLE_TUNNELS (2000) tunnels opened and left idle, VmRSS read again after 1 s: (after - before) / N. The origin's
     open connections are counted to check that every tunnel reached it.
PERF=1 (tunnel.sh's default when `perf` exists) adds one extra run per proxy under `perf stat -e
raw_syscalls:sys_enter` (system calls per message) and one extra tether run under `perf record -g`, and prints the
functions above 2 % of its samples, the samples by object and tether's own functions above 0.3 %.
"""

import base64
import hashlib
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

SECONDS = int(os.environ.get("SECONDS_PER_RUN", "5"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
TUNNELS = int(os.environ.get("TUNNELS", "50"))
IDLE_TUNNELS = int(os.environ.get("IDLE_TUNNELS", "2000"))
PERF = os.environ.get("PERF", "0") == "1"
TETHER = os.environ.get("TETHER_BIN", os.path.join(B.ROOT, "build", "tether"))
PEERS = os.environ.get("TUNNEL_PEERS", "tether,nginx,haproxy").split(",")
TUNNEL_TIMEOUT = "1h"  # tether's tunnel_idle_timeout default; nginx proxy_read/send_timeout, HAProxy timeout tunnel

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85"
WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
WS_REQ = (b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: " + WS_KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
PAYLOAD = 100
MASK = b"\x37\xfa\x21\x3d"
FRAME = bytes([0x81, 0x80 | PAYLOAD]) + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(b"m" * PAYLOAD))

TETHER_CONF = """[server]
workers = 1
[log]
access_log = off
level = warn
[upstream o]
server = 127.0.0.1:{origin}
[route /]
upstream = o
upgrade = websocket
tunnel_idle_timeout = {timeout}
"""

NGINX_CONF = """worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
error_log {dir}/nginx-error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 10000; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://127.0.0.1:{origin};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout {timeout};
      proxy_send_timeout {timeout};
    }}
  }}
}}
"""

HAPROXY_CONF = """global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 3s
  timeout client 60s
  timeout server 60s
  timeout tunnel {timeout}
frontend f
  bind 127.0.0.1:{port}
  default_backend b
backend b
  server o 127.0.0.1:{origin}
"""


# ---- the echo origin (its own process, CPU 1) ----

def origin_main(port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(4096)
    ls.setblocking(False)
    ep = select.epoll()
    ep.register(ls.fileno(), select.EPOLLIN)
    conns = {}  # fd -> [socket, head bytes so far or None once upgraded]
    while True:
        for fd, _ in ep.poll():
            if fd == ls.fileno():
                while True:
                    try:
                        c, _ = ls.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conns[c.fileno()] = [c, b""]
                    ep.register(c.fileno(), select.EPOLLIN)
                continue
            st = conns[fd]
            c = st[0]
            try:
                data = c.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                ep.unregister(fd)
                c.close()
                del conns[fd]
                continue
            if st[1] is not None:
                head = st[1] + data
                if b"\r\n\r\n" not in head:
                    st[1] = head
                    continue
                head, data = head.split(b"\r\n\r\n", 1)
                m = re.search(rb"(?im)^sec-websocket-key:[ \t]*(\S+)", head)
                accept = base64.b64encode(hashlib.sha1((m.group(1) if m else b"") + WS_GUID).digest())
                send_all(c, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
                st[1] = None
                if not data:
                    continue
            send_all(c, data)


def send_all(c, data):
    try:
        n = c.send(data)
    except BlockingIOError:
        n = 0
    if n < len(data):  # rare with 106-byte messages: finish blocking
        c.setblocking(True)
        c.sendall(data[n:])
        c.setblocking(False)


# ---- the load client (its own process, CPU 1) ----

def open_tunnels(port, n, batch=250):
    """n WebSocket tunnels through the proxy on `port` (101 read on each); returns the sockets."""
    socks = []
    for start in range(0, n, batch):
        group = []
        for _ in range(min(batch, n - start)):
            s = socket.create_connection(("127.0.0.1", port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(WS_REQ)
            group.append(s)
        for s in group:
            s.settimeout(30)
            head = b""
            while b"\r\n\r\n" not in head:
                d = s.recv(4096)
                if not d:
                    raise RuntimeError("the proxy closed a tunnel during its handshake")
                head += d
            if not head.startswith(b"HTTP/1.1 101"):
                raise RuntimeError("handshake answered: %r" % head.split(b"\r\n", 1)[0])
            if head.split(b"\r\n\r\n", 1)[1]:
                raise RuntimeError("bytes after the 101")
        socks += group
    return socks


def client_main(port, k, seconds, pid):
    socks = open_tunnels(port, k)
    ep = select.epoll()
    got = {}
    by_fd = {}
    for s in socks:
        s.setblocking(False)
        ep.register(s.fileno(), select.EPOLLIN)
        by_fd[s.fileno()] = s
        got[s.fileno()] = 0
    # one checked round trip per tunnel first: the echo is the frame as sent
    for s in socks:
        send_all(s, FRAME)
    for s in socks:
        s.settimeout(30)
        d = b""
        while len(d) < len(FRAME):
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit("the proxy closed a tunnel before its first echo")
            d += chunk
        if d != FRAME:
            raise SystemExit("the echo differs from the frame sent")
        s.setblocking(False)
    msgs = 0
    me0 = os.times()
    c0, t0 = B.cpu_seconds(pid), time.monotonic()
    end = t0 + seconds
    for s in socks:
        send_all(s, FRAME)
    flen = len(FRAME)
    while True:
        now = time.monotonic()
        if now >= end:
            break
        for fd, _ in ep.poll(end - now):
            s = by_fd[fd]
            try:
                d = s.recv(65536)
            except BlockingIOError:
                continue
            if not d:
                raise SystemExit("the proxy closed a tunnel during the run")
            g = got[fd] + len(d)
            while g >= flen:
                g -= flen
                msgs += 1
                send_all(s, FRAME)
            got[fd] = g
    c1, t1 = B.cpu_seconds(pid), time.monotonic()
    me1 = os.times()
    for s in socks:
        s.close()
    print(json.dumps({"msgs": msgs, "wall": t1 - t0, "cpu": c1 - c0,
                      "client_cpu": (me1.user + me1.system) - (me0.user + me0.system)}))


# ---- the peers ----

class Peer:
    def __init__(self, name, work, origin_port):
        self.name = name
        self.port = B.free_port()
        conf = os.path.join(work, "%s.conf" % name)
        if name == "tether":
            self.conf = TETHER_CONF.format(origin=origin_port, timeout=TUNNEL_TIMEOUT)
            argv = [TETHER, "serve", "--config", conf, "--listen", "127.0.0.1:%d" % self.port]
        elif name == "nginx":
            self.conf = NGINX_CONF.format(dir=work, port=self.port, origin=origin_port, timeout=TUNNEL_TIMEOUT)
            argv = ["nginx", "-c", conf]
        else:
            self.conf = HAPROXY_CONF.format(port=self.port, origin=origin_port, timeout=TUNNEL_TIMEOUT)
            argv = ["haproxy", "-f", conf, "-db"]
        with open(conf, "w") as f:
            f.write(self.conf)
        self.log = os.path.join(work, "%s.stderr" % name)
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(["taskset", "-c", B.SERVER_CPU] + argv, stdout=subprocess.DEVNULL,
                                         stderr=err)
        try:
            B.wait_port(self.port)
        except RuntimeError:
            self.stop()
            with open(self.log) as f:
                raise SystemExit("%s did not start: %s" % (name, f.read()[-2000:]))
        time.sleep(0.2)
        self.pid = B.children(self.proc.pid)[0] if name == "nginx" else self.proc.pid

    def stop(self):
        B.stop_all([self.proc])


def run_client(peer, k, seconds):
    out = subprocess.run(["taskset", "-c", B.CLIENT_CPU, sys.executable, os.path.abspath(__file__), "client",
                          str(peer.port), str(k), str(seconds), str(peer.pid)],
                         capture_output=True, text=True, timeout=seconds + 300)
    if out.returncode != 0:
        raise SystemExit("%s: client failed: %s" % (peer.name, out.stderr.strip()[-2000:]))
    r = json.loads(out.stdout)
    r["mps"] = r["msgs"] / r["wall"]
    r["us_per_msg"] = r["cpu"] * 1e6 / max(r["msgs"], 1)
    r["cpu_pct"] = 100 * r["cpu"] / r["wall"]
    r["client_pct"] = 100 * r["client_cpu"] / r["wall"]
    return r


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def idle_rss(name, work, origin):
    peer = Peer(name, work, origin.port)
    try:
        for s in open_tunnels(peer.port, 1):  # warm-up: the first tunnel's one-time allocations
            s.close()
        time.sleep(0.5)
        fds0 = open_fds(origin.pid)
        before = B.rss_kib(peer.pid)
        socks = open_tunnels(peer.port, IDLE_TUNNELS)
        time.sleep(1)
        after = B.rss_kib(peer.pid)
        at_origin = open_fds(origin.pid) - fds0
        for s in socks:
            s.close()
        return {"before": before, "after": after, "per": (after - before) / IDLE_TUNNELS, "origin": at_origin}
    finally:
        peer.stop()
        time.sleep(1)  # the origin closes its side


def perf_profile(peer, work):
    data = os.path.join(work, "perf.data")
    rec = subprocess.Popen(["perf", "record", "-g", "-o", data, "-p", str(peer.pid)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        r = run_client(peer, TUNNELS, SECONDS)
    finally:
        rec.send_signal(2)
        rec.wait(60)
    rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio", "--sort", "symbol",
                          "--percent-limit", "2", "-g", "none"], capture_output=True, text=True).stdout
    lines = []
    for ln in rep.splitlines():
        m = re.match(r"^\s+(\d+\.\d+%)\s+(\[.\])\s+(\S+)", ln)
        if m:
            lines.append("%7s  %s %s" % m.groups())
    rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio", "--sort", "dso",
                          "--percent-limit", "0.5", "-g", "none"], capture_output=True, text=True).stdout
    dsos = ["%s %s" % m.groups() for m in re.finditer(r"^\s+(\d+\.\d+%)\s+(\S+)", rep, re.M)]
    rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio", "--sort", "symbol",
                          "--dsos", os.path.basename(TETHER), "--percent-limit", "0.3", "-g", "none"],
                         capture_output=True, text=True).stdout
    own = ["%7s  %s" % (m.group(1), m.group(2))
           for m in re.finditer(r"^\s+(\d+\.\d+%)\s+\[.\]\s+(\S+)", rep, re.M)]
    return r, lines, dsos, own


def syscalls_per_message(peer, work):
    """One extra run under `perf stat -e raw_syscalls:sys_enter`: the proxy's system calls per message."""
    out = os.path.join(work, "perf-stat-%s.csv" % peer.name)
    st = subprocess.Popen(["perf", "stat", "-x", ",", "-o", out, "-e", "raw_syscalls:sys_enter", "-p", str(peer.pid)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        r = run_client(peer, TUNNELS, SECONDS)
    finally:
        st.send_signal(2)
        st.wait(60)
    with open(out) as f:
        m = re.search(r"^(\d+),.*raw_syscalls:sys_enter", f.read(), re.M)
    # counted from before the client's handshakes to after its close: those few hundred calls are in
    return int(m.group(1)) / max(r["msgs"], 1) if m else float("nan")


class Origin:
    def __init__(self):
        self.port = B.free_port()
        self.proc = subprocess.Popen(["taskset", "-c", B.CLIENT_CPU, sys.executable, os.path.abspath(__file__),
                                      "origin", str(self.port)])
        B.wait_port(self.port)
        self.pid = self.proc.pid


def main():
    B.raise_nofile()
    work, _ = B.make_workdir("tether-tunnel-bench-")
    origin = Origin()
    peers = []
    try:
        load0 = os.getloadavg()
        peers = [Peer(n, work, origin.port) for n in PEERS]
        versions = "%s; %s; tether %s" % (
            subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
            subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0],
            subprocess.run([TETHER, "--version"], capture_output=True, text=True).stdout.strip())
        rows = {p.name: [] for p in peers}
        for i in range(ROUNDS):
            for p in peers:
                r = run_client(p, TUNNELS, SECONDS)
                rows[p.name].append(r)
                B.log("  %s round %d: %.0f messages/s, %.2f us proxy CPU/message (proxy %.0f %%, client %.0f %%)"
                      % (p.name, i + 1, r["mps"], r["us_per_msg"], r["cpu_pct"], r["client_pct"]))
        profile = None
        if PERF and "tether" in rows and shutil.which("perf"):
            profile = perf_profile(next(p for p in peers if p.name == "tether"), work)
        syscalls = {}
        if PERF and shutil.which("perf"):
            for p in peers:
                syscalls[p.name] = syscalls_per_message(p, work)
                B.log("  %s: %.2f system calls per message" % (p.name, syscalls[p.name]))
        for p in peers:
            p.stop()
        peers = []

        rss = {n: [] for n in PEERS}
        for i in range(ROUNDS):
            for n in PEERS:
                r = idle_rss(n, work, origin)
                rss[n].append(r)
                B.log("  %s idle round %d: %d -> %d KiB, %.2f KiB per tunnel, %d origin connections"
                      % (n, i + 1, r["before"], r["after"], r["per"], r["origin"]))
        load1 = os.getloadavg()

        print("## WebSocket tunnels: tether vs nginx vs HAProxy, one worker each\n")
        print("%s. Proxy alone on CPU %s; the echo origin and the client on CPU %s. %s UTC; load average "
              "%.2f %.2f %.2f at the start, %.2f %.2f %.2f at the end.\n"
              % (versions, B.SERVER_CPU, B.CLIENT_CPU, time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                 *load0, *load1))
        print("### CPU per message: %d tunnels, ping-pong of 100-byte frames, %d s per run, medians of %d "
              "alternating runs\n" % (TUNNELS, SECONDS, ROUNDS))
        print("| proxy | messages/s | proxy CPU % | client CPU % | proxy CPU µs per message | vs tether |")
        print("|---|---:|---:|---:|---:|---:|")
        med = {n: {k: B.median([r[k] for r in rs]) for k in ("mps", "cpu_pct", "client_pct", "us_per_msg")}
               for n, rs in rows.items()}
        t = med.get("tether", {}).get("us_per_msg")
        for n, m in med.items():
            print("| %s | %.0f | %.0f | %.0f | %.2f | %s |" % (n, m["mps"], m["cpu_pct"], m["client_pct"],
                                                              m["us_per_msg"],
                                                              "%.2fx" % (m["us_per_msg"] / t) if t else "-"))
        print("\nEvery round (µs per message): " + "; ".join(
            "%s %s" % (n, "/".join("%.2f" % r["us_per_msg"] for r in rs)) for n, rs in rows.items()))
        if syscalls:
            print("\nSystem calls of the proxy per message (one extra run each under `perf stat -e "
                  "raw_syscalls:sys_enter`; the handshakes and closes of its %d tunnels included): " % TUNNELS
                  + ", ".join("%s %.2f" % (n, v) for n, v in syscalls.items()) + ".")
        if t and "haproxy" in med:
            h = med["haproxy"]["us_per_msg"]
            print("\nTarget: tether's CPU per tunnelled message no more than HAProxy's: %.2f vs %.2f µs: **%s** "
                  "(%.2fx)." % (t, h, "met" if t <= h else "NOT met", t / h))

        print("\n### RSS per idle tunnel: %d tunnels, each proxy started fresh, medians of %d alternating runs\n"
              % (IDLE_TUNNELS, ROUNDS))
        print("| proxy | RSS before KiB | RSS with tunnels KiB | KiB per idle tunnel | tunnels at the origin "
              "| vs tether |")
        print("|---|---:|---:|---:|---:|---:|")
        mr = {n: {k: B.median([r[k] for r in rs]) for k in ("before", "after", "per", "origin")}
              for n, rs in rss.items()}
        tr = mr.get("tether", {}).get("per")
        for n, m in mr.items():
            print("| %s | %d | %d | %.2f | %d | %s |" % (n, m["before"], m["after"], m["per"], m["origin"],
                                                         "%.2fx" % (m["per"] / tr) if tr else "-"))
        print("\nEvery round (KiB per idle tunnel): " + "; ".join(
            "%s %s" % (n, "/".join("%.2f" % r["per"] for r in rs)) for n, rs in rss.items()))
        if tr and "nginx" in mr:
            g = mr["nginx"]["per"]
            print("\nTarget: tether's RSS per idle tunnel no more than nginx's: %.2f vs %.2f KiB: **%s** (%.2fx)."
                  % (tr, g, "met" if tr <= g else "NOT met", tr / max(g, 1e-9)))
        if profile:
            r, lines, dsos, own = profile
            print("\n### perf profile of tether during one extra run (%.0f messages/s, %.2f µs per message under "
                  "perf), functions over 2 %% of samples\n" % (r["mps"], r["us_per_msg"]))
            print("```\n" + "\n".join(lines) + "\n```")
            print("\nSamples by object: " + ", ".join(dsos) + ". tether's own functions over 0.3 % of all "
                  "samples:\n")
            print("```\n" + "\n".join(own) + "\n```")
        print("\nEach proxy's configuration, as run (ORIGIN and PORT are the echo origin's and the proxy's ports):\n")
        for n in PEERS:
            conf = {"tether": TETHER_CONF, "nginx": NGINX_CONF, "haproxy": HAPROXY_CONF}[n]
            conf = conf.replace("{{", "{").replace("}}", "}").replace("{origin}", "ORIGIN").replace(
                "{port}", "PORT").replace("{timeout}", TUNNEL_TIMEOUT).replace("{dir}", "DIR")
            cmd = {"tether": "tether serve --config tether.conf --listen 127.0.0.1:PORT",
                   "nginx": "nginx -c nginx.conf", "haproxy": "haproxy -f haproxy.cfg -db"}[n]
            print("<details><summary>%s (`%s`)</summary>\n\n```\n%s```\n</details>\n" % (n, cmd, conf))
    finally:
        for p in peers:
            p.stop()
        B.stop_all([origin.proc], work)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "origin":
        origin_main(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "client":
        client_main(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
