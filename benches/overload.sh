#!/usr/bin/env bash
# Goodput under overload: offer a single node twice the highest call rate it sustains and count the
# calls it still completes per second, and how many it refused at once with 503 (Retry-After)
# instead of answering late. The sustained rate is found first with the shared harness
# (../shared/bench/sipp-max-cps.sh) unless given.
#
# usage: benches/overload.sh [-r SUSTAINED_CPS] [-t SECONDS]
# Needs: a release build (built here), Debian's sip-tester (installed if missing).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/benches/lib.sh"
rate="" secs=20
while getopts "r:t:" o; do case $o in r) rate=$OPTARG;; t) secs=$OPTARG;; *) exit 2;; esac; done
need sipp:sip-tester
cargo build --release -p hatrunk --bin hatrunk --manifest-path "$here/Cargo.toml"
bench_trunk 1000000
start_node
apply_trunk 17700
if [ -z "$rate" ]; then
  "$shared/bench/sipp-max-cps.sh" 127.0.0.1:15060 -t 5 -l "500 1000 1500 2000 2500 3000 3500 4000" | tee "$work/max.out"
  rate=$(awk -F= '/max_sustained_cps/{print $2}' "$work/max.out")
fi
offered=$((rate * 2))
echo "== sustained ${rate} calls/s; offering ${offered} calls/s for ${secs}s"
pkill -f "sipp .*-p 1508[12] " 2>/dev/null || true   # the search's PBXs, if still going
sleep 2
sipp -sf "$shared/sipp/uas_rr.xml" -i 127.0.0.1 -p 15081 -nostdin -m 100000000 >/dev/null 2>&1 &
pids+=($!)
sleep 1
metric() { curl -s 127.0.0.1:19090/metrics | awk -v m="$1" '$1 == m {print $2}'; }
shed0=$(metric 'hatrunk_guard_drops_total{reason="shed"}')
ans0=$(metric hatrunk_calls_answered_total)
t0=$(date +%s.%N)
timeout $((secs * 4 + 60)) sipp -sf "$here/benches/scenarios/uac_rr_503.xml" -i 127.0.0.1 -p 15090 127.0.0.1:15060 -s 1000 \
  -r "$offered" -m $((offered * secs)) -l $((offered * 40)) -d 0 -recv_timeout 10000 -nostdin -fd 1 -trace_screen -screen_file "$work/screen.log" \
  >"$work/uac.out" 2>&1 || true
t1=$(date +%s.%N)
ok=$(grep -E "Successful call" "$work/screen.log" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
bad=$(grep -E "Failed call" "$work/screen.log" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
shed1=$(metric 'hatrunk_guard_drops_total{reason="shed"}')
ans1=$(metric hatrunk_calls_answered_total)
python3 - "$rate" "$offered" "$secs" "${ok:-0}" "${bad:-0}" "$t0" "$t1" "${shed0:-0}" "${shed1:-0}" "${ans0:-0}" "${ans1:-0}" <<'PY'
import sys
rate, offered, secs, ok, bad = (int(float(x)) for x in sys.argv[1:6])
t0, t1, s0, s1, a0, a1 = (float(x) for x in sys.argv[6:12])
# goodput: calls the node answered, over the window the carrier offered them in (SIPp counts a shed
# call that was acknowledged as a completed scenario, so the node's own counter is the figure)
answered = int(a1 - a0)
good = answered / secs
print(f"sustained_cps={rate} offered_cps={offered} seconds={secs} wall={t1-t0:.1f}s answered={answered} sipp_ok={ok} sipp_failed={bad} "
      f"shed_503={int(s1-s0)} goodput_cps={good:.0f} goodput_vs_sustained={good/rate if rate else 0:.2f} (goal >= 0.80)")
PY
