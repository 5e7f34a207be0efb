"""Issue 14: the admin listener's status page (/status), its JSON (/status.json), the advice endpoints and
`tether advise`.

The page is checked in a real browser: headless Chromium (Debian's `chromium`) loads /status from a tether under
traffic, runs its script (virtual time, so the one-second polls happen at once), and the test reads the rendered
DOM: the response counter shows at least the requests made, and more after more requests; the connection tables
show the test's own idle connection; no console message is logged (an uncaught error, a failed load). A screenshot
is saved in the test's directory (TETHER_UPDATE_SCREENSHOT=1 also copies it to docs/status.png for the README).
"""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import SLOW, SOURCE_DIR, TETHER_BIN, HttpConn
from proxy_util import addr, origins, upstream_config  # noqa: F401 (fixture)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def admin_get(t, path):
    c = HttpConn(*t.metrics_addr)
    try:
        c.send(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
        return c.response()
    finally:
        c.close()


def status_json(t):
    r = admin_get(t, "/status.json")
    assert r.status == 200 and r.header("Content-Type") == "application/json", r
    return json.loads(r.body)


def samples(d, name, **labels):
    return [s for s in d["samples"] if s["n"] == name and all(s["l"].get(k) == v for k, v in labels.items())]


def wait_json(t, predicate, timeout=10):
    """Polls /status.json until predicate(doc) holds (workers publish their connections once a second)."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        d = status_json(t)
        if predicate(d):
            return d
        assert time.monotonic() < deadline, json.dumps({k: v for k, v in d.items() if k != "samples"})[:3000]
        time.sleep(0.1)


def proxy_tether(tether, origins, site, workers=2, idle="30s"):
    o = origins()
    config = upstream_config([addr(o)], route="/api/", name="api") + "\n[static]\nroot = %s\n" % site
    return tether("--workers", str(workers), "--idle-timeout", idle, config=config), o


def make_requests(t, n, path="/index.html"):
    c = t.connect()
    try:
        for _ in range(n):
            assert c.get(path).status == 200
    finally:
        c.close()


@pytest.mark.multiworker
def test_status_json_reports_listeners_connections_upstreams_and_advice(tether, origins, site):
    """/status.json: the summary the first /status had, the workers' published connection lists (our idle
    connection, with its request count), per-listener states, configuration gauges and upstream metrics by name,
    and the advisor's advice, while the admin thread reads what two workers publish."""
    t, _ = proxy_tether(tether, origins, site)
    make_requests(t, 3, "/api/x")
    keep = t.connect()
    try:
        for _ in range(4):
            assert keep.get("/index.html").status == 200
        port = keep.sock.getsockname()[1]

        def ours(d):
            return [c for c in d["oldest"] if c["peer"].endswith(":%d" % port)]

        d = wait_json(t, lambda d: ours(d) and ours(d)[0]["state"] == "idle" and
                      any(c["peer"].endswith(":%d" % port) for c in d["longest_idle"]))
        c = ours(d)[0]
        assert c["requests"] == 4 and c["protocol"] == "h1" and c["tls"] is False, c
        assert c["age_s"] >= c["idle_s"] >= 0
        assert d["workers"] == 2 and d["version"] and d["uptime_s"] >= 0
        assert d["connections"]["accepted"] >= 2 and d["requests"]["2xx"] >= 7
        lst = d["listeners"]
        assert len(lst) == 1 and lst[0]["listener"] == "127.0.0.1:%d" % t.port
        assert lst[0]["states"]["idle"] >= 1 and set(lst[0]["states"]) == {
            "reading", "writing", "idle", "tunnel", "handshake", "closing"}
        # configuration the advisor compares with, exposed as gauges
        assert lst[0]["name"] == "default"  # the name races and durations are labelled with
        assert samples(d, "tether_listener_idle_timeout_seconds", listener="default",
                       address="127.0.0.1:%d" % t.port)[0]["v"] == 30
        assert samples(d, "tether_upstream_pool_idle_timeout_seconds", upstream="api")[0]["v"] == 60
        assert samples(d, "tether_upstream_max_idle", upstream="api")[0]["v"] == 128
        assert samples(d, "tether_workers")[0]["v"] == 2
        assert samples(d, "tether_upstream_requests_total", upstream="api")[0]["v"] == 3
        keys = {(a["scope"], a["key"]) for a in d["advice"]}
        assert ("server", "max_connections") in keys and ("upstream", "idle_timeout") in keys, d["advice"]
    finally:
        keep.close()
    # a closed connection leaves the lists at the next publication
    wait_json(t, lambda d: not any(c["peer"].endswith(":%d" % port) for c in d["oldest"]))


