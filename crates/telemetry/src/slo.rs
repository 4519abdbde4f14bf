//! The SLOs of SPEC §5 as data, and the Prometheus recording rules derived from them.
//!
//! Each SLO is a ratio of bad events to all events taken from metrics this crate exports.
//! The committed `deployments/observability/prometheus/duckmesh_recording_rules.yaml` is
//! exactly [`recording_rules_yaml`]; a test fails when the two drift, and
//! `DUCKMESH_BLESS=1 cargo test -p duckmesh-telemetry --test artefacts` rewrites the file.
//!
//! Recorded series (all labelled `slo="<name>"`):
//! - `duckmesh:sli_errors:rate<w>` and `duckmesh:sli_requests:rate<w>`: bad and all events
//!   per second over window `w`;
//! - `duckmesh:sli_error:ratio_rate<w>`: their ratio, what the burn-rate alerts compare
//!   against `factor × error budget`;
//! - `duckmesh:slo_error_budget:ratio`: the allowed error ratio (1 − objective).
//!
//! Short windows are computed from the raw counters; the 1d, 3d and 30d windows average the
//! recorded 5m rates, which keeps them cheap to evaluate.

use std::fmt::Write as _;

/// One service level objective.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slo {
    /// Value of the `slo` label on recorded series and alerts.
    pub name: &'static str,
    /// What is promised, in words.
    pub description: &'static str,
    /// The objective as written in SPEC §5.
    pub objective: &'static str,
    /// Allowed fraction of bad events (1 − objective).
    pub error_budget: f64,
    /// PromQL for bad events per second; `$window` is replaced by the range.
    pub errors: &'static str,
    /// PromQL for all events per second; `$window` is replaced by the range.
    pub requests: &'static str,
}

/// The five request-based SLOs of SPEC §5. (Controller restarts < 3/day is alerted on
/// directly from kube-state-metrics; it has no error ratio.)
pub const SLOS: [Slo; 5] = [
    Slo {
        name: "api_availability",
        description: "API requests (excluding health, readiness and metrics probes) answered without a 5xx",
        objective: "99.9%",
        error_budget: 0.001,
        errors: r#"sum(rate(duckmesh_http_requests_total{route!~"health|ready|metrics",status_class="5xx"}[$window]))"#,
        requests: r#"sum(rate(duckmesh_http_requests_total{route!~"health|ready|metrics"}[$window]))"#,
    },
    Slo {
        name: "ingest_ack_latency",
        description: "Accepted ingest requests acknowledged within 200 ms (p95 < 200 ms)",
        objective: "95% < 200 ms",
        error_budget: 0.05,
        errors: r#"sum(rate(duckmesh_ingest_ack_latency_ms_count[$window])) - sum(rate(duckmesh_ingest_ack_latency_ms_bucket{le="200.0"}[$window]))"#,
        requests: r#"sum(rate(duckmesh_ingest_ack_latency_ms_count[$window]))"#,
    },
    Slo {
        name: "write_to_visible_latency",
        description: "Acknowledged events visible in a committed snapshot within 3 s (p95 < 3 s)",
        objective: "95% < 3 s",
        error_budget: 0.05,
        errors: r#"sum(rate(duckmesh_write_to_visible_latency_ms_count[$window])) - sum(rate(duckmesh_write_to_visible_latency_ms_bucket{le="3000.0"}[$window]))"#,
        requests: r#"sum(rate(duckmesh_write_to_visible_latency_ms_count[$window]))"#,
    },
    Slo {
        name: "strict_barrier",
        description: "Strict-barrier queries (min_visibility_token) that do not time out waiting for visibility",
        objective: "99%",
        error_budget: 0.01,
        errors: r#"sum(rate(duckmesh_consistency_timeout_total[$window]))"#,
        requests: r#"sum(rate(duckmesh_query_requests_total{barrier="strict"}[$window]))"#,
    },
    Slo {
        name: "query_latency",
        description: "Interactive queries answered within 2 s (p95 < 2 s)",
        objective: "95% < 2 s",
        error_budget: 0.05,
        errors: r#"sum(rate(duckmesh_query_latency_ms_count{kind="interactive"}[$window])) - sum(rate(duckmesh_query_latency_ms_bucket{kind="interactive",le="2000.0"}[$window]))"#,
        requests: r#"sum(rate(duckmesh_query_latency_ms_count{kind="interactive"}[$window]))"#,
    },
];

/// Windows computed from the raw counters.
pub const SHORT_WINDOWS: [&str; 5] = ["5m", "30m", "1h", "2h", "6h"];

/// Windows averaged from the recorded 5m rates.
pub const LONG_WINDOWS: [&str; 3] = ["1d", "3d", "30d"];

/// One multiwindow burn-rate condition: both windows above `factor × budget`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BurnWindow {
    /// Long window (the budget actually spent).
    pub long: &'static str,
    /// Short window (stops the alert soon after the burn stops).
    pub short: &'static str,
    /// Burn-rate factor.
    pub factor: f64,
    /// `critical` (page) or `warning` (ticket).
    pub severity: &'static str,
}

/// The four window pairs of SPEC §5 (Google SRE workbook, chapter 5).
pub const BURN_WINDOWS: [BurnWindow; 4] = [
    BurnWindow { long: "1h", short: "5m", factor: 14.4, severity: "critical" },
    BurnWindow { long: "6h", short: "30m", factor: 6.0, severity: "critical" },
    BurnWindow { long: "1d", short: "2h", factor: 3.0, severity: "warning" },
    BurnWindow { long: "3d", short: "6h", factor: 1.0, severity: "warning" },
];

