#!/usr/bin/env bash
# Two Kai builds side by side: one node of each, both under the same
# depth-1 load at the same time, round after round. On a machine whose
# speed drifts from minute to minute, two runs taken one after the other
# differ by more than most changes do; two taken at once share the drift,
# so the ratio of their figures is steadier (a build against itself gives
# 0.97-1.04 here).
#
#   bash examples/bench-pair.sh OLD_KAI_BINARY NEW_KAI_BINARY [rounds] [engine]
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1; new=$2; rounds=${3:-4}; engine=${4:-memory}
source examples/bench-lib.sh

start_node "$old" "$engine" old; old_port=$node_port
start_node "$new" "$engine" new; new_port=$node_port
common=(--connections 50 --depth 1 --get-ratio 0.9 --value-size 1024 --keys 20000 --seconds 8)
for round in $(seq "$rounds"); do
  "$load" --servers "127.0.0.1:$old_port" "${common[@]}" --label "old round $round" > "$dir/old" & a=$!
  "$load" --servers "127.0.0.1:$new_port" "${common[@]}" --label "new round $round" > "$dir/new" & b=$!
  wait "$a" "$b"
  cat "$dir/old" "$dir/new"
  python3 -c 'import re,sys; o,n=(int(re.search(r"(\d+) ops/s", open(f).read()).group(1)) for f in sys.argv[1:]); print(f"round '"$round"': new / old = {n / o:.3f}")' "$dir/old" "$dir/new"
done
