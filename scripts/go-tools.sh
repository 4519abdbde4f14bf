#!/usr/bin/env bash
# The Go command-line tools the project pins besides the test bed: `helm` (the chart's checks:
# just chart, just e2e-helm) and `promtool` (scripts/check-observability.sh; Debian's build has
# no Kubernetes service discovery). Each is built from its Go module under testbed/go/<tool>/
# (go.mod with a `tool` directive, go.sum committed) through the Go module proxy, into a cache
# outside the clone keyed by the pins, like scripts/testbed.sh.
#
# Usage:
#   scripts/go-tools.sh build [TOOL...]   build what is missing (default: helm promtool);
#                                         print the bin directory
#   scripts/go-tools.sh path TOOL         build TOOL if missing; print its path
#
# Env:
#   DUCKMESH_TOOLS_CACHE  cache root (default ${XDG_CACHE_HOME:-~/.cache}/duckmesh/go-tools)
#
# Idempotent: a second run with the same pins prints the same directory at once. Concurrent runs
# serialise on a lock. Needs Go >= 1.26.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
say() { printf 'go-tools: %s\n' "$*" >&2; }

HELM_VERSION="v4.3.2"
PROMETHEUS_VERSION="v0.316.0"   # the Go module version of Prometheus 3.16.0
tools=(helm promtool)

# Version stamps the projects' own release builds set, so `helm version` and `promtool --version`
# tell the truth; no build date or user, so two builds of the same pins are identical.
helm_ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=${HELM_VERSION}"
helm_ldflags+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
promtool_ldflags="-s -w -X github.com/prometheus/common/version.Version=3.${PROMETHEUS_VERSION#v0.}"
promtool_ldflags="${promtool_ldflags%.*}.${PROMETHEUS_VERSION##*.}"
promtool_ldflags+=" -X github.com/prometheus/common/version.Branch=HEAD"

# shellcheck source=scripts/lib/go.sh
source "$repo/scripts/lib/go.sh"

cache_key() {
  {
    local tool
    for tool in "${tools[@]}"; do
      cat "$repo/testbed/go/$tool/go.mod" "$repo/testbed/go/$tool/go.sum"
    done
    echo "$helm_ldflags $promtool_ldflags"
    go env GOVERSION GOOS GOARCH
  } | sha256sum | cut -c1-16
}

# build TOOL...: builds the missing ones; prints the bin directory.
build() {
  need_go "helm and promtool"
  local root="${DUCKMESH_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/duckmesh/go-tools}"
  local key bin
  key="$(cache_key)"
  bin="$root/helm-${HELM_VERSION}-prometheus-${PROMETHEUS_VERSION}-${key}/bin"
  mkdir -p "$bin"
  exec 9>"$bin/.lock"
  flock 9
  export GOFLAGS="-mod=readonly -trimpath" GOTOOLCHAIN=local CGO_ENABLED=0
  local name pkg ldflags
  for name in "$@"; do
    [[ -x "$bin/$name" ]] && continue
    case "$name" in
      helm) pkg=helm.sh/helm/v4/cmd/helm ldflags="$helm_ldflags" ;;
      promtool) pkg=github.com/prometheus/prometheus/cmd/promtool ldflags="$promtool_ldflags" ;;
      *) say "unknown tool: $name (known: ${tools[*]})"; exit 2 ;;
    esac
    local start=$SECONDS
    say "building $name (once; cached in $bin)"
    (cd "$repo/testbed/go/$name" && go build -ldflags "$ldflags" -o "$bin/.$name.tmp" "$pkg")
    mv -f "$bin/.$name.tmp" "$bin/$name"
    say "built $name in $((SECONDS - start)) s"
  done
  flock -u 9
  echo "$bin"
}

case "${1:-}" in
  build)
    shift
    (( $# > 0 )) || set -- "${tools[@]}"
    build "$@"
    ;;
  path)
    [[ $# -eq 2 ]] || { say "usage: scripts/go-tools.sh path TOOL"; exit 2; }
    echo "$(build "$2")/$2"
    ;;
  *)
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
