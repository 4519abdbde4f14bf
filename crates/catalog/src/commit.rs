//! The fenced commit: the only way a task's output becomes visible.
//!
//! One transaction locks the attempt and its task, re-checks the fence and the lease, locks
//! the dataset (so snapshot ids and visibility tokens are assigned in commit order), records
//! the files, creates the next snapshot (append keeps the current files, overwrite retires
//! them), marks attempt and task `Succeeded`, and writes an outbox row and a `NOTIFY`. If any
//! check fails nothing is written: the attempt's files stay in its staging prefix for GC.

use crate::leases::LockedAttempt;
use crate::model::{AttemptRef, Column, CommitMode, CommitRequest, Committed};
use crate::notify::COMMITS_CHANNEL;
use crate::{Catalog, Error, Result};
use duckmesh_core::SnapshotId;
use serde_json::json;
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};

impl Catalog {
    /// Commits an attempt's output. Fails with `stale_fence`, `lease_expired` or
    /// `attempt_not_active` (and changes nothing) when the attempt lost its right to commit.
    pub async fn commit(&self, attempt: AttemptRef, request: &CommitRequest) -> Result<Committed> {
        validate_files(request)?;
        let mut tx = self.pool.begin().await?;
        let locked = LockedAttempt::lock_existing(&mut tx, attempt).await?;
        locked.ensure_current(attempt.fence, true)?;
        if let Some(output) = locked.output
            && (output.dataset != request.dataset || output.mode != request.mode)
        {
            return Err(Error::Invalid {
                what: "commit",
                message: format!(
                    "task {:?} declares output dataset {} ({}), the commit targets dataset {} ({})",
                    locked.task_name,
                    output.dataset,
                    output.mode.as_str(),
                    request.dataset,
                    request.mode.as_str()
                ),
            });
        }
        let committed = write_snapshot(&mut tx, request, Some(&locked)).await?;
        sqlx::query(
            "UPDATE attempts SET state = 'Succeeded', finished_at = clock_timestamp() WHERE id = $1",
        )
        .bind(locked.attempt.0)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE tasks SET phase = 'Succeeded', output_snapshot_id = $2, finished_at = clock_timestamp(), \
                 updated_at = clock_timestamp(), last_error_code = NULL, last_error_message = NULL WHERE id = $1",
        )
        .bind(locked.task.0)
        .bind(committed.snapshot.0)
        .execute(&mut *tx)
        .await?;
        let payload = json!({
            "dataset": committed.dataset, "snapshot": committed.snapshot,
            "visibility_token": committed.visibility_token, "task": locked.task, "job": locked.job,
            "attempt": locked.attempt,
        });
        crate::outbox::enqueue_in(&mut tx, "snapshot_committed", &payload).await?;
        notify(&mut tx, &committed).await?;
        tx.commit().await?;
        Ok(committed)
    }

    /// Marks an attempt of a task without an output dataset as `Succeeded`, fenced like a
    /// commit.
    pub async fn complete(&self, attempt: AttemptRef) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let locked = LockedAttempt::lock_existing(&mut tx, attempt).await?;
        locked.ensure_current(attempt.fence, true)?;
        if locked.output.is_some() {
            return Err(Error::Invalid {
                what: "commit",
                message: format!("task {:?} declares an output dataset: commit its files", locked.task_name),
            });
        }
        sqlx::query("UPDATE attempts SET state = 'Succeeded', finished_at = clock_timestamp() WHERE id = $1")
            .bind(locked.attempt.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE tasks SET phase = 'Succeeded', finished_at = clock_timestamp(), updated_at = clock_timestamp(), \
                 last_error_code = NULL, last_error_message = NULL WHERE id = $1",
        )
        .bind(locked.task.0)
        .execute(&mut *tx)
        .await?;
        let payload = json!({"task": locked.task, "job": locked.job, "attempt": locked.attempt});
        crate::outbox::enqueue_in(&mut tx, "task_succeeded", &payload).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn validate_files(request: &CommitRequest) -> Result<()> {
    let invalid = |message: String| Err(Error::Invalid { what: "commit", message });
    let mut seen = std::collections::HashSet::new();
    for file in &request.files {
        if file.path.is_empty() || file.path.starts_with('/') || file.path.split('/').any(|s| s == "..") {
            return invalid(format!("file path {:?} must be a relative object key", file.path));
        }
        if file.bytes < 0 || file.rows < 0 {
            return invalid(format!("file {:?} has a negative size or row count", file.path));
        }
        if file.sha256.len() != 64 || !file.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return invalid(format!("file {:?}: sha256 must be 64 lower-case hex digits", file.path));
        }
        if !seen.insert(file.path.as_str()) {
            return invalid(format!("file {:?} is listed twice", file.path));
        }
    }
    Ok(())
}

