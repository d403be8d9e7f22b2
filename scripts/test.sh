#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (Debian's sip-tester for
# SIPp, iproute2 for network namespaces, openssl as an outside TLS peer, strace to see the store's syncs, nftables to block SIP between members, dnsmasq as a DNS server, prometheus for promtool, postgresql as the CDR database, chromium for the status page), then runs every unit and end-to-end test and the
# deterministic simulation (named scenarios and 100 seeds from a range the commit derives).
# Fails loudly when a tool cannot be installed; no test skips because a tool is absent.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v svcrack >/dev/null 2>&1 || need+=(sipvicious)
command -v dnsmasq >/dev/null 2>&1 || need+=(dnsmasq-base)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v sipp >/dev/null || { echo "FATAL: sipp is still missing after installing sip-tester" >&2; exit 1; }
command -v openssl >/dev/null || { echo "FATAL: openssl (the outside TLS peer of the TLS tests) is still missing" >&2; exit 1; }
command -v strace >/dev/null || { echo "FATAL: strace (the test that acknowledgements follow an fdatasync) is still missing" >&2; exit 1; }
command -v nft >/dev/null || { echo "FATAL: nft (nftables: the test that blocks SIP between members) is still missing" >&2; exit 1; }
command -v svcrack >/dev/null || { echo "FATAL: svcrack (sipvicious: the password-guessing test) is still missing" >&2; exit 1; }
command -v dnsmasq >/dev/null || { echo "FATAL: dnsmasq (dnsmasq-base: the DNS server of the SRV test) is still missing" >&2; exit 1; }
command -v promtool >/dev/null || { echo "FATAL: promtool (prometheus: the alert rules' checks) is still missing" >&2; exit 1; }
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v psql >/dev/null && command -v runuser >/dev/null || { echo "FATAL: PostgreSQL (initdb, psql) or runuser is still missing: the CDR database test needs them" >&2; exit 1; }
command -v chromium >/dev/null || { echo "FATAL: chromium (the status page's browser test) is still missing" >&2; exit 1; }
[ -d ../shared/sip-torture ] || { echo "FATAL: ../shared (torture messages, SIPp scenarios) must sit beside the checkout" >&2; exit 1; }

# End-to-end tests bind ports 30000-39999, inside Linux's ephemeral range: reserve them so the kernel
# never hands one to an outgoing connection (the harness does the same when run without this script).
if [ -w /proc/sys/net/ipv4/ip_local_reserved_ports ]; then
  r=$(cat /proc/sys/net/ipv4/ip_local_reserved_ports)
  case "$r" in *30000-39999*) ;; "") echo 30000-39999 > /proc/sys/net/ipv4/ip_local_reserved_ports ;;
    *) echo "$r,30000-39999" > /proc/sys/net/ipv4/ip_local_reserved_ports ;; esac
fi

# A fresh build of the workspace (tests, benches, simulation) takes a few GB; say what the disk has, so
# a linker dying of a full disk (SIGBUS) is recognisable. Incremental state is useless on a fresh clone.
echo "disk free for the build: $(df -h --output=avail . | tail -1 | tr -d ' ')"
export CARGO_INCREMENTAL=0

# criterion benches run once each as tests (--all-targets), so they never rot; they take no
# --test-threads flag, hence the environment variable for the test binaries.
export RUST_TEST_THREADS=2
# the shipped alert rules: valid, and each alert fires on its sample series (the dashboard and the
# rules name only exported metrics: a unit test in crates/node/src/metrics.rs)
(cd cluster-configs/observability && promtool check rules alerts.yml && promtool test rules alerts_test.yml)
cargo test --workspace --all-targets --locked
# and the benchmarks and load harness binaries build with the optimised profile they are run with
cargo bench --workspace --no-run --locked
# the deterministic simulation, optimised (the sim profile: release without LTO): every named
# scenario and 100 seed-derived ones; any failure prints its one-line reproduction and fails the run
cargo build --profile sim -p hatrunk-simulation --locked
./target/sim/hatrunk-sim --all-scenarios
# 100 random seeds from a range the commit derives, so every commit draws fresh ones rather than the
# same 100 (HATRUNK_SIM_FROM overrides it); the range and how to replay it are printed first
commit=$(git rev-parse HEAD 2>/dev/null || echo 0000000)
from=${HATRUNK_SIM_FROM:-$(( (0x${commit:0:7} % 10000000) * 100 + 1000000 ))}
echo "simulation seeds $from-$((from + 99)), derived from commit ${commit:0:12}; replay: ./target/sim/hatrunk-sim --seeds 100 --from $from (one: --seed N)"
./target/sim/hatrunk-sim --seeds 100 --from "$from"
