#!/usr/bin/env bash
# The test command: installs whatever is missing, then runs lints and every test suite
# (`just ci`). Tests use a real PostgreSQL: $DATABASE_URL when set, otherwise a throwaway
# cluster started from the local server binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --tests
export PATH="${DUCKMESH_TOOLS_DIR:-$HOME/.cache/duckmesh/tools}/venv/bin:$PATH"
exec just ci
