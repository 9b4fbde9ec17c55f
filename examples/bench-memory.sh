#!/usr/bin/env bash
# Resident memory for one million 1 KiB values: memcached and Kai's memory
# engine, each given room for them, each filled with the same keys by the
# load generator; VmRSS read from /proc once the last write is answered,
# and again after 10 s of reads over the same keys (Kai's replicas then
# hold a read record per key read, for the meta protocol's h and l).
#
#   bash examples/bench-memory.sh [keys]
set -euo pipefail
cd "$(dirname "$0")/.."
keys=${1:-1000000}
source examples/bench-lib.sh

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
report() { # report NAME PID
  python3 -c "import sys; kb=int(sys.argv[2]); print(f'{sys.argv[1]:12} {kb/1024:8.0f} MiB resident  {kb*1024/int(sys.argv[3]):6.0f} bytes per key')" "$1" "$(rss "$2")" "$keys"
}

start_memcached 4096; p=$mc_port; mc=$mc_pid
echo "memcached empty: $(( $(rss $mc) / 1024 )) MiB"
"$load" --servers "127.0.0.1:$p" --keys "$keys" --value-size 1024 --seconds 0 --label fill >/dev/null
report memcached $mc
"$load" --servers "127.0.0.1:$p" --keys "$keys" --value-size 1024 --seconds 10 --get-ratio 1 --no-populate --label read | cut -d' ' -f1-4
report "  after reads" $mc

p=$(port); a=$(port)
"$kai" --config kai.config.toml --set store='"memory"' --set max_memory_bytes=8589934592 --set data_dir="\"$dir/memory\"" \
  --set port="$a" --set memcache_port="$p" --set http_port=0 --set logfile="\"$dir/kai.log\"" & k=$!; pids+=($k); wait_port "$p"
echo "kai empty: $(( $(rss $k) / 1024 )) MiB"
"$load" --servers "127.0.0.1:$p" --keys "$keys" --value-size 1024 --seconds 0 --label fill >/dev/null
report kai-memory $k
"$load" --servers "127.0.0.1:$p" --keys "$keys" --value-size 1024 --seconds 10 --get-ratio 1 --no-populate --label read | cut -d' ' -f1-4
report "  after reads" $k