/// Creates the dataset's next snapshot from `request` inside `tx`. The dataset row lock
/// serialises commits per dataset, which is what makes ids and tokens strictly increase.
pub(crate) async fn write_snapshot(
    tx: &mut Transaction<'_, Postgres>,
    request: &CommitRequest,
    attempt: Option<&LockedAttempt>,
) -> Result<Committed> {
    let dataset = request.dataset;
    let row = sqlx::query(
        "SELECT current_snapshot_id, visibility_token, schema, file_count, row_count, byte_count \
         FROM datasets WHERE id = $1 FOR UPDATE",
    )
    .bind(dataset.0)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| Error::NotFound { what: format!("dataset {dataset}") })?;
    let current: i64 = row.try_get("current_snapshot_id")?;
    let token: i64 = row.try_get("visibility_token")?;
    let schema: Option<Json<Vec<Column>>> = row.try_get("schema")?;
    let (mut files, mut rows, mut bytes): (i64, i64, i64) =
        (row.try_get("file_count")?, row.try_get("row_count")?, row.try_get("byte_count")?);

    let new_schema = match (&schema, &request.schema, request.mode) {
        (Some(existing), Some(incoming), CommitMode::Append) => {
            if let Some(message) = schema_difference(&existing.0, incoming) {
                return Err(Error::SchemaMismatch { dataset, message });
            }
            None
        }
        (_, Some(incoming), _) => Some(incoming),
        (_, None, _) => None,
    };

    let snapshot = current + 1;
    let removed_files = if request.mode == CommitMode::Overwrite {
        let removed = sqlx::query(
            "UPDATE files SET removed_in = $2 WHERE dataset_id = $1 AND removed_in IS NULL",
        )
        .bind(dataset.0)
        .bind(snapshot)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        (files, rows, bytes) = (0, 0, 0);
        removed
    } else {
        0
    };
    for file in &request.files {
        files += 1;
        rows += file.rows;
        bytes += file.bytes;
    }
    let kind = match (attempt, request.mode) {
        (None, _) => "ingest",
        (Some(_), mode) => mode.as_str(),
    };
    let committed_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "INSERT INTO snapshots (dataset_id, id, parent_id, visibility_token, kind, task_id, attempt_id, fence, \
             file_count, row_count, byte_count, added_files, removed_files, manifest_path) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING committed_at",
    )
    .bind(dataset.0)
    .bind(snapshot)
    .bind((current > 0).then_some(current))
    .bind(token + 1)
    .bind(kind)
    .bind(attempt.map(|a| a.task.0))
    .bind(attempt.map(|a| a.attempt.0))
    .bind(attempt.map(|a| a.fence.0))
    .bind(files)
    .bind(rows)
    .bind(bytes)
    .bind(request.files.len() as i32)
    .bind(removed_files as i32)
    .bind(&request.manifest_path)
    .fetch_one(&mut **tx)
    .await?;
    if !request.files.is_empty() {
        let paths: Vec<&str> = request.files.iter().map(|f| f.path.as_str()).collect();
        let sizes: Vec<i64> = request.files.iter().map(|f| f.bytes).collect();
        let counts: Vec<i64> = request.files.iter().map(|f| f.rows).collect();
        let hashes: Vec<&str> = request.files.iter().map(|f| f.sha256.as_str()).collect();
        let partitions: Vec<Option<String>> =
            request.files.iter().map(|f| f.partition.as_ref().map(|p| p.to_string())).collect();
        let inserted = sqlx::query(
            "INSERT INTO files (dataset_id, path, bytes, rows, sha256, partition, added_in) \
             SELECT $1, u.path, u.bytes, u.rows, u.sha256, u.partition::jsonb, $2 \
             FROM unnest($3::text[], $4::int8[], $5::int8[], $6::text[], $7::text[]) \
                 AS u(path, bytes, rows, sha256, partition)",
        )
        .bind(dataset.0)
        .bind(snapshot)
        .bind(&paths)
        .bind(&sizes)
        .bind(&counts)
        .bind(&hashes)
        .bind(&partitions)
        .execute(&mut **tx)
        .await;
        match inserted {
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => {
                return Err(Error::Invalid {
                    what: "commit",
                    message: "a file path of this commit is already part of the dataset".into(),
                });
            }
            other => {
                other?;
            }
        }
    }
    sqlx::query(
        "UPDATE datasets SET current_snapshot_id = $2, visibility_token = $3, file_count = $4, row_count = $5, \
             byte_count = $6, last_commit_at = $7, schema = coalesce($8, schema), updated_at = $7 WHERE id = $1",
    )
    .bind(dataset.0)
    .bind(snapshot)
    .bind(token + 1)
    .bind(files)
    .bind(rows)
    .bind(bytes)
    .bind(committed_at)
    .bind(new_schema.map(Json))
    .execute(&mut **tx)
    .await?;
    Ok(Committed {
        dataset,
        snapshot: SnapshotId(snapshot),
        parent: (current > 0).then_some(SnapshotId(current)),
        visibility_token: token + 1,
    })
}

