#!/usr/bin/env bash
# commit-check.sh -- a commit gate for developers: the normal build must compile warning-free and clang-format
# must be clean on the tracked files (and any named ones) before `git commit`.
# Usage: scripts/commit-check.sh [NEW_FILE.c ...] && git commit ...
set -euo pipefail
cd "$(dirname "$0")/.."
clang-format --dry-run -Werror $(git ls-files '*.c' '*.h') "$@"
cmake -S . -B build >/dev/null
cmake --build build -j "$(nproc)" 2>&1 | grep -E "error|warning" && exit 1
exit 0
