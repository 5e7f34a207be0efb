#!/usr/bin/env bash
# test_deb.sh -- `make deb` builds the Debian package, and the package works (issue 13). CTest runs it as
# package/deb in the normal build (not the sanitizer ones: it compiles the whole project again, about a minute
# of CPU with -j2).
#
# 1. make deb (dpkg-buildpackage -us -uc -b on a copy of the tree) into a scratch directory;
# 2. dpkg-deb -c: the binary, the unit, the man pages, the configuration (a conffile), the example site;
# 3. dpkg -x into a throwaway root: the packaged binary serves the packaged site with the packaged configuration
#    (paths moved under the root, port 0 on loopback);
# 4. as root, with tether not already installed (a throwaway CI machine): dpkg -i for real (postinst creates the
#    user tether; without systemd as PID 1 nothing is started), the installed tether serves the installed site as
#    user tether, with systemd also `systemctl start tether` answers on port 8080; then dpkg --purge removes
#    the files, the user and the logs. TT_DEB_INSTALL=0 skips this step.
# Exit status 0, 77 (CTest's skip) when dpkg-buildpackage or debhelper is missing, else 1 with the reason.
set -euo pipefail

src=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/tether-deb.XXXXXX)
chmod 755 "$work"
installed=0
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if [ "$installed" = 1 ]; then dpkg --purge tether >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "test_deb: FAIL: $*" >&2; exit 1; }
say() { echo "test_deb: $*"; }

for tool in dpkg-buildpackage dh dpkg-deb curl; do
  command -v "$tool" >/dev/null || { echo "test_deb: SKIP: $tool is not installed (scripts/install-deps.sh)"; exit 77; }
done

# 1. build (TT_DEB_FILE=PATH tests an already built package instead: for working on this script)
if [ -n "${TT_DEB_FILE:-}" ]; then
  mkdir "$work/deb" && cp "$TT_DEB_FILE" "$work/deb/"
else
say "make deb (dpkg-buildpackage, -j2)"
start=$(date +%s)
if ! make -C "$src" --no-print-directory deb DEB_DIR="$work/deb" DEB_WORK="$work/build" JOBS=2 \
     >"$work/build.log" 2>&1; then
  tail -40 "$work/build.log" >&2
  fail "make deb failed"
fi
say "built in $(( $(date +%s) - start )) s"
fi
deb=$(ls "$work"/deb/tether_*_*.deb 2>/dev/null | grep -v dbgsym | head -1 || true)
[ -f "$deb" ] || fail "no tether_*.deb in $work/deb"

# 2. contents
contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
for f in ./usr/bin/tether ./lib/systemd/system/tether.service ./usr/share/man/man1/tether.1.gz \
         ./usr/share/man/man5/tether.ini.5.gz ./etc/tether/tether.ini ./usr/share/tether/site/index.html \
         ./usr/share/doc/tether/copyright ./usr/share/doc/tether/examples/tether.ini ./etc/logrotate.d/tether; do
  grep -qx -- "$f" <<<"$contents" || fail "$f is not in $(basename "$deb")"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -x /etc/tether/tether.ini >/dev/null ||
  fail "/etc/tether/tether.ini is not a conffile"
[ "$(dpkg-deb -f "$deb" Version)" = "$(sed -n 's/^project(tether VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")" ] ||
  fail "debian/changelog's version is not CMakeLists.txt's"
say "contents: binary, unit, man pages, conffile, site, docs"

# Starts BIN with config INI (a free loopback port in it) in the background, sets $port from its log. Extra
# args: a command prefix (setpriv). Its output goes to files, never to a pipe the script waits on.
serve() {
  local ini=$1 bin=$2 log=$3; shift 3
  "$@" "$bin" serve --config "$ini" --workers 1 >/dev/null 2>"$log" </dev/null &
  pids+=($!)
  local i
  port=
  for i in $(seq 1 200); do
    port=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" 2>/dev/null | head -1 || true)
    [ -n "$port" ] && break
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.05
  done
  [ -n "$port" ] || { cat "$log" >&2; fail "$bin did not start"; }
}
# Stops the last server started: SIGTERM, and it must exit 0.
stop_last() {
  local p=${pids[-1]}
  kill -TERM "$p"
  wait "$p" || fail "$1 did not exit 0 after SIGTERM"
  unset 'pids[-1]'
}
# The packaged configuration with ROOT's paths, port 0, no metrics listener, the access log ACCESS_LOG, and the
# pid file PID_FILE when given (else the packaged one).
local_ini() {
  sed -e "s#^root = /usr/share/tether/site#root = $1/usr/share/tether/site#" \
      -e 's#^address = .*#address = 127.0.0.1:0#' -e 's#^listen = .*#listen = off#' \
      -e "s#^access_log = .*#access_log = $2#" ${3:+-e "s#^pid_file = [^ ]*#pid_file = $3#"} "$1/etc/tether/tether.ini"
}
# The last server started wrote its process id into PID_FILE.
check_pid_file() {
  [ "$(cat "$1" 2>/dev/null)" = "${pids[-1]}" ] || fail "$1 does not hold the pid ${pids[-1]}: '$(cat "$1" 2>&1)'"
}

