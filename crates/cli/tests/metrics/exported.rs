//! Scrapes a running `/metrics` endpoint with every component's metrics registered and checks
//! that every metric SPEC §6 names, and every control-plane metric, is exported under its
//! exact name with bounded labels.

use std::collections::BTreeSet;

use duckmesh_query::metrics::{ApiMetrics, IngestResult};
use duckmesh_telemetry::Metrics;

use crate::exposition::{families, sample_names, scrape, series_names};
use crate::process_metrics::{every_component, register_every_component};

/// SPEC §6, verbatim, with the `duckmesh_` prefix.
const SPEC_METRICS: &[&str] = &[
    // Ingest
    "duckmesh_ingest_requests_total",
    "duckmesh_ingest_records_total",
    "duckmesh_ingest_duplicates_total",
    "duckmesh_ingest_ack_latency_ms",
    // Freshness
    "duckmesh_visibility_lag_ms",
    "duckmesh_latest_visibility_token",
    "duckmesh_consistency_timeout_total",
    "duckmesh_write_to_visible_latency_ms",
    "duckmesh_ingest_lag_events",
    // Coordinator
    "duckmesh_claim_batch_size",
    "duckmesh_claim_retries_total",
    "duckmesh_commit_batch_latency_ms",
    "duckmesh_snapshot_publish_failures_total",
    // Query
    "duckmesh_query_requests_total",
    "duckmesh_query_latency_ms",
    "duckmesh_query_scanned_files",
    "duckmesh_query_scanned_bytes",
    // Storage / maintenance
    "duckmesh_compaction_runs_total",
    "duckmesh_compaction_bytes_rewritten_total",
    "duckmesh_gc_files_deleted_total",
    "duckmesh_integrity_runs_total",
    "duckmesh_integrity_files_checked_total",
    "duckmesh_integrity_missing_files_total",
    "duckmesh_integrity_size_mismatch_files_total",
];

/// Control-plane metrics (SPEC §6 "our addition", controller-runtime parity).
const CONTROL_PLANE_METRICS: &[&str] = &[
    "duckmesh_reconcile_total",
    "duckmesh_reconcile_errors_total",
    "duckmesh_reconcile_duration_seconds",
    "duckmesh_workqueue_depth",
    "duckmesh_workqueue_retries_total",
    "duckmesh_task_backlog_depth",
    "duckmesh_task_backlog_oldest_age_seconds",
    "duckmesh_lease_lag_seconds",
    "duckmesh_leases_expired_total",
    "duckmesh_task_retries_total",
    "duckmesh_tasks_finished_total",
    "duckmesh_task_duration_seconds",
    "duckmesh_jobs_finished_total",
    "duckmesh_job_duration_seconds",
    "duckmesh_outbox_depth",
    "duckmesh_outbox_oldest_age_seconds",
    "duckmesh_outbox_failed_rows",
    "duckmesh_object_store_requests_total",
    "duckmesh_object_store_retries_total",
    "duckmesh_http_requests_total",
    "duckmesh_read_only_mode",
    "duckmesh_gc_runs_total",
];

/// Every label key a DuckMesh metric may carry. None of them can hold an object name.
const ALLOWED_LABELS: &[&str] = &[
    "le",
    "route",
    "status_class",
    "tenant",
    "result",
    "kind",
    "barrier",
    "reason",
    "operation",
    "controller",
    "task_kind",
    "phase",
];

/// A family name as exported, matched against a spec name with or without `_total`.
fn exported(series: &BTreeSet<String>, families: &std::collections::BTreeMap<String, String>, name: &str) -> bool {
    series.contains(name) || families.contains_key(name)
}

#[tokio::test]
async fn every_spec_metric_is_exported_by_name() {
    let body = scrape(&every_component()).await.body;
    let families = families(&body);
    let series = series_names(&body);
    let missing: Vec<&&str> = SPEC_METRICS.iter().filter(|name| !exported(&series, &families, name)).collect();
    assert!(missing.is_empty(), "SPEC §6 metrics not exported: {missing:?}");

    // Spec names ending in `_total` are counters (so the name is exactly what is stored).
    for name in SPEC_METRICS.iter().filter(|name| name.ends_with("_total")) {
        let family = name.trim_end_matches("_total");
        assert_eq!(families.get(family).map(String::as_str), Some("counter"), "{name}");
    }
}

