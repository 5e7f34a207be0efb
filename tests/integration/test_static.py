"""The static handler: index files, redirects, types, validators, conditionals, ranges, sendfile, paths,
methods and the open-file cache."""

import email.utils
import os
import socket
import subprocess
import time

import pytest

from conftest import SLOW

HUNDRED = b"x" * 99 + b"\n"
FOURK = bytes(range(256)) * 16
ALLOW = "GET, HEAD, OPTIONS"


def etag_of(path):
    st = os.stat(path)
    return '"%x-%x"' % (int(st.st_mtime), st.st_size)


def http_date(ts):
    return email.utils.formatdate(int(ts), usegmt=True)


def common_fields(r):
    assert r.header("Server") == "tether", r
    date = r.header("Date")
    assert date, r
    parsed = email.utils.parsedate_to_datetime(date)
    assert abs(parsed.timestamp() - time.time()) < 5
    assert date == http_date(parsed.timestamp()), "Date is not an IMF-fixdate: %r" % date


@pytest.fixture
def srv(tether, site):
    (site / "data.json").write_text('{"a": 1}\n')
    return tether("--root", str(site))


# ---- index files, redirects, listings, 404 ----

def test_root_serves_index_html(srv, site, conns):
    c = conns(srv)
    r = c.get("/")
    assert r.status == 200
    assert r.body == (site / "index.html").read_bytes()
    assert r.header("Content-Type") == "text/html"
    common_fields(r)


def test_subdir_with_slash_serves_its_index(srv, conns):
    r = conns(srv).get("/sub/")
    assert r.status == 200 and r.body == b"<h1>sub</h1>\n"
    assert r.header("Content-Type") == "text/html"


@pytest.mark.parametrize("target,location", [
    ("/sub", "/sub/"),
    ("/sub?x=1", "/sub/?x=1"),
    ("/sub?x=1&y=a%20b", "/sub/?x=1&y=a%20b"),
    ("/noindex", "/noindex/"),
])
def test_directory_without_slash_redirects(srv, conns, target, location):
    r = conns(srv).get(target)
    assert r.status == 301, r
    assert r.header("Location") == location
    common_fields(r)


@pytest.mark.parametrize("target", ["//sub", "//sub?x=1", "///sub", "/.//sub"])
def test_redirect_is_never_protocol_relative(srv, conns, target):
    """"GET //sub" must not answer "Location: //sub/": a browser reads that as the host "sub"
    (an open redirect for any directory name that looks like a host)."""
    r = conns(srv).get(target)
    assert r.status == 301, r
    loc = r.header("Location")
    assert loc.startswith("/") and not loc.startswith("//"), "protocol-relative Location %r" % loc
    assert loc.split("?")[0].endswith("sub/")


def test_directory_without_index_is_403(srv, conns):
    c = conns(srv)
    r = c.get("/noindex/")
    assert r.status == 403
    assert b"file.txt" not in r.body
    assert r.body == b"403 Forbidden\n"
    common_fields(r)
    assert c.get("/noindex/file.txt").body == b"f\n"


@pytest.mark.parametrize("path", ["/missing.txt", "/sub/missing", "/100.txt/", "/nodir/x.txt"])
def test_missing_is_404(srv, conns, path):
    c = conns(srv)
    r = c.get(path)
    assert r.status == 404
    assert r.body == b"404 Not Found\n"
    assert r.header("Content-Type") == "text/plain"
    common_fields(r)
    assert c.is_open()


# ---- types, lengths, validators ----

@pytest.mark.parametrize("path,ctype", [
    ("/index.html", "text/html"),
    ("/style.css", "text/css"),
    ("/100.txt", "text/plain"),
    ("/4k.bin", "application/octet-stream"),
    ("/data.json", "application/json"),
])
def test_content_type_length_etag_last_modified(srv, site, conns, path, ctype):
    c = conns(srv)
    f = site / path.lstrip("/")
    r = c.get(path)
    assert r.status == 200
    assert r.header("Content-Type") == ctype
    assert r.header("Content-Length") == str(f.stat().st_size)
    assert r.body == f.read_bytes()
    assert r.header("ETag") == etag_of(f)
    assert r.header("Last-Modified") == http_date(f.stat().st_mtime)
    assert r.header("Accept-Ranges") == "bytes"
    common_fields(r)


@pytest.mark.parametrize("path", ["/100.txt", "/big.bin", "/", "/missing"])
def test_head_has_get_fields_and_no_body(srv, conns, path):
    c = conns(srv)
    g = c.get(path)
    c.request("HEAD", path)
    h = c.response(method="HEAD")
    assert h.status == g.status
    strip = lambda r: [(k, v) for k, v in r.headers if k.lower() not in ("date", "keep-alive")]  # noqa: E731
    assert strip(h) == strip(g)
    # no body bytes: the next response follows the head directly
    r = c.get("/style.css")
    assert r.status == 200 and r.body == b"body{}\n"