def test_advise_command_reads_metrics_and_status(tether, site):
    t = tether("--root", str(site), "--workers", "1")
    for _ in range(25):
        make_requests(t, 2)
    base = "http://%s:%d" % t.metrics_addr
    r = subprocess.run([TETHER_BIN, "advise", "--metrics", base + "/metrics"], capture_output=True, timeout=30,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert "listener default" in r.stdout
    assert re.search(r"\[ok\] \[keepalive\] idle_timeout: 5s\n +25 reuses: p95", r.stdout), r.stdout
    assert "[server] max_connections" in r.stdout
    j = subprocess.run([TETHER_BIN, "advise", "--metrics", base + "/metrics", "--json"], capture_output=True,
                       timeout=30, text=True)
    assert j.returncode == 0, j.stderr
    advice = json.loads(j.stdout)
    assert {a["key"] for a in advice} >= {"idle_timeout", "max_connections"}
    for a in advice:
        assert set(a) == {"level", "scope", "name", "section", "key", "current", "suggested", "reason"}
    s = subprocess.run([TETHER_BIN, "advise", "--status", base + "/status", "--json"], capture_output=True,
                       timeout=30, text=True)
    assert s.returncode == 0, s.stderr
    assert {(a["scope"], a["key"]) for a in json.loads(s.stdout)} == {(a["scope"], a["key"]) for a in advice}
    assert admin_get(t, "/advice").body.decode().startswith("listener default")
    # what cannot be read is said, exit 1; bad flags exit 2
    bad = subprocess.run([TETHER_BIN, "advise", "--metrics", base + "/nothing"], capture_output=True, timeout=30,
                         text=True)
    assert bad.returncode == 1 and "answered 404" in bad.stderr
    bad = subprocess.run([TETHER_BIN, "advise", "--metrics", base + "/status.json"], capture_output=True,
                         timeout=30, text=True)
    assert bad.returncode == 1 and "holds no tether metrics" in bad.stderr
    assert subprocess.run([TETHER_BIN, "advise"], capture_output=True, timeout=30).returncode == 2


def test_advise_file_on_a_recorded_race_scenario(tmp_path):
    """The README's example: a recorded scrape of the bench race scenario (a client at 60 s gaps in front of
    tether at 5 s)."""
    prom = os.path.join(SOURCE_DIR, "tests", "unit", "metrics", "snapshots", "race_balancer.prom")
    r = subprocess.run([TETHER_BIN, "advise", "--file", prom], capture_output=True, timeout=30, text=True)
    assert r.returncode == 0, r.stderr
    assert "[change] [keepalive] idle_timeout: 5s -> 70s" in r.stdout
    assert "your idle timeout is 5s: raise it above 60s" in r.stdout


def test_status_page_is_self_contained(tether, site):
    t = tether("--root", str(site))
    r = admin_get(t, "/status")
    assert r.status == 200 and r.header("Content-Type") == "text/html; charset=utf-8"
    page = r.body.decode()
    assert "/status.json" in page and "<script>" in page
    # nothing fetched from elsewhere: no external script, style, font or image
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "external resource"
    assert "@import" not in page and "url(" not in page
    assert admin_get(t, "/missing").status == 404


def chromium(url, *extra, budget_ms=4000):
    """Runs headless Chromium on `url`; returns (stdout, console lines)."""
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions", "--no-first-run",
            "--enable-logging=stderr", "--v=0", "--virtual-time-budget=%d" % budget_ms, *extra, url]
    r = subprocess.run(argv, capture_output=True, timeout=90 * SLOW, text=True,
                       env=dict(os.environ, HOME=os.environ.get("TMPDIR", "/tmp")))
    console = [line for line in r.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    return r.stdout, console, r


def text_of(dom, elem_id):
    m = re.search(r'id="%s"[^>]*>([^<]*)<' % re.escape(elem_id), dom)
    assert m, "no #%s in the rendered page" % elem_id
    return m.group(1)


def as_number(s):
    s = s.strip()
    mult = 1
    if s.endswith("k"):
        s, mult = s[:-1], 1000
    return float(s) * mult


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/install-deps.sh)")
def test_status_page_renders_live_values_in_a_browser(tether, origins, site, tmp_path):
    # three browser runs take a while on a loaded machine: the test's idle connection must outlive them
    t, _ = proxy_tether(tether, origins, site, idle="300s")
    make_requests(t, 5, "/api/a")
    keep = t.connect()
    try:
        for _ in range(3):
            assert keep.get("/index.html").status == 200
        port = keep.sock.getsockname()[1]
        wait_json(t, lambda d: any(c["peer"].endswith(":%d" % port) for c in d["longest_idle"]))
        url = "http://%s:%d/status" % t.metrics_addr

        dom, console, r = chromium(url, "--dump-dom")
        assert console == [], "the page logged to the console:\n" + "\n".join(console)
        assert "id=\"requests\"" in dom, r.stderr[-3000:]
        first = as_number(text_of(dom, "requests"))
        assert first >= 8, first
        assert text_of(dom, "workers") == "2"
        assert text_of(dom, "version") != "…"
        assert ":%d</td>" % port in dom  # our idle connection in the connection tables
        assert "127.0.0.1:%d</td>" % t.port in dom  # the listener row
        assert 'class="badge up"' in dom and ">api</td>" in dom  # the upstream and its server
        assert "advice-ok" in dom or "advice-note" in dom or "advice-change" in dom
        assert int(re.search(r'data-polls="(\d+)"', dom).group(1)) >= 2  # it polls

        make_requests(t, 20)
        dom, console, _ = chromium(url, "--dump-dom")
        assert console == [], "\n".join(console)
        assert as_number(text_of(dom, "requests")) >= first + 20

        shot = tmp_path / "status.png"
        _, console, r = chromium(url, "--screenshot=%s" % shot, "--window-size=1280,1900", "--hide-scrollbars")
        assert console == [], "\n".join(console)
        assert shot.exists() and shot.stat().st_size > 10000, r.stderr[-3000:]
        if os.environ.get("TETHER_UPDATE_SCREENSHOT") == "1":
            shutil.copy(shot, os.path.join(SOURCE_DIR, "docs", "status.png"))
    finally:
        keep.close()
