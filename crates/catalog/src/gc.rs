//! What reference-aware garbage collection asks of the catalog (migration 0010): expiring the
//! snapshots a retention policy no longer keeps, and finding — then forgetting — the files and
//! expired snapshots that nothing retained references any more.
//!
//! The rule (SPEC §2.6): a file may go only when no retained snapshot references it, and every
//! snapshot that did expired more than `grace` ago, so a query that pinned such a snapshot
//! before it expired has finished reading. Live files are referenced by the current snapshot,
//! which is never expired. The queries that select and the statements that forget re-check
//! the rule, so a concurrent commit or expiry cannot make them wrong.

use crate::model::FileRecord;
use crate::reads::file_from_row;
use crate::{Catalog, Result};
use duckmesh_core::{DatasetId, SnapshotId};
use sqlx::Row;
use std::time::Duration;

/// An expired snapshot that no longer holds files, ready to be forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredSnapshot {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its manifest, to delete before the row.
    pub manifest_path: Option<String>,
}

/// No retained snapshot references the file, and every snapshot that did expired before the
/// grace (`$2`, seconds). The snapshots in `$3` count as expiring now (a dry run's preview of
/// the snapshots it would expire; a real run passes none).
const UNREFERENCED: &str = "f.removed_in IS NOT NULL AND NOT EXISTS (SELECT 1 FROM snapshots s \
    WHERE s.dataset_id = f.dataset_id AND s.id >= f.added_in AND s.id < f.removed_in \
    AND CASE WHEN s.id = ANY ($3::bigint[]) THEN $2::float8 > 0 \
        ELSE s.expired_at IS NULL OR s.expired_at > clock_timestamp() - make_interval(secs => $2::float8) END)";

impl Catalog {
    /// Expires the snapshots of `dataset` that retention no longer keeps: beyond the newest
    /// `keep` (at least 1, so never the current one) and committed longer than `max_age` ago.
    /// With `dry_run` nothing changes. Returns the snapshots expired (or that would be), oldest
    /// first.
    pub async fn expire_snapshots(
        &self,
        dataset: DatasetId,
        keep: u32,
        max_age: Duration,
        dry_run: bool,
    ) -> Result<Vec<SnapshotId>> {
        let select = "SELECT id FROM snapshots s WHERE s.dataset_id = $1 AND s.expired_at IS NULL \
             AND s.committed_at < clock_timestamp() - make_interval(secs => $3) \
             AND s.id < (SELECT coalesce(min(id), 0) FROM (SELECT id FROM snapshots WHERE dataset_id = $1 \
                 AND expired_at IS NULL ORDER BY id DESC LIMIT $2) newest)";
        let sql = if dry_run {
            format!("{select} ORDER BY id")
        } else {
            format!(
                "UPDATE snapshots SET expired_at = clock_timestamp() WHERE dataset_id = $1 AND id IN ({select}) \
                 RETURNING id"
            )
        };
        let rows = sqlx::query(&sql)
            .bind(dataset.0)
            .bind(i64::from(keep.max(1)))
            .bind(max_age.as_secs_f64())
            .fetch_all(&self.pool)
            .await?;
        let mut ids: Vec<SnapshotId> =
            rows.iter().map(|row| row.try_get("id").map(SnapshotId)).collect::<std::result::Result<_, _>>()?;
        ids.sort();
        Ok(ids)
    }

    /// Files of `dataset` that may be deleted: unreferenced by any retained snapshot, and out
    /// of every query's reach for `grace`. By path. `expiring`: snapshots to count as expired
    /// now though they are not (a dry run's would-be expiries; empty otherwise).
    pub async fn collectable_files(
        &self,
        dataset: DatasetId,
        grace: Duration,
        expiring: &[SnapshotId],
    ) -> Result<Vec<FileRecord>> {
        let sql = format!(
            "SELECT f.path, f.bytes, f.rows, f.sha256, f.partition, f.added_in FROM files f \
             WHERE f.dataset_id = $1 AND {UNREFERENCED} ORDER BY f.path"
        );
        let expiring: Vec<i64> = expiring.iter().map(|id| id.0).collect();
        let rows =
            sqlx::query(&sql).bind(dataset.0).bind(grace.as_secs_f64()).bind(&expiring).fetch_all(&self.pool).await?;
        rows.iter().map(file_from_row).collect()
    }

    /// Forgets files whose objects were deleted, re-checking the rule (a file that became
    /// referenced meanwhile, which cannot happen today, would stay). Returns how many rows went.
    pub async fn forget_files(&self, dataset: DatasetId, paths: &[String], grace: Duration) -> Result<u64> {
        let sql = format!("DELETE FROM files f WHERE f.dataset_id = $1 AND f.path = ANY ($4) AND {UNREFERENCED}");
        let done = sqlx::query(&sql)
            .bind(dataset.0)
            .bind(grace.as_secs_f64())
            .bind(Vec::<i64>::new())
            .bind(paths)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Expired snapshots of `dataset` (past `grace`) in which no remaining file was added.
    /// `preview` (a dry run's would-be expiries): those snapshots count as expired now, and the
    /// files [`Catalog::collectable_files`] would find with them as already gone.
    pub async fn collectable_snapshots(
        &self,
        dataset: DatasetId,
        grace: Duration,
        preview: Option<&[SnapshotId]>,
    ) -> Result<Vec<ExpiredSnapshot>> {
        let sql = format!(
            "SELECT s.id, s.manifest_path FROM snapshots s WHERE s.dataset_id = $1 \
             AND CASE WHEN s.id = ANY ($3::bigint[]) THEN $2::float8 <= 0 \
                 ELSE s.expired_at IS NOT NULL AND s.expired_at <= clock_timestamp() - make_interval(secs => $2::float8) END \
             AND NOT EXISTS (SELECT 1 FROM files f WHERE f.dataset_id = s.dataset_id AND f.added_in = s.id \
                 AND NOT ($4 AND {UNREFERENCED})) \
             ORDER BY s.id"
        );
        let expiring: Vec<i64> = preview.unwrap_or_default().iter().map(|id| id.0).collect();
        let rows = sqlx::query(&sql)
            .bind(dataset.0)
            .bind(grace.as_secs_f64())
            .bind(&expiring)
            .bind(preview.is_some())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ExpiredSnapshot { id: SnapshotId(row.try_get("id")?), manifest_path: row.try_get("manifest_path")? })
            })
            .collect()
    }

    /// Forgets expired snapshots whose manifests were deleted (re-checking that they are
    /// expired and hold no files). Returns how many rows went.
    pub async fn forget_snapshots(&self, dataset: DatasetId, ids: &[SnapshotId]) -> Result<u64> {
        let ids: Vec<i64> = ids.iter().map(|id| id.0).collect();
        let done = sqlx::query(
            "DELETE FROM snapshots s WHERE s.dataset_id = $1 AND s.id = ANY ($2) AND s.expired_at IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM files f WHERE f.dataset_id = s.dataset_id AND f.added_in = s.id)",
        )
        .bind(dataset.0)
        .bind(&ids)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
