#!/usr/bin/env bash
# Cross-checks the load generator against memaslap (Debian's
# libmemcached-tools): the same memcached, 50 connections, 2 client
# threads, 90:10 get:set, 1 KiB values, each tool in turn.
#
#   bash examples/bench-memcaslap.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
source examples/bench-lib.sh
command -v memcaslap >/dev/null || { echo "memcaslap is not installed (apt-get install libmemcached-tools)" >&2; exit 1; }
printf 'key\n16 16 1\nvalue\n1024 1024 1\ncmd\n0 0.1\n1 0.9\n' > "$dir/slap.cfg"
start_memcached; p=$mc_port
for round in 1 2 3; do
  memcaslap -s "127.0.0.1:$p" -T 2 -c 50 -t "${seconds}s" -F "$dir/slap.cfg" | grep -E '^Run time' | sed "s/^/memcaslap round $round: /"
  "$load" --servers "127.0.0.1:$p" --connections 50 --threads 2 --get-ratio 0.9 --value-size 1024 --keys 20000 \
    --seconds "$seconds" --label "examples/load round $round"
done