# ---- conditionals ----

@pytest.mark.parametrize("inm", [
    "{etag}",
    '"nope", {etag}',
    '"a","b",  {etag} ,"c"',
    "W/{etag}",
    '"x", W/{etag}',
    "*",
])
def test_if_none_match_gives_304(srv, site, conns, inm):
    c = conns(srv)
    etag = etag_of(site / "100.txt")
    r = c.get("/100.txt", headers={"If-None-Match": inm.format(etag=etag)})
    assert r.status == 304, r
    assert r.header("ETag") == etag
    assert r.header("Content-Length") is None
    common_fields(r)
    r = c.get("/style.css")  # proves the 304 carried no body
    assert r.status == 200 and r.body == b"body{}\n"


def test_if_none_match_other_tag_beats_if_modified_since(srv, site, conns):
    c = conns(srv)
    f = site / "100.txt"
    r = c.get("/100.txt", headers={"If-None-Match": '"other"',
                                   "If-Modified-Since": http_date(f.stat().st_mtime + 100)})
    assert r.status == 200 and r.body == HUNDRED


def test_if_modified_since(srv, site, conns):
    c = conns(srv)
    mtime = (site / "100.txt").stat().st_mtime
    for delta, status in ((0, 304), (3600, 304), (-1, 200), (-86400, 200)):
        r = c.get("/100.txt", headers={"If-Modified-Since": http_date(mtime + delta)})
        assert r.status == status, (delta, r)
        if status == 304:
            assert r.body == b"" and r.header("ETag") == etag_of(site / "100.txt")
        else:
            assert r.body == HUNDRED
    r = c.get("/100.txt", headers={"If-Modified-Since": "not a date"})
    assert r.status == 200


# ---- ranges ----

@pytest.mark.parametrize("spec,first,last", [
    ("bytes=0-9", 0, 9),
    ("bytes=-10", 4086, 4095),
    ("bytes=10-", 10, 4095),
    ("bytes=4000-99999", 4000, 4095),
    ("bytes=4095-4095", 4095, 4095),
    ("bytes=-99999", 0, 4095),
])
def test_single_range(srv, conns, spec, first, last):
    c = conns(srv)
    r = c.get("/4k.bin", headers={"Range": spec})
    assert r.status == 206, r
    assert r.header("Content-Range") == "bytes %d-%d/4096" % (first, last)
    assert r.header("Content-Length") == str(last - first + 1)
    assert r.body == FOURK[first:last + 1]
    common_fields(r)


@pytest.mark.parametrize("spec", ["bytes=0-1,5-6", "bytes=5-2", "items=0-1", "bytes=abc"])
def test_ignored_ranges_give_full_content(srv, conns, spec):
    r = conns(srv).get("/4k.bin", headers={"Range": spec})
    assert r.status == 200, r
    assert r.header("Content-Range") is None
    assert r.body == FOURK


@pytest.mark.parametrize("spec", ["bytes=4096-", "bytes=5000-6000"])
def test_unsatisfiable_range(srv, conns, spec):
    c = conns(srv)
    r = c.get("/4k.bin", headers={"Range": spec})
    assert r.status == 416
    assert r.header("Content-Range") == "bytes */4096"
    common_fields(r)
    assert c.get("/100.txt").status == 200


def test_if_range(srv, site, conns):
    c = conns(srv)
    f = site / "4k.bin"
    r = c.get("/4k.bin", headers={"Range": "bytes=0-9", "If-Range": etag_of(f)})
    assert r.status == 206 and r.body == FOURK[:10]
    r = c.get("/4k.bin", headers={"Range": "bytes=0-9", "If-Range": '"0-0"'})
    assert r.status == 200 and r.body == FOURK
    r = c.get("/4k.bin", headers={"Range": "bytes=0-9", "If-Range": http_date(f.stat().st_mtime)})
    assert r.status == 206 and r.body == FOURK[:10]
    r = c.get("/4k.bin", headers={"Range": "bytes=0-9", "If-Range": http_date(f.stat().st_mtime - 10)})
    assert r.status == 200 and r.body == FOURK


def test_head_ignores_range(srv, conns):
    c = conns(srv)
    c.request("HEAD", "/4k.bin", headers={"Range": "bytes=0-9"})
    r = c.response(method="HEAD")
    assert r.status == 200
    assert r.header("Content-Length") == "4096"
    assert r.header("Content-Range") is None
    assert c.get("/100.txt").body == HUNDRED


# ---- big files (sendfile) ----

