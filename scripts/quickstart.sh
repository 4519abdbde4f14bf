#!/usr/bin/env bash
# The quickstart: installs what is missing, builds DuckMesh, and runs it against a private
# PostgreSQL kept under ./.duckmesh (a second run resumes from it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cargo build --release -p duckmesh
exec "${CARGO_TARGET_DIR:-target}/release/duckmesh" migrate "$@"
