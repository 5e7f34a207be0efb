"""Issue 16: reuse every upstream connection that is safe to reuse, and no other.

Four origins, each behind tether alone and behind tether through a relay that delays everything (data and
closes) by 2 ms each way (relay.py, its own process), so eight scenarios; each gets a fresh tether (one worker,
default pool settings but idle_timeout 60 s), so its first rounds run before anything is learned:
  a. says "Keep-Alive: timeout=1" and closes at 2 s (Node: it adds a second on purpose); gaps 0.9-1.1 s;
  b. says nothing and closes at exactly 1 s; gaps 0.8-1.2 s;
  c. says nothing and closes idle connections in a sweep every 0.8 s once idle 1 s or more (Tomcat, gunicorn),
     so at an idle age anywhere in 1.0-1.8 s; gaps 0.8-1.6 s;
  d. says "Keep-Alive: timeout=5" and closes at 5 s; gaps 4.0-4.8 s (short enough for the round to be checked, see
     d_gaps) and 5.1-5.4 s, alternating.
Eight clients per scenario, in synchronised rounds (pool_support.Rounds): every parked connection is about one
gap old when the next round takes it, half GET, half POST (which tether never replays). For (a) the origin also holds
each response until the round's eight requests have all arrived (Origin(gather=)): on a loaded machine the clients'
requests of one round may otherwise not overlap, a round then uses fewer connections, the unused ones age past 2 s
and retire, and the next round opens new ones for want of parked ones (seen: 89.1 %, every miss `none_parked`).

The eight scenarios run at once (about 40 s in all), and the tests below read what they did:
  * no request fails, in any scenario, first round included;
  * a: at least 90 % of the requests go on a reused connection: the pool learns from canaries that the origin
    keeps connections 2 s, past its hint, and follows that; it never falls back;
  * a: and it opens at most two and a half rounds' worth of connections in all (request canaries);
  * c: at most 60 % of the requests open a connection (observers past the learned deadline carry GETs as request
    canaries, POSTs wait for a connection finishing its exchange);
  * d: every round whose gap (measured, see below) is under 4.9 s reuses every parked connection, unless the
    margin tether measured (bounded from the clients' own latencies) leaves less; none is reused past the hint
    (but by a GET as a request canary, which is replayed if the origin closed it).
Why these bounds hold on a loaded machine, pinned to one CPU: failures are prevented by margins tether measures
(round trips through the same loaded machine), not by the test's timing; the 90 % of (a) counts requests, and
its misses are the first three rounds at most (the first opens everything; the canaries that prove the origin
keeps connections 2 s close 2 s after they were parked) and the few connections the origin itself would close,
about 10 % of 40 rounds whatever the machine's speed (the test says why); (d) checks a round against the margin
the round's own latencies allow, and needs two such rounds: its short gaps are drawn, when each round starts, under
the bound the previous round's latencies set.
"""

import os
import random
import tempfile
import threading
import time

import pytest

from conftest import LATE, SLOW, Tether
from origin import Origin
from pool_support import PoolView, Rounds, origin_stats, pool_config
from relay import Relay

SEED = int(os.environ.get("TETHER_REUSE_SEED") or random.SystemRandom().randrange(1 << 30))
CLIENTS = 8
RELAY_DELAY = 0.002
SEND_SLACK = 0.15 * SLOW  # (d): from a round's start to its last request sent, and a request's way into tether


def d_gaps(scenario):
    """(d): short and long gaps alternating, never within 4.8-5.1 s. A short gap is drawn when the previous round has
    ended (Rounds calls this then) so that the round can be checked: its last request must leave less than 4.9 s, and
    5 s minus the previous round's margin bound minus 50 ms, after that round's first response came in. On a loaded
    machine the responses of a round spread and its latencies (so the bound) grow, and gaps drawn blind from 4.0-4.8 s
    left fewer than two rounds checked (seen: one). So a short gap is drawn from 4.0 s (by then a fixed margin of a
    second, hint_margin, would have retired every connection) to the latest start that leaves the round SEND_SLACK
    under the bound; only when the bound leaves nothing above 4.0 s is it drawn from 4.0-4.8 s (not to be checked)."""
    n = [0]

    def gap(rng):
        n[0] += 1
        if n[0] % 3 == 0:
            return rng.uniform(5.1, 5.4)
        load = scenario.load
        k = load.round  # the round that has just ended
        done = [r[1] for r in load.results if r[7] == k]
        if not done:
            return rng.uniform(4.0, 4.8)
        bound = min(4.9, 5.0 - scenario.margin_bounds()[k] - 0.05)
        latest = min(4.8, min(done) + bound - SEND_SLACK - time.monotonic())
        return rng.uniform(4.0, latest if latest > 4.0 else 4.8)
    return gap


