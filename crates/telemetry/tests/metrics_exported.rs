//! Scrapes a running `/metrics` endpoint over real HTTP: the OpenMetrics content type, the
//! `# EOF` terminator, and the metrics the registry itself carries (the storage and
//! maintenance metrics, the read-only gauge). That every SPEC §6 and control-plane name is
//! exported, with bounded labels, is checked with every component registered, in the
//! `duckmesh` binary's `metrics` test.

mod common;

use common::{families, scrape};
use duckmesh_telemetry::Metrics;
use duckmesh_telemetry::metrics::OPENMETRICS_CONTENT_TYPE;

#[tokio::test]
async fn metrics_endpoint_serves_openmetrics() {
    let scrape = scrape(&Metrics::new()).await;
    assert!(scrape.status_line.contains(" 200 "), "{}", scrape.status_line);
    assert_eq!(scrape.headers.get("content-type").map(String::as_str), Some(OPENMETRICS_CONTENT_TYPE));
    assert!(scrape.body.ends_with("# EOF\n"));
}

#[tokio::test]
async fn the_registry_exports_the_storage_metrics_and_the_read_only_gauge() {
    let body = scrape(&Metrics::new()).await.body;
    let families = families(&body);
    for (family, kind) in [
        ("duckmesh_read_only_mode", "gauge"),
        ("duckmesh_compaction_runs", "counter"),
        ("duckmesh_compaction_bytes_rewritten", "counter"),
        ("duckmesh_gc_runs", "counter"),
        ("duckmesh_gc_files_deleted", "counter"),
        ("duckmesh_integrity_runs", "counter"),
        ("duckmesh_integrity_files_checked", "counter"),
        ("duckmesh_integrity_missing_files", "counter"),
        ("duckmesh_integrity_size_mismatch_files", "counter"),
        ("duckmesh_object_store_requests", "counter"),
        ("duckmesh_object_store_retries", "counter"),
    ] {
        assert_eq!(families.get(family).map(String::as_str), Some(kind), "{family}");
    }
    assert_eq!(families.len(), 11, "{families:?}");
}
