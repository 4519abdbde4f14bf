//! The integrity check of one dataset: catalog against bucket.
//!
//! 1. Every file a retained snapshot references is `HEAD`ed: missing or of another size is a
//!    problem; with [`IntegrityOptions::verify_hashes`] its content is downloaded and hashed too.
//! 2. Every retained snapshot that names a manifest has it read back: a manifest that is
//!    missing, unreadable, of another dataset, or that lists other files (paths, sizes, rows,
//!    hashes) than the catalog says the snapshot added is a problem.
//! 3. Objects under the dataset's prefix that nothing in the catalog references and that are
//!    older than [`IntegrityOptions::orphan_grace`] (younger ones may be an upload in flight)
//!    are orphans: reported, and left to GC; they do not make a run unclean.
//!
//! What is found is a result, recorded in the catalog; only a failure to look (the catalog or
//! the store unavailable) is an [`Error`].

use crate::error::{Error, Result};
use chrono::Utc;
use duckmesh_catalog::{
    Catalog, DatasetRecord, FileRecord, IntegrityCounts, IntegrityProblem, NewIntegrityRun, ProblemKind,
    SnapshotManifest,
};
use duckmesh_contracts::manifest::AnyManifest;
use duckmesh_storage::ObjectStore;
use futures::{StreamExt, TryStreamExt};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// How to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityOptions {
    /// Download every file and compare its SHA-256 with the catalog's (slow: reads all data).
    pub verify_hashes: bool,
    /// Unreferenced objects younger than this are not reported (an upload may be in flight).
    pub orphan_grace: Duration,
    /// Files checked at once.
    pub concurrency: usize,
}

