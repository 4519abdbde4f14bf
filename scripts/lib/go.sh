# shellcheck shell=bash
# Sourced by scripts/testbed.sh and scripts/go-tools.sh: the Go toolchain that builds the pinned
# Go modules under testbed/go/. The sourcing script defines say().

# need_go WHAT: puts the official install (/usr/local/go/bin, often missing from a non-login
# shell's PATH) on PATH when `go` is not found, and exits 1 naming WHAT when Go is missing or
# older than 1.26, the pinned modules' requirement.
need_go() {
  local what="$1"
  if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
    export PATH="/usr/local/go/bin:$PATH"
  fi
  if ! command -v go >/dev/null; then
    say "Go is not installed: $what is built from Go modules (Go >= 1.26 needed)"
    exit 1
  fi
  local version
  version="$(go env GOVERSION)"
  version="${version#go}"
  local major="${version%%.*}" rest="${version#*.}"
  local minor="${rest%%.*}"
  if (( major < 1 || (major == 1 && minor < 26) )); then
    say "Go $version is too old: $what needs Go >= 1.26"
    exit 1
  fi
}
