#!/usr/bin/env bash
# Three Kai nodes on this machine, linked into one cluster (N=3, R=2, W=2):
# memcache on 127.0.0.1:11211-11213, internal API on 127.0.0.1:11011-11013,
# HTTP status pages on 127.0.0.1:11081-11083.
#
#   bash examples/cluster/run.sh          # start and link; Ctrl-C stops all three
#
# Data and logs go outside the checkout, to $KAI_CLUSTER_DIR (by default
# ~/.local/state/kai-cluster). Works from any directory and with any
# CARGO_TARGET_DIR; stops at the first thing that fails, and stops the
# cluster, saying which node, when a node dies.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet --bin kai
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
kai="$target/release/kai"
state=${KAI_CLUSTER_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/kai-cluster}
mkdir -p "$state"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for i in 1 2 3; do
  "$kai" --config "examples/cluster/node$i.toml" \
    --set "data_dir=\"$state/node$i\"" --set "logfile=\"$state/node$i.log\"" & pids+=($!)
done
# Each node listens within a few seconds, or the script says which did not.
for i in 1 2 3; do
  port=$((11010 + i))
  for attempt in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    if ! kill -0 "${pids[$((i - 1))]}" 2>/dev/null; then
      echo "node $i exited at start: see $state/node$i.log" >&2
      exit 1
    fi
    [ "$attempt" = 50 ] && { echo "node $i is not listening on $port" >&2; exit 1; }
    sleep 0.1
  done
done
# As in the original: tell each new node about an existing one, then back.
# The admin tool proves the cluster secret it reads from a node's config.
admin() { "$kai" admin --config examples/cluster/node1.toml --node 127.0.0.1:11011 -e "$1"; }
admin "check_node 127.0.0.1:11012 127.0.0.1:11011"
admin "check_node 127.0.0.1:11011 127.0.0.1:11012"
admin "check_node 127.0.0.1:11013 127.0.0.1:11011"
admin "check_node 127.0.0.1:11011 127.0.0.1:11013"
sleep 2
admin node_list
echo "cluster up: memcache on 127.0.0.1:11211, :11212, :11213; status on http://127.0.0.1:11081/status; data and logs in $state; Ctrl-C to stop"
# The first node to exit stops the cluster, saying which it was.
status=0
wait -n "${pids[@]}" || status=$?
for i in 1 2 3; do
  if ! kill -0 "${pids[$((i - 1))]}" 2>/dev/null; then
    echo "node $i exited (status $status): see $state/node$i.log; stopping the others" >&2
  fi
done
exit 1
