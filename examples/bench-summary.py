"""Summarises load-generator result lines (stdin): per target and depth, the
median of its rounds' ops/s with p50/p99/p99.9, and the ratio to the
yardstick's median at the same depth. Labels are "<target> round <n>"."""
import re
import statistics
import sys
from collections import defaultdict

yardstick = sys.argv[1]
runs = defaultdict(list)
for line in sys.stdin:
    m = re.match(r"(.+?)(?: round \d+)?: (\d+) ops/s\s+errors (\d+)\s+busy (\d+).*?get hits ([\d.]+)%.*?p50 (\d+) us\s+p99 (\d+) us\s+p99\.9 (\d+) us.*depth (\d+)", line)
    if not m:
        continue
    name, ops, errors, busy, hits, p50, p99, p999, depth = m.groups()
    runs[(name, int(depth))].append((int(ops), int(errors), int(busy), int(p50), int(p99), int(p999), float(hits)))

def median_run(rs):
    ordered = sorted(rs)
    return ordered[(len(ordered) - 1) // 2]

print(f"{'target':34} {'depth':>5} {'rounds (ops/s)':>28} {'median':>9} {'ratio':>6} {'p50/p99/p99.9 us (median run)':>30} errors busy hits")
for (name, depth), rs in runs.items():
    med = median_run(rs)
    base = runs.get((yardstick, depth))
    ratio = med[0] / median_run(base)[0] if base else float("nan")
    rounds = " ".join(f"{r[0]:,}" for r in rs)
    errors = sum(r[1] for r in rs)
    busy = sum(r[2] for r in rs)
    print(f"{name:34} {depth:>5} {rounds:>28} {med[0]:>9,} {ratio:>6.2f} {f'{med[3]} / {med[4]} / {med[5]}':>30} {errors:>6} {busy:>4} {min(r[6] for r in rs):>5.1f}%")

if runs.get(("yardstick 2 client threads", 1)):
    for depth in (1, 16):
        a = runs.get(("yardstick 2 client threads", depth))
        b = runs.get(("yardstick 3 client threads", depth))
        if a and b:
            gain = statistics.median(r[0] for r in b) / statistics.median(r[0] for r in a) - 1
            verdict = "the load generator is not the bottleneck" if gain <= 0.05 else "MORE CLIENT THREADS RAISE MEMCACHED: the load generator is the bottleneck"
            print(f"yardstick depth {depth}: a third client thread changes memcached by {gain:+.1%}: {verdict}")

overload = [r for (name, _), rs in runs.items() if " overload " in name for r in rs]
saturated = [r for (name, _), rs in runs.items() if " saturated " in name for r in rs]
if overload and saturated:
    kept = median_run(overload)[0] / median_run(saturated)[0]
    errors = sum(r[1] for r in overload)
    print(f"overload: twice the saturating connections keeps {kept:.0%} of the saturated figure "
          f"(medians of interleaved rounds), {errors} errors besides busy")
    cluster = [r for (name, _), rs in runs.items() if name != yardstick for r in rs]
    worst = min(r[0] for r in overload) / max(r[0] for r in cluster)
    print(f"overload, most pessimistic: the lowest overload round is {worst:.0%} of the best cluster round")
