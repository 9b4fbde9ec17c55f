#!/usr/bin/env bash
# Three Kai nodes on this machine, linked into one cluster (N=3, R=2, W=2):
# memcache on 127.0.0.1:11211-11213, internal API on 127.0.0.1:11011-11013.
#
#   bash examples/cluster/run.sh          # start and link; Ctrl-C stops all three
#
# Data and logs go to examples/cluster/data/.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet --bin kai
mkdir -p examples/cluster/data
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for i in 1 2 3; do
  ./target/release/kai --config "examples/cluster/node$i.toml" & pids+=($!)
done
for port in 11011 11012 11013; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
# As in the original: tell each new node about an existing one, then back.
# The admin tool proves the cluster secret it reads from a node's config.
admin() { ./target/release/kai admin --config examples/cluster/node1.toml --node 127.0.0.1:11011 -e "$1"; }
admin "check_node 127.0.0.1:11012 127.0.0.1:11011"
admin "check_node 127.0.0.1:11011 127.0.0.1:11012"
admin "check_node 127.0.0.1:11013 127.0.0.1:11011"
admin "check_node 127.0.0.1:11011 127.0.0.1:11013"
sleep 2
admin node_list
echo "cluster up: memcache on 127.0.0.1:11211, :11212, :11213; Ctrl-C to stop"
wait
