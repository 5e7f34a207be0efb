"""tether probe over https: the TLS version, whether ALPN selects h2, full and resumed handshakes, and every
HTTP/1.1 measurement (idle timeout, max requests, pipelining) still right over TLS; certificate checks against
the system store (SSL_CERT_FILE), --insecure, and TLS failures ending with a clear message and exit 1."""

import json
import os
import re
import subprocess

import pytest

from conftest import SLOW, TETHER_BIN
from test_probe import HOLD, near, relay, timeout_verdict  # noqa: F401 (relay is a fixture)
from tls_util import certs, tls_args, tls_port  # noqa: F401 (certs is a fixture)


def probe(*args, ca=None, timeout=60):
    env = dict(os.environ)
    env.pop("SSL_CERT_DIR", None)
    if ca:
        env["SSL_CERT_FILE"] = ca  # OpenSSL's default verify paths: "the system store" of the probe
    else:
        env.pop("SSL_CERT_FILE", None)
    return subprocess.run([TETHER_BIN, "probe"] + list(args), capture_output=True, text=True, env=env,
                          timeout=timeout * SLOW)


def probe_json(*args, ca=None):
    out = probe("--json", *args, ca=ca)
    assert out.returncode == 0, out
    return json.loads(out.stdout)


def start(tether, site, certs, *extra, config=None):
    return tether("--root", str(site), "--workers", "1", *tls_args(certs), *extra, config=config)


def url(t, path="/100.txt", host="127.0.0.1"):
    return "https://%s:%d%s" % (host, tls_port(t), path)


def test_https_probe_reports_tls_alpn_resumption_and_the_http11_measurements(tether, site, certs):
    t = start(tether, site, certs, "--idle-timeout", "2s", "--max-requests", "7")
    r = probe_json(url(t), "--max-wait", "20s", ca=certs.ca)
    tls = r["tls"]
    assert tls["version"] in ("TLSv1.3", "TLSv1.2"), tls
    assert tls["alpn"] == "h2" and tls["h2"] is True
    assert tls["verified"] is True
    assert tls["handshake_ms"] > 0 and tls["alpn_handshake_ms"] > 0
    res = tls["resumption"]
    assert res["session_issued"] is True and res["attempts"] == 3
    assert res["reused"] is True and res["resumed"] >= 1, res
    assert res["handshakes"][0]["resumed"] is True  # the session of a full handshake resumes
    assert res["handshake_ms"] > 0 and res["new_connection_ms"] > 0
    # a saving is claimed only when every full handshake was slower than the resumed median; never negative
    assert res["saving_ms"] is None or abs(res["saving_ms"] - (tls["handshake_ms"] - res["handshake_ms"])) < 0.01
    assert res["saving_ms"] is None or res["saving_ms"] > 0, res
    # the HTTP/1.1 phases are measured over TLS as over TCP
    idle = r["idle_timeout"]
    assert idle["measured"] and near(idle["ms"], 2000), idle
    assert idle["connections"] == 8 and idle["closed"] == 8
    assert r["max_requests"] == {"count": 7, "end": "said_close", "at_least": False, "bound": 1000}
    assert r["keep_alive"]["field"] == "timeout=2, max=6"
    # "true" when measured at 2.0 s; see test_probe.py's test_tether_idle_timeout_and_max_requests_are_measured
    assert r["keep_alive"]["timeout_verdict"] == timeout_verdict(2000, idle["ms"]), (r["keep_alive"], idle)
    assert r["pipelining"]["result"] == "in_order"
    assert r["http10_keepalive"] == "persists"
    assert r["url"] == url(t) and r["status"] == 200
    # the https bounds: 1 ALPN + 5 cold + 3 resumed + 1 + 1 + 1 + 8 idle
    assert r["connections_opened"] <= 20
    assert r["requests_sent"] <= 1000 + 22
    # tether counted the resumed handshakes the probe reported
    assert t.metric("tether_tls_handshakes_total", kind="resumed") >= res["resumed"]


