#!/usr/bin/env bash
# Fuzzes the memcache parser and the internal API decoder for a bounded
# time each (not part of the test suite).
#
#   bash actors/fuzz/run.sh [seconds per target, default 60]
#
# The machine has only a stable toolchain: cargo fuzz runs on it with
# RUSTC_BOOTSTRAP=1 and without a sanitizer (coverage-guided libFuzzer
# still runs; Rust's own bounds checks catch memory errors). A crash
# leaves its input in actors/fuzz/artifacts/; turn each into a test in
# the target's module before fixing it.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for target in memcache_parse api_decode; do
  RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz --sanitizer none "$target" -- \
    -max_total_time="$seconds" -max_len=4096 2>&1 | grep -E "^Done|crash|panicked|SUMMARY" || true
  if [ -n "$(ls fuzz/artifacts/"$target" 2>/dev/null)" ]; then
    echo "$target: findings in actors/fuzz/artifacts/$target" >&2
    exit 1
  fi
done
