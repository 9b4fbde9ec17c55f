#!/usr/bin/env bash
# What serving metrics costs: one Kai node (memory engine) under the same
# load, with and without a Prometheus-style scrape of /metrics every second,
# interleaved round by round.
#
#   bash examples/bench-metrics.sh [rounds] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-5}
source examples/bench-lib.sh

p=$(port); a=$(port); h=$(port)
"$kai" --config kai.config.toml --set store='"memory"' --set port="$a" --set memcache_port="$p" --set http_port="$h" \
  --set logfile="\"$dir/kai.log\"" & pids+=($!)
wait_port "$p"; wait_port "$h"

# One scraper process for the whole run (a new interpreter every second
# would cost more CPU than the scrape itself on this 2-core machine).
scrape() {
  exec python3 -c "
import time, urllib.request
while True:
    try: urllib.request.urlopen('http://127.0.0.1:$h/metrics', timeout=5).read()
    except Exception: pass
    time.sleep(1)
"
}

for round in $(seq "$rounds"); do
  "$load" --servers "127.0.0.1:$p" --connections 50 --depth 1 --get-ratio 0.9 --value-size 1024 --keys 10000 \
    --seconds "$seconds" --label "no scrape, round $round"
  scrape & scraper=$!
  "$load" --servers "127.0.0.1:$p" --connections 50 --depth 1 --get-ratio 0.9 --value-size 1024 --keys 10000 \
    --seconds "$seconds" --label "scrape every second, round $round"
  kill "$scraper"; wait "$scraper" 2>/dev/null || true
done
