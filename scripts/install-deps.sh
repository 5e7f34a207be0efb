#!/usr/bin/env bash
# install-deps.sh -- installs the Debian packages tether's build, tests and fuzzers need, when missing.
# debhelper and dpkg-dev build the Debian package (make deb, debian/control's Build-Depends are a subset of this
# list), adduser is what the package's postinst uses, groff-base and man-db render the man pages in the tests.
# Run as root on Debian 12 (apt-get install -y); as another user it only reports what is missing.
set -euo pipefail

packages=(
  build-essential libtsan2 cmake pkg-config clang libclang-rt-14-dev clang-format
  libssl-dev libnghttp2-dev libinih-dev libcmocka-dev libpcre2-dev libsystemd-dev
  python3 python3-pytest python3-h2 python3-httpx python3-websockets
  python3-grpcio nghttp2-server # gRPC and nghttpd behind an HTTP/2 upstream (test_h2_upstream.py)
  curl nghttp2-client wrk nginx-light iproute2 openssl procps
  nodejs     # Node's http 'upgrade' event as a WebSocket origin (test_tunnels.py)
  chromium  # large (~300 MB with its libraries): the status page's browser test (test_status_page.py)
  prometheus # promtool: test_races.py checks the /metrics exposition with `promtool check metrics`
  debhelper dpkg-dev adduser groff-base man-db
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts nginx on install where it can; tests run their own instances on free ports.
if command -v systemctl >/dev/null 2>&1; then systemctl stop nginx >/dev/null 2>&1 || true; fi
# The same for prometheus: only its promtool is used.
if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus >/dev/null 2>&1 || true; fi
