//! The compaction commit (migration 0009) on a real PostgreSQL: it retires exactly the files
//! it replaced, keeps an append that committed while it ran, loses (changing nothing) to an
//! overwrite that retired its files first, must keep the rows, and is fenced like any commit.

mod common;

use common::*;
use duckmesh_catalog::{Catalog, CommitMode, CommitRequest, CompactionCommit, Lease, TaskOutput, TaskSpec};
use duckmesh_core::DatasetId;
use duckmesh_testkit::BoxError;

/// Commits one append of `files` through a task of its own.
async fn commit_append(
    catalog: &Catalog,
    dataset: DatasetId,
    name: &str,
    files: Vec<duckmesh_catalog::NewFile>,
) -> Result<(), BoxError> {
    let id = catalog.upsert_standalone_task("default", "acme", &task(name, &[], Some(dataset))).await?;
    let lease = lease(catalog, id).await?;
    catalog.commit(lease.attempt_ref(), &append(dataset, files)).await?;
    Ok(())
}

/// Leases a `compact` task on `dataset`.
async fn compaction(catalog: &Catalog, dataset: DatasetId, name: &str) -> Result<Lease, BoxError> {
    let spec = TaskSpec {
        name: name.into(),
        kind: "compact".into(),
        depends_on: vec![],
        max_attempts: Some(3),
        timeout_seconds: Some(60),
        output: Some(TaskOutput { dataset, mode: CommitMode::Append }),
        spec: serde_json::json!({}),
    };
    let id = catalog.upsert_standalone_task("default", "acme", &spec).await?;
    lease(catalog, id).await
}

fn live(files: &[duckmesh_catalog::FileRecord]) -> Vec<&str> {
    files.iter().map(|file| file.path.as_str()).collect()
}

#[tokio::test]
async fn a_compaction_keeps_concurrent_appends_and_the_rows() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let events = dataset(&catalog, "events").await?;
    for index in 0..3 {
        commit_append(&catalog, events, &format!("load-{index}"), vec![file(&format!("events/small-{index}"), 10)])
            .await?;
    }
    let before = catalog.dataset(events).await?;
    let lease = compaction(&catalog, events, "compact-1").await?;
    // An append commits while the compaction runs.
    commit_append(&catalog, events, "late", vec![file("events/late", 5)]).await?;

    let replaced: Vec<String> = (0..3).map(|index| format!("events/small-{index}")).collect();
    let mut rows_off = CompactionCommit {
        dataset: events,
        replaced: replaced.clone(),
        files: vec![file("events/big", 29)],
        manifest_path: None,
    };
    let error = catalog.commit_compaction(lease.attempt_ref(), &rows_off).await.expect_err("rows must add up");
    assert_eq!(error.error_code(), "invalid_spec", "{error}");
    rows_off.files = vec![file("events/big", 30)];
    let committed = catalog.commit_compaction(lease.attempt_ref(), &rows_off).await?;

    let after = catalog.dataset(events).await?;
    assert_eq!(committed.snapshot.0, before.current_snapshot.expect("snapshot").0 + 2);
    assert_eq!(live(&catalog.live_files(events).await?), ["events/big", "events/late"]);
    assert_eq!((after.file_count, after.row_count), (2, 35));
    let snapshot = catalog.snapshot(events, committed.snapshot).await?;
    assert_eq!(snapshot.kind, "compact");
    assert_eq!((snapshot.file_count, snapshot.row_count), (2, 35));
    assert!(committed.visibility_token > after.visibility_token - 1);
    // The snapshot before the compaction still reads the small files.
    let previous = catalog.snapshot_files(events, committed.parent.expect("parent")).await?;
    assert_eq!(live(&previous), ["events/late", "events/small-0", "events/small-1", "events/small-2"]);
    let task = catalog.task(catalog.attempt(lease.attempt).await?.task).await?;
    assert_eq!(task.phase, duckmesh_core::TaskPhase::Succeeded);
    Ok(())
}

#[tokio::test]
async fn a_compaction_that_lost_its_files_to_an_overwrite_changes_nothing() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let events = dataset(&catalog, "events").await?;
    for index in 0..2 {
        commit_append(&catalog, events, &format!("load-{index}"), vec![file(&format!("events/small-{index}"), 10)])
            .await?;
    }
    let lease = compaction(&catalog, events, "compact-1").await?;
    let overwrite_task = TaskSpec {
        output: Some(TaskOutput { dataset: events, mode: CommitMode::Overwrite }),
        ..task("rebuild", &[], Some(events))
    };
    let id = catalog.upsert_standalone_task("default", "acme", &overwrite_task).await?;
    let overwrite = common::lease(&catalog, id).await?;
    let request = CommitRequest {
        dataset: events,
        mode: CommitMode::Overwrite,
        files: vec![file("events/fresh", 7)],
        manifest_path: None,
        schema: None,
    };
    catalog.commit(overwrite.attempt_ref(), &request).await?;
    let before = catalog.dataset(events).await?;

    let commit = CompactionCommit {
        dataset: events,
        replaced: vec!["events/small-0".into(), "events/small-1".into()],
        files: vec![file("events/big", 20)],
        manifest_path: None,
    };
    let error = catalog.commit_compaction(lease.attempt_ref(), &commit).await.expect_err("conflict");
    assert_eq!(error.error_code(), "compaction_conflict", "{error}");
    assert!(error.is_retryable());
    let after = catalog.dataset(events).await?;
    assert_eq!((after.current_snapshot, after.visibility_token), (before.current_snapshot, before.visibility_token));
    assert_eq!(live(&catalog.live_files(events).await?), ["events/fresh"]);
    // Naming a file twice, or a file that was never live, is the same conflict.
    let twice = CompactionCommit {
        replaced: vec!["events/fresh".into(), "events/fresh".into()],
        files: vec![file("events/big", 14)],
        ..commit
    };
    assert_eq!(
        catalog.commit_compaction(lease.attempt_ref(), &twice).await.expect_err("twice").error_code(),
        "compaction_conflict"
    );
    Ok(())
}

#[tokio::test]
async fn a_superseded_compaction_cannot_commit() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let events = dataset(&catalog, "events").await?;
    for index in 0..2 {
        commit_append(&catalog, events, &format!("load-{index}"), vec![file(&format!("events/small-{index}"), 10)])
            .await?;
    }
    let lease = compaction(&catalog, events, "compact-1").await?;
    let stale = duckmesh_catalog::AttemptRef { attempt: lease.attempt, fence: duckmesh_core::Fence(lease.fence.0 - 1) };
    let commit = CompactionCommit {
        dataset: events,
        replaced: vec!["events/small-0".into(), "events/small-1".into()],
        files: vec![file("events/big", 20)],
        manifest_path: None,
    };
    let error = catalog.commit_compaction(stale, &commit).await.expect_err("stale");
    assert_eq!(error.error_code(), "stale_fence", "{error}");
    assert!(error.is_fencing());
    // A compaction of another dataset than the task names is refused too.
    let other = dataset(&catalog, "other").await?;
    let wrong = CompactionCommit { dataset: other, ..commit.clone() };
    assert_eq!(
        catalog.commit_compaction(lease.attempt_ref(), &wrong).await.expect_err("wrong").error_code(),
        "invalid_spec"
    );
    assert_eq!(catalog.live_files(events).await?.len(), 2);
    catalog.commit_compaction(lease.attempt_ref(), &commit).await?;
    assert_eq!(live(&catalog.live_files(events).await?), ["events/big"]);
    Ok(())
}
