#!/usr/bin/env bash
# bench/race.sh -- the keep-alive race and what reuse saves: origins that close like Node.js, gunicorn, Tomcat and
# Apache, behind a relay delaying packets, through tether, nginx and HAProxy alternating; prints failures and the
# upstream connections each proxy opened per request (bench/race.py says how).
# Env: RACE_SECONDS (20 per run), RACE_RUNS (3), RACE_CLIENTS (32), RACE_RELAY_MS (2), RACE_ORIGINS (abcd),
#      RACE_PROXIES (tether,nginx,haproxy), TETHER_BIN.
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
