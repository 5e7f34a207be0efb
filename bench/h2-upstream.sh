#!/usr/bin/env bash
# bench/h2-upstream.sh -- HTTP/2 to upstreams: h2load -c50 -m10 -> proxy -> h2o over h2c, tether vs HAProxy
# (`proto h2` servers), proxy on CPU 0, CPU µs per proxied request. Env: H2_REQUESTS (300000), ROUNDS (3), TETHER_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
  for p in h2o haproxy nghttp2-client util-linux iproute2; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="${missing:-} $p"
  done
  [ -z "${missing:-}" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
[ -x "${TETHER_BIN:-build/tether}" ] || { cmake -S . -B build >/dev/null && cmake --build build -j "$(nproc)" >/dev/null; }
ulimit -n "$(ulimit -Hn)"
exec /usr/bin/python3 bench/h2-upstream.py
