//! The integrity check against a real PostgreSQL catalog and a real S3 server (moto): data
//! committed by the real worker is clean; then each kind of damage — a deleted file, a
//! truncated file, a corrupted file of the right size, a replaced manifest, a stray object —
//! is found, counted and recorded, and the catalog keeps the latest run per dataset.

#![allow(missing_docs)]

use bytes::Bytes;
use duckmesh_catalog::{Catalog, CommitMode, DatasetRecord, DatasetSpec, ProblemKind, TaskOutput, TaskSpec};
use duckmesh_maintenance::{IntegrityOptions, check_dataset};
use duckmesh_storage::testing::MotoServer;
use duckmesh_storage::{ObjectStore, S3Store};
use duckmesh_testkit::TestDatabase;
use duckmesh_worker::{AttemptIdentity, Outcome, Worker, WorkerConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct Harness {
    _db: TestDatabase,
    catalog: Catalog,
    store: Arc<dyn ObjectStore>,
    _dir: tempfile::TempDir,
    worker: Worker,
}

impl Harness {
    async fn new() -> Self {
        let moto = MotoServer::shared().await.expect("S3 test server (moto_server on PATH)");
        let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(moto.scoped_config()).await.expect("S3 store"));
        let db = TestDatabase::new().await.expect("test database");
        let catalog = db.catalog().await.expect("catalog");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = WorkerConfig {
            cache_dir: dir.path().join("cache"),
            work_dir: dir.path().join("work"),
            runner: Some("test-worker".into()),
            ..WorkerConfig::default()
        };
        let worker = Worker::new(catalog.clone(), store.clone(), config);
        Self { _db: db, catalog, store, _dir: dir, worker }
    }

    async fn dataset(&self, name: &str) -> DatasetRecord {
        let spec = DatasetSpec {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            generation: 1,
            tenant: "default".into(),
            schema: None,
            spec: serde_json::json!({}),
        };
        self.catalog.upsert_dataset(&spec).await.expect("upsert dataset")
    }

    /// Commits `sql` to `dataset` through the real worker.
    async fn commit(&self, dataset: &DatasetRecord, name: &str, sql: &str) {
        let task = TaskSpec {
            name: name.into(),
            kind: "sql".into(),
            depends_on: vec![],
            max_attempts: Some(1),
            timeout_seconds: None,
            output: Some(TaskOutput { dataset: dataset.id, mode: CommitMode::Append }),
            spec: serde_json::json!({ "sql": sql }),
        };
        let task = self.catalog.upsert_standalone_task("default", "default", &task).await.expect("task");
        let lease =
            self.catalog.lease_task(task, "test", Duration::from_secs(60)).await.expect("lease").expect("runnable");
        let identity =
            AttemptIdentity { task: lease.task, attempt: lease.attempt, fence: lease.fence, traceparent: None };
        match self.worker.run(&identity, CancellationToken::new()).await {
            Outcome::Committed(_) => {}
            other => panic!("expected a commit, got {other:?}"),
        }
    }
}

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
