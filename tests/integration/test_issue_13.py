"""Issue 13 ("operate it like nginx"): SIGUSR1/SIGHUP reopen the logs, `serve --check`, start-up guards
(duplicate keys and sections, a static root that cannot be served, an address another process listens on, TLS
files and upstream references with file:line) and the help texts."""

import os
import re
import resource
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import LISTEN_RE, SLOW, TETHER_BIN, HttpConn
from proxy_util import closed_port
from tls_util import certs  # noqa: F401 (fixture)


def run(*args, timeout=10):
    return subprocess.run([TETHER_BIN] + list(args), capture_output=True, text=True, timeout=timeout * SLOW)


def wait_for(predicate, what, timeout=10):
    deadline = time.monotonic() + timeout * SLOW
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


def read_lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def get(t, target, conns=1):
    """`conns` new connections, one request each (so several workers see them); asserts 200s."""
    for _ in range(conns):
        c = t.connect()
        try:
            c.send(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert c.response().status == 200
        finally:
            c.close()


# ---- 1. logs reopened on SIGUSR1 and SIGHUP ----

@pytest.mark.multiworker
@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGHUP], ids=["USR1", "HUP"])
def test_signal_reopens_the_access_log(tether, site, sig):
    """logrotate: `mv access.log access.log.1; kill -USR1` (or -HUP): tether keeps running and the lines after
    the signal go to a new access.log, from every worker. Before issue 13, SIGUSR1 killed tether (exit 138) and
    SIGHUP kept writing to access.log.1."""
    t = tether("--root", str(site), "--workers", "2")
    path = t.access_log_path
    get(t, b"/100.txt?before", conns=4)
    assert len(t.access_lines(wait_for=4)) == 4
    os.rename(path, path + ".1")
    name = signal.Signals(sig).name
    t.send_signal(sig)
    wait_for(lambda: any("%s: reopened the logs" % name in line for line in t.stderr_lines), "the reopen")
    assert os.path.exists(path), "the new access.log is created when the signal is handled"
    get(t, b"/100.txt?after", conns=8)
    wait_for(lambda: len(read_lines(path)) >= 8, "8 lines in the new access.log")
    new, old = read_lines(path), read_lines(path + ".1")
    assert all("?after" in line for line in new) and len(new) == 8, new
    assert all("?before" in line for line in old) and len(old) == 4, old
    assert t.proc.poll() is None, "tether exited on %s: %s" % (name, t.stderr())
    # and again: a second rotation works the same
    os.rename(path, path + ".2")
    t.send_signal(sig)
    wait_for(lambda: os.path.exists(path), "the second new access.log")
    get(t, b"/100.txt?third", conns=4)
    wait_for(lambda: len(read_lines(path)) >= 4, "4 lines after the second rotation")
    assert all("?third" in line for line in read_lines(path))
    assert len(read_lines(path + ".2")) == 8


@pytest.mark.multiworker
def test_sigusr1_reopens_the_error_log(tether, site, tmp_path):
    """[log] error_log = FILE: SIGUSR1 moves its lines to a new file too."""
    elog = tmp_path / "error.log"
    cfg = "[log]\nerror_log = %s\n[static]\nroot = %s\n" % (elog, site)
    t = tether(config=cfg, metrics=False, ready=False)
    wait_for(lambda: any(LISTEN_RE.search(line) for line in read_lines(elog)), "listening in error.log")
    assert t.stderr_lines == []
    os.rename(elog, str(elog) + ".1")
    t.send_signal(signal.SIGUSR1)
    wait_for(lambda: any("SIGUSR1: reopened the logs" in line for line in read_lines(elog)),
             "the reopen logged in the new error.log")
    assert not any("reopened" in line for line in read_lines(str(elog) + ".1"))
    assert t.stop() == 0
    assert any("stopped" in line for line in read_lines(elog))


# ---- 2. serve --check ----

def test_check_accepts_a_good_file_and_opens_nothing(tmp_path, site):
    port = closed_port()
    alog, elog = tmp_path / "access.log", tmp_path / "error.log"
    cfg = tmp_path / "tether.ini"
    cfg.write_text("[listen]\naddress = 127.0.0.1:%d\n[static]\nroot = %s\n[log]\naccess_log = %s\n"
                   "error_log = %s\n[metrics]\nlisten = 127.0.0.1:%d\n" % (port, site, alog, elog, port))
    # something listens on the port: --check does not bind, so it does not care
    busy = socket.socket()
    busy.bind(("127.0.0.1", port))
    busy.listen(1)
    try:
        for flag in ("--check", "-t"):
            out = run("serve", "--config", str(cfg), flag)
            assert out.returncode == 0, out.stderr
            assert "configuration OK" in out.stderr
            assert "listening" not in out.stderr
            assert not alog.exists() and not elog.exists(), "--check created a log file"
    finally:
        busy.close()


