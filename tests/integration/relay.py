"""A TCP relay that delays everything crossing it, both ways, as a network path does (run it as a subprocess).

    /usr/bin/python3 relay.py --target PORT [--delay SEC] [--max-seconds SEC] [--port 0]

It prints "PORT <n>" on stdout once listening. Each accepted connection gets its own connection to
127.0.0.1:TARGET; every byte read on one side is written to the other `--delay` seconds later, in order, and so
is the end of each direction: a FIN (the peer shut down or closed) becomes a shutdown(SHUT_WR) `--delay` later,
an RST (ECONNRESET) becomes a close with SO_LINGER 0 (an RST) `--delay` later. So a server's idle close reaches
the client `--delay` after it happened, and a request the client sends in that window reaches a server that has
already closed: the keep-alive race, as wide as on a network with that one-way delay (loopback alone makes it
about 50 us). A relay terminates TCP, so the client's kernel measures the round trip to the relay only: what
crosses it measures the path.

One thread, one selector, no allocation per packet beyond the bytes held. Bounded: it exits after
--max-seconds (default 600) whatever happens, so a test that dies cannot leave it behind; tests stop it by PID.
`Relay` below starts one from Python and stops it by PID.
"""

import argparse
import heapq
import itertools
import os
import selectors
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


class Direction:
    """Bytes read from `src`, due for `dst` at their time: a FIFO of (due, kind, data)."""

    def __init__(self, pair, src, dst):
        self.pair = pair
        self.src, self.dst = src, dst
        self.queue = []  # [due, kind, data]: kind "data" | "fin" | "rst"
        self.reading = True
        self.done = False  # the end went out (or the pair was reset)


class Pair:
    def __init__(self, client, server):
        self.up = Direction(self, client, server)  # client -> server
        self.down = Direction(self, server, client)  # server -> client
        self.closed = False


class RelayLoop:
    def __init__(self, target, delay, port=0):
        self.target = target
        self.delay = delay
        self.sel = selectors.DefaultSelector()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(512)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        self.timers = []  # heap of (due, seq, direction)
        self.seq = itertools.count()

    def accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except BlockingIOError:
                return
            try:
                s = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                rst(c)
                continue
            for x in (c, s):
                x.setblocking(False)
                x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = Pair(c, s)
            self.sel.register(c, selectors.EVENT_READ, (pair, pair.up))
            self.sel.register(s, selectors.EVENT_READ, (pair, pair.down))

    def schedule(self, d, kind, data=b""):
        due = time.monotonic() + self.delay
        d.queue.append([due, kind, data])
        heapq.heappush(self.timers, (due, next(self.seq), d))

    def read(self, pair, d):
        try:
            data = d.src.recv(65536)
        except BlockingIOError:
            return
        except OSError:  # ECONNRESET: the peer reset
            self.stop_reading(d)
            self.schedule(d, "rst")
            return
        if data:
            self.schedule(d, "data", data)
            return
        self.stop_reading(d)
        self.schedule(d, "fin")

    def stop_reading(self, d):
        if d.reading:
            d.reading = False
            try:
                self.sel.unregister(d.src)
            except (KeyError, ValueError):
                pass

    def flush(self, pair, d):
        now = time.monotonic()
        while d.queue and d.queue[0][0] <= now and not pair.closed:
            _, kind, data = d.queue[0]
            if kind == "data":
                try:
                    n = d.dst.send(data)
                except BlockingIOError:
                    n = 0
                except OSError:  # the other side is gone: the client hears an RST, as from the server itself
                    self.reset(pair)
                    return
                if n < len(data):
                    d.queue[0][2] = data[n:]
                    heapq.heappush(self.timers, (now + 0.001, next(self.seq), d))  # the rest, a moment later
                    return
            elif kind == "fin":
                try:
                    d.dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                d.done = True
            else:
                self.reset(pair)
                return
            d.queue.pop(0)
        if pair.up.done and pair.down.done:
            self.close(pair)

    def reset(self, pair):
        for s in (pair.up.src, pair.down.src):
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.close(pair)

    def close(self, pair):
        if pair.closed:
            return
        pair.closed = True
        for d in (pair.up, pair.down):
            self.stop_reading(d)
            try:
                d.src.close()
            except OSError:
                pass

    def run(self, max_seconds):
        end = time.monotonic() + max_seconds
        while time.monotonic() < end:
            wait = 0.2
            if self.timers:
                wait = max(0.0, min(wait, self.timers[0][0] - time.monotonic()))
            for key, _ in self.sel.select(wait):
                if key.data is None:
                    self.accept()
                else:
                    self.read(*key.data)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, d = heapq.heappop(self.timers)
                if not d.pair.closed:
                    self.flush(d.pair, d)


def rst(c):
    try:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        c.close()


class Relay:
    """Runs relay.py in its own process (its timing is then not shared with the test's threads) in front of
    127.0.0.1:`target`; `.port` is where to connect. Stopped by PID: stop(), or at most `max_seconds` later by
    itself."""

    def __init__(self, target, delay=0.002, max_seconds=600):
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "relay.py"), "--target", str(target),
                                      "--delay", str(delay), "--max-seconds", str(max_seconds)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError("relay did not start: %r" % line)
        self.port = int(line.split()[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", type=int, required=True)
    ap.add_argument("--delay", type=float, default=0.002)
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    loop = RelayLoop(a.target, a.delay, a.port)
    print("PORT %d" % loop.port, flush=True)
    loop.run(a.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
