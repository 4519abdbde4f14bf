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
Each drill is a test in `crates/cli/tests/drills/main.rs`: DuckMesh's components run as real
`duckmesh` processes (`api`, `coordinator`, `dev` with its worker processes) on a real
PostgreSQL catalog and a moto bucket; one failure is injected at the process level; the
metric an alert watches is scraped from `/metrics` and must have moved; the run ends with the
history checker (`crates/history`) over the catalog and the bucket. docs/testing.md explains
the harness. "Recovered in" is measured from the injection (or its end, for an outage) to
ingest acknowledged again or the backlog drained / the Job finished, whichever the drill says.

HEAD
        echo "$table"
        cat <<'TAIL'

## Not yet built

These SPEC §9 scenarios have no drill yet and are not counted as passing:

| scenario | status |
|---|---|
| Postgres fast restart under load | not yet built (the pause drill exists; `LocalCluster` picks a new port on every start, so a restart in place needs `pg_ctl restart` or a fixed port) |
| Poison ingest payload | not yet built: the API refuses records whose JSON type does not fit the column (400 invalid_record), so the drill needs a value that passes the API and fails conversion (an impossible DATE, as crates/cli/tests/ingest.rs does); no `/metrics` family counts dead letters yet |
| Read-only switched on and off under load | not yet passing: under 4 open-loop producers the query during read-only got 503 `catalog_unavailable` (the API's catalog pool timed out) — under investigation; crates/cli/tests/ingest.rs checks read-only without load |
| Outbox delivery failing until max attempts | not yet built (the dispatcher exists, crates/coordinator/src/outbox.rs; its failure path is tested in crates/coordinator/tests/outbox.rs, not yet as a drill) |
| Compaction interrupted mid-run | covered by `a_compaction_killed_mid_upload_changes_nothing_and_the_retry_finishes_it` in crates/cli/tests/worker.rs, not yet a drill with the history checker |
| Worker killed between upload and commit | covered by crates/cli/tests/worker.rs (`a_worker_killed_mid_upload_…`); the drill kills mid-query |
TAIL
    } > docs/drills.md
    echo "wrote docs/drills.md"
fi
exit "$status"
