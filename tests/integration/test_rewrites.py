"""Route rules (issue 11): strip_prefix, rewrite (PCRE2) of the forwarded path, request and response field rules,
the Location/Refresh rewrite of upstream redirects (nginx proxy_redirect default), and their config errors.

The origin echoes the request-line and fields it received (origin.py), so every test reads what the upstream got.
"""

import subprocess
import time
import urllib.parse

import pytest

from conftest import SLOW, TETHER_BIN
from proxy_util import addr, clean_tether, echo, field_values, origins  # noqa: F401


def routed(clean_tether, origins, route_keys, prefix="/api/", extra=""):
    o = origins()
    conf = "[upstream a]\nserver = %s\n%s[route %s]\nupstream = a\n%s\n" % (addr(o), extra, prefix, route_keys)
    return clean_tether("--workers", "1", config=conf), o


def get(t, path, host="front.example", headers=None):
    c = t.connect()
    try:
        c.request("GET", path, headers=headers, host=host)
        return c.response()
    finally:
        c.close()


def target(t, path, **kw):
    return echo(get(t, path, **kw))["target"]


# ---- the forwarded path ----

def test_strip_prefix(clean_tether, origins):
    t, o = routed(clean_tether, origins, "strip_prefix = on")
    assert target(t, "/api/x/y?a=1") == "/x/y?a=1"
    assert target(t, "/api/") == "/"
    t2, o2 = routed(clean_tether, origins, "strip_prefix = on", prefix="/api")
    assert target(t2, "/api") == "/"
    assert target(t2, "/api/v1") == "/v1"
    assert target(t2, "/apix") == "/x"


def test_without_strip_prefix_the_path_is_unchanged(clean_tether, origins):
    t, o = routed(clean_tether, origins, "")
    assert target(t, "/api/x?q") == "/api/x?q"


def test_rewrite_with_captures_keeps_the_query(clean_tether, origins):
    t, o = routed(clean_tether, origins, r"rewrite = ^/api/v(\d+)/(.*)$ /internal/$2?version=$1", prefix="/api/")
    assert target(t, "/api/v2/users/7") == "/internal/users/7?version=2"
    assert target(t, "/api/v2/users/7?page=3") == "/internal/users/7?version=2&page=3"
    # no match: unchanged
    assert target(t, "/api/other?z=1") == "/api/other?z=1"


def test_rewrite_applies_after_strip_prefix(clean_tether, origins):
    t, o = routed(clean_tether, origins, "strip_prefix = on\nrewrite = ^/(.*)$ /v1/$1")
    assert target(t, "/api/items") == "/v1/items"


def test_rewrite_to_something_not_a_path_is_a_500(clean_tether, origins):
    t, o = routed(clean_tether, origins, "rewrite = ^/api/(.*)$ $1")
    r = get(t, "/api/x")
    assert r.status == 500
    assert o.stats["requests"] == 0
    deadline = time.monotonic() + 5 * SLOW  # stderr is read by another thread
    while not any("rewritten path does not start with /" in line for line in t.stderr_lines):
        assert time.monotonic() < deadline, t.stderr()
        time.sleep(0.02)


