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

# start_cluster NAME EXTRA...: three linked nodes; sets servers[] and apis[].
start_cluster() {
  local name=$1; shift
  servers=(); apis=(); node_pids=()
  for i in 1 2 3; do
    local p a
    p=$(port); a=$(port)
    ./target/release/kai --config kai.config.toml --set n=3 --set r=2 --set w=2 --set store='"memory"' \
      --set data_dir="\"$dir/$name$i\"" --set port="$a" --set memcache_port="$p" --set logfile="\"$dir/$name$i.log\"" \
      --set worker_threads=1 --set store_threads=1 --set gossip_interval_ms=500 --set down_after_ms=2000 "$@" & pids+=($!); node_pids+=($!)
    wait_port "$p"; wait_port "$a"
    servers+=("127.0.0.1:$p"); apis+=("127.0.0.1:$a")
  done
  for i in 1 2; do
    ./target/release/kai admin --node "${apis[0]}" -e "check_node ${apis[$i]} ${apis[0]}" -e "check_node ${apis[0]} ${apis[$i]}" >/dev/null
  done
  sleep 3
}

load() { # load LABEL SERVERS
  ./target/release/examples/load --servers "$2" --connections 48 --depth 1 --get-ratio 0.8 \
    --value-size 1024 --keys 10000 --seconds "$seconds" --label "$1"
}

stop_cluster() { for p in "${node_pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.5; }

for round in 1 2; do
  start_cluster "ae-on-$round-"
  load "anti-entropy default (1 s, 16 buckets) round $round" "$(IFS=,; echo "${servers[*]}")"
  stop_cluster
  start_cluster "ae-off-$round-" --set anti_entropy_interval_ms=3600000
  load "anti-entropy off round $round" "$(IFS=,; echo "${servers[*]}")"
  stop_cluster
done

start_cluster "down-"
load "all three up" "$(IFS=,; echo "${servers[*]}")"
kill -9 "${node_pids[2]}"
load "third node killed, first seconds" "${servers[0]},${servers[1]}"
load "third node down" "${servers[0]},${servers[1]}"