# 3. unpacked into a throwaway root
mkdir "$work/root"
dpkg -x "$deb" "$work/root"
grep -q '^pid_file = /run/tether/tether.pid ' "$work/root/etc/tether/tether.ini" ||
  fail "the packaged configuration has no pid_file in /run/tether (the unit's RuntimeDirectory)"
grep -qx 'd /run/tether 0755 tether tether -' "$work/root/usr/lib/tmpfiles.d/tether.conf" ||
  fail "no tmpfiles.d entry for /run/tether"
local_ini "$work/root" "$work/x-access.log" "$work/x.pid" >"$work/x.ini"
"$work/root/usr/bin/tether" serve --check --config "$work/x.ini" 2>/dev/null || fail "packaged config: --check failed"
serve "$work/x.ini" "$work/root/usr/bin/tether" "$work/x.log"
check_pid_file "$work/x.pid"
curl -sf "http://127.0.0.1:$port/" -o "$work/x.html" || fail "GET / from the unpacked package failed"
cmp -s "$work/x.html" "$src/examples/site/index.html" || fail "the unpacked package did not serve the example site"
stop_last "the unpacked tether"
[ ! -e "$work/x.pid" ] || fail "the pid file stayed after the exit"
say "unpacked: serves the example site, writes and removes its pid file"

# 4. dpkg -i on this (throwaway) machine
if [ "${TT_DEB_INSTALL:-1}" = 0 ] || [ "$(id -u)" -ne 0 ]; then
  say "SKIP dpkg -i (TT_DEB_INSTALL=0 or not root)"; exit 0
fi
if [ -n "$(dpkg-query -W -f='${Status}' tether 2>/dev/null || true)" ]; then
  say "SKIP dpkg -i: dpkg already knows a tether package here"; exit 0
fi
if getent passwd tether >/dev/null; then
  say "SKIP dpkg -i: a user tether already exists (its removal on purge would not be ours)"; exit 0
fi
installed=1
dpkg -i "$deb" >"$work/dpkg-i.log" 2>&1 || { cat "$work/dpkg-i.log" >&2; fail "dpkg -i failed"; }
getent passwd tether >/dev/null || fail "postinst did not create the user tether"
[ "$(stat -c %U /var/log/tether)" = tether ] || fail "/var/log/tether is not owned by tether"
[ "$(stat -c %U /run/tether)" = tether ] || fail "/run/tether (the pid file's directory) is not owned by tether"
[ -x /usr/bin/tether ] && [ -f /lib/systemd/system/tether.service ] && [ -f /etc/tether/tether.ini ] ||
  fail "dpkg -i did not install the binary, unit and configuration"
/usr/bin/tether serve --check --config /etc/tether/tether.ini 2>/dev/null || fail "installed config: --check failed"
local_ini / "$work/i-access.log" >"$work/i.ini"
chown tether "$work"  # the access log is created by the user tether, as under the unit
serve "$work/i.ini" /usr/bin/tether "$work/i.log" setpriv --reuid=tether --regid=tether --init-groups
check_pid_file /run/tether/tether.pid  # the packaged pid_file, written as user tether
/usr/bin/tether reload -c "$work/i.ini" >/dev/null 2>&1 || fail "tether reload -c (through the pid file) failed"
for i in $(seq 1 200); do grep -q "reload: applied" "$work/i.log" && break; sleep 0.05; done
grep -q "reload: applied" "$work/i.log" || { cat "$work/i.log" >&2; fail "the reload (pid file) was not applied"; }
curl -sf "http://127.0.0.1:$port/" -o "$work/i.html" || fail "GET / from the installed tether failed"
cmp -s "$work/i.html" "$src/examples/site/index.html" || fail "the installed tether did not serve the example site"
stop_last "the installed tether"
[ ! -e /run/tether/tether.pid ] || fail "/run/tether/tether.pid stayed after the exit"
say "dpkg -i: user tether, /var/log/tether, /run/tether; serves the example site as tether, pid file and reload"
if [ -d /run/systemd/system ]; then
  systemctl start tether || { journalctl -u tether --no-pager | tail -20 >&2; fail "systemctl start tether failed"; }
  curl -sf --retry 20 --retry-delay 1 --retry-connrefused http://127.0.0.1:8080/ -o "$work/s.html" ||
    fail "tether.service does not answer on port 8080"
  cmp -s "$work/s.html" "$src/examples/site/index.html" || fail "tether.service did not serve the example site"
  say "systemctl start tether: serves the example site on port 8080"
else
  say "systemd is not running here (PID 1: $(ps -p 1 -o comm=)): postinst started nothing, as it should"
fi
dpkg --purge tether >"$work/dpkg-purge.log" 2>&1 || { cat "$work/dpkg-purge.log" >&2; fail "dpkg --purge failed"; }
installed=0
[ ! -e /usr/bin/tether ] && [ ! -e /etc/tether/tether.ini ] && [ ! -e /lib/systemd/system/tether.service ] ||
  fail "dpkg --purge left files behind"
! getent passwd tether >/dev/null || fail "dpkg --purge left the user tether"
[ ! -e /var/log/tether ] || fail "dpkg --purge left /var/log/tether"
[ ! -e /run/tether ] || fail "dpkg --purge left /run/tether"
say "dpkg --purge: files, user, logs and /run/tether removed"
