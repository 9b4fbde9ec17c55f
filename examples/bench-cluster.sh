#!/usr/bin/env bash
# Three-node cluster benchmark: N=3, R=2, W=2, load spread over the three
# nodes, against one memcached in the same run (interleaved rounds). Three
# nodes share two cores here, so each runs one worker and one store thread.
#
#   bash examples/bench-cluster.sh [rounds] [seconds] [engine]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-5}
engine=${3:-memory}
source examples/bench-lib.sh

mc=$(port)
memcached -u nobody -l 127.0.0.1 -p "$mc" -U 0 -t 2 -m 2048 -c 4096 & pids+=($!)
wait_port "$mc"
start_cluster node --set store="\"$engine\""
"$kai" admin --node "${apis[0]}" -e node_list
kai=$(IFS=,; echo "${servers[*]}")
for round in $(seq "$rounds"); do
  "$load" --servers "127.0.0.1:$mc" --connections 48 --depth 1 --get-ratio 0.8 \
    --value-size 1024 --keys 10000 --seconds "$seconds" --label "memcached round $round"
  "$load" --servers "$kai" --connections 48 --depth 1 --get-ratio 0.8 \
    --value-size 1024 --keys 10000 --seconds "$seconds" --label "kai-3-nodes-$engine round $round"
done