impl Default for IntegrityOptions {
    fn default() -> Self {
        Self { verify_hashes: false, orphan_grace: Duration::from_secs(3600), concurrency: 8 }
    }
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityReport {
    /// The run's catalog id.
    pub run_id: i64,
    /// The dataset's namespace.
    pub namespace: String,
    /// The dataset's name.
    pub name: String,
    /// The counts.
    pub counts: IntegrityCounts,
    /// Every problem found, by kind then path.
    pub problems: Vec<IntegrityProblem>,
}

impl IntegrityReport {
    /// Whether the committed data is intact (orphans aside).
    pub fn is_clean(&self) -> bool {
        self.counts.is_clean()
    }
}

/// Checks `dataset` and records the run in the catalog.
pub async fn check_dataset(
    catalog: &Catalog,
    store: &dyn ObjectStore,
    dataset: &DatasetRecord,
    options: &IntegrityOptions,
) -> Result<IntegrityReport> {
    let started_at = Utc::now();
    let scratch =
        tempfile::tempdir().map_err(|source| Error::Io { operation: "creating a scratch directory", source })?;
    let files = catalog.retained_files(dataset.id).await.map_err(Error::catalog("listing retained files"))?;
    let mut counts = IntegrityCounts {
        files_checked: i64::try_from(files.len()).unwrap_or(i64::MAX),
        bytes_checked: files.iter().map(|file| file.bytes).sum(),
        ..IntegrityCounts::default()
    };
    let checks = files.iter().map(|file| check_file(store, file, options.verify_hashes, scratch.path()));
    let mut problems: Vec<IntegrityProblem> = futures::stream::iter(checks)
        .buffer_unordered(options.concurrency.max(1))
        .try_filter_map(|found| async move { Ok(found) })
        .try_collect()
        .await?;

    let manifests = catalog.snapshot_manifests(dataset.id).await.map_err(Error::catalog("listing manifests"))?;
    counts.snapshots_checked = i64::try_from(manifests.len()).unwrap_or(i64::MAX);
    for manifest in &manifests {
        if let Some(problem) = check_manifest(store, dataset, manifest).await? {
            problems.push(problem);
        }
    }

    problems.extend(orphans(catalog, store, dataset, options.orphan_grace).await?);
    for problem in &problems {
        let count = match problem.kind {
            ProblemKind::MissingFile => &mut counts.missing_files,
            ProblemKind::SizeMismatch => &mut counts.size_mismatch_files,
            ProblemKind::HashMismatch => &mut counts.hash_mismatch_files,
            ProblemKind::Manifest => &mut counts.manifest_problems,
            ProblemKind::Orphan => &mut counts.orphan_files,
        };
        *count += 1;
    }
    problems.sort_by(|a, b| (a.kind, &a.path).cmp(&(b.kind, &b.path)));
    let run = NewIntegrityRun {
        dataset: dataset.id,
        started_at,
        verify_hashes: options.verify_hashes,
        counts,
        problems: problems.clone(),
    };
    let run_id = catalog.record_integrity_run(&run).await.map_err(Error::catalog("recording the run"))?;
    tracing::info!(
        dataset = %dataset.name,
        namespace = %dataset.namespace,
        run = run_id,
        files = counts.files_checked,
        missing = counts.missing_files,
        size_mismatch = counts.size_mismatch_files,
        hash_mismatch = counts.hash_mismatch_files,
        manifest_problems = counts.manifest_problems,
        orphans = counts.orphan_files,
        clean = counts.is_clean(),
        "integrity run finished"
    );
    let report =
        IntegrityReport { run_id, namespace: dataset.namespace.clone(), name: dataset.name.clone(), counts, problems };
    crate::runs::record(catalog, crate::runs::integrity(dataset.id, &report)).await;
    Ok(report)
}

/// One committed file: present, of its size, and (when asked) of its hash.
async fn check_file(
    store: &dyn ObjectStore,
    file: &FileRecord,
    verify_hashes: bool,
    scratch: &std::path::Path,
) -> Result<Option<IntegrityProblem>> {
    let problem = |kind, detail: String| Ok(Some(IntegrityProblem { kind, path: file.path.clone(), detail }));
    let meta = match store.head(&file.path).await {
        Ok(meta) => meta,
        Err(duckmesh_storage::Error::NotFound { .. }) => {
            return problem(ProblemKind::MissingFile, "not in the bucket".into());
        }
        Err(error) => return Err(Error::storage("checking a file")(error)),
    };
    if i64::try_from(meta.size).ok() != Some(file.bytes) {
        return problem(
            ProblemKind::SizeMismatch,
            format!("{} bytes in the bucket, {} in the catalog", meta.size, file.bytes),
        );
    }
    if !verify_hashes {
        return Ok(None);
    }
    let local = scratch.join(&file.sha256);
    match store.get_to_file(&file.path, &local).await {
        Ok(_) => {}
        Err(duckmesh_storage::Error::NotFound { .. }) => {
            return problem(ProblemKind::MissingFile, "deleted while being checked".into());
        }
        Err(error) => return Err(Error::storage("downloading a file to hash it")(error)),
    }
    let hashed = duckmesh_storage::hash_file(&local).await.map_err(Error::storage("hashing a file"));
    let _ = std::fs::remove_file(&local);
    let (_, sha256) = hashed?;
    if sha256 != file.sha256 {
        return problem(
            ProblemKind::HashMismatch,
            format!("SHA-256 {sha256} in the bucket, {} in the catalog", file.sha256),
        );
    }
    Ok(None)
}

/// One snapshot's manifest against the files the catalog says it added.
async fn check_manifest(
    store: &dyn ObjectStore,
    dataset: &DatasetRecord,
    manifest: &SnapshotManifest,
) -> Result<Option<IntegrityProblem>> {
    let snapshot = manifest.snapshot.id;
    let problem = |detail: String| {
        Ok(Some(IntegrityProblem { kind: ProblemKind::Manifest, path: manifest.manifest_path.clone(), detail }))
    };
    let bytes = match store.get(&manifest.manifest_path).await {
        Ok(bytes) => bytes,
        Err(duckmesh_storage::Error::NotFound { .. }) => {
            return problem(format!("the manifest of snapshot {snapshot} is not in the bucket"));
        }
        Err(error) => return Err(Error::storage("reading a manifest")(error)),
    };
    let read = match AnyManifest::parse(&bytes) {
        Ok(read) => read,
        Err(error) => return problem(format!("snapshot {snapshot}: {error}")),
    };
    if read.dataset().id != dataset.id.0 {
        return problem(format!(
            "snapshot {snapshot}: the manifest is of dataset {} ({}/{}), not {}",
            read.dataset().id,
            read.dataset().namespace,
            read.dataset().name,
            dataset.id.0
        ));
    }
    let listed: BTreeMap<&str, (i64, i64, &str)> =
        read.files().iter().map(|f| (f.path.as_str(), (f.bytes, f.rows, f.sha256.as_str()))).collect();
    let added: BTreeMap<&str, (i64, i64, &str)> =
        manifest.added.iter().map(|f| (f.path.as_str(), (f.bytes, f.rows, f.sha256.as_str()))).collect();
    if listed == added {
        return Ok(None);
    }
    let only_manifest: Vec<&str> = listed.keys().filter(|path| !added.contains_key(*path)).copied().collect();
    let only_catalog: Vec<&str> = added.keys().filter(|path| !listed.contains_key(*path)).copied().collect();
    let differing: Vec<&str> = listed
        .iter()
        .filter(|(path, entry)| added.get(*path).is_some_and(|other| other != *entry))
        .map(|(p, _)| *p)
        .collect();
    problem(format!(
        "snapshot {snapshot}: the manifest disagrees with the catalog (only in the manifest: {only_manifest:?}; only in \
         the catalog: {only_catalog:?}; size, rows or hash differ: {differing:?})"
    ))
}

/// Objects under the dataset's prefix that the catalog does not reference, past the grace.
async fn orphans(
    catalog: &Catalog,
    store: &dyn ObjectStore,
    dataset: &DatasetRecord,
    grace: Duration,
) -> Result<Vec<IntegrityProblem>> {
    // Listed before the references are read: an object committed in between is then referenced.
    let objects = store.list(&format!("{}/", dataset.name)).await.map_err(Error::storage("listing the bucket"))?;
    let referenced = catalog.referenced_keys(&dataset.name).await.map_err(Error::catalog("listing references"))?;
    let cutoff = SystemTime::now().checked_sub(grace);
    Ok(objects
        .into_iter()
        .filter(|object| !referenced.contains(&object.key))
        .filter(|object| match (object.last_modified, cutoff) {
            (Some(modified), Some(cutoff)) => modified <= cutoff,
            // Without a modification time, only a zero grace reports it.
            _ => grace.is_zero(),
        })
        .map(|object| IntegrityProblem {
            kind: ProblemKind::Orphan,
            detail: format!("{} bytes that no snapshot or manifest references", object.size),
            path: object.key,
        })
        .collect())
}

/// The task kind [`IntegrityRunner`] runs.
pub const INTEGRITY_KIND: &str = "integrity";

pub use duckmesh_contracts::task::IntegritySpec;

/// Runs leased attempts of `integrity` tasks: the task names its dataset as its output; the
/// attempt records a run and succeeds without a snapshot, whatever the run found (what it found
/// is the run's result, not the task's failure).
#[derive(Clone)]
pub struct IntegrityRunner {
    catalog: Catalog,
    store: std::sync::Arc<dyn ObjectStore>,
    heartbeat: Duration,
    runner: Option<String>,
}

impl IntegrityRunner {
    /// A runner that heartbeats every `heartbeat`.
    pub fn new(
        catalog: Catalog,
        store: std::sync::Arc<dyn ObjectStore>,
        heartbeat: Duration,
        runner: Option<String>,
    ) -> Self {
        Self { catalog, store, heartbeat, runner }
    }

