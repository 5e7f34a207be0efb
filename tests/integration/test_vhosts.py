"""Virtual hosts (issue 11): [vhost NAME] with server_name, [route VHOST PREFIX], the default virtual host,
selection by Host / absolute-form / HTTP/2 :authority, 421 when TLS SNI and Host name different virtual hosts
(RFC 9110 15.5.20), the trailing-slash 301, and the upstream max_connections default.

Each upstream is its own in-process origin; which one served a request is read from its request count.
"""

import socket
import ssl
import subprocess

import pytest

from conftest import SLOW, TETHER_BIN
from proxy_util import addr, clean_tether, origins, procs  # noqa: F401
from tls_util import certs, tls_args, tls_port  # noqa: F401

VHOSTS = """
[upstream a]
server = A
[upstream b]
server = B
[upstream c]
server = C
[upstream d]
server = D

[vhost alpha]
server_name = a.example www.a.example
[vhost wild]
server_name = *.b.example
[vhost deeper]
server_name = *.x.b.example

[route alpha /]
upstream = a
[route wild /]
upstream = b
[route deeper /]
upstream = c
[route /]
upstream = d
"""


@pytest.fixture
def vhosts(clean_tether, origins):
    def start(config=VHOSTS, args=()):
        o = {k: origins() for k in "abcd"}
        text = config
        for k, v in o.items():
            text = text.replace("server = %s\n" % k.upper(), "server = %s\n" % addr(v))
        t = clean_tether("--workers", "1", *args, config=text)
        return t, o
    return start


def served_by(o, fn):
    """Runs fn(); returns the names of the origins whose request count grew."""
    before = {k: v.stats["requests"] for k, v in o.items()}
    fn()
    return sorted(k for k, v in o.items() if v.stats["requests"] != before[k])


def get(t, host, path="/", raw_target=None):
    c = t.connect()
    try:
        target = raw_target or path
        if host is None:
            c.send(("GET %s HTTP/1.0\r\n\r\n" % target).encode())
        else:
            c.send(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (target, host)).encode())
        return c.response()
    finally:
        c.close()


@pytest.mark.parametrize("host,want", [
    ("a.example", "a"),
    ("A.Example:8080", "a"),          # case and port ignored
    ("www.a.example.", "a"),          # a final dot too
    ("z.b.example", "b"),             # wildcard
    ("q.z.b.example", "b"),           # a wildcard covers deeper names
    ("y.x.b.example", "c"),           # the longest wildcard wins
    ("b.example", "d"),               # "*.b.example" does not cover b.example itself
    ("unknown.test", "d"),            # no vhost: the routes without one (the default)
    ("127.0.0.1", "d"),
])
def test_host_selects_the_vhost(vhosts, host, want):
    t, o = vhosts()
    r = []
    assert served_by(o, lambda: r.append(get(t, host))) == [want]
    assert r[0].status == 200


def test_no_host_gets_the_default_and_absolute_form_wins_over_host(vhosts):
    t, o = vhosts()
    assert served_by(o, lambda: get(t, None)) == ["d"]
    # RFC 9112 3.2.2: the absolute-form target's authority replaces Host
    assert served_by(o, lambda: get(t, "unknown.test", raw_target="http://www.a.example/x")) == ["a"]


def test_default_on_takes_unknown_names_and_the_unnamed_routes(vhosts):
    config = VHOSTS.replace("[vhost wild]\n", "[vhost wild]\ndefault = on\n").replace(
        "[route /]\nupstream = d", "[route /only-unnamed/]\nupstream = d")
    t, o = vhosts(config)
    assert served_by(o, lambda: get(t, "unknown.test")) == ["b"]
    assert served_by(o, lambda: get(t, "a.example")) == ["a"]
    # routes without a vhost join the default one
    assert served_by(o, lambda: get(t, "unknown.test", "/only-unnamed/x")) == ["d"]
    # ... and only that one
    assert served_by(o, lambda: get(t, "a.example", "/only-unnamed/x")) == ["a"]


def test_h2_authority_selects_the_vhost(vhosts):
    t, o = vhosts()
    url = "http://127.0.0.1:%d/" % t.port
    for host, want in (("a.example", "a"), ("k.b.example", "b"), ("nothing.test", "d")):
        def run():
            p = subprocess.run(["curl", "-sS", "--max-time", str(int(20 * SLOW)), "--http2-prior-knowledge",
                                "-o", "/dev/null", "-w", "%{http_code} %{http_version}", "-H", "Host: " + host, url],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30 * SLOW)
            assert p.stdout.decode() == "200 2", p.stderr
        assert served_by(o, run) == [want], host


