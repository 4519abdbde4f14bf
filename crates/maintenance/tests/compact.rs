//! Compaction end to end on a real PostgreSQL catalog and a real S3 server (moto): small files
//! committed by the real worker become one `compact` snapshot whose rows are exactly those of
//! the snapshot before; integrity stays clean (the manifest names the new files and the ones
//! they replace); a dataset with too few small files is left alone; a stale attempt commits
//! nothing; a corrupted input fails the attempt and commits nothing.

mod common;

use common::Harness;
use duckmesh_catalog::{AttemptRef, Catalog, DatasetRecord};
use duckmesh_contracts::manifest::AnyManifest;
use duckmesh_core::{Fence, SnapshotId, TaskPhase};
use duckmesh_engine::{Database, Limits, Relation};
use duckmesh_maintenance::{CompactionOutcome, Compactor, IntegrityOptions, check_dataset};
use std::time::Duration;

fn compactor(harness: &Harness) -> Compactor {
    Compactor::new(
        harness.catalog.clone(),
        harness.store.clone(),
        harness.dir.path().to_owned(),
        Duration::from_millis(200),
        Some("test-compactor".into()),
    )
}

/// Every row of snapshot `id`, as text, sorted: the multiset a reader of that snapshot sees.
async fn rows_at(harness: &Harness, dataset: &DatasetRecord, id: SnapshotId) -> Vec<Vec<Option<String>>> {
    let dir = tempfile::tempdir_in(harness.dir.path()).expect("tempdir");
    let mut files = Vec::new();
    for (index, file) in harness.catalog.snapshot_files(dataset.id, id).await.expect("files").iter().enumerate() {
        let local = dir.path().join(format!("{index}.parquet"));
        harness.store.get_to_file(&file.path, &local).await.expect("download");
        files.push(local);
    }
    let database =
        Database::open(&Limits { memory_limit_bytes: None, threads: Some(1), spill_dir: dir.path().join("spill") })
            .expect("duckdb");
    database.register(&Relation { name: "t".into(), files, schema: None }).expect("register");
    database.query_text("SELECT id::VARCHAR, label FROM t ORDER BY id, label").expect("read")
}

async fn current(catalog: &Catalog, dataset: &DatasetRecord) -> DatasetRecord {
    catalog.dataset(dataset.id).await.expect("dataset")
}

#[tokio::test]
async fn small_files_become_one_snapshot_with_the_same_rows() {
    let harness = Harness::new().await;
    let events = harness.dataset("events").await;
    for index in 0..5 {
        let sql = format!("SELECT i + {index} * 100 AS id, 'batch-{index}' AS label FROM range(100) t(i)");
        harness.commit(&events, &format!("load-{index}"), &sql).await;
    }
    let before = current(&harness.catalog, &events).await;
    let old_snapshot = before.current_snapshot.expect("snapshot");
    let expected = rows_at(&harness, &before, old_snapshot).await;
    assert_eq!(expected.len(), 500);

    let lease =
        harness.maintenance_task(&before, "compact", "compact-events", serde_json::json!({"minFiles": 2})).await;
    let outcome = compactor(&harness).run(lease.attempt_ref()).await.expect("compaction");
    let CompactionOutcome::Committed { committed, replaced, written, .. } = outcome else {
        panic!("expected a commit, got {outcome:?}")
    };
    assert_eq!((replaced, written), (5, 1));
    let after = current(&harness.catalog, &events).await;
    assert_eq!((after.file_count, after.row_count), (1, 500));
    assert_eq!(rows_at(&harness, &after, committed.snapshot).await, expected, "the rows changed");
    assert_eq!(rows_at(&harness, &after, old_snapshot).await, expected, "the old snapshot changed");
    let snapshot = harness.catalog.snapshot(events.id, committed.snapshot).await.expect("snapshot");
    assert_eq!(snapshot.kind, "compact");
    let manifest = harness.store.get(snapshot.manifest_path.as_deref().expect("manifest")).await.expect("manifest");
    let AnyManifest::Attempt(manifest) = AnyManifest::parse(&manifest).expect("parse") else {
        panic!("attempt manifest")
    };
    assert_eq!(manifest.replaces.len(), 5);
    assert_eq!(manifest.rows, 500);

    let integrity = IntegrityOptions { verify_hashes: true, ..IntegrityOptions::default() };
    let report = check_dataset(&harness.catalog, harness.store.as_ref(), &after, &integrity).await.expect("integrity");
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.counts.snapshots_checked, 6);

    // One file left: nothing to do, and the task still succeeds.
    let lease = harness.maintenance_task(&after, "compact", "compact-again", serde_json::json!({"minFiles": 2})).await;
    let outcome = compactor(&harness).run(lease.attempt_ref()).await.expect("compaction");
    assert_eq!(outcome, CompactionOutcome::Unchanged { small_files: 1 });
    assert_eq!(current(&harness.catalog, &events).await.current_snapshot, Some(committed.snapshot));
    let task = harness.catalog.task(lease.task).await.expect("task");
    assert_eq!(task.phase, TaskPhase::Succeeded);
}

