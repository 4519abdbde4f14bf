//! The compaction commit: a fenced snapshot (kind `compact`) that replaces some live files of
//! a dataset with new files holding the same rows (migration 0009, `duckmesh_compact_commit`),
//! and the read that picks what to compact.

use crate::commit::{FileColumns, duplicate_path, validate_new_files};
use crate::model::{AttemptRef, Committed, FileRecord, NewFile};
use crate::reads::file_from_row;
use crate::{Catalog, Error, Result};
use duckmesh_core::DatasetId;

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
        let files = FileColumns::of(&commit.files);
        let result = sqlx::query(
            "SELECT status, snapshot_id, parent_id, token \
             FROM duckmesh_compact_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(attempt.attempt.0)
        .bind(attempt.fence.0)
        .bind(commit.dataset.0)
        .bind(&commit.replaced)
        .bind(&files.paths)
        .bind(&files.sizes)
        .bind(&files.rows)
        .bind(&files.hashes)
        .bind(&files.partitions)
        .bind(&commit.manifest_path)
        .fetch_one(&self.pool)
        .await;
        let row = result.map_err(duplicate_path("compaction"))?;
        let status = match self.shared_outcome(attempt, commit.dataset, &row).await? {
            Ok(committed) => return Ok(committed),
            Err(status) => status,
        };
        match status.as_str() {
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
