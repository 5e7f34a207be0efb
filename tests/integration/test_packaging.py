"""The service files (issue 13): the man pages render without warnings and cannot fall behind docs/config.md or
the commands' --help, the systemd unit verifies and its numbers agree with the server's, and `make install`
(DESTDIR, PREFIX=/usr) installs a configuration that serves the installed example site.

The Debian package itself is built and installed by tests/package/test_deb.sh (CTest: package/deb)."""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import LISTEN_RE, SLOW, SOURCE_DIR, TETHER_BIN, HttpConn

MAN1 = os.path.join(SOURCE_DIR, "docs", "man", "tether.1")
MAN5 = os.path.join(SOURCE_DIR, "docs", "man", "tether.ini.5")
UNIT = os.path.join(SOURCE_DIR, "contrib", "tether.service")
SERVICE_INI = os.path.join(SOURCE_DIR, "contrib", "tether.ini")


def render(page):
    """The page as plain text (groff, no overstriking), after checking it renders without a warning."""
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed (groff-base, scripts/install-deps.sh)")
    p = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-P-cbou", page], capture_output=True, text=True,
                       timeout=30, env=dict(os.environ, LC_ALL="C.UTF-8"))
    assert p.returncode == 0 and p.stderr == "", "%s: groff says:\n%s" % (page, p.stderr)
    return p.stdout


@pytest.mark.parametrize("page", [MAN1, MAN5], ids=["tether.1", "tether.ini.5"])
def test_man_page_renders_without_warnings(page):
    text = render(page)
    assert "NAME" in text and "SEE ALSO" in text
    if shutil.which("man"):  # man-db's own check (it runs groff with its own macros and preprocessors)
        p = subprocess.run(["man", "--warnings", "-l", page], capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, MANPAGER="cat", PAGER="cat", MANWIDTH="100", LC_ALL="C.UTF-8"))
        assert p.returncode == 0 and p.stderr.strip() == "", p.stderr


def config_md_keys():
    """{section: [keys]} from docs/config.md's tables: a table's keys belong to the last `## [section]` heading."""
    out = {}
    section = None
    with open(os.path.join(SOURCE_DIR, "docs", "config.md")) as f:
        for line in f:
            m = re.match(r"## `\[([a-z_0-9]+)", line)
            if m:
                section = m.group(1)
                continue
            if line.startswith("## "):
                section = None  # a heading without a section (Connection pressure) has no keys
            m = re.match(r"\| (`[a-z_0-9]+`(?:, `[a-z_0-9]+`)*) \|", line)
            if m and section:
                out.setdefault(section, []).extend(re.findall(r"`([a-z_0-9]+)`", m.group(1)))
    return out


def man_sections(text):
    """{section: text} of tether.ini.5's `[section]` subsections (their rendered headings are `   [name...`)."""
    out = {}
    name = None
    for line in text.splitlines():
        m = re.match(r"^ {3}\[([a-z_0-9]+)", line)
        if m:
            name = m.group(1)
            out[name] = ""
        elif re.match(r"^\S", line):
            name = None
        elif name:
            out[name] += line + "\n"
    return out


def test_every_key_of_config_md_is_in_tether_ini_5_under_its_section():
    """A key added to docs/config.md and not to the man page fails here, naming it."""
    keys = config_md_keys()
    assert len(keys) >= 12 and "max_connections" in keys["server"] and "replay" in keys["upstream"]
    man = man_sections(render(MAN5))
    missing = []
    for section, names in keys.items():
        body = man.get(section)
        if body is None:
            missing.append("[%s] (the whole section)" % section)
            continue
        for k in names:
            if not re.search(r"(?<![A-Za-z0-9_])%s(?![A-Za-z0-9_])" % k, body):
                missing.append("[%s] %s" % (section, k))
    assert not missing, "docs/config.md keys missing from docs/man/tether.ini.5: " + ", ".join(missing)


def help_text(*args):
    p = subprocess.run([TETHER_BIN] + list(args), capture_output=True, text=True, timeout=10 * SLOW)
    return p.stdout + p.stderr


