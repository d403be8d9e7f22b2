#!/usr/bin/env bash
# Memory per call in progress on one node: SIPp places CALLS calls that stay up (held for the whole
# run), the node's resident memory is read before the first call and once they are all up, and the
# difference per call is printed (goal <= 2 KiB), once the set-up transactions have expired. The PBX is SIPp too, answering every call.
#
# usage: benches/memory-per-call.sh [CALLS=100000] [RATE=2000]
# Needs: a release build (built here), Debian's sip-tester (installed if missing).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/benches/lib.sh"
calls=${1:-100000} rate=${2:-2000}
need sipp:sip-tester
cargo build --release -p hatrunk --bin hatrunk --manifest-path "$here/Cargo.toml"
bench_trunk $((calls * 2))
start_node
apply_trunk 17700
sipp -sf "$shared/sipp/uas_rr.xml" -i 127.0.0.1 -p 15081 -nostdin > /dev/null 2>&1 & pids+=($!)
# warm up (first allocations, one call through every path), then the baseline
timeout 30 sipp -sf "$shared/sipp/uac_rr.xml" -i 127.0.0.1 -p 15090 127.0.0.1:15060 -s 1000 -r 50 -m 100 -d 0 -nostdin >/dev/null 2>&1 || true
sleep 2
rss() { awk '/^VmRSS/{print $2}' /proc/$node/status; }
before=$(rss)
secs=$(( calls / rate + 30 ))
sipp -sf "$shared/sipp/uac_rr.xml" -i 127.0.0.1 -p 15091 127.0.0.1:15060 -s 1000 -r "$rate" -m "$calls" -d $(( (secs + 120) * 1000 )) \
  -l $((calls + 10)) -nostdin -trace_stat -stf "$work/stat.csv" -fd 1 > /dev/null 2>&1 & pids+=($!)
for _ in $(seq 1 $((secs + 60))); do
  sleep 1
  up=$(curl -s 127.0.0.1:19090/metrics | awk '/^hatrunk_pool_in_use/{print $2}' | head -1)
  [ "${up:-0}" -ge "$calls" ] && break
done
# transactions of the last calls set up linger for RFC 3261's 32 s timers: measure the calls, not them
sleep 40
after=$(rss)
up=$(curl -s 127.0.0.1:19090/metrics | awk '/^hatrunk_pool_in_use/{print $2}' | head -1)
python3 -c "
b=$before; a=$after; n=${up:-0}
print(f'rss_before_kib={b} rss_after_kib={a} calls_up={n}')
print(f'memory_per_call_bytes={(a-b)*1024/n if n else 0:.0f} (goal <= 2048)')"
