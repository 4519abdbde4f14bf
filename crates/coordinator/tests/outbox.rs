//! The outbox dispatcher on a real PostgreSQL catalog and a local object store: commit records
//! are delivered (and delivered again after a store failure), other kinds drain, and a row
//! whose deliveries keep failing ends `Failed`.

use async_trait::async_trait;
use bytes::Bytes;
use duckmesh_catalog::{Catalog, CatalogConfig, CommitMode, CommitRequest, DatasetSpec, NewFile, TaskOutput, TaskSpec};
use duckmesh_contracts::catalog_record::CommitRecord;
use duckmesh_coordinator::{OutboxDispatcher, OutboxOptions};
use duckmesh_core::{BackoffPolicy, DatasetId};
use duckmesh_storage::{LocalStore, ObjectMeta, ObjectStore, layout};
use duckmesh_testkit::TestDatabase;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A local store whose writes fail while `failing` is set.
#[derive(Debug)]
struct Flaky {
    inner: LocalStore,
    failing: AtomicBool,
}

#[async_trait]
impl ObjectStore for Flaky {
    async fn put(&self, key: &str, data: Bytes) -> duckmesh_storage::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(duckmesh_storage::Error::Io {
                operation: "writing (injected failure)",
                path: key.into(),
                source: std::io::Error::other("injected failure"),
            });
        }
        self.inner.put(key, data).await
    }
    async fn put_file(&self, key: &str, path: &Path) -> duckmesh_storage::Result<u64> {
        self.inner.put_file(key, path).await
    }
    async fn get(&self, key: &str) -> duckmesh_storage::Result<Bytes> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> duckmesh_storage::Result<Bytes> {
        self.inner.get_range(key, range).await
    }
    async fn get_to_file(&self, key: &str, path: &Path) -> duckmesh_storage::Result<ObjectMeta> {
        self.inner.get_to_file(key, path).await
    }
    async fn head(&self, key: &str) -> duckmesh_storage::Result<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> duckmesh_storage::Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> duckmesh_storage::Result<()> {
        self.inner.delete(key).await
    }
    async fn presign_get(&self, key: &str, ttl: Duration) -> duckmesh_storage::Result<String> {
        self.inner.presign_get(key, ttl).await
    }
}

fn config(max_attempts: u32) -> CatalogConfig {
    CatalogConfig {
        outbox_backoff: BackoffPolicy { base: Duration::from_millis(1), max: Duration::from_millis(2) },
        outbox_max_attempts: max_attempts,
        ..CatalogConfig::default()
    }
}

fn options() -> OutboxOptions {
    OutboxOptions { batch: 10, visibility: Duration::from_secs(30), poll: Duration::from_millis(20), concurrency: 4 }
}

async fn dataset(catalog: &Catalog) -> DatasetId {
    let spec = DatasetSpec {
        namespace: "default".into(),
        name: "orders".into(),
        uid: "uid-orders".into(),
        generation: 1,
        tenant: "default".into(),
        schema: None,
        spec: serde_json::json!({"retention": {"keepSnapshots": 5}}),
    };
    catalog.upsert_dataset(&spec).await.expect("dataset").id
}

/// Commits one file through a leased standalone task.
async fn commit(catalog: &Catalog, dataset: DatasetId, name: &str, mode: CommitMode) {
    let task = TaskSpec {
        name: name.into(),
        kind: "sql".into(),
        depends_on: vec![],
        max_attempts: Some(1),
        timeout_seconds: None,
        output: Some(TaskOutput { dataset, mode }),
        spec: serde_json::json!({"sql": "SELECT 1"}),
    };
    let task = catalog.upsert_standalone_task("default", "default", &task).await.expect("task");
    let lease = catalog.lease_task(task, "test", Duration::from_secs(60)).await.expect("lease").expect("runnable");
    let file = NewFile {
        path: format!("orders/attempts/{name}/1/part-00000.parquet"),
        bytes: 100,
        rows: 10,
        sha256: "a".repeat(64),
        partition: None,
    };
    let request = CommitRequest {
        dataset,
        mode,
        files: vec![file],
        manifest_path: Some(format!("orders/attempts/{name}/1/manifest.json")),
        schema: None,
    };
    catalog.commit(lease.attempt_ref(), &request).await.expect("commit");
}

async fn record(store: &dyn ObjectStore, snapshot: i64) -> CommitRecord {
    let key = layout::commit_record_key("default", "orders", snapshot).expect("key");
    CommitRecord::parse(&store.get(&key).await.expect("the commit record exists")).expect("a commit record")
}

