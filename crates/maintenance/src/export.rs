//! Export: a dataset as of a snapshot, written as Parquet (split by target size) or as one CSV
//! file under `_exports/<namespace>/<prefix>/` of the bucket, with a manifest listing every
//! file with its size, row count and SHA-256. One leased attempt of an `export` task (the task
//! names the dataset as its output; the dataset itself is not changed).
//!
//! The target always lies under the task's own namespace in `_exports/`, so an export can
//! never overwrite a dataset's files or another namespace's exports; the prefix is checked like
//! any object key (no `..`, no empty segments).

use crate::attempt::{Leased, Maintained, check_stop};
use crate::error::{Error, Result};
use crate::fetch::DEFAULT_TRANSFER_CONCURRENCY;
use duckmesh_catalog::{AttemptRef, Catalog, NewFile};
use duckmesh_contracts::manifest::{
    MANIFEST_FORMAT, Manifest, ManifestAttempt, ManifestDataset, ManifestFile, ManifestInput, ManifestTask,
};
use duckmesh_contracts::task::DEFAULT_TARGET_FILE_SIZE_BYTES;
use duckmesh_core::SnapshotId;
use duckmesh_engine::{Database, ExportOptions, ExportedFile, Limits, Relation};
use duckmesh_storage::{ObjectStore, layout, validate_prefix};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The task kind this module runs.
pub const EXPORT_KIND: &str = "export";

/// The root of every export in the bucket.
pub const EXPORTS_ROOT: &str = "_exports";

pub use duckmesh_contracts::task::{ExportFormat, ExportSpec};

/// Checks an `export` task's spec ([`ExportSpec::parse`]) and its prefix as an object key.
pub fn parse_spec(value: &serde_json::Value) -> Result<ExportSpec> {
    let spec = ExportSpec::parse(value).map_err(Error::spec)?;
    validate_prefix(&spec.prefix).map_err(|error| Error::InvalidSpec { message: format!("prefix: {error}") })?;
    Ok(spec)
}

/// The full prefix (ending in `/`) in the bucket of an export to `prefix` by a task in
/// `namespace`.
pub fn target(namespace: &str, prefix: &str) -> String {
    format!("{EXPORTS_ROOT}/{namespace}/{prefix}/")
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// The snapshot exported.
    pub snapshot: i64,
    /// The prefix written under (ends in `/`).
    pub target: String,
    /// The files written.
    pub files: Vec<String>,
    /// The manifest's key.
    pub manifest: String,
    /// Rows written.
    pub rows: i64,
    /// Bytes written (the data files).
    pub bytes: i64,
}

/// Runs leased attempts of `export` tasks.
#[derive(Clone)]
pub struct ExportRunner {
    catalog: Catalog,
    store: Arc<dyn ObjectStore>,
    work_dir: PathBuf,
    heartbeat: Duration,
    runner: Option<String>,
    transfer_concurrency: usize,
}

impl ExportRunner {
    /// A runner keeping its scratch files under `work_dir` and heartbeating every `heartbeat`.
    pub fn new(
        catalog: Catalog,
        store: Arc<dyn ObjectStore>,
        work_dir: PathBuf,
        heartbeat: Duration,
        runner: Option<String>,
    ) -> Self {
        Self { catalog, store, work_dir, heartbeat, runner, transfer_concurrency: DEFAULT_TRANSFER_CONCURRENCY }
    }

    /// Downloads at most `transfer_concurrency` files at once (default
    /// [`DEFAULT_TRANSFER_CONCURRENCY`]).
    pub fn with_transfer_concurrency(mut self, transfer_concurrency: usize) -> Self {
        self.transfer_concurrency = transfer_concurrency.max(1);
        self
    }

    /// Runs one leased attempt of an `export` task to the end.
    pub async fn run(&self, attempt: AttemptRef) -> Result<ExportReport> {
        let lease =
            Leased { catalog: &self.catalog, attempt, runner: self.runner.as_deref(), heartbeat: self.heartbeat };
        lease.run(|stop| self.export(attempt, stop)).await
    }

    async fn export(&self, attempt: AttemptRef, stop: CancellationToken) -> Result<ExportReport> {
        let Maintained { attempt: record, task, dataset } =
            Maintained::read(&self.catalog, attempt, EXPORT_KIND, "export").await?;
        let spec = parse_spec(&task.spec)?;
        let snapshot = match spec.snapshot.map(SnapshotId).or(dataset.current_snapshot) {
            Some(snapshot) => snapshot,
            None => {
                return Err(Error::InvalidSpec {
                    message: format!("dataset {:?} has no snapshot to export", dataset.name),
                });
            }
        };
        // A snapshot of the dataset that still exists (not expired), read as the query API would.
        self.catalog.snapshot(dataset.id, snapshot).await.map_err(Error::catalog("reading the snapshot"))?;
        let files = self.catalog.snapshot_files(dataset.id, snapshot).await.map_err(Error::catalog("listing files"))?;

        let scratch = tempfile::Builder::new()
            .prefix(&format!("duckmesh-export-{}-", attempt.attempt.0))
            .tempdir_in(&self.work_dir)
            .map_err(|source| Error::Io { operation: "creating the scratch directory", source })?;
        let local =
            crate::fetch::download(self.store.as_ref(), &files, scratch.path(), self.transfer_concurrency, &stop)
                .await?;
        let job = Write {
            relation: Relation {
                name: "export_input".into(),
                files: local.paths.clone(),
                schema: dataset.schema.clone(),
            },
            scratch: scratch.path().to_owned(),
            format: spec.format,
        };
        let (schema, written) = tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|error| Error::Task { message: error.to_string() })??;
        drop(local);
        check_stop(&stop)?;

