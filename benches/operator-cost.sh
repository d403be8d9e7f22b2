#!/usr/bin/env bash
# What issue 21's operator features cost on the call path: CPU time per call (every call failing
# over, the shared harness ../shared/bench/cpu-per-call.sh) of one node three times: as is, with
# its CDRs shipped to a local PostgreSQL ([cdr] postgres), and with the status page's API polled as
# an open page does (members, trunks and CDRs every second, rates every 5 s). Prints each and the
# ratios to the first (goal: the PostgreSQL sink within 10%).
#
# usage: benches/operator-cost.sh [-r RATE=1000] [-t SECONDS=10]
# Needs: a release build (built here), Debian's sip-tester and postgresql (installed if missing).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/benches/lib.sh"
rate=1000 secs=10
while getopts "r:t:" o; do case $o in r) rate=$OPTARG;; t) secs=$OPTARG;; *) exit 2;; esac; done
need sipp:sip-tester psql:postgresql
cargo build --release -p hatrunk --bin hatrunk --manifest-path "$here/Cargo.toml"
bench_trunk 1000000 failover

# a PostgreSQL of our own, as the postgres user, on a port of its own
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pg=$(mktemp -d /tmp/hatrunk-bench-pg.XXXXXX) # its own: $work is not the postgres user's to enter
chown postgres:postgres "$pg"
runuser -u postgres -- "$pgbin/initdb" -A trust -U hatrunk --no-sync -D "$pg/data" >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$pg/data" -l "$pg/log" -o "-p 15432 -k $pg -c listen_addresses=127.0.0.1" start -w >/dev/null
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; runuser -u postgres -- "$pgbin/pg_ctl" -D "$pg/data" stop -m immediate >/dev/null 2>&1; rm -rf "$pg"; true' EXIT

measure() { # LABEL: one node, the harness, its figure in $work/LABEL.out
  start_node
  apply_trunk 17700
  if [ "$1" = page ]; then
    ( i=0; while kill -0 "$node" 2>/dev/null; do
        for p in members trunks cdrs; do curl -s -o /dev/null "http://127.0.0.1:19090/api/v1/$p" || true; done
        [ $((i % 5)) = 0 ] && curl -s -o /dev/null http://127.0.0.1:19090/api/v1/rates; i=$((i + 1)); sleep 1
      done ) &
    pids+=("$!")
  fi
  echo "== $1 (pid $node)"
  "$shared/bench/cpu-per-call.sh" "$node" 127.0.0.1:15060 -f 503 -r "$rate" -t "$secs" | tee "$work/$1.out"
  kill "$node"; wait "$node" 2>/dev/null || true
}
HATRUNK_EXTRA_TOML= measure plain
HATRUNK_EXTRA_TOML='[cdr]\npostgres = "postgres://hatrunk@127.0.0.1:15432/postgres"\n' measure postgres
rows=$(psql -h 127.0.0.1 -p 15432 -U hatrunk -d postgres -At -c "SELECT count(*) FROM hatrunk_calls")
HATRUNK_EXTRA_TOML= measure page
fig() { grep -oE "cpu_us_per_call=[0-9.]+" "$work/$1.out" | cut -d= -f2; }
python3 -c "p=float('$(fig plain)'); g=float('$(fig postgres)'); s=float('$(fig page)'); print(f'plain_cpu_us_per_call={p:.1f} postgres_cpu_us_per_call={g:.1f} ratio={g/p:.3f} (goal <= 1.10; $rows rows shipped) page_open_cpu_us_per_call={s:.1f} ratio={s/p:.3f}')"
