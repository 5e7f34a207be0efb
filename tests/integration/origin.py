"""A small, exact HTTP/1.1 origin server for tether's proxy tests (run as a script or imported).

    /usr/bin/python3 origin.py [--idle-timeout SEC] [--hint] [--hint-timeout SEC] [--hint-max N]
                               [--max-requests N] [--sweep SEC] [--port 0]

It prints "PORT <n>" on stdout once listening. Each connection is served by its own thread:
  * persistent HTTP/1.1; after a response it waits for the next request at most --idle-timeout seconds
    (exactly: measured from the end of its last response) and then closes the connection (FIN). 0 waits
    forever;
  * --hint adds "Keep-Alive: timeout=T" (T = --hint-timeout, default the idle timeout, whole seconds
    rounded down) and, with --hint-max, "max=M" counting down per connection;
  * --max-requests N closes a connection after N responses (the last one says Connection: close);
  * --sweep P closes idle connections the way Tomcat and gunicorn do: a sweep every P seconds (from the
    origin's start) closes every connection idle for --idle-timeout or more, so a connection closes at an idle
    age anywhere between the timeout and the timeout plus P;
  * gather=N (in-process use only) holds each response until N requests carrying the same `n=` query value
    have arrived, or gather_timeout seconds have passed: clients in rounds (pool_support.Rounds sends n = its
    round) then have all N exchanges of a round in flight at once at the proxy, however loaded the machine is;
  * --latency L emulates L seconds of one-way network delay for the idle close, so the keep-alive race
    is as wide as on a real network (loopback makes it ~50 us): a request must reach the origin L before
    its idle deadline D to be served, and the FIN leaves only at D + L. A request sent in [D-L, D+L] is
    lost: the socket closes with it unread (an RST), exactly what a proxy meets when its reuse crosses
    the upstream's close.

Per-request behaviour comes from the query string (all optional):
  status=NNN         response status (default 200)
  size=N             response content of N bytes (pattern b"0123456789" repeated); default: a JSON echo
  framing=cl|chunked|close   Content-Length (default), chunked, or close-delimited (then the connection closes)
  delay=MS           wait before sending the head
  chunk_delay=MS     with size: wait between 16 KiB pieces of content
  reset=before_head|after_head|mid_body   send an RST (SO_LINGER 0) at that point
  close=before_head  close cleanly (FIN) without answering
  trailers=1         with framing=chunked: send "X-Trailer: done" as a trailer
  hdr=Name:Value     add a response field (repeatable)
  continue=1         when the request has Expect: 100-continue, answer 100 Continue before reading content
  garbage=1          answer with bytes that are not HTTP

The JSON echo is {"method", "target", "version", "headers": [[name, value], ...], "body_len",
"body_sha256", "conn": connection number, "req": request number on it, "trailers": [...]}.
GET /__stats returns {"accepted", "requests", "idle_closes", "raced", "open", "per_conn": {conn: requests}}
and counts neither as a request nor as a connection's request; "raced" counts idle closes that found a
request already sent (the keep-alive race: that request is lost, the client sees an RST).
"""

import argparse
import hashlib
import json
import socket
import struct
import sys
import threading
import time
import urllib.parse

PATTERN = b"0123456789"