def test_check_reports_every_error_with_file_and_line(tmp_path, site):
    cfg = tmp_path / "bad.ini"
    cfg.write_text("[server]\nworkers = lots\n"          # 1-2
                   "[keepalive]\nidle_timeout = 5s\n"    # 3-4
                   "idle_timeout = 6s\n"                 # 5: set twice
                   "[upstream api]\nserver = 127.0.0.1:9\n"  # 6-7
                   "[upstream api]\nserver = 127.0.0.1:8\n"  # 8: duplicate section
                   "[limits]\nmax_fields = 100000\n")    # 10-11
    out = run("serve", "--config", str(cfg), "--root", str(site), "--check")
    assert out.returncode == 2, out.stderr
    errors = re.findall(r"^tether: (.+?):(\d+): ([a-z_]+|\[[a-z ]+\]): (.+)$", out.stderr, re.M)
    assert [(f, int(n), k) for f, n, k, _ in errors] == [
        (str(cfg), 2, "workers"), (str(cfg), 5, "idle_timeout"), (str(cfg), 8, "[upstream api]"),
        (str(cfg), 11, "max_fields")], out.stderr
    assert "set twice in [keepalive] (first on line 4)" in out.stderr
    assert "api]: duplicate section (first on line 6)" in out.stderr
    assert "configuration OK" not in out.stderr


def test_check_reports_a_missing_root_with_its_line(tmp_path):
    cfg = tmp_path / "t.ini"
    cfg.write_text("[static]\n; the site\nroot = %s\n" % (tmp_path / "nope"))
    out = run("serve", "--config", str(cfg), "-t")
    assert out.returncode == 2
    assert "tether: %s:3: root: %s: No such file or directory" % (cfg, tmp_path / "nope") in out.stderr


def test_config_has_nginx_short_form(tmp_path, site):
    """`-c FILE` as nginx and `tether reload` take it."""
    cfg = tmp_path / "t.ini"
    cfg.write_text("[static]\nroot = %s\n" % site)
    out = run("serve", "-c", str(cfg), "-t")
    assert out.returncode == 0 and "configuration OK: %s" % cfg in out.stderr, out


# ---- 3. start-up guards ----

def test_duplicate_key_and_section_refuse_to_start(tmp_path, site):
    for text, line, why in [("[keepalive]\nmax_requests = 5\nmax_requests = 6\n", 3,
                             "max_requests: set twice in [keepalive] (first on line 2)"),
                            ("[route /a/]\nroot = %s\n[route /a/]\nroot = /tmp\n" % site, 3,
                             "[route /a/]: duplicate section (first on line 1)")]:
        cfg = tmp_path / "dup.ini"
        cfg.write_text(text)
        out = run("serve", "--config", str(cfg), "--root", str(site), "--listen", "127.0.0.1:0",
                  "--access-log", "off")
        assert out.returncode == 2, out.stderr
        assert "tether: %s:%d: %s" % (cfg, line, why) in out.stderr
        assert "listening" not in out.stderr


@pytest.mark.parametrize("kind", ["missing", "file", "route"])
def test_a_root_that_cannot_be_served_refuses_to_start(tmp_path, site, kind):
    """It used to start and answer 500 to every request."""
    bad = tmp_path / "nope"
    if kind == "file":
        bad.write_text("not a directory\n")
    cfg = tmp_path / "t.ini"
    if kind == "route":
        cfg.write_text("[static]\nroot = %s\n\n[route /x/]\nroot = %s\n" % (site, bad))
        line = 5
    else:
        cfg.write_text("[static]\nroot = %s\n" % bad)
        line = 2
    out = run("serve", "--config", str(cfg), "--listen", "127.0.0.1:0", "--access-log", "off")
    assert out.returncode == 2, out.stderr
    why = "Not a directory" if kind == "file" else "No such file or directory"
    assert "tether: %s:%d: root: %s: %s" % (cfg, line, bad, why) in out.stderr
    out = run("serve", "--root", str(bad), "--listen", "127.0.0.1:0", "--access-log", "off")
    assert out.returncode == 2 and "--root %s: " % bad in out.stderr, out.stderr


def test_refuses_an_address_another_process_listens_on(site):
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # even one that would let tether share it
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        out = run("serve", "--root", str(site), "--listen", "127.0.0.1:%d" % port, "--access-log", "off")
        assert out.returncode == 2, out.stderr
        assert "tether: 127.0.0.1:%d: another process already listens on this address" % port in out.stderr
        assert "reuse_port_with_others" in out.stderr
        # the metrics address too
        out = run("serve", "--root", str(site), "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:%d" % port,
                  "--access-log", "off")
        assert out.returncode == 2 and "127.0.0.1:%d: another process" % port in out.stderr, out.stderr
    finally:
        busy.close()


