"""An HTTP/1.1 origin for upload tests (test_early_responses.py, test_request_buffering.py), in-process.

Each connection has its own thread and is persistent. Per request (by target):
  * /early/NNN: reads only the request head, answers NNN at once (content "early NNN", a Location for 3xx,
    no Connection: close), then keeps reading and counting the request content until EOF (or `drain_for`
    seconds): `received` tells how much of the content tether sent after all;
  * anything else: reads the whole content (Content-Length or chunked) and answers 200 with a JSON
    {"len", "sha256", "conn", "framing" ("cl", "chunked" or "none"), "head_at"}.
Every request is recorded in `requests` (dicts: target, conn, head_at (time.monotonic() when its head was
complete), received (content bytes), eof ("fin" or "reset": the peer closed the connection after an early answer), done_at); `max_open`
is the largest number of connections open at once.
"""

import hashlib
import json
import socket
import threading
import time


class UploadOrigin:
    def __init__(self, drain_for=15.0, rcvbuf=65536):
        self.lock = threading.Lock()
        self.requests = []
        self.open = 0
        self.max_open = 0
        self.accepted = 0
        self.drain_for = drain_for
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:  # a small window: what tether sends is what the origin read, not what kernels buffered
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._conns = []
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def stop(self):
        self._stop = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._t.join(5)

    def snapshot(self):
        with self.lock:
            return [dict(r) for r in self.requests]

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                num = self.accepted
                self._conns.append(c)
            threading.Thread(target=self._conn, args=(c, num), daemon=True).start()

    def _conn(self, c, num):
        with self.lock:
            self.open += 1
            self.max_open = max(self.max_open, self.open)
        c.settimeout(30)
        buf = b""
        try:
            while not self._stop:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                rec = {"target": None, "conn": num, "head_at": time.monotonic(), "received": 0, "eof": False,
                       "done_at": None}
                lines = head.decode("latin-1").split("\r\n")
                rec["target"] = lines[0].split(" ")[1]
                fields = {}
                for ln in lines[1:]:
                    k, _, v = ln.partition(":")
                    fields[k.strip().lower()] = v.strip()
                with self.lock:
                    self.requests.append(rec)
                if rec["target"].startswith("/early/"):
                    self._early(c, rec, buf)
                    return
                buf = self._whole(c, rec, fields, buf)
        except OSError:
            pass
        finally:
            with self.lock:
                self.open -= 1
            c.close()

    def _early(self, c, rec, buf):
        status = int(rec["target"].split("/")[2])
        body = b"early %d" % status
        extra = b"Location: http://example.test/elsewhere\r\n" if 300 <= status < 400 else b""
        c.sendall(b"HTTP/1.1 %d Early\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(body), extra, body))
        got = len(buf)
        deadline = time.monotonic() + self.drain_for
        c.settimeout(1)
        while time.monotonic() < deadline:
            try:
                d = c.recv(65536)
            except socket.timeout:
                continue
            except OSError:  # tether resets a connection it leaves with request bytes unsent
                rec["eof"] = "reset"
                break
            if not d:
                rec["eof"] = "fin"
                break
            got += len(d)
            with self.lock:
                rec["received"] = got
        with self.lock:
            rec["received"] = got
            rec["done_at"] = time.monotonic()

    def _read(self, c, buf, n):
        while len(buf) < n:
            d = c.recv(65536)
            if not d:
                raise OSError("EOF in content")
            buf += d
        return buf

    def _whole(self, c, rec, fields, buf):
        h = hashlib.sha256()
        total = 0
        if "content-length" in fields:
            left = int(fields["content-length"])
            while left:
                if not buf:
                    buf = c.recv(65536)
                    if not buf:
                        raise OSError("EOF in content")
                take = buf[:left]
                h.update(take)
                total += len(take)
                left -= len(take)
                buf = buf[len(take):]
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            while True:
                while b"\r\n" not in buf:
                    buf = self._read(c, buf, len(buf) + 1)
                line, buf = buf.split(b"\r\n", 1)
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while not buf.startswith(b"\r\n") and b"\r\n\r\n" not in buf:
                        buf = self._read(c, buf, len(buf) + 1)
                    buf = buf[2:] if buf.startswith(b"\r\n") else buf.split(b"\r\n\r\n", 1)[1]
                    break
                buf = self._read(c, buf, size + 2)
                h.update(buf[:size])
                total += size
                buf = buf[size + 2:]
        with self.lock:
            rec["received"] = total
            rec["done_at"] = time.monotonic()
        framing = "cl" if "content-length" in fields else "chunked" if "transfer-encoding" in fields else "none"
        out = json.dumps({"len": total, "sha256": h.hexdigest(), "conn": rec["conn"], "framing": framing,
                          "head_at": rec["head_at"]}).encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(out), out))
        return buf
