# DuckMesh recipes. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Show the recipes.
default:
    @just --list

# Format the code.
fmt:
    cargo fmt --all

# rustfmt check and clippy with warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Every test suite, the end-to-end suite on the Kubernetes test bed included (real PostgreSQL:
# $DATABASE_URL or a throwaway local cluster).
test:
    cargo test --workspace --locked

# The Kubernetes test bed: build (or reuse) the pinned control plane, start it with a test node
# that runs the duckmesh image as local processes, print the kubeconfig; Ctrl-C stops it.
testbed *args:
    scripts/testbed.sh up {{args}}

# The end-to-end suite alone: kubectl and the operator against a real API server (the bed is
# built once and cached; every test starts what it needs and stops it).
e2e *args:
    scripts/testbed.sh build >/dev/null
    scripts/fetch-duckdb.sh >/dev/null
    cargo test -p duckmesh --test e2e --locked -- {{args}}

# Prometheus rules (promtool check + unit tests), Alertmanager config and routing (amtool).
check-observability:
    scripts/check-observability.sh

# What CI runs: lints, tests (the Helm chart's checks and its install on the test bed are test
# suites of `cargo test --workspace`, so `chart` and `e2e-helm` are not run twice), the drills
# but the two outage drills, 20 chaos kills, 10 s of each fuzz target, the API contract, the
# observability kit's checks, and the container image (built twice from the test profile's
# binary, digests compared, smoke-run).
ci: lint test (drills "--skip" "postgres_paused" "--skip" "object_store") (chaos "20") (fuzz "10") api-contract check-observability image-ci

# Every cargo-fuzz target in fuzz/ for SECONDS each, from its committed corpus (nightly +
# cargo-fuzz; sanitizer builds in /var/tmp/duckmesh-fuzz-target). A crash fails the recipe.
fuzz seconds="10":
    scripts/fuzz.sh {{seconds}}

# schemathesis against a live `duckmesh api` (throwaway PostgreSQL, moto, a couple of datasets):
# no 5xx, every answer as docs/openapi.json says.
api-contract max_examples="100":
    scripts/api-contract.sh {{max_examples}}

# The container image (Containerfile, docs/image.md): built twice with buildah (no daemon, no
# registry), the two digests compared, then smoke-run with podman (--version, crds, migrate, a
# pipeline and a stale worker against a throwaway PostgreSQL and moto). Prints image=… digest=… size_mb=….
image *args:
    scripts/image.sh {{args}}

# CI's image check: the same two builds, digest comparison and podman smoke run as `just image`,
# from the test profile's binary built in this (clean) clone instead of a release build.
image-ci:
    DUCKMESH_IMAGE_PROFILE=debug scripts/image.sh

# Regenerate docs/openapi.json from the handlers and types (a test fails when it drifts).
openapi:
    DUCKMESH_BLESS=1 cargo test -p duckmesh-query --test openapi committed_document

# The catalog's invariant test alone; replay a run with `just invariants <seed>`.
invariants seed="":
    {{ if seed == "" { "" } else { "DUCKMESH_INVARIANT_SEED=" + seed } }} cargo test -p duckmesh-catalog --test invariants -- --nocapture

# Lease + fenced-commit throughput, durable, 32 runners leasing 8 tasks per statement with the confirm
# folded in (prints lease_commit_per_sec=… commit_p50_ms=… commit_p95_ms=… runners=… batch=…).
bench-catalog:
    cargo bench -p duckmesh-catalog --bench lease_commit

# Worker throughput vs raw DuckDB on ≥ 10 M rows (prints rows_per_sec=… mb_per_sec=… ratio_vs_duckdb=…).
bench-worker:
    scripts/fetch-duckdb.sh >/dev/null
    cargo bench -p duckmesh-worker --bench worker

# Query API latency vs raw DuckDB, warm, on ≥ 10 M committed rows (prints p50_ms=… p95_ms=… ratio_vs_duckdb=…).
bench-query:
    scripts/fetch-duckdb.sh >/dev/null
    cargo bench -p duckmesh-query --bench query

# The 22 TPC-H queries through the query API (POST /v1/query over HTTP) against raw DuckDB on the same
# Parquet files at scale factor SCALE (default 1; tables generated with tpchgen and committed through the
# catalog), alternating: per-query medians, then scale=… api_total_s=… duckdb_total_s=… ratio_vs_duckdb=… max_query_ms=….
bench-tpch scale="1":
    scripts/fetch-duckdb.sh >/dev/null
    cargo bench -p duckmesh-query --bench tpch -- {{scale}}

