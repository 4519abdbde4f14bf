//! Catalog rebuild from the bucket (`duckmesh catalog rebuild`), the last resort when the
//! catalog is lost and there is no backup (docs/maintenance.md, "Catalog rebuild").
//!
//! Per dataset found under `_catalog/<namespace>/<dataset>/`:
//!
//! 1. Start from the newest **checkpoint** (written by GC before it deleted anything): the
//!    oldest retained snapshot with every file live in it, and the expired snapshots that added
//!    those files. Without one, start from nothing: the first commit record must then be
//!    snapshot 1.
//! 2. Replay the **commit records** after it in snapshot order (each must be the parent's
//!    successor; a missing one is a [`RebuildFailure::Gap`]), reading each commit's manifest:
//!    an `overwrite` retires every live file, a `compact` retires the files its manifest
//!    `replaces`, and the manifest's files are added. Each replayed snapshot's file, row and
//!    byte counts and added and removed files must equal its record's
//!    ([`RebuildFailure::Mismatch`]); a missing manifest is [`RebuildFailure::ManifestMissing`].
//! 3. Restore everything in one catalog transaction ([`Catalog::restore_datasets`]): same
//!    dataset ids, snapshot ids, parents, visibility tokens, kinds and commit times; files
//!    with the snapshots that added and retired them; `fence_seq` past every fence restored
//!    and every fence that names an ingest batch's directory in the bucket
//!    (`<dataset>/ingest/<fence>/`): a batch committed after the recovery point, or never,
//!    keeps its objects, and no new batch is written over them.
//!
//! Commit records are written by the outbox dispatcher shortly *after* each commit; a commit
//! whose record was not written yet is not restored (the rebuild's recovery point). The report
//! lists, as **unconfirmed**, every manifest newer than the dataset's starting point that no
//! record names: such a commit, or an attempt that never committed — the bucket cannot tell.

use crate::error::{Error, RebuildFailure, Result};
use duckmesh_catalog::{Catalog, RestoreSummary, RestoredDataset};
use duckmesh_contracts::catalog_record::{Checkpoint, CommitRecord, RecordedFile, RecordedSnapshot};
use duckmesh_contracts::manifest::AnyManifest;
use duckmesh_storage::{ObjectMeta, ObjectStore, layout};
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;

/// How to rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildOptions {
    /// Read and verify everything, restore nothing.
    pub dry_run: bool,
    /// Objects read at once.
    pub concurrency: usize,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        Self { dry_run: false, concurrency: 16 }
    }
}

/// Progress of a rebuild, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildProgress {
    /// The records to read are known.
    Records {
        /// Commit records and checkpoints to read.
        total: u64,
    },
    /// One more record (and its manifest) was read.
    RecordRead,
}

/// One dataset's rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRebuild {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The checkpoint it started from.
    pub checkpoint: Option<i64>,
    /// Snapshots restored (expired anchors included).
    pub snapshots: usize,
    /// Files restored (retired ones included).
    pub files: usize,
    /// The current snapshot.
    pub current: i64,
    /// Its visibility token.
    pub visibility_token: i64,
    /// Rows in the current snapshot.
    pub rows: i64,
    /// Records of other incarnations of the name (a dataset deleted and created again), ignored.
    pub ignored_records: usize,
}

/// A manifest no commit record names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unconfirmed {
    /// Its key.
    pub key: String,
    /// When it was written.
    pub last_modified: Option<SystemTime>,
}

/// What a rebuild restored (or, dry, would restore).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RebuildReport {
    /// Nothing was written.
    pub dry_run: bool,
    /// The datasets, by namespace and name.
    pub datasets: Vec<DatasetRebuild>,
    /// Manifests newer than their dataset's starting point with no commit record (not
    /// restored), by key.
    pub unconfirmed: Vec<Unconfirmed>,
    /// What the catalog transaction wrote (`None` when dry).
    pub restored: Option<RestoreSummary>,
    /// The fencing sequence's value afterwards (`None` when dry).
    pub fence_seq: Option<i64>,
    /// The highest fence naming an ingest batch's directory in the bucket
    /// (`<dataset>/ingest/<fence>/`), restored or not; `fence_seq` is moved past it too.
    pub ingest_fence: Option<i64>,
}

/// The records of one dataset found in the bucket.
#[derive(Default)]
struct Found {
    checkpoints: Vec<(i64, String)>,
    records: Vec<(i64, String)>,
}

