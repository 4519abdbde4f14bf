//! The integrity check against a real PostgreSQL catalog and a real S3 server (moto): data
//! committed by the real worker is clean; then each kind of damage — a deleted file, a
//! truncated file, a corrupted file of the right size, a replaced manifest, a stray object —
//! is found, counted and recorded, and the catalog keeps the latest run per dataset.

#![allow(missing_docs)]

mod common;

use bytes::Bytes;
use common::Harness;
use duckmesh_catalog::ProblemKind;
use duckmesh_maintenance::{IntegrityOptions, check_dataset};
use std::time::Duration;

#[tokio::test]
async fn committed_data_is_clean_and_every_kind_of_damage_is_found() {
    let harness = Harness::new().await;
    let trips = harness.dataset("trips").await;
    for (index, name) in ["load-a", "load-b", "load-c"].iter().enumerate() {
        harness.commit(&trips, name, &format!("SELECT i + {index} * 1000 AS id FROM range(500) t(i)")).await;
    }
    let dataset = harness.catalog.dataset(trips.id).await.expect("dataset");
    let strict = IntegrityOptions { verify_hashes: true, orphan_grace: Duration::ZERO, ..IntegrityOptions::default() };

    let clean = check_dataset(&harness.catalog, harness.store.as_ref(), &dataset, &strict).await.expect("check");
    assert!(clean.is_clean() && clean.problems.is_empty(), "{clean:?}");
    assert_eq!((clean.counts.files_checked, clean.counts.snapshots_checked), (3, 3), "{clean:?}");

    // One of each kind of damage.
    let files = harness.catalog.retained_files(trips.id).await.expect("files");
    let [deleted, truncated, corrupted] = [&files[0].path, &files[1].path, &files[2].path];
    let store = &harness.store;
    store.delete(deleted).await.expect("delete");
    let content = store.get(truncated).await.expect("get");
    store.put(truncated, content.slice(..content.len() / 2)).await.expect("truncate");
    let mut content = store.get(corrupted).await.expect("get").to_vec();
    let middle = content.len() / 2;
    content[middle] ^= 0xff;
    store.put(corrupted, Bytes::from(content)).await.expect("corrupt");
    let manifests = harness.catalog.snapshot_manifests(trips.id).await.expect("manifests");
    let replaced = &manifests[2].manifest_path;
    store.put(replaced, Bytes::from_static(br#"{"format": "duckmesh.manifest/v1", "files": []}"#)).await.expect("put");
    let stray = "trips/attempts/999999/1/part-00000.parquet";
    store.put(stray, Bytes::from_static(b"stray")).await.expect("put");

    // Without hashing, the corrupted file of the right size passes; everything else is found.
    let quick = IntegrityOptions { orphan_grace: Duration::ZERO, ..IntegrityOptions::default() };
    let report = check_dataset(&harness.catalog, harness.store.as_ref(), &dataset, &quick).await.expect("check");
    let counts = report.counts;
    assert_eq!(
        (counts.missing_files, counts.size_mismatch_files, counts.hash_mismatch_files),
        (1, 1, 0),
        "{report:#?}"
    );
    assert_eq!((counts.manifest_problems, counts.orphan_files), (1, 1), "{report:#?}");
    assert!(!report.is_clean());

    let report = check_dataset(&harness.catalog, harness.store.as_ref(), &dataset, &strict).await.expect("check");
    let found: Vec<(ProblemKind, &str)> = report.problems.iter().map(|p| (p.kind, p.path.as_str())).collect();
    assert_eq!(
        found,
        [
            (ProblemKind::MissingFile, deleted.as_str()),
            (ProblemKind::SizeMismatch, truncated.as_str()),
            (ProblemKind::HashMismatch, corrupted.as_str()),
            (ProblemKind::Manifest, replaced.as_str()),
            (ProblemKind::Orphan, stray),
        ],
        "{report:#?}"
    );
    assert!(report.problems[1].detail.contains("bytes in the bucket"), "{:?}", report.problems[1]);
    assert!(report.problems[3].detail.contains("unreadable manifest"), "{:?}", report.problems[3]);

    // The default grace leaves a fresh stray object alone (it may be an upload in flight).
    let report = check_dataset(&harness.catalog, harness.store.as_ref(), &dataset, &IntegrityOptions::default())
        .await
        .expect("check");
    assert_eq!(report.counts.orphan_files, 0, "{report:#?}");

    // The latest run per dataset is kept, with its counts and problems.
    let runs = harness.catalog.latest_integrity_runs("default", "default").await.expect("runs");
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!((runs[0].id, runs[0].counts), (report.run_id, report.counts));
    assert_eq!(runs[0].problems, report.problems);
    assert!(harness.catalog.latest_integrity_runs("other", "default").await.expect("runs").is_empty());
    let all = harness.catalog.integrity_runs_after(0, 100).await.expect("runs");
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|pair| pair[0].id < pair[1].id));
}

#[tokio::test]
async fn integrity_runs_as_a_leased_task_and_records_what_it_found() {
    let harness = Harness::new().await;
    let trips = harness.dataset("trips").await;
    harness.commit(&trips, "load", "SELECT 1 AS id").await;
    let files = harness.catalog.retained_files(trips.id).await.expect("files");
    harness.store.delete(&files[0].path).await.expect("delete");
    let lease =
        harness.maintenance_task(&trips, "integrity", "check-trips", serde_json::json!({"verifyHashes": true})).await;
    let runner = duckmesh_maintenance::IntegrityRunner::new(
        harness.catalog.clone(),
        harness.store.clone(),
        Duration::from_secs(1),
        None,
    );
    let report = runner.run(lease.attempt_ref()).await.expect("integrity task");
    assert_eq!(report.counts.missing_files, 1, "{report:#?}");
    // Finding damage is the run's result; the task itself succeeded.
    let task = harness.catalog.task(lease.task).await.expect("task");
    assert_eq!(task.phase, duckmesh_core::TaskPhase::Succeeded);
    let runs = harness.catalog.latest_integrity_runs("default", "default").await.expect("runs");
    assert_eq!(runs[0].id, report.run_id);

    let lease = harness.maintenance_task(&trips, "integrity", "bad-spec", serde_json::json!({"verify": true})).await;
    let error = runner.run(lease.attempt_ref()).await.expect_err("bad spec");
    assert_eq!(error.error_code(), "invalid_task_spec");
}
