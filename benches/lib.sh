# Shared by the load harnesses in benches/ (sourced, not run): tools, the bench trunk, one node, a
# 3-node cluster, and cleanup of everything started. Before sourcing set `here` (the repository).
# Every process started is added to `pids` and killed on exit.

shared=$(cd "$here/../shared" && pwd)
bin="$here/target/release/hatrunk"
work=$(mktemp -d /tmp/hatrunk-bench.XXXXXX)
pids=()
cgroups=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; for c in "${cgroups[@]}"; do rmdir "$c" 2>/dev/null; done; true' EXIT

# new_cgroup: when NODE_CPU_PERCENT is set, a fresh cgroup capped at that share of one CPU (a cgroup
# v1 CFS quota, 10 ms period, longer under 10%), removed on exit; sets `cg` (empty without a cap).
new_cgroup() {
  cg=""
  [ -n "${NODE_CPU_PERCENT:-}" ] || return 0
  cg=/sys/fs/cgroup/cpu/hatrunk-bench-$$-${#cgroups[@]}
  # a 10 ms period; under 10% a longer one, since the kernel's smallest quota is 1 ms
  local period=10000 quota=$((NODE_CPU_PERCENT * 100))
  if [ "$quota" -lt 1000 ]; then period=$((100000 / NODE_CPU_PERCENT)) quota=1000; fi
  mkdir -p "$cg" && echo "$period" > "$cg/cpu.cfs_period_us" && echo "$quota" > "$cg/cpu.cfs_quota_us" \
    || { echo "cannot make the cgroup $cg (cgroup v1 cpu controller needed)" >&2; return 1; }
  cgroups+=("$cg")
}

# launch CONFIG LOG: a node in its own cgroup (new_cgroup) and on NODE_CPUS (taskset -c) when set,
# in the background; HATRUNK_PRELOAD, when set, is preloaded into it (e.g. another allocator).
launch() {
  new_cgroup
  env ${HATRUNK_PRELOAD:+LD_PRELOAD=$HATRUNK_PRELOAD} HATRUNK_LOG=warn sh -c '[ -z "$1" ] || echo $$ > "$1/cgroup.procs"; shift; exec "$@"' \
    sh "$cg" ${NODE_CPUS:+taskset -c $NODE_CPUS} "$bin" run --config "$1" > "$2" 2>&1 &
}

# need CMD:PACKAGE...: install the Debian package of every command that is missing.
need() {
  local p
  for p in "$@"; do
    command -v "${p%%:*}" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${p##*:}" >/dev/null; }
  done
}

# bench_trunk LIMIT [failover]: $work/trunk.toml, number 1000, Primary PBX on 15081; with "failover",
# Auto Fail-over to a Secondary on 15082.
bench_trunk() {
  {
    printf 'id = "bench"\nnumbers = ["1000"]\nmax_concurrent_calls = %s\n' "$1"
    [ "${2:-}" = failover ] && printf 'mode = "auto-failover"\n'
    printf '[primary]\nauth = "ip"\ntarget = "sip:127.0.0.1:15081"\nallowed_ips = ["127.0.0.9/32"]\n'
    [ "${2:-}" = failover ] && printf '[secondary]\nauth = "ip"\ntarget = "sip:127.0.0.1:15082"\nallowed_ips = ["127.0.0.9/32"]\n'
    true
  } > "$work/trunk.toml"
}

# apply_trunk ADMIN_PORT: apply $work/trunk.toml, retrying while the node starts.
apply_trunk() {
  local _
  for _ in $(seq 1 100); do
    "$bin" --endpoints "127.0.0.1:$1" trunk apply "$work/trunk.toml" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "trunk apply on 127.0.0.1:$1 failed" >&2
  return 1
}

# start_node: one node, SIP 15060, cluster/admin 17700, HTTP 19090, fresh data; sets `node`.
start_node() {
  rm -rf "$work/data"
  # HATRUNK_SIP_TOML, when set, goes into its [sip] section (e.g. `own_thread = false`)
  printf '[node]\ndata_dir = "%s"\n[sip]\nlisten = ["udp:127.0.0.1:15060", "tcp:127.0.0.1:15060"]\n%b\n[cluster]\nlisten = "127.0.0.1:17700"\n[http]\nlisten = "127.0.0.1:19090"\n' \
    "$work/data" "${HATRUNK_SIP_TOML:-}" > "$work/node.toml"
  # HATRUNK_EXTRA_TOML, when set, is appended to the node's config (e.g. a [security] section)
  printf '%b' "${HATRUNK_EXTRA_TOML:-}" >> "$work/node.toml"
  # NODE_CPUS pins the node to those CPUs, away from the load tools; NODE_CPU_PERCENT caps it
  launch "$work/node.toml" "$work/node.log"
  node=$!
  pids+=("$node")
}

# start_cluster [N=3]: nodes c1..cN (SIP 1516i, cluster/admin 1776i, HTTP 1996i), fresh data, each
# launched as `launch` does (own cgroup when NODE_CPU_PERCENT is set; HATRUNK_SIP_TOML in [sip]);
# c1 bootstraps and the others join through it; sets `cl` to their pids.
start_cluster() {
  local i n=${1:-3}
  cl=()
  for i in $(seq 1 "$n"); do
    rm -rf "$work/c$i"
    printf '[node]\nid = %s\nname = "c%s"\ndata_dir = "%s"\n[sip]\nlisten = ["udp:127.0.0.1:1516%s", "tcp:127.0.0.1:1516%s"]\n%b\n[cluster]\nlisten = "127.0.0.1:1776%s"\nbootstrap = %s\n[http]\nlisten = "127.0.0.1:1996%s"\n' \
      "$i" "$i" "$work/c$i" "$i" "$i" "${HATRUNK_SIP_TOML:-}" "$i" "$([ "$i" = 1 ] && echo true || echo false)" "$i" > "$work/c$i.toml"
    launch "$work/c$i.toml" "$work/c$i.log"
    cl+=($!)
  done
  pids+=("${cl[@]}")
  sleep 2
  for i in $(seq 2 "$n"); do "$bin" --endpoints 127.0.0.1:17761 cluster join "127.0.0.1:1776$i" >/dev/null; done
}
