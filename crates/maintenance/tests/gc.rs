//! Reference-aware GC on a real PostgreSQL catalog and a real S3 server (moto), with data from
//! the real worker: retention expires old snapshots; a query that pinned one before it expired
//! reads every file to the end; only after the grace are the files no retained snapshot
//! references deleted; live files never are, even while a commit races the collection;
//! uncommitted staging and query exports go after their retention; a checkpoint of the oldest
//! retained snapshot is written before anything is deleted; a dry run changes nothing. A `gc`
//! task's own settings (`dryRun`, `graceSeconds`) take precedence over the runner's.

mod common;

use bytes::Bytes;
use common::Harness;
use duckmesh_catalog::{CommitMode, DatasetRecord, Failure};
use duckmesh_contracts::catalog_record::Checkpoint;
use duckmesh_core::{SnapshotId, TaskPhase};
use duckmesh_maintenance::{
    CompactionOutcome, Compactor, GcOptions, GcRunner, IntegrityOptions, check_dataset, collect_dataset,
    collect_exports,
};
use duckmesh_storage::layout;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Collects with no grace and no retention for staging and exports.
fn zero() -> GcOptions {
    GcOptions {
        dry_run: false,
        grace: Duration::ZERO,
        staging_retention: Duration::ZERO,
        export_retention: Duration::ZERO,
    }
}

async fn compact(harness: &Harness, dataset: &DatasetRecord) {
    let lease = harness.maintenance_task(dataset, "compact", "compact", serde_json::json!({"minFiles": 2})).await;
    let compactor = Compactor::new(
        harness.catalog.clone(),
        harness.store.clone(),
        harness.dir.path().to_owned(),
        Duration::from_secs(1),
        None,
    );
    let outcome = compactor.run(lease.attempt_ref()).await.expect("compaction");
    assert!(matches!(outcome, CompactionOutcome::Committed { replaced: 3, .. }), "{outcome:?}");
}

#[tokio::test]
async fn gc_deletes_only_what_no_retained_snapshot_or_running_query_needs() {
    let harness = Harness::new().await;
    let events =
        harness.dataset_with("events", serde_json::json!({"retention": {"keepSnapshots": 1, "maxAgeDays": 0}})).await;
    for index in 0..3 {
        harness.commit(&events, &format!("load-{index}"), &format!("SELECT {index} AS id")).await;
    }
    compact(&harness, &events).await;
    let events = harness.catalog.dataset(events.id).await.expect("dataset");
    let current = events.current_snapshot.expect("snapshot");
    let old = duckmesh_core::SnapshotId(current.0 - 1);
    // A query pins the snapshot before the compaction and resolves its files.
    let pinned = harness.catalog.snapshot_files(events.id, old).await.expect("pinned files");
    assert_eq!(pinned.len(), 3);
    let stray = "events/attempts/424242/1/part-00000.parquet";
    harness.store.put(stray, Bytes::from_static(b"never committed")).await.expect("stray");

    // Dry run: lists the expiry, deletes nothing.
    let stop = CancellationToken::new();
    let dry = GcOptions { dry_run: true, grace: Duration::ZERO, ..zero() };
    let report =
        collect_dataset(&harness.catalog, harness.store.as_ref(), &events, &dry, &stop).await.expect("dry run");
    assert_eq!(report.expired_snapshots, [1, 2, 3], "{report:?}");
    assert_eq!(report.staging, [stray], "{report:?}");
    assert!(harness.catalog.snapshot(events.id, old).await.is_ok(), "a dry run expired a snapshot");
    // It names the checkpoint it would write (past the snapshots it would expire), unwritten.
    let checkpoint = layout::checkpoint_key("default", "events", current.0).expect("key");
    assert_eq!(report.checkpoint.as_deref(), Some(checkpoint.as_str()), "{report:?}");
    assert!(harness.store.head(&checkpoint).await.is_err(), "a dry run wrote a checkpoint");

    // GC with the default grace: the old snapshots expire, but no file goes while a query that
    // pinned one may still be reading — and fresh staging stays too.
    let report = collect_dataset(&harness.catalog, harness.store.as_ref(), &events, &GcOptions::default(), &stop)
        .await
        .expect("gc");
    assert_eq!(report.expired_snapshots, [1, 2, 3], "{report:?}");
    assert!(report.files.is_empty() && report.manifests.is_empty() && report.staging.is_empty(), "{report:?}");
    // Before anything could go, the oldest retained snapshot was checkpointed whole.
    assert_eq!(report.checkpoint.as_deref(), Some(checkpoint.as_str()), "{report:?}");
    let written = Checkpoint::parse(&harness.store.get(&checkpoint).await.expect("checkpoint")).expect("parses");
    assert_eq!(written.snapshot.id, current.0);
    assert_eq!(written.snapshot.kind, "compact");
    let live = harness.catalog.snapshot_files(events.id, current).await.expect("live files");
    assert_eq!(
        written.files.iter().map(|file| file.path.as_str()).collect::<Vec<_>>(),
        live.iter().map(|file| file.path.as_str()).collect::<Vec<_>>()
    );
    assert_eq!(written.dataset.id, events.id.0);
    let error = harness.catalog.snapshot(events.id, old).await.expect_err("expired");
    assert_eq!(error.error_code(), "not_found");
    for file in &pinned {
        harness
            .store
            .get(&file.path)
            .await
            .unwrap_or_else(|error| panic!("the pinned query lost {}: {error}", file.path));
    }

    // Past the grace (zero here), racing a new commit: the replaced files and their manifests
    // go, the stray staging goes, and every live file stays.
    let gc = zero();
    let collect = collect_dataset(&harness.catalog, harness.store.as_ref(), &events, &gc, &stop);
    let commit = harness.commit(&events, "late", "SELECT 99 AS id");
    let (report, ()) = tokio::join!(collect, commit);
    let report = report.expect("gc");
    let mut gone = report.files.clone();
    gone.sort();
    let mut expected: Vec<String> = pinned.iter().map(|file| file.path.clone()).collect();
    expected.sort();
    assert_eq!(gone, expected, "{report:?}");
    assert_eq!(report.manifests.len(), 3, "{report:?}");
    for key in report.files.iter().chain(&report.manifests).map(String::as_str).chain([stray]) {
        assert!(harness.store.head(key).await.is_err(), "{key} should be gone");
    }
    let events = harness.catalog.dataset(events.id).await.expect("dataset");
    assert_eq!(events.row_count, 4);
    let integrity =
        IntegrityOptions { verify_hashes: true, orphan_grace: Duration::ZERO, ..IntegrityOptions::default() };
    let check = check_dataset(&harness.catalog, harness.store.as_ref(), &events, &integrity).await.expect("integrity");
    assert!(check.is_clean() && check.counts.orphan_files == 0, "{check:#?}");
    assert_eq!(check.counts.files_checked, 2);
}

