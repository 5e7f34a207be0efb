#!/usr/bin/env bash
# bench/tunnel.sh -- WebSocket tunnels through tether, nginx and HAProxy (issue 11): proxy CPU per message over
# 50 tunnels in ping-pong, RSS per idle tunnel, and a perf profile of tether's tunnel path.
# Env: SECONDS_PER_RUN (5), ROUNDS (3), TUNNELS (50), IDLE_TUNNELS (2000), PERF (1 when perf is installed),
# TUNNEL_PEERS (tether,nginx,haproxy), TETHER_BIN (build/tether).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  for p in nginx-light haproxy linux-perf; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="${missing:-} $p"
  done
  [ -z "${missing:-}" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
[ -x "${TETHER_BIN:-build/tether}" ] || { cmake -S . -B build >/dev/null && cmake --build build -j "$(nproc)" >/dev/null; }
ulimit -n "$(ulimit -Hn)"
if [ -z "${PERF:-}" ]; then
  if command -v perf >/dev/null; then export PERF=1; else export PERF=0; fi
fi
exec /usr/bin/python3 bench/tunnel.py
