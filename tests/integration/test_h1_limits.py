"""Limits and defaults of `tether serve` seen from outside: bounded pipelining (the server stops reading
while responses wait unsent), the client send timeout, bad or oversized chunked content on a route that
reads it (the proxy), `--workers` defaulting to the CPUs tether may run on, `examples/tether.ini`, and a
`[route PREFIX]` with its own `root`.

Socket-level observations use `ss` (iproute2): Recv-Q of tether's side of a connection is request bytes
tether has not read, Send-Q is response bytes not yet taken by the client.
"""

import json
import os
import re
import select
import socket
import subprocess
import threading
import time

import pytest

from conftest import SLOW, SOURCE_DIR, HttpConn
from origin import Origin
from proxy_util import RawServer

# tether's constants (src/http/h1_conn.c): what stops reading while responses wait unsent
PIPELINE_MAX = 32   # responses queued and unsent
OUT_HIGH = 65536    # response bytes queued in memory
MAX_FILES = 4       # file (sendfile) responses queued
HEAD_MAX = 49152    # the input buffer's ceiling with the default limits (8k target + 32k fields + 8k)

# An Ethernet-sized MSS for the test client: tether's send buffer then grows to what it would be on a
# real network (~300 KB) instead of loopback's 4 MiB, so a few MB of traffic show every bound.
CLIENT_MSS = 1460


def ss_conn(local_port, peer_port):
    """(Recv-Q, Send-Q) of the established socket 127.0.0.1:local_port <-> :peer_port, or None."""
    out = subprocess.run(["ss", "-Htn", "state", "established",
                          "( sport = :%d and dport = :%d )" % (local_port, peer_port)],
                         capture_output=True, text=True, check=True).stdout.split()
    if not out:
        return None
    return int(out[0]), int(out[1])