/// An attempt still leased may commit its uploads at any moment: GC keeps them however old
/// (here with no staging retention at all), and once the attempt can no longer commit they are
/// garbage like any other stray. (A commit racing GC lost its file this way before: uploaded
/// before the listing, committed after the references were read.)
#[tokio::test]
async fn gc_keeps_the_staging_of_a_live_attempt_however_old() {
    let harness = Harness::new().await;
    let events = harness.dataset("events").await;
    harness.commit(&events, "first", "SELECT 1 AS id").await;
    let lease = harness.maintenance_task(&events, "sql", "slow", serde_json::json!({"sql": "SELECT 2 AS id"})).await;
    let uploaded = layout::part_key("events", &lease.task.to_string(), lease.number, 0).expect("key");
    harness.store.put(&uploaded, Bytes::from_static(b"not yet committed")).await.expect("upload");

    let stop = CancellationToken::new();
    let report = collect_dataset(&harness.catalog, harness.store.as_ref(), &events, &zero(), &stop).await.expect("gc");
    assert!(report.staging.is_empty(), "{report:?}");
    assert!(harness.store.head(&uploaded).await.is_ok(), "GC deleted a live attempt's upload");

    // The attempt fails for good: its upload can never be committed and goes.
    let failure = Failure { code: "sql_error".into(), message: "the slow attempt failed".into(), retryable: false };
    harness.catalog.fail_attempt(lease.attempt_ref(), &failure).await.expect("fail");
    let report = collect_dataset(&harness.catalog, harness.store.as_ref(), &events, &zero(), &stop).await.expect("gc");
    assert_eq!(report.staging, std::slice::from_ref(&uploaded), "{report:?}");
    assert!(harness.store.head(&uploaded).await.is_err(), "{uploaded} should be gone");
}

/// The gc runner a worker builds: a one-second heartbeat and the default options (a one-hour
/// grace, not dry).
fn worker_gc_runner(harness: &Harness) -> GcRunner {
    GcRunner::new(harness.catalog.clone(), harness.store.clone(), Duration::from_secs(1), None, GcOptions::default())
}