ORIGINS = {
    # (a) counts reuses, which needs every round's CLIENTS exchanges in flight at once (else connections a slow
    # round left unused age out, and the next round opens new ones for want of parked ones): the origin gathers them
    "a": dict(origin=dict(idle_timeout=2.0, hint=True, hint_timeout=1, gather=CLIENTS),
              gap=lambda r: r.uniform(0.9, 1.1), rounds=40),
    "b": dict(origin=dict(idle_timeout=1.0), gap=lambda r: r.uniform(0.8, 1.2), rounds=22),
    "c": dict(origin=dict(idle_timeout=1.0, sweep=0.8), gap=lambda r: r.uniform(0.8, 1.6), rounds=18),
    "d": dict(origin=dict(idle_timeout=5.0, hint=True), gap=None, rounds=8),
}


class Scenario:
    def __init__(self, kind, relay, seed, workdir):
        self.kind, self.relay_on, self.seed = kind, relay, seed
        self.name = kind + ("+relay" if relay else "")
        spec = ORIGINS[kind]
        self.origin = Origin(**spec["origin"]).start()
        self.relay = Relay(self.origin.port, RELAY_DELAY, max_seconds=300) if relay else None
        port = self.relay.port if relay else self.origin.port
        wd = os.path.join(workdir, self.name.replace("+", "_"))
        os.makedirs(wd)
        # the clients' own connections to tether outlive every gap (tether's client idle timeout is 5 s by default)
        self.tether = Tether(["--workers", "1", "--idle-timeout", "60s"], config=pool_config(port, idle_timeout="60s"),
                             workdir=wd)
        self.tether.wait_ready()
        self.pool = PoolView(self.tether, port)
        self.load = Rounds(self.tether.addr, seed, clients=CLIENTS, gap=spec["gap"] or d_gaps(self),
                           rounds=spec["rounds"])
        self.error = None
        self.stats = {}

    def run(self):
        try:
            self.load.run()
            self.stats = self.read_stats()
        except BaseException as e:  # noqa: BLE001 - reported by the tests
            self.error = e

    def read_stats(self):
        p, t = self.pool, self.tether
        requests = t.metric("tether_upstream_requests_total", upstream="backend")
        reused = p.reused()
        opens = {}
        prefix = 'tether_upstream_open_reasons_total{upstream="backend",server="%s",reason="' % p.server
        for k, v in t.metrics().items():
            if k.startswith(prefix) and v:
                opens[k[len(prefix):-2]] = int(v)
        return dict(requests=requests, reused=reused, opened=p.opened(), margin=p.m("tether_upstream_margin_seconds"),
                    rtt=p.m("tether_upstream_rtt_seconds"), learned=p.learned(),
                    above=p.m("tether_upstream_learned_above_hint_seconds"),
                    fallbacks=p.m("tether_upstream_learn_fallbacks_total"),
                    replays=p.replays("closed_before_response", "reset_before_response"), opens=opens,
                    handshake=p.m("tether_upstream_handshake_seconds_total"),
                    retired=p.retired_all(), origin=origin_stats(self.origin),
                    canary=(p.m("tether_upstream_canary_requests_answered_total"),
                            p.m("tether_upstream_canary_requests_closed_total")),
                    waits=(p.m("tether_upstream_reuse_waits_served_total"),
                           p.m("tether_upstream_reuse_waits_timed_out_total")))

    def summary(self):
        s = self.stats
        if not s:
            return "[%s] no statistics (%r)" % (self.name, self.error)
        res = self.load.results
        return ("[%s] seed=%d requests=%d failures=%d reused=%.1f%% opened=%d margin=%.0fms rtt=%.1fms learned=%.3fs "
                "above_hint=%.3fs fallbacks=%d replays=%d opens=%s origin: conns=%d idle_closes=%d raced=%d" % (
                    self.name, self.seed, len(res), len(self.load.failures()), 100.0 * s["reused"] / max(s["requests"], 1),
                    s["opened"], s["margin"] * 1000, s["rtt"] * 1000, s["learned"], s["above"], s["fallbacks"],
                    s["replays"], s["opens"], s["origin"]["accepted"], s["origin"]["idle_closes"],
                    s["origin"]["raced"])) + " canary_requests=%d/%d reuse_waits=%d/%d" % (
                    s["canary"][0], s["canary"][1], s["waits"][0], s["waits"][1])

    def reused_targets(self):
        """Targets of the requests tether sent on a reused connection (its access log)."""
        return {t for t, a in self.load.access(self.tether).items() if a.get("up_reused") == "1"}

    def new_connections(self):
        """{round: [why a new connection was opened, ...]} from the access log (up_open)."""
        rounds = {r[6]: r[7] for r in self.load.results}
        out = {}
        for t, a in self.load.access(self.tether).items():
            if a.get("up_reused") == "0":
                out.setdefault(rounds[t], []).append(a.get("up_open"))
        return out

    def round_gap_bounds(self, k):
        """(shortest, longest) idle time a connection can have had on tether's side in round k: from the last
        (first) response of round k-1 in to the first (last) request of round k sent."""
        prev = [r[1] for r in self.load.results if r[7] == k - 1]
        first_sent, last_sent = self.load.rounds_log[k][2], self.load.rounds_log[k][3]
        return first_sent - max(prev), last_sent - min(prev)

    def margin_bounds(self, floor=0.025, rtts=3):
        """{round: an upper bound of the margin tether used for any connection parked in that round}, from what the
        clients measured. Each of tether's round-trip samples (its request written to the response's first byte) is
        shorter than the client's whole request, and the smoothing is monotone: srtt fed the clients' latencies
        bounds tether's srtt, and rttvar fed max(srtt bound, latency) bounds tether's rttvar (a deviation is never
        more than the larger of the two it compares). Samples in the order the responses came in."""
        srtt = var = None
        out = {}
        for r in sorted(self.load.results, key=lambda r: r[1]):
            lat = r[1] - r[0]
            if srtt is None:
                srtt, var = lat, lat / 2
            else:
                var = (3 * var + max(srtt, lat)) / 4
                srtt = (7 * srtt + lat) / 8
            out[r[7]] = max(out.get(r[7], 0.0), floor, rtts * srtt + 4 * var)
        return out

    def stop(self):
        problems = []
        try:
            rc = self.tether.stop()
            if rc != 0:
                problems.append("tether (%s) exited with %s:\n%s" % (self.name, rc, self.tether.stderr()[-3000:]))
        except AssertionError as e:
            problems.append(str(e))
        finally:
            self.tether.kill()
            if self.relay:
                self.relay.stop()
            self.origin.stop()
        return problems