#[tokio::test]
async fn a_stale_compaction_commits_nothing_and_a_bad_spec_fails_the_task() {
    let harness = Harness::new().await;
    let events = harness.dataset("events").await;
    for index in 0..2 {
        harness.commit(&events, &format!("load-{index}"), &format!("SELECT {index} AS id, 'x' AS label")).await;
    }
    let before = current(&harness.catalog, &events).await;
    let lease =
        harness.maintenance_task(&before, "compact", "compact-events", serde_json::json!({"minFiles": 2})).await;
    let stale = AttemptRef { attempt: lease.attempt, fence: Fence(lease.fence.0 + 1) };
    let error = compactor(&harness).run(stale).await.expect_err("stale");
    assert!(error.is_fenced(), "{error}");
    assert_eq!(current(&harness.catalog, &events).await.current_snapshot, before.current_snapshot);

    let lease = harness.maintenance_task(&before, "compact", "compact-bad", serde_json::json!({"minFiles": 1})).await;
    let error = compactor(&harness).run(lease.attempt_ref()).await.expect_err("bad spec");
    assert_eq!(error.error_code(), "invalid_task_spec", "{error}");
    let task = harness.catalog.task(lease.task).await.expect("task");
    assert_eq!(task.phase, TaskPhase::Failed);
    assert_eq!(task.last_error_code.as_deref(), Some("invalid_task_spec"));
}

/// One input of many has the right size but other bytes: the downloads (several in flight at
/// once) stop at it, the attempt fails for good with `input_corrupt` naming the file, and no
/// snapshot is committed, so a damaged file is never rewritten into one that verifies.
#[tokio::test]
async fn a_corrupted_input_fails_the_compaction_and_commits_nothing() {
    let harness = Harness::new().await;
    let events = harness.dataset("events").await;
    for index in 0..8 {
        let sql = format!("SELECT i + {index} * 10 AS id, 'batch-{index}' AS label FROM range(10) t(i)");
        harness.commit(&events, &format!("load-{index}"), &sql).await;
    }
    let before = current(&harness.catalog, &events).await;
    let files = harness.catalog.live_files(events.id).await.expect("files");
    let damaged = &files[5].path;
    let mut content = harness.store.get(damaged).await.expect("get").to_vec();
    let middle = content.len() / 2;
    content[middle] ^= 0xff;
    harness.store.put(damaged, content.into()).await.expect("corrupt");

    let lease =
        harness.maintenance_task(&before, "compact", "compact-events", serde_json::json!({"minFiles": 2})).await;
    let error = compactor(&harness).with_transfer_concurrency(4).run(lease.attempt_ref()).await.expect_err("corrupt");
    assert_eq!(error.error_code(), "input_corrupt", "{error}");
    assert!(error.to_string().contains(damaged.as_str()), "the file is named: {error}");
    let after = current(&harness.catalog, &events).await;
    assert_eq!((after.current_snapshot, after.file_count), (before.current_snapshot, 8));
    let task = harness.catalog.task(lease.task).await.expect("task");
    assert_eq!(task.phase, TaskPhase::Failed);
    assert_eq!(task.last_error_code.as_deref(), Some("input_corrupt"));
}
