#!/usr/bin/env bash
# Admission throughput of a 3-node loopback hatrunk cluster (admit + release per second, admit latency
# p50/p99): first the product's escrow admission (escrow-bench), then the reference of one Raft
# command per admit and per release (admission-bench against real node processes), then etcd's
# write rate on a 3-member loopback cluster in the same run. Prints the ratios to etcd.
# usage: benches/admission.sh [WORKERS=64] [SECONDS=10]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/benches/lib.sh"
workers=${1:-64} secs=${2:-10}
need etcd:etcd-server etcdctl:etcd-client
cargo build --release -p hatrunk -p hatrunk-benches --bin hatrunk --bin admission-bench --bin escrow-bench --manifest-path "$here/Cargo.toml"
echo "== hatrunk escrow admission, 3 nodes in one process, $workers workers, ${secs}s"
"$here/target/release/escrow-bench" "$workers" "$secs" 200 100000 | tee "$work/escrow.out"
start_cluster
bench_trunk 1000000
apply_trunk 17761
echo "== reference: one Raft command per admit and per release, 3 node processes, $workers workers, ${secs}s"
"$here/target/release/admission-bench" 127.0.0.1:17761,127.0.0.1:17762,127.0.0.1:17763 bench "$workers" "$secs" | tee "$work/hatrunk.out"
kill "${pids[@]}"; wait 2>/dev/null || true; pids=()
echo "== etcd, 3 members on loopback (etcdctl check perf --load=xl)"
cluster="e1=http://127.0.0.1:12381,e2=http://127.0.0.1:12382,e3=http://127.0.0.1:12383"
for i in 1 2 3; do
  etcd --name e$i --data-dir "$work/etcd$i" --listen-client-urls http://127.0.0.1:1237$i --advertise-client-urls http://127.0.0.1:1237$i \
    --listen-peer-urls http://127.0.0.1:1238$i --initial-advertise-peer-urls http://127.0.0.1:1238$i \
    --initial-cluster "$cluster" --initial-cluster-state new > "$work/etcd$i.log" 2>&1 &
  pids+=($!)
done
sleep 3
ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:12371,127.0.0.1:12372,127.0.0.1:12373 check perf --load=xl 2>&1 | tee "$work/etcd.out" | grep -vE "^\s*[0-9]+ / [0-9]+" || true
x=$(awk -F'[= ]' '/^admissions_per_s/{print $2}' "$work/escrow.out")
p99=$(awk -F'[= ]' '/^admissions_per_s/{print $4}' "$work/escrow.out")
h=$(awk -F'[= ]' '/admissions_per_s/{print $2}' "$work/hatrunk.out")
e=$(grep -oE "Throughput (is|too low:) [0-9]+" "$work/etcd.out" | grep -oE "[0-9]+" | tail -1 || true)
python3 -c "x=float('${x:-0}'); h=float('${h:-0}'); e=float('${e:-0}'); print(f'escrow_admissions_per_s={x:.0f} (p99 ${p99:-?} us, goal <= 1000) raft_per_call_admissions_per_s={h:.0f} etcd_writes_per_s={e:.0f} ratio_escrow_to_etcd={x/e if e else 0:.1f} (goal >= 10) ratio_raft_per_call_to_etcd={h/e if e else 0:.2f}')"
