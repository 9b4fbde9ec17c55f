#!/usr/bin/env bash
# Two Kai builds side by side: one node of each, both under the same
# depth-1 load at the same time, round after round. On a machine whose
# speed drifts from minute to minute, two runs taken one after the other
# differ by more than most changes do; two taken at once share the drift,
# so the ratio of their figures is steadier (a build against itself gives
# 0.97-1.04 here). Each node's CPU time an operation (user and system,
# from /proc) is printed beside it: steadier still, as it does not depend
# on how the two cores were shared.
#
# OLD may be the word memcached: then memcached (start_memcached, as every
# script runs it) is the old side, and the ratios are Kai's to memcached's in
# the same moment.
#
#   bash examples/bench-pair.sh OLD_KAI_BINARY|memcached NEW_KAI_BINARY [rounds] [engine]
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1; new=$2; rounds=${3:-4}; engine=${4:-memory}
source examples/bench-lib.sh

if [ "$old" = memcached ]; then
  start_memcached; old_port=$mc_port; old_pid=$mc_pid
else
  start_node "$old" "$engine" old; old_port=$node_port; old_pid=$node_pid
fi
start_node "$new" "$engine" new; new_port=$node_port; new_pid=$node_pid
# cpu PID: its user and system CPU time so far, in clock ticks.
cpu() { awk '{print $14, $15}' "/proc/$1/stat"; }
seconds=8
common=(--connections 50 --depth 1 --get-ratio 0.9 --value-size 1024 --keys 20000 --seconds "$seconds")
for round in $(seq "$rounds"); do
  old_before=$(cpu "$old_pid"); new_before=$(cpu "$new_pid")
  "$load" --servers "127.0.0.1:$old_port" "${common[@]}" --label "old round $round" > "$dir/old.out" & a=$!
  "$load" --servers "127.0.0.1:$new_port" "${common[@]}" --label "new round $round" > "$dir/new.out" & b=$!
  wait "$a" "$b"
  cat "$dir/old.out" "$dir/new.out"
  python3 examples/bench-pair-round.py "$round" "$(getconf CLK_TCK)" "$seconds" "$dir/old.out" "$old_before" "$(cpu "$old_pid")" \
    "$dir/new.out" "$new_before" "$(cpu "$new_pid")" | tee -a "$dir/rounds"
done
python3 examples/bench-pair-round.py --summary < "$dir/rounds"
