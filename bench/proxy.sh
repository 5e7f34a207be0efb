#!/usr/bin/env bash
# bench/proxy.sh -- tether, nginx and HAProxy as reverse proxies in front of one nginx origin; proxy CPU per
# request. Env: SECONDS_PER_RUN (5), ROUNDS (3), TETHER_BIN (build/tether).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  for p in nginx-light haproxy wrk; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="${missing:-} $p"
  done
  [ -z "${missing:-}" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
[ -x "${TETHER_BIN:-build/tether}" ] || { cmake -S . -B build >/dev/null && cmake --build build -j "$(nproc)" >/dev/null; }
ulimit -n "$(ulimit -Hn)"
exec /usr/bin/python3 bench/proxy.py
