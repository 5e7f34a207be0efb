"""TLS helpers for the TLS and HTTP/2 suites (test_tls.py, test_h2.py).

`certs` (fixture) makes a throw-away CA and leaf certificates with the `openssl` CLI in the test's
tmp_path (nothing is committed; keys exist only for the test):

  * ca      -- the CA (certs.ca is the PEM path to give clients as --cacert / cafile)
  * main    -- CN=localhost, SAN DNS:localhost, IP:127.0.0.1   (the default certificate)
  * other   -- CN=other.test, SAN DNS:other.test                 (a second one, chosen by SNI)
  * new     -- CN=localhost-new, SAN DNS:localhost, IP:127.0.0.1 (the replacement for the SIGHUP test)

Each leaf is a `Leaf` with .cert, .key (paths), .serial (hex, upper case) and .cn. Also: small h2 and
TLS client helpers (a raw HTTP/2 connection driven by the `h2` package over a plain or TLS socket) and
peer-certificate inspection with `openssl s_client`.
"""

import os
import re
import socket
import ssl
import subprocess
import time

import pytest

from conftest import SLOW, HttpConn

OPENSSL = "openssl"


class Leaf:
    def __init__(self, cert, key, serial, cn):
        self.cert = cert
        self.key = key
        self.serial = serial
        self.cn = cn

    def __repr__(self):
        return "<Leaf %s serial=%s>" % (self.cn, self.serial)


def _run(args, cwd):
    p = subprocess.run(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(args), p.stderr.decode(errors="replace")))
    return p.stdout.decode(errors="replace")


