//! Shared set-up of the maintenance tests: a private PostgreSQL catalog, a scoped prefix of the
//! shared moto bucket, and the real worker to commit data to maintain.

#![allow(dead_code, missing_docs)]

use duckmesh_catalog::{Catalog, CommitMode, DatasetRecord, DatasetSpec, Lease, TaskOutput, TaskSpec};
use duckmesh_storage::testing::MotoServer;
use duckmesh_storage::{ObjectStore, S3Store};
use duckmesh_testkit::TestDatabase;
use duckmesh_worker::{AttemptIdentity, Outcome, Worker, WorkerConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Harness {
    pub _db: TestDatabase,
    pub catalog: Catalog,
    pub store: Arc<dyn ObjectStore>,
    pub dir: tempfile::TempDir,
    pub worker: Worker,
}

impl Harness {
    pub async fn new() -> Self {
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
        Self { _db: db, catalog, store, dir, worker }
    }

    pub async fn dataset(&self, name: &str) -> DatasetRecord {
        self.dataset_with(name, serde_json::json!({})).await
    }

    /// A dataset in `default` whose spec is `spec`.
    pub async fn dataset_with(&self, name: &str, spec: serde_json::Value) -> DatasetRecord {
        let spec = DatasetSpec {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            generation: 1,
            tenant: "default".into(),
            schema: None,
            spec,
        };
        self.catalog.upsert_dataset(&spec).await.expect("upsert dataset")
    }

    /// Commits `sql` to `dataset` through the real worker.
    pub async fn commit(&self, dataset: &DatasetRecord, name: &str, sql: &str) {
        self.commit_with(dataset, name, sql, CommitMode::Append).await;
    }

    /// Commits `sql` to `dataset` through the real worker, appending or overwriting.
    pub async fn commit_with(&self, dataset: &DatasetRecord, name: &str, sql: &str, mode: CommitMode) {
        let task = TaskSpec {
            name: name.into(),
            kind: "sql".into(),
            depends_on: vec![],
            max_attempts: Some(1),
            timeout_seconds: None,
            output: Some(TaskOutput { dataset: dataset.id, mode }),
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

impl Harness {
    /// Leases a standalone maintenance task of `kind` on `dataset` with `spec`.
    pub async fn maintenance_task(
        &self,
        dataset: &DatasetRecord,
        kind: &str,
        name: &str,
        spec: serde_json::Value,
    ) -> Lease {
        let task = TaskSpec {
            name: name.into(),
            kind: kind.into(),
            depends_on: vec![],
            max_attempts: Some(3),
            timeout_seconds: None,
            output: Some(TaskOutput { dataset: dataset.id, mode: CommitMode::Append }),
            spec,
        };
        let task = self.catalog.upsert_standalone_task("default", "default", &task).await.expect("task");
        self.catalog.lease_task(task, "test", Duration::from_secs(60)).await.expect("lease").expect("runnable")
    }
}