#[tokio::test]
async fn gc_runs_as_a_leased_task_and_exports_expire() {
    let harness = Harness::new().await;
    let events =
        harness.dataset_with("events", serde_json::json!({"retention": {"keepSnapshots": 1, "maxAgeDays": 0}})).await;
    harness.commit(&events, "load", "SELECT 1 AS id").await;
    let lease = harness.maintenance_task(&events, "gc", "gc-events", serde_json::json!({})).await;
    let runner = worker_gc_runner(&harness);
    let report = runner.run(lease.attempt_ref()).await.expect("gc task");
    assert!(report.expired_snapshots.is_empty() && report.files.is_empty(), "{report:?}");
    assert_eq!(harness.catalog.task(lease.task).await.expect("task").phase, TaskPhase::Succeeded);

    // A task of another kind is refused and fails visibly.
    let lease = harness.maintenance_task(&events, "compact", "not-gc", serde_json::json!({})).await;
    let error = runner.run(lease.attempt_ref()).await.expect_err("wrong kind");
    assert_eq!(error.error_code(), "invalid_task_spec");
    assert_eq!(harness.catalog.task(lease.task).await.expect("task").phase, TaskPhase::Failed);

    // A collection deletes its tenant's query exports past their retention (listed when dry);
    // other tenants' are left to their own datasets' collections, and task exports are kept.
    for key in ["_query-exports/default/q1.parquet", "_query-exports/other/q2.parquet", "_exports/default/t/a.parquet"]
    {
        harness.store.put(key, Bytes::from_static(b"x")).await.expect("export");
    }
    let stop = CancellationToken::new();
    let dry = GcOptions { dry_run: true, ..zero() };
    let report = collect_dataset(&harness.catalog, harness.store.as_ref(), &events, &dry, &stop).await.expect("dry");
    assert_eq!(report.exports, ["_query-exports/default/q1.parquet"], "{report:?}");
    harness.store.head("_query-exports/default/q1.parquet").await.expect("a dry run keeps it");
    let fresh = collect_dataset(&harness.catalog, harness.store.as_ref(), &events, &GcOptions::default(), &stop)
        .await
        .expect("gc");
    assert!(fresh.exports.is_empty(), "exports younger than 7 days stay: {fresh:?}");
    let report = collect_dataset(&harness.catalog, harness.store.as_ref(), &events, &zero(), &stop).await.expect("gc");
    assert_eq!(report.exports, ["_query-exports/default/q1.parquet"], "{report:?}");
    assert!(harness.store.head("_query-exports/default/q1.parquet").await.is_err());
    harness.store.head("_query-exports/other/q2.parquet").await.expect("another tenant's export stays");
    harness.store.head("_exports/default/t/a.parquet").await.expect("task exports stay");

    harness.store.put("_query-exports/abc/result.parquet", Bytes::from_static(b"x")).await.expect("export");
    let kept = collect_exports(harness.store.as_ref(), "_query-exports", Duration::from_secs(3600), false)
        .await
        .expect("exports");
    assert!(kept.is_empty());
    let gone = collect_exports(harness.store.as_ref(), "_query-exports", Duration::ZERO, false).await.expect("exports");
    assert_eq!(gone, ["_query-exports/abc/result.parquet", "_query-exports/other/q2.parquet"]);
    assert!(harness.store.head("_query-exports/abc/result.parquet").await.is_err());
}

/// The `gc` runs recorded in `maintenance_runs` (a dry run is not one).
async fn recorded_gc_runs(harness: &Harness) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT result, unreferenced_deleted FROM maintenance_runs WHERE kind = 'gc' ORDER BY id")
        .fetch_all(harness.catalog.pool())
        .await
        .expect("runs")
}

