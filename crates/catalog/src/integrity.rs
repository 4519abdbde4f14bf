//! What the integrity check needs from the catalog, and where its results are kept: the files
//! retained snapshots reference, the files each manifest-bearing snapshot added, every key the
//! catalog references under a dataset name's prefix (to tell orphans), and the runs themselves
//! (`integrity_runs`, latest first).

use crate::model::{FileRecord, Snapshot};
use crate::reads::{SNAPSHOT_COLUMNS, file_from_row, snapshot_from_row};
use crate::{Catalog, Result};
use chrono::{DateTime, Utc};
use duckmesh_core::{DatasetId, TaskId};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use std::collections::HashSet;

/// Runs kept per dataset; older ones are pruned when a run is recorded.
pub const INTEGRITY_RUNS_KEPT: i64 = 20;

/// The most problems stored with a run (the counts cover them all).
pub const INTEGRITY_PROBLEMS_KEPT: usize = 100;

/// What kind of problem an integrity run found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A file a retained snapshot references is not in the bucket.
    MissingFile,
    /// A file's size in the bucket differs from the catalog's.
    SizeMismatch,
    /// A file's SHA-256 differs from the catalog's (`--verify-hashes`).
    HashMismatch,
    /// A snapshot's manifest is missing, unreadable, or disagrees with the catalog.
    Manifest,
    /// An object under the dataset's prefix that nothing in the catalog references.
    Orphan,
}

impl ProblemKind {
    /// The stable name used in the API, logs and CLI output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingFile => "missing_file",
            Self::SizeMismatch => "size_mismatch",
            Self::HashMismatch => "hash_mismatch",
            Self::Manifest => "manifest",
            Self::Orphan => "orphan",
        }
    }
}

/// One problem: which object, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityProblem {
    /// The kind.
    pub kind: ProblemKind,
    /// The object key.
    pub path: String,
    /// What was expected and what was found.
    pub detail: String,
}

/// The counts of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IntegrityCounts {
    /// Snapshots whose manifests were compared.
    pub snapshots_checked: i64,
    /// Committed files checked.
    pub files_checked: i64,
    /// Their bytes, by the catalog.
    pub bytes_checked: i64,
    /// Files missing from the bucket.
    pub missing_files: i64,
    /// Files of the wrong size.
    pub size_mismatch_files: i64,
    /// Files with the wrong SHA-256.
    pub hash_mismatch_files: i64,
    /// Manifests missing, unreadable or disagreeing with the catalog.
    pub manifest_problems: i64,
    /// Unreferenced objects under the dataset's prefix.
    pub orphan_files: i64,
}

impl IntegrityCounts {
    /// Whether the committed data is intact: nothing missing, mismatched or misdescribed.
    /// Orphans do not count against it (they are garbage for GC, not damage).
    pub fn is_clean(&self) -> bool {
        self.missing_files == 0
            && self.size_mismatch_files == 0
            && self.hash_mismatch_files == 0
            && self.manifest_problems == 0
    }
}

/// A finished run, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityRun {
    /// Catalog id (increasing).
    pub id: i64,
    /// The dataset checked.
    pub dataset: DatasetId,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its tenant.
    pub tenant: String,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// When it was recorded.
    pub finished_at: DateTime<Utc>,
    /// Whether file contents were hashed.
    pub verify_hashes: bool,
    /// The counts.
    pub counts: IntegrityCounts,
    /// The first problems found, by kind then path.
    pub problems: Vec<IntegrityProblem>,
}

/// A run to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIntegrityRun {
    /// The dataset checked.
    pub dataset: DatasetId,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// Whether file contents were hashed.
    pub verify_hashes: bool,
    /// The counts.
    pub counts: IntegrityCounts,
    /// The problems found (only the first [`INTEGRITY_PROBLEMS_KEPT`] are stored).
    pub problems: Vec<IntegrityProblem>,
}

