//! Export on a real PostgreSQL catalog and a real S3 server (moto), with data from the real
//! worker: the current snapshot as Parquet, an older snapshot as CSV, each with a manifest
//! whose files exist with their sizes and hashes; the target stays under the namespace.

mod common;

use common::Harness;
use duckmesh_contracts::manifest::AnyManifest;
use duckmesh_core::TaskPhase;
use duckmesh_maintenance::ExportRunner;
use std::time::Duration;

#[tokio::test]
async fn a_snapshot_is_exported_with_a_manifest() {
    let harness = Harness::new().await;
    let trips = harness.dataset("trips").await;
    harness.commit(&trips, "load-a", "SELECT i AS id FROM range(100) t(i)").await;
    let first = harness.catalog.dataset(trips.id).await.expect("dataset").current_snapshot.expect("snapshot");
    harness.commit(&trips, "load-b", "SELECT i AS id FROM range(100, 150) t(i)").await;
    let runner = ExportRunner::new(
        harness.catalog.clone(),
        harness.store.clone(),
        harness.dir.path().to_owned(),
        Duration::from_secs(1),
        None,
    );

    let lease =
        harness.maintenance_task(&trips, "export", "export-now", serde_json::json!({"prefix": "trips/now"})).await;
    let report = runner.run(lease.attempt_ref()).await.expect("export");
    assert_eq!((report.target.as_str(), report.rows), ("_exports/default/trips/now/", 150));
    assert_eq!(harness.catalog.task(lease.task).await.expect("task").phase, TaskPhase::Succeeded);
    let manifest = harness.store.get(&report.manifest).await.expect("manifest");
    let AnyManifest::Attempt(manifest) = AnyManifest::parse(&manifest).expect("parse") else { panic!("manifest") };
    assert_eq!(manifest.rows, 150);
    for file in &manifest.files {
        assert!(file.path.starts_with("_exports/default/trips/now/part-") && file.path.ends_with(".parquet"));
        let bytes = harness.store.get(&file.path).await.expect("file");
        assert_eq!(bytes.len() as i64, file.bytes);
    }

    let spec = serde_json::json!({"prefix": "trips/first", "snapshot": first.0, "format": "csv"});
    let lease = harness.maintenance_task(&trips, "export", "export-first", spec).await;
    let report = runner.run(lease.attempt_ref()).await.expect("export");
    assert_eq!(report.files, ["_exports/default/trips/first/part-00000.csv"]);
    let text = String::from_utf8(harness.store.get(&report.files[0]).await.expect("csv").to_vec()).expect("utf-8");
    assert_eq!(text.lines().next(), Some("id"));
    assert_eq!(text.lines().count(), 101, "the older snapshot has 100 rows");

    let lease =
        harness.maintenance_task(&trips, "export", "export-escape", serde_json::json!({"prefix": "../trips"})).await;
    let error = runner.run(lease.attempt_ref()).await.expect_err("escape");
    assert_eq!(error.error_code(), "invalid_task_spec", "{error}");
    assert_eq!(harness.catalog.task(lease.task).await.expect("task").phase, TaskPhase::Failed);
}
