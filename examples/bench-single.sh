#!/usr/bin/env bash
# Single-node benchmark: memcached and Kai (memory and disk engines) under
# the same load, interleaved round by round (this machine's speed drifts
# from minute to minute, so runs side by side compare best). First it
# shows the yardstick is honest: a third client thread must not raise
# memcached's figure by more than 5%.
#
#   bash examples/bench-single.sh [rounds] [seconds]
#
# Needs memcached on PATH (apt-get install memcached) for the yardstick.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-5}
source examples/bench-lib.sh
command -v memcached >/dev/null || { echo "memcached is not installed (apt-get install memcached)" >&2; exit 1; }

declare -A targets
start_memcached; targets[memcached]=$mc_port
for engine in memory disk; do
  start_node "$kai" "$engine" "$engine"
  targets[kai-$engine]=$node_port
done
common=(--connections 50 --get-ratio 0.9 --value-size 1024 --keys 20000 --seconds "$seconds")

for depth in 1 16; do
  yardstick_check "127.0.0.1:${targets[memcached]}" "${common[@]}" --depth "$depth"
done
# Each round starts with the next target, so none is always measured
# first (or right after another).
names=(memcached kai-memory kai-disk)
for depth in 1 16; do
  for round in $(seq "$rounds"); do
    for i in 0 1 2; do
      name=${names[$(((round - 1 + i) % 3))]}
      measure "$name round $round" --servers "127.0.0.1:${targets[$name]}" "${common[@]}" --depth "$depth"
    done
  done
done
echo
summary memcached