/// A snapshot that names a manifest, with the files it added.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotManifest {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// The manifest's key.
    pub manifest_path: String,
    /// The files the snapshot added, by path.
    pub added: Vec<FileRecord>,
}

const RUN_COLUMNS: &str = "r.id, r.dataset_id, d.namespace, d.name, d.tenant, r.started_at, r.finished_at, \
    r.verify_hashes, r.snapshots_checked, r.files_checked, r.bytes_checked, r.missing_files, r.size_mismatch_files, \
    r.hash_mismatch_files, r.manifest_problems, r.orphan_files, r.problems";

impl Catalog {
    /// Every file a retained (unexpired) snapshot of `dataset` references (a file belongs to the
    /// snapshots from the one that added it up to the one that removed it), by path.
    pub async fn retained_files(&self, dataset: DatasetId) -> Result<Vec<FileRecord>> {
        let rows = sqlx::query(
            "SELECT f.path, f.bytes, f.rows, f.sha256, f.partition, f.added_in FROM files f \
             WHERE f.dataset_id = $1 AND EXISTS (SELECT 1 FROM snapshots s WHERE s.dataset_id = f.dataset_id \
               AND s.expired_at IS NULL AND s.id >= f.added_in AND (f.removed_in IS NULL OR s.id < f.removed_in)) \
             ORDER BY f.path",
        )
        .bind(dataset.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(file_from_row).collect()
    }

    /// The retained snapshots of `dataset` that name a manifest, oldest first, each with the
    /// files it added.
    pub async fn snapshot_manifests(&self, dataset: DatasetId) -> Result<Vec<SnapshotManifest>> {
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE dataset_id = $1 AND manifest_path IS NOT NULL \
             AND expired_at IS NULL ORDER BY id"
        );
        let rows = sqlx::query(&sql).bind(dataset.0).fetch_all(&self.pool).await?;
        let snapshots: Vec<Snapshot> = rows.iter().map(snapshot_from_row).collect::<Result<_>>()?;
        let rows = sqlx::query(
            "SELECT path, bytes, rows, sha256, partition, added_in FROM files WHERE dataset_id = $1 ORDER BY path",
        )
        .bind(dataset.0)
        .fetch_all(&self.pool)
        .await?;
        let files: Vec<FileRecord> = rows.iter().map(file_from_row).collect::<Result<_>>()?;
        let mut manifests = Vec::new();
        for snapshot in snapshots {
            let Some(manifest_path) = snapshot.manifest_path.clone() else { continue };
            let added = files.iter().filter(|file| file.added_in == snapshot.id).cloned().collect();
            manifests.push(SnapshotManifest { snapshot, manifest_path, added });
        }
        Ok(manifests)
    }

    /// Every key the catalog references under the prefix of datasets named `name` — their files
    /// and their snapshots' manifests, in every namespace and incarnation (object keys start with
    /// the dataset's name only, so datasets of one name share a prefix).
    pub async fn referenced_keys(&self, name: &str) -> Result<HashSet<String>> {
        let rows = sqlx::query(
            "SELECT f.path AS key FROM files f JOIN datasets d ON d.id = f.dataset_id WHERE d.name = $1 \
             UNION SELECT s.manifest_path FROM snapshots s JOIN datasets d ON d.id = s.dataset_id \
             WHERE d.name = $1 AND s.manifest_path IS NOT NULL",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok(row.try_get::<String, _>("key")?)).collect()
    }

