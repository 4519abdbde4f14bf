#!/usr/bin/env bash
# The Kubernetes test bed's binaries: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kubectl, built from the Go modules pinned under testbed/go/ (go.sum
# committed) through the Go module proxy, into a cache outside the clone that later runs reuse.
#
# Usage:
#   scripts/testbed.sh build        build what is missing (or reuse it); print the bin directory
#   scripts/testbed.sh up [ARGS]    build, then start a bed and a test node for poking at by hand
#                                   (cargo run -p duckmesh-testbed -- up ARGS; Ctrl-C stops it)
#
# Env:
#   DUCKMESH_TESTBED_CACHE  cache root (default ${XDG_CACHE_HOME:-~/.cache}/duckmesh/testbed)
#   KUBEBUILDER_ASSETS      a directory of envtest assets: binaries found there are used instead
#                           of being built (setup-envtest ships etcd, kube-apiserver, kubectl)
#
# Idempotent: a second run with the same pins prints the same directory at once. Concurrent runs
# serialise on a lock. Needs Go >= 1.26 (the pinned Kubernetes release's own requirement).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
say() { printf 'testbed: %s\n' "$*" >&2; }

K8S_VERSION="v1.36.3"
ETCD_VERSION="v3.6.8"
# Version stamps the Kubernetes release build sets (hack/lib/version.sh); the build date is pinned
# so that two builds of the same pins are identical.
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=36"
  k8s_ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
done
etcd_ldflags="-s -w"

# shellcheck source=scripts/lib/go.sh
source "$repo/scripts/lib/go.sh"

cache_key() {
  {
    cat "$repo"/testbed/go/kubernetes/go.mod "$repo"/testbed/go/kubernetes/go.sum
    cat "$repo"/testbed/go/etcd/go.mod "$repo"/testbed/go/etcd/go.sum
    echo "$k8s_ldflags $etcd_ldflags"
    go env GOVERSION GOOS GOARCH
  } | sha256sum | cut -c1-16
}

build() {
  need_go "the test bed"
  local root="${DUCKMESH_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/duckmesh/testbed}"
  local bin="$root/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-$(cache_key)/bin"
  mkdir -p "$bin"
  exec 9>"$bin/.lock"
  flock 9
  export GOFLAGS="-mod=readonly -trimpath" GOTOOLCHAIN=local CGO_ENABLED=0
  local name
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [[ -x "$bin/$name" ]] && continue
    if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/$name" ]]; then
      say "using $KUBEBUILDER_ASSETS/$name (KUBEBUILDER_ASSETS)"
      ln -sf "$KUBEBUILDER_ASSETS/$name" "$bin/$name"
      continue
    fi
    local start=$SECONDS
    say "building $name (once; cached in $bin)"
    if [[ "$name" == etcd ]]; then
      (cd "$repo/testbed/go/etcd" && go build -ldflags "$etcd_ldflags" -o "$bin/.$name.tmp" go.etcd.io/etcd/server/v3)
    else
      (cd "$repo/testbed/go/kubernetes" &&
        go build -ldflags "$k8s_ldflags" -o "$bin/.$name.tmp" "k8s.io/kubernetes/cmd/$name")
    fi
    mv -f "$bin/.$name.tmp" "$bin/$name"
    say "built $name in $((SECONDS - start)) s"
  done
  flock -u 9
  echo "$bin"
}

case "${1:-}" in
  build)
    build
    ;;
  up)
    shift
    bin="$(build)"
    "$repo/scripts/fetch-duckdb.sh" >/dev/null
    cd "$repo"
    cargo build -p duckmesh --bin duckmesh
    DUCKMESH_TESTBED_BIN_DIR="$bin" exec cargo run -p duckmesh-testbed --bin duckmesh-testbed -- up "$@"
    ;;
  *)
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
