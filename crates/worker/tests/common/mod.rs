//! Shared set-up of the worker tests: a private migrated PostgreSQL (testkit), an object store
//! (a scoped prefix of the shared moto_server bucket, or a local directory), and helpers to
//! declare datasets and tasks, lease them, run the worker, and read committed data back.

#![allow(dead_code, missing_docs)]

use duckmesh_catalog::{
    Catalog, CatalogConfig, Column, CommitMode, DatasetRecord, DatasetSpec, JobSpec, Lease, TaskOutput, TaskSpec,
};
use duckmesh_core::{BackoffPolicy, DatasetId, JobId, TaskId};
use duckmesh_storage::testing::MotoServer;
use duckmesh_storage::{LocalStore, ObjectStore, S3Config, S3Store, StoreCounters};
use duckmesh_testkit::TestDatabase;
use duckmesh_worker::{AttemptIdentity, Outcome, Worker, WorkerConfig};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const NAMESPACE: &str = "default";

pub struct Harness {
    pub db: TestDatabase,
    pub catalog: Catalog,
    pub store: Arc<dyn ObjectStore>,
    pub counters: Arc<StoreCounters>,
    pub dir: tempfile::TempDir,
    pub config: WorkerConfig,
}

/// Catalog knobs for tests: short retry backoff so a retried task is runnable at once.
pub fn catalog_config() -> CatalogConfig {
    CatalogConfig {
        task_backoff: BackoffPolicy { base: Duration::from_millis(10), max: Duration::from_millis(20) },
        ..CatalogConfig::default()
    }
}

pub async fn moto() -> &'static MotoServer {
    MotoServer::shared().await.expect("S3 test server (moto_server on PATH)")
}

impl Harness {
    /// A harness whose store is a fresh prefix of the shared moto bucket.
    pub async fn s3() -> Self {
        let config = moto().await.scoped_config();
        Self::with_s3_config(config).await
    }

    /// A harness over an S3 configuration (for example one pointing at a fault proxy).
    pub async fn with_s3_config(config: S3Config) -> Self {
        let counters = Arc::new(StoreCounters::new());
        let store = S3Store::with_counters(config, counters.clone()).await.expect("S3 store");
        Self::build(Arc::new(store), counters).await
    }