def test_https_probe_text_names_version_alpn_and_reused(tether, site, certs):
    t = start(tether, site, certs, "--idle-timeout", "1s")
    out = probe(url(t, host="localhost"), "--max-wait", "10s", "--max-requests", "5", ca=certs.ca)
    assert out.returncode == 0, out
    text = out.stdout
    assert "connect time" in text and "(TCP)" in text
    assert "ALPN h2 (offered h2, http/1.1), certificate verified" in text
    assert "tls handshake          full " in text
    assert "tls resumption         Reused: " in text
    assert "TLS handshake full " in text and ", resumed " in text  # what reuse saves, for the handshake too
    assert "the server speaks HTTP/2 (ALPN selected h2)" in text
    # TLS 1.3 resumption still does the key exchange: on a busy machine it may measurably save nothing, and the
    # probe says so (test_resumption_saving_is_claimed_only_when_measured makes each case happen)
    said = re.findall(r"^  - (resuming a TLS session sav.*)$", text, re.M)
    assert len(said) == 1, text
    assert re.fullmatch(r"resuming a TLS session saves \d+\.\d+ m?s per new connection \(full handshake .*, "
                        r"resumed .*\)", said[0]) or \
        said[0].startswith("resuming a TLS session saved no measurable handshake time here (medians: full "
                           "handshake "), said
    assert "no new session" not in text  # tether renews its tickets after a resumed handshake
    assert "(earliest close of 8 idle connections;" in text, text


def offers_a_session(data):
    """Whether `data` (a client's first read) is a TLS ClientHello offering a session to resume (the TLS 1.3
    pre_shared_key extension, 41)."""
    assert len(data) > 44 and data[0] == 22 and data[5] == 1, data[:16]  # handshake record, ClientHello
    i = 5 + 4 + 2 + 32  # record and handshake headers, legacy version, random
    i += 1 + data[i]  # legacy session id
    i += 2 + int.from_bytes(data[i:i + 2], "big")  # cipher suites
    i += 1 + data[i]  # compression methods
    end = i + 2 + int.from_bytes(data[i:i + 2], "big")
    i += 2
    while i + 4 <= end:
        kind, size = int.from_bytes(data[i:i + 2], "big"), int.from_bytes(data[i + 2:i + 4], "big")
        if kind == 41:
            return True
        i += 4 + size
    return False


@pytest.mark.parametrize("slow", ["resumed", "full"])
def test_resumption_saving_is_claimed_only_when_measured(tether, site, certs, relay, slow):
    """A relay holds back the ClientHello of resumed handshakes (or of the full ones: the ALPN connection and the
    5 new connections that come first) by HOLD: resumption then measurably saves nothing (or a lot), whatever
    the machine's speed. The probe must say which, and never claim a saving it did not measure."""
    t = start(tether, site, certs, "--idle-timeout", "1s")
    def hold(conn, chunk, data):
        if chunk != 1:
            return 0
        if slow == "resumed":
            return HOLD if offers_a_session(data) else 0
        return HOLD if conn <= 6 and not offers_a_session(data) else 0

    rl = relay(tls_port(t), hold)
    r = probe_json("https://localhost:%d/100.txt" % rl.port, "--max-wait", "5s", "--max-requests", "3", ca=certs.ca)
    tls, res = r["tls"], r["tls"]["resumption"]
    assert res["resumed"] == 3 and res["attempts"] == 3, res  # the relay changes nothing but the timing
    held = sorted(c for c, _ in rl.held)
    assert held == ([7, 8, 9] if slow == "resumed" else [1, 2, 3, 4, 5, 6]), rl.held  # the probe's order
    said = [v for v in r["verdicts"] if v.startswith("resuming a TLS session sav")]
    assert len(said) == 1, r["verdicts"]
    full, resumed = tls["handshake_ms"], res["handshake_ms"]
    if slow == "resumed":
        assert all(h["ms"] >= HOLD * 1000 for h in res["handshakes"]) and full < HOLD * 1000, tls
        assert res["saving_ms"] is None, res
        assert said[0] == ("resuming a TLS session saved no measurable handshake time here (medians: full handshake "
                           "%s, resumed %s)" % (fmt_ms(full), fmt_ms(resumed))), said
    else:
        assert full >= HOLD * 1000 > resumed, tls
        assert abs(res["saving_ms"] - (full - resumed)) < 0.01, res
        assert said[0].startswith("resuming a TLS session saves "), said
        assert said[0].endswith("per new connection (full handshake %s, resumed %s)" % (fmt_ms(full), fmt_ms(resumed)))
    assert not any(re.search(r"saves? -|saved? -", v) for v in r["verdicts"]), r["verdicts"]


