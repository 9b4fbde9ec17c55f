#!/usr/bin/env bash
# What TLS costs. One node: memcached with -Z and Kai with a TLS memcache
# port under the same load, in one run, interleaved round by round, at
# depth 1 and 16 (plain memcached and plain Kai beside them for scale).
# Three nodes: a plain cluster and one whose clients speak TLS and whose
# nodes speak mutual TLS to each other, side by side under the same load.
# The load generator speaks TLS itself (rustls, --tls-ca); first it shows
# it is not the bottleneck: a third client thread must not raise
# memcached -Z's figure by more than 5%. Certificates are made here with
# openssl (an ECDSA P-256 CA and one certificate for 127.0.0.1).
#
#   bash examples/bench-tls.sh [rounds] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-5}
source examples/bench-lib.sh
command -v memcached >/dev/null || { echo "memcached is not installed (apt-get install memcached)" >&2; exit 1; }

pki="$dir/pki"
mkdir -p "$pki"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=kai bench CA" -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
openssl req "${ec[@]}" -subj "/CN=127.0.0.1" -keyout "$pki/node.key" -out "$pki/node.csr" 2>/dev/null
openssl x509 -req -in "$pki/node.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial -days 2 -out "$pki/node.pem" \
  -extfile <(printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n') 2>/dev/null
chmod a+rx "$dir" "$pki" && chmod a+r "$pki"/*   # memcached runs as nobody
client_tls=(--set memcache_tls='"only"' --set tls_cert="\"$pki/node.pem\"" --set tls_key="\"$pki/node.key\"")
cluster_tls=(--set cluster_tls_cert="\"$pki/node.pem\"" --set cluster_tls_key="\"$pki/node.key\"" --set cluster_tls_ca="\"$pki/ca.pem\"")

declare -A targets tls
start_memcached 2048 -Z -o "ssl_chain_cert=$pki/node.pem,ssl_key=$pki/node.key"; targets[memcached-tls]=$mc_port; tls[memcached-tls]=1
start_memcached; targets[memcached]=$mc_port
start_node "$kai" memory tls "${client_tls[@]}"; targets[kai-tls]=$node_port; tls[kai-tls]=1
start_node "$kai" memory plain; targets[kai]=$node_port
common=(--connections 50 --get-ratio 0.9 --value-size 1024 --keys 20000 --seconds "$seconds")
over() { if [ -n "${tls[$1]:-}" ]; then echo --tls-ca "$pki/ca.pem"; fi; }

for depth in 1 16; do
  yardstick_check "127.0.0.1:${targets[memcached-tls]}" "${common[@]}" --depth "$depth" --tls-ca "$pki/ca.pem"
done
names=(memcached-tls kai-tls memcached kai)
for depth in 1 16; do
  for round in $(seq "$rounds"); do
    for i in 0 1 2 3; do
      name=${names[$(((round - 1 + i) % 4))]}
      # shellcheck disable=SC2046
      measure "$name round $round" --servers "127.0.0.1:${targets[$name]}" "${common[@]}" --depth "$depth" $(over "$name")
    done
  done
done
kill "${pids[@]:2}" 2>/dev/null || true   # the single nodes: the clusters get the cores

start_cluster plain --set store='"memory"'; plain=$(IFS=,; echo "${servers[*]}"); plain_pids=("${node_pids[@]}")
admin_config="$pki/admin.toml"
printf 'cluster_tls_cert = "%s"\ncluster_tls_key = "%s"\ncluster_tls_ca = "%s"\n' "$pki/node.pem" "$pki/node.key" "$pki/ca.pem" > "$admin_config"
start_cluster secure --set store='"memory"' "${client_tls[@]}" "${cluster_tls[@]}"; secure=$(IFS=,; echo "${servers[*]}"); secure_pids=("${node_pids[@]}")
"$kai" admin --node "${apis[0]}" --config "$admin_config" -e node_list
three=(--connections 48 --get-ratio 0.8 --value-size 1024 --keys 20000 --seconds "$seconds")
# Each cluster is filled once, so the nodes' CPU time in a round is the
# round's own load.
"$load" --servers "$plain" --connections 1 --seconds 1 --keys 20000 >/dev/null
"$load" --servers "$secure" --connections 1 --seconds 1 --keys 20000 --tls-ca "$pki/ca.pem" >/dev/null
# The nodes' own CPU time an operation, apart from the load generator's
# (which does its own half of the client TLS on the same two cores).
node_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
measure_cluster() {
  local name=$1 servers=$2; shift 2
  local pids_of=("${plain_pids[@]}"); [ "$name" = kai-3-nodes-tls ] && pids_of=("${secure_pids[@]}")
  local before; before=$(node_ticks "${pids_of[@]}")
  measure "$name round $round" --servers "$servers" "${three[@]}" --no-populate "$@"
  local ops; ops=$(tail -1 "$dir/results" | sed -E 's/.*: ([0-9]+) ops\/s.*/\1/')
  echo "$name depth $depth: $(python3 -c "print(round(($(node_ticks "${pids_of[@]}") - $before) * 1e6 / $(getconf CLK_TCK) / ($ops * $seconds), 1))") us of node CPU an operation" | tee -a "$dir/cpu"
}
for depth in 1 16; do
  for round in $(seq "$rounds"); do
    if ((round % 2)); then order=(plain secure); else order=(secure plain); fi
    for which in "${order[@]}"; do
      if [ "$which" = plain ]; then
        measure_cluster kai-3-nodes "$plain" --depth "$depth"
      else
        measure_cluster kai-3-nodes-tls "$secure" --depth "$depth" --tls-ca "$pki/ca.pem"
      fi
    done
  done
done
alive "${plain_pids[@]}" "${secure_pids[@]}" && echo "all six nodes still up"
echo
echo "## against memcached -Z (one node), and plain memcached"
summary memcached-tls
echo
echo "## the three-node cluster with TLS against the plain one"
summary kai-3-nodes
python3 - "$dir/cpu" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, depth, us = re.match(r"(\S+) depth (\d+): ([\d.]+) us", line).groups()
    runs.setdefault((name, depth), []).append(float(us))
for depth in ("1", "16"):
    plain, tls = statistics.median(runs[("kai-3-nodes", depth)]), statistics.median(runs[("kai-3-nodes-tls", depth)])
    print(f"depth {depth}: node CPU an operation {plain:.1f} us plain, {tls:.1f} us with TLS: TLS costs the nodes {tls / plain - 1:+.0%}")
PY
