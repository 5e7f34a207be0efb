#!/usr/bin/env bash
# bench/static.sh -- tether vs nginx serving static files (keep-alive, Connection: close, 16-deep
# pipelining, RSS of 10,000 idle connections), one worker each, server on CPU 0 and wrk on CPU 1.
# Env: SECONDS_PER_RUN (5), ROUNDS (3), IDLE_CONNS (10000), TETHER_BIN (build/tether).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  for p in nginx-light wrk util-linux procps; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="${missing:-} $p"
  done
  if [ -n "${missing:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi
[ -x "${TETHER_BIN:-build/tether}" ] || { cmake -S . -B build >/dev/null && cmake --build build -j "$(nproc)" >/dev/null; }
ulimit -n "$(ulimit -Hn)"
exec /usr/bin/python3 bench/static.py
