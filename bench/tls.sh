#!/usr/bin/env bash
# bench/tls.sh -- HTTPS keep-alive vs a new connection per request (wrk), full vs resumed handshakes
# (openssl s_time), tether vs nginx, one worker each. Env: SECONDS_PER_RUN (5), ROUNDS (3), TETHER_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  for p in nginx-light wrk openssl util-linux; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="${missing:-} $p"
  done
  [ -z "${missing:-}" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
[ -x "${TETHER_BIN:-build/tether}" ] || { cmake -S . -B build >/dev/null && cmake --build build -j "$(nproc)" >/dev/null; }
ulimit -n "$(ulimit -Hn)"
exec /usr/bin/python3 bench/tls.py