class CertFactory:
    def __init__(self, directory):
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.ca = os.path.join(self.dir, "ca.pem")
        self.ca_key = os.path.join(self.dir, "ca.key")
        self._serial = 0x1000 + (os.getpid() & 0xFFF) * 16
        _run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", self.ca_key, "-out", self.ca, "-days", "2", "-subj", "/CN=tether test CA",
              "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
             self.dir)

    def leaf(self, name, cn, sans):
        """A leaf signed by the CA: `sans` like ["DNS:localhost", "IP:127.0.0.1"]."""
        self._serial += 1
        serial = "%X" % self._serial
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        cert = os.path.join(self.dir, name + ".pem")
        ext = os.path.join(self.dir, name + ".ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth\nsubjectAltName=%s\n" % ",".join(sans))
        _run([OPENSSL, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", key, "-out", csr, "-subj", "/CN=%s" % cn], self.dir)
        _run([OPENSSL, "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-set_serial",
              "0x" + serial, "-days", "2", "-extfile", ext, "-out", cert], self.dir)
        return Leaf(cert, key, serial, cn)


class Certs:
    def __init__(self, directory):
        f = CertFactory(directory)
        self.factory = f
        self.dir = f.dir
        self.ca = f.ca
        self.main = f.leaf("main", "localhost", ["DNS:localhost", "IP:127.0.0.1"])
        self.other = f.leaf("other", "other.test", ["DNS:other.test"])
        self.new = f.leaf("new", "localhost-new", ["DNS:localhost", "IP:127.0.0.1"])


@pytest.fixture
def certs(tmp_path):
    return Certs(tmp_path / "pki")


def tls_args(certs, leaf=None):
    leaf = leaf or certs.main
    return ["--tls-listen", "127.0.0.1:0", "--tls-cert", leaf.cert, "--tls-key", leaf.key]


def tls_port(t):
    """The first https listener's port."""
    for (host, port), scheme in zip(t.listen, t.schemes):
        if scheme == "https":
            return port
    raise AssertionError("no https listener in %r" % (t.schemes,))


def plain_port(t):
    for (host, port), scheme in zip(t.listen, t.schemes):
        if scheme == "http":
            return port
    raise AssertionError("no http listener in %r" % (t.schemes,))


# ---- clients ----

def client_context(certs, alpn=("h2", "http/1.1"), min_version=None, max_version=None):
    ctx = ssl.create_default_context(cafile=certs.ca)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def tls_connect(certs, port, alpn=("http/1.1",), server_name="localhost", timeout=5, **kw):
    """A verified TLS socket to 127.0.0.1:port."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client_context(certs, alpn=alpn, **kw).wrap_socket(raw, server_hostname=server_name)


def s_client(port, *args, stdin=b"", timeout=15):
    """Runs `openssl s_client -connect 127.0.0.1:port ARGS`; returns (returncode, stdout+stderr text)."""
    argv = [OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port] + list(args)
    p = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout * SLOW)
    return p.returncode, p.stdout.decode(errors="replace")


def peer_cert_fields(port, server_name=None, extra=()):
    """(subject CN, serial hex upper) of the certificate the server presents (via s_client | x509)."""
    args = ["-showcerts"] + (["-servername", server_name] if server_name else ["-noservername"]) + list(extra)
    rc, out = s_client(port, *args)
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    assert m, "no certificate from the server (rc=%s):\n%s" % (rc, out[-2000:])
    return cert_fields(m.group(0))


def cert_fields(pem):
    p = subprocess.run([OPENSSL, "x509", "-noout", "-subject", "-serial"], input=pem.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    text = p.stdout.decode()
    cn = re.search(r"CN\s*=\s*([^,\n/]+)", text).group(1).strip()
    serial = re.search(r"serial=([0-9A-Fa-f]+)", text).group(1).upper().lstrip("0")
    return cn, serial


def der_fields(der):
    return cert_fields(ssl.DER_cert_to_PEM_cert(der))


def curl(*args, timeout=30):
    """Runs curl -sS ARGS; returns CompletedProcess (stdout bytes)."""
    argv = ["curl", "-sS", "--max-time", str(int(20 * SLOW))] + list(args)
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout * SLOW)


# ---- a frame-level HTTP/2 client ----

class H2Conn:
    """One HTTP/2 connection driven by the `h2` package: plain (prior knowledge) or TLS (ALPN h2).

    Events are collected in self.events (in order); `pump()` reads what the server sent. With
    auto_ack=False, PINGs from the server are not acknowledged (the h2 package would otherwise ACK them)."""

    def __init__(self, port, tls_certs=None, timeout=5, auto_ack=True, settings=None):
        import h2.config
        import h2.connection
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls_certs is not None:
            ctx = client_context(tls_certs, alpn=("h2",))
            self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
            assert self.sock.selected_alpn_protocol() == "h2", self.sock.selected_alpn_protocol()
        else:
            self.sock = raw
        self.sock.settimeout(timeout * SLOW)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.auto_ack = auto_ack
        self.h2 = h2.connection.H2Connection(config=cfg)
        self.h2.initiate_connection()
        if settings:
            self.h2.update_settings(settings)
        self.events = []
        self.streams = {}
        self.closed = False  # the server closed (EOF or reset)
        self.raw_frames = []  # (type, flags, stream_id, payload) of every frame received (parsed by hand)
        self._rawbuf = b""
        self.flush()

    def flush(self):
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data):
        self.sock.sendall(data)

    def _record_raw(self, data):
        self._rawbuf += data
        while len(self._rawbuf) >= 9:
            n = int.from_bytes(self._rawbuf[:3], "big")
            if len(self._rawbuf) < 9 + n:
                break
            typ, flags = self._rawbuf[3], self._rawbuf[4]
            sid = int.from_bytes(self._rawbuf[5:9], "big") & 0x7FFFFFFF
            self.raw_frames.append((typ, flags, sid, self._rawbuf[9:9 + n]))
            self._rawbuf = self._rawbuf[9 + n:]

    def pump(self, timeout=None):
        """Reads once (waiting up to `timeout`); returns the new events ([] on timeout)."""
        import h2.events
        import h2.exceptions
        if self.closed:
            return []
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return []
        except ssl.SSLError:
            self.closed = True
            return []
        except (ConnectionResetError, BrokenPipeError, OSError):
            self.closed = True
            return []
        finally:
            self.sock.settimeout(5 * SLOW)
        if not data:
            self.closed = True
            return []
        self._record_raw(data)
        try:
            evs = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            # the server's GOAWAY may arrive while the h2 state machine is already closed
            evs = [e]
        for ev in evs:
            # give flow-control credit back for everything received (a client that reads at once)
            if isinstance(ev, h2.events.DataReceived) and ev.flow_controlled_length:
                try:
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                except h2.exceptions.ProtocolError:
                    pass
        out = self.h2.data_to_send()
        if not self.auto_ack:
            out = drop_ping_acks(out)  # h2 queues PING ACKs by itself: never let them out
        try:
            if out:
                self.sock.sendall(out)
        except OSError:
            pass
        self.events.extend(evs)
        for ev in evs:
            self._track(ev)
        return evs

    def wait_for(self, pred, timeout=5):
        """Pumps until pred(event) holds for some new event; returns it (None on close/timeout)."""
        deadline = time.monotonic() + timeout * SLOW
        for ev in list(self.events):
            if pred(ev):
                return ev
        while time.monotonic() < deadline and not self.closed:
            for ev in self.pump(max(0.01, deadline - time.monotonic())):
                if pred(ev):
                    return ev
        return None

    def wait_closed(self, timeout=5):
        """Pumps until the server closes; returns seconds taken or None."""
        start = time.monotonic()
        deadline = start + timeout * SLOW
        while time.monotonic() < deadline and not self.closed:
            self.pump(max(0.01, deadline - time.monotonic()))
        return time.monotonic() - start if self.closed else None

    def request(self, path, method="GET", headers=(), body=None, end=True, authority="localhost"):
        sid = self.h2.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", "https" if isinstance(self.sock, ssl.SSLSocket)
                                                                  else "http"), (":authority", authority)]
        hdrs += list(headers)
        self.h2.send_headers(sid, hdrs, end_stream=(body is None and end))
        if body is not None:
            self.send_body(sid, body, end=end)
        self.flush()
        return sid

    def send_body(self, sid, body, end=True):
        """Sends `body` on stream `sid`, honouring flow control (pumps for WINDOW_UPDATEs)."""
        off = 0
        deadline = time.monotonic() + 30 * SLOW
        while off < len(body):
            win = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if win <= 0:
                assert time.monotonic() < deadline, "no flow-control credit from the server"
                self.flush()
                self.pump(1)
                assert not self.closed, "server closed while sending the body"
                continue
            piece = body[off:off + win]
            self.h2.send_data(sid, piece)
            off += len(piece)
            self.flush()
        if end:
            self.h2.end_stream(sid)
            self.flush()

    def response(self, sid, timeout=10):
        """Waits for stream `sid` to end: returns {headers, body, reset, ended, trailers} or raises."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            st = self.streams.get(sid)
            if st is not None and (st["ended"] or st["reset"] is not None):
                return self.stream_state(sid)
            if self.closed or time.monotonic() > deadline:
                st = self.stream_state(sid)
                st["body"] = st["body"][:200]
                raise AssertionError("stream %d did not finish (closed=%s): %r" % (sid, self.closed, st))
            self.pump(max(0.01, deadline - time.monotonic()))

    def stream_state(self, sid):
        st = self.streams.get(sid)
        if st is None:
            return {"headers": None, "body": b"", "reset": None, "ended": False, "trailers": None}
        return dict(st, body=b"".join(st["body"]))

    def _track(self, ev):
        import h2.events
        sid = getattr(ev, "stream_id", None)
        if sid is None:
            return
        st = self.streams.setdefault(sid, {"headers": None, "body": [], "reset": None, "ended": False,
                                           "trailers": None})
        if isinstance(ev, h2.events.ResponseReceived):
            st["headers"] = dict(ev.headers)
        elif isinstance(ev, h2.events.DataReceived):
            st["body"].append(ev.data)
        elif isinstance(ev, h2.events.TrailersReceived):
            st["trailers"] = dict(ev.headers)
        elif isinstance(ev, h2.events.StreamEnded):
            st["ended"] = True
        elif isinstance(ev, h2.events.StreamReset):
            st["reset"] = ev.error_code

    def ack_data(self, sid, n):
        """Returns flow-control credit for `n` received bytes (connection and stream)."""
        self.h2.acknowledge_received_data(n, sid)
        self.flush()

    def goaways(self):
        """GOAWAY frames received, as (last_stream_id, error_code), from the raw frame record."""
        out = []
        for typ, flags, sid, payload in self.raw_frames:
            if typ == 7:
                out.append((int.from_bytes(payload[:4], "big") & 0x7FFFFFFF, int.from_bytes(payload[4:8], "big")))
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def split_frames(data):
    """Whole frames in `data`, as (type, flags, stream_id, payload)."""
    out = []
    while len(data) >= 9:
        n = int.from_bytes(data[:3], "big")
        out.append((data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF, data[9:9 + n]))
        data = data[9 + n:]
    return out


def drop_ping_acks(data):
    if data.startswith(PREFACE):
        return PREFACE + drop_ping_acks(data[len(PREFACE):])
    return b"".join(frame(t, f, sid, p) for t, f, sid, p in split_frames(data) if not (t == PING and f & 1))


def frame(typ, flags, sid, payload=b""):
    """One raw HTTP/2 frame."""
    return len(payload).to_bytes(3, "big") + bytes([typ, flags]) + (sid & 0x7FFFFFFF).to_bytes(4, "big") + payload


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GOAWAY, PING, RST_STREAM, SETTINGS, HEADERS, DATA, WINDOW_UPDATE = 7, 6, 3, 4, 1, 0, 8
NO_ERROR, PROTOCOL_ERROR, ENHANCE_YOUR_CALM = 0, 1, 11


@pytest.fixture
def h2conns():
    """Factory of H2Conn; every one is closed at teardown."""
    opened = []

    def open_(*a, **kw):
        c = H2Conn(*a, **kw)
        opened.append(c)
        return c

    yield open_
    for c in opened:
        c.close()


# ---- a raw HTTP/2 client (frames by hand, HPACK by the hpack package) ----

class RawH2:
    """A minimal HTTP/2 client that keeps reading after GOAWAY (the h2 package's state machine refuses any
    frame after the first GOAWAY, so it cannot follow the two-step GOAWAY of RFC 9113 6.8).

    self.frames: every frame received, as (time, type, flags, stream_id, payload), in order.
    self.sent: every frame sent, likewise. SETTINGS are ACKed; PINGs are ACKed when auto_ack_ping."""

    def __init__(self, port, tls_certs=None, timeout=5, auto_ack_ping=True, settings=()):
        import hpack
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tls = tls_certs is not None
        if self.tls:
            self.sock = client_context(tls_certs, alpn=("h2",)).wrap_socket(raw, server_hostname="localhost")
            assert self.sock.selected_alpn_protocol() == "h2"
        else:
            self.sock = raw
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.auto_ack_ping = auto_ack_ping
        self.frames = []
        self.sent = []
        self.streams = {}
        self.server_settings = {}
        self.next_sid = 1
        self.closed = False
        self.buf = b""
        self._hdr_sid = None
        self._hdr_block = b""
        self._hdr_flags = 0
        payload = b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in settings)
        self.sock.sendall(PREFACE)
        self.send(SETTINGS, 0, 0, payload)

    def send(self, typ, flags, sid, payload=b""):
        self.sent.append((time.monotonic(), typ, flags, sid, payload))
        self.sock.sendall(frame(typ, flags, sid, payload))

    def request(self, path, method="GET", headers=(), body=None, authority="localhost"):
        sid = self.next_sid
        self.next_sid += 2
        block = self.enc.encode([(":method", method), (":scheme", "https" if self.tls else "http"),
                                 (":path", path), (":authority", authority)] + list(headers))
        self.streams[sid] = {"headers": None, "body": b"", "ended": False, "reset": None, "trailers": None}
        self.send(HEADERS, 0x4 | (0x1 if body is None else 0), sid, block)
        if body is not None:  # small bodies only (within the initial windows)
            for i in range(0, max(len(body), 1), 16384):
                last = i + 16384 >= len(body)
                self.send(DATA, 0x1 if last else 0, sid, body[i:i + 16384])
        return sid

    def ping(self, data=b"rawping!"):
        self.send(PING, 0, 0, data)

    def pump(self, timeout=None):
        """Reads once (up to `timeout` s); returns the frames that arrived."""
        if self.closed:
            return []
        self.sock.settimeout(timeout if timeout is not None else 5 * SLOW)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return []
        except (ssl.SSLError, OSError):
            self.closed = True
            return []
        if not data:
            self.closed = True
            return []
        self.buf += data
        got = []
        while len(self.buf) >= 9:
            n = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + n:
                break
            f = (time.monotonic(), self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF,
                 self.buf[9:9 + n])
            self.buf = self.buf[9 + n:]
            self.frames.append(f)
            got.append(f)
            try:
                self._handle(*f[1:])
            except OSError:
                pass
        return got

    def _stream(self, sid):
        return self.streams.setdefault(sid, {"headers": None, "body": b"", "ended": False, "reset": None,
                                             "trailers": None})

    def _handle(self, typ, flags, sid, payload):
        if typ == SETTINGS and not flags & 1:
            for i in range(0, len(payload) - 5, 6):
                self.server_settings[int.from_bytes(payload[i:i + 2], "big")] = int.from_bytes(payload[i + 2:i + 6],
                                                                                                "big")
            self.send(SETTINGS, 1, 0)
        elif typ == PING and not flags & 1 and self.auto_ack_ping:
            self.send(PING, 1, 0, payload)
        elif typ in (HEADERS, 9):  # HEADERS, CONTINUATION
            if typ == HEADERS:
                pad = payload[0] if flags & 0x8 else 0
                body = payload[1:] if flags & 0x8 else payload
                if flags & 0x20:
                    body = body[5:]
                body = body[:len(body) - pad] if pad else body
                self._hdr_sid, self._hdr_block, self._hdr_flags = sid, body, flags
            else:
                self._hdr_block += payload
            if flags & 0x4:  # END_HEADERS
                st = self._stream(self._hdr_sid)
                fields = self.dec.decode(self._hdr_block)
                if st["headers"] is None:
                    st["headers"] = fields
                else:
                    st["trailers"] = fields
                if self._hdr_flags & 0x1:
                    st["ended"] = True
        elif typ == DATA:
            st = self._stream(sid)
            data = payload
            if flags & 0x8:
                data = payload[1:len(payload) - payload[0]]
            st["body"] += data
            if flags & 0x1:
                st["ended"] = True
            if payload:
                inc = len(payload).to_bytes(4, "big")
                self.send(WINDOW_UPDATE, 0, 0, inc)
                if not st["ended"]:
                    self.send(WINDOW_UPDATE, 0, sid, inc)
        elif typ == RST_STREAM:
            self._stream(sid)["reset"] = int.from_bytes(payload[:4], "big")

    def wait(self, pred, timeout=5):
        """Pumps until pred() holds; returns True, or False on close/timeout."""
        deadline = time.monotonic() + timeout * SLOW
        while not pred():
            if self.closed or time.monotonic() > deadline:
                return pred()
            self.pump(max(0.01, deadline - time.monotonic()))
        return True

    def wait_frame(self, typ, flags_mask=None, timeout=5, after=0):
        """The first frame of `typ` (ACK flag equal to flags_mask when given) at index >= after, or None."""
        def find():
            for i, f in enumerate(self.frames[after:], after):
                if f[1] == typ and (flags_mask is None or (f[2] & 1) == flags_mask):
                    return i
            return None
        self.wait(lambda: find() is not None, timeout)
        return find()

    def wait_closed(self, timeout=5):
        start = time.monotonic()
        self.wait(lambda: self.closed, timeout)
        return time.monotonic() - start if self.closed else None

    def response(self, sid, timeout=10):
        st = self.streams[sid]
        assert self.wait(lambda: st["ended"] or st["reset"] is not None, timeout), \
            "stream %d did not finish (closed=%s): %r" % (sid, self.closed, st)
        return st

    def status(self, sid):
        hdrs = dict(self.streams[sid]["headers"] or [])
        return int(hdrs[":status"]) if ":status" in hdrs else None

    def goaways(self):
        """[(index in self.frames, last_stream_id, error_code)]"""
        return [(i, int.from_bytes(p[:4], "big") & 0x7FFFFFFF, int.from_bytes(p[4:8], "big"))
                for i, (_, t, _, _, p) in enumerate(self.frames) if t == GOAWAY]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def raw_h2():
    """Factory of RawH2; all closed at teardown."""
    opened = []

    def open_(*a, **kw):
        c = RawH2(*a, **kw)
        opened.append(c)
        return c

    yield open_
    for c in opened:
        c.close()


# ---- a certificate chain: root CA -> intermediate CA -> leaf (for "a chain file works") ----

class ChainCerts:
    """A root CA, an intermediate CA it signs, and a leaf (CN=localhost, SAN DNS:localhost, IP:127.0.0.1)
    signed by the intermediate, made with the openssl CLI in `directory`:

      * root         -- PEM path of the root (the only thing a client trusts)
      * intermediate -- PEM path of the intermediate CA certificate
      * leaf         -- a Leaf: .cert is the leaf alone, .key its key
      * chain        -- PEM path of leaf + intermediate, leaf first (what tls_cert takes)
    """

    def __init__(self, directory):
        d = str(directory)
        os.makedirs(d, exist_ok=True)
        self.dir = d
        self.root, root_key = os.path.join(d, "root.pem"), os.path.join(d, "root.key")
        _run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", root_key, "-out", self.root, "-days", "2", "-subj", "/CN=tether test root CA",
              "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)
        self.intermediate, int_key = os.path.join(d, "intermediate.pem"), os.path.join(d, "intermediate.key")
        self._sign("intermediate", "tether test intermediate CA", self.root, root_key, 0x2001,
                   "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n")
        leaf_cert, leaf_key = self._sign("leaf", "localhost", self.intermediate, int_key, 0x2002,
                                         "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                         "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                         "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n")
        self.leaf = Leaf(leaf_cert, leaf_key, "2002", "localhost")
        self.chain = os.path.join(d, "chain.pem")
        with open(self.chain, "w") as out:
            for part in (leaf_cert, self.intermediate):
                with open(part) as f:
                    out.write(f.read())

    def _sign(self, name, cn, ca, ca_key, serial, ext_text):
        key, csr = os.path.join(self.dir, name + ".key"), os.path.join(self.dir, name + ".csr")
        cert, ext = os.path.join(self.dir, name + ".pem"), os.path.join(self.dir, name + ".ext")
        with open(ext, "w") as f:
            f.write(ext_text)
        _run([OPENSSL, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", key, "-out", csr, "-subj", "/CN=%s" % cn], self.dir)
        _run([OPENSSL, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-set_serial", "0x%X" % serial,
              "-days", "2", "-extfile", ext, "-out", cert], self.dir)
        return cert, key


@pytest.fixture
def chain_certs(tmp_path):
    return ChainCerts(tmp_path / "chain-pki")


# ---- HTTP/1.1 over TLS from Python (test_tls.py, test_tls_lifecycle.py) ----


def body_of(site, path):
    with open(os.path.join(str(site), path.lstrip("/")), "rb") as f:
        return f.read()


class TlsConn(HttpConn):
    """conftest.HttpConn over a verified TLS socket (ALPN http/1.1 unless told otherwise)."""

    def __init__(self, certs, port, alpn=("http/1.1",), server_name="localhost", timeout=5, **ctxkw):
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ctx = client_context(certs, alpn=alpn, **ctxkw)
        self.sock = ctx.wrap_socket(raw, server_hostname=server_name, suppress_ragged_eofs=False)
        self.buf = b""

    def close(self):
        """A clean client close: close_notify, then FIN (see close_bare for a FIN alone)."""
        try:
            self.sock.settimeout(1 * SLOW)
            self.sock = self.sock.unwrap()
        except (OSError, ValueError):
            pass
        self.close_bare()

    def close_bare(self):
        """FIN without close_notify (what many clients do)."""
        try:
            self.sock.close()
        except OSError:
            pass

    def peer(self):
        """(CN, serial) of the certificate this connection got."""
        return der_fields(self.sock.getpeercert(binary_form=True))

    def wait_closed_tls(self, timeout=10):
        """Waits for the server to close: (seconds, how) with how 'close_notify' (clean TLS close),
        'eof' (FIN without close_notify), 'reset', or (None, None) on timeout."""
        start = time.monotonic()
        self.sock.settimeout(timeout * SLOW)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return time.monotonic() - start, "close_notify"
                self.buf += chunk
        except socket.timeout:
            return None, None
        except ssl.SSLEOFError:
            return time.monotonic() - start, "eof"
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start, "reset"
        except ssl.SSLError as e:
            return time.monotonic() - start, "ssl_error: %s" % e


@pytest.fixture
def tls_conns(certs):
    opened = []

    def open_(port, **kw):
        c = TlsConn(certs, port, **kw)
        opened.append(c)
        return c

    yield open_
    for c in opened:
        c.close()
