#!/usr/bin/env bash
# Goodput under overload: offer a single node twice the highest call rate it sustains and count the
# calls it still completes per second, and how many it refused at once with 503 (Retry-After)
# instead of answering late.
#
# "Sustained" here is strict: at that rate the node answers at least 97% of the offered calls
# *within the offered window* (not eventually: a queue that answers calls seconds late is not
# keeping up) and SIPp sees at most 0.5% failed calls. Goodput is likewise the calls answered
# within the window, per second.
#
# usage: benches/overload.sh [-r SUSTAINED_CPS] [-t SECONDS] [-c] [-l "RATE ..."]
#   -c  the node pinned to CPU 1 at NODE_CPU_PERCENT (default 50) of it, SIPp on CPU 0. Without
#       it SIPp and the node share both cores, and at twice the rate SIPp takes the cycles the
#       node needs: the figure is then the load tool's, not the node's.
# Needs: a release build (built here), Debian's sip-tester (installed if missing).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/benches/lib.sh"
rate="" secs=20 pin=0 ladder="1000 1500 2000 2500 3000 3500 4000 4500 5000 5500 6000 7000 8000"
while getopts "r:t:cl:" o; do case $o in r) rate=$OPTARG;; t) secs=$OPTARG;; c) pin=1;; l) ladder=$OPTARG;; *) exit 2;; esac; done
need sipp:sip-tester
tools=""
if [ "$pin" = 1 ]; then export NODE_CPUS=1 NODE_CPU_PERCENT=${NODE_CPU_PERCENT:-50}; tools="taskset -c 0"; fi
cargo build --release -p hatrunk --bin hatrunk --manifest-path "$here/Cargo.toml"
bench_trunk 1000000
start_node
apply_trunk 17700
$tools sipp -sf "$shared/sipp/uas_rr.xml" -i 127.0.0.1 -p 15081 -nostdin -m 100000000 >/dev/null 2>&1 &
pids+=($!)
sleep 1

metric() { curl -s 127.0.0.1:19090/metrics | awk -v m="$1" '$1 == m {print $2}'; }
# sockdrops PORT: datagrams the kernel dropped on that local UDP port's socket since it opened
sockdrops() { awk -v p="$(printf ':%04X' "$1")" '$2 ~ p"$" {print $NF}' /proc/net/udp | head -1; }
rcvbuf() { awk '/^Udp:/ && $2 ~ /^[0-9]/ {print $6}' /proc/net/snmp; }   # datagrams the kernel dropped: a full receive buffer

# offer RATE SECS: one run; prints a line of figures and sets `in_window` and `failed`
offer() {
  local r=$1 s=$2 sampler shed0 ans0 drop0 t0 t1 drop1 shed1 ans1 aw ok bad q0 q1
  shed0=$(metric 'hatrunk_guard_drops_total{reason="shed"}'); q0=$(metric 'hatrunk_guard_drops_total{reason="queue"}'); ans0=$(metric hatrunk_calls_answered_total); drop0=$(rcvbuf)
  rm -f "$work/ans_window" "$work/screen.log"
  # the answered counter at the end of the offered window: calls answered later were answered late
  ( sleep "$s"; metric hatrunk_calls_answered_total > "$work/ans_window" ) &
  local sampler=$!
  t0=$(date +%s.%N)
  timeout $((s * 4 + 60)) $tools sipp -sf "$here/benches/scenarios/uac_rr_503.xml" -i 127.0.0.1 -p 15090 127.0.0.1:15060 -s 1000 \
    -r "$r" -m $((r * s)) -l $((r * 40)) -d 0 -recv_timeout 10000 -nostdin -fd 1 -trace_screen -screen_file "$work/screen.log" \
    >"$work/uac.out" 2>&1 || true
  t1=$(date +%s.%N); drop1=$(rcvbuf)
  wait "$sampler" 2>/dev/null || true
  ok=$(grep -E "Successful call" "$work/screen.log" 2>/dev/null | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
  bad=$(grep -E "Failed call" "$work/screen.log" 2>/dev/null | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
  shed1=$(metric 'hatrunk_guard_drops_total{reason="shed"}'); q1=$(metric 'hatrunk_guard_drops_total{reason="queue"}'); ans1=$(metric hatrunk_calls_answered_total)
  aw=$(cat "$work/ans_window" 2>/dev/null || echo "${ans0:-0}")
  in_window=$(python3 -c "print(int(float('${aw:-0}') - float('${ans0:-0}')))")
  failed=${bad:-$((r * s))}
  python3 - "$r" "$s" "${ok:-0}" "$failed" "$t0" "$t1" "${shed0:-0}" "${shed1:-0}" "${ans0:-0}" "${ans1:-0}" "$drop0" "$drop1" "$in_window" "${q0:-0}" "${q1:-0}" <<'PY'
import sys
r, s, ok, bad = (int(float(x)) for x in sys.argv[1:5])
t0, t1, s0, s1, a0, a1, d0, d1, inw, q0, q1 = (float(x) for x in sys.argv[5:16])
print(f"offered_cps={r} seconds={s} wall={t1-t0:.1f}s answered={int(a1-a0)} answered_in_window={int(inw)} ({inw/s:.0f}/s) "
      f"sipp_ok={ok} sipp_failed={bad} shed_503={int(s1-s0)} socket_503={int(q1-q0)} udp_rcvbuf_drops={int(d1-d0)}")
PY
  # what the node parsed, by method, and what it retransmitted, since start (where the work went)
  # whose socket overflowed since start: the node's (15060) or the PBX SIPp's (15081); the caller's has closed by now
  echo "socket drops since start: node=$(sockdrops 15060) pbx_sipp=$(sockdrops 15081)"
  curl -s 127.0.0.1:19090/metrics | awk '/^hatrunk_sip_(requests|retransmissions)_total/ {printf "%s=%s ", $1, $2} END {print ""}'
  sleep 3
}

if [ -z "$rate" ]; then
  best=0
  for r in $ladder; do
    offer "$r" 10
    if [ "$in_window" -ge $((r * 10 * 97 / 100)) ] && [ $((failed * 200)) -le $((r * 10)) ]; then best=$r; else break; fi
  done
  rate=$best
  echo "max_sustained_cps=$rate"
fi
offered=$((rate * 2))
echo "== sustained ${rate} calls/s; offering ${offered} calls/s for ${secs}s"
offer "$offered" "$secs"
python3 -c "g=$in_window/$secs; print(f'goodput_cps={g:.0f} goodput_vs_sustained={g/$rate:.2f} (goal >= 0.80)')"
