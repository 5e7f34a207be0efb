"""tether probe over https: the TLS version, whether ALPN selects h2, full and resumed handshakes, and every
HTTP/1.1 measurement (idle timeout, max requests, pipelining) still right over TLS; certificate checks against
the system store (SSL_CERT_FILE), --insecure, and TLS failures ending with a clear message and exit 1."""

import json
import os
import subprocess

from conftest import SLOW, TETHER_BIN
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


def near(measured_ms, want_ms):
    return abs(measured_ms - want_ms) <= max(0.10 * want_ms, 200)


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
    # the HTTP/1.1 phases are measured over TLS as over TCP
    idle = r["idle_timeout"]
    assert idle["measured"] and near(idle["ms"], 2000), idle
    assert idle["connections"] == 8 and idle["closed"] == 8
    assert r["max_requests"] == {"count": 7, "end": "said_close", "at_least": False, "bound": 1000}
    assert r["keep_alive"]["field"] == "timeout=2, max=6" and r["keep_alive"]["timeout_true"] is True
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
    assert "resuming a TLS session saves" in text or "no new session" in text
    assert "(earliest close of 8 idle connections;" in text, text


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


def test_insecure_is_for_https_only():
    out = probe("--insecure", "http://127.0.0.1:1/")
    assert out.returncode == 2 and "--insecure applies to https:// URLs only" in out.stderr