    /// The attempts still running or leased, as `(task, attempt number)`: their staging objects
    /// may be committed at any moment, whatever their age. An attempt missing from this list has
    /// committed (its files are then among [`Catalog::referenced_keys`], read afterwards) or can
    /// never commit: fencing refuses it.
    pub async fn live_attempts(&self) -> Result<Vec<(TaskId, u32)>> {
        let rows: Vec<(i64, i32)> =
            sqlx::query_as("SELECT task_id, n FROM attempts WHERE state IN ('Leased', 'Running')")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(task, n)| (TaskId(task), u32::try_from(n).unwrap_or_default())).collect())
    }

    /// Records a finished run and prunes the dataset's runs beyond the latest
    /// [`INTEGRITY_RUNS_KEPT`]. Returns the run's id.
    pub async fn record_integrity_run(&self, run: &NewIntegrityRun) -> Result<i64> {
        let mut problems = run.problems.clone();
        problems.sort_by(|a, b| (a.kind, &a.path).cmp(&(b.kind, &b.path)));
        problems.truncate(INTEGRITY_PROBLEMS_KEPT);
        let counts = &run.counts;
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO integrity_runs (dataset_id, started_at, verify_hashes, snapshots_checked, files_checked, \
               bytes_checked, missing_files, size_mismatch_files, hash_mismatch_files, manifest_problems, \
               orphan_files, problems) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
        )
        .bind(run.dataset.0)
        .bind(run.started_at)
        .bind(run.verify_hashes)
        .bind(counts.snapshots_checked)
        .bind(counts.files_checked)
        .bind(counts.bytes_checked)
        .bind(counts.missing_files)
        .bind(counts.size_mismatch_files)
        .bind(counts.hash_mismatch_files)
        .bind(counts.manifest_problems)
        .bind(counts.orphan_files)
        .bind(Json(&problems))
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM integrity_runs WHERE dataset_id = $1 AND id NOT IN \
             (SELECT id FROM integrity_runs WHERE dataset_id = $1 ORDER BY id DESC LIMIT $2)",
        )
        .bind(run.dataset.0)
        .bind(INTEGRITY_RUNS_KEPT)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The latest run of every live dataset of `tenant` in `namespace` that has one, by
    /// dataset name.
    pub async fn latest_integrity_runs(&self, tenant: &str, namespace: &str) -> Result<Vec<IntegrityRun>> {
        let sql = format!(
            "SELECT DISTINCT ON (d.name) {RUN_COLUMNS} FROM integrity_runs r JOIN datasets d ON d.id = r.dataset_id \
             WHERE d.tenant = $1 AND d.namespace = $2 ORDER BY d.name, r.id DESC"
        );
        let rows = sqlx::query(&sql).bind(tenant).bind(namespace).fetch_all(&self.pool).await?;
        rows.iter().map(run_from_row).collect()
    }

    /// Runs with an id above `after`, oldest first, at most `limit` (for whoever turns new runs
    /// into metrics).
    pub async fn integrity_runs_after(&self, after: i64, limit: i64) -> Result<Vec<IntegrityRun>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM integrity_runs r JOIN datasets d ON d.id = r.dataset_id \
             WHERE r.id > $1 ORDER BY r.id LIMIT $2"
        );
        let rows = sqlx::query(&sql).bind(after).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(run_from_row).collect()
    }
}

fn run_from_row(row: &PgRow) -> Result<IntegrityRun> {
    let Json(problems): Json<Vec<IntegrityProblem>> = row.try_get("problems")?;
    Ok(IntegrityRun {
        id: row.try_get("id")?,
        dataset: DatasetId(row.try_get("dataset_id")?),
        namespace: row.try_get("namespace")?,
        name: row.try_get("name")?,
        tenant: row.try_get("tenant")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        verify_hashes: row.try_get("verify_hashes")?,
        counts: IntegrityCounts {
            snapshots_checked: row.try_get("snapshots_checked")?,
            files_checked: row.try_get("files_checked")?,
            bytes_checked: row.try_get("bytes_checked")?,
            missing_files: row.try_get("missing_files")?,
            size_mismatch_files: row.try_get("size_mismatch_files")?,
            hash_mismatch_files: row.try_get("hash_mismatch_files")?,
            manifest_problems: row.try_get("manifest_problems")?,
            orphan_files: row.try_get("orphan_files")?,
        },
        problems,
    })
}
