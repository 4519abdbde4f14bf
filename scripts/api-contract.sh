#!/usr/bin/env bash
# `just api-contract`: schemathesis checks a live `duckmesh api` against its own OpenAPI document
# (GET /v1/openapi.json = docs/openapi.json): no 5xx, every status, content type, header and body
# as documented. Starts a throwaway PostgreSQL, moto (S3) and `duckmesh dev` once to commit a
# couple of datasets (scripts/api-contract/pipeline.yaml), then the API with an API key file;
# everything it started is stopped and removed on exit.
#
# Usage: scripts/api-contract.sh [MAX_EXAMPLES]   (default 100 per operation: about 800 requests, under a minute)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
max_examples="${1:-100}"
tools="${DUCKMESH_TOOLS_DIR:-$HOME/.cache/duckmesh/tools}/venv/bin"
for tool in schemathesis moto_server; do
  [[ -x "$tools/$tool" ]] || { echo "error: $tools/$tool is missing: run scripts/bootstrap.sh --tests" >&2; exit 1; }
done

scripts/fetch-duckdb.sh >/dev/null
cargo build -p duckmesh --locked --quiet
duckmesh="${CARGO_TARGET_DIR:-$root/target}/debug/duckmesh"

work="$(mktemp -d "${TMPDIR:-/tmp}/duckmesh-api-contract.XXXXXX")"
chmod 755 "$work"
pids=()
pg_bin=""
as_pg=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n "$pg_bin" && -f "$work/pg/data/postmaster.pid" ]]; then
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [[ $status -ne 0 ]]; then
    for log in "$work"/*.log; do
      [[ -f "$log" ]] && { echo "--- $(basename "$log") (last lines)" >&2; tail -n 20 "$log" >&2; }
    done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() { # URL WHAT
  for _ in $(seq 1 150); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "error: $2 did not come up ($1)" >&2
  return 1
}

# --- PostgreSQL: the machine's server binaries, a cluster in $work (as nobody when root) ---
for candidate in "${DUCKMESH_PG_BIN_DIR:-}" "$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/x)")" \
  $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
  if [[ -n "$candidate" && -x "$candidate/pg_ctl" ]]; then pg_bin="$candidate"; break; fi
done
[[ -n "$pg_bin" ]] || { echo "error: no PostgreSQL server binaries (scripts/bootstrap.sh installs them)" >&2; exit 1; }
mkdir -p "$work/pg"
if [[ $(id -u) -eq 0 ]]; then
  chown nobody "$work/pg"
  as_pg=(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups --)
fi
pg_port="$(free_port)"
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg/data" -U postgres -A trust --no-sync >"$work/initdb.log" 2>&1
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/postgres.log" -w start \
  -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off" >/dev/null
database_url="postgres://postgres@127.0.0.1:$pg_port/postgres"

# --- moto: an S3-compatible server with one bucket ---
moto_port="$(free_port)"
"$tools/moto_server" -p "$moto_port" >"$work/moto.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$moto_port/moto-api/" "moto_server"
curl -fsS -X PUT "http://127.0.0.1:$moto_port/duckmesh-contract" >/dev/null
export DUCKMESH_S3_BUCKET=duckmesh-contract DUCKMESH_S3_ENDPOINT="http://127.0.0.1:$moto_port"
export AWS_ACCESS_KEY_ID=contract AWS_SECRET_ACCESS_KEY=contract DUCKMESH_S3_REGION=us-east-1
export DUCKMESH_DATABASE_URL="$database_url" RUST_LOG="${RUST_LOG:-warn}"

# --- data: migrate, then one dev run of the pipeline (it exits when the Job succeeded) ---
"$duckmesh" migrate >"$work/migrate.log" 2>&1
"$duckmesh" dev scripts/api-contract/pipeline.yaml --state-dir "$work/dev" --listen "127.0.0.1:$(free_port)" \
  --s3-bucket duckmesh-contract --s3-endpoint "http://127.0.0.1:$moto_port" >"$work/dev.log" 2>&1

# --- the API, with an API key file and short limits so barrier waits end quickly ---
key="contract-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf -- '- key: %s\n  tenant: default\n  user: contract\n' "$key" >"$work/keys.yaml"
api_port="$(free_port)"
DUCKMESH_API_KEYS_FILE="$work/keys.yaml" \
  DUCKMESH_QUERY_CACHE_DIR="$work/cache" \
  DUCKMESH_QUERY_TIMEOUT_SECONDS=3 \
  DUCKMESH_TASK_QUERY_TIMEOUT_SECONDS=3 \
  DUCKMESH_QUERY_RATE_LIMIT_PER_USER=0 \
  DUCKMESH_API_RATE_LIMIT_PER_USER=0 \
  DUCKMESH_API_RATE_LIMIT_PER_TENANT=0 \
  "$duckmesh" api --listen "127.0.0.1:$api_port" >"$work/api.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$api_port/v1/ready" "duckmesh api"

# --- the contract: stateless checks, bounded ---
# Every check but positive_data_acceptance: a schema cannot say which SQL parses or which records
# fit a dataset, so schema-valid requests are rightly answered 400/404 (query_invalid,
# invalid_record, dataset_not_found).
# One worker: the run is then the same for the same seed, and it keeps clear of a CPython 3.11
# race (gh-106905, fixed in 3.11.8; this machine's python3 is 3.11.7): two threads parsing source
# at once (Hypothesis describing a strategy's lambdas) fail with "AST constructor recursion depth
# mismatch", which schemathesis reports as an error of the operation under test. The run takes
# 10-12 s with one worker here, as with two.
"$tools/schemathesis" --config-file "$root/scripts/schemathesis.toml" \
  run "http://127.0.0.1:$api_port/v1/openapi.json" \
  --url "http://127.0.0.1:$api_port" \
  --header "Authorization: Bearer $key" \
  --checks all \
  --exclude-checks positive_data_acceptance \
  --phases examples,coverage,fuzzing \
  --max-examples "$max_examples" \
  --workers 1 \
  --request-timeout 15 \
  --seed "${DUCKMESH_CONTRACT_SEED:-20261202}" \
  --suppress-health-check all \
  --no-color
