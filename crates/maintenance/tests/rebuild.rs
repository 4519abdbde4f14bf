//! Catalog rebuild from the bucket on real PostgreSQL and a real S3 server (moto), with data
//! from the real worker: appends, an overwrite, a compaction and a GC that expires snapshots
//! (and writes a checkpoint) are delivered as commit records by the outbox dispatcher; the
//! catalog is then rebuilt into a fresh database, where every retained snapshot has the same
//! row, files and query results, integrity is clean and the fencing sequence moved past every
//! fence. A commit whose record was never written is reported, not restored; a missing record
//! in the middle is refused, naming the snapshot.

mod common;

use common::Harness;
use duckmesh_catalog::{Catalog, CommitMode, DatasetRecord};
use duckmesh_coordinator::{OutboxDispatcher, OutboxOptions};
use duckmesh_core::SnapshotId;
use duckmesh_engine::{Database, Limits, Relation};
use duckmesh_maintenance::{
    CompactionOutcome, Compactor, GcOptions, IntegrityOptions, RebuildOptions, check_dataset, collect_dataset,
    rebuild_catalog,
};
use duckmesh_storage::layout;
use duckmesh_testkit::TestDatabase;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

type Rows = Vec<Vec<Option<String>>>;

/// What a reader of one retained snapshot sees, and how the catalog describes it.
#[derive(Debug, PartialEq)]
struct Seen {
    /// id, parent, visibility token, kind, files, rows, bytes, manifest, commit time.
    snapshot: String,
    files: Vec<String>,
    rows: Rows,
}

async fn dispatch_all(harness: &Harness) {
    let dispatcher = OutboxDispatcher::new(harness.catalog.clone(), harness.store.clone(), OutboxOptions::default());
    loop {
        let report = dispatcher.dispatch_once().await.expect("dispatch");
        assert_eq!(report.failed, 0, "{report:?}");
        if report.claimed == 0 {
            break;
        }
    }
}

async fn rows_of(harness: &Harness, catalog: &Catalog, dataset: &DatasetRecord, id: SnapshotId) -> Rows {
    let dir = tempfile::tempdir_in(harness.dir.path()).expect("tempdir");
    let mut files = Vec::new();
    for (index, file) in catalog.snapshot_files(dataset.id, id).await.expect("files").iter().enumerate() {
        let local = dir.path().join(format!("{index}.parquet"));
        harness.store.get_to_file(&file.path, &local).await.expect("download");
        files.push(local);
    }
    if files.is_empty() {
        return Vec::new();
    }
    let database =
        Database::open(&Limits { memory_limit_bytes: None, threads: Some(1), spill_dir: dir.path().join("spill") })
            .expect("duckdb");
    database.register(&Relation { name: "t".into(), files, schema: None }).expect("register");
    database.query_text("SELECT id::VARCHAR, label FROM t ORDER BY id, label").expect("read")
}

/// Every retained snapshot of `name`, as seen through `catalog`.
async fn seen(harness: &Harness, catalog: &Catalog, name: &str) -> BTreeMap<i64, Seen> {
    let dataset = catalog.dataset_by_name("default", name).await.expect("dataset");
    let mut seen = BTreeMap::new();
    for snapshot in catalog.snapshots(dataset.id, None, 1_000).await.expect("snapshots") {
        let files = catalog.snapshot_files(dataset.id, snapshot.id).await.expect("files");
        let described = format!(
            "{} {:?} {} {} {} {} {} {:?} {}",
            snapshot.id,
            snapshot.parent,
            snapshot.visibility_token,
            snapshot.kind,
            snapshot.file_count,
            snapshot.row_count,
            snapshot.byte_count,
            snapshot.manifest_path,
            snapshot.committed_at
        );
        let files = files
            .iter()
            .map(|f| format!("{} {} {} {} {:?} {}", f.path, f.bytes, f.rows, f.sha256, f.partition, f.added_in))
            .collect();
        let rows = rows_of(harness, catalog, &dataset, snapshot.id).await;
        seen.insert(snapshot.id.0, Seen { snapshot: described, files, rows });
    }
    seen
}

/// Every snapshot and file row of `name` (expired anchors and retired files included).
async fn rows_table(catalog: &Catalog, name: &str, below: i64) -> (Vec<String>, Vec<String>) {
    let snapshots: Vec<(i64, Option<i64>, i64, String, Option<i64>, bool)> = sqlx::query_as(
        "SELECT s.id, s.parent_id, s.visibility_token, s.kind, s.fence, s.expired_at IS NOT NULL FROM snapshots s \
         JOIN datasets d ON d.id = s.dataset_id WHERE d.name = $1 AND s.id < $2 ORDER BY s.id",
    )
    .bind(name)
    .bind(below)
    .fetch_all(catalog.pool())
    .await
    .expect("snapshots");
    let files: Vec<(String, i64, Option<i64>, String)> = sqlx::query_as(
        "SELECT f.path, f.added_in, f.removed_in, f.sha256 FROM files f JOIN datasets d ON d.id = f.dataset_id \
         WHERE d.name = $1 AND f.added_in < $2 ORDER BY f.path",
    )
    .bind(name)
    .bind(below)
    .fetch_all(catalog.pool())
    .await
    .expect("files");
    (snapshots.iter().map(|row| format!("{row:?}")).collect(), files.iter().map(|row| format!("{row:?}")).collect())
}