def limited_client(port, rcvbuf=4096, sndbuf=32768):
    """A client socket with small buffers and an Ethernet MSS (set before connect, so they apply)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, CLIENT_MSS)
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


@pytest.fixture
def limited():
    """limited(port) -> a connected limited_client socket, closed at teardown."""
    opened = []

    def open_(port):
        s = limited_client(port)
        opened.append(s)
        return s

    yield open_
    for s in opened:
        s.close()


def wrap(sock):
    """An HttpConn (conftest's framing reader) around an already connected socket."""
    c = HttpConn.__new__(HttpConn)
    c.sock = sock
    c.buf = b""
    return c


# ---- 1. bounded pipelining ----

REQ_LEN = 4096  # every pipelined request is padded to this many bytes

PIPELINE_CASES = {
    # name: (file sizes, the bound that stops reading (in responses), what governs it)
    "count": ([100, 101, 102], PIPELINE_MAX),                   # small responses: 32 pending
    "memory": ([4096, 4097, 4098], -(-OUT_HIGH // 4300)),      # in-memory bodies: 64 KiB queued
    "sendfile": ([65536, 65537, 65538], MAX_FILES),            # sendfile bodies: 4 files queued
}


def padded_request(path):
    start = b"GET " + path + b" HTTP/1.1\r\nHost: t\r\nX-Pad: "
    pad = REQ_LEN - len(start) - 4
    return start + b"p" * pad + b"\r\n\r\n"


@pytest.mark.parametrize("case", list(PIPELINE_CASES), ids=list(PIPELINE_CASES))
def test_pipelining_stops_reading_while_responses_wait(tether, tmp_path, limited, case):
    """A client pipelines requests without reading any response: once its window and tether's send buffer
    are full, tether holds only a bounded number of requests and leaves the rest unread in the kernel
    (its Recv-Q stays > 0, the client's send blocks); then every response arrives, in order."""
    sizes, bound = PIPELINE_CASES[case]
    root = tmp_path / "pipe"
    root.mkdir()
    names, contents = [], []
    for i, n in enumerate(sizes):
        data = bytes([0x41 + i]) * n
        (root / ("f%d.bin" % i)).write_bytes(data)
        names.append(b"/f%d.bin" % i)
        contents.append(data)
    reqs = [padded_request(n) for n in names]
    assert all(len(r) == REQ_LEN for r in reqs)
    t = tether("--root", str(root), "--workers", "1", "--max-requests", "0")

    s = limited(t.port)
    cport = s.getsockname()[1]
    s.setblocking(False)
    stream = b"".join(reqs) * 64  # written over and over; the request sequence cycles through the files
    sent, off, cap = 0, 0, 64 << 20
    deadline = time.monotonic() + 30 * SLOW
    while True:
        while True:
            assert sent < cap, "tether read %d bytes of pipelined requests and never stopped" % sent
            try:
                n = s.send(stream[off:])
                sent += n
                off = (off + n) % len(stream)
                continue
            except BlockingIOError:
                pass
            # Blocked for now: tether may still be catching up. Blocked for good when no space comes back.
            _, w, _ = select.select([], [s], [], 0.5 * SLOW)
            if not w:
                break
        # Recv-Q of tether's socket: request bytes it has not read. It stays put once tether stopped reading.
        # Half a second without room is no proof on a busy machine (tether may just not have run): when its
        # queues still move, let the client send on, and look again -- until the deadline.
        first = ss_conn(t.port, cport)
        time.sleep(0.3 * SLOW)
        server = ss_conn(t.port, cport)
        client = ss_conn(cport, t.port)
        assert first is not None and server is not None and client is not None
        if server == first:
            break
        assert time.monotonic() < deadline, "tether kept reading or writing while blocked: %s then %s" % (first, server)
    assert server[0] >= REQ_LEN, "tether read every request (Recv-Q %d): reading was not bounded" % server[0]

    # Read everything back (a thread), finishing the last, partly written request meanwhile.
    total = -(-sent // REQ_LEN)
    got, errors = [], []

    def reader():
        c = wrap(s)
        try:
            for _ in range(total):
                got.append(c.response())
        except Exception as e:  # noqa: BLE001 -- reported below
            errors.append(e)

    s.setblocking(True)
    s.settimeout(10 * SLOW)
    th = threading.Thread(target=reader, daemon=True)
    th.start()
    if sent % REQ_LEN:
        s.sendall(stream[off:off + REQ_LEN - sent % REQ_LEN])
    th.join(30 * SLOW)
    assert not th.is_alive(), "responses stopped after %d of %d" % (len(got), total)
    bad = [(i, r.status) for i, r in enumerate(got) if r.status != 200 or r.body != contents[i % len(sizes)]]
    assert not errors and len(got) == total and not bad, \
        "%d of %d responses, error %r, first wrong ones (index, status) %s" % (len(got), total, errors, bad[:5])

    # How many requests tether held when it stopped: consumed from the socket, minus those whose responses
    # had (at least partly) gone into the kernel. Without a bound it would be everything it was sent.
    wire = [len(r.raw_head) + len(r.body) for r in got]
    in_kernel = server[1] + client[0]
    responded, at = 0, 0
    while responded < len(wire) and at < in_kernel:
        at += wire[responded]
        responded += 1
    consumed = (sent - server[0] - client[1]) // REQ_LEN
    held = consumed - responded
    limit = bound + HEAD_MAX // REQ_LEN + 1  # the bound, plus what one input buffer can hold unparsed
    assert 0 <= held <= limit, \
        "tether held %d requests (sent %d, consumed %d, answered into the kernel %d; ss tether %s client %s)" % (
            held, total, consumed, responded, server, client)
    assert t.closed("bad_request") == 0


def test_pipelined_burst_of_small_requests_is_answered(tether, site, conns):
    """2000 small requests in one write (68 KB, more than one input buffer): tether must answer them all, in
    order, pausing its reads as needed -- never refusing valid requests because they arrived together."""
    t = tether("--root", str(site), "--max-requests", "0")
    c = conns(t)
    paths = ["/100.txt", "/style.css", "/index.html"]
    bodies = [(site / p.lstrip("/")).read_bytes() for p in paths]
    n = 2000
    c.send(b"".join(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % paths[i % 3].encode() for i in range(n)))
    for i in range(n):
        try:
            r = c.response()
        except EOFError:
            raise AssertionError("connection closed after %d of %d responses" % (i, n))
        assert (r.status, r.body) == (200, bodies[i % 3]), "response %d of %d: %r" % (i + 1, n, r)
    assert c.is_open()
    assert t.closed("bad_request") == 0


# ---- 2. the client send timeout ----

def test_send_timeout_closes_a_client_that_stops_reading(tether, tmp_path, limited, conns):
    """A client asks for 8 MB and never reads: once tether's send buffer and the client's window are full,
    nothing moves, and --send-timeout 1s closes the connection (reason send_timeout); the response is cut,
    and another connection is served meanwhile."""
    root = tmp_path / "big"
    root.mkdir()
    size = 8 << 20
    (root / "8m.bin").write_bytes(b"z" * size)
    (root / "100.txt").write_bytes(b"x" * 99 + b"\n")
    t = tether("--root", str(root), "--send-timeout", "1s")
    s = limited(t.port)
    s.sendall(b"GET /8m.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    start = time.monotonic()  # after the request was sent: the send clock cannot start earlier
    other = conns(t)
    while time.monotonic() - start < 0.6:
        r = other.get("/100.txt")
        assert r.status == 200 and r.body == b"x" * 99 + b"\n"
        time.sleep(0.1)
        looked = time.monotonic() - start  # (the scrape below starts after this)
        if t.closed("send_timeout"):
            assert looked >= 1.0, "closed %.2f s after the request, before the send timeout of 1 s" % looked
            break
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, timeout=4, reason="send_timeout")
    took = time.monotonic() - start
    assert 1.0 <= took <= 1.0 + 2.0 * SLOW, took
    # The other connection was not touched, and still works.
    r = other.get("/100.txt")
    assert r.status == 200 and r.header("Connection") is None
    t.wait_metric("tether_connections_open", lambda v: v == 1)  # (one step after the close is counted)
    line = [l for l in t.access_lines(wait_for=2) if "/8m.bin" in l]
    assert len(line) == 1 and line[0].endswith(" send_timeout"), line
    assert int(line[0].split('" ')[1].split()[1]) < size, line  # bytes sent: the response was cut
    # On the wire: what tether had queued arrives, then the end -- short of the content.
    c = wrap(s)
    s.settimeout(10 * SLOW)
    head = c._read_until(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0] and b"Content-Length: %d" % size in head
    got = len(c.buf)
    c.buf = b""
    while True:
        try:
            chunk = s.recv(1 << 20)
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += len(chunk)
    assert got < size


# ---- 3. bad chunked content on a route that reads it ----

class Recorder:
    """An upstream that records every byte each connection sends it; it answers a request only once its
    content is complete (Content-Length, or chunked up to the last chunk)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.conns = []  # [bytearray, closed]
        self.answered = 0
        self.server = RawServer(self.handle)

    def handle(self, c):
        rec = [bytearray(), False]
        with self.lock:
            self.conns.append(rec)
        buf = b""
        try:
            while True:
                head, rest = recv_head_from(c, buf, rec)
                if head is None:
                    return
                buf = rest
                chunked = re.search(rb"(?i)\r\ntransfer-encoding:\s*chunked", head) is not None
                m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                need = int(m.group(1)) if m else 0
                while True:
                    if chunked and (buf.startswith(b"0\r\n\r\n") or b"\r\n0\r\n\r\n" in buf):
                        end = buf.index(b"0\r\n\r\n") + 5 if buf.startswith(b"0\r\n\r\n") else \
                            buf.index(b"\r\n0\r\n\r\n") + 7
                        buf = buf[end:]
                        break
                    if not chunked and len(buf) >= need:
                        buf = buf[need:]
                        break
                    data = c.recv(65536)
                    if not data:
                        return
                    rec[0] += data
                    buf += data
                with self.lock:
                    self.answered += 1
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        finally:
            rec[1] = True
            c.close()

    def stop(self):
        self.server.stop()


def recv_head_from(c, buf, rec):
    while b"\r\n\r\n" not in buf:
        data = c.recv(65536)
        if not data:
            return None, buf
        rec[0] += data
        buf += data
    i = buf.index(b"\r\n\r\n") + 4
    return buf[:i], buf[i:]


def response_or_crash(t, c):
    """The next response; if tether closed instead because it died, the failure says how."""
    try:
        return c.response()
    except (EOFError, ConnectionResetError):
        time.sleep(0.3 * SLOW)
        if t.proc.poll() is not None:
            lines = t.stderr_lines
            first = next((i for i, l in enumerate(lines) if "ERROR: AddressSanitizer" in l or "runtime error" in l), 0)
            raise AssertionError("tether died (status %s) instead of answering:\n%s" % (
                t.proc.returncode, "\n".join(lines[first:first + 14])))
        raise


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.stop()


POST_CHUNKED = b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"

BAD_CHUNKED = {
    # name: (pieces written with a pause between them, status)
    "bad_size_first": ([b"zz\r\nhello\r\n0\r\n\r\n"], 400),
    "bad_size_after_good_chunk": ([b"5\r\nhello\r\n", b"zz\r\nworld\r\n0\r\n\r\n"], 400),
    "bad_ext_no_name": ([b"5\r\nhello\r\n", b"5;=x\r\nworld\r\n0\r\n\r\n"], 400),
    "bad_ext_space_before_crlf": ([b"5;a=b \r\nhello\r\n0\r\n\r\n"], 400),
    "bad_ext_ctl": ([b"5\r\nhello\r\n", b"5;a\x01b\r\nworld\r\n0\r\n\r\n"], 400),
    "over_max_body": ([b"200\r\n" + b"a" * 0x200 + b"\r\n", b"400\r\n" + b"b" * 0x400 + b"\r\n0\r\n\r\n"], 413),
}


@pytest.mark.parametrize("name", list(BAD_CHUNKED), ids=list(BAD_CHUNKED))
def test_bad_chunked_content_on_proxy_route(tether, conns, recorder, name):
    """On a proxy route tether reads the content: bad chunk framing is 400, content past max_body_size 413;
    the connection closes (reason bad_request), another one keeps working, and the upstream never receives
    a complete request -- its connection is dropped mid-content."""
    pieces, status = BAD_CHUNKED[name]
    t = tether("--proxy", "http://127.0.0.1:%d" % recorder.server.port,
               config="[limits]\nmax_body_size = 1k\n")
    other = conns(t)
    other.send(POST_CHUNKED + b"3\r\nabc\r\n0\r\n\r\n")
    r = other.response()
    assert r.status == 200 and r.body == b"ok\n"
    assert recorder.answered == 1
    c = conns(t)
    c.send(POST_CHUNKED + pieces[0])
    if len(pieces) > 1:
        # the good part first reaches the upstream (a bounded poll; a sleep was too short on a busy machine)
        good = b"a" * 0x200 if status == 413 else b"hello"

        def forwarded():
            with recorder.lock:
                seen = b"".join(bytes(d) for d, _ in recorder.conns)
            return seen.count(b"POST /upload") == 2 and good in seen.split(b"POST /upload")[-1]

        deadline = time.monotonic() + 5 * SLOW
        while not forwarded():
            assert time.monotonic() < deadline, "the first chunk never reached the upstream"
            time.sleep(0.01)
    for p in pieces[1:]:
        c.send(p)
    r = response_or_crash(t, c)
    assert r.status == status, r
    assert r.header("Connection") == "close"
    assert r.header("X-Tether-Cause") is None  # tether's own refusal, not an upstream failure
    assert c.wait_closed(timeout=5) is not None
    c.close()
    t.wait_metric("tether_connections_closed_total", lambda v: v == 1, reason="bad_request")
    assert t.metric("tether_requests_total", **{"class": "4xx"}) == 1
    # The other connection still works, through the upstream.
    other.send(POST_CHUNKED + b"2\r\nde\r\n0\r\n\r\n")
    r = other.response()
    assert r.status == 200 and r.body == b"ok\n"
    assert other.is_open()
    # The upstream: exactly the two good requests were answered; every other request it saw was cut off by
    # tether closing the connection before the content ended, and the bad bytes never left tether.
    def unfinished():
        with recorder.lock:
            return [bytes(d) for d, closed in recorder.conns
                    if bytes(d).count(b"0\r\n\r\n") < bytes(d).count(b"POST ") and not closed]

    deadline = time.monotonic() + 3 * SLOW
    while unfinished() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not unfinished(), "an upstream connection holding a partial request was left open"
    assert recorder.answered == 2
    with recorder.lock:
        for data, _ in recorder.conns:
            data = bytes(data)
            assert b"zz" not in data and b";=x" not in data and b"a\x01b" not in data and b"a=b " not in data
            assert b"b" * 0x400 not in data  # the chunk that passed the limit was not forwarded
            assert data.count(b"0\r\n\r\n") <= 2
        seen = b"".join(bytes(d) for d, _ in recorder.conns)
    assert seen.count(b"POST /upload") >= 2
    if len(pieces) > 1:
        # the refused request had been forwarded in part (its head and first chunk), then cut off
        assert seen.count(b"POST /upload") == 3
        assert (b"a" * 0x200 if status == 413 else b"hello") in seen


# ---- 4. --workers defaults to the CPUs tether may run on ----

def listening_sockets(port):
    out = subprocess.run(["ss", "-Htln", "( sport = :%d )" % port], capture_output=True, text=True,
                         check=True).stdout
    return len([l for l in out.splitlines() if l.strip()])


def workers_logged(t):
    m = re.search(r"listening on http://\S+ \(workers=(\d+),", t.stderr())
    assert m, t.stderr()
    return int(m.group(1))


def test_workers_default_is_the_cpu_affinity_count(tether, site, conns):
    """No --workers: one worker per CPU this process may run on (sched_getaffinity), each with its own
    SO_REUSEPORT listening socket; pinned to one CPU, one worker."""
    cpus = sorted(os.sched_getaffinity(0))
    t = tether("--root", str(site))
    assert workers_logged(t) == len(cpus)
    assert listening_sockets(t.port) == len(cpus)
    assert conns(t).get("/100.txt").status == 200
    if len(cpus) < 2:
        return
    # The child inherits the affinity of the thread that starts it; restore ours right after.
    os.sched_setaffinity(0, {cpus[0]})
    try:
        t1 = tether("--root", str(site), ready=False)
    finally:
        os.sched_setaffinity(0, cpus)
    t1.wait_ready()
    assert workers_logged(t1) == 1
    assert listening_sockets(t1.port) == 1
    assert conns(t1).get("/100.txt").status == 200


# ---- 5. examples/tether.ini ----

EXAMPLE_INI = os.path.join(SOURCE_DIR, "examples", "tether.ini")
EXAMPLE_INDEX = os.path.join(SOURCE_DIR, "examples", "site", "index.html")


def test_example_config_serves_with_flags_overriding_its_addresses(tether, conns, monkeypatch):
    """examples/tether.ini as it is, run from the repository root as its header says; --listen and --metrics
    replace its fixed ports (8080, 8081, 9901). Its [keepalive] policy is applied."""
    monkeypatch.chdir(SOURCE_DIR)  # its root is examples/site, relative to the repository
    t = tether("--config", EXAMPLE_INI, "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0")
    assert len(t.listen) == 1  # the first --listen replaced every listener of the file
    assert t.proc.poll() is None
    c = conns(t)
    r = c.get("/")
    assert r.status == 200
    with open(EXAMPLE_INDEX, "rb") as f:
        assert r.body == f.read()
    assert r.header("Keep-Alive") == "timeout=5, max=999"
    # nothing to complain about, whatever the open file limit (max_connections is sized to it: issue 13)
    complaints = [l for l in t.stderr_lines if "[warn]" in l or "[error]" in l]
    assert complaints == []


def test_example_config_with_only_its_ports_rewritten(tether, conns, monkeypatch):
    """The same file with only its addresses made kernel-chosen (and IPv4 only): both listen groups come up
    with their own policy (the internal one: idle 65 s, unlimited requests)."""
    with open(EXAMPLE_INI) as f:
        text = f.read()
    lines = []
    for line in text.splitlines():
        m = re.match(r"^(address|listen)\s*=\s*(\S+)", line)
        if m and m.group(2).startswith("[::1]"):
            continue  # 127.0.0.1 only
        if m:
            line = "%s = 127.0.0.1:0" % m.group(1)
        lines.append(line)
    monkeypatch.chdir(SOURCE_DIR)
    t = tether(config="\n".join(lines) + "\n", expect_listeners=2)
    # listeners are logged in file order: [listen] first, then [listen internal]
    c = conns(t, index=0)
    r = c.get("/")
    assert r.status == 200 and r.header("Keep-Alive") == "timeout=5, max=999"
    internal = conns(t, index=1)
    r = internal.get("/")
    assert r.status == 200 and r.header("Keep-Alive") == "timeout=65"
    assert t.metrics_addr is not None


# ---- 6. [route PREFIX] with root = DIR ----

def test_route_with_its_own_root(tether, tmp_path, conns):
    """A proxy route at / and a static route /files/ with its own root: requests under /files/ are served
    from that directory with the prefix kept (/files/a.txt is DIR/files/a.txt, as nginx's `root`), never
    reach the upstream, and everything else is proxied."""
    origin = Origin(idle_timeout=30.0).start()
    try:
        d = tmp_path / "filesroot"
        (d / "files" / "sub").mkdir(parents=True)
        (d / "a.txt").write_text("stripped\n")
        (d / "files" / "a.txt").write_text("prefix kept\n")
        (d / "files" / "index.html").write_text("<h1>files</h1>\n")
        (d / "files" / "sub" / "b.css").write_text("b{}\n")
        config = ("[upstream app]\nserver = 127.0.0.1:%d\n\n[route /]\nupstream = app\n\n"
                  "[route /files/]\nroot = %s\n" % (origin.port, d))
        t = tether(config=config)
        c = conns(t)
        r = c.get("/files/a.txt")
        assert r.status == 200 and r.body == b"prefix kept\n"
        assert r.header("Content-Type") == "text/plain"
        r = c.get("/files/")
        assert r.status == 200 and r.body == b"<h1>files</h1>\n"
        r = c.get("/files/sub/b.css")
        assert r.status == 200 and r.body == b"b{}\n" and r.header("Content-Type") == "text/css"
        assert c.get("/files/nope.txt").status == 404
        r = c.get("/files/sub")
        assert r.status == 301 and r.header("Location").endswith("/files/sub/")
        assert origin.stats["requests"] == 0
        # outside the prefix: the upstream, path unchanged (also /files without the slash, and /a.txt)
        for path in ("/a.txt", "/files", "/api/x?q=1"):
            r = c.get(path)
            assert r.status == 200, (path, r)
            assert json.loads(r.body)["target"] == path
        assert origin.stats["requests"] == 3
    finally:
        origin.stop()