def test_big_file_intact_with_pipelined_request(srv, site, conns):
    big = (site / "big.bin").read_bytes()
    c = conns(srv, timeout=20)
    c.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n"
           b"GET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=1000000-2000000\r\n\r\n"
           b"GET /100.txt HTTP/1.1\r\nHost: t\r\n\r\n")
    r = c.response()
    assert r.status == 200
    assert r.header("Content-Length") == str(len(big))
    assert r.body == big
    r = c.response()
    assert r.status == 206
    assert r.header("Content-Range") == "bytes 1000000-2000000/%d" % len(big)
    assert r.body == big[1000000:2000001]
    r = c.response()
    assert r.status == 200 and r.body == HUNDRED
    assert c.is_open()


def test_big_file_read_slowly(srv, site, conns):
    """A client that reads slowly still receives every byte (sendfile resumes after EAGAIN)."""
    big = (site / "big.bin").read_bytes()
    c = conns(srv, timeout=20)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    c.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=-1500000\r\n\r\nGET /4k.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.3)
    r = c.response()
    assert r.status == 206 and r.body == big[-1500000:]
    assert c.response().body == FOURK


# ---- paths ----

def test_percent_decoded_path(srv, conns):
    c = conns(srv)
    r = c.get("/sub/a%20b.txt")
    assert r.status == 200 and r.body == b"space\n"
    assert c.get("/%73ub/a%20b.txt").body == b"space\n"
    assert c.get("/sub/./a%20b.txt").body == b"space\n"
    assert c.get("//sub//a%20b.txt").body == b"space\n"


@pytest.mark.parametrize("target", [
    "/../etc/passwd",
    "/a/../../x",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/%2E%2e/x",
    "/sub/%2e%2e/%2e%2e/100.txt",
    "/x%2fy",
    "/x%2Fy",
    "/..%2f100.txt",
    "/%00",
    "/a%00b",
    "/bad%zz",
    "/trunc%2",
])
def test_path_refused_400(srv, conns, target):
    c = conns(srv)
    r = c.get(target)
    assert r.status == 400, r
    assert r.body == b"400 Bad Request\n"
    common_fields(r)


@pytest.fixture
def linked_site(tether, site, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    os.symlink("/etc/passwd", site / "passwd")
    os.symlink(str(outside), site / "outdir_abs")
    os.symlink("../outside", site / "outdir_rel")
    os.symlink("../outside/secret.txt", site / "secret_rel.txt")
    os.symlink("100.txt", site / "alias.txt")
    os.symlink("../100.txt", site / "sub" / "up.txt")
    os.symlink("sub", site / "subalias")
    return tether("--root", str(site))


@pytest.mark.parametrize("path", ["/passwd", "/outdir_abs/secret.txt", "/outdir_rel/secret.txt",
                                  "/secret_rel.txt", "/outdir_rel/"])
def test_symlink_out_of_root_is_404(linked_site, conns, path):
    c = conns(linked_site)
    r = c.get(path)
    assert r.status == 404, r
    assert b"secret" not in r.body and b"root:" not in r.body


@pytest.mark.parametrize("path,body", [
    ("/alias.txt", HUNDRED),
    ("/sub/up.txt", HUNDRED),
    ("/subalias/a%20b.txt", b"space\n"),
    ("/subalias/", b"<h1>sub</h1>\n"),
])
def test_symlink_inside_root_is_served(linked_site, conns, path, body):
    r = conns(linked_site).get(path)
    assert r.status == 200, r
    assert r.body == body


def test_absolute_symlink_inside_root_is_served(tether, site, conns):
    """README: only "symlinks leaving the root -> 404"; an absolute link to a file inside the root stays
    inside it."""
    os.symlink(str(site / "100.txt"), site / "abs.txt")
    t = tether("--root", str(site))
    r = conns(t).get("/abs.txt")
    assert r.status == 200, r
    assert r.body == HUNDRED


@pytest.mark.parametrize("target", ["http://t/100.txt", "http://t:8080/100.txt?q=1", "HTTP://other.example/100.txt"])
def test_absolute_form(srv, conns, target):
    r = conns(srv).get(target)
    assert r.status == 200, r
    assert r.body == HUNDRED


def test_absolute_form_empty_path_is_root(srv, conns):
    r = conns(srv).get("http://t")
    assert r.status == 200 and r.body.startswith(b"<!doctype html>")


# ---- methods ----

@pytest.mark.parametrize("path", ["/", "/100.txt", "/missing"])
def test_options(srv, conns, path):
    c = conns(srv)
    c.request("OPTIONS", path)
    r = c.response()
    assert r.status == 200
    assert r.header("Allow") == ALLOW
    common_fields(r)


def test_options_asterisk(srv, conns):
    c = conns(srv)
    c.send(b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n")
    r = c.response()
    assert r.status == 200
    assert r.header("Allow") == ALLOW
    common_fields(r)
    c.send(b"GET * HTTP/1.1\r\nHost: t\r\n\r\n")  # asterisk-form is for OPTIONS only
    assert c.response().status == 400


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "FOO", "PATCH", "get"])
def test_other_methods_405(srv, conns, method):
    c = conns(srv)
    c.request(method, "/100.txt", body=b"payload")
    r = c.response()
    assert r.status == 405
    assert r.header("Allow") == ALLOW
    assert r.body == b"405 Method Not Allowed\n"
    common_fields(r)
    assert c.get("/100.txt").body == HUNDRED  # the content was skipped


