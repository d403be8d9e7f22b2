#!/usr/bin/env bash
# The rolling upgrade from the previous release, with real processes of both releases: builds the
# last release that kept Raft in sled (PREVIOUS, from git history) beside this checkout, then runs the
# ignored test `a_rolling_upgrade_of_three_nodes_keeps_serving_calls` against it. Not part of the test
# command (it needs the history and a second build); its result goes in the release notes.
set -euo pipefail
cd "$(dirname "$0")/.."
PREVIOUS=${PREVIOUS:-7e2fb17}
work=$(mktemp -d)
trap 'git worktree remove --force "$work/prev" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --detach "$work/prev" "$PREVIOUS" >/dev/null
# its own target directory, so this checkout's binaries are never overwritten (its dependencies build again)
(cd "$work/prev" && CARGO_TARGET_DIR="$PWD/../target-prev" cargo build -p hatrunk --locked)
export HATRUNK_PREVIOUS_BIN="$work/target-prev/debug/hatrunk"
cargo test -p hatrunk --test e2e_storage --locked -- --ignored --nocapture a_rolling_upgrade
