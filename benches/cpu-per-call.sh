#!/usr/bin/env bash
# CPU time per call, every call failing over (Primary answers 503), at a fixed rate: one hatrunk node
# and the Kamailio reference peer, one after the other, each measured by the shared harness
# (../shared/bench/cpu-per-call.sh PID ADDR -f 503). Prints both and the ratio (goal <= 0.5).
#
# usage: [PERF_OUT=FILE] benches/cpu-per-call.sh [-r RATE=1000] [-t SECONDS=10]
# Needs: a release build (built here), Debian's sip-tester and kamailio (installed if missing).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/benches/lib.sh"
rate=1000 secs=10
while getopts "r:t:" o; do case $o in r) rate=$OPTARG;; t) secs=$OPTARG;; *) exit 2;; esac; done
need sipp:sip-tester kamailio:kamailio
cargo build --release -p hatrunk --bin hatrunk --manifest-path "$here/Cargo.toml"
bench_trunk 1000000 failover
start_node
apply_trunk 17700
echo "== hatrunk (pid $node)"
# PERF_OUT=FILE: also sample the node's stacks while it is measured (`perf report -i FILE`); the
# sampling costs CPU too, so take the ratio from a run without it
prof=""
if [ -n "${PERF_OUT:-}" ]; then
  need perf:linux-perf
  perf record -F 499 -g -p "$node" -o "$PERF_OUT" >/dev/null 2>&1 &
  prof=$!
fi
"$shared/bench/cpu-per-call.sh" "$node" 127.0.0.1:15060 -f 503 -r "$rate" -t "$secs" | tee "$work/hatrunk.out"
if [ -n "$prof" ]; then kill -INT "$prof"; wait "$prof" 2>/dev/null || true; fi
h=$(grep -oE "cpu_us_per_call=[0-9.]+" "$work/hatrunk.out" | cut -d= -f2)
kill $node; wait $node 2>/dev/null || true
echo "== kamailio"
"$shared/peers/kamailio/run-peer.sh" 127.0.0.1:15070 127.0.0.1:15081 127.0.0.1:15082 > "$work/kamailio.log" 2>&1 &
kam=$!
pids+=("$kam")
sleep 2
"$shared/bench/cpu-per-call.sh" "$kam" 127.0.0.1:15070 -f 503 -r "$rate" -t "$secs" | tee "$work/kamailio.out"
k=$(grep -oE "cpu_us_per_call=[0-9.]+" "$work/kamailio.out" | cut -d= -f2)
python3 -c "h=float('${h:-0}'); k=float('${k:-0}'); print(f'hatrunk_cpu_us_per_call={h:.0f} kamailio_cpu_us_per_call={k:.0f} ratio={h/k if k else 0:.2f} (goal <= 0.5)')"