def test_second_tether_on_the_same_port_is_refused_unless_asked(tether, site, tmp_path):
    first = tether("--root", str(site))
    port = first.port
    out = run("serve", "--root", str(site), "--listen", "127.0.0.1:%d" % port, "--access-log", "off",
              "--workers", "1")
    assert out.returncode == 2, out.stderr
    assert "127.0.0.1:%d: another process already listens" % port in out.stderr
    # the escape hatch: deliberate sharing (both serve)
    second = tether("--root", str(site), "--listen", "127.0.0.1:%d" % port,
                    config="[server]\nreuse_port_with_others = on\n")
    assert second.port == port
    c = HttpConn("127.0.0.1", port)
    c.send(b"GET /100.txt HTTP/1.1\r\nHost: t\r\n\r\n")
    assert c.response().status == 200
    c.close()


def tls_case(kind, certs, tmp_path):
    """A config with one TLS problem of `kind`: (config text, line, key, reason) of the error it must give."""
    main, other = certs.main, certs.other
    cert, key, why = main.cert, main.key, None
    if kind == "missing cert":
        cert, why = str(tmp_path / "nope.pem"), "%s: No such file or directory" % (tmp_path / "nope.pem")
    elif kind == "cert not PEM":
        cert = str(tmp_path / "junk.pem")
        (tmp_path / "junk.pem").write_text("not a certificate\n")
        why = "%s: no PEM certificate in it" % cert
    elif kind == "unreadable key":
        if os.geteuid() == 0:
            pytest.skip("root reads a file of mode 000")
        key = str(tmp_path / "locked.key")
        (tmp_path / "locked.key").write_text(open(main.key).read())
        os.chmod(key, 0)
        why = "%s: Permission denied" % key
    elif kind == "key not PEM":
        key = cert  # a certificate where the key should be
        why = "%s: no PEM private key in it" % key
    elif kind == "key of another certificate":
        key, why = other.key, "%s: does not match the certificate %s" % (other.key, cert)
    if kind == "upstream client cert":
        text = ("[route /api/]\nupstream = api\n\n[upstream api]\nserver = https://127.0.0.1:9\n"
                "tls_cert = %s\ntls_key = %s\n" % (main.cert, other.key))
        return text, 7, "tls_key", "%s: does not match the certificate %s" % (other.key, main.cert)
    text = "[listen]\naddress = 127.0.0.1:0\n\n[listen tls]\naddress = 127.0.0.1:0\n" \
           "; the certificate\ntls_cert = %s\ntls_key = %s\n" % (cert, key)
    line, name = (7, "tls_cert") if kind in ("missing cert", "cert not PEM") else (8, "tls_key")
    return text, line, name, why


TLS_CASES = ["missing cert", "cert not PEM", "unreadable key", "key not PEM", "key of another certificate",
             "upstream client cert"]


@pytest.mark.parametrize("kind", TLS_CASES)
def test_a_tls_file_problem_is_an_error_at_its_line(tmp_path, site, certs, kind):
    """Before, a bad TLS file stopped the start without a line ("tether: TLS: FILE: ..."), and an upstream's client
    certificate only named its [upstream]; --check said nothing of either."""
    text, line, key, why = tls_case(kind, certs, tmp_path)
    cfg = tmp_path / "tls.ini"
    cfg.write_text(text + "[static]\nroot = %s\n" % site)
    for extra in (["--check"], ["--access-log", "off"]):
        out = run("serve", "--config", str(cfg), *extra)
        assert out.returncode == 2, out.stderr
        assert "tether: %s:%d: %s: %s" % (cfg, line, key, why) in out.stderr, out.stderr
        assert "listening" not in out.stderr and "configuration OK" not in out.stderr


def test_a_tls_flag_problem_names_the_flag(tmp_path, site, certs):
    out = run("serve", "--root", str(site), "--tls-listen", "127.0.0.1:0", "--tls-cert", certs.main.cert,
              "--tls-key", certs.other.key, "--check")
    assert out.returncode == 2
    assert "tether: --tls-key: %s: does not match the certificate %s\n" % (certs.other.key, certs.main.cert) \
        in out.stderr, out.stderr


def test_good_tls_files_pass_the_check(tmp_path, site, certs):
    text, _, _, _ = tls_case("none", certs, tmp_path)
    cfg = tmp_path / "tls.ini"
    cfg.write_text(text + "[static]\nroot = %s\n" % site)
    out = run("serve", "--config", str(cfg), "--check")
    assert out.returncode == 0 and "configuration OK" in out.stderr, out.stderr