        let target = target(&task.namespace, &spec.prefix);
        let mut new_files = Vec::with_capacity(written.len());
        for (index, file) in written.iter().enumerate() {
            let key = match spec.format {
                ExportFormat::Parquet => file.object_key(&target, index),
                ExportFormat::Csv => format!("{target}part-{index:05}.csv"),
            };
            let (bytes, sha256) =
                duckmesh_storage::hash_file(&file.path).await.map_err(Error::storage("hashing an export file"))?;
            self.store.put_file(&key, &file.path).await.map_err(Error::storage("uploading an export file"))?;
            new_files.push(file.new_file(key, bytes, sha256));
        }
        let manifest_key = format!("{target}{}", layout::MANIFEST_FILE);
        let manifest = manifest(&dataset, &task, &record, attempt, snapshot, files.len(), schema, &new_files);
        let body = serde_json::to_vec_pretty(&manifest).map_err(|error| Error::Task { message: error.to_string() })?;
        self.store.put(&manifest_key, body.into()).await.map_err(Error::storage("writing the manifest"))?;
        check_stop(&stop)?;
        self.catalog.complete_unchanged(attempt, dataset.id).await.map_err(Error::catalog("completing the attempt"))?;
        let report = ExportReport {
            snapshot: snapshot.0,
            target,
            files: new_files.iter().map(|file| file.path.clone()).collect(),
            manifest: manifest_key,
            rows: new_files.iter().map(|file| file.rows).sum(),
            bytes: new_files.iter().map(|file| file.bytes).sum(),
        };
        tracing::info!(dataset = %dataset.name, snapshot = snapshot.0, target = %report.target, files = report.files.len(), rows = report.rows, "export written");
        Ok(report)
    }
}

/// The blocking part: DuckDB reads the snapshot's files and writes them in the format asked.
struct Write {
    relation: Relation,
    scratch: PathBuf,
    format: ExportFormat,
}

impl Write {
    fn run(self) -> Result<(Vec<duckmesh_contracts::Column>, Vec<ExportedFile>)> {
        let limits = Limits { memory_limit_bytes: None, threads: None, spill_dir: self.scratch.join("spill") };
        let database = Database::open(&limits)?;
        database.register(&self.relation)?;
        database.lock_down(std::slice::from_ref(&self.scratch))?;
        let schema = database.prepare_query("SELECT * FROM export_input")?;
        let output_dir = self.scratch.join("out");
        let files = match self.format {
            ExportFormat::Parquet => database.export(&ExportOptions {
                output_dir,
                partition_by: Vec::new(),
                target_file_size_bytes: DEFAULT_TARGET_FILE_SIZE_BYTES,
            })?,
            ExportFormat::Csv => {
                let path = output_dir.join("part-00000.csv");
                let rows = database.export_csv_to_file(&path)?;
                vec![ExportedFile { path, relative: "part-00000.csv".into(), rows, partition: None }]
            }
        };
        Ok((schema, files))
    }
}

#[allow(clippy::too_many_arguments)]
fn manifest(
    dataset: &duckmesh_catalog::DatasetRecord,
    task: &duckmesh_catalog::TaskRecord,
    attempt: &duckmesh_catalog::AttemptRecord,
    reference: AttemptRef,
    snapshot: SnapshotId,
    files_read: usize,
    schema: Vec<duckmesh_contracts::Column>,
    files: &[NewFile],
) -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT.into(),
        dataset: ManifestDataset { id: dataset.id.0, namespace: dataset.namespace.clone(), name: dataset.name.clone() },
        mode: duckmesh_contracts::commit::CommitMode::Overwrite,
        task: ManifestTask {
            id: task.id.0,
            job: task.job.map(|job| job.0),
            namespace: task.namespace.clone(),
            name: task.name.clone(),
        },
        attempt: ManifestAttempt { id: reference.attempt.0, number: attempt.number, fence: reference.fence.0 },
        parent_snapshot: Some(snapshot.0),
        inputs: vec![ManifestInput { dataset: dataset.name.clone(), snapshot: Some(snapshot.0), files: files_read }],
        schema,
        files: files.iter().map(ManifestFile::from).collect(),
        replaces: Vec::new(),
        rows: files.iter().map(|file| file.rows).sum(),
        bytes: files.iter().map(|file| file.bytes).sum(),
        created_at: chrono::Utc::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_checked_and_targets_stay_in_the_namespace() {
        let spec = parse_spec(&serde_json::json!({"prefix": "/trips/2026-12-02/"})).expect("valid");
        assert_eq!(
            (spec.prefix.as_str(), spec.format, spec.snapshot),
            ("trips/2026-12-02", ExportFormat::Parquet, None)
        );
        assert_eq!(target("team-a", &spec.prefix), "_exports/team-a/trips/2026-12-02/");
        let csv = parse_spec(&serde_json::json!({"prefix": "x", "format": "csv", "snapshot": 3})).expect("csv");
        assert_eq!((csv.format, csv.snapshot), (ExportFormat::Csv, Some(3)));
        for bad in [
            serde_json::json!({"prefix": ""}),
            serde_json::json!({"prefix": "../trips"}),
            serde_json::json!({"prefix": "a//b"}),
            serde_json::json!({"prefix": "x", "format": "xlsx"}),
            serde_json::json!({"prefix": "x", "sql": "SELECT 1"}),
            serde_json::json!({}),
        ] {
            let error = parse_spec(&bad).expect_err("invalid");
            assert_eq!(error.error_code(), "invalid_task_spec", "{bad}: {error}");
        }
    }
}