def test_every_command_and_option_of_the_help_is_in_tether_1():
    """The commands of `tether --help` and every long option of each command's --help are in tether(1)."""
    man = render(MAN1)
    top = help_text("--help")
    commands = re.findall(r"^  ([a-z]+) {2,}", top.split("commands:", 1)[1], re.M)
    assert {"serve", "probe", "bench"} <= set(commands)
    missing = [c for c in commands if not re.search(r"^ {7}%s\b" % c, man, re.M)]
    for c in commands:
        for opt in sorted(set(re.findall(r"(--[a-z][a-z0-9-]+)", help_text(c, "--help")))):
            if not re.search(r"(?<![a-z-])%s(?![a-z-])" % re.escape(opt), man):
                missing.append("%s %s" % (c, opt))
    assert not missing, "missing from docs/man/tether.1: " + ", ".join(missing)


# ---- the systemd unit ----

def unit_values(key):
    with open(UNIT) as f:
        return [line.split("=", 1)[1].strip() for line in f if line.startswith(key + "=")]


def seconds(v):
    m = re.fullmatch(r"(\d+)(ms|s|min)?", v)
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "min": 60, None: 1}[m.group(2)]


def test_unit_verifies(tmp_path):
    """systemd-analyze verify finds nothing to say (unknown keys, bad values, missing executables: ExecStart
    points at the built binary here, /usr/bin/tether in the package)."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (it comes with systemd)")
    with open(UNIT) as f:
        text = f.read().replace("/usr/bin/tether", TETHER_BIN)
    (tmp_path / "tether.service").write_text(text)
    p = subprocess.run([exe, "verify", "--man=no", str(tmp_path / "tether.service")], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stderr.strip() == "" and p.stdout.strip() == "", p.stdout + p.stderr


def test_unit_numbers_agree_with_the_server():
    """Type=notify (tether sends READY=1), a reload that checks the file then sends SIGHUP, a stop timeout longer
    than the drain, and LimitNOFILE holding the default max_connections (10000 per worker) as its comment says."""
    assert unit_values("Type") == ["notify"]
    reload = unit_values("ExecReload")
    assert reload[0].endswith("serve --check --config /etc/tether/tether.ini")
    assert reload[-1] == "/bin/kill -HUP $MAINPID"
    with open(SERVICE_INI) as f:
        drain = re.search(r"^drain_timeout = (\d+)s", f.read(), re.M)
    drain = int(drain.group(1)) if drain else 10
    assert seconds(unit_values("TimeoutStopSec")[0]) > drain
    nofile = int(unit_values("LimitNOFILE")[0])

    def fit(workers, addresses=2):  # serve.c size_connections()
        return (nofile - 64 - workers * (addresses + 4)) // (2 * workers)
    assert fit(26) >= 10000 > fit(27)  # "holds it for up to 26 workers"
    with open(UNIT) as f:
        assert "up to 26 workers" in f.read()
    assert unit_values("User") == ["tether"]
    assert "CAP_NET_BIND_SERVICE" in unit_values("AmbientCapabilities")[0]
    for hardening in ("ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes",
                      "ProtectKernelTunables=yes", "ProtectControlGroups=yes",
                      "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "LogsDirectory=tether",
                      "RuntimeDirectory=tether", "KillSignal=SIGTERM"):
        k, v = hardening.split("=", 1)
        assert unit_values(k) == [v], hardening


def test_pid_file_is_in_the_units_runtime_directory():
    """As nginx's package names /run/nginx.pid in both its nginx.conf and its unit: the packaged configuration's
    pid_file is in the directory the unit makes for the user it runs as (RuntimeDirectory=, under /run), since that
    user cannot write /run itself; the Debian package makes the same directory for starts outside systemd."""
    with open(SERVICE_INI) as f:
        m = re.search(r"^pid_file = (\S+)", f.read(), re.M)
    assert m, "contrib/tether.ini sets no pid_file"
    rundir = "/run/" + unit_values("RuntimeDirectory")[0]
    assert os.path.dirname(m.group(1)) == rundir, m.group(1)
    with open(os.path.join(SOURCE_DIR, "debian", "tether.tmpfiles")) as f:
        assert "d %s 0755 tether tether -" % rundir in f.read().splitlines()
    with open(os.path.join(SOURCE_DIR, "debian", "tether.postinst")) as f:
        assert "install -d -o tether -g tether -m 0755 %s" % rundir in f.read()


# ---- make install ----

EXPECTED = ["usr/bin/tether", "usr/share/man/man1/tether.1", "usr/share/man/man5/tether.ini.5",
            "lib/systemd/system/tether.service", "etc/tether/tether.ini", "usr/share/tether/site/index.html",
            "usr/share/tether/site/style.css", "usr/share/doc/tether/README.md", "usr/share/doc/tether/config.md",
            "usr/share/doc/tether/examples/tether.ini"]


def serve_installed(root, ini_text, workdir):
    """Starts root/usr/bin/tether with the installed configuration, its paths moved under `root`, the port 0 on
    loopback, no metrics listener, the access log and the pid file (tether.pid) in `workdir`; returns (process,
    port)."""
    ini = ini_text.replace("/usr/share/tether/site", os.path.join(root, "usr/share/tether/site"))
    ini = re.sub(r"^address = .*$", "address = 127.0.0.1:0", ini, flags=re.M)
    ini = re.sub(r"^listen = .*$", "listen = off", ini, flags=re.M)
    ini = re.sub(r"^access_log = .*$", "access_log = " + os.path.join(workdir, "access.log"), ini, flags=re.M)
    ini = re.sub(r"^pid_file = \S+", "pid_file = " + os.path.join(workdir, "tether.pid"), ini, flags=re.M)
    path = os.path.join(workdir, "installed.ini")
    with open(path, "w") as f:
        f.write(ini)
    exe = os.path.join(root, "usr/bin/tether")
    check = subprocess.run([exe, "serve", "--check", "--config", path], capture_output=True, text=True,
                           timeout=10 * SLOW)
    assert check.returncode == 0, check.stderr
    p = subprocess.Popen([exe, "serve", "--config", path, "--workers", "1"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10 * SLOW
    while True:
        line = p.stderr.readline()
        m = LISTEN_RE.search(line)
        if m:
            return p, int(m.group(2).rpartition(":")[2])
        if not line or time.monotonic() > deadline:
            p.kill()
            raise AssertionError("the installed tether did not start: " + line)


def test_make_install_destdir_prefix_usr(tmp_path):
    """`make install DESTDIR=D PREFIX=/usr`: every file where a Debian system expects it (the configuration in
    /etc/tether, the unit in /lib/systemd/system), the unit and configuration with the installed paths, and the
    installed binary serves the installed site with the installed configuration."""
    build = os.path.dirname(TETHER_BIN)
    if not os.path.exists(os.path.join(build, "cmake_install.cmake")):
        pytest.skip("TETHER_BIN is not in a CMake build directory")
    dest = tmp_path / "root"
    env = dict(os.environ)
    env.pop("MAKEFLAGS", None)
    p = subprocess.run(["make", "-C", SOURCE_DIR, "--no-print-directory", "install", "BUILD=" + build, "DESTDIR=" +
                        str(dest), "PREFIX=/usr", "JOBS=2"], capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    missing = [f for f in EXPECTED if not (dest / f).is_file()]
    assert not missing, "not installed: %s\n%s" % (missing, p.stdout[-3000:])
    with open(SERVICE_INI) as f:
        assert (dest / "etc/tether/tether.ini").read_text() == f.read()
    with open(UNIT) as f:
        assert (dest / "lib/systemd/system/tether.service").read_text() == f.read()
    assert os.access(dest / "usr/bin/tether", os.X_OK)

    # A second install keeps the administrator's file and puts the new one beside it.
    (dest / "etc/tether/tether.ini").write_text("; mine\n")
    p = subprocess.run(["make", "-C", SOURCE_DIR, "--no-print-directory", "install", "BUILD=" + build, "DESTDIR=" +
                        str(dest), "PREFIX=/usr", "JOBS=2"], capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (dest / "etc/tether/tether.ini").read_text() == "; mine\n"
    assert (dest / "etc/tether/tether.ini.new").is_file()

    proc, port = serve_installed(str(dest), (dest / "etc/tether/tether.ini.new").read_text(), str(tmp_path))
    try:
        c = HttpConn("127.0.0.1", port)
        c.request("GET", "/", headers={"Connection": "close"})
        r = c.response()
        c.close()
        with open(os.path.join(SOURCE_DIR, "examples", "site", "index.html"), "rb") as f:
            assert r.status == 200 and r.body == f.read()
        assert (tmp_path / "tether.pid").read_text() == "%d\n" % proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10 * SLOW) == 0
    assert not (tmp_path / "tether.pid").exists()


def test_install_with_another_prefix_rewrites_the_paths(tmp_path):
    """PREFIX=/opt/tether: the configuration goes to /opt/tether/etc/tether and both it and the unit name the
    installed binary, configuration and site."""
    build = os.path.dirname(TETHER_BIN)
    if not os.path.exists(os.path.join(build, "cmake_install.cmake")):
        pytest.skip("TETHER_BIN is not in a CMake build directory")
    dest = tmp_path / "root"
    p = subprocess.run(["cmake", "--install", build, "--prefix", "/opt/tether"], capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, DESTDIR=str(dest)))
    assert p.returncode == 0, p.stderr
    unit = (dest / "opt/tether/lib/systemd/system/tether.service").read_text()
    assert "ExecStart=/opt/tether/bin/tether serve --config /opt/tether/etc/tether/tether.ini" in unit
    ini = (dest / "opt/tether/etc/tether/tether.ini").read_text()
    assert "root = /opt/tether/share/tether/site" in ini
    assert (dest / "opt/tether/share/tether/site/index.html").is_file()


def test_build_depends_are_installed_by_install_deps():
    """debian/control's Build-Depends are all in scripts/install-deps.sh, so `make deb` works after `make deps`."""
    with open(os.path.join(SOURCE_DIR, "debian", "control")) as f:
        control = f.read()
    deps = re.search(r"^Build-Depends:(.*?)^\S", control, re.M | re.S).group(1)
    names = [re.sub(r"\s*\(.*?\)", "", d).strip() for d in deps.split(",") if d.strip()]
    names = ["debhelper" if n == "debhelper-compat" else n for n in names]
    with open(os.path.join(SOURCE_DIR, "scripts", "install-deps.sh")) as f:
        block = re.search(r"^packages=\((.*?)^\)", f.read(), re.S | re.M).group(1)
    listed = set(re.sub(r"#[^\n]*", "", block).split())
    assert names and not [n for n in names if n not in listed], (names, listed)


