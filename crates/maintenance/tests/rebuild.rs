//! Catalog rebuild from the bucket on real PostgreSQL and a real S3 server (moto), with data
//! from the real worker: appends, an overwrite, a compaction and a GC that expires snapshots
//! (and writes a checkpoint) are delivered as commit records by the outbox dispatcher; the
//! catalog is then rebuilt into a fresh database, where every retained snapshot has the same
//! row, files and query results, integrity is clean and the fencing sequence moved past every
//! fence. A commit whose record was never written is reported, not restored; a missing record
//! in the middle is refused, naming the snapshot.
//!
//! Ingest snapshots (records posted through the catalog's ingest API and committed by the real
//! coordinator, poison records dead-lettered) mixed with task appends replay through their
//! ingest manifests, a GC checkpoint at an ingest snapshot included: after the rebuild every
//! read-your-writes token acked for a restored commit is still satisfied, and the next batch
//! gets a fence no earlier batch used.

mod common;

use common::Harness;
use duckmesh_catalog::{
    Catalog, Column, CommitMode, DatasetRecord, DatasetSpec, IngestAck, IngestRecord, IngestRequest,
};
use duckmesh_coordinator::{BatchReport, Coordinator, CoordinatorConfig, OutboxDispatcher, OutboxOptions};
use duckmesh_core::SnapshotId;
use duckmesh_engine::{Database, Limits, Relation};
use duckmesh_maintenance::{
    CompactionOutcome, Compactor, GcOptions, IntegrityOptions, RebuildOptions, check_dataset, collect_dataset,
    rebuild_catalog,
};
use duckmesh_storage::layout;
use duckmesh_telemetry::Metrics;
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

/// A dataset with the schema ingest needs (`id BIGINT, label VARCHAR`, what the sql loads write).
async fn ingest_dataset(harness: &Harness, name: &str, spec: serde_json::Value) -> DatasetRecord {
    let columns = [("id", "BIGINT"), ("label", "VARCHAR")]
        .iter()
        .map(|(name, data_type)| Column { name: (*name).into(), data_type: (*data_type).into() })
        .collect();
    let spec = DatasetSpec {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        generation: 1,
        tenant: "default".into(),
        schema: Some(columns),
        spec,
    };
    harness.catalog.upsert_dataset(&spec).await.expect("upsert dataset")
}

/// Posts records `ids` (label `in-<id>`, keyed by id) through the catalog's ingest API, as the
/// query API does; a `None` label posts an id DuckDB cannot convert (dead-lettered).
async fn post(catalog: &Catalog, dataset: &DatasetRecord, ids: &[(i64, bool)]) -> IngestAck {
    let records: Vec<IngestRecord> = ids
        .iter()
        .map(|(id, good)| IngestRecord {
            key: format!("k{id}"),
            payload: if *good {
                serde_json::json!({"id": id, "label": format!("in-{id}")})
            } else {
                serde_json::json!({"id": format!("not-a-number-{id}"), "label": "poison"})
            },
        })
        .collect();
    let request = IngestRequest {
        dataset: dataset.id,
        tenant: "default",
        records: &records,
        traceparent: None,
        max_pending: None,
    };
    catalog.ingest(request).await.expect("ingest")
}

fn new_coordinator(harness: &Harness, catalog: &Catalog) -> Coordinator {
    let config = CoordinatorConfig {
        linger: Duration::from_millis(10),
        poll_interval: Duration::from_millis(50),
        work_dir: harness.dir.path().join("coordinator"),
        identity: "test-coordinator".into(),
        ..CoordinatorConfig::default()
    };
    Coordinator::new(catalog.clone(), harness.store.clone(), Metrics::new(), config)
}

/// Commits every pending event of the catalog as ingest batches; returns their reports.
async fn commit_pending(coordinator: &Coordinator) -> Vec<BatchReport> {
    let mut reports = Vec::new();
    while let Some(report) = coordinator.run_once().await.expect("coordinator batch") {
        reports.push(report);
    }
    reports
}

