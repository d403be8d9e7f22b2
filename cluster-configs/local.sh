#!/usr/bin/env bash
# Try a topology on one machine: start every node of cluster-configs/TOPOLOGY on loopback (the VM
# addresses rewritten to 127.0.0.1 and ports BASE+10*i), join them, apply the example trunk (PBX
# targets rewritten to 127.0.0.1:BASE+900/901) and show the members.
#
#   cluster-configs/local.sh 2t|4t|2t+4t start   # BASE defaults to 42000; HATRUNK=path/to/hatrunk
#   cluster-configs/local.sh 2t stop
set -euo pipefail
topo="${1:?usage: local.sh 2t|4t|2t+4t start|stop}"
verb="${2:-start}"
here="$(cd "$(dirname "$0")" && pwd)"
dir="$here/$topo"
[ -d "$dir" ] || { echo "no topology $topo in $here" >&2; exit 2; }
base="${BASE:-42000}"
run="${RUN:-/tmp/hatrunk-$topo}"
bin="${HATRUNK:-$(command -v hatrunk || echo "$here/../target/release/hatrunk")}"
[ -x "$bin" ] || { echo "hatrunk binary not found: cargo build --release -p hatrunk, or set HATRUNK" >&2; exit 2; }

if [ "$verb" = stop ]; then
  for p in "$run"/*/pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  echo "stopped $topo"; exit 0
fi

mkdir -p "$run"
first=""
endpoints=()
for f in "$dir"/*.toml; do
  name="$(basename "$f" .toml)"
  [ "$name" = trunk ] && continue
  id="$(sed -n 's/^id = \([0-9]*\)/\1/p' "$f")"
  ip="$(sed -n 's/^listen = "\(.*\):7700"/\1/p' "$f")"
  sip=$((base + 10 * id)); cl=$((sip + 1)); http=$((sip + 2))
  mkdir -p "$run/$name"
  sed -e "s#udp:$ip:5060#udp:127.0.0.1:$sip#; s#tcp:$ip:5060#tcp:127.0.0.1:$sip#" \
      -e "s#udp:127.0.0.1:5060#udp:127.0.0.1:$sip#; s#tcp:127.0.0.1:5060#tcp:127.0.0.1:$sip#" \
      -e "s#\"$ip:7700\"#\"127.0.0.1:$cl\"#; s#\"$ip:9090\"#\"127.0.0.1:$http\"#" \
      -e "s#/var/lib/hatrunk#$run/$name/data#" \
      -e "s#sip:203.0.113.10:5060#sip:127.0.0.1:$((base + 902))#" "$f" > "$run/$name/node.toml"
  "$bin" run --config "$run/$name/node.toml" > "$run/$name/node.log" 2>&1 &
  echo $! > "$run/$name/pid"
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$cl") 2>/dev/null && break; sleep 0.1; done
  if [ "$id" = 1 ]; then first="127.0.0.1:$cl"; else endpoints+=("127.0.0.1:$cl"); fi
  printf '%-16s id %s  sip 127.0.0.1:%s  cluster 127.0.0.1:%s  http 127.0.0.1:%s\n' "$name" "$id" "$sip" "$cl" "$http"
done
export HATRUNK_ENDPOINTS="$first"
for e in "${endpoints[@]}"; do "$bin" cluster join "$e" > /dev/null; done
sed -e "s#sip:192.0.2.10:5060#sip:127.0.0.1:$((base + 900))#; s#sip:198.51.100.10:5060#sip:127.0.0.1:$((base + 901))#" \
    -e "s#192.0.2.10/32#127.0.0.1/32#; s#198.51.100.10/32#127.0.0.1/32#" "$dir/trunk.toml" > "$run/trunk.toml"
sleep 1.5
"$bin" trunk apply "$run/trunk.toml"
"$bin" cluster members
echo
echo "Running. Logs and configs in $run. Try: HATRUNK_ENDPOINTS=$first hatrunk cluster status"
echo "Stop with: $0 $topo stop"