def fmt_ms(ms):
    """The probe's way of writing a duration given in ms."""
    return "%.2f ms" % ms if ms < 10 else "%.1f ms" % ms if ms < 1000 else "%.2f s" % (ms / 1000.0)


def test_alpn_without_h2_is_reported(tether, site, certs):
    t = start(tether, site, certs, "--idle-timeout", "1s", config="[http2]\nh2 = off\n")
    r = probe_json(url(t), "--max-wait", "5s", "--max-requests", "3", "--insecure")
    assert r["tls"]["alpn"] == "http/1.1" and r["tls"]["h2"] is False
    assert r["tls"]["verified"] is False
    assert any("does not speak HTTP/2 over TLS (ALPN selected http/1.1)" in v for v in r["verdicts"]), r["verdicts"]


def test_untrusted_certificate_is_a_clear_error_without_insecure(tether, site, certs):
    t = start(tether, site, certs, "--idle-timeout", "1s")
    out = probe(url(t), "--max-wait", "5s")  # the test CA is not in the store
    assert out.returncode == 1, out
    assert out.stderr.startswith("tether probe: 127.0.0.1:%d: certificate verification failed: " % tls_port(t)), \
        out.stderr
    assert "(use --insecure to skip it)" in out.stderr
    out = probe("--json", url(t))
    assert out.returncode == 1
    assert "certificate verification failed" in json.loads(out.stdout)["error"]
    # --insecure measures it anyway
    r = probe_json(url(t), "--max-wait", "5s", "--max-requests", "3", "--insecure")
    assert r["tls"]["verified"] is False and r["status"] == 200


def test_certificate_for_another_name_fails_the_name_check(tether, site, certs):
    t = start(tether, site, certs, "--idle-timeout", "1s")
    t2 = tether("--root", str(site), "--workers", "1", *tls_args(certs, certs.other))
    for u in (url(t, host="localhost"), url(t)):  # DNS name and IP literal: both in the main certificate
        r = probe_json(u, "--max-wait", "5s", "--max-requests", "3", ca=certs.ca)
        assert r["tls"]["verified"] is True
    out = probe(url(t2), "--max-wait", "5s", ca=certs.ca)  # other.test's certificate for 127.0.0.1
    assert out.returncode == 1, out
    assert "certificate verification failed" in out.stderr and "mismatch" in out.stderr, out.stderr


def test_https_to_a_plain_port_is_a_tls_error(tether, site):
    t = tether("--root", str(site), "--workers", "1")
    out = probe("https://127.0.0.1:%d/" % t.port, "--insecure", "--timeout", "2s")
    assert out.returncode == 1, out
    assert "TLS handshake failed" in out.stderr, out.stderr


def test_insecure_with_an_http_url_is_accepted_and_ignored(tether, site):
    """Issue 13: a first try with --insecure on an http:// URL used to be refused (exit 2)."""
    t = tether("--root", str(site), "--idle-timeout", "1s", "--workers", "1")
    out = probe("--insecure", "--json", "http://127.0.0.1:%d/100.txt" % t.port, "--max-wait", "5s",
                "--max-requests", "3")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == 200
    assert "insecure" not in out.stderr