def test_a_route_to_an_undefined_upstream_is_an_error_at_its_line(tmp_path, site):
    cfg = tmp_path / "route.ini"
    cfg.write_text("[upstream app]\nserver = 127.0.0.1:9\n\n[route /api/]\n; typo\nupstream = ap\n"
                   "[static]\nroot = %s\n" % site)
    for extra in (["--check"], ["--listen", "127.0.0.1:0", "--access-log", "off"]):
        out = run("serve", "--config", str(cfg), *extra)
        assert out.returncode == 2, out.stderr
        assert "tether: %s:6: upstream: no [upstream ap] section (in [route /api/])\n" % cfg in out.stderr, \
            out.stderr


# ---- the open file limit: max_connections sized to it ----

def start_with_nofile(soft, hard, *args):
    """Starts tether under RLIMIT_NOFILE (soft, hard), checks that it serves, stops it by PID and returns its
    stderr lines."""
    argv = [TETHER_BIN, "serve", "--listen", "127.0.0.1:0", "--access-log", "off"] + list(args)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
    lines = []
    pump = threading.Thread(target=lambda: lines.extend(l.rstrip("\n") for l in proc.stderr), daemon=True)
    pump.start()
    try:
        wait_for(lambda: proc.poll() is not None or any(LISTEN_RE.search(l) for l in list(lines)), "listening")
        assert proc.poll() is None, "tether exited: %s" % lines
        port = int(next(LISTEN_RE.search(l) for l in list(lines) if LISTEN_RE.search(l)).group(2).rpartition(":")[2])
        c = HttpConn("127.0.0.1", port)
        c.send(b"GET /100.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert c.response().status == 200
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20 * SLOW)
        pump.join(timeout=10 * SLOW)
    return list(lines)


def test_the_default_start_sizes_max_connections_to_the_open_file_limit(site):
    """A default start under a small open file limit says what it chose at info and warns about nothing (it used
    to warn on every default start). The soft limit is raised to the hard one first: 1024 is what it sizes to."""
    lines = start_with_nofile(256, 1024, "--root", str(site), "--workers", "2")
    assert [l for l in lines if "[warn]" in l or "[error]" in l] == [], lines
    sized = [l for l in lines if "[info] max_connections" in l]
    assert len(sized) == 1, lines
    m = re.search(r"max_connections (\d+) per worker, sized to the open file limit 1024: 2 workers x \d+ x 2 "
                  r"descriptors .* \+ (\d+) for listeners and logs", sized[0])
    assert m, sized
    n, reserved = int(m.group(1)), int(m.group(2))
    assert 2 * n * 2 + reserved <= 1024 < 2 * (n + 1) * 2 + reserved
    assert reserved >= 2 * 1 + 3  # at least one listening socket per worker and stdio


def test_an_explicit_max_connections_that_cannot_fit_is_warned_about(site, tmp_path):
    lines = start_with_nofile(1024, 1024, "--root", str(site), "--workers", "2", "--max-connections", "5000")
    warns = [l for l in lines if "[warn]" in l]
    assert len(warns) == 1 and "max_connections 5000 per worker (--max-connections) does not fit the open file " \
        "limit 1024" in warns[0], lines
    cfg = tmp_path / "t.ini"
    cfg.write_text("[server]\nworkers = 1\nmax_connections = 800\n[static]\nroot = %s\n" % site)
    lines = start_with_nofile(512, 512, "--config", str(cfg))
    warns = [l for l in lines if "[warn]" in l]
    assert len(warns) == 1 and "max_connections 800 per worker (%s:3) does not fit" % cfg in warns[0], lines
    # an explicit value that fits: no warning
    lines = start_with_nofile(512, 512, "--root", str(site), "--workers", "1", "--max-connections", "100")
    assert [l for l in lines if "[warn]" in l] == [], lines
    assert any("[info] max_connections 100 per worker" in l for l in lines), lines


# ---- 4. help ----

def test_help_says_what_tether_is_today():
    out = run("--help")
    assert out.returncode == 0
    text = out.stdout
    for word in ("HTTP/1.1", "HTTP/2", "reverse proxy", "TLS", "probe", "bench"):
        assert word in text, word
    assert "an HTTP/1.1 server" not in text
    for example in ("tether serve --root", "tether probe http", "tether bench http"):
        assert example in text, example


def test_serve_help_has_check_signals_and_an_example():
    out = run("serve", "--help")
    assert out.returncode == 0
    text = out.stdout
    for word in ("HTTP/2", "TLS", "-t, --check", "SIGUSR1", "SIGHUP"):
        assert word in text, word
    assert re.search(r"^\s+tether serve --root \S+ .*--listen", text, re.M), text
    assert "persistent HTTP/1.1." not in text