def test_every_library_cmake_finds_is_a_build_dependency():
    """Each pkg_check_modules() of CMakeLists.txt is provided by a package of debian/control's Build-Depends (a
    library added to the build and not to the package fails `make deb` only on a clean machine otherwise)."""
    if shutil.which("dpkg") is None or shutil.which("pkg-config") is None:
        pytest.skip("dpkg or pkg-config missing")
    with open(os.path.join(SOURCE_DIR, "CMakeLists.txt")) as f:
        modules = re.findall(r"pkg_check_modules\(\w+ REQUIRED IMPORTED_TARGET ([\w.-]+)\)", f.read())
    with open(os.path.join(SOURCE_DIR, "debian", "control")) as f:
        deps = re.search(r"^Build-Depends:(.*?)^\S", f.read(), re.M | re.S).group(1)
    build_depends = {re.sub(r"\s*\(.*?\)", "", d).strip() for d in deps.split(",")}
    assert len(modules) >= 4
    missing = []
    for m in modules:
        pcdir = subprocess.run(["pkg-config", "--variable=pcfiledir", m], capture_output=True, text=True).stdout
        owner = subprocess.run(["dpkg", "-S", os.path.join(pcdir.strip(), m + ".pc")], capture_output=True,
                               text=True).stdout.split(":")[0]
        if owner not in build_depends:
            missing.append("%s (%s)" % (owner or "?", m))
    assert not missing, "not in debian/control Build-Depends: " + ", ".join(missing)
