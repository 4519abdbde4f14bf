//! Reference-aware garbage collection of one dataset (SPEC §2.6), as a leased `gc` task or
//! from the CLI:
//!
//! 1. **Expire** the snapshots the Dataset's `retention` no longer keeps: beyond the newest
//!    `keepSnapshots` (default 100) *and* committed more than `maxAgeDays` ago (default 7).
//!    Expired snapshots can no longer be read.
//! 2. **Delete the files no retained snapshot references**, once every snapshot that referenced
//!    them expired more than the grace period ago (default 1 hour, longer than any query may
//!    run), so a query that pinned a snapshot before it expired finishes reading. The object
//!    goes first, then the catalog row (a crash in between leaves a row GC deletes next time).
//! 3. **Forget expired snapshots** that hold no files any more, with their manifests.
//! 4. **Delete uncommitted staging**: objects under the dataset's prefix that nothing in the
//!    catalog references, older than 7 days (attempts that never committed, abandoned batches),
//!    never those of an attempt still leased or running, which may yet commit them.
//!
//! Before anything is deleted, a **checkpoint** of the oldest retained snapshot is written to
//! the bucket and the commit records it supersedes are deleted ([`crate::checkpoint`]), so a
//! catalog rebuild never needs a file GC deleted. After the dataset, the query API's result
//! exports of the dataset's tenant (`_query-exports/<tenant>/`) older than 7 days are deleted
//! ([`collect_exports`]); the `export` kind's output (`_exports/`) is the user's and is kept.
//!
//! `dry_run` changes nothing and lists what would go.

use crate::attempt::{Leased, Maintained, check_stop};
use crate::error::{Error, Result};
use duckmesh_catalog::{AttemptRef, Catalog, DatasetRecord};
pub use duckmesh_contracts::task::{GcSpec, MAX_GC_GRACE_SECONDS};
use duckmesh_core::SnapshotId;
use duckmesh_storage::{ObjectStore, layout};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// The task kind this module runs.
pub const GC_KIND: &str = "gc";

/// Default `retention.keepSnapshots`.
pub const DEFAULT_KEEP_SNAPSHOTS: u32 = 100;
/// Default `retention.maxAgeDays`.
pub const DEFAULT_MAX_AGE_DAYS: u32 = 7;
/// Uncommitted staging and query exports are kept this long (SPEC §3).
pub const STAGING_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default grace between a snapshot's expiry and the deletion of its files.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
/// Where the query API writes result exports (`<root>/<tenant>/<query id>.parquet`).
pub const QUERY_EXPORTS_ROOT: &str = "_query-exports";

/// How to collect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcOptions {
    /// List what would go; change nothing.
    pub dry_run: bool,
    /// Time between a snapshot's expiry and the deletion of the files only it referenced.
    pub grace: Duration,
    /// Age past which unreferenced staging objects are deleted.
    pub staging_retention: Duration,
    /// Age past which the query API's result exports are deleted.
    pub export_retention: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            grace: DEFAULT_GRACE,
            staging_retention: STAGING_RETENTION,
            export_retention: STAGING_RETENTION,
        }
    }
}

/// A Dataset's `retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep at least this many most recent snapshots.
    #[serde(default = "default_keep")]
    pub keep_snapshots: u32,
    /// Also keep every snapshot younger than this many days.
    #[serde(default = "default_age")]
    pub max_age_days: u32,
}

fn default_keep() -> u32 {
    DEFAULT_KEEP_SNAPSHOTS
}

fn default_age() -> u32 {
    DEFAULT_MAX_AGE_DAYS
}

impl Default for Retention {
    fn default() -> Self {
        Self { keep_snapshots: DEFAULT_KEEP_SNAPSHOTS, max_age_days: DEFAULT_MAX_AGE_DAYS }
    }
}

impl Retention {
    /// The retention of a Dataset's spec (defaults where it sets none).
    pub fn of(dataset: &DatasetRecord) -> Result<Self> {
        match dataset.spec.get("retention") {
            None | Some(serde_json::Value::Null) => Ok(Self::default()),
            Some(value) => serde_json::from_value(value.clone()).map_err(|error| Error::InvalidSpec {
                message: format!("dataset {:?} has an unusable retention: {error}", dataset.name),
            }),
        }
    }
}

