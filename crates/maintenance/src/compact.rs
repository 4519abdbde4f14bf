//! Compaction: one leased attempt of a `compact` task rewrites a dataset's small files, per
//! partition, into files of about the target size, and commits them as one fenced `compact`
//! snapshot that retires exactly the files it read.
//!
//! - **Same data.** The new files are DuckDB's copy of exactly the rows of the replaced ones
//!   (checked here and again by the catalog), so the row multiset read at the new snapshot is
//!   the one read before.
//! - **Concurrent appends are kept.** The commit retires only the files this attempt read; an
//!   append that committed meanwhile keeps its files. If an overwrite (or another compaction)
//!   retired a file first, the commit changes nothing and fails with the retryable
//!   `compaction_conflict`.
//! - **Interrupted is invisible.** Until the commit, the new files sit in the attempt's
//!   staging prefix, which no reader sees; a retry (a new attempt) starts over, and GC removes
//!   the abandoned staging.
//! - **Rollback** is reading (or restoring) the previous snapshot:
//!   docs/runbooks/compaction-rollback.md.
//!
//! A file is small when it is below the target file size (the task's `targetFileSizeBytes`,
//! else the dataset's, else 128 MiB); a partition is compacted once it has at least `minFiles`
//! small files (default 16; runs scheduled by a Dataset policy take its `compaction.minFiles`).

use crate::attempt::{Leased, Maintained, check_stop};
use crate::error::{Error, Result};
use crate::fetch::DEFAULT_TRANSFER_CONCURRENCY;
use duckmesh_catalog::{AttemptRef, Catalog, Committed, CompactionCommit, DatasetRecord, FileRecord, NewFile};
use duckmesh_contracts::commit::CommitMode;
use duckmesh_contracts::manifest::{
    MANIFEST_FORMAT, Manifest, ManifestAttempt, ManifestDataset, ManifestFile, ManifestInput, ManifestTask,
};
use duckmesh_contracts::task::{DEFAULT_TARGET_FILE_SIZE_BYTES, DatasetOptions};
use duckmesh_engine::{Database, ExportOptions, ExportedFile, Limits, Relation};
use duckmesh_storage::{ObjectStore, layout};
use futures::{StreamExt, TryStreamExt};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The task kind this module runs.
pub const COMPACT_KIND: &str = "compact";

pub use duckmesh_contracts::task::{CompactSpec, DEFAULT_MIN_FILES};

/// What a compaction attempt did.
#[derive(Debug, Clone, PartialEq)]
pub enum CompactionOutcome {
    /// The small files were rewritten and committed.
    Committed {
        /// The new snapshot.
        committed: Committed,
        /// Files retired.
        replaced: usize,
        /// Files written.
        written: usize,
        /// Bytes of the retired files.
        bytes_read: i64,
        /// Bytes of the new files.
        bytes_written: i64,
    },
    /// No partition had enough small files: the task succeeded without a snapshot.
    Unchanged {
        /// Small files found, in all partitions.
        small_files: usize,
    },
}

/// Runs compaction attempts.
#[derive(Clone)]
pub struct Compactor {
    catalog: Catalog,
    store: Arc<dyn ObjectStore>,
    work_dir: PathBuf,
    heartbeat: Duration,
    runner: Option<String>,
    transfer_concurrency: usize,
}

impl Compactor {
    /// A compactor that keeps its scratch files under `work_dir` and heartbeats every
    /// `heartbeat` while it works.
    pub fn new(
        catalog: Catalog,
        store: Arc<dyn ObjectStore>,
        work_dir: PathBuf,
        heartbeat: Duration,
        runner: Option<String>,
    ) -> Self {
        Self { catalog, store, work_dir, heartbeat, runner, transfer_concurrency: DEFAULT_TRANSFER_CONCURRENCY }
    }

    /// Downloads and uploads at most `transfer_concurrency` files at once (default
    /// [`DEFAULT_TRANSFER_CONCURRENCY`]).
    pub fn with_transfer_concurrency(mut self, transfer_concurrency: usize) -> Self {
        self.transfer_concurrency = transfer_concurrency.max(1);
        self
    }

    /// Runs one leased attempt of a `compact` task to the end: confirms it, compacts, commits
    /// (or completes without a snapshot when there is nothing to do). A failure that is not a
    /// lost fence is reported to the catalog (retried by the scheduler when retryable) before
    /// it is returned.
    pub async fn run(&self, attempt: AttemptRef) -> Result<CompactionOutcome> {
        let lease =
            Leased { catalog: &self.catalog, attempt, runner: self.runner.as_deref(), heartbeat: self.heartbeat };
        let result = lease.run(|stop| self.compact(attempt, stop)).await;
        let dataset = crate::runs::dataset_of(&self.catalog, attempt).await;
        match &result {
            Ok(outcome) => crate::runs::record(&self.catalog, crate::runs::compaction(dataset, outcome)).await,
            Err(error) if !error.is_fenced() => {
                crate::runs::record_failure(&self.catalog, COMPACT_KIND, dataset, error).await
            }
            Err(_) => {}
        }
        result
    }

