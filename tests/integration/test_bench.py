"""tether bench against tether: -n counts exactly, --close opens one connection per request (as tether's
metrics see it), --json parses, --rate holds its rate, --compare prints its ratios and the rows the origin
cannot do, and failures end with a clear message and a non-zero exit. HTTP/2 and https: test_bench_h2.py."""

import json
import socket
import subprocess

import pytest

from conftest import SLOW, TETHER_BIN


def bench(*args, timeout=60):
    return subprocess.run([TETHER_BIN, "bench"] + list(args), capture_output=True, text=True,
                          timeout=timeout * SLOW)


def bench_json(*args):
    out = bench("--json", *args)
    assert out.returncode == 0, out
    return json.loads(out.stdout)


@pytest.fixture
def origin(tether, site):
    return tether("--root", str(site), "--workers", "1")


@pytest.mark.multiworker
def test_n_counts_exactly(origin):
    r = bench_json(origin.url("/100.txt"), "-n", "1000", "-c", "4")
    assert r["requests"] == 1000
    assert r["status"]["2xx"] == 1000
    assert sum(r["errors"].values()) == 0
    assert r["mode"] == "keep-alive" and r["connections"] == 4
    assert r["connections_opened"] == 4  # 250 each, under tether's max requests of 1000
    assert origin.wait_metric("tether_requests_total", lambda v: v == 1000, **{"class": "2xx"}) == 1000
    # split over threads, still exact
    r = bench_json(origin.url("/100.txt"), "-n", "333", "-c", "6", "-t", "2")
    assert r["requests"] == 333 and r["threads"] == 2
    assert origin.wait_metric("tether_requests_total", lambda v: v == 1333, **{"class": "2xx"}) == 1333


def test_close_opens_one_connection_per_request(origin):
    before = origin.metric("tether_connections_accepted_total")
    r = bench_json(origin.url("/100.txt"), "-n", "200", "-c", "2", "--close")
    assert r["mode"] == "close"
    assert r["requests"] == 200 and r["connections_opened"] == 200
    assert r["requests_per_connection"] == 1.0
    assert origin.wait_metric("tether_connections_accepted_total", lambda v: v - before == 200) - before == 200
    assert origin.wait_metric("tether_connections_closed_total", lambda v: v >= 200, reason="client_close") >= 200


def test_json_has_every_number(origin):
    r = bench_json(origin.url("/100.txt"), "-d", "1s", "-c", "2")
    assert r["url"] == origin.url("/100.txt")
    for k in ("p50", "p90", "p99", "p99_9", "max", "mean"):
        assert r["latency_us"][k] > 0
    lat = r["latency_us"]
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]
    assert 0.99 <= r["elapsed_s"] < 1.0 + 1.0 * SLOW  # -d 1s: stops then, plus what is in flight
    # counted, and the rate is what was counted over the time it took (how many is the machine's business)
    assert r["requests"] > 0 and abs(r["rps"] - r["requests"] / r["elapsed_s"]) <= 0.01 * r["rps"] + 1, r
    assert set(r["errors"]) == {"connect", "reset", "timeout", "bad_status", "invalid", "rst_stream", "goaway"}
    assert r["protocol"] == "http/1.1" and "tls_resume" not in r
    assert r["tls"] == {"full": 0, "resumed": 0}


def test_rate_holds_within_5_percent(origin):
    r = bench_json(origin.url("/100.txt"), "-d", "3s", "-c", "8", "--rate", "1000")
    assert r["target_rate"] == 1000
    assert abs(r["rps"] - 1000) <= 50, r
    assert abs(r["requests"] - 3000) <= 150, r
    # -n with --rate: exact count, on schedule
    r = bench_json(origin.url("/100.txt"), "-n", "400", "-c", "4", "--rate", "400")
    assert r["requests"] == 400
    assert 0.95 <= r["elapsed_s"] <= 1.0 + 0.5 * SLOW, r  # the last is due at 0.9975 s


def test_compare_prints_ratios_and_the_rows_it_skipped(origin):
    out = bench(origin.url("/100.txt"), "-d", "1s", "-c", "2", "--compare")
    assert out.returncode == 0, out
    assert "keep-alive advantage" in out.stdout
    assert "HTTP/2 vs HTTP/1.1 keep-alive" in out.stdout  # tether speaks h2c with prior knowledge
    assert "skipped: TLS resumed vs full handshake: the origin is http://" in out.stdout
    r = bench_json(origin.url("/100.txt"), "-n", "300", "-c", "2", "--compare")
    ka, cl, h2 = r["runs"]
    assert ka["mode"] == "keep-alive" and cl["mode"] == "close" and h2["mode"] == "h2"
    assert ka["requests"] == cl["requests"] == h2["requests"] == 300
    assert cl["connections_opened"] == 300 and ka["connections_opened"] == 2 and h2["connections_opened"] == 2
    assert r["ratios"]["keepalive_vs_close"]["rps"] > 0 and r["ratios"]["h2_vs_h1"]["rps"] > 0
    assert [s["row"] for s in r["skipped"]] == ["TLS resumed vs full handshake"]


def test_bad_status_is_counted(origin):
    r = bench_json(origin.url("/missing"), "-n", "20", "-c", "1")
    assert r["requests"] == 20 and r["status"]["4xx"] == 20 and r["errors"]["bad_status"] == 20


def test_refused_port_fails_with_a_clear_message():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    out = bench("http://127.0.0.1:%d/" % port, "-d", "5s")
    assert out.returncode == 1
    assert "every request to 127.0.0.1:%d" % port in out.stderr and "connect_refused" in out.stderr, out.stderr


@pytest.mark.parametrize("args, message", [
    (["-n", "5", "-d", "1s", "http://127.0.0.1:1/"], "not both"),
    (["-c", "0", "http://127.0.0.1:1/"], "-c 0"),
    (["--rate", "fast", "http://127.0.0.1:1/"], "--rate fast"),
    (["--compare", "--close", "http://127.0.0.1:1/"], "--compare"),
    ([], "expected one URL"),
])
def test_bad_arguments_exit_2(args, message):
    out = bench(*args)
    assert out.returncode == 2, out
    assert message in out.stderr, out.stderr


def test_help_lists_every_flag():
    out = bench("--help")
    assert out.returncode == 0 and out.stdout.startswith("usage: tether bench URL")
    for flag in ("-c", "-d", "-n", "-t", "--rate", "--close", "--compare", "--json", "--h2", "-m", "--tls-resume",
                 "--insecure", "--timeout"):
        assert flag in out.stdout