#[tokio::test]
async fn a_catalog_rebuilt_from_the_bucket_answers_every_query_as_before() {
    let harness = Harness::new().await;
    let retention = serde_json::json!({"retention": {"keepSnapshots": 3, "maxAgeDays": 0}});
    let events = harness.dataset_with("events", retention).await;
    let users = harness.dataset("users").await;
    let load = |index: i64| format!("SELECT {index}::BIGINT AS id, 'row-{index}' AS label");
    harness.commit(&events, "e1", &load(1)).await;
    harness.commit(&events, "e2", &load(2)).await;
    harness
        .commit_with(&events, "e3", "SELECT i AS id, 'over' AS label FROM range(10, 13) t(i)", CommitMode::Overwrite)
        .await;
    harness.commit(&events, "e4", &load(20)).await;
    // The store keeps whole seconds: the manifests before the checkpointed snapshot (5) must be
    // a second older than it to count as certainly older (the rebuild reports the rest).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    harness.commit(&events, "e5", &load(21)).await;
    let lease = harness.maintenance_task(&events, "compact", "compact", serde_json::json!({"minFiles": 2})).await;
    let compactor = Compactor::new(
        harness.catalog.clone(),
        harness.store.clone(),
        harness.dir.path().to_owned(),
        Duration::from_secs(1),
        None,
    );
    let outcome = compactor.run(lease.attempt_ref()).await.expect("compaction");
    assert!(matches!(outcome, CompactionOutcome::Committed { replaced: 3, .. }), "{outcome:?}");
    harness.commit(&events, "e7", &load(30)).await;
    harness.commit(&users, "u1", &load(1)).await;
    harness.commit(&users, "u2", &load(2)).await;
    dispatch_all(&harness).await;

    // GC keeps 5, 6 and 7: it checkpoints 5, deletes the records of 1 to 4 and the files only the
    // overwritten snapshots held; 3 and 4 stay as expired anchors of files 5 still holds.
    let events = harness.catalog.dataset(events.id).await.expect("dataset");
    let gc = GcOptions { grace: Duration::ZERO, ..GcOptions::default() };
    let report = collect_dataset(&harness.catalog, harness.store.as_ref(), &events, &gc, &CancellationToken::new())
        .await
        .expect("gc");
    assert_eq!(report.expired_snapshots, [1, 2, 3, 4], "{report:?}");
    assert_eq!(report.files.len(), 2, "{report:?}");
    assert_eq!(report.checkpoint, Some(layout::checkpoint_key("default", "events", 5).expect("key")));
    assert_eq!(report.records.len(), 4, "{report:?}");
    harness.commit(&events, "e8", &load(40)).await;
    dispatch_all(&harness).await;
    // Committed, but its record is never written (the dispatcher lags behind).
    harness.commit(&events, "e9", &load(50)).await;
    let unrecorded = harness.catalog.latest_snapshot(events.id).await.expect("read").expect("snapshot");
    assert_eq!(unrecorded.id.0, 9);

    let mut before = seen(&harness, &harness.catalog, "events").await;
    before.remove(&9);
    assert_eq!(before.keys().copied().collect::<Vec<_>>(), [5, 6, 7, 8]);
    let users_before = seen(&harness, &harness.catalog, "users").await;
    let tables_before =
        (rows_table(&harness.catalog, "events", 9).await, rows_table(&harness.catalog, "users", 9).await);
    let fences: i64 = sqlx::query_scalar("SELECT max(fence) FROM snapshots WHERE NOT (id = 9 AND dataset_id = $1)")
        .bind(events.id.0)
        .fetch_one(harness.catalog.pool())
        .await
        .expect("fences");

    // A dry run reads and verifies everything and writes nothing.
    let db = TestDatabase::new().await.expect("test database");
    let rebuilt = db.catalog().await.expect("catalog");
    let dry = RebuildOptions { dry_run: true, ..RebuildOptions::default() };
    let report = rebuild_catalog(&rebuilt, harness.store.as_ref(), &dry, &|_| {}).await.expect("dry run");
    assert!(report.restored.is_none());
    assert_eq!(rebuilt.dataset_count().await.expect("count"), 0);
    assert_eq!(report.datasets.len(), 2);

    let reads = std::sync::atomic::AtomicU64::new(0);
    let progress = |event| {
        if event == duckmesh_maintenance::RebuildProgress::RecordRead {
            reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    };
    let report = rebuild_catalog(&rebuilt, harness.store.as_ref(), &RebuildOptions::default(), &progress)
        .await
        .expect("rebuild");
    // events: the checkpoint and the records of 6, 7 and 8; users: records 1 and 2.
    assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 6);
    let summary = report.restored.expect("restored");
    assert_eq!((summary.datasets, summary.snapshots), (2, 8), "{report:?}");
    let events_report = report.datasets.iter().find(|d| d.name == "events").expect("events");
    assert_eq!((events_report.checkpoint, events_report.current), (Some(5), 8), "{events_report:?}");
    let unconfirmed: Vec<&str> = report.unconfirmed.iter().map(|u| u.key.as_str()).collect();
    assert_eq!(unconfirmed, [unrecorded.manifest_path.as_deref().expect("manifest")], "{report:?}");
    assert_eq!(summary.fence_seq, fences);
    let next: i64 = sqlx::query_scalar("SELECT nextval('fence_seq')").fetch_one(rebuilt.pool()).await.expect("fence");
    assert!(next > fences);

    assert_eq!(seen(&harness, &rebuilt, "events").await, before);
    assert_eq!(seen(&harness, &rebuilt, "users").await, users_before);
    let tables_after = (rows_table(&rebuilt, "events", 9).await, rows_table(&rebuilt, "users", 9).await);
    assert_eq!(tables_after, tables_before);
    let restored = rebuilt.dataset_by_name("default", "events").await.expect("events");
    assert_eq!(restored.id, events.id);
    assert_eq!(restored.current_snapshot, Some(SnapshotId(8)));
    assert_eq!(restored.spec["retention"]["keepSnapshots"], 3);
    let integrity = IntegrityOptions { verify_hashes: true, ..IntegrityOptions::default() };
    for dataset in rebuilt.datasets(None).await.expect("datasets") {
        let check = check_dataset(&rebuilt, harness.store.as_ref(), &dataset, &integrity).await.expect("integrity");
        assert!(check.is_clean(), "{check:#?}");
        assert!(check.counts.files_checked > 0);
    }

    // Only into an empty catalog.
    let error = rebuild_catalog(&rebuilt, harness.store.as_ref(), &RebuildOptions::default(), &|_| {})
        .await
        .expect_err("not empty");
    assert_eq!(error.error_code(), "catalog_not_empty");

    // A record missing between the checkpoint and a later one is refused, naming it.
    harness.store.delete(&layout::commit_record_key("default", "events", 7).expect("key")).await.expect("delete");
    let db = TestDatabase::new().await.expect("test database");
    let empty = db.catalog().await.expect("catalog");
    let error =
        rebuild_catalog(&empty, harness.store.as_ref(), &RebuildOptions::default(), &|_| {}).await.expect_err("gap");
    assert_eq!(error.error_code(), "rebuild_gap");
    assert!(error.to_string().contains("snapshot 8") && error.to_string().contains("snapshot 7"), "{error}");
    assert_eq!(empty.dataset_count().await.expect("count"), 0);
}

