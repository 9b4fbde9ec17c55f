#!/usr/bin/env bash
# Reliability figures under load, on a three-node cluster (N=3, R=2, W=2,
# memory engine, one worker and one store thread a node):
#   1. foreground cost of anti-entropy: the same load with anti-entropy at
#      its default throttle, and with it effectively off;
#   2. a node down: the load against the two survivors after kill -9 of the
#      third (ops/s, p99, errors).
#
#   bash examples/bench-reliability.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
source examples/bench-lib.sh

load() { # load LABEL SERVERS
  "$load" --servers "$2" --connections 48 --depth 1 --get-ratio 0.8 \
    --value-size 1024 --keys 10000 --seconds "$seconds" --label "$1"
}

stop_cluster() { for p in "${node_pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.5; }

for round in 1 2; do
  start_cluster "ae-on-$round-" --set store='"memory"'
  load "anti-entropy default (1 s, 16 buckets) round $round" "$(IFS=,; echo "${servers[*]}")"
  stop_cluster
  start_cluster "ae-off-$round-" --set store='"memory"' --set anti_entropy_interval_ms=3600000
  load "anti-entropy off round $round" "$(IFS=,; echo "${servers[*]}")"
  stop_cluster
done

start_cluster "down-" --set store='"memory"'
load "all three up" "$(IFS=,; echo "${servers[*]}")"
kill -9 "${node_pids[2]}"
load "third node killed, first seconds" "${servers[0]},${servers[1]}"
load "third node down" "${servers[0]},${servers[1]}"
