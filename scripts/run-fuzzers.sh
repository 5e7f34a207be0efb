#!/usr/bin/env bash
# run-fuzzers.sh BUILD_DIR SECONDS [PARSER_SECONDS [WORKER_SECONDS]] -- runs every libFuzzer target in BUILD_DIR
# (ASan+UBSan), SECONDS each, the HTTP/1 request parser (fuzz_h1_parse) PARSER_SECONDS and the worker's
# connection state machines (fuzz_worker) WORKER_SECONDS [default: SECONDS]; the longest start first. Seeded
# from tests/fuzz/corpus/<target>, new inputs go to a scratch directory.
# Up to FUZZ_JOBS [nproc] targets run at once. Exits non-zero if any target crashes, leaks or times
# out, and leaves that target's log and artifacts in its scratch directory.
set -uo pipefail
build=$1
seconds=$2
parser_seconds=${3:-$2}
worker_seconds=${4:-$2}
jobs=${FUZZ_JOBS:-$(nproc)}
src=$(cd "$(dirname "$0")/.." && pwd)

run_one() { # run_one BIN SECONDS: names the target in $failed when it fails
  local bin=$1 secs=$2 name target corpus scratch rc
  name=$(basename "$bin")
  target=${name#fuzz_}
  corpus="$src/tests/fuzz/corpus/$target"
  scratch=$(mktemp -d)
  local dict=()
  [ -f "$src/tests/fuzz/$target.dict" ] && dict=(-dict="$src/tests/fuzz/$target.dict")
  "$bin" "${dict[@]}" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$scratch/" "$scratch" "$corpus" >"$scratch/log" 2>&1
  rc=$?
  # One block per target, printed whole so that parallel targets do not interleave.
  {
    echo "fuzz: $name for ${secs}s"
    tail -n 12 "$scratch/log"
    if [ "$rc" -ne 0 ]; then
      echo "fuzz: $name failed (exit $rc); log and artifacts in $scratch"
    fi
  } | flock "$build" cat
  if [ "$rc" -eq 0 ]; then rm -rf "$scratch"; else echo "$name" >>"$failed"; fi
}

failed=$(mktemp)
trap 'rm -f "$failed"' EXIT
seconds_of() {
  case "$(basename "$1")" in
    fuzz_h1_parse) echo "$parser_seconds" ;;
    fuzz_worker) echo "$worker_seconds" ;;
    *) echo "$seconds" ;;
  esac
}
while read -r secs bin; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
  run_one "$bin" "$secs" &
done < <(for bin in "$build"/fuzz_*; do [ -x "$bin" ] && echo "$(seconds_of "$bin") $bin"; done | sort -rn)
wait
[ ! -s "$failed" ]