def tls_request(port, sni, host):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
    s = ctx.wrap_socket(raw, server_hostname=sni)
    try:
        s.sendall(("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return int(data.split(b" ", 2)[1])
    finally:
        s.close()


def test_tls_sni_and_host_must_agree(vhosts, certs):
    t, o = vhosts(args=tls_args(certs))
    port = tls_port(t)
    assert served_by(o, lambda: tls_request(port, "a.example", "a.example")) == ["a"]
    assert served_by(o, lambda: tls_request(port, "z.b.example", "q.b.example")) == ["b"]  # same vhost: fine
    codes = []
    assert served_by(o, lambda: codes.append(tls_request(port, "a.example", "z.b.example"))) == []
    assert codes == [421]
    # an SNI no vhost lists selects the default, which is not a.example's
    codes.clear()
    assert served_by(o, lambda: codes.append(tls_request(port, "unknown.test", "a.example"))) == []
    assert codes == [421]


def test_tls_sni_and_authority_disagree_on_h2(vhosts, certs):
    t, o = vhosts(args=tls_args(certs))
    url = "https://a.example:%d/" % tls_port(t)
    p = subprocess.run(["curl", "-sS", "-k", "--max-time", str(int(20 * SLOW)), "--http2", "--resolve",
                        "a.example:%d:127.0.0.1" % tls_port(t), "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                        "-H", "Host: z.b.example", url],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30 * SLOW)
    assert p.stdout.decode() == "421 2", p.stderr


TRAILING = """
[upstream a]
server = A
[upstream b]
server = B
[route /app/]
upstream = a
[route /]
upstream = b
[route /exact]
upstream = a
[route /exact/]
upstream = b
"""


def test_trailing_slash_redirect(vhosts):
    t, o = vhosts(TRAILING)
    r = []
    assert served_by(o, lambda: r.append(get(t, "x", "/app?q=1&r=2"))) == []
    assert r[0].status == 301
    assert r[0].header("Location") == "/app/?q=1&r=2"
    assert served_by(o, lambda: get(t, "x", "/app/")) == ["a"]
    assert served_by(o, lambda: get(t, "x", "/apple")) == ["b"]
    # a route that is exactly the path takes it: no redirect
    assert served_by(o, lambda: get(t, "x", "/exact")) == ["a"]


def check_config(tmp_path, text):
    path = tmp_path / "bad.ini"
    path.write_text(text)
    p = subprocess.run([TETHER_BIN, "serve", "--check", "--config", str(path)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30 * SLOW)
    assert p.returncode != 0
    return p.stderr.decode()


def test_vhost_config_errors(tmp_path):
    err = check_config(tmp_path, "[vhost two]\nserver_name = a.example b:80\n[route two /]\nroot = /\n")
    assert "bad.ini:2: server_name: expected host names" in err, err
    err = check_config(tmp_path, """[upstream a]
server = 127.0.0.1:9
[vhost one]
server_name = a.example
default = on
[vhost two]
server_name = A.example
[vhost three]
default = on
[vhost four]
[route nosuch /]
upstream = a
""")
    assert "bad.ini:6: [vhost two]: server_name a.example is also in [vhost one]" in err, err
    assert "bad.ini:8: [vhost three]: default = on, but [vhost one] (line 3) is the default already" in err, err
    assert "bad.ini:10: [vhost four]: needs server_name" in err, err
    assert "bad.ini:11: [route nosuch /]: no [vhost nosuch] section" in err, err


def test_upstream_max_connections_is_limited_by_default(clean_tether, origins):
    """max_connections per upstream server defaults to 1024 for the whole process, split over the workers
    (ceil(1024 / workers) each); an explicit value stays per worker, 0 still means no limit."""
    o = origins()
    conf = "[upstream a]\nserver = %s\n%s[route /]\nupstream = a\n"
    for workers, extra, want in (("1", "", 1024), ("3", "", 1026), ("2", "max_connections = 10\n", 20),
                                 ("1", "max_connections = 0\n", 0)):
        t = clean_tether("--workers", workers, config=conf % (addr(o), extra))
        m = t.metrics()
        assert m.get('tether_upstream_max_connections{upstream="a",server="%s"}' % addr(o)) == want, (workers, extra)
        assert t.stop() == 0
