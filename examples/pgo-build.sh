#!/usr/bin/env bash
# Builds Kai with profile-guided optimisation: an instrumented build serves
# a training load (one node on each engine, then three linked nodes, with
# gets and sets, small and large values, shallow and deep pipelines), the
# counts it gathers are merged, and the release build is made again with
# them, so the compiler lays out and inlines the paths a request really
# takes. The result is an ordinary `kai` binary; the code is the same as
# the plain release build's, only arranged differently.
#
#   bash examples/pgo-build.sh        # prints the optimised binary's path
#
# The benchmark scripts then measure this build, until a source file is
# changed (KAI=PATH names another).
#
# Needs LLVM's profile tools of the Rust toolchain in use (rustup component
# add llvm-tools). Takes about ten minutes here: two whole-program builds
# and a minute of load.
set -euo pipefail
cd "$(dirname "$0")/.."
source examples/bench-lib.sh

host=$(rustc -vV | sed -n 's/^host: //p')
profdata_tool="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
[ -x "$profdata_tool" ] || { echo "llvm-profdata not found: rustup component add llvm-tools" >&2; exit 1; }

profiles="$target/pgo/profiles"
rm -rf "$profiles"; mkdir -p "$profiles"
echo "instrumented build" >&2
RUSTFLAGS="-Cprofile-generate=$profiles/build" cargo build --release --quiet --bin kai --target-dir "$target/pgo-generate"
kai="$target/pgo-generate/release/kai"
# Only the node's own counts: build scripts write theirs elsewhere.
export LLVM_PROFILE_FILE="$profiles/run/kai-%p.profraw"

# stop_all: every node stopped as an operator stops it (SIGTERM), and waited
# for, so each writes its counts as it exits.
stop_all() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  done
  pids=()
}

train() {
  "$load" --label "training $1" "${@:2}" >&2
}

echo "training: one node on each engine" >&2
for engine in memory disk; do
  start_node "$kai" "$engine" "train-$engine"
  server="127.0.0.1:$node_port"
  train "$engine depth 1" --servers "$server" --connections 50 --depth 1 --get-ratio 0.9 --value-size 1024 --keys 20000 --seconds 5
  train "$engine depth 16" --servers "$server" --connections 50 --depth 16 --get-ratio 0.9 --value-size 1024 --keys 20000 --seconds 3 --no-populate
  train "$engine small values" --servers "$server" --connections 20 --depth 4 --get-ratio 0.5 --value-size 100 --keys 5000 --seconds 3
done
stop_all

echo "training: three linked nodes" >&2
start_cluster train-cluster
list=$(IFS=,; echo "${servers[*]}")
train "cluster depth 1" --servers "$list" --connections 48 --depth 1 --get-ratio 0.8 --value-size 1024 --keys 20000 --seconds 5
train "cluster depth 8" --servers "$list" --connections 24 --depth 8 --get-ratio 0.8 --value-size 512 --keys 5000 --seconds 3
stop_all
unset LLVM_PROFILE_FILE

merged="$target/pgo/kai.profdata"
"$profdata_tool" merge -o "$merged" "$profiles"/run/*.profraw
echo "optimised build" >&2
RUSTFLAGS="-Cprofile-use=$merged" cargo build --release --quiet --bin kai --target-dir "$target/pgo"
echo "$target/pgo/release/kai"