# Ingest end to end (HTTP acks, coordinator, durable catalog) at a fixed offered load: one line.
bench-ingest:
    scripts/fetch-duckdb.sh >/dev/null
    cargo bench -p duckmesh-coordinator --bench ingest

# A fan-out/fan-in Job (source → N-2 middle tasks → sink, through join tasks beyond 1002; maxParallel 2) run by `duckmesh dev` on a
# fresh state directory, for each size N (default 100 and 1000; at most 10000): prints
# tasks=… wall_s=… per_task_ms=… tasks_per_sec=… peak_rss_mb=… max_cr_status_bytes=….
bench-dag *sizes:
    scripts/fetch-duckdb.sh >/dev/null
    cargo bench -p duckmesh --bench dag -- {{sizes}}

# Compaction of ~400 small Parquet files (~10 M rows) through the real code path vs raw DuckDB COPY of
# the same files, alternating (prints files and bytes before/after, then files_before=… … ratio_vs_duckdb=…).
bench-compact:
    scripts/fetch-duckdb.sh >/dev/null
    cargo bench -p duckmesh-maintenance --bench compact

# Failure drills (docs/drills.md): each scenario a test running real duckmesh processes, one
# failure injected (SIGKILL, PostgreSQL paused, object-store 503s and outage, poison, read-only,
# lock contention, duplicate wake-ups), the metric checked on /metrics, then the history checker.
# Prints the table; a full run (no filter) writes docs/drills.md. Non-zero on any violation.
drills *filter:
    scripts/fetch-duckdb.sh >/dev/null
    scripts/drills.sh {{filter}}

# kill -9 chaos run (benches/chaos.rs): api, coordinator and duckmesh dev under open-loop ingest
# and a stream of Jobs; a random worker, the coordinator, the API or dev killed every 3 s and
# restarted; then the history checker. Prints kills=… acked_records=… visible_exactly_once=…
# duplicate_outputs=… stale_commits=… violations=… and exits 1 on any violation.
chaos kills="20":
    scripts/fetch-duckdb.sh >/dev/null
    cargo bench -p duckmesh --bench chaos --profile dev --locked -- {{kills}}

# Regenerate crds/duckmesh.io.yaml from the resource types (a test fails when it drifts).
crds:
    DUCKMESH_BLESS=1 cargo test -p duckmesh-resources --test crds

# Apply catalog migrations (private PostgreSQL under ./.duckmesh unless --database-url is given).
migrate *args:
    cargo run --release -p duckmesh -- migrate {{ args }}

# An archiving private PostgreSQL, real commits through the worker, pg_basebackup, commits before
# and after a target time, the catalog destroyed, then `duckmesh restore-drill` restores it to the
# target and checks it; exits non-zero on any inconsistency. With
# DUCKMESH_RESTORE_DRILL_INTEGRITY_API_URL=… it also checks that API's /v1/integrity.
# The backup and restore drill, rehearsed on this machine in seconds (prints RPO, RTO, PASS/FAIL).
restore-drill *args:
    scripts/fetch-duckdb.sh >/dev/null
    cargo run -q -p duckmesh --locked -- --log "${DUCKMESH_LOG:-warn}" restore-drill --rehearse {{args}}

# The quickstart pipeline on this machine (private PostgreSQL and store under ./.duckmesh).
dev *args:
    scripts/fetch-duckdb.sh >/dev/null
    cargo run -p duckmesh -- dev examples/quickstart.yaml {{args}}

# The Helm chart (charts/duckmesh): helm lint --strict of the default values and the ci/ files,
# helm template, a misspelt key and a wrong type refused by the schema, the rendered objects
# accepted by a real API server (kubectl apply --dry-run=server), the operator's rules equal to
# deployments/kubernetes/operator-rbac.yaml, no drift of the chart's copies and of
# docs/install.md's values table. helm and the bed are built from the pins once and cached.
chart *args:
    scripts/go-tools.sh build helm >/dev/null
    scripts/testbed.sh build >/dev/null
    cargo test -p duckmesh --test chart --locked -- {{args}}

# The chart installed for real on the Kubernetes test bed: helm install (the hook migrates the
# catalog; pods Ready), the quickstart Job, helm test, two upgrades (one rolls every pod), helm
# uninstall (only the CRDs and the data remain).
e2e-helm *args:
    scripts/go-tools.sh build helm >/dev/null
    scripts/testbed.sh build >/dev/null
    scripts/fetch-duckdb.sh >/dev/null
    cargo test -p duckmesh --test helm --locked -- --nocapture {{args}}
