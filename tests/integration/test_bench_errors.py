"""tether bench against origins that misbehave on purpose (the Origin of test_probe_misbehaving.py):

  * --rate measures latency from each request's intended send time (no coordinated omission): an origin
    that answers one connection serially 50 ms per response, driven at 100 req/s, shows latencies growing
    far above 50 ms; one that stalls once shows the stall in every request due during it;
  * errors by kind in --json: reset (RST after the request, or a response cut short), timeout (no response,
    or a response that stalls; --timeout), connect (the listener goes away mid-run), each counted exactly
    while the other requests succeed;
  * the live progress line on a terminal (stderr a pty), and none when stderr is not a terminal.
"""

import json
import re
import subprocess
import time

import pytest

from conftest import SLOW, TETHER_BIN
from test_probe_misbehaving import origin, run_with_pty_stderr  # noqa: F401 (origin: a fixture)


def bench(*args, timeout=30):
    return subprocess.run([TETHER_BIN, "bench"] + list(args), capture_output=True, text=True,
                          timeout=timeout * SLOW)


def bench_json(*args):
    out = bench("--json", *args)
    assert out.returncode == 0, out
    assert out.stderr == "", out.stderr  # no progress line when stderr is not a terminal
    return json.loads(out.stdout)


def errors(**nonzero):
    """The seven error counts, all zero but those given."""
    e = dict.fromkeys(("connect", "reset", "timeout", "bad_status", "invalid", "rst_stream", "goaway"), 0)
    e.update(nonzero)
    return e


# ---- --rate: latency from the intended send time ----

def test_rate_latency_counts_from_the_intended_send_time(origin):
    """Request k is due at k * 10 ms, but the one connection is free only every 50 ms: request k is sent at
    about k * 50 ms and answered at (k + 1) * 50 ms, so its latency from its due time is 50 + 40 k ms
    (50 ms ... 810 ms for k = 0..19). Measured from the actual send, every latency would be about 50 ms."""
    o = origin(idle_close=None, delay=0.05)
    r = bench_json(o.url("/"), "-c", "1", "-n", "20", "--rate", "100")
    assert r["requests"] == 20 and r["errors"] == errors(), r
    assert r["connections_opened"] == 1 and r["target_rate"] == 100
    assert r["elapsed_s"] >= 0.95, r  # 20 responses at 50 ms each: served one after another
    assert r["rps"] < 25, r  # the origin, not the rate, set the pace
    lat = r["latency_us"]
    # the 10th of 20 latencies is 50 + 40 * 9 = 410 ms; the 20th (p99 and max) 810 ms. A busy machine only
    # adds to each response's 50 ms, so these are lower bounds; above, no latency exceeds the run.
    assert lat["p50"] >= 360_000, lat
    assert lat["p99"] >= 760_000 and lat["max"] >= 760_000, lat
    assert lat["max"] <= r["elapsed_s"] * 1.05e6, (lat, r["elapsed_s"])  # (histogram buckets are within 5 %)
    assert lat["mean"] >= 380_000, lat  # (50 + 810) / 2 = 430 ms

    # the control: the same origin in a closed loop shows its 50 ms per response, not growing latencies
    r = bench_json(o.url("/"), "-c", "1", "-n", "4")
    assert r["requests"] == 4 and 45_000 <= r["latency_us"]["p50"] and r["latency_us"]["max"] < 300_000 * SLOW, r


def test_rate_latency_shows_a_stall_in_every_request_due_during_it(origin):
    """A fast origin that holds its 10th response for 300 ms: at 100 req/s the ~30 requests due during the
    stall wait for it, so about half of all 60 latencies are 10..300 ms. With coordinated omission only the
    stalled request would be slow, and p90 would be well under a millisecond."""
    o = origin(idle_close=None, stall=(10, 0.3))
    r = bench_json(o.url("/"), "-c", "1", "-n", "60", "--rate", "100")
    assert r["requests"] == 60 and r["errors"] == errors() and r["connections_opened"] == 1, r
    lat = r["latency_us"]
    assert lat["max"] >= 290_000, lat
    # sorted latencies: ~30 fast ones, then 10, 20, ..., 300 ms; the 54th of 60 is ~250 ms
    assert lat["p90"] >= 150_000, lat
    assert lat["mean"] >= 40_000, lat  # ~4.6 s of waiting over 60 requests: ~77 ms
    assert 0.55 <= r["elapsed_s"] <= 0.6 + 1.0 * SLOW, r  # 60 requests at 100/s: on schedule once the stall is over


# ---- errors by kind ----