def check_config(tmp_path, text):
    path = tmp_path / "bad.ini"
    path.write_text(text)
    p = subprocess.run([TETHER_BIN, "serve", "--check", "--config", str(path)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30 * SLOW)
    assert p.returncode != 0
    return p.stderr.decode()


def test_bad_regex_is_a_startup_error_with_file_and_line(tmp_path):
    err = check_config(tmp_path, "[upstream a]\nserver = 127.0.0.1:9\n[route /]\nupstream = a\nrewrite = ^/(a $1\n")
    assert "bad.ini:5: rewrite: bad regex ^/(a: missing closing parenthesis at offset 4" in err, err


def test_rule_errors(tmp_path):
    err = check_config(tmp_path, """[upstream a]
server = 127.0.0.1:9
[route /]
upstream = a
request_set_header = Connection close
request_add_header = Transfer-Encoding chunked
response_remove_header = Keep-Alive
request_set_header = Bad:Name x
request_add_header = X-A
request_remove_header = Host
response_set_header = Server me
proxy_redirect = sometimes
rewrite = ^/x$
[route /files/]
root = /
strip_prefix = on
""")
    assert "bad.ini:5: request_set_header: a hop-by-hop or framing field cannot be set" in err, err
    assert "bad.ini:6: request_add_header: a hop-by-hop" in err, err
    assert "bad.ini:7: response_remove_header: a hop-by-hop" in err, err
    assert "bad.ini:8: request_set_header: the field name must be a token" in err, err
    assert "bad.ini:9: request_add_header: expected NAME VALUE" in err, err
    assert "bad.ini:10: request_remove_header: Host can only be replaced" in err, err
    assert "bad.ini:11: response_set_header: Date and Server" in err, err
    assert "bad.ini:12: proxy_redirect: expected default or off" in err, err
    assert "bad.ini:13: rewrite: expected REGEX REPLACEMENT" in err, err
    err = check_config(tmp_path, "[route /files/]\nroot = /\nstrip_prefix = on\n")
    assert "bad.ini:3: [route /files/]: strip_prefix, rewrite" in err, err


# ---- field rules ----

def test_request_field_rules(clean_tether, origins):
    t, o = routed(clean_tether, origins, "\n".join([
        "request_set_header = X-Set replaced",
        "request_add_header = X-Add one",
        "request_add_header = X-Add two",
        "request_remove_header = X-Secret",
        "request_remove_header = X-Forwarded-For",
        "request_set_header = X-Who $remote_addr via $scheme for $host",
        "request_set_header = Host backend.internal",
    ]))
    e = echo(get(t, "/api/", host="front.example:8080",
                 headers={"X-Set": "original", "X-Add": "client", "X-Secret": "s3cret"}))
    assert field_values(e, "X-Set") == ["replaced"]
    assert field_values(e, "X-Add") == ["client", "one", "two"]
    assert field_values(e, "X-Secret") == []
    assert field_values(e, "X-Forwarded-For") == []  # tether's own forwarding fields can be removed too
    assert field_values(e, "X-Real-IP") == ["127.0.0.1"]
    assert field_values(e, "X-Who") == ["127.0.0.1 via http for front.example"]
    assert field_values(e, "Host") == ["backend.internal"]


def test_response_field_rules(clean_tether, origins):
    t, o = routed(clean_tether, origins, "\n".join([
        "response_set_header = X-Frame-Options DENY",
        "response_add_header = X-Served-By tether",
        "response_remove_header = X-Powered-By",
        "response_set_header = X-Host $host",
        "response_set_header = X-Client $remote_addr",
    ]))
    q = urllib.parse.urlencode([("hdr", "X-Powered-By:php"), ("hdr", "X-Frame-Options:SAMEORIGIN"),
                                ("hdr", "X-Served-By:origin")])
    r = get(t, "/api/x?" + q)
    assert r.status == 200
    assert r.header_all("X-Powered-By") == []
    assert r.header_all("X-Frame-Options") == ["DENY"]
    assert r.header_all("X-Served-By") == ["origin", "tether"]
    assert r.header_all("X-Host") == ["front.example"]
    assert r.header_all("X-Client") == ["127.0.0.1"]  # the client's address is kept for response rules
    # another route is untouched
    t2, o2 = routed(clean_tether, origins, "")
    assert get(t2, "/api/x?" + q).header_all("X-Powered-By") == ["php"]


# ---- redirects from the upstream (proxy_redirect default) ----

def redirect(t, o, location, status=302, path="/api/x", field="Location", host="front.example"):
    q = urllib.parse.urlencode([("status", str(status)), ("hdr", "%s:%s" % (field, location))])
    r = get(t, path + "?" + q, host=host)
    assert r.status == status, r
    return r.header(field)


def test_location_rewrite_with_strip_prefix(clean_tether, origins):
    t, o = routed(clean_tether, origins, "strip_prefix = on")
    up = "http://" + addr(o)
    assert redirect(t, o, up + "/login?next=%2F") == "http://front.example/api/login?next=%2F"
    assert redirect(t, o, up) == "http://front.example/api/"
    assert redirect(t, o, up + "/created", status=201) == "http://front.example/api/created"
    assert redirect(t, o, "http://elsewhere.example/x") == "http://elsewhere.example/x"
    assert redirect(t, o, "/relative") == "/relative"
    # another port of the same host is another origin
    assert redirect(t, o, up + "0/x") == up + "0/x"
    # the port the client used is kept
    assert redirect(t, o, up + "/a", host="front.example:8443") == "http://front.example:8443/api/a"
    # Refresh too (nginx rewrites both)
    assert redirect(t, o, "3; url=%s/later" % up, field="Refresh") == "3; url=http://front.example/api/later"
    # a 200's Location is left alone
    assert redirect(t, o, up + "/a", status=200) == up + "/a"


def test_location_rewrite_without_strip_prefix_and_off(clean_tether, origins):
    t, o = routed(clean_tether, origins, "")
    up = "http://" + addr(o)
    assert redirect(t, o, up + "/api/next") == "http://front.example/api/next"
    t2, o2 = routed(clean_tether, origins, "proxy_redirect = off\nstrip_prefix = on")
    up2 = "http://" + addr(o2)
    assert redirect(t2, o2, up2 + "/login") == up2 + "/login"


def test_location_rewrite_of_the_upstream_host_name(clean_tether, origins):
    o = origins()
    conf = ("[upstream a]\nserver = %s\nhost = backend.internal\n[route /app/]\nupstream = a\nstrip_prefix = on\n"
            % addr(o))
    t = clean_tether("--workers", "1", config=conf)
    assert redirect(t, o, "http://backend.internal/home", path="/app/") == "http://front.example/app/home"


def test_location_rewrite_with_rewrite_replaces_only_the_origin(clean_tether, origins):
    t, o = routed(clean_tether, origins, "strip_prefix = on\nrewrite = ^/(.*)$ /v1/$1")
    up = "http://" + addr(o)
    assert redirect(t, o, up + "/v1/next") == "http://front.example/v1/next"
