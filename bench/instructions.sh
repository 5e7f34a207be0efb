#!/usr/bin/env bash
# bench/instructions.sh -- user-space instructions per proxied request under callgrind (tether vs HAProxy, HTTP/2
# and HTTP/1.1 through an h2o origin): the noise-free companion of the CPU-time benches.
# Env: REQUESTS (20000), WARMUP (3000), SCENARIOS ("h2 h1"), TETHER_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  for p in valgrind h2o haproxy nghttp2-client; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="${missing:-} $p"
  done
  [ -z "${missing:-}" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
[ -x "${TETHER_BIN:-build/tether}" ] || { cmake -S . -B build >/dev/null && cmake --build build -j "$(nproc)" >/dev/null; }
ulimit -n "$(ulimit -Hn)"
exec /usr/bin/python3 bench/instructions.py