#[tokio::test]
async fn ingest_snapshots_replay_through_their_manifests_and_acked_tokens_stay_satisfied() {
    let harness = Harness::new().await;
    let retention = serde_json::json!({"retention": {"keepSnapshots": 3, "maxAgeDays": 0}});
    let clicks = ingest_dataset(&harness, "clicks", retention).await;
    let coordinator = new_coordinator(&harness, &harness.catalog);
    let load = |index: i64| format!("SELECT {index}::BIGINT AS id, 'task-{index}' AS label");
    let good = |ids: std::ops::Range<i64>| ids.map(|id| (id, true)).collect::<Vec<_>>();

    // 1 ingest, 2 task append, 3 ingest (a poison record dead-lettered), 4 task append.
    let mut acks = vec![post(&harness.catalog, &clicks, &good(1..6)).await];
    let batches = commit_pending(&coordinator).await;
    assert_eq!(batches.iter().map(|b| b.snapshot).collect::<Vec<_>>(), [Some(SnapshotId(1))]);
    harness.commit(&clicks, "t2", &load(100)).await;
    let mut mixed = good(6..10);
    mixed.push((10, false));
    acks.push(post(&harness.catalog, &clicks, &mixed).await);
    let batches = commit_pending(&coordinator).await;
    assert_eq!((batches.len(), batches[0].committed, batches[0].dead_lettered), (1, 4, 1), "{batches:?}");
    // A retried request stores nothing again; its ack names the first copies' snapshot.
    let retried = post(&harness.catalog, &clicks, &good(6..8)).await;
    assert_eq!((retried.accepted, retried.duplicates, retried.visibility_token), (0, 2, 3));
    acks.push(retried);
    harness.commit(&clicks, "t4", &load(101)).await;
    // The store keeps whole seconds: the manifests before the checkpointed snapshot (5) are a
    // second older than it (the rebuild reports younger ones as unconfirmed).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // 5 ingest (two requests, one batch), 6 task append, 7 ingest.
    acks.push(post(&harness.catalog, &clicks, &good(11..14)).await);
    acks.push(post(&harness.catalog, &clicks, &good(14..16)).await);
    let batches = commit_pending(&coordinator).await;
    assert_eq!(batches.iter().map(|b| b.snapshot).collect::<Vec<_>>(), [Some(SnapshotId(5))]);
    harness.commit(&clicks, "t6", &load(102)).await;
    acks.push(post(&harness.catalog, &clicks, &good(16..20)).await);
    commit_pending(&coordinator).await;
    dispatch_all(&harness).await;

    // GC keeps 5, 6 and 7 and checkpoints the ingest snapshot 5; 1 to 4 stay as expired anchors
    // of the files 5 still holds, and their records are superseded.
    let clicks = harness.catalog.dataset(clicks.id).await.expect("dataset");
    let gc = GcOptions { grace: Duration::ZERO, ..GcOptions::default() };
    let report = collect_dataset(&harness.catalog, harness.store.as_ref(), &clicks, &gc, &CancellationToken::new())
        .await
        .expect("gc");
    assert_eq!(report.expired_snapshots, [1, 2, 3, 4], "{report:?}");
    assert!(report.files.is_empty(), "appends only: every file is still live {report:?}");
    assert_eq!(report.checkpoint, Some(layout::checkpoint_key("default", "clicks", 5).expect("key")));
    assert_eq!(report.records.len(), 4, "{report:?}");

    // 8 ingest after the checkpoint, recorded; 9 ingest committed but never recorded (the
    // dispatcher lags); and one request acked but not committed when the catalog is lost.
    acks.push(post(&harness.catalog, &clicks, &good(20..23)).await);
    commit_pending(&coordinator).await;
    dispatch_all(&harness).await;
    let lost_ack = post(&harness.catalog, &clicks, &good(23..25)).await;
    let lost = commit_pending(&coordinator).await.remove(0);
    assert_eq!(lost.snapshot, Some(SnapshotId(9)));
    let lost_manifest = lost.manifest_path.clone().expect("manifest");
    let lost_manifest_bytes = harness.store.get(&lost_manifest).await.expect("manifest");
    let pending_ack = post(&harness.catalog, &clicks, &good(25..27)).await;

    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM snapshots WHERE dataset_id = $1 ORDER BY id")
        .bind(clicks.id.0)
        .fetch_all(harness.catalog.pool())
        .await
        .expect("kinds");
    assert_eq!(kinds, ["ingest", "append", "ingest", "append", "ingest", "append", "ingest", "ingest", "ingest"]);
    for ack in &acks {
        assert!(harness.catalog.visible_at(clicks.id, ack.visibility_token).await.expect("visible"), "{ack:?}");
    }
    assert!(!harness.catalog.visible_at(clicks.id, pending_ack.visibility_token).await.expect("visible"));
    let mut before = seen(&harness, &harness.catalog, "clicks").await;
    before.remove(&9);
    assert_eq!(before.keys().copied().collect::<Vec<_>>(), [5, 6, 7, 8]);
    let rows_at_8: Vec<Option<String>> = before[&8].rows.iter().map(|row| row[0].clone()).collect();
    let expected: Vec<i64> = (1..10).chain(11..23).chain(100..103).collect();
    assert_eq!(rows_at_8, expected.iter().map(|id| Some(id.to_string())).collect::<Vec<_>>());
    let table_before = rows_table(&harness.catalog, "clicks", 9).await;

    let db = TestDatabase::new().await.expect("test database");
    let rebuilt = db.catalog().await.expect("catalog");
    let report =
        rebuild_catalog(&rebuilt, harness.store.as_ref(), &RebuildOptions::default(), &|_| {}).await.expect("rebuild");
    let dataset = &report.datasets[0];
    assert_eq!((dataset.checkpoint, dataset.current, dataset.visibility_token), (Some(5), 8, 8), "{report:?}");
    let unconfirmed: Vec<&str> = report.unconfirmed.iter().map(|u| u.key.as_str()).collect();
    assert_eq!(unconfirmed, [lost_manifest.as_str()], "{report:?}");
    assert_eq!(report.ingest_fence, Some(lost.fence.0));
    assert!(report.fence_seq >= Some(lost.fence.0), "{report:?}");

    // Every retained snapshot reads the same rows from the same files, with the same tokens
    // and parents; expired anchors and retired files are restored as they were.
    assert_eq!(seen(&harness, &rebuilt, "clicks").await, before);
    assert_eq!(rows_table(&rebuilt, "clicks", 9).await, table_before);
    let restored = rebuilt.dataset_by_name("default", "clicks").await.expect("clicks");
    assert_eq!(
        (restored.id, restored.current_snapshot, restored.visibility_token),
        (clicks.id, Some(SnapshotId(8)), 8)
    );
    assert_eq!(restored.schema, clicks.schema);
    // Every token acked for a commit restored is still satisfied; the lost commit's is not (the
    // recovery point), nor is the request still pending (the ingest buffer is not restored).
    for ack in &acks {
        assert!(rebuilt.visible_at(clicks.id, ack.visibility_token).await.expect("visible"), "{ack:?}");
    }
    assert_eq!(lost_ack.visibility_token, 9);
    assert!(!rebuilt.visible_at(clicks.id, lost_ack.visibility_token).await.expect("visible"));
    let integrity = IntegrityOptions { verify_hashes: true, ..IntegrityOptions::default() };
    let check = check_dataset(&rebuilt, harness.store.as_ref(), &restored, &integrity).await.expect("integrity");
    assert!(check.is_clean() && check.counts.files_checked > 0, "{check:#?}");

    // Ingest goes on in the rebuilt catalog: the next batch is snapshot 9 again, under a fence
    // no earlier batch used, so the unrecorded batch's objects stay as they were for recovery.
    let after = post(&rebuilt, &restored, &good(30..33)).await;
    assert_eq!(after.visibility_token, 9);
    let next = commit_pending(&new_coordinator(&harness, &rebuilt)).await.remove(0);
    assert_eq!(next.snapshot, Some(SnapshotId(9)));
    assert!(next.fence.0 > lost.fence.0, "fence {} granted again after the rebuild", next.fence.0);
    assert_ne!(next.manifest_path.as_deref(), Some(lost_manifest.as_str()));
    assert_eq!(harness.store.get(&lost_manifest).await.expect("manifest"), lost_manifest_bytes);
    assert!(rebuilt.visible_at(clicks.id, after.visibility_token).await.expect("visible"));
    let restored = rebuilt.dataset(clicks.id).await.expect("clicks");
    let check = check_dataset(&rebuilt, harness.store.as_ref(), &restored, &integrity).await.expect("integrity");
    assert!(check.is_clean(), "{check:#?}");
}
