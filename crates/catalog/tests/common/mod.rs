//! Shared fixtures for the catalog's integration tests.
#![allow(dead_code)]

use duckmesh_catalog::*;
use duckmesh_core::{BackoffPolicy, DatasetId, TaskId};
use duckmesh_testkit::{BoxError, TestDatabase};
use std::time::Duration;

/// Knobs that make retries and leases fast enough for tests.
pub fn fast_config() -> CatalogConfig {
    CatalogConfig {
        lease: Duration::from_secs(30),
        task_backoff: BackoffPolicy { base: Duration::from_millis(20), max: Duration::from_millis(100) },
        outbox_backoff: BackoffPolicy { base: Duration::from_millis(10), max: Duration::from_millis(50) },
        ..CatalogConfig::default()
    }
}

/// A fresh migrated database and a catalog on it.
pub async fn setup() -> Result<(TestDatabase, Catalog), BoxError> {
    let db = TestDatabase::new().await?;
    let catalog = db.catalog_with(fast_config(), 20).await?;
    Ok((db, catalog))
}

/// Registers a dataset named `name` in `default`.
pub async fn dataset(catalog: &Catalog, name: &str) -> Result<DatasetId, BoxError> {
    let record = catalog
        .upsert_dataset(&DatasetSpec {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            generation: 1,
            tenant: "acme".into(),
            schema: None,
            spec: serde_json::json!({}),
        })
        .await?;
    Ok(record.id)
}

/// A task spec writing (append) to `output`.
pub fn task(name: &str, deps: &[&str], output: Option<DatasetId>) -> TaskSpec {
    TaskSpec {
        name: name.into(),
        kind: "sql".into(),
        depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
        max_attempts: None,
        timeout_seconds: Some(60),
        output: output.map(|dataset| TaskOutput { dataset, mode: CommitMode::Append }),
        spec: serde_json::json!({"sql": "SELECT 1"}),
    }
}

/// A job named `name` in `default` with the given tasks.
pub fn job_spec(name: &str, tasks: Vec<TaskSpec>) -> JobSpec {
    JobSpec {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        generation: 1,
        tenant: "acme".into(),
        max_parallel: None,
        spec: serde_json::json!({}),
        tasks,
    }
}

/// Stores a job and returns its tasks' ids by node name.
pub async fn job(catalog: &Catalog, spec: &JobSpec) -> Result<Vec<(String, TaskId)>, BoxError> {
    let upsert = catalog.upsert_job(spec).await?;
    let tasks = catalog.tasks_of_job(upsert.job.id).await?;
    Ok(tasks.into_iter().map(|t| (t.name, t.id)).collect())
}

/// The id of the task named `name`.
pub fn id_of(tasks: &[(String, TaskId)], name: &str) -> TaskId {
    tasks.iter().find(|(n, _)| n == name).map(|(_, id)| *id).expect("task exists")
}

/// A data file with `rows` rows and a deterministic hash.
pub fn file(path: &str, rows: i64) -> NewFile {
    NewFile {
        path: path.into(),
        bytes: rows * 10,
        rows,
        sha256: format!("{:064x}", path.len() as u64 * 7919 + rows as u64),
        partition: None,
    }
}

/// An append commit of `files` to `dataset`.
pub fn append(dataset: DatasetId, files: Vec<NewFile>) -> CommitRequest {
    CommitRequest { dataset, mode: CommitMode::Append, files, manifest_path: None, schema: None }
}

/// Leases a task that must be runnable.
pub async fn lease(catalog: &Catalog, task: TaskId) -> Result<Lease, BoxError> {
    catalog
        .lease_task(task, "test", Duration::from_secs(30))
        .await?
        .ok_or_else(|| format!("task {task} was not leasable").into())
}
