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
# `light`: only the targets that build from light crates (the statement check on duckmesh-core,
# the YAML reader on duckmesh-resources) — what CI runs. The ingest and task-spec targets pull in
# the AWS SDK, sqlx and DuckDB's bindings, whose first sanitizer build takes 15–30 minutes here.
scope="${2:-all}"
case "$scope" in
  all) features=(); only="" ;;
  light) features=(--no-default-features --features resources); only="statement_check statement_tree resources_yaml" ;;
  *) echo "error: scope must be all or light, not $scope" >&2; exit 2 ;;
esac
command -v cargo-fuzz >/dev/null || { echo "error: cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2; exit 1; }
export CARGO_TARGET_DIR="${DUCKMESH_FUZZ_TARGET_DIR:-/var/tmp/duckmesh-fuzz-target}"
"$root/scripts/fetch-duckdb.sh" >/dev/null
cd "$root/fuzz"
cargo +nightly fuzz build "${features[@]}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in ${only:-$(cargo +nightly fuzz list)}; do
  mkdir -p "$scratch/$target" "corpus/$target"
  echo "fuzz: $target for ${seconds}s"
  status=0
  cargo +nightly fuzz run "${features[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 \
    >"$scratch/$target.log" 2>&1 || status=$?
  grep -E '^stat::number_of_executed_units|^#[0-9]+ *DONE' "$scratch/$target.log" || true
  if [[ $status -ne 0 ]]; then
    tail -n 60 "$scratch/$target.log" >&2
    echo "fuzz: $target failed (the input is under fuzz/artifacts/$target/)" >&2
    exit 1
  fi
done
echo "fuzz: every target ($scope) ran ${seconds}s without a failure"
