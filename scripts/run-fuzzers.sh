#!/usr/bin/env bash
# run-fuzzers.sh BUILD_DIR SECONDS -- runs every libFuzzer target in BUILD_DIR for SECONDS each (ASan+UBSan),
# seeded from tests/fuzz/corpus/<target>; exits non-zero on the first crash, leak or timeout.
set -uo pipefail
build=$1
seconds=$2
src=$(cd "$(dirname "$0")/.." && pwd)
status=0
for bin in "$build"/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  target=${name#fuzz_}
  corpus="$src/tests/fuzz/corpus/$target"
  scratch=$(mktemp -d)
  dict=()
  [ -f "$src/tests/fuzz/$target.dict" ] && dict=(-dict="$src/tests/fuzz/$target.dict")
  echo "fuzz: $name for ${seconds}s"
  "$bin" "${dict[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$scratch/" "$scratch" "$corpus" >"$scratch/log" 2>&1
  rc=$?
  tail -n 12 "$scratch/log"
  if [ "$rc" -ne 0 ]; then
    echo "fuzz: $name failed (exit $rc); log and artifacts in $scratch" >&2
    status=1
    continue
  fi
  rm -rf "$scratch"
done
exit $status
