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
shared=$(cd "$here/../shared" && pwd)
args=("$@")
for p in sipp:sip-tester kamailio:kamailio; do
  command -v "${p%%:*}" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${p##*:}" >/dev/null; }
done
cargo build --release -p hatrunk --manifest-path "$here/Cargo.toml"
work=$(mktemp -d /tmp/hatrunk-maxcps.XXXXXX)
cat > "$work/node.toml" <<TOML
[node]
data_dir = "$work/data"
[sip]
listen = ["udp:127.0.0.1:15060", "tcp:127.0.0.1:15060"]
[cluster]
listen = "127.0.0.1:17700"
[http]
listen = "127.0.0.1:19090"
TOML
cat > "$work/trunk.toml" <<TOML
id = "bench"
numbers = ["1000"]
max_concurrent_calls = 1000000
mode = "auto-failover"
[primary]
auth = "ip"
target = "sip:127.0.0.1:15081"
allowed_ips = ["127.0.0.9/32"]
[secondary]
auth = "ip"
target = "sip:127.0.0.1:15082"
allowed_ips = ["127.0.0.9/32"]
TOML
HATRUNK_LOG=warn "$here/target/release/hatrunk" run --config "$work/node.toml" > "$work/node.log" 2>&1 &
node=$!
kam=
trap 'kill $node $kam 2>/dev/null; wait 2>/dev/null; true' EXIT
sleep 1
"$here/target/release/hatrunk" --endpoints 127.0.0.1:17700 trunk apply "$work/trunk.toml" >/dev/null
echo "== hatrunk"
"$shared/bench/sipp-max-cps.sh" 127.0.0.1:15060 -f 503 "${args[@]}" | tee "$work/hatrunk.out"
h=$(awk -F= '/max_sustained_cps/{print $2}' "$work/hatrunk.out")
kill $node; wait $node 2>/dev/null || true
echo "== hatrunk, entry node of a 3-node cluster"
rm -rf "$work/data"
cl=()
for i in 1 2 3; do
  cat > "$work/c$i.toml" <<TOML
[node]
id = $i
name = "c$i"
data_dir = "$work/c$i"
[sip]
listen = ["udp:127.0.0.1:1516$i", "tcp:127.0.0.1:1516$i"]
[cluster]
listen = "127.0.0.1:1776$i"
bootstrap = $([ $i = 1 ] && echo true || echo false)
[http]
listen = "127.0.0.1:1996$i"
TOML
  HATRUNK_LOG=warn "$here/target/release/hatrunk" run --config "$work/c$i.toml" > "$work/c$i.log" 2>&1 &
  cl+=($!)
done
trap 'kill $node $kam "${cl[@]}" 2>/dev/null; wait 2>/dev/null; true' EXIT
sleep 2
for i in 2 3; do "$here/target/release/hatrunk" --endpoints 127.0.0.1:17761 cluster join 127.0.0.1:1776$i >/dev/null; done
"$here/target/release/hatrunk" --endpoints 127.0.0.1:17761 trunk apply "$work/trunk.toml" >/dev/null
sleep 1
"$shared/bench/sipp-max-cps.sh" 127.0.0.1:15161 -f 503 "${args[@]}" | tee "$work/cluster.out"
c=$(awk -F= '/max_sustained_cps/{print $2}' "$work/cluster.out")
kill "${cl[@]}"; wait "${cl[@]}" 2>/dev/null || true
echo "== kamailio"
"$shared/peers/kamailio/run-peer.sh" 127.0.0.1:15070 127.0.0.1:15081 127.0.0.1:15082 > "$work/kamailio.log" 2>&1 &
kam=$!
sleep 2
"$shared/bench/sipp-max-cps.sh" 127.0.0.1:15070 -f 503 "${args[@]}" | tee "$work/kamailio.out"
k=$(awk -F= '/max_sustained_cps/{print $2}' "$work/kamailio.out")
python3 -c "h=$h; c=$c; k=$k; print(f'hatrunk_max_cps={h} cluster_entry_max_cps={c} kamailio_max_cps={k} ratio_hatrunk_to_kamailio={h/k if k else 0:.2f} (goal >= 1.0) ratio_cluster_to_single={c/h if h else 0:.2f} (goal >= 0.8)')"
