"""Running tether as a service (issue 13): sd_notify messages to a service manager (READY=1 once it serves,
RELOADING=1/READY=1 around a SIGHUP, STOPPING=1 when a drain starts), and `[server] user` (and `group`), the
switch from root to an unprivileged user after the listeners are bound and the log files open.

The notify socket here is a unix datagram socket of the test's own, named by NOTIFY_SOCKET in tether's
environment, exactly as systemd passes it to a Type=notify service."""

import os
import pwd
import grp
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import SLOW, TETHER_BIN, HttpConn


class NotifySocket:
    """The service manager's end: a bound AF_UNIX datagram socket collecting sd_notify messages."""

    def __init__(self, directory):
        self.path = os.path.join(str(directory), "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o777)  # like /run/systemd/notify: a process that left root still reaches it
        self.messages = []  # each a dict of the assignments of one datagram

    def env(self):
        return dict(os.environ, NOTIFY_SOCKET=self.path)

    def wait_for(self, key, value=None, timeout=10):
        """The first message (after those already returned) that assigns `key` (= `value` when given)."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            for i, m in enumerate(self.messages):
                if key in m and (value is None or m[key] == value):
                    del self.messages[:i + 1]
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s=%s from tether in %ss (got %r)" % (key, value, timeout, self.messages))
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line))

    def pending(self, wait=0.2):
        """Messages that arrive within `wait` seconds (and any not returned yet)."""
        self.sock.settimeout(wait)
        try:
            while True:
                data = self.sock.recv(4096)
                self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line))
        except socket.timeout:
            pass
        return self.messages

    def close(self):
        self.sock.close()


@pytest.fixture
def shared_dir():
    """A directory every user may read (tmp_path is root's only): the site, logs and notify socket of a tether
    that switches to `nobody`."""
    d = tempfile.mkdtemp(prefix="tether-service-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def fetch(port, path="/"):
    c = HttpConn("127.0.0.1", port)
    try:
        c.request("GET", path, headers={"Connection": "close"})
        return c.response()
    finally:
        c.close()


def proc_ids(pid):
    """(uids, gids, groups) from /proc/PID/status: real, effective, saved, filesystem ids."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = [int(x) for x in v.split()] if k in ("Uid", "Gid", "Groups") else v
    return out["Uid"], out["Gid"], out["Groups"]


# ---- sd_notify ----

def test_ready_comes_once_it_serves_and_stopping_on_sigterm(tether, site, tmp_path):
    """Type=notify: systemd treats the service as started when READY=1 arrives, so it must come only when the
    listeners accept and the workers answer; STOPPING=1 when SIGTERM starts the drain. Without sd_notify, systemd
    would time the start out (TimeoutStartSec) and kill tether."""
    ns = NotifySocket(tmp_path)
    try:
        t = tether("--root", str(site), env=ns.env(), ready=False)
        ready = ns.wait_for("READY", "1")
        assert int(ready["MAINPID"]) == t.proc.pid
        # READY=1 means serving: the port is known from the log and answers at once.
        t.wait_ready()
        r = fetch(t.port, "/100.txt")
        assert r.status == 200 and len(r.body) == 100
        status = ns.wait_for("STATUS")
        assert "serving 1 listening address with" in status["STATUS"]
        t.send_signal(signal.SIGTERM)
        ns.wait_for("STOPPING", "1")
        assert t.proc.wait(10 * SLOW) == 0
    finally:
        ns.close()


@pytest.mark.multiworker
def test_sighup_is_reloading_then_ready(tether, site, tmp_path):
    """ExecReload=kill -HUP: RELOADING=1 with MONOTONIC_USEC (systemd >= 253 ties the reload to it), then READY=1
    when the reload is done; tether keeps serving."""
    ns = NotifySocket(tmp_path)
    try:
        t = tether("--root", str(site), "--workers", "2", env=ns.env())
        ns.wait_for("READY", "1")
        before = time.clock_gettime(time.CLOCK_MONOTONIC)
        t.send_signal(signal.SIGHUP)
        m = ns.wait_for("RELOADING", "1")
        after = time.clock_gettime(time.CLOCK_MONOTONIC)
        usec = int(m["MONOTONIC_USEC"])
        assert before * 1e6 - 1e6 <= usec <= after * 1e6 + 1e6  # CLOCK_MONOTONIC, in microseconds
        ns.wait_for("READY", "1")
        assert fetch(t.port).status == 200
    finally:
        ns.close()


def test_a_refused_reload_is_ready_again(tether, site, tmp_path):
    """A reload whose file has an error is refused and the running configuration stays: systemd must still get
    READY=1 after RELOADING=1, or it would wait for the reload until its timeout."""
    ns = NotifySocket(tmp_path)
    try:
        t = tether(config="[static]\nroot = %s\n" % site, env=ns.env())
        ns.wait_for("READY", "1")
        with open(t.config_path, "a") as f:
            f.write("[keepalive]\nidle_timeout = forever\n")
        t.send_signal(signal.SIGHUP)
        ns.wait_for("RELOADING", "1")
        ns.wait_for("READY", "1")
        assert fetch(t.port).status == 200
    finally:
        ns.close()


def test_without_notify_socket_nothing_is_sent(tether, site, tmp_path):
    """Started by hand (no NOTIFY_SOCKET), tether sends nothing and runs as before: a socket bound at the usual
    place hears nothing."""
    ns = NotifySocket(tmp_path)
    try:
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        t = tether("--root", str(site), env=env)
        assert fetch(t.port).status == 200
        assert ns.pending(0.3) == []
    finally:
        ns.close()


# ---- [server] user ----

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root (CI runs the tests as root)")


def nobody():
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody on this system")


@needs_root
def test_user_nobody_after_binding(tether, shared_dir, tmp_path):
    """`user = nobody`: every id of the running process is nobody's (real, effective, saved, filesystem; no
    supplementary group of root), it serves a file nobody may read, the access log file it created as root was
    given to nobody (so a reopen works), and READY=1 still reaches the notify socket after the switch."""
    pw = nobody()
    site = os.path.join(shared_dir, "site")
    os.mkdir(site, 0o755)
    with open(os.path.join(site, "index.html"), "w") as f:
        f.write("<h1>as nobody</h1>\n")
    os.chmod(os.path.join(site, "index.html"), 0o644)
    alog = os.path.join(shared_dir, "access.log")
    ns = NotifySocket(shared_dir)
    try:
        config = "[server]\nuser = nobody\n\n[static]\nroot = %s\n" % site
        t = tether("--access-log", alog, config=config, env=ns.env())
        ns.wait_for("READY", "1")
        uids, gids, groups = proc_ids(t.proc.pid)
        assert uids == [pw.pw_uid] * 4
        assert gids == [pw.pw_gid] * 4
        assert 0 not in groups
        r = fetch(t.port)
        assert r.status == 200 and r.body == b"<h1>as nobody</h1>\n"
        st = os.stat(alog)
        assert (st.st_uid, st.st_gid) == (pw.pw_uid, pw.pw_gid)
        assert "running as user nobody" in t.stderr()
        # SIGUSR1 after a rotation: nobody creates the new file (the directory lets it) and writes to it.
        os.chmod(shared_dir, 0o777)
        os.rename(alog, alog + ".1")
        t.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10 * SLOW
        while not os.path.exists(alog):
            assert time.monotonic() < deadline, "the access log was not created again:\n" + t.stderr()
            time.sleep(0.02)
        assert os.stat(alog).st_uid == pw.pw_uid
    finally:
        ns.close()


@needs_root
def test_a_pid_file_the_user_cannot_remove_is_reported_at_exit(tether, shared_dir):
    """The pid file is written as root, before `user = nobody` takes effect; at exit nobody may not remove it from a
    directory only root writes: the error log says so (it was silent), and the file is left, not half-handled."""
    nobody()
    pid_file = os.path.join(shared_dir, "tether.pid")  # shared_dir: root's, mode 0755
    config = "[server]\nuser = nobody\npid_file = %s\n" % pid_file
    t = tether("--root", shared_dir, "--access-log", "off", config=config).wait_ready()
    with open(pid_file) as f:
        assert int(f.read().strip()) == t.proc.pid
    t.stop()
    assert "pid_file %s: not removed: Permission denied" % pid_file in t.stderr(), t.stderr()
    assert os.path.exists(pid_file)


@needs_root
def test_user_and_group(tether, shared_dir):
    """`group = NAME` replaces the user's primary group."""
    pw = nobody()
    try:
        gr = grp.getgrnam("daemon")
    except KeyError:
        pytest.skip("no group daemon")
    config = "[server]\nuser = nobody\ngroup = daemon\n"
    t = tether("--root", shared_dir, "--access-log", "off", config=config)
    deadline = time.monotonic() + 10 * SLOW
    while "running as user nobody" not in t.stderr():  # the switch comes after the listeners are logged
        assert time.monotonic() < deadline, t.stderr()
        time.sleep(0.02)
    uids, gids, _ = proc_ids(t.proc.pid)
    assert uids == [pw.pw_uid] * 4
    assert gids == [gr.gr_gid] * 4


@needs_root
def test_a_reload_cannot_change_the_user(tether, shared_dir):
    """The switch is for good: a reload that names another user says it takes a restart and keeps running as
    the user it switched to."""
    pw = nobody()
    config = "[server]\nuser = nobody\n\n[static]\nroot = %s\n" % shared_dir
    path = os.path.join(shared_dir, "tether.ini")  # a reload reads it as nobody
    with open(path, "w") as f:
        f.write(config)
    os.chmod(path, 0o644)
    t = tether("--access-log", "off", "--config", path)
    deadline = time.monotonic() + 10 * SLOW
    while "running as user nobody" not in t.stderr():
        assert time.monotonic() < deadline, t.stderr()
        time.sleep(0.02)
    with open(path, "w") as f:
        f.write(config.replace("user = nobody", "user = daemon"))
    t.send_signal(signal.SIGHUP)
    while "reload: [server] user changed: it takes a restart" not in t.stderr():
        assert time.monotonic() < deadline + 10 * SLOW, t.stderr()
        time.sleep(0.02)
    assert proc_ids(t.proc.pid)[0] == [pw.pw_uid] * 4
    assert fetch(t.port).status in (200, 403)


def test_unknown_user_or_group_is_a_startup_error_at_its_line(tmp_path, site):
    path = tmp_path / "t.ini"
    path.write_text("[server]\nworkers = 1\nuser = no-such-user-tt\n\n[static]\nroot = %s\n" % site)
    for args in (["serve", "--config", str(path)], ["serve", "--check", "--config", str(path)]):
        p = subprocess.run([TETHER_BIN] + args + ["--listen", "127.0.0.1:0"], capture_output=True, text=True,
                           timeout=10 * SLOW)
        assert p.returncode == 2, p.stderr
        assert "tether: %s:3: user: no-such-user-tt: no such user" % path in p.stderr
    path.write_text("[server]\nuser = root\ngroup = no-such-group-tt\n\n[static]\nroot = %s\n" % site)
    p = subprocess.run([TETHER_BIN, "serve", "--check", "--config", str(path)], capture_output=True, text=True,
                       timeout=10 * SLOW)
    assert p.returncode == 2 and "%s:3: group: no-such-group-tt: no such group" % path in p.stderr
    path.write_text("[server]\ngroup = daemon\n\n[static]\nroot = %s\n" % site)
    p = subprocess.run([TETHER_BIN, "serve", "--check", "--config", str(path)], capture_output=True, text=True,
                       timeout=10 * SLOW)
    assert p.returncode == 2 and "%s:2: group: needs user" % path in p.stderr


@needs_root
def test_not_root_cannot_switch_to_another_user(shared_dir):
    """Started as nobody with `user = daemon`: a clear start-up error, not a silent run as the wrong user."""
    pw = nobody()
    exe = os.path.join(shared_dir, "tether")
    shutil.copy(TETHER_BIN, exe)  # the build tree may sit in a directory nobody cannot enter
    os.chmod(exe, 0o755)
    os.mkdir(os.path.join(shared_dir, "site"), 0o755)
    path = os.path.join(shared_dir, "t.ini")
    with open(path, "w") as f:
        f.write("[server]\nworkers = 1\nuser = daemon\n\n[static]\nroot = %s/site\n" % shared_dir)
    os.chmod(path, 0o644)
    p = subprocess.run([exe, "serve", "--config", path, "--listen", "127.0.0.1:0", "--access-log", "off"],
                       capture_output=True, text=True, timeout=10 * SLOW, user=pw.pw_uid, group=pw.pw_gid,
                       extra_groups=[], cwd=shared_dir)
    assert p.returncode == 2, p.stderr
    assert "%s:3: user: tether runs as uid %d, not as root, and cannot switch to user daemon" % (path, pw.pw_uid) \
        in p.stderr
    # As the user it names, the key is accepted and nothing changes.
    with open(path, "w") as f:
        f.write("[server]\nworkers = 1\nuser = nobody\n\n[static]\nroot = %s/site\n" % shared_dir)
    p = subprocess.Popen([exe, "serve", "--config", path, "--listen", "127.0.0.1:0", "--access-log", "off"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, user=pw.pw_uid,
                         group=pw.pw_gid, extra_groups=[], cwd=shared_dir)
    try:
        deadline = time.monotonic() + 10 * SLOW
        line = ""
        while "running as user nobody" not in line:
            line = p.stderr.readline()
            assert line and time.monotonic() < deadline, "did not start as nobody"
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(10 * SLOW) == 0