pub(crate) async fn notify(tx: &mut Transaction<'_, Postgres>, committed: &Committed) -> Result<()> {
    let payload = json!({
        "dataset": committed.dataset, "snapshot": committed.snapshot, "visibility_token": committed.visibility_token,
    });
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(COMMITS_CHANNEL)
        .bind(payload.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Describes how `incoming` differs from `existing`, naming the columns, or `None` when an
/// append may proceed (same names and types, in any order).
pub fn schema_difference(existing: &[Column], incoming: &[Column]) -> Option<String> {
    let find = |columns: &[Column], name: &str| columns.iter().find(|c| c.name == name).map(|c| c.data_type.clone());
    let missing: Vec<&str> =
        existing.iter().filter(|c| find(incoming, &c.name).is_none()).map(|c| c.name.as_str()).collect();
    let unexpected: Vec<&str> =
        incoming.iter().filter(|c| find(existing, &c.name).is_none()).map(|c| c.name.as_str()).collect();
    let changed: Vec<String> = existing
        .iter()
        .filter_map(|c| {
            let other = find(incoming, &c.name)?;
            (!other.eq_ignore_ascii_case(&c.data_type)).then(|| format!("{} ({} → {})", c.name, c.data_type, other))
        })
        .collect();
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing columns {}", missing.join(", ")));
    }
    if !unexpected.is_empty() {
        parts.push(format!("unexpected columns {}", unexpected.join(", ")));
    }
    if !changed.is_empty() {
        parts.push(format!("changed types {}", changed.join(", ")));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(spec: &[(&str, &str)]) -> Vec<Column> {
        spec.iter().map(|(n, t)| Column { name: (*n).into(), data_type: (*t).into() }).collect()
    }

    #[test]
    fn schema_difference_table() {
        let base = cols(&[("id", "BIGINT"), ("name", "VARCHAR")]);
        let cases: &[(Vec<Column>, Option<&str>)] = &[
            (cols(&[("id", "BIGINT"), ("name", "VARCHAR")]), None),
            (cols(&[("name", "VARCHAR"), ("id", "bigint")]), None),
            (cols(&[("id", "BIGINT")]), Some("missing columns name")),
            (
                cols(&[("id", "BIGINT"), ("name", "VARCHAR"), ("age", "INTEGER")]),
                Some("unexpected columns age"),
            ),
            (cols(&[("id", "VARCHAR"), ("name", "VARCHAR")]), Some("changed types id (BIGINT → VARCHAR)")),
            (
                cols(&[("id", "INTEGER"), ("extra", "DATE")]),
                Some("missing columns name; unexpected columns extra; changed types id (BIGINT → INTEGER)"),
            ),
        ];
        for (incoming, expected) in cases {
            assert_eq!(schema_difference(&base, incoming).as_deref(), *expected, "incoming {incoming:?}");
        }
    }
}