    async fn compact(&self, attempt: AttemptRef, stop: CancellationToken) -> Result<CompactionOutcome> {
        let stop = &stop;
        let Maintained { attempt: record, task, dataset } =
            Maintained::read(&self.catalog, attempt, COMPACT_KIND, "compact").await?;
        let spec = CompactSpec::parse(&task.spec).map_err(Error::spec)?;
        let options = DatasetOptions::parse(&dataset.name, &dataset.spec)
            .map_err(|error| Error::InvalidSpec { message: error.message })?;
        let target =
            spec.target_file_size_bytes.or(options.target_file_size_bytes).unwrap_or(DEFAULT_TARGET_FILE_SIZE_BYTES);
        let live = self.catalog.live_files(dataset.id).await.map_err(Error::catalog("listing live files"))?;
        let (selected, small_files) = select(&live, target, spec.min_files.unwrap_or(DEFAULT_MIN_FILES));
        if selected.is_empty() {
            self.catalog
                .complete_unchanged(attempt, dataset.id)
                .await
                .map_err(Error::catalog("completing the attempt"))?;
            tracing::info!(dataset = %dataset.name, small_files, "nothing to compact");
            return Ok(CompactionOutcome::Unchanged { small_files });
        }

        let started = std::time::Instant::now();
        let scratch = tempfile::Builder::new()
            .prefix(&format!("duckmesh-compact-{}-", attempt.attempt.0))
            .tempdir_in(&self.work_dir)
            .map_err(|source| Error::Io { operation: "creating the scratch directory", source })?;
        let inputs =
            crate::fetch::download(self.store.as_ref(), &selected, scratch.path(), self.transfer_concurrency, stop)
                .await?;
        check_stop(stop)?;
        let downloaded = started.elapsed();
        let output_dir = scratch.path().join("out");
        let job = Rewrite {
            files: inputs.paths.clone(),
            scratch: scratch.path().to_owned(),
            export: ExportOptions {
                output_dir,
                partition_by: options.partition_by.clone(),
                target_file_size_bytes: target,
            },
        };
        let (schema, exported) = tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|error| Error::Task { message: error.to_string() })??;
        let in_memory = inputs.in_memory();
        drop(inputs);
        let rows_read: i64 = selected.iter().map(|file| file.rows).sum();
        let rows_written: u64 = exported.iter().map(|file| file.rows).sum();
        if i64::try_from(rows_written).ok() != Some(rows_read) {
            return Err(Error::RowCountMismatch { read: rows_read, written: rows_written });
        }
        check_stop(stop)?;
        let rewritten = started.elapsed();

        let prefix = layout::attempt_prefix(&dataset.name, &task.id.to_string(), record.number)
            .map_err(Error::storage("naming the output"))?;
        let uploads = exported.iter().enumerate().map(|(index, file)| self.upload(&prefix, index, file));
        let files: Vec<NewFile> =
            futures::stream::iter(uploads).buffered(self.transfer_concurrency).try_collect().await?;
        let manifest_key = layout::manifest_key(&dataset.name, &task.id.to_string(), record.number)
            .map_err(Error::storage("naming the manifest"))?;
        let manifest = manifest(&dataset, &task, &record, attempt, &selected, schema, &files);
        let body = serde_json::to_vec_pretty(&manifest).map_err(|error| Error::Task { message: error.to_string() })?;
        self.store.put(&manifest_key, body.into()).await.map_err(Error::storage("writing the manifest"))?;
        check_stop(stop)?;
        let uploaded = started.elapsed();

        let commit = CompactionCommit {
            dataset: dataset.id,
            replaced: selected.iter().map(|file| file.path.clone()).collect(),
            files: files.clone(),
            manifest_path: Some(manifest_key),
        };
        let committed = self.catalog.commit_compaction(attempt, &commit).await.map_err(Error::catalog("committing"))?;
        let outcome = CompactionOutcome::Committed {
            committed,
            replaced: selected.len(),
            written: files.len(),
            bytes_read: selected.iter().map(|file| file.bytes).sum(),
            bytes_written: files.iter().map(|file| file.bytes).sum(),
        };
        let ms = |elapsed: Duration| elapsed.as_millis();
        tracing::info!(
            dataset = %dataset.name,
            snapshot = committed.snapshot.0,
            ?outcome,
            inputs_in_memory = in_memory,
            download_ms = ms(downloaded),
            rewrite_ms = ms(rewritten - downloaded),
            upload_ms = ms(uploaded - rewritten),
            commit_ms = ms(started.elapsed() - uploaded),
            "compaction committed"
        );
        Ok(outcome)
    }

    async fn upload(&self, prefix: &str, index: usize, file: &ExportedFile) -> Result<NewFile> {
        let key = file.object_key(prefix, index);
        let (bytes, sha256) =
            duckmesh_storage::hash_file(&file.path).await.map_err(Error::storage("hashing a new file"))?;
        self.store.put_file(&key, &file.path).await.map_err(Error::storage("uploading a new file"))?;
        Ok(file.new_file(key, bytes, sha256))
    }
}