#[tokio::test]
async fn commit_records_are_delivered_again_after_a_store_failure() {
    let db = TestDatabase::new().await.expect("test database");
    let catalog = db.catalog_with(config(20), 5).await.expect("catalog");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Flaky { inner: LocalStore::new(dir.path()).expect("store"), failing: AtomicBool::new(true) });
    let dispatcher = OutboxDispatcher::new(catalog.clone(), store.clone(), options());
    let ds = dataset(&catalog).await;
    commit(&catalog, ds, "first", CommitMode::Append).await;
    commit(&catalog, ds, "second", CommitMode::Overwrite).await;

    // The store refuses: both commit rows are offered again; the task rows drain anyway.
    let report = dispatcher.dispatch_once().await.expect("round");
    assert_eq!(report.failed, 2, "{report:?}");
    assert_eq!(report.records_written, 0);
    assert_eq!(report.completed_without_delivery, report.claimed - 2, "{report:?}");
    assert!(store.list(layout::CATALOG_ROOT).await.expect("list").is_empty());
    assert_eq!(catalog.outbox_stats().await.expect("stats").pending, 2);

    store.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = dispatcher.dispatch_once().await.expect("round");
    assert_eq!(report.records_written, 2, "{report:?}");
    let stats = catalog.outbox_stats().await.expect("stats");
    assert_eq!((stats.pending, stats.failed), (0, 0));

    let second = record(store.as_ref(), 2).await;
    assert_eq!(second.dataset.name, "orders");
    assert_eq!(second.dataset.id, ds.0);
    assert_eq!(second.dataset.spec["retention"]["keepSnapshots"], 5);
    let row = catalog.snapshot(ds, duckmesh_core::SnapshotId(2)).await.expect("snapshot");
    assert_eq!(second.snapshot.id, 2);
    assert_eq!(second.snapshot.parent, Some(1));
    assert_eq!(second.snapshot.visibility_token, row.visibility_token);
    assert_eq!(second.snapshot.kind, "overwrite");
    assert_eq!((second.snapshot.file_count, second.snapshot.removed_files), (1, 1));
    assert_eq!(second.snapshot.manifest_path.as_deref(), Some("orders/attempts/second/1/manifest.json"));
    assert!(second.snapshot.fence.is_some());

    // Redelivery writes the same record.
    let before = store.get(&layout::commit_record_key("default", "orders", 2).expect("key")).await.expect("get");
    catalog
        .enqueue_outbox("snapshot_committed", &serde_json::json!({"dataset": ds.0, "snapshot": 2}))
        .await
        .expect("enqueue");
    // A snapshot that does not exist completes with nothing written.
    catalog
        .enqueue_outbox("snapshot_committed", &serde_json::json!({"dataset": ds.0, "snapshot": 99}))
        .await
        .expect("enqueue");
    let report = dispatcher.dispatch_once().await.expect("round");
    assert_eq!((report.records_written, report.completed_without_delivery), (1, 1), "{report:?}");
    let after = store.get(&layout::commit_record_key("default", "orders", 2).expect("key")).await.expect("get");
    assert_eq!(before, after);
    assert_eq!(catalog.outbox_stats().await.expect("stats").pending, 0);
}

#[tokio::test]
async fn a_row_that_keeps_failing_ends_failed_and_the_loop_stops_on_shutdown() {
    let db = TestDatabase::new().await.expect("test database");
    let catalog = db.catalog_with(config(3), 5).await.expect("catalog");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Flaky { inner: LocalStore::new(dir.path()).expect("store"), failing: AtomicBool::new(true) });
    let ds = dataset(&catalog).await;
    commit(&catalog, ds, "first", CommitMode::Append).await;

    let dispatcher = OutboxDispatcher::new(catalog.clone(), store.clone(), options());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { dispatcher.run(shutdown).await }
    });
    let mut stats = catalog.outbox_stats().await.expect("stats");
    for _ in 0..200 {
        if stats.failed == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        stats = catalog.outbox_stats().await.expect("stats");
    }
    assert_eq!((stats.pending, stats.failed), (0, 1), "the commit row fails after 3 deliveries");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running).await.expect("stops on shutdown").expect("no panic");

    // Requeued once the store works, it is delivered.
    store.failing.store(false, Ordering::SeqCst);
    assert_eq!(catalog.requeue_failed_outbox().await.expect("requeue"), 1);
    let dispatcher = OutboxDispatcher::new(catalog.clone(), store.clone(), options());
    assert_eq!(dispatcher.dispatch_once().await.expect("round").records_written, 1);
    assert_eq!(record(store.as_ref(), 1).await.snapshot.kind, "append");
}