/// Rebuilds the catalog from `store` into `catalog`, which must hold no dataset (else
/// `catalog_not_empty`, before anything is read; a dry run does not care).
pub async fn rebuild_catalog(
    catalog: &Catalog,
    store: &dyn ObjectStore,
    options: &RebuildOptions,
    progress: &(dyn Fn(RebuildProgress) + Sync),
) -> Result<RebuildReport> {
    if !options.dry_run {
        let existing = catalog.dataset_count().await.map_err(Error::catalog("counting datasets"))?;
        if existing > 0 {
            return Err(Error::catalog("checking the catalog is empty")(duckmesh_catalog::Error::NotEmpty {
                datasets: existing,
            }));
        }
    }
    let listed = store.list(layout::CATALOG_ROOT).await.map_err(Error::storage("listing _catalog/"))?;
    let mut found: BTreeMap<(String, String), Found> = BTreeMap::new();
    for object in listed {
        let mut parts = object.key.split('/').skip(1);
        let (Some(namespace), Some(name), Some(kind), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Some(id) = layout::record_snapshot_id(&object.key) else { continue };
        let entry = found.entry((namespace.to_owned(), name.to_owned())).or_default();
        match kind {
            "checkpoints" => entry.checkpoints.push((id, object.key)),
            "snapshots" => entry.records.push((id, object.key)),
            _ => {}
        }
    }
    let total: usize =
        found.values().map(|found| found.records.len() + usize::from(!found.checkpoints.is_empty())).sum();
    progress(RebuildProgress::Records { total: u64::try_from(total).unwrap_or(u64::MAX) });

    let mut report = RebuildReport { dry_run: options.dry_run, ..RebuildReport::default() };
    let mut restored = Vec::new();
    let mut starts: HashMap<String, (Option<SystemTime>, HashSet<String>)> = HashMap::new();
    for ((namespace, name), found) in found {
        let label = format!("{namespace}/{name}");
        let (dataset, summary, start) = rebuild_dataset(store, &label, found, options, progress).await?;
        let confirmed = dataset.snapshots.iter().filter_map(|snapshot| snapshot.manifest_path.clone()).collect();
        let entry = starts.entry(name.clone()).or_insert((start, HashSet::new()));
        entry.0 = entry.0.min(start);
        entry.1.extend::<HashSet<String>>(confirmed);
        report.datasets.push(summary);
        restored.push(dataset);
    }
    let (unconfirmed, ingest_fence) = unconfirmed(store, &starts).await?;
    report.unconfirmed = unconfirmed;
    report.ingest_fence = ingest_fence;
    if !options.dry_run {
        let summary = catalog
            .restore_datasets(&restored, ingest_fence.unwrap_or(0))
            .await
            .map_err(Error::catalog("restoring datasets"))?;
        report.fence_seq = Some(summary.fence_seq);
        report.restored = Some(summary);
    }
    tracing::info!(
        dry_run = options.dry_run,
        datasets = report.datasets.len(),
        unconfirmed = report.unconfirmed.len(),
        "catalog rebuild finished"
    );
    Ok(report)
}

/// Reads, replays and verifies one dataset. Returns it, its summary, and the time from which
/// an unrecorded manifest is reported (its starting point's commit time; `None`: always).
async fn rebuild_dataset(
    store: &dyn ObjectStore,
    label: &str,
    found: Found,
    options: &RebuildOptions,
    progress: &(dyn Fn(RebuildProgress) + Sync),
) -> Result<(RestoredDataset, DatasetRebuild, Option<SystemTime>)> {
    let failure =
        |kind, snapshot, message: String| Error::Rebuild { kind, dataset: label.to_owned(), snapshot, message };
    let checkpoint = match found.checkpoints.iter().max() {
        Some((id, key)) => {
            let bytes = read(store, key).await?;
            progress(RebuildProgress::RecordRead);
            let checkpoint = Checkpoint::parse(&bytes)
                .map_err(|error| failure(RebuildFailure::RecordUnreadable, *id, format!("{key}: {error}")))?;
            Some(checkpoint)
        }
        None => None,
    };
    let start = checkpoint.as_ref().map_or(0, |checkpoint| checkpoint.snapshot.id);
    let reads = found.records.iter().filter(|(id, _)| *id > start).map(|(id, key)| async move {
        let bytes = read(store, key).await?;
        let record = CommitRecord::parse(&bytes)
            .map_err(|error| failure(RebuildFailure::RecordUnreadable, *id, format!("{key}: {error}")))?;
        let manifest = match &record.snapshot.manifest_path {
            Some(path) => Some(read_manifest(store, path).await.map_err(|message| {
                failure(RebuildFailure::ManifestMissing, *id, format!("manifest {path}: {message}"))
            })?),
            None => None,
        };
        progress(RebuildProgress::RecordRead);
        Ok::<_, Error>((record, manifest))
    });
    let mut records: Vec<(CommitRecord, Option<AnyManifest>)> =
        futures::stream::iter(reads).buffered(options.concurrency.max(1)).try_collect().await?;

    // The incarnation to restore: the one that committed last.
    let newest_uid = records
        .iter()
        .map(|(record, _)| (record.snapshot.committed_at, &record.dataset.uid))
        .chain(checkpoint.iter().map(|checkpoint| (checkpoint.snapshot.committed_at, &checkpoint.dataset.uid)))
        .max()
        .map(|(_, uid)| uid.clone())
        .unwrap_or_default();
    let before = records.len();
    records.retain(|(record, _)| record.dataset.uid == newest_uid);
    let ignored_records = before - records.len();
    let checkpoint = checkpoint.filter(|checkpoint| checkpoint.dataset.uid == newest_uid);

    let mut replay = Replay::default();
    let mut identity = None;
    let mut starting_point = None;
    if let Some(checkpoint) = checkpoint {
        starting_point = Some(SystemTime::from(checkpoint.snapshot.committed_at));
        replay.snapshots.extend(checkpoint.anchors);
        for file in checkpoint.files {
            replay.live.insert(file.path.clone());
            replay.files.insert(file.path.clone(), (file, None));
        }
        replay.snapshots.push(checkpoint.snapshot);
        identity = Some(checkpoint.dataset);
    }
    for (record, manifest) in records {
        replay
            .apply(&record.snapshot, manifest.as_ref(), record.dataset.id)
            .map_err(|(kind, message)| failure(kind, record.snapshot.id, message))?;
        identity = Some(record.dataset);
    }
    let (Some(identity), Some(current)) = (identity, replay.snapshots.last().cloned()) else {
        return Err(failure(RebuildFailure::RecordUnreadable, 0, "no usable record".into()));
    };
    let summary = DatasetRebuild {
        namespace: identity.namespace.clone(),
        name: identity.name.clone(),
        checkpoint: (start > 0).then_some(start),
        snapshots: replay.snapshots.len(),
        files: replay.files.len(),
        current: current.id,
        visibility_token: current.visibility_token,
        rows: current.row_count,
        ignored_records,
    };
    let mut files: Vec<(RecordedFile, Option<i64>)> = replay.files.into_values().collect();
    files.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    Ok((RestoredDataset { dataset: identity, snapshots: replay.snapshots, files }, summary, starting_point))
}

/// The state of a dataset being replayed.
#[derive(Default)]
struct Replay {
    snapshots: Vec<RecordedSnapshot>,
    /// Every file seen, with the snapshot that retired it.
    files: BTreeMap<String, (RecordedFile, Option<i64>)>,
    live: HashSet<String>,
}

impl Replay {
    /// Applies one commit, checking it follows the last snapshot and yields what its record
    /// says.
    fn apply(
        &mut self,
        snapshot: &RecordedSnapshot,
        manifest: Option<&AnyManifest>,
        dataset_id: i64,
    ) -> std::result::Result<(), (RebuildFailure, String)> {
        let previous = self.snapshots.last().map(|last| last.id);
        let expected = previous.map_or(1, |id| id + 1);
        if snapshot.id != expected || snapshot.parent != previous {
            let message = match previous {
                Some(previous) => format!(
                    "its parent is {:?} but the newest snapshot restored before it is {previous}: the commit record of snapshot {expected} is missing",
                    snapshot.parent
                ),
                None => format!(
                    "there is no checkpoint and no commit record of snapshot {expected} (its parent {:?})",
                    snapshot.parent
                ),
            };
            return Err((RebuildFailure::Gap, message));
        }
        let mismatch = |message: String| (RebuildFailure::Mismatch, message);
        let mut removed = 0_i64;
        let mut retire = |path: &str, files: &mut BTreeMap<String, (RecordedFile, Option<i64>)>| {
            if let Some((_, removed_in)) = files.get_mut(path) {
                *removed_in = Some(snapshot.id);
            }
            removed += 1;
        };
        let added: &[duckmesh_contracts::manifest::ManifestFile] = match manifest {
            Some(manifest) => {
                if manifest.dataset().id != dataset_id {
                    return Err(mismatch(format!(
                        "its manifest is of dataset id {}, the record's is {dataset_id}",
                        manifest.dataset().id
                    )));
                }
                manifest.files()
            }
            None if snapshot.added_files == 0 => &[],
            None => {
                return Err((RebuildFailure::ManifestMissing, "the record names no manifest".into()));
            }
        };
        if snapshot.kind == "overwrite" {
            for path in std::mem::take(&mut self.live) {
                retire(&path, &mut self.files);
            }
        }
        if snapshot.kind == "compact"
            && let Some(AnyManifest::Attempt(manifest)) = manifest
        {
            for path in &manifest.replaces {
                if !self.live.remove(path) {
                    return Err(mismatch(format!("the compaction replaces {path}, which is not live")));
                }
                retire(path, &mut self.files);
            }
        }
        for file in added {
            if self.files.contains_key(&file.path) {
                return Err(mismatch(format!("its manifest adds {} again", file.path)));
            }
            let recorded = RecordedFile {
                path: file.path.clone(),
                bytes: file.bytes,
                rows: file.rows,
                sha256: file.sha256.clone(),
                partition: file.partition.clone(),
                added_in: snapshot.id,
            };
            self.live.insert(file.path.clone());
            self.files.insert(file.path.clone(), (recorded, None));
        }
        let (mut rows, mut bytes) = (0_i64, 0_i64);
        for path in &self.live {
            if let Some((file, _)) = self.files.get(path) {
                rows += file.rows;
                bytes += file.bytes;
            }
        }
        let replayed = (self.live.len() as i64, rows, bytes, added.len() as i64, removed);
        let recorded = (
            snapshot.file_count,
            snapshot.row_count,
            snapshot.byte_count,
            snapshot.added_files,
            snapshot.removed_files,
        );
        if replayed != recorded {
            return Err(mismatch(format!(
                "replaying it gives (files, rows, bytes, added, removed) = {replayed:?}, its record says {recorded:?}"
            )));
        }
        let mut snapshot = snapshot.clone();
        snapshot.expired_at = None;
        self.snapshots.push(snapshot);
        Ok(())
    }
}

/// The coarsest timestamp an object store reports (S3's `Last-Modified` is in whole seconds).
const STORE_TIMESTAMP_PRECISION: std::time::Duration = std::time::Duration::from_secs(1);

/// Manifests under `<name>/attempts/` and `<name>/ingest/` that no restored snapshot names and
/// that are newer than their dataset's starting point (every dataset of the bucket; a name
/// without records at all reports all of its manifests), and the highest fence naming an
/// ingest batch's directory (`<name>/ingest/<fence>/`, whatever became of the batch).
async fn unconfirmed(
    store: &dyn ObjectStore,
    starts: &HashMap<String, (Option<SystemTime>, HashSet<String>)>,
) -> Result<(Vec<Unconfirmed>, Option<i64>)> {
    let mut found = Vec::new();
    let mut ingest_fence = None;
    for object in store.list("").await.map_err(Error::storage("listing the bucket"))? {
        let ObjectMeta { key, last_modified, .. } = object;
        let mut parts = key.split('/');
        let (Some(name), Some(area)) = (parts.next(), parts.next()) else { continue };
        if !name.starts_with('_')
            && area == "ingest"
            && let Some(fence) = parts.next().and_then(|fence| fence.parse::<i64>().ok())
        {
            ingest_fence = ingest_fence.max(Some(fence));
        }
        if name.starts_with('_') || !matches!(area, "attempts" | "ingest") || !key.ends_with(layout::MANIFEST_FILE) {
            continue;
        }
        let (start, confirmed) = starts.get(name).map_or((None, None), |(start, set)| (*start, Some(set)));
        if confirmed.is_some_and(|set| set.contains(&key)) {
            continue;
        }
        // Stores keep whole seconds (S3's `Last-Modified`): skip only a manifest certainly
        // written before the starting point, never one of the same second.
        if let (Some(start), Some(modified)) = (start, last_modified)
            && modified + STORE_TIMESTAMP_PRECISION <= start
        {
            continue;
        }
        found.push(Unconfirmed { key, last_modified });
    }
    found.sort_by(|a, b| a.key.cmp(&b.key));
    Ok((found, ingest_fence))
}

async fn read(store: &dyn ObjectStore, key: &str) -> Result<Vec<u8>> {
    Ok(store.get(key).await.map_err(Error::storage("reading a catalog record"))?.to_vec())
}

async fn read_manifest(store: &dyn ObjectStore, key: &str) -> std::result::Result<AnyManifest, String> {
    let bytes = store.get(key).await.map_err(|error| error.to_string())?;
    AnyManifest::parse(&bytes).map_err(|error| error.to_string())
}