/// What a collection did (or, dry, would do).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GcReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Snapshots expired.
    pub expired_snapshots: Vec<i64>,
    /// Data files deleted (no retained snapshot referenced them).
    pub files: Vec<String>,
    /// Manifests of forgotten snapshots deleted.
    pub manifests: Vec<String>,
    /// Unreferenced staging objects deleted.
    pub staging: Vec<String>,
    /// The checkpoint written before anything was deleted (`None`: none needed).
    pub checkpoint: Option<String>,
    /// Commit records and checkpoints the new checkpoint superseded, deleted.
    pub records: Vec<String>,
    /// Query result exports of the dataset's tenant past their retention, deleted.
    pub exports: Vec<String>,
    /// Bytes of the deleted data files and staging objects.
    pub bytes: u64,
}

/// Collects `dataset` (see the module docs). `stop` is checked before every deletion.
pub async fn collect_dataset(
    catalog: &Catalog,
    store: &dyn ObjectStore,
    dataset: &DatasetRecord,
    options: &GcOptions,
    stop: &CancellationToken,
) -> Result<GcReport> {
    let retention = Retention::of(dataset)?;
    let max_age = Duration::from_secs(u64::from(retention.max_age_days) * 24 * 3600);
    let expired = catalog
        .expire_snapshots(dataset.id, retention.keep_snapshots, max_age, options.dry_run)
        .await
        .map_err(Error::catalog("expiring snapshots"))?;
    let mut report = GcReport {
        dry_run: options.dry_run,
        expired_snapshots: expired.iter().map(|id| id.0).collect(),
        ..GcReport::default()
    };
    check_stop(stop)?;
    let checkpoint =
        crate::checkpoint::checkpoint_dataset(catalog, store, dataset, &report.expired_snapshots, options.dry_run)
            .await?;
    report.checkpoint = checkpoint.checkpoint;
    report.records = checkpoint.deleted;

    // A dry run expired nothing: it counts the snapshots it would expire as expiring now, so
    // it lists what a real run would delete (with a grace of 0, their files and manifests too).
    let expiring: &[SnapshotId] = if options.dry_run { &expired } else { &[] };
    let files = catalog
        .collectable_files(dataset.id, options.grace, expiring)
        .await
        .map_err(Error::catalog("finding files"))?;
    for file in &files {
        check_stop(stop)?;
        if !options.dry_run {
            delete(store, &file.path).await?;
        }
        report.files.push(file.path.clone());
        report.bytes += u64::try_from(file.bytes).unwrap_or_default();
    }
    if !options.dry_run && !report.files.is_empty() {
        catalog
            .forget_files(dataset.id, &report.files, options.grace)
            .await
            .map_err(Error::catalog("forgetting files"))?;
    }

    let snapshots = catalog
        .collectable_snapshots(dataset.id, options.grace, options.dry_run.then_some(expiring))
        .await
        .map_err(Error::catalog("finding snapshots"))?;
    for snapshot in &snapshots {
        check_stop(stop)?;
        if let Some(manifest) = &snapshot.manifest_path {
            if !options.dry_run {
                delete(store, manifest).await?;
            }
            report.manifests.push(manifest.clone());
        }
    }
    if !options.dry_run && !snapshots.is_empty() {
        let ids: Vec<_> = snapshots.iter().map(|snapshot| snapshot.id).collect();
        catalog.forget_snapshots(dataset.id, &ids).await.map_err(Error::catalog("forgetting snapshots"))?;
    }

    // In this order: the listing, then the live attempts, then the references. An object listed
    // belongs to an attempt that was live when the attempts were read (kept, however old: it
    // may commit yet), or had committed by then (referenced), or can never commit (garbage).
    let objects = store.list(&format!("{}/", dataset.name)).await.map_err(Error::storage("listing staging"))?;
    let live: Vec<String> = catalog
        .live_attempts()
        .await
        .map_err(Error::catalog("listing live attempts"))?
        .into_iter()
        .filter_map(|(task, number)| layout::attempt_prefix(&dataset.name, &task.to_string(), number).ok())
        .collect();
    let referenced = catalog.referenced_keys(&dataset.name).await.map_err(Error::catalog("listing references"))?;
    let cutoff = SystemTime::now().checked_sub(options.staging_retention);
    for object in objects {
        let old = matches!((object.last_modified, cutoff), (Some(modified), Some(cutoff)) if modified <= cutoff);
        if !old
            || referenced.contains(&object.key)
            || report.manifests.contains(&object.key)
            || live.iter().any(|prefix| object.key.starts_with(prefix.as_str()))
        {
            continue;
        }
        check_stop(stop)?;
        if !options.dry_run {
            delete(store, &object.key).await?;
        }
        report.bytes += object.size;
        report.staging.push(object.key);
    }
    check_stop(stop)?;
    let exports = format!("{QUERY_EXPORTS_ROOT}/{}/", dataset.tenant);
    report.exports = collect_exports(store, &exports, options.export_retention, options.dry_run).await?;
    tracing::info!(
        dataset = %dataset.name,
        namespace = %dataset.namespace,
        dry_run = options.dry_run,
        expired = report.expired_snapshots.len(),
        files = report.files.len(),
        manifests = report.manifests.len(),
        staging = report.staging.len(),
        records = report.records.len(),
        exports = report.exports.len(),
        bytes = report.bytes,
        "garbage collection finished"
    );
    Ok(report)
}

