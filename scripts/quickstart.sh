#!/usr/bin/env bash
# The quickstart: installs what is missing, builds DuckMesh, and runs the example pipeline with
# `duckmesh dev` — a private PostgreSQL, local object storage and worker processes, all kept
# under ./.duckmesh (a second run resumes from there). Extra arguments go to `duckmesh dev`,
# e.g. `./scripts/quickstart.sh --keep-serving` to query the results afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cargo build --release --locked -p duckmesh
exec "${CARGO_TARGET_DIR:-target}/release/duckmesh" dev examples/quickstart.yaml "$@"