class Origin:
    def __init__(self, idle_timeout=5.0, hint=False, hint_timeout=None, hint_max=None, max_requests=0,
                 host="127.0.0.1", port=0, latency=0.0, sweep=0.0, gather=0, gather_timeout=10.0):
        self.idle_timeout = idle_timeout
        self.gather = gather
        self.gather_timeout = gather_timeout
        self.gathered = {}  # n= value -> requests arrived with it
        self.gather_cv = threading.Condition()
        self.latency = latency
        self.sweep = sweep
        self.epoch = time.monotonic()  # sweeps run at epoch + k * sweep
        self.hint = hint
        self.hint_timeout = idle_timeout if hint_timeout is None else hint_timeout
        self.hint_max = hint_max
        self.max_requests = max_requests
        self.lock = threading.Lock()
        self.stats = {"accepted": 0, "requests": 0, "idle_closes": 0, "raced": 0, "open": 0, "per_conn": {}}
        self.peer_closed_at = []  # monotonic times at which a connection saw the client's close (in-process use)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self._stop = False

    def start(self):
        threading.Thread(target=self.serve, daemon=True).start()
        return self

    def stop(self):
        self._stop = True
        try:
            self.sock.close()
        except OSError:
            pass

    def serve(self):
        n = 0
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            n += 1
            with self.lock:
                self.stats["accepted"] += 1
                self.stats["open"] += 1
                self.stats["per_conn"][n] = 0
            threading.Thread(target=self.conn, args=(c, n), daemon=True).start()

    # ---- one connection ----

    def conn(self, c, num):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        served = 0
        last = time.monotonic()
        try:
            while True:
                head, buf, why = self.read_head(c, buf, last)
                if head is None:
                    if why == "idle":
                        with self.lock:
                            self.stats["idle_closes"] += 1
                            if buf or self.pending(c):
                                self.stats["raced"] += 1  # a request crossed the close: it is lost (RST)
                    else:
                        with self.lock:
                            self.peer_closed_at.append(time.monotonic())
                    return
                req, buf = self.parse(c, head, buf)
                if req["target"] == "/__stats":
                    with self.lock:
                        body = json.dumps(self.stats).encode()
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: application/json\r\n\r\n"
                              % len(body) + body)
                    last = time.monotonic()
                    continue
                served += 1
                with self.lock:
                    self.stats["requests"] += 1
                    self.stats["per_conn"][num] = served
                keep = self.respond(c, req, num, served)
                last = time.monotonic()
                if not keep:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            with self.lock:
                self.stats["open"] -= 1
            try:
                c.close()
            except OSError:
                pass

    def read_head(self, c, buf, last):
        """Reads up to the end of a request head; returns (head, rest, None) or (None, _, 'idle'|'eof')."""
        while b"\r\n\r\n" not in buf:
            if self.idle_timeout > 0 and not buf:
                left = self.idle_deadline(last) - self.latency - time.monotonic()
                if left <= 0:
                    if self.latency > 0:
                        # The close decided at the deadline reaches the peer `latency` later; what it sends
                        # meanwhile is lost (closing with unread bytes sends an RST).
                        time.sleep(max(0.0, self.idle_deadline(last) + self.latency - time.monotonic()))
                    return None, buf, "idle"
                c.settimeout(left)
            else:
                c.settimeout(30)
            try:
                chunk = c.recv(65536)
            except socket.timeout:
                if not buf:
                    continue  # the deadline minus latency: the check above emulates the close in flight
                return None, buf, "eof"
            if not chunk:
                return None, buf, "eof"
            buf += chunk
        i = buf.index(b"\r\n\r\n")
        return buf[:i], buf[i + 4:], None

    def idle_deadline(self, last):
        """When a connection idle since `last` is closed: at the idle timeout, or at the first sweep after it."""
        due = last + self.idle_timeout
        if self.sweep > 0:
            k = -(-(due - self.epoch) // self.sweep)  # ceil: the first sweep at or after `due`
            due = self.epoch + k * self.sweep
        return due

    def recv_more(self, c, buf):
        c.settimeout(30)
        chunk = c.recv(65536)
        if not chunk:
            raise ConnectionError("eof in body")
        return buf + chunk

    def parse(self, c, head, buf):
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append([k, v.strip()])
        hmap = {}
        for k, v in headers:
            hmap.setdefault(k.lower(), v)
        url = urllib.parse.urlsplit(target)
        q = urllib.parse.parse_qs(url.query)
        req = {"method": method, "target": target, "path": url.path, "version": version, "headers": headers,
               "hmap": hmap, "q": q, "body": b"", "trailers": []}
        if q.get("continue") and hmap.get("expect", "").lower() == "100-continue":
            c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if hmap.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in buf:
                    buf = self.recv_more(c, buf)
                line, buf = buf.split(b"\r\n", 1)
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while True:
                        while b"\r\n" not in buf:
                            buf = self.recv_more(c, buf)
                        tl, buf = buf.split(b"\r\n", 1)
                        if not tl:
                            break
                        req["trailers"].append(tl.decode("latin-1"))
                    break
                while len(buf) < size + 2:
                    buf = self.recv_more(c, buf)
                body += buf[:size]
                buf = buf[size + 2:]
            req["body"] = body
        elif "content-length" in hmap:
            n = int(hmap["content-length"])
            while len(buf) < n:
                buf = self.recv_more(c, buf)
            req["body"], buf = buf[:n], buf[n:]
        return req, buf

    def respond(self, c, req, num, served):
        q = req["q"]
        first = lambda k, d=None: q[k][0] if k in q else d  # noqa: E731
        if self.gather and first("n") is not None:
            self.wait_for_round(first("n"))
        if first("delay"):
            time.sleep(int(first("delay")) / 1000.0)
        reset = first("reset")
        if reset == "before_head":
            self.rst(c)
            return False
        if first("close") == "before_head":
            c.shutdown(socket.SHUT_RDWR)
            return False
        if first("garbage"):
            c.sendall(b"\x00\x01garbage that is not HTTP\r\n\r\n")
            return False
        status = int(first("status", "200"))
        framing = first("framing", "cl")
        if "size" in q:
            n = int(first("size"))
            body = (PATTERN * (n // len(PATTERN) + 1))[:n]
            ctype = "application/octet-stream"
        else:
            body = json.dumps({
                "method": req["method"], "target": req["target"], "version": req["version"],
                "headers": req["headers"], "body_len": len(req["body"]),
                "body_sha256": hashlib.sha256(req["body"]).hexdigest(), "conn": num, "req": served,
                "trailers": req["trailers"]}).encode()
            ctype = "application/json"
        no_content = req["method"] == "HEAD" or status in (204, 304) or status < 200
        last = self.max_requests and served >= self.max_requests
        close_after = framing == "close" or last or req["hmap"].get("connection", "").lower() == "close"
        lines = ["HTTP/1.1 %d X" % status, "Content-Type: %s" % ctype]
        for h in q.get("hdr", []):
            lines.append(h)
        if framing == "cl" and status not in (204, 304) and status >= 200:
            lines.append("Content-Length: %d" % len(body))
        elif framing == "chunked" and not no_content:
            lines.append("Transfer-Encoding: chunked")
        if close_after:
            lines.append("Connection: close")
        elif self.hint:
            v = "timeout=%d" % int(self.hint_timeout)
            if self.hint_max is not None:
                v += ", max=%d" % max(self.hint_max - served, 0)
            lines.append("Keep-Alive: " + v)
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        c.sendall(head)
        if reset == "after_head":
            self.rst(c)
            return False
        if no_content:
            return not close_after
        chunk_delay = int(first("chunk_delay", "0")) / 1000.0
        pieces = [body[i:i + 16384] for i in range(0, len(body), 16384)] or [b""]
        for i, piece in enumerate(pieces):
            if reset == "mid_body" and i == len(pieces) // 2:
                self.rst(c)
                return False
            if framing == "chunked":
                if piece:
                    c.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            else:
                c.sendall(piece)
            if chunk_delay:
                time.sleep(chunk_delay)
        if framing == "chunked":
            c.sendall(b"0\r\n" + (b"X-Trailer: done\r\n" if first("trailers") else b"") + b"\r\n")
        if framing == "close":
            c.shutdown(socket.SHUT_WR)
        return not close_after

    def wait_for_round(self, n):
        """Blocks until `gather` requests with this n= have arrived (or gather_timeout passed)."""
        deadline = time.monotonic() + self.gather_timeout
        with self.gather_cv:
            self.gathered[n] = self.gathered.get(n, 0) + 1
            self.gather_cv.notify_all()
            while self.gathered[n] < self.gather and time.monotonic() < deadline:
                self.gather_cv.wait(deadline - time.monotonic())

    @staticmethod
    def pending(c):
        """True when request bytes wait unread (the peer sent while we were closing)."""
        try:
            c.setblocking(False)
            return bool(c.recv(1, socket.MSG_PEEK))
        except (BlockingIOError, OSError):
            return False

    @staticmethod
    def rst(c):
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle-timeout", type=float, default=5.0)
    ap.add_argument("--hint", action="store_true")
    ap.add_argument("--hint-timeout", type=float)
    ap.add_argument("--hint-max", type=int)
    ap.add_argument("--max-requests", type=int, default=0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--sweep", type=float, default=0.0)
    a = ap.parse_args()
    o = Origin(a.idle_timeout, a.hint, a.hint_timeout, a.hint_max, a.max_requests, port=a.port, latency=a.latency,
               sweep=a.sweep)
    print("PORT %d" % o.port, flush=True)
    o.serve()


if __name__ == "__main__":
    sys.exit(main())
