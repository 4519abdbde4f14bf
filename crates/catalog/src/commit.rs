//! The fenced commit: the only way a task's output becomes visible.
//!
//! One transaction (the server-side function `duckmesh_commit`) locks the attempt and its
//! task, re-checks the fence and the lease (the fence rule, `duckmesh_attempt_refusal`), locks
//! the dataset (so snapshot ids and visibility tokens are assigned in commit order), records
//! the files, creates the next snapshot (append keeps the current files, overwrite retires
//! them), marks attempt and task `Succeeded`, and writes an outbox row; listeners are woken right
//! after it commits. If any check fails nothing is written: the attempt's files stay in its
//! staging prefix for GC.

use crate::fencing::LockedAttempt;
use crate::model::{AttemptRef, Column, CommitRequest, Committed, NewFile};
use crate::notify::COMMITS_CHANNEL;
use crate::{Catalog, Error, Result};
use duckmesh_core::{DatasetId, SnapshotId};
use serde_json::json;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;

impl Catalog {
    /// Commits an attempt's output. Fails with `stale_fence`, `lease_expired` or
    /// `attempt_not_active` (and changes nothing) when the attempt lost its right to commit,
    /// and with `cross_tenant_dataset` when the dataset is not of the task's tenant and
    /// namespace (migration 0006).
    ///
    /// One round trip: the server-side function `duckmesh_commit` (migration 0002, last
    /// redefined by 0007) locks the attempt and its task, re-checks fence, liveness and lease
    /// with the fence rule (`duckmesh_attempt_refusal`), locks the dataset, checks the
    /// output and the schema, then writes snapshot, files, dataset header, attempt, task and
    /// the outbox row in the same transaction. Listeners are woken right after it commits.
    pub async fn commit(&self, attempt: AttemptRef, request: &CommitRequest) -> Result<Committed> {
        validate_new_files(&request.files)?;
        let schema = request.schema.as_ref().map(|columns| normalized(columns));
        let files = FileColumns::of(&request.files);
        let result = sqlx::query(
            "SELECT status, snapshot_id, parent_id, token, existing_schema \
             FROM duckmesh_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(attempt.attempt.0)
        .bind(attempt.fence.0)
        .bind(request.dataset.0)
        .bind(request.mode.as_str())
        .bind(&files.paths)
        .bind(&files.sizes)
        .bind(&files.rows)
        .bind(&files.hashes)
        .bind(&files.partitions)
        .bind(&request.manifest_path)
        .bind(schema.as_ref().map(Json))
        .fetch_one(&self.pool)
        .await;
        let row = result.map_err(duplicate_path("commit"))?;
        let status = match self.shared_outcome(attempt, request.dataset, &row).await? {
            Ok(committed) => return Ok(committed),
            Err(status) => status,
        };
        match status.as_str() {
            "wrong_output" => {
                let task = self.task(self.attempt(attempt.attempt).await?.task).await?;
                let declared = task.output.map_or_else(
                    || "none".to_owned(),
                    |output| format!("{} ({})", output.dataset, output.mode.as_str()),
                );
                Err(Error::Invalid {
                    what: "commit",
                    message: format!(
                        "task {:?} declares output dataset {declared}, the commit targets dataset {} ({})",
                        task.name,
                        request.dataset,
                        request.mode.as_str()
                    ),
                })
            }
            "schema_mismatch" => {
                let existing: Option<Json<Vec<Column>>> = row.try_get("existing_schema")?;
                let existing = existing.map(|json| json.0).unwrap_or_default();
                let message = schema_difference(&existing, schema.as_deref().unwrap_or_default())
                    .unwrap_or_else(|| "columns differ".to_owned());
                Err(Error::SchemaMismatch { dataset: request.dataset, message })
            }
            other => Err(Error::Corrupt(format!("duckmesh_commit returned status {other:?}"))),
        }
    }

    /// Marks an attempt of a task without an output dataset as `Succeeded`, fenced like a
    /// commit.
    pub async fn complete(&self, attempt: AttemptRef) -> Result<()> {
        self.succeed_without_snapshot(attempt, None).await
    }

    /// Marks an attempt of a maintenance task on `dataset` (its declared output) that found
    /// nothing to change as `Succeeded`, fenced like a commit, without a snapshot.
    pub async fn complete_unchanged(&self, attempt: AttemptRef, dataset: DatasetId) -> Result<()> {
        self.succeed_without_snapshot(attempt, Some(dataset)).await
    }

    /// The attempt and its task `Succeeded` with no snapshot, when the task's output is
    /// `output` (`None`: it declares none).
    async fn succeed_without_snapshot(&self, attempt: AttemptRef, output: Option<DatasetId>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let locked = LockedAttempt::lock_existing(&mut tx, attempt).await?;
        locked.ensure_current(true)?;
        let declared = locked.output.as_ref().map(|output| output.dataset);
        if declared != output {
            let message = match declared {
                Some(_) => format!("task {:?} declares an output dataset: commit its files", locked.task_name),
                None => format!("task {:?} declares no output dataset to maintain", locked.task_name),
            };
            return Err(Error::Invalid { what: "commit", message });
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

/// A commit's files as the parallel arrays the commit functions take.
pub(crate) struct FileColumns<'a> {
    pub paths: Vec<&'a str>,
    pub sizes: Vec<i64>,
    pub rows: Vec<i64>,
    pub hashes: Vec<&'a str>,
    pub partitions: Vec<Option<String>>,
}

impl<'a> FileColumns<'a> {
    pub(crate) fn of(files: &'a [NewFile]) -> Self {
        Self {
            paths: files.iter().map(|f| f.path.as_str()).collect(),
            sizes: files.iter().map(|f| f.bytes).collect(),
            rows: files.iter().map(|f| f.rows).collect(),
            hashes: files.iter().map(|f| f.sha256.as_str()).collect(),
            partitions: files.iter().map(|f| f.partition.as_ref().map(|p| p.to_string())).collect(),
        }
    }
}

/// A commit function's failure: a file path already in the dataset (unique violation) is the
/// caller's mistake, anything else the database's.
pub(crate) fn duplicate_path(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |error| match error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            Error::Invalid { what, message: format!("a file path of this {what} is already part of the dataset") }
        }
        other => other.into(),
    }
}

impl Catalog {
    /// The statuses every fenced commit function shares (`ok`, `fenced`, `read_only`,
    /// `no_dataset`, `cross_tenant`), turned into the snapshot committed (listeners woken) or
    /// the error; any other status comes back as `Ok(Err(status))` for the caller.
    pub(crate) async fn shared_outcome(
        &self,
        attempt: AttemptRef,
        dataset: DatasetId,
        row: &PgRow,
    ) -> Result<std::result::Result<Committed, String>> {
        let status: String = row.try_get("status")?;
        match status.as_str() {
            "ok" => {
                let committed = Committed {
                    dataset,
                    snapshot: SnapshotId(row.try_get("snapshot_id")?),
                    parent: row.try_get::<Option<i64>, _>("parent_id")?.map(SnapshotId),
                    visibility_token: row.try_get("token")?,
                };
                self.notify_commit(&committed).await;
                Ok(Ok(committed))
            }
            "fenced" => Err(self.diagnose(attempt).await),
            "read_only" => Err(self.read_only_error().await),
            "no_dataset" => Err(Error::NotFound { what: format!("dataset {dataset}") }),
            "cross_tenant" => {
                let task = self.task(self.attempt(attempt.attempt).await?.task).await?;
                let dataset = self.dataset(dataset).await?;
                Err(Error::CrossTenant {
                    dataset: dataset.id,
                    dataset_tenant: dataset.tenant,
                    dataset_namespace: dataset.namespace,
                    tenant: task.tenant,
                    namespace: task.namespace,
                })
            }
            _ => Ok(Err(status)),
        }
    }
}

/// Type names in DuckDB's canonical spelling ([`canonical_type`](crate::canonical_type)),
/// so that stored schemas compare as sets in SQL. Every schema the catalog stores (declared
/// by a Dataset, committed by a task or by ingest) goes through here.
pub(crate) fn normalized(columns: &[Column]) -> Vec<Column> {
    columns
        .iter()
        .map(|column| Column { name: column.name.clone(), data_type: crate::canonical_type(&column.data_type) })
        .collect()
}

/// Checks the file list of a commit: relative keys, sizes, hashes, no path twice.
pub(crate) fn validate_new_files(files: &[NewFile]) -> Result<()> {
    let invalid = |message: String| Err(Error::Invalid { what: "commit", message });
    let mut seen = std::collections::HashSet::new();
    for file in files {
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

impl Catalog {
    /// Wakes commit listeners. Sent after the commit, in its own transaction, on purpose: a
    /// `NOTIFY` inside the commit transaction holds a database-wide lock until that commit's WAL
    /// is flushed, which serialises every committer and defeats group commit. Notifications are
    /// hints (listeners re-read the catalog), so losing one to a crash right here only delays a
    /// wake-up until the listener's next periodic check.
    pub(crate) async fn notify_commit(&self, committed: &Committed) {
        let payload = json!({
            "dataset": committed.dataset, "snapshot": committed.snapshot,
            "visibility_token": committed.visibility_token,
        });
        self.notify_relaxed(COMMITS_CHANNEL, &payload.to_string()).await;
    }

    /// Sends one wake-up on `channel` without waiting for its WAL flush (see above), in one
    /// transaction with the other wake-ups this process sends meanwhile (`wakeup_batch.rs`).
    pub(crate) async fn notify_relaxed(&self, channel: &str, payload: &str) {
        self.wakeups.notify(&self.pool, channel, payload).await;
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
            let same = crate::canonical_type(&other) == crate::canonical_type(&c.data_type);
            (!same).then(|| format!("{} ({} → {})", c.name, c.data_type, other))
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
