#!/usr/bin/env bash
# Highest sustained call rate with every call failing over (Primary answers 503), measured one after
# the other in one run with the shared harness (../shared/bench/sipp-max-cps.sh): one hatrunk node,
# then the same node as the entry of a 3-node cluster (escrow admission across the cluster), then the
# Kamailio reference peer. Prints the figures and the ratios the performance goals are stated in.
#
# usage: benches/max-cps.sh [-l "LADDER"] [-t SECONDS]
# Needs: a release build (built here), Debian's sip-tester and kamailio (installed if missing).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/benches/lib.sh"
args=("$@")
need sipp:sip-tester kamailio:kamailio
cargo build --release -p hatrunk --bin hatrunk --manifest-path "$here/Cargo.toml"
bench_trunk 1000000 failover
start_node
apply_trunk 17700
echo "== hatrunk"
"$shared/bench/sipp-max-cps.sh" 127.0.0.1:15060 -f 503 "${args[@]}" | tee "$work/hatrunk.out"
h=$(awk -F= '/max_sustained_cps/{print $2}' "$work/hatrunk.out")
kill $node; wait $node 2>/dev/null || true
echo "== hatrunk, entry node of a 3-node cluster"
start_cluster
apply_trunk 17761
sleep 1
"$shared/bench/sipp-max-cps.sh" 127.0.0.1:15161 -f 503 "${args[@]}" | tee "$work/cluster.out"
c=$(awk -F= '/max_sustained_cps/{print $2}' "$work/cluster.out")
kill "${cl[@]}"; wait "${cl[@]}" 2>/dev/null || true
echo "== kamailio"
"$shared/peers/kamailio/run-peer.sh" 127.0.0.1:15070 127.0.0.1:15081 127.0.0.1:15082 > "$work/kamailio.log" 2>&1 &
pids+=($!)
sleep 2
"$shared/bench/sipp-max-cps.sh" 127.0.0.1:15070 -f 503 "${args[@]}" | tee "$work/kamailio.out"
k=$(awk -F= '/max_sustained_cps/{print $2}' "$work/kamailio.out")
python3 -c "h=$h; c=$c; k=$k; print(f'hatrunk_max_cps={h} cluster_entry_max_cps={c} kamailio_max_cps={k} ratio_hatrunk_to_kamailio={h/k if k else 0:.2f} (goal >= 1.0) ratio_cluster_to_single={c/h if h else 0:.2f} (goal >= 0.8)')"
