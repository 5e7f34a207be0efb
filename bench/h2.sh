#!/usr/bin/env bash
# bench/h2.sh -- HTTP/2: tether vs h2o with h2load -c50 -m10 on a 100-byte file, cleartext prior knowledge and
# TLS, one worker each, server on CPU 0 and h2load on CPU 1. Env: H2_REQUESTS (400000), ROUNDS (3), TETHER_BIN,
# PERF=1 (a `perf record -g` profile of tether per transport after the table; needs linux-perf).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  for p in h2o nghttp2-client openssl util-linux; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="${missing:-} $p"
  done
  [ -z "${missing:-}" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
[ -x "${TETHER_BIN:-build/tether}" ] || { cmake -S . -B build >/dev/null && cmake --build build -j "$(nproc)" >/dev/null; }
ulimit -n "$(ulimit -Hn)"
exec /usr/bin/python3 bench/h2.py
