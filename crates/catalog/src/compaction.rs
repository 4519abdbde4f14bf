//! The compaction commit: a fenced snapshot (kind `compact`) that replaces some live files of
//! a dataset with new files holding the same rows (migration 0009, `duckmesh_compact_commit`),
//! and the read that picks what to compact.

use crate::commit::validate_new_files;
use crate::model::{AttemptRef, Committed, FileRecord, NewFile};
use crate::reads::file_from_row;
use crate::{Catalog, Error, Result};
use duckmesh_core::{DatasetId, SnapshotId};
use sqlx::Row;

/// A compaction's output, to commit.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactionCommit {
    /// The dataset compacted (the task's declared output).
    pub dataset: DatasetId,
    /// The live files the new ones replace.
    pub replaced: Vec<String>,
    /// The new files (together exactly the rows of the replaced ones).
    pub files: Vec<NewFile>,
    /// The manifest written next to the new files.
    pub manifest_path: Option<String>,
}

impl Catalog {
    /// The live files of `dataset` (those of its current snapshot), by path.
    pub async fn live_files(&self, dataset: DatasetId) -> Result<Vec<FileRecord>> {
        let rows = sqlx::query(
            "SELECT path, bytes, rows, sha256, partition, added_in FROM files \
             WHERE dataset_id = $1 AND removed_in IS NULL ORDER BY path",
        )
        .bind(dataset.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(file_from_row).collect()
    }

    /// Commits a compaction attempt's output: one `compact` snapshot that retires exactly
    /// `commit.replaced` and adds `commit.files`, keeping every other live file (so appends
    /// that committed meanwhile stay). Refused, changing nothing, when the attempt lost its
    /// right to commit (the fencing errors), in read-only mode, across tenants, when a replaced
    /// file is no longer live (`compaction_conflict`: retry on the new state), or when the rows
    /// do not add up (`invalid_spec`).
    pub async fn commit_compaction(&self, attempt: AttemptRef, commit: &CompactionCommit) -> Result<Committed> {
        validate_new_files(&commit.files)?;
        if commit.replaced.is_empty() {
            return Err(Error::Invalid { what: "compaction", message: "it replaces no files".into() });
        }
        let paths: Vec<&str> = commit.files.iter().map(|f| f.path.as_str()).collect();
        let sizes: Vec<i64> = commit.files.iter().map(|f| f.bytes).collect();
        let counts: Vec<i64> = commit.files.iter().map(|f| f.rows).collect();
        let hashes: Vec<&str> = commit.files.iter().map(|f| f.sha256.as_str()).collect();
        let partitions: Vec<Option<String>> =
            commit.files.iter().map(|f| f.partition.as_ref().map(|p| p.to_string())).collect();
        let result = sqlx::query(
            "SELECT status, snapshot_id, parent_id, token \
             FROM duckmesh_compact_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(attempt.attempt.0)
        .bind(attempt.fence.0)
        .bind(commit.dataset.0)
        .bind(&commit.replaced)
        .bind(&paths)
        .bind(&sizes)
        .bind(&counts)
        .bind(&hashes)
        .bind(&partitions)
        .bind(&commit.manifest_path)
        .fetch_one(&self.pool)
        .await;
        let row = match result {
            Ok(row) => row,
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => {
                return Err(Error::Invalid {
                    what: "compaction",
                    message: "a file path of this compaction is already part of the dataset".into(),
                });
            }
            Err(other) => return Err(other.into()),
        };
        let status: String = row.try_get("status")?;
        match status.as_str() {
            "ok" => {
                let committed = Committed {
                    dataset: commit.dataset,
                    snapshot: SnapshotId(row.try_get("snapshot_id")?),
                    parent: row.try_get::<Option<i64>, _>("parent_id")?.map(SnapshotId),
                    visibility_token: row.try_get("token")?,
                };
                self.notify_commit(&committed).await;
                Ok(committed)
            }
            "fenced" => Err(self.diagnose(attempt).await),
            "read_only" => Err(self.read_only_error().await),
            "no_dataset" => Err(Error::NotFound { what: format!("dataset {}", commit.dataset) }),
            "cross_tenant" => {
                let task = self.task(self.attempt(attempt.attempt).await?.task).await?;
                let dataset = self.dataset(commit.dataset).await?;
                Err(Error::CrossTenant {
                    dataset: dataset.id,
                    dataset_tenant: dataset.tenant,
                    dataset_namespace: dataset.namespace,
                    tenant: task.tenant,
                    namespace: task.namespace,
                })
            }
            "wrong_output" => Err(Error::Invalid {
                what: "compaction",
                message: format!("the task does not declare dataset {} as the one it compacts", commit.dataset),
            }),
            "conflict" => Err(Error::CompactionConflict {
                dataset: commit.dataset,
                message: "a file it replaces is no longer live (an overwrite or another compaction committed first)"
                    .into(),
            }),
            "row_mismatch" => Err(Error::Invalid {
                what: "compaction",
                message: "the new files do not hold exactly the rows of the files they replace".into(),
            }),
            other => Err(Error::Corrupt(format!("duckmesh_compact_commit returned status {other:?}"))),
        }
    }
}