@pytest.fixture(scope="module")
def matrix():
    """Runs the eight scenarios at once; yields {name: Scenario}. Every process is stopped by PID at the end, and
    every tether must exit cleanly."""
    workdir = tempfile.mkdtemp(prefix="tether-issue16-")
    scenarios = {}
    try:
        for i, kind in enumerate("abcd"):
            for relay in (False, True):
                s = Scenario(kind, relay, SEED + 2 * i + relay, workdir)
                scenarios[s.name] = s
        # two waves of four (without, then with the relay): eight at once under ASan on two busy cores stalled a
        # tether long enough to see a canary's close a second young (the learned estimate then fell under its use)
        for wave in ([s for s in scenarios.values() if not s.relay_on], [s for s in scenarios.values() if s.relay_on]):
            threads = [threading.Thread(target=s.run, daemon=True) for s in wave]
            for th in threads:
                th.start()
            for th in threads:
                th.join(300 * SLOW)
            assert not any(th.is_alive() for th in threads), "a scenario hung"
        print()
        for s in scenarios.values():
            print(s.summary())
        yield scenarios
    finally:
        problems = []
        for s in scenarios.values():
            problems += s.stop()
        assert not problems, "\n".join(problems)


def scenario(matrix, name):
    s = matrix[name]
    if s.error is not None:
        raise s.error
    return s