/// Fewest events in the long window for a burn-rate alert to fire: below this a handful of
/// failures is noise, not a trend.
pub const MIN_EVENTS_IN_LONG_WINDOW: u32 = 100;

/// The SLO named `name`.
pub fn slo(name: &str) -> Option<&'static Slo> {
    SLOS.iter().find(|slo| slo.name == name)
}

/// Names of every recorded series.
pub fn recorded_series_names() -> Vec<String> {
    let mut names = vec!["duckmesh:slo_error_budget:ratio".to_owned()];
    for window in SHORT_WINDOWS.iter().chain(LONG_WINDOWS.iter()) {
        names.push(format!("duckmesh:sli_errors:rate{window}"));
        names.push(format!("duckmesh:sli_requests:rate{window}"));
        names.push(format!("duckmesh:sli_error:ratio_rate{window}"));
    }
    names
}

fn push_rule(out: &mut String, record: &str, expr: &str, slo: &str) {
    let _ = writeln!(out, "      - record: {record}");
    let _ = writeln!(out, "        expr: |-");
    let _ = writeln!(out, "          {expr}");
    let _ = writeln!(out, "        labels:");
    let _ = writeln!(out, "          slo: {slo}");
}

/// The recording rules file, byte for byte.
pub fn recording_rules_yaml() -> String {
    let mut out = String::with_capacity(32 * 1024);
    out.push_str(
        "# DuckMesh SLI recording rules (SPEC §5).\n\
         # Generated from crates/telemetry/src/slo.rs; do not edit by hand. Regenerate with\n\
         #   DUCKMESH_BLESS=1 cargo test -p duckmesh-telemetry --test artefacts\n\
         # Every series carries slo=\"<name>\"; see docs/observability.md for the SLO table.\n\
         groups:\n",
    );
    for slo in &SLOS {
        let _ = writeln!(out, "  - name: duckmesh-sli-{}", slo.name.replace('_', "-"));
        out.push_str("    rules:\n");
        push_rule(&mut out, "duckmesh:slo_error_budget:ratio", &format!("vector({})", slo.error_budget), slo.name);
        for window in SHORT_WINDOWS {
            let errors = slo.errors.replace("$window", window);
            let requests = slo.requests.replace("$window", window);
            push_rule(&mut out, &format!("duckmesh:sli_errors:rate{window}"), &errors, slo.name);
            push_rule(&mut out, &format!("duckmesh:sli_requests:rate{window}"), &requests, slo.name);
            push_rule(&mut out, &format!("duckmesh:sli_error:ratio_rate{window}"), &ratio(slo.name, window), slo.name);
        }
    }
    out.push_str("  - name: duckmesh-sli-long-windows\n");
    out.push_str("    interval: 5m\n");
    out.push_str("    rules:\n");
    for slo in &SLOS {
        for window in LONG_WINDOWS {
            for kind in ["errors", "requests"] {
                push_rule(
                    &mut out,
                    &format!("duckmesh:sli_{kind}:rate{window}"),
                    &format!("avg_over_time(duckmesh:sli_{kind}:rate5m{{slo=\"{}\"}}[{window}])", slo.name),
                    slo.name,
                );
            }
            push_rule(&mut out, &format!("duckmesh:sli_error:ratio_rate{window}"), &ratio(slo.name, window), slo.name);
        }
    }
    out
}

fn ratio(slo: &str, window: &str) -> String {
    format!("duckmesh:sli_errors:rate{window}{{slo=\"{slo}\"}} / duckmesh:sli_requests:rate{window}{{slo=\"{slo}\"}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_match_objectives() {
        let budgets: Vec<(&str, f64)> = SLOS.iter().map(|s| (s.name, s.error_budget)).collect();
        assert_eq!(
            budgets,
            vec![
                ("api_availability", 0.001),
                ("ingest_ack_latency", 0.05),
                ("write_to_visible_latency", 0.05),
                ("strict_barrier", 0.01),
                ("query_latency", 0.05),
            ]
        );
    }

    #[test]
    fn every_template_uses_the_window() {
        for slo in &SLOS {
            assert!(slo.errors.contains("[$window]"), "{}", slo.name);
            assert!(slo.requests.contains("[$window]"), "{}", slo.name);
        }
    }

    #[test]
    fn rules_cover_every_slo_and_window() {
        let yaml = recording_rules_yaml();
        for slo in &SLOS {
            for window in SHORT_WINDOWS.iter().chain(LONG_WINDOWS.iter()) {
                let needle = format!("duckmesh:sli_errors:rate{window}{{slo=\"{}\"}}", slo.name);
                assert!(yaml.contains(&needle), "missing {needle}");
            }
        }
        assert!(!yaml.contains("$window"));
        assert_eq!(
            yaml.matches("- record:").count(),
            SLOS.len() * (1 + 3 * (SHORT_WINDOWS.len() + LONG_WINDOWS.len()))
        );
    }

    #[test]
    fn burn_windows_are_the_workbook_pairs() {
        let pairs: Vec<(&str, &str, f64, &str)> =
            BURN_WINDOWS.iter().map(|w| (w.long, w.short, w.factor, w.severity)).collect();
        assert_eq!(
            pairs,
            vec![
                ("1h", "5m", 14.4, "critical"),
                ("6h", "30m", 6.0, "critical"),
                ("1d", "2h", 3.0, "warning"),
                ("3d", "6h", 1.0, "warning"),
            ]
        );
    }
}
