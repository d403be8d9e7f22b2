#!/usr/bin/env bash
# CPU time per call, every call failing over (Primary answers 503), at a fixed rate: one hatrunk node
# and the Kamailio reference peer, one after the other, each measured by the shared harness
# (../shared/bench/cpu-per-call.sh PID ADDR -f 503). Prints both and the ratio (goal <= 0.2,
# issue 20), from the medians of RUNS alternating measurements.
#
# usage: [PERF_OUT=FILE] benches/cpu-per-call.sh [-r RATE=1000] [-t SECONDS=10] [-n RUNS=1]
# Needs: a release build (built here), Debian's sip-tester and kamailio (installed if missing).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/benches/lib.sh"
rate=1000 secs=10 runs=1
while getopts "r:t:n:" o; do case $o in r) rate=$OPTARG;; t) secs=$OPTARG;; n) runs=$OPTARG;; *) exit 2;; esac; done
[ "$runs" -ge 1 ] 2>/dev/null || { echo "-n RUNS: a whole number >= 1" >&2; exit 2; }
need sipp:sip-tester kamailio:kamailio
cargo build --release -p hatrunk --bin hatrunk --manifest-path "$here/Cargo.toml"
bench_trunk 1000000 failover
# one measurement of hatrunk, then one of Kamailio, RUNS times in turn: this machine's figures
# wander by a quarter from run to run (both elements alike), so the ratio is of the medians
hs=() ks=()
for i in $(seq 1 "$runs"); do
  start_node
  apply_trunk 17700
  echo "== hatrunk (pid $node), run $i of $runs"
  # PERF_OUT=FILE: also sample the node's stacks in the first run (`perf report -i FILE`); the
  # sampling costs CPU too and that run counts in the medians, so take the ratio from a run without it
  prof=""
  if [ -n "${PERF_OUT:-}" ] && [ "$i" = 1 ]; then
    need perf:linux-perf
    perf record -F 499 -g -p "$node" -o "$PERF_OUT" >/dev/null 2>&1 &
    prof=$!
  fi
  "$shared/bench/cpu-per-call.sh" "$node" 127.0.0.1:15060 -f 503 -r "$rate" -t "$secs" | tee "$work/hatrunk.out"
  if [ -n "$prof" ]; then kill -INT "$prof"; wait "$prof" 2>/dev/null || true; fi
  hs+=("$(grep -oE "cpu_us_per_call=[0-9.]+" "$work/hatrunk.out" | cut -d= -f2)")
  kill $node; wait $node 2>/dev/null || true
  echo "== kamailio, run $i of $runs"
  "$shared/peers/kamailio/run-peer.sh" 127.0.0.1:15070 127.0.0.1:15081 127.0.0.1:15082 > "$work/kamailio.log" 2>&1 &
  kam=$!
  pids+=("$kam")
  sleep 2
  "$shared/bench/cpu-per-call.sh" "$kam" 127.0.0.1:15070 -f 503 -r "$rate" -t "$secs" | tee "$work/kamailio.out"
  ks+=("$(grep -oE "cpu_us_per_call=[0-9.]+" "$work/kamailio.out" | cut -d= -f2)")
  kill $kam 2>/dev/null || true; wait $kam 2>/dev/null || true
  sleep 1
done
python3 - "${hs[*]}" "${ks[*]}" <<'PY'
import statistics, sys
h = [float(x) for x in sys.argv[1].split()]
k = [float(x) for x in sys.argv[2].split()]
if not h or not k or 0.0 in h or 0.0 in k:
    sys.exit(f"a run answered no call (hatrunk {h}, kamailio {k}): no ratio")
print("runs (hatrunk / kamailio, us per call): " + ", ".join(f"{a:.0f} / {b:.0f}" for a, b in zip(h, k)))
hm, km = statistics.median(h), statistics.median(k)
print(f"hatrunk_cpu_us_per_call={hm:.0f} kamailio_cpu_us_per_call={km:.0f} ratio={hm/km if km else 0:.2f} (goal <= 0.2)")
PY
