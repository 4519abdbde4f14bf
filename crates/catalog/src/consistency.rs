//! What a snapshot-consistency check of a (restored) catalog reads, and what a point-in-time
//! restore asks of the server: each dataset's head with every snapshot and its files grouped by
//! the snapshot range they belong to, all read in one repeatable-read transaction so a
//! concurrent commit cannot make a consistent catalog look broken; the server's recovery state
//! and the last transaction it replayed; and the WAL switch that completes an archive.

use crate::model::DatasetRecord;
use crate::reads::{DATASET_COLUMNS, dataset_from_row};
use crate::{Catalog, Result};
use chrono::{DateTime, Utc};
use duckmesh_core::SnapshotId;
use sqlx::Row;

/// Paths listed per file group (the counts cover them all).
pub const GROUP_SAMPLE_PATHS: i64 = 5;

/// One snapshot as stored, expired or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotState {
    /// Snapshot id.
    pub id: SnapshotId,
    /// Its visibility token.
    pub visibility_token: i64,
    /// Files, rows and bytes the snapshot says it holds.
    pub file_count: i64,
    /// Rows it says it holds.
    pub row_count: i64,
    /// Bytes it says it holds.
    pub byte_count: i64,
    /// Its commit time.
    pub committed_at: DateTime<Utc>,
    /// Whether retention expired it (its files may be gone).
    pub expired: bool,
}

/// The files of a dataset that share a lifetime: added by snapshot `added_in`, removed by
/// `removed_in` (never, when `None`). A file belongs to the snapshots `added_in <= s <
/// removed_in`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileGroup {
    /// The snapshot that added them.
    pub added_in: SnapshotId,
    /// The snapshot that removed them, if any.
    pub removed_in: Option<SnapshotId>,
    /// How many files.
    pub files: i64,
    /// Their rows.
    pub rows: i64,
    /// Their bytes.
    pub bytes: i64,
    /// The first paths of the group (at most [`GROUP_SAMPLE_PATHS`]), by path.
    pub sample_paths: Vec<String>,
}

/// A dataset's head, snapshots (by id) and file groups (by `added_in`, `removed_in`).
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetState {
    /// The dataset row, head included.
    pub dataset: DatasetRecord,
    /// Every snapshot row, oldest first.
    pub snapshots: Vec<SnapshotState>,
    /// Every file row, grouped by lifetime.
    pub files: Vec<FileGroup>,
}

/// Where the server is in a point-in-time recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryStatus {
    /// Still replaying WAL (not yet promoted).
    pub in_recovery: bool,
    /// The commit time of the last transaction replayed by the recovery (kept after
    /// promotion); `None` when the recovery replayed none.
    pub last_replayed_commit: Option<DateTime<Utc>>,
}

impl Catalog {
    /// Every dataset's state, by namespace and name, read in one repeatable-read snapshot.
    pub async fn dataset_states(&self) -> Result<Vec<DatasetState>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        let sql = format!("SELECT {DATASET_COLUMNS} FROM datasets ORDER BY namespace, name");
        let datasets: Vec<DatasetRecord> =
            sqlx::query(&sql).fetch_all(&mut *tx).await?.iter().map(dataset_from_row).collect::<Result<_>>()?;
        let snapshot_rows = sqlx::query(
            "SELECT dataset_id, id, visibility_token, file_count, row_count, byte_count, committed_at, \
             expired_at IS NOT NULL AS expired FROM snapshots ORDER BY dataset_id, id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let group_rows = sqlx::query(
            "SELECT dataset_id, added_in, removed_in, count(*) AS files, coalesce(sum(rows), 0)::bigint AS rows, \
             coalesce(sum(bytes), 0)::bigint AS bytes, \
             (array_agg(path ORDER BY path))[1:$1] AS sample_paths \
             FROM files GROUP BY dataset_id, added_in, removed_in ORDER BY dataset_id, added_in, removed_in",
        )
        .bind(GROUP_SAMPLE_PATHS)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;

        let mut states: Vec<DatasetState> = datasets
            .into_iter()
            .map(|dataset| DatasetState { dataset, snapshots: Vec::new(), files: Vec::new() })
            .collect();
        let index: std::collections::HashMap<i64, usize> =
            states.iter().enumerate().map(|(at, state)| (state.dataset.id.0, at)).collect();
        for row in &snapshot_rows {
            let dataset: i64 = row.try_get("dataset_id")?;
            let Some(&at) = index.get(&dataset) else { continue };
            states[at].snapshots.push(SnapshotState {
                id: SnapshotId(row.try_get("id")?),
                visibility_token: row.try_get("visibility_token")?,
                file_count: row.try_get("file_count")?,
                row_count: row.try_get("row_count")?,
                byte_count: row.try_get("byte_count")?,
                committed_at: row.try_get("committed_at")?,
                expired: row.try_get("expired")?,
            });
        }
        for row in &group_rows {
            let dataset: i64 = row.try_get("dataset_id")?;
            let Some(&at) = index.get(&dataset) else { continue };
            states[at].files.push(FileGroup {
                added_in: SnapshotId(row.try_get("added_in")?),
                removed_in: row.try_get::<Option<i64>, _>("removed_in")?.map(SnapshotId),
                files: row.try_get("files")?,
                rows: row.try_get("rows")?,
                bytes: row.try_get("bytes")?,
                sample_paths: row.try_get("sample_paths")?,
            });
        }
        Ok(states)
    }

    /// Whether the server is still recovering, and the last transaction its recovery replayed.
    pub async fn recovery_status(&self) -> Result<RecoveryStatus> {
        let row = sqlx::query("SELECT pg_is_in_recovery() AS in_recovery, pg_last_xact_replay_timestamp() AS replayed")
            .fetch_one(&self.pool)
            .await?;
        Ok(RecoveryStatus { in_recovery: row.try_get("in_recovery")?, last_replayed_commit: row.try_get("replayed")? })
    }

    /// Closes the current WAL segment so the archiver ships it (`pg_switch_wal()`); returns the
    /// name of the segment closed. Needs a superuser (or a grant on `pg_switch_wal`).
    pub async fn switch_wal(&self) -> Result<String> {
        Ok(sqlx::query_scalar("SELECT pg_walfile_name(pg_switch_wal())").fetch_one(&self.pool).await?)
    }

    /// The name of the last WAL segment the server's archiver shipped, if any.
    pub async fn last_archived_wal(&self) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT last_archived_wal FROM pg_stat_archiver").fetch_one(&self.pool).await?)
    }
}
