//! The fenced commit: the only way a task's output becomes visible.
//!
//! One transaction locks the attempt and its task, re-checks the fence and the lease, locks
//! the dataset (so snapshot ids and visibility tokens are assigned in commit order), records
//! the files, creates the next snapshot (append keeps the current files, overwrite retires
//! them), marks attempt and task `Succeeded`, and writes an outbox row; listeners are woken right
//! after it commits. If any check fails nothing is written: the attempt's files stay in its
//! staging prefix for GC.

use crate::leases::LockedAttempt;
use crate::model::{AttemptRef, Column, CommitMode, CommitRequest, Committed};
use crate::notify::COMMITS_CHANNEL;
use crate::{Catalog, Error, Result};
use duckmesh_core::SnapshotId;
use serde_json::json;
use sqlx::types::Json;
use sqlx::{Postgres, Row, Transaction};

/// The attempt, its task and the target dataset, locked together in one round trip.
const LOCK_FOR_COMMIT: &str = "SELECT a.id, a.state, a.fence, a.runner, a.lease_expires_at, clock_timestamp() AS now, \
        t.id AS task_id, t.job_id, t.name, t.fence AS task_fence, t.phase, t.attempts, t.max_attempts, \
        t.output_dataset_id, t.output_mode, \
        d.current_snapshot_id, d.visibility_token, d.schema, d.file_count, d.row_count, d.byte_count \
    FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN datasets d ON d.id = $2 \
    WHERE a.id = $1 FOR UPDATE OF a, t, d";

/// The dataset's state under its row lock.
struct DatasetState {
    current: i64,
    token: i64,
    schema: Option<Vec<Column>>,
    files: i64,
    rows: i64,
    bytes: i64,
}

