#!/usr/bin/env bash
# Profiles one Kai node under load: samples it with linux-perf while the
# load generator runs, prints the top frames by self time and writes a
# flame graph (inferno) to target/profile/.
#
#   bash examples/profile.sh [engine] [depth] [seconds] [cluster]
#
# With "cluster" as the fourth word, three linked nodes (N=3, R=2, W=2)
# take the load and the first is sampled. Needs `perf` (apt-get install
# linux-perf) and inferno (cargo install inferno).
set -euo pipefail
cd "$(dirname "$0")/.."
engine=${1:-memory}
depth=${2:-1}
seconds=${3:-5}
shape=${4:-single}
source examples/bench-lib.sh
out="$target/profile"; mkdir -p "$out"
name="$shape-$engine-depth$depth"

if [ "$shape" = cluster ]; then
  start_cluster "$engine" --set store="\"$engine\""
  sampled=${node_pids[0]}
  list=$(IFS=,; echo "${servers[*]}")
  connections=48; ratio=0.8
else
  start_node "$kai" "$engine" "$engine"
  sampled=$node_pid; list="127.0.0.1:$node_port"
  connections=50; ratio=0.9
fi

"$load" --servers "$list" --connections $connections --depth "$depth" --get-ratio $ratio --seconds $((seconds + 2)) --label "$name" &
loader=$!
sleep 1
perf record -F 1999 -g --call-graph dwarf,16384 -p "$sampled" -o "$out/$name.data" -- sleep "$seconds" 2>/dev/null >/dev/null
wait $loader
perf report -i "$out/$name.data" --no-children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' > "$out/$name.top" || true
head -25 "$out/$name.top" | cut -c1-150
perf script -i "$out/$name.data" 2>/dev/null > "$out/$name.perf" || true
inferno-collapse-perf < "$out/$name.perf" > "$out/$name.folded"; rm -f "$out/$name.perf"
inferno-flamegraph < "$out/$name.folded" > "$out/$name.svg"
echo "flame graph: $out/$name.svg"