    /// Runs one leased attempt of an `integrity` task to the end.
    pub async fn run(&self, attempt: duckmesh_catalog::AttemptRef) -> Result<IntegrityReport> {
        let lease = crate::attempt::Leased {
            catalog: &self.catalog,
            attempt,
            runner: self.runner.as_deref(),
            heartbeat: self.heartbeat,
        };
        let result = lease.run(|stop| self.check(attempt, stop)).await;
        if let Err(error) = &result
            && !error.is_fenced()
        {
            let dataset = crate::runs::dataset_of(&self.catalog, attempt).await;
            crate::runs::record_failure(&self.catalog, INTEGRITY_KIND, dataset, error).await;
        }
        result
    }

    async fn check(
        &self,
        attempt: duckmesh_catalog::AttemptRef,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<IntegrityReport> {
        let crate::attempt::Maintained { task, dataset, .. } =
            crate::attempt::Maintained::read(&self.catalog, attempt, INTEGRITY_KIND, "check").await?;
        let spec = IntegritySpec::parse(&task.spec).map_err(Error::spec)?;
        let options = IntegrityOptions { verify_hashes: spec.verify_hashes, ..IntegrityOptions::default() };
        let report = check_dataset(&self.catalog, self.store.as_ref(), &dataset, &options).await?;
        crate::attempt::check_stop(&stop)?;
        self.catalog.complete_unchanged(attempt, dataset.id).await.map_err(Error::catalog("completing the attempt"))?;
        Ok(report)
    }
}
