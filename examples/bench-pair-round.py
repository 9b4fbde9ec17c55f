"""One round of bench-pair.sh: each node's throughput and CPU time an
operation, and new over old for both; with --summary (the rounds' lines on
standard input), the median of each ratio.

    bench-pair-round.py ROUND CLK_TCK SECONDS OLD_RESULT "U S" "U S" NEW_RESULT "U S" "U S"
"""
import re
import statistics
import sys


def node(result, before, after, tick, seconds):
    ops_per_sec = int(re.search(r"(\d+) ops/s", open(result).read()).group(1))
    ops = ops_per_sec * seconds
    (u0, s0), (u1, s1) = ([int(x) for x in t.split()] for t in (before, after))
    to_us = 1e6 / tick / ops
    return ops_per_sec, (u1 - u0) * to_us, (s1 - s0) * to_us


if sys.argv[1:] == ["--summary"]:
    rounds = [dict(re.findall(r"(\w+)=([\d.]+)", line)) for line in sys.stdin if "throughput=" in line]
    for key in ("throughput", "user", "system", "cpu"):
        values = sorted(float(r[key]) for r in rounds)
        print(f"median new / old {key}: {statistics.median(values):.3f}  (rounds: {', '.join(f'{v:.3f}' for v in values)})")
    sys.exit()

round_, tick, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
old = node(*sys.argv[4:7], tick, seconds)
new = node(*sys.argv[7:10], tick, seconds)
for name, (ops, user, system) in (("old", old), ("new", new)):
    print(f"  {name}: {ops} ops/s, CPU an operation: user {user:.2f} us, system {system:.2f} us")
print(
    f"round {round_}: new / old throughput={new[0] / old[0]:.3f} user={new[1] / old[1]:.3f} "
    f"system={new[2] / old[2]:.3f} cpu={(new[1] + new[2]) / (old[1] + old[2]):.3f}"
)