impl Catalog {
    /// Commits an attempt's output. Fails with `stale_fence`, `lease_expired` or
    /// `attempt_not_active` (and changes nothing) when the attempt lost its right to commit.
    ///
    /// Four round trips: `BEGIN`, one `SELECT … FOR UPDATE` of attempt, task and dataset, one
    /// statement that writes snapshot, files, dataset, attempt, task and outbox, and `COMMIT`
    /// (then a separate wake-up for listeners). The dataset lock is held only for the last two.
    pub async fn commit(&self, attempt: AttemptRef, request: &CommitRequest) -> Result<Committed> {
        validate_files(request)?;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(LOCK_FOR_COMMIT)
            .bind(attempt.attempt.0)
            .bind(request.dataset.0)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            // Either the attempt or the dataset does not exist; say which.
            self.dataset(request.dataset).await?;
            return Err(Error::NotFound { what: format!("attempt {}", attempt.attempt) });
        };
        let locked = LockedAttempt::from_row(&row)?;
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
        let schema: Option<Json<Vec<Column>>> = row.try_get("schema")?;
        let state = DatasetState {
            current: row.try_get("current_snapshot_id")?,
            token: row.try_get("visibility_token")?,
            schema: schema.map(|json| json.0),
            files: row.try_get("file_count")?,
            rows: row.try_get("row_count")?,
            bytes: row.try_get("byte_count")?,
        };
        let committed = write_snapshot(&mut tx, request, &state, &locked).await?;
        tx.commit().await?;
        self.notify_commit(&committed).await;
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
        let payload = json!({"task": locked.task, "job": locked.job, "attempt": locked.attempt});
        sqlx::query(
            "WITH done AS (UPDATE attempts SET state = 'Succeeded', finished_at = clock_timestamp() WHERE id = $1), \
                  event AS (INSERT INTO outbox (kind, payload) VALUES ('task_succeeded', $3)) \
             UPDATE tasks SET phase = 'Succeeded', finished_at = clock_timestamp(), updated_at = clock_timestamp(), \
                 last_error_code = NULL, last_error_message = NULL WHERE id = $2",
        )
        .bind(locked.attempt.0)
        .bind(locked.task.0)
        .bind(&payload)
        .execute(&mut *tx)
        .await?;
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

/// Creates the dataset's next snapshot in one statement. The caller holds the dataset's row
/// lock, which serialises commits per dataset: that is what makes ids and tokens strictly
/// increase. All sub-statements run against the same snapshot of the data, and the files'
/// foreign key to their snapshot is checked at the end of the statement.
async fn write_snapshot(
    tx: &mut Transaction<'_, Postgres>,
    request: &CommitRequest,
    state: &DatasetState,
    attempt: &LockedAttempt,
) -> Result<Committed> {
    let dataset = request.dataset;
    let new_schema = match (&state.schema, &request.schema, request.mode) {
        (Some(existing), Some(incoming), CommitMode::Append) => {
            if let Some(message) = schema_difference(existing, incoming) {
                return Err(Error::SchemaMismatch { dataset, message });
            }
            None
        }
        (_, incoming, _) => incoming.as_ref(),
    };
    let overwrite = request.mode == CommitMode::Overwrite;
    let (base_files, base_rows, base_bytes) =
        if overwrite { (0, 0, 0) } else { (state.files, state.rows, state.bytes) };
    let files = base_files + request.files.len() as i64;
    let rows = base_rows + request.files.iter().map(|f| f.rows).sum::<i64>();
    let bytes = base_bytes + request.files.iter().map(|f| f.bytes).sum::<i64>();
    let removed_files = if overwrite { state.files } else { 0 };
    let committed = Committed {
        dataset,
        snapshot: SnapshotId(state.current + 1),
        parent: (state.current > 0).then_some(SnapshotId(state.current)),
        visibility_token: state.token + 1,
    };
    let event = json!({
        "dataset": committed.dataset, "snapshot": committed.snapshot,
        "visibility_token": committed.visibility_token, "task": attempt.task, "job": attempt.job,
        "attempt": attempt.attempt,
    });
    let paths: Vec<&str> = request.files.iter().map(|f| f.path.as_str()).collect();
    let sizes: Vec<i64> = request.files.iter().map(|f| f.bytes).collect();
    let counts: Vec<i64> = request.files.iter().map(|f| f.rows).collect();
    let hashes: Vec<&str> = request.files.iter().map(|f| f.sha256.as_str()).collect();
    let partitions: Vec<Option<String>> =
        request.files.iter().map(|f| f.partition.as_ref().map(|p| p.to_string())).collect();

    let written = sqlx::query(
        "WITH snap AS ( \
             INSERT INTO snapshots (dataset_id, id, parent_id, visibility_token, kind, task_id, attempt_id, fence, \
                 file_count, row_count, byte_count, added_files, removed_files, manifest_path) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING committed_at), \
         retired AS ( \
             UPDATE files SET removed_in = $2 WHERE dataset_id = $1 AND removed_in IS NULL AND $15), \
         added AS ( \
             INSERT INTO files (dataset_id, path, bytes, rows, sha256, partition, added_in) \
             SELECT $1, u.path, u.bytes, u.rows, u.sha256, u.partition::jsonb, $2 \
             FROM unnest($16::text[], $17::int8[], $18::int8[], $19::text[], $20::text[]) \
                 AS u(path, bytes, rows, sha256, partition)), \
         header AS ( \
             UPDATE datasets SET current_snapshot_id = $2, visibility_token = $4, file_count = $9, row_count = $10, \
                 byte_count = $11, last_commit_at = (SELECT committed_at FROM snap), \
                 updated_at = (SELECT committed_at FROM snap), schema = coalesce($21, schema) WHERE id = $1), \
         attempt_done AS ( \
             UPDATE attempts SET state = 'Succeeded', finished_at = clock_timestamp() WHERE id = $7), \
         task_done AS ( \
             UPDATE tasks SET phase = 'Succeeded', output_snapshot_id = $2, finished_at = clock_timestamp(), \
                 updated_at = clock_timestamp(), last_error_code = NULL, last_error_message = NULL WHERE id = $6), \
         event AS ( \
             INSERT INTO outbox (kind, payload) VALUES ('snapshot_committed', $22)) \
         SELECT committed_at FROM snap",
    )
    .bind(dataset.0)
    .bind(committed.snapshot.0)
    .bind(committed.parent.map(|p| p.0))
    .bind(committed.visibility_token)
    .bind(request.mode.as_str())
    .bind(attempt.task.0)
    .bind(attempt.attempt.0)
    .bind(attempt.fence.0)
    .bind(files)
    .bind(rows)
    .bind(bytes)
    .bind(request.files.len() as i32)
    .bind(removed_files as i32)
    .bind(&request.manifest_path)
    .bind(overwrite)
    .bind(&paths)
    .bind(&sizes)
    .bind(&counts)
    .bind(&hashes)
    .bind(&partitions)
    .bind(new_schema.map(Json))
    .bind(&event)
    .execute(&mut **tx)
    .await;
    match written {
        Ok(_) => Ok(committed),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => Err(Error::Invalid {
            what: "commit",
            message: "a file path of this commit is already part of the dataset".into(),
        }),
        Err(other) => Err(other.into()),
    }
}

impl Catalog {
    /// Wakes commit listeners. Sent after the commit, in its own transaction, on purpose: a
    /// `NOTIFY` inside the commit transaction holds a database-wide lock until that commit's WAL
    /// is flushed, which serialises every committer and defeats group commit. Notifications are
    /// hints (listeners re-read the catalog), so losing one to a crash right here only delays a
    /// wake-up until the listener's next periodic check.
    async fn notify_commit(&self, committed: &Committed) {
        let payload = json!({
            "dataset": committed.dataset, "snapshot": committed.snapshot,
            "visibility_token": committed.visibility_token,
        });
        let sent = sqlx::query(
            "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)) \
             SELECT pg_notify($1, $2) FROM relaxed",
        )
        .bind(COMMITS_CHANNEL)
        .bind(payload.to_string())
        .execute(&self.pool)
        .await;
        if let Err(error) = sent {
            tracing::warn!(%error, dataset = %committed.dataset, "could not send the commit wake-up");
        }
    }
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
            (cols(&[("id", "BIGINT"), ("name", "VARCHAR"), ("age", "INTEGER")]), Some("unexpected columns age")),
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
