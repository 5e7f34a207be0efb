"""The binary starts, serves a file, reports metrics and exits 0 on SIGTERM."""


def test_serves_a_file_and_drains_on_sigterm(tether, site, conns):
    t = tether("--root", str(site))
    c = conns(t)
    r = c.get("/100.txt")
    assert r.status == 200
    assert r.body == b"x" * 99 + b"\n"
    assert r.header("Server") == "tether"
    assert r.header("Date")
    assert t.metric("tether_requests_total", **{"class": "2xx"}) == 1
    assert t.stop() == 0