/// Deletes query-result exports under `prefix` older than `retention`; returns their keys.
pub async fn collect_exports(
    store: &dyn ObjectStore,
    prefix: &str,
    retention: Duration,
    dry_run: bool,
) -> Result<Vec<String>> {
    let prefix = if prefix.ends_with('/') { prefix.to_owned() } else { format!("{prefix}/") };
    let cutoff = SystemTime::now().checked_sub(retention);
    let mut deleted = Vec::new();
    for object in store.list(&prefix).await.map_err(Error::storage("listing exports"))? {
        if matches!((object.last_modified, cutoff), (Some(modified), Some(cutoff)) if modified <= cutoff) {
            if !dry_run {
                delete(store, &object.key).await?;
            }
            deleted.push(object.key);
        }
    }
    Ok(deleted)
}

/// Deletes one object; one already gone is fine.
pub(crate) async fn delete(store: &dyn ObjectStore, key: &str) -> Result<()> {
    match store.delete(key).await {
        Ok(()) | Err(duckmesh_storage::Error::NotFound { .. }) => Ok(()),
        Err(error) => Err(Error::storage("deleting an object")(error)),
    }
}

/// Runs leased attempts of `gc` tasks: the task names its dataset as its output and carries
/// its settings as a [`GcSpec`] (`dryRun`, `graceSeconds`), which take precedence over the
/// runner's options; the attempt succeeds without a snapshot. A dry run is not recorded as a
/// maintenance run.
#[derive(Clone)]
pub struct GcRunner {
    catalog: Catalog,
    store: Arc<dyn ObjectStore>,
    heartbeat: Duration,
    runner: Option<String>,
    options: GcOptions,
}

impl GcRunner {
    /// A runner that collects with `options` (unless a task's spec sets them) and heartbeats
    /// every `heartbeat`.
    pub fn new(
        catalog: Catalog,
        store: Arc<dyn ObjectStore>,
        heartbeat: Duration,
        runner: Option<String>,
        options: GcOptions,
    ) -> Self {
        Self { catalog, store, heartbeat, runner, options }
    }

    /// Runs one leased attempt of a `gc` task to the end.
    pub async fn run(&self, attempt: AttemptRef) -> Result<GcReport> {
        let lease =
            Leased { catalog: &self.catalog, attempt, runner: self.runner.as_deref(), heartbeat: self.heartbeat };
        let result = lease.run(|stop| self.collect(attempt, stop)).await;
        let dataset = crate::runs::dataset_of(&self.catalog, attempt).await;
        match &result {
            Ok(report) if report.dry_run => {}
            Ok(report) => crate::runs::record(&self.catalog, crate::runs::gc(dataset, report)).await,
            Err(error) if !error.is_fenced() => {
                crate::runs::record_failure(&self.catalog, GC_KIND, dataset, error).await
            }
            Err(_) => {}
        }
        result
    }

    async fn collect(&self, attempt: AttemptRef, stop: CancellationToken) -> Result<GcReport> {
        let Maintained { task, dataset, .. } = Maintained::read(&self.catalog, attempt, GC_KIND, "collect").await?;
        let options = self.options_for(&task.spec)?;
        let report = collect_dataset(&self.catalog, self.store.as_ref(), &dataset, &options, &stop).await?;
        check_stop(&stop)?;
        self.catalog.complete_unchanged(attempt, dataset.id).await.map_err(Error::catalog("completing the attempt"))?;
        Ok(report)
    }

    /// The runner's options with a task's settings applied (`invalid_task_spec` when they are
    /// not usable).
    fn options_for(&self, spec: &serde_json::Value) -> Result<GcOptions> {
        let spec = GcSpec::parse(spec).map_err(Error::spec)?;
        Ok(GcOptions {
            dry_run: self.options.dry_run || spec.dry_run,
            grace: spec.grace_seconds.map_or(self.options.grace, Duration::from_secs),
            ..self.options.clone()
        })
    }
}