@pytest.mark.parametrize("action", ["rst", "truncate", "truncate_503"])
def test_reset_is_counted(origin, action):
    """Every connection answers 2 requests; the 3rd is reset (RST), or gets a head (200 or 503) and 10 of 100
    bytes of content, then FIN: "closed before the response was complete" is a reset too."""
    o = origin(idle_close=None, after=(2, action))
    r = bench_json(o.url("/"), "-c", "1", "-n", "30")
    assert r["requests"] == 20, r
    assert r["connections_opened"] == 10 and o.accepted == 10, r
    # one failed attempt is one error, of its kind: a 503 head that never completed is no bad_status
    assert r["errors"] == errors(reset=10), r
    # the status classes count the complete responses (requests), not heads of failed ones
    assert r["status"] == {"1xx": 0, "2xx": 20, "3xx": 0, "4xx": 0, "5xx": 0, "other": 0}, r


@pytest.mark.parametrize("action", ["hang", "stall_body"])
def test_timeout_is_counted(origin, action):
    """Every connection answers 2 requests; the 3rd gets no response, or a response that stops midway:
    after --timeout 300ms it counts as a timeout and the slot goes on with a new connection."""
    o = origin(idle_close=None, after=(2, action))
    start = time.monotonic()
    r = bench_json(o.url("/"), "-c", "1", "-n", "9", "--timeout", "300ms")
    took = time.monotonic() - start
    assert r["requests"] == 6, r
    assert r["errors"] == errors(timeout=3), r
    assert r["connections_opened"] == 3 and o.accepted == 3, r
    assert r["status"] == {"1xx": 0, "2xx": 6, "3xx": 0, "4xx": 0, "5xx": 0, "other": 0}, r  # complete ones
    assert 0.9 <= took < 0.9 + 3 * SLOW, took  # three timeouts of 300 ms, not the 5 s default


def test_connect_errors_are_counted_and_the_run_goes_on(origin):
    """The origin answers 5 requests on one connection, stops listening before the 5th response (which says
    Connection: close), so every later connect is refused: 5 responses, 15 connect errors."""
    o = origin(idle_close=None, stop_listening_after=5)
    r = bench_json(o.url("/"), "-c", "1", "-n", "20")
    assert r["requests"] == 5 and r["status"]["2xx"] == 5, r
    assert r["errors"] == errors(connect=15), r
    assert r["connections_opened"] == 16 and o.accepted == 1, r

    o = origin(idle_close=None, stop_listening_after=5)
    out = bench(o.url("/"), "-c", "1", "-n", "20")
    assert out.returncode == 0, out  # some requests succeeded: a run, not a failure
    assert re.search(r"^  errors +connect 15 reset 0 timeout 0 bad_status 0 invalid 0 +\(first: connect_refused\)$",
                     out.stdout, re.M), out.stdout


# ---- live progress on a terminal ----

BENCH_PROGRESS_D = re.compile(r"\r\x1b\[Kbench keep-alive: (\d+\.\d) s of 1\.0 s, (\d+) requests, (\d+) req/s now")
BENCH_PROGRESS_N = re.compile(r"\r\x1b\[Kbench keep-alive: (\d+\.\d) s, (\d+) of 60 requests, (\d+) req/s now")


def test_bench_shows_progress_on_a_terminal_only(origin):
    o = origin(idle_close=None)
    argv = [TETHER_BIN, "bench", "-c", "2", "-d", "1s", "--rate", "200", o.url("/")]
    rc, out, tty = run_with_pty_stderr(argv)
    assert rc == 0, (out, tty)
    lines = BENCH_PROGRESS_D.findall(tty)
    assert len(lines) >= 2, repr(tty)  # every 250 ms for 1 s
    done = [int(n) for _, n, _ in lines]
    assert done == sorted(done) and done[-1] > 0, lines  # requests counted as they finish
    assert any(int(rate) > 0 for _, _, rate in lines), lines
    assert tty.endswith("\r\x1b[K"), repr(tty[-80:])  # cleared before the report
    assert out.startswith("tether bench http://127.0.0.1:%d/" % o.port) and "\r" not in out, out

    # -n: "k of N requests"
    rc, out, tty = run_with_pty_stderr([TETHER_BIN, "bench", "-c", "1", "-n", "60", "--rate", "100", o.url("/")])
    assert rc == 0, (out, tty)
    assert len(BENCH_PROGRESS_N.findall(tty)) >= 1, repr(tty)

    # stderr not a terminal: no progress at all (over runs of 600 ms: 2 progress lines on a terminal)
    argv = [TETHER_BIN, "bench", "-c", "2", "-d", "600ms", "--rate", "200", o.url("/")]
    plain = subprocess.run(argv, capture_output=True, text=True, timeout=30 * SLOW)
    assert plain.returncode == 0 and plain.stderr == "", plain
    assert "requests " in plain.stdout
    # stdout a terminal, stderr not: still none
    rc, err, tty = run_with_pty_stderr(argv + ["--json"], swap=True)
    assert rc == 0 and err == "", err
    assert json.loads(tty)["requests"] > 0
