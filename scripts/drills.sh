#!/usr/bin/env bash
# `just drills [FILTER…]`: runs the failure drills (crates/cli/tests/drills) one at a time, prints
# the summary table, and — on a full run (no filter) — writes it to docs/drills.md. Exits non-zero
# when a drill fails or finds a violation.
set -euo pipefail
cd "$(dirname "$0")/.."
results=$(mktemp)
trap 'rm -f "$results"' EXIT
status=0
DUCKMESH_DRILLS_RESULTS="$results" cargo test -p duckmesh --test drills --locked -- --test-threads 1 --nocapture "$@" || status=$?

table="| scenario | injected | recovered in | records / tasks checked | metric moved | violations |
|---|---|---|---|---|---|"
while IFS=$'\t' read -r scenario injected recovered records tasks metric violations; do
    table+=$'\n'"| $scenario | $injected | ${recovered} s | $records / $tasks | $metric | $violations |"
done < "$results"
echo
echo "$table"

if [[ $# -eq 0 ]]; then
    {
        cat <<'HEAD'
# Failure drills

Written by `just drills` (scripts/drills.sh) from its last full run; do not edit by hand.
Each drill is a test in `crates/cli/tests/drills/` (`main.rs`; `catalog.rs` for the catalog's
outages and read-only; `delivery.rs` for poison payloads, the outbox, compaction and a
worker's upload window): DuckMesh's components run as real
`duckmesh` processes (`api`, `coordinator`, `dev` with its worker processes) on a real
PostgreSQL catalog and a moto bucket; one failure is injected at the process level; the
metric an alert watches is scraped from `/metrics` and must have moved; the run ends with the
history checker (`crates/history`) over the catalog and the bucket. docs/testing.md explains
the harness. "Recovered in" is measured from the injection (or its end, for an outage) to
ingest acknowledged again or the backlog drained / the Job finished, whichever the drill says.

HEAD
        echo "$table"
        cat <<'TAIL'

Every recovery scenario SPEC §9 names has a drill above: the worker is killed mid-query,
mid-upload and between its upload and its commit, the compaction mid-upload.
TAIL
    } > docs/drills.md
    echo "wrote docs/drills.md"
fi
exit "$status"