    /// A harness over a local directory store.
    pub async fn local() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path().join("objects")).expect("local store");
        let mut harness = Self::build(Arc::new(store), Arc::new(StoreCounters::new())).await;
        harness.dir = dir;
        harness.config.cache_dir = harness.dir.path().join("cache");
        harness.config.work_dir = harness.dir.path().join("work");
        harness
    }

    async fn build(store: Arc<dyn ObjectStore>, counters: Arc<StoreCounters>) -> Self {
        let db = TestDatabase::new().await.expect("test database");
        let catalog = db.catalog_with(catalog_config(), 8).await.expect("catalog");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = WorkerConfig {
            heartbeat: Duration::from_millis(500),
            default_timeout: Duration::from_secs(120),
            cache_dir: dir.path().join("cache"),
            work_dir: dir.path().join("work"),
            transfer_concurrency: 4,
            runner: Some("test-worker".into()),
        };
        Self { db, catalog, store, counters, dir, config }
    }

    pub fn worker(&self) -> Worker {
        Worker::new(self.catalog.clone(), self.store.clone(), self.config.clone())
    }

    pub async fn dataset(&self, name: &str, spec: serde_json::Value, schema: Option<Vec<Column>>) -> DatasetRecord {
        self.catalog
            .upsert_dataset(&DatasetSpec {
                namespace: NAMESPACE.into(),
                name: name.into(),
                uid: format!("uid-{name}"),
                generation: 1,
                tenant: "default".into(),
                schema,
                spec,
            })
            .await
            .expect("upsert dataset")
    }

    /// Stores a job made of `tasks` and returns its id.
    pub async fn job(&self, name: &str, tasks: Vec<TaskSpec>) -> JobId {
        let upsert = self
            .catalog
            .upsert_job(&JobSpec {
                namespace: NAMESPACE.into(),
                name: name.into(),
                uid: format!("uid-job-{name}"),
                generation: 1,
                tenant: "default".into(),
                max_parallel: None,
                spec: serde_json::json!({}),
                tasks,
            })
            .await
            .expect("upsert job");
        upsert.job.id
    }

    /// Stores a standalone sql task and returns its id.
    pub async fn task(&self, name: &str, output: DatasetId, mode: CommitMode, spec: serde_json::Value) -> TaskId {
        self.task_with(sql_task(name, &[], output, mode, spec)).await
    }

    pub async fn task_with(&self, task: TaskSpec) -> TaskId {
        self.catalog.upsert_standalone_task(NAMESPACE, "default", &task).await.expect("upsert task")
    }

    /// Leases a task (it must be runnable).
    pub async fn lease(&self, task: TaskId, lease: Duration) -> Lease {
        self.catalog.lease_task(task, "test-scheduler", lease).await.expect("lease").expect("task is runnable")
    }

    pub async fn run(&self, lease: &Lease) -> Outcome {
        self.worker().run(&identity(lease), CancellationToken::new()).await
    }

    /// Leases and runs a task once.
    pub async fn run_task(&self, task: TaskId) -> Outcome {
        let lease = self.lease(task, Duration::from_secs(120)).await;
        self.run(&lease).await
    }

    /// Downloads the files of a dataset's latest snapshot, checking each against the size and
    /// hash the catalog recorded, and returns their local paths.
    pub async fn committed_files(&self, dataset: DatasetId) -> Vec<std::path::PathBuf> {
        let record = self.catalog.dataset(dataset).await.expect("dataset");
        let Some(snapshot) = record.current_snapshot else {
            return Vec::new();
        };
        let files = self.catalog.snapshot_files(dataset, snapshot).await.expect("files");
        let out = self.dir.path().join(format!("read-{}-{}", dataset, uuid_like()));
        std::fs::create_dir_all(&out).expect("mkdir");
        let mut paths = Vec::new();
        for (index, file) in files.iter().enumerate() {
            let data = self.store.get(&file.path).await.expect("committed file exists");
            assert_eq!(data.len() as i64, file.bytes, "{}: size", file.path);
            assert_eq!(hex::encode(Sha256::digest(&data)), file.sha256, "{}: sha256", file.path);
            let path = out.join(format!("{index}.parquet"));
            std::fs::write(&path, &data).expect("write");
            paths.push(path);
        }
        paths
    }

    /// Runs `query` in a fresh DuckDB over the committed files of `dataset`, exposed as `t`.
    pub async fn query<T>(
        &self,
        dataset: DatasetId,
        query: &str,
        map: impl FnMut(&duckdb::Row<'_>) -> duckdb::Result<T>,
    ) -> Vec<T> {
        let files = self.committed_files(dataset).await;
        assert!(!files.is_empty(), "dataset {dataset} has no committed files");
        let connection = duckdb::Connection::open_in_memory().expect("duckdb");
        let list: Vec<String> = files.iter().map(|p| format!("'{}'", p.display())).collect();
        connection
            .execute_batch(&format!("CREATE VIEW t AS SELECT * FROM read_parquet([{}])", list.join(", ")))
            .expect("view");
        let mut statement = connection.prepare(query).expect("prepare");
        let rows = statement.query_map([], map).expect("query");
        rows.collect::<Result<Vec<_>, _>>().expect("rows")
    }
}

pub fn identity(lease: &Lease) -> AttemptIdentity {
    AttemptIdentity { task: lease.task, attempt: lease.attempt, fence: lease.fence, traceparent: None }
}

pub fn sql_task(
    name: &str,
    depends_on: &[&str],
    output: DatasetId,
    mode: CommitMode,
    spec: serde_json::Value,
) -> TaskSpec {
    TaskSpec {
        name: name.into(),
        kind: "sql".into(),
        depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        max_attempts: Some(3),
        timeout_seconds: None,
        output: Some(TaskOutput { dataset: output, mode }),
        spec,
    }
}

pub fn column(name: &str, data_type: &str) -> Column {
    Column { name: name.into(), data_type: data_type.into() }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}

/// Unwraps a committed outcome, failing the test with the error otherwise.
pub fn committed(outcome: Outcome) -> duckmesh_worker::CommitSummary {
    match outcome {
        Outcome::Committed(summary) => summary,
        other => panic!("expected a commit, got {other:?}"),
    }
}
