#!/usr/bin/env bash
# Installs amtool (Debian package `prometheus-alertmanager`) for scripts/check-observability.sh.
# Its promtool is the project's pinned build instead (scripts/go-tools.sh): Debian's lacks
# Kubernetes service discovery and cannot check the scrape example.
#
# Idempotent and non-interactive. Meant for Debian 12 (bookworm) as root, or with sudo.
# Installing the packages must never leave a Prometheus or Alertmanager server running
# on a developer or CI machine, and must not fail where there is no systemd (containers),
# so package scripts are forbidden to start services while we install (policy-rc.d exit
# 101) and any server that got started anyway is stopped afterwards.
#
# Also builds (or finds in its cache) the pinned promtool, so one command readies both tools.
set -euo pipefail

"$(dirname "$0")/go-tools.sh" build promtool >/dev/null

if command -v amtool >/dev/null 2>&1; then
    echo "install-observability-tools: amtool already installed"
    amtool --version 2>&1 | head -n 1
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "install-observability-tools: need root (or sudo) to run apt-get" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-observability-tools: apt-get not found; install amtool by other means" >&2
    exit 1
fi

# Keep maintainer scripts from starting the servers. Respect a policy that already exists
# (container images usually ship one); otherwise add ours and remove it on exit.
POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# added by duckmesh install-observability-tools.sh\nexit 101\n' \
        | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 0755 "$POLICY"
    OWN_POLICY=1
fi
cleanup() {
    if [ "$OWN_POLICY" -eq 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY"
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
    --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    prometheus-alertmanager

# Belt and braces: if a service manager started the servers despite the policy, stop and
# disable them. Only the packaged units are touched, by their exact names.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    "${SUDO[@]}" systemctl disable --now prometheus-alertmanager.service >/dev/null 2>&1 || true
fi

command -v amtool >/dev/null 2>&1 || { echo "install-observability-tools: amtool missing after install" >&2; exit 1; }
amtool --version 2>&1 | head -n 1
echo "install-observability-tools: done"
