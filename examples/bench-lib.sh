# Shared by the benchmark scripts: build, a scratch directory, processes
# stopped on exit, free ports and waiting for a port to open. $kai and
# $load are the binaries, wherever CARGO_TARGET_DIR puts them.
cargo build --release --quiet --bin kai --example load
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
# The node measured: KAI=PATH if given; else the profile-guided build
# (examples/pgo-build.sh), the one to run in production, when no source
# file is newer than it; else the plain release build.
pgo="$target/pgo/release/kai"
if [ -n "${KAI:-}" ]; then
  kai=$KAI
elif [ -x "$pgo" ] && [ -z "$(find src actors/src Cargo.toml actors/Cargo.toml Cargo.lock -newer "$pgo" -print -quit)" ]; then
  kai=$pgo
else
  kai="$target/release/kai"
  echo "the plain release build; bash examples/pgo-build.sh makes the one for production" >&2
fi
echo "kai: $kai" >&2
load="$target/release/examples/load"
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# start_node BINARY ENGINE NAME [--set KEY=VALUE]...: one node of BINARY on
# ENGINE, its data and log under NAME in the scratch directory; sets
# node_port (memcache) and node_pid.
start_node() {
  local p a
  p=$(port); a=$(port)
  "$1" --config kai.config.toml --set store="\"$2\"" --set data_dir="\"$dir/$3\"" \
    --set port="$a" --set memcache_port="$p" --set http_port=0 --set logfile="\"$dir/$3.log\"" "${@:4}" & pids+=($!)
  node_pid=$!; node_port=$p
  wait_port "$p"
}

# start_memcached [MEGABYTES [OPTION...]]: the yardstick, memcached with two
# worker threads (as Kai's two workers) and 2048 MiB unless told; sets
# mc_port and mc_pid.
start_memcached() {
  mc_port=$(port)
  memcached -u nobody -l 127.0.0.1 -p "$mc_port" -U 0 -t 2 -m "${1:-2048}" -c 4096 "${@:2}" & pids+=($!)
  mc_pid=$!
  wait_port "$mc_port"
}

# start_cluster NAME EXTRA...: three linked nodes (N=3, R=2, W=2, one worker
# and one store thread each: three nodes share two cores here); sets
# servers[], apis[] and node_pids[]. The admin tool links them with
# --config $admin_config when it is set (a cluster over mutual TLS).
start_cluster() {
  local name=$1; shift
  servers=(); apis=(); node_pids=()
  for i in 1 2 3; do
    local p a
    p=$(port); a=$(port)
    "$kai" --config kai.config.toml --set n=3 --set r=2 --set w=2 \
      --set data_dir="\"$dir/$name$i\"" --set port="$a" --set memcache_port="$p" --set http_port=0 --set logfile="\"$dir/$name$i.log\"" \
      --set worker_threads=1 --set store_threads=1 --set gossip_interval_ms=500 "$@" & pids+=($!); node_pids+=($!)
    wait_port "$p"; wait_port "$a"
    servers+=("127.0.0.1:$p"); apis+=("127.0.0.1:$a")
  done
  for i in 1 2; do
    "$kai" admin --node "${apis[0]}" ${admin_config:+--config "$admin_config"} \
      -e "check_node ${apis[$i]} ${apis[0]}" -e "check_node ${apis[0]} ${apis[$i]}" >/dev/null
  done
  sleep 3
}


# measure NAME ARGS...: one load run, its result line printed and kept in
# $dir/results for `summary`.
measure() {
  local name=$1; shift
  "$load" --label "$name" "$@" | tee -a "$dir/results"
}

# summary YARDSTICK: the median of each target's rounds (ops/s and latency
# quantiles), and its ratio to the yardstick's median at the same depth.
summary() {
  python3 examples/bench-summary.py "$1" < "$dir/results"
}

# yardstick_check SERVER ARGS...: memcached with 2 and then 3 client
# threads (twice each, interleaved); the load generator is not the
# bottleneck when the third thread does not raise memcached's figure by
# more than 5%.
yardstick_check() {
  local server=$1; shift
  for round in 1 2; do
    for threads in 2 3; do
      measure "yardstick $threads client threads" --servers "$server" --threads "$threads" "$@"
    done
  done
}

# alive PID...: fails when a node has exited.
alive() { for p in "$@"; do kill -0 "$p" 2>/dev/null || { echo "node $p exited" >&2; return 1; }; done; }