def test_date_and_server_on_refused_requests(srv, conns):
    c = conns(srv)
    c.send(b"GET / HTTP/1.1\r\n\r\n")
    r = c.response()
    assert r.status == 400
    common_fields(r)


# ---- the open-file cache ----

def poll_until_new(c, name, old, new):
    start = time.monotonic()
    while True:
        r = c.get("/" + name)
        assert r.status == 200
        if r.body == new:
            return r
        assert r.body == old, "neither the old nor the new content"
        assert time.monotonic() - start < 3 * SLOW, "still the old content after %g s" % (3 * SLOW)
        time.sleep(0.05)


def test_file_rewritten_in_place_is_seen_within_a_second(srv, site, conns):
    c = conns(srv)
    f = site / "100.txt"
    assert c.get("/100.txt").body == HUNDRED
    new = b"changed " * 3 + b"\n"
    f.write_bytes(new)
    r = poll_until_new(c, "100.txt", HUNDRED, new)
    assert r.header("Content-Length") == str(len(new))
    assert r.header("ETag") == etag_of(f)


def test_big_file_replaced_is_seen_within_a_second(srv, site, conns):
    """A deploy-style replacement (new inode, rename over the old name) of a sendfile-sized file."""
    c = conns(srv, timeout=20)
    f = site / "big.bin"
    old = f.read_bytes()
    assert c.get("/big.bin").body == old
    new = os.urandom(2 * 1024 * 1024 + 17)
    tmp = site / ".big.bin.tmp"
    tmp.write_bytes(new)
    os.replace(tmp, f)
    r = poll_until_new(c, "big.bin", old, new)
    assert r.header("Content-Length") == str(len(new))
    assert r.header("ETag") == etag_of(f)


def test_big_file_truncated_under_the_cache_ends_the_connection(srv, site, conns):
    """Truncated in place while cached: the promised length cannot be sent, so the connection is cut
    (never a response padded with other bytes)."""
    c = conns(srv, timeout=20)
    f = site / "big.bin"
    old = f.read_bytes()
    assert c.get("/big.bin").body == old
    f.write_bytes(b"short\n")
    c.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    try:
        r = c.response()
    except EOFError:
        pass  # the cached length was promised; the connection ended short
    else:
        assert r.body == b"short\n" and r.header("Content-Length") == "6"  # revalidated in the meantime
        return
    srv.wait_metric("tether_connections_closed_total", lambda v: v >= 1, reason="reset")
    deadline = time.monotonic() + 3 * SLOW
    while True:  # once revalidated (<= 1 s), the new size is served
        try:
            r = conns(srv).get("/big.bin")
            if r.body == b"short\n":
                assert r.header("Content-Length") == "6"
                break
        except EOFError:
            pass
        assert time.monotonic() < deadline, "truncated file still served with its old length after 3 s"
        time.sleep(0.05)


def test_removed_file_becomes_404(srv, site, conns):
    c = conns(srv)
    assert c.get("/style.css").status == 200
    (site / "style.css").unlink()
    deadline = time.monotonic() + 3 * SLOW
    while c.get("/style.css").status != 404:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_new_file_is_served_at_once(srv, site, conns):
    c = conns(srv)
    assert c.get("/new.txt").status == 404
    (site / "new.txt").write_text("new\n")
    r = c.get("/new.txt")
    assert r.status == 200 and r.body == b"new\n"


# ---- curl ----

def test_curl_fetches_file_and_range(srv, site):
    out = subprocess.run(["curl", "-s", "-D", "-", srv.url("/4k.bin")], capture_output=True, timeout=20)
    assert out.returncode == 0
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Length: 4096\r\n" in head
    assert body == FOURK
    out = subprocess.run(["curl", "-s", "-D", "-", "-r", "100-199", srv.url("/4k.bin")], capture_output=True,
                         timeout=20)
    assert out.returncode == 0
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206 Partial Content\r\n")
    assert b"\r\nContent-Range: bytes 100-199/4096\r\n" in head
    assert body == FOURK[100:200]
