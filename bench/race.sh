#!/usr/bin/env bash
# bench/race.sh -- the keep-alive race (origin closes idle connections at 1 s; proxies keep them 10 s)
# through tether, nginx and HAProxy, one after another; prints the 502 count and rate of each.
# Env: RACE_SECONDS (40 per proxy), RACE_CLIENTS (8), RACE_IDLE (1.0), RACE_HINT (0|1), TETHER_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  for p in nginx-light haproxy; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="${missing:-} $p"
  done
  [ -z "${missing:-}" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
[ -x "${TETHER_BIN:-build/tether}" ] || { cmake -S . -B build >/dev/null && cmake --build build -j "$(nproc)" >/dev/null; }
exec /usr/bin/python3 bench/race.py
