#!/usr/bin/env bash
# `just fuzz [SECONDS]`: runs every cargo-fuzz target in fuzz/ for SECONDS each (default 10),
# starting from its committed corpus (fuzz/corpus/<target>/, read-only: new inputs go to a
# temporary directory). A crash stops the run with the target's name and the crashing input
# (fuzz/artifacts/<target>/); turn it into a #[test] in the owning crate and fix it.
#
# Needs nightly and cargo-fuzz (`cargo install cargo-fuzz --locked`). Sanitizer builds go to
# their own target directory (DUCKMESH_FUZZ_TARGET_DIR, default /var/tmp/duckmesh-fuzz-target)
# so they never invalidate the ordinary build's.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-10}"
if [[ $# -gt 1 ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS]" >&2
  exit 2
fi
command -v cargo-fuzz >/dev/null || { echo "error: cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2; exit 1; }
export CARGO_TARGET_DIR="${DUCKMESH_FUZZ_TARGET_DIR:-/var/tmp/duckmesh-fuzz-target}"
cd "$root/fuzz"
cargo +nightly fuzz build
# The fuzz workspace has its own lock file: a dependency added to a fuzzed crate changes it.
# Say so here, rather than leave a changed tracked file for a later step to trip over.
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1 && ! git -C "$root" diff --quiet -- fuzz/Cargo.lock; then
  echo "fuzz: the build updated fuzz/Cargo.lock (a fuzzed crate's dependencies changed): commit it" >&2
  exit 1
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo +nightly fuzz list); do
  mkdir -p "$scratch/$target" "corpus/$target"
  echo "fuzz: $target for ${seconds}s"
  status=0
  cargo +nightly fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 \
    >"$scratch/$target.log" 2>&1 || status=$?
  grep -E '^stat::number_of_executed_units|^#[0-9]+ *DONE' "$scratch/$target.log" || true
  if [[ $status -ne 0 ]]; then
    tail -n 60 "$scratch/$target.log" >&2
    echo "fuzz: $target failed (the input is under fuzz/artifacts/$target/)" >&2
    exit 1
  fi
done
echo "fuzz: every target ran ${seconds}s without a failure"