#[tokio::test]
async fn a_gc_task_honours_the_dry_run_and_grace_of_its_spec() {
    let harness = Harness::new().await;
    let events =
        harness.dataset_with("events", serde_json::json!({"retention": {"keepSnapshots": 1, "maxAgeDays": 0}})).await;
    harness.commit_with(&events, "load-1", "SELECT 1 AS id", CommitMode::Overwrite).await;
    harness.commit_with(&events, "load-2", "SELECT 2 AS id", CommitMode::Overwrite).await;
    let released: Vec<String> = harness
        .catalog
        .snapshot_files(events.id, SnapshotId(1))
        .await
        .expect("files")
        .into_iter()
        .map(|file| file.path)
        .collect();
    assert_eq!(released.len(), 1);
    // The runner's own options are the worker's: the default one-hour grace, not dry.
    let runner = worker_gc_runner(&harness);
    let run = |name: &'static str, spec: serde_json::Value| {
        let harness = &harness;
        let events = &events;
        let runner = &runner;
        async move {
            let lease = harness.maintenance_task(events, "gc", name, spec).await;
            (lease.task, runner.run(lease.attempt_ref()).await)
        }
    };

    // `dryRun` with no grace, before anything expired: lists the snapshot it would expire and,
    // since no grace protects them, the released file and that snapshot's manifest; changes
    // nothing and is not recorded as a run; the task succeeds.
    let manifest =
        harness.catalog.snapshot(events.id, SnapshotId(1)).await.expect("snapshot 1").manifest_path.expect("manifest");
    let (task, report) = run("gc-dry-first", serde_json::json!({"dryRun": true, "graceSeconds": 0})).await;
    let report = report.expect("dry run");
    assert!(report.dry_run, "{report:?}");
    assert_eq!(report.expired_snapshots, [1], "{report:?}");
    assert_eq!((&report.files, &report.manifests), (&released, &vec![manifest.clone()]), "{report:?}");
    assert_eq!(harness.catalog.task(task).await.expect("task").phase, TaskPhase::Succeeded);
    harness.catalog.snapshot(events.id, SnapshotId(1)).await.expect("a dry run expired snapshot 1");
    harness.store.head(&manifest).await.expect("a dry run deleted a manifest");
    assert!(recorded_gc_runs(&harness).await.is_empty());
    // With a grace, the dry run sees that the file stays.
    let (_, report) = run("gc-dry-grace", serde_json::json!({"dryRun": true})).await;
    let report = report.expect("dry run");
    assert!(report.files.is_empty() && report.manifests.is_empty(), "{report:?}");

    // No settings: the runner's one-hour grace keeps the released file past the expiry.
    let (_, report) = run("gc-default", serde_json::json!({})).await;
    let report = report.expect("gc");
    assert!(!report.dry_run && report.files.is_empty(), "{report:?}");
    assert_eq!(report.expired_snapshots, [1], "{report:?}");
    harness.store.head(&released[0]).await.expect("deleted within the grace");
    assert_eq!(recorded_gc_runs(&harness).await, [("succeeded".to_owned(), 0)]);

    // `dryRun` with no grace: lists the released file, changes nothing, and is not recorded as
    // a run; the task succeeds.
    let (task, report) = run("gc-dry", serde_json::json!({"dryRun": true, "graceSeconds": 0})).await;
    let report = report.expect("dry run");
    assert!(report.dry_run, "{report:?}");
    assert_eq!(report.files, released, "{report:?}");
    assert_eq!(harness.catalog.task(task).await.expect("task").phase, TaskPhase::Succeeded);
    harness.store.head(&released[0]).await.expect("a dry run deleted a file");
    assert_eq!(recorded_gc_runs(&harness).await.len(), 1);

    // `graceSeconds: 0` overrides the runner's grace: the file no retained snapshot references
    // goes (with its snapshot's manifest).
    let (_, report) = run("gc-now", serde_json::json!({"graceSeconds": 0})).await;
    let report = report.expect("gc");
    assert!(!report.dry_run, "{report:?}");
    assert_eq!((&report.files, &report.manifests), (&released, &vec![manifest.clone()]), "{report:?}");
    assert!(harness.store.head(&released[0]).await.is_err(), "{} should be gone", released[0]);
    assert_eq!(recorded_gc_runs(&harness).await, [("succeeded".to_owned(), 0), ("succeeded".to_owned(), 2)]);

    // Settings the runner cannot use fail the task for good, changing nothing.
    for (name, spec) in [
        ("gc-bad-field", serde_json::json!({"grace": 0})),
        ("gc-bad-grace", serde_json::json!({"graceSeconds": duckmesh_maintenance::MAX_GC_GRACE_SECONDS + 1})),
    ] {
        let (task, result) = run(name, spec).await;
        let error = result.expect_err("invalid spec");
        assert_eq!(error.error_code(), "invalid_task_spec", "{error}");
        assert!(!error.is_retryable());
        let task = harness.catalog.task(task).await.expect("task");
        assert_eq!(task.phase, TaskPhase::Failed, "{name}");
    }
    harness
        .store
        .head(
            &harness
                .catalog
                .snapshot(events.id, SnapshotId(2))
                .await
                .expect("current")
                .manifest_path
                .expect("manifest"),
        )
        .await
        .expect("the current manifest stays");
}
