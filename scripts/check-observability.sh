#!/usr/bin/env bash
# Checks the observability kit of SPEC §8 with the real tools:
#   - promtool check rules     recording and alerting rules parse and are valid PromQL
#   - promtool check config    the Prometheus scrape example (Kubernetes service discovery, rule files)
#   - promtool test rules      every unit test under deployments/observability/prometheus/tests/
#   - amtool check-config      the Alertmanager example
#   - amtool config routes test  every alert in duckmesh_rules.yaml reaches the receiver its
#                                severity calls for (critical -> page, warning -> ticket)
# promtool is the project's pinned build (scripts/go-tools.sh: Prometheus with Kubernetes service
# discovery, which Debian's build lacks), built on first use and cached; $PROMTOOL overrides it.
# amtool comes from Debian (scripts/install-observability-tools.sh installs it).
# Exits non-zero if any check fails; ends with "N passed, N failed".
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OBS="$ROOT/deployments/observability"
PROM="$OBS/prometheus"
AM_CONFIG="$OBS/alertmanager/alertmanager.example.yaml"
PAGE_RECEIVER=duckmesh-page
TICKET_RECEIVER=duckmesh-ticket

if [ -z "${PROMTOOL:-}" ]; then
    if ! PROMTOOL="$("$ROOT/scripts/go-tools.sh" path promtool)"; then
        echo "check-observability: building the pinned promtool failed (scripts/go-tools.sh)" >&2
        exit 2
    fi
fi
promtool() { "$PROMTOOL" "$@"; }
if ! command -v amtool >/dev/null 2>&1; then
    echo "check-observability: missing tool: amtool (Debian package: prometheus-alertmanager)" >&2
    echo "check-observability: install it with scripts/install-observability-tools.sh" >&2
    exit 2
fi

passed=0
failed=0
failures=()
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# run NAME COMMAND...: runs one check, shows its output only when it fails.
run() {
    local name="$1"
    shift
    if "$@" >"$WORK/out" 2>&1; then
        passed=$((passed + 1))
        echo "ok    $name"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "FAIL  $name"
        sed 's/^/      /' "$WORK/out"
    fi
}

echo "promtool: $(promtool --version 2>&1 | head -n 1) ($PROMTOOL)"
echo "amtool:   $(amtool --version 2>&1 | head -n 1)"

run "promtool check rules duckmesh_recording_rules.yaml" \
    promtool check rules "$PROM/duckmesh_recording_rules.yaml"
run "promtool check rules duckmesh_rules.yaml" \
    promtool check rules "$PROM/duckmesh_rules.yaml"

run "promtool check config prometheus-scrape.example.yaml" \
    promtool check config "$PROM/prometheus-scrape.example.yaml"

shopt -s nullglob
tests=("$PROM"/tests/*.yaml)
if [ "${#tests[@]}" -eq 0 ]; then
    failed=$((failed + 1))
    failures+=("promtool test rules: no test files")
    echo "FAIL  promtool test rules: no test files in $PROM/tests"
fi
for test_file in "${tests[@]}"; do
    run "promtool test rules tests/$(basename "$test_file")" promtool test rules "$test_file"
done

run "amtool check-config alertmanager.example.yaml" amtool check-config "$AM_CONFIG"

# Every alert of the rules file, with its severity and slo labels, must route by severity.
alerts="$(awk '
    /^ *- alert:/ { if (name != "") print name, severity, slo; name = $3; severity = ""; slo = "" }
    /^ *severity:/ { severity = $2 }
    /^ *slo:/ { slo = $2 }
    END { if (name != "") print name, severity, slo }
' "$PROM/duckmesh_rules.yaml")"
routed=0
while read -r name severity slo; do
    [ -n "$name" ] || continue
    case "$severity" in
        critical) expected="$PAGE_RECEIVER" ;;
        warning) expected="$TICKET_RECEIVER" ;;
        *)
            failed=$((failed + 1))
            failures+=("$name: unknown severity '$severity'")
            echo "FAIL  $name: unknown severity '$severity'"
            continue
            ;;
    esac
    labels=("alertname=$name" "severity=$severity")
    [ -n "$slo" ] && labels+=("slo=$slo")
    run "amtool routes: $name ($severity) -> $expected" \
        amtool config routes test --config.file="$AM_CONFIG" --verify.receivers="$expected" "${labels[@]}"
    routed=$((routed + 1))
done <<<"$alerts"
if [ "$routed" -lt 1 ]; then
    failed=$((failed + 1))
    failures+=("no alert found to route-test")
    echo "FAIL  no alert found in duckmesh_rules.yaml to route-test"
fi

# Negative controls: the routing test must be able to fail.
run "amtool routes: a critical alert does not reach the ticket receiver" \
    bash -c "! amtool config routes test --config.file='$AM_CONFIG' --verify.receivers=$TICKET_RECEIVER severity=critical slo=api_availability"
run "amtool routes: a warning alert does not reach the pager" \
    bash -c "! amtool config routes test --config.file='$AM_CONFIG' --verify.receivers=$PAGE_RECEIVER severity=warning slo=api_availability"

echo
if [ "$failed" -gt 0 ]; then
    printf 'failed: %s\n' "${failures[@]}"
fi
echo "check-observability: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