/// The files to compact: every small file of each partition that has at least `min_files`
/// of them. Also returns how many small files there are in all.
fn select(live: &[FileRecord], target: u64, min_files: u32) -> (Vec<FileRecord>, usize) {
    let mut by_partition: BTreeMap<String, Vec<&FileRecord>> = BTreeMap::new();
    for file in live.iter().filter(|file| u64::try_from(file.bytes).unwrap_or(0) < target) {
        let key = file.partition.as_ref().map(|partition| partition.to_string()).unwrap_or_default();
        by_partition.entry(key).or_default().push(file);
    }
    let small = by_partition.values().map(Vec::len).sum();
    let selected =
        by_partition.into_values().filter(|files| files.len() >= min_files as usize).flatten().cloned().collect();
    (selected, small)
}

/// The blocking part: DuckDB reads the files and writes them again, split by size and
/// partition.
struct Rewrite {
    files: Vec<PathBuf>,
    scratch: PathBuf,
    export: ExportOptions,
}

impl Rewrite {
    fn run(self) -> Result<(Vec<duckmesh_contracts::Column>, Vec<ExportedFile>)> {
        let limits = Limits { memory_limit_bytes: None, threads: None, spill_dir: self.scratch.join("spill") };
        let database = Database::open(&limits)?;
        // The inputs are bound more than once (view, result columns, COPY): each bind would
        // otherwise open every input again and read its footer.
        database
            .connection()
            .execute_batch("SET parquet_metadata_cache = true")
            .map_err(|error| Error::Task { message: format!("configuring the rewrite: {error}") })?;
        database.register(&Relation { name: "compaction_input".into(), files: self.files, schema: None })?;
        database.lock_down(std::slice::from_ref(&self.scratch))?;
        // Our own single statement: bound once as the result view, without the statement
        // check and the separate bind `prepare_query` gives user SQL.
        database.create_result_view("SELECT * FROM compaction_input")?;
        let schema = database.result_columns()?;
        let files = database.export(&self.export)?;
        Ok((schema, files))
    }
}

fn manifest(
    dataset: &DatasetRecord,
    task: &duckmesh_catalog::TaskRecord,
    attempt: &duckmesh_catalog::AttemptRecord,
    reference: AttemptRef,
    replaced: &[FileRecord],
    schema: Vec<duckmesh_contracts::Column>,
    files: &[NewFile],
) -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT.into(),
        dataset: ManifestDataset { id: dataset.id.0, namespace: dataset.namespace.clone(), name: dataset.name.clone() },
        mode: CommitMode::Append,
        task: ManifestTask {
            id: task.id.0,
            job: task.job.map(|job| job.0),
            namespace: task.namespace.clone(),
            name: task.name.clone(),
        },
        attempt: ManifestAttempt { id: reference.attempt.0, number: attempt.number, fence: reference.fence.0 },
        parent_snapshot: dataset.current_snapshot.map(|snapshot| snapshot.0),
        inputs: vec![ManifestInput {
            dataset: dataset.name.clone(),
            snapshot: dataset.current_snapshot.map(|snapshot| snapshot.0),
            files: replaced.len(),
        }],
        schema,
        files: files.iter().map(ManifestFile::from).collect(),
        replaces: replaced.iter().map(|file| file.path.clone()).collect(),
        rows: files.iter().map(|file| file.rows).sum(),
        bytes: files.iter().map(|file| file.bytes).sum(),
        created_at: chrono::Utc::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duckmesh_core::SnapshotId;

    fn file(path: &str, bytes: i64, partition: Option<serde_json::Value>) -> FileRecord {
        FileRecord { path: path.into(), bytes, rows: 1, sha256: "0".repeat(64), partition, added_in: SnapshotId(1) }
    }

    #[test]
    fn small_files_are_picked_per_partition() {
        let day = |d: &str| Some(serde_json::json!({ "day": d }));
        let live = vec![
            file("a", 10, day("1")),
            file("b", 10, day("1")),
            file("c", 10, day("2")),
            file("d", 5_000, day("2")),
            file("e", 10, day("3")),
            file("f", 10, day("3")),
            file("g", 10, day("3")),
        ];
        let (selected, small) = select(&live, 1_000, 2);
        let paths: Vec<&str> = selected.iter().map(|f| f.path.as_str()).collect();
        assert_eq!((paths, small), (vec!["a", "b", "e", "f", "g"], 6));
        let (selected, _) = select(&live, 1_000, 3);
        assert_eq!(selected.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["e", "f", "g"]);
        assert!(select(&live, 1_000, 4).0.is_empty());
    }
}
