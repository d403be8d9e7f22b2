#!/usr/bin/env bash
# Coverage-guided fuzzing of every target for a while each (default 600 s): nightly Rust and
# cargo-fuzz (`cargo install cargo-fuzz`). Seeds come from hatrunk-fuzz's seeds (the RFC 4475
# torture messages for SIP); crashes land in fuzz/libfuzzer/artifacts/<target>/ and belong, once
# fixed, in fuzz/regressions/<target>/ where CI replays them.
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(sip digest trunk node_config rpc)
cargo run -q -p hatrunk-fuzz --bin write-seeds -- fuzz/libfuzzer/corpus
for t in "${targets[@]}"; do
  echo "== $t for ${secs}s"
  cargo +nightly fuzz run --fuzz-dir fuzz/libfuzzer "$t" "fuzz/libfuzzer/corpus/$t" -- \
    -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 > "fuzz/libfuzzer/last-$t.log" 2>&1 || true
  tail -n 12 "fuzz/libfuzzer/last-$t.log"
done