#[tokio::test]
async fn every_control_plane_metric_is_exported() {
    let body = scrape(&every_component()).await.body;
    let families = families(&body);
    let series = series_names(&body);
    let missing: Vec<&&str> = CONTROL_PLANE_METRICS.iter().filter(|name| !exported(&series, &families, name)).collect();
    assert!(missing.is_empty(), "control-plane metrics not exported: {missing:?}");
}

#[tokio::test]
async fn ms_metrics_are_histograms_with_slo_buckets() {
    let body = scrape(&every_component()).await.body;
    let families = families(&body);
    let ms_names: Vec<&&str> = SPEC_METRICS.iter().filter(|n| n.ends_with("_ms")).collect();
    assert_eq!(ms_names.len(), 5);
    for name in ms_names {
        assert_eq!(families.get(*name).map(String::as_str), Some("histogram"), "{name}");
        for threshold in ["200.0", "2000.0", "3000.0"] {
            let bucket = format!("{name}_bucket{{le=\"{threshold}\"");
            assert!(body.contains(&bucket), "{name} lacks the le=\"{threshold}\" bucket");
        }
    }
}

#[tokio::test]
async fn every_name_has_the_prefix_and_help() {
    let body = scrape(&every_component()).await.body;
    let families = families(&body);
    assert!(families.len() >= SPEC_METRICS.len() + CONTROL_PLANE_METRICS.len() - 1);
    for family in families.keys() {
        assert!(family.starts_with("duckmesh_"), "{family}");
        assert!(body.contains(&format!("# HELP {family} ")), "{family} has no HELP");
    }
    for sample in sample_names(&body) {
        assert!(sample.starts_with("duckmesh_"), "{sample}");
    }
}

#[tokio::test]
async fn label_sets_are_bounded() {
    let metrics = Metrics::with_tenant_limit(3);
    register_every_component(&metrics);
    let api = ApiMetrics::new(&metrics);
    for tenant in ["t1", "t2", "t3", "t4", "t5", "t6"] {
        api.observe_ingest(tenant, IngestResult::Accepted, 1, 0, 10.0);
    }
    let body = scrape(&metrics).await.body;
    let mut tenants = BTreeSet::new();
    for line in body.lines().filter(|line| !line.starts_with('#')) {
        let Some((name, rest)) = line.split_once('{') else { continue };
        let labels = rest.split('}').next().unwrap_or_default();
        for pair in labels.split(',').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').expect("label pair");
            assert!(ALLOWED_LABELS.contains(&key), "{name} has unbounded label {key}");
            if key == "tenant" {
                assert!(name.starts_with("duckmesh_ingest_"), "tenant label on {name}");
                tenants.insert(value.trim_matches('"').to_owned());
            }
        }
    }
    let expected: BTreeSet<String> = ["t1", "t2", "t3", "_other"].iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(tenants, expected);
}

#[tokio::test]
async fn known_series_exist_before_first_use() {
    // Rates need a zero baseline, and absent() alerts need the series to exist.
    let body = scrape(&every_component()).await.body;
    for line in [
        "duckmesh_http_requests_total{route=\"ingest\",status_class=\"5xx\"} 0",
        "duckmesh_query_requests_total{kind=\"interactive\",barrier=\"strict\",result=\"ok\"} 0",
        "duckmesh_query_latency_ms_count{kind=\"interactive\"} 0",
        "duckmesh_ingest_ack_latency_ms_count 0",
        "duckmesh_write_to_visible_latency_ms_count 0",
        "duckmesh_consistency_timeout_total 0",
        "duckmesh_reconcile_total{controller=\"job\",result=\"success\"} 0",
        "duckmesh_leases_expired_total{task_kind=\"sql\"} 0",
        "duckmesh_outbox_failed_rows 0",
        "duckmesh_lease_lag_seconds 0",
    ] {
        assert!(body.contains(line), "missing {line}");
    }
}