@pytest.mark.parametrize("name", ["a", "a+relay", "b", "b+relay", "c", "c+relay", "d", "d+relay"])
def test_no_request_fails_first_rounds_included(matrix, name):
    s = scenario(matrix, name)
    assert s.tether.proc.poll() is None, "tether died:\n%s" % s.tether.stderr()[-4000:]
    failures = s.load.failures()
    assert not failures, "%s: %d failed requests (status, cause, method, round): %s\n%s" % (
        name, len(failures), failures[:10], s.summary())
    assert len(s.load.results) == CLIENTS * ORIGINS[s.kind]["rounds"], s.summary()
    assert s.stats["requests"] == len(s.load.results)


@pytest.mark.parametrize("name", ["a", "a+relay"])
def test_hint_of_1s_closing_at_2s_reuses_at_least_90_percent(matrix, name):
    """The misses that learning costs are in the first rounds: the first opens every connection; then the
    connections reach their hint deadline (0.975 s) during the second or the third round and are kept as canaries,
    out of service, until the origin closes the first of them 2 s after it was parked, which the next round may or
    may not follow (then the canaries still open go back in service); then every request reuses a connection
    unless more requests overlap than ever before (none_parked) or the least recently used connection, idle for two
    rounds, reached the deadline learned (2 s - margin), as the origin would close it anyway. Worst case three
    rounds and about 2 % of the rest: 3 x 8 + 8 of 40 x 8 requests, 10 %."""
    s = scenario(matrix, name)
    st = s.stats
    share = st["reused"] / st["requests"]
    assert share >= 0.90, "%.1f %% reused; new connections by round: %s\n%s" % (
        100 * share, s.new_connections(), s.summary())
    # and it opens few connections: the first round's, and while it learns, not a second full round (the round that
    # finds every connection at the hint sends its GETs on them as request canaries; its POSTs wait for those to
    # finish, and open when the wait runs out because this origin answers only once the round's 8 requests arrived).
    # Measured 11-17. A bound against regressions, not a proof of the request canaries: this origin gathers each
    # round, so the waits run out, and the round that meets the hint may come late enough that the canaries' close
    # at 2 s is seen first (with canary_requests off and reuse_wait 0: 16 in one run, 23-24 in earlier ones). The
    # unit tests (test_pool.c) prove both mechanisms; bench/race.sh shows what they save (origin a: 2.00x -> 1.00x).
    assert st["opened"] <= 2 * CLIENTS + CLIENTS // 2, "%d connections opened; new connections by round: %s\n%s" % (
        st["opened"], s.new_connections(), s.summary())
    # after the fourth round, what made a new connection is never the hint: the pool learned above it
    late = {k: why for k, why in s.new_connections().items() if k >= 4 and set(why) - {"none_parked", "past_deadline"}}
    assert not late, "new connections after learning, by round: %s\n%s" % (late, s.summary())


@pytest.mark.parametrize("name", ["a", "a+relay"])
def test_hint_of_1s_closing_at_2s_is_learned_above_the_hint_without_fallback(matrix, name):
    s = scenario(matrix, name)
    st = s.stats
    # the youngest close a canary saw: 2 s on the origin's clock, from the moment it sent its last response. tether
    # counts from the moment that response reached it and until the close reached it, so on a busy machine (or
    # through a relay holding a burst of responses) the age it sees is off by either delay: early by the first
    # (seen: 1.883 s, with 24 ms round trips), late by the second. Either way well above the 1 s hint.
    assert 2.0 - LATE <= st["above"] <= 2.0 + 0.5 * SLOW, s.summary()
    assert st["fallbacks"] == 0, s.summary()
    assert st["retired"].get("stale_on_reuse", 0) == 0 and st["replays"] == 0, s.summary()
    # what the connections it had to open cost: their handshakes, counted (on loopback, microseconds each)
    assert 0 < st["handshake"] < st["opened"] * 1.0, s.summary()
    # why each was opened: the access log and the counters agree
    assert sum(st["opens"].values()) == st["opened"], s.summary()


