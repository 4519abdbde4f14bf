#!/usr/bin/env bash
# Installs what DuckMesh's build, quickstart and tests need on a fresh Debian/Ubuntu machine
# that has only the Rust toolchain. Idempotent: every step checks first and does nothing when
# the tool is already there. Usage: scripts/bootstrap.sh [--tests]
#   (no flag)  PostgreSQL server binaries (for the private catalog database) and DuckDB's
#              prebuilt library (scripts/fetch-duckdb.sh)
#   --tests    also just, rustfmt/clippy, and the Python test tools
set -euo pipefail

want_tests=false
[[ "${1:-}" == "--tests" ]] && want_tests=true

TOOLS_DIR="${DUCKMESH_TOOLS_DIR:-$HOME/.cache/duckmesh/tools}"
say() { printf 'bootstrap: %s\n' "$*" >&2; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else say "need root for: $*  (install sudo or run as root)"; exit 1
  fi
}

apt_updated=false
apt_install() {
  if ! command -v apt-get >/dev/null; then
    say "apt-get not found: install these packages by hand: $*"; exit 1
  fi
  if ! $apt_updated; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt_updated=true
  fi
  # Another apt (unattended upgrades, a parallel install) may hold dpkg's lock: wait for it.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "$@" >/dev/null
}

have_pg_server() {
  [[ -n "${DUCKMESH_PG_BIN_DIR:-}" && -x "${DUCKMESH_PG_BIN_DIR}/initdb" ]] && return 0
  command -v initdb >/dev/null && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

# --- PostgreSQL server binaries (DuckMesh starts its own private clusters from them) ---
if ! have_pg_server; then
  say "installing the PostgreSQL server package"
  # Debian's package would create and start a system-wide cluster; DuckMesh needs none.
  as_root mkdir -p /etc/postgresql-common
  if [[ ! -f /etc/postgresql-common/createcluster.conf ]]; then
    echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  apt_install postgresql
fi

# --- DuckDB's prebuilt shared library, which the build links against (no compiler needed) ---
"$(dirname "$0")/fetch-duckdb.sh" >/dev/null

$want_tests || exit 0

# --- rustfmt and clippy for `just lint` ---
if command -v rustup >/dev/null; then
  for component in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^${component}" || rustup component add "$component"
  done
fi

# --- nightly Rust and cargo-fuzz for `just fuzz` (sanitizer builds need nightly) ---
if command -v rustup >/dev/null; then
  rustup toolchain list | grep -q '^nightly' || { say "installing the nightly toolchain (fuzzing)"; rustup toolchain install nightly --profile minimal >/dev/null; }
fi
command -v cargo-fuzz >/dev/null || { say "installing cargo-fuzz"; cargo install cargo-fuzz --locked --quiet; }

# --- Python tools in a private virtualenv: just (as a wheel), moto_server (S3-compatible test server),
#     schemathesis (just api-contract) ---
if [[ ! -x "$TOOLS_DIR/venv/bin/python" ]]; then
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3-venv
  fi
  say "creating the tools virtualenv in $TOOLS_DIR/venv"
  mkdir -p "$TOOLS_DIR"
  python3 -m venv "$TOOLS_DIR/venv"
fi
pip_install() {
  "$TOOLS_DIR/venv/bin/python" -m pip install -q --disable-pip-version-check "$@"
}
[[ -x "$TOOLS_DIR/venv/bin/just" ]] || { say "installing just"; pip_install "rust-just==1.*"; }
[[ -x "$TOOLS_DIR/venv/bin/moto_server" ]] || { say "installing moto (S3-compatible test server)"; pip_install "moto[server]==5.*"; }
[[ -x "$TOOLS_DIR/venv/bin/schemathesis" ]] || { say "installing schemathesis (API contract checks)"; pip_install "schemathesis==4.*"; }
# --- the Kubernetes test bed (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#     kubectl), built from the pinned Go modules once and cached outside the clone ---
"$(dirname "$0")/testbed.sh" build >/dev/null
# --- helm (the chart's checks) and promtool (the observability checks), built from the pinned Go
#     modules once and cached outside the clone; amtool from Debian ---
"$(dirname "$0")/go-tools.sh" build >/dev/null
"$(dirname "$0")/install-observability-tools.sh" >/dev/null

say "tools ready (just $("$TOOLS_DIR/venv/bin/just" --version | cut -d' ' -f2))"