#[tokio::test]
async fn a_missing_manifest_or_a_record_that_does_not_replay_is_refused() {
    let harness = Harness::new().await;
    let events = harness.dataset("events").await;
    harness.commit(&events, "e1", "SELECT 1 AS id, 'a' AS label").await;
    harness.commit(&events, "e2", "SELECT 2 AS id, 'b' AS label").await;
    dispatch_all(&harness).await;
    let key = layout::commit_record_key("default", "events", 2).expect("key");
    let original = harness.store.get(&key).await.expect("record");

    // A record whose counts disagree with its manifest.
    let mut record: serde_json::Value = serde_json::from_slice(&original).expect("json");
    record["snapshot"]["row_count"] = serde_json::json!(99);
    harness.store.put(&key, serde_json::to_vec(&record).expect("json").into()).await.expect("put");
    let db = TestDatabase::new().await.expect("test database");
    let empty = db.catalog().await.expect("catalog");
    let error = rebuild_catalog(&empty, harness.store.as_ref(), &RebuildOptions::default(), &|_| {})
        .await
        .expect_err("mismatch");
    assert_eq!(error.error_code(), "rebuild_mismatch");
    assert!(error.to_string().contains("snapshot 2"), "{error}");

    // A commit whose manifest is gone.
    harness.store.put(&key, original).await.expect("put");
    let manifest =
        harness.catalog.snapshot(events.id, SnapshotId(1)).await.expect("snapshot").manifest_path.expect("manifest");
    harness.store.delete(&manifest).await.expect("delete");
    let error = rebuild_catalog(&empty, harness.store.as_ref(), &RebuildOptions::default(), &|_| {})
        .await
        .expect_err("manifest missing");
    assert_eq!(error.error_code(), "rebuild_manifest_missing");
    assert!(error.to_string().contains("snapshot 1"), "{error}");
    assert_eq!(empty.dataset_count().await.expect("count"), 0);
}