@pytest.mark.parametrize("name", ["c", "c+relay"])
def test_sweeping_origin_reuses_through_request_canaries_and_waits(matrix, name):
    """(c) closes idle connections at 1.0-1.8 s; tether learns the youngest close and takes a whole sweep off
    (about half of it) for requests that cannot be replayed. Past that deadline its connections are kept as
    observers: GETs take them (replayed if a sweep closed one under them), POSTs wait for a connection finishing
    its exchange. So most rounds reuse: at most 60 % of the requests open a connection (measured 33-40 %; without
    the observers and the wait every round past the deadline opened all eight: 90 % or more)."""
    s = scenario(matrix, name)
    st = s.stats
    assert st["opened"] <= 0.6 * st["requests"], "%d connections for %d requests; by round: %s\n%s" % (
        st["opened"], st["requests"], s.new_connections(), s.summary())
    assert st["canary"][0] > 0 and st["waits"][0] > 0, s.summary()


@pytest.mark.parametrize("name", ["d", "d+relay"])
def test_hint_of_5s_closing_at_5s_reuses_every_gap_under_4_9s(matrix, name):
    """A round's gap is measured from the first response of the previous round in (the oldest connection it
    parked) to the last request of this round sent: no connection of the round can be older on tether's side
    (plus the moment a request takes from the client to tether's loop, 50 ms allowed). The hint promises 5 s,
    and the margin tether measured takes part of it: on an idle machine its floor, 25 ms, but a round whose
    responses came late (a loaded machine) parks its connections with a larger one, rightly (the origin's idle
    time started that much earlier than tether saw it). So a round must reuse when its gap is under 4.9 s and
    under 5 s minus the largest margin the clients' own latencies allow (Scenario.margin_bounds) minus 50 ms:
    no reuse declined (every new connection is none_parked: all the parked ones are taken by the round's other
    requests, the previous round never having had as many requests in flight at once), and at least one reused.
    Past the promise none may reuse: on tether's own clock (up_idle_ms), no reuse at 5 s minus 25 ms or later."""
    s = scenario(matrix, name)
    reused = s.reused_targets()
    opened = s.new_connections()
    margins = s.margin_bounds()
    checked = 0
    for k in range(1, len(s.load.rounds_log)):
        lo, hi = s.round_gap_bounds(k)
        targets = [r[6] for r in s.load.results if r[7] == k]
        if hi < 4.9 and hi < 5.0 - margins[k - 1] - 0.05:
            checked += 1
            declined = [why for why in opened.get(k, []) if why != "none_parked"]
            assert not declined and any(t in reused for t in targets), (
                "round %d (gap %.3f-%.3f s, margin at most %.0f ms): new connections %s\n%s" % (
                    k, lo, hi, 1000 * margins[k - 1], opened.get(k), s.summary()))
    # and never past the promise: on tether's own clock no connection was reused idle for the hint minus the floor
    # of the margin or longer (a late client of a long round may reuse one parked earlier in that round: up_idle_ms
    # is that connection's idle time, not the round's gap)
    # (a request canary may: a GET that is replayed if the origin closed the connection, never a POST)
    methods = {r[6]: r[2] for r in s.load.results}
    late = [(t, a["up_idle_ms"], a.get("up_canary")) for t, a in s.load.access(s.tether).items()
            if a.get("up_reused") == "1" and int(a["up_idle_ms"]) >= 5000 - 25
            and (a.get("up_canary") != "1" or methods[t] != "GET")]
    assert not late, "reused past the hint: %s\n%s" % (late, s.summary())
    assert checked >= 2, "only %d rounds with gaps under 4.9 s and the margin (margins %s)\n%s" % (
        checked, {k: round(v, 3) for k, v in margins.items()}, s.summary())
    assert s.stats["above"] == 0, "learned above a hint the origin keeps exactly\n" + s.summary()
