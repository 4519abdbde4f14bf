//! Read paths: datasets, snapshots and their files, jobs, tasks, attempts, backlog figures.

use crate::model::*;
use crate::{Catalog, Error, Result};
use chrono::{DateTime, Utc};
use duckmesh_core::{AttemptId, DatasetId, Fence, JobId, JobPhase, SnapshotId, TaskId};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use std::collections::BTreeMap;

pub(crate) const DATASET_COLUMNS: &str = "id, namespace, name, uid, generation, tenant, spec, schema, \
    current_snapshot_id, visibility_token, file_count, row_count, byte_count, last_commit_at";
pub(crate) const JOB_COLUMNS: &str =
    "id, namespace, name, uid, generation, phase, max_parallel, created_at, finished_at";
pub(crate) const TASK_COLUMNS: &str = "id, job_id, namespace, name, tenant, kind, spec, depends_on, phase, \
    attempts, max_attempts, timeout_seconds, fence, next_retry_at, output_dataset_id, output_mode, \
    output_snapshot_id, last_error_code, last_error_message, started_at, finished_at";
pub(crate) const SNAPSHOT_COLUMNS: &str = "dataset_id, id, parent_id, visibility_token, kind, task_id, attempt_id, \
    file_count, row_count, byte_count, manifest_path, committed_at";
const ATTEMPT_COLUMNS: &str = "id, task_id, n, fence, state, runner, lease_expires_at, heartbeat_at, \
    error_code, error_message";

/// Task backlog figures for metrics and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BacklogStats {
    /// Tasks waiting to run whose dependencies are done and whose retry time has come.
    pub runnable: i64,
    /// Seconds the oldest runnable task has been waiting.
    pub oldest_runnable_age_seconds: i64,
    /// Tasks holding a lease.
    pub active: i64,
    /// Live attempts whose lease has run out but that no reaper has retired yet.
    pub expired_unreaped: i64,
    /// Seconds by which the most overdue live lease has passed its expiry (lease lag).
    pub max_lease_lag_seconds: i64,
}

impl Catalog {
    /// A dataset by id.
    pub async fn dataset(&self, id: DatasetId) -> Result<DatasetRecord> {
        let sql = format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE id = $1");
        let row = sqlx::query(&sql).bind(id.0).fetch_optional(&self.pool).await?;
        row.map_or_else(|| Err(not_found(format!("dataset {id}"))), |row| dataset_from_row(&row))
    }

    /// A dataset by namespace and name.
    pub async fn dataset_by_name(&self, namespace: &str, name: &str) -> Result<DatasetRecord> {
        dataset_by_name_in(&self.pool, namespace, name).await
    }

    /// All datasets, optionally of one tenant, by namespace and name.
    pub async fn datasets(&self, tenant: Option<&str>) -> Result<Vec<DatasetRecord>> {
        let sql = format!(
            "SELECT {DATASET_COLUMNS} FROM datasets WHERE $1::text IS NULL OR tenant = $1 ORDER BY namespace, name"
        );
        let rows = sqlx::query(&sql).bind(tenant).fetch_all(&self.pool).await?;
        rows.iter().map(dataset_from_row).collect()
    }

    /// The dataset's latest committed snapshot, if it has any.
    pub async fn latest_snapshot(&self, dataset: DatasetId) -> Result<Option<Snapshot>> {
        let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE dataset_id = $1 ORDER BY id DESC LIMIT 1");
        let row = sqlx::query(&sql).bind(dataset.0).fetch_optional(&self.pool).await?;
        row.as_ref().map(snapshot_from_row).transpose()
    }

    /// One snapshot of a dataset.
    pub async fn snapshot(&self, dataset: DatasetId, id: SnapshotId) -> Result<Snapshot> {
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE dataset_id = $1 AND id = $2 AND expired_at IS NULL"
        );
        let row = sqlx::query(&sql).bind(dataset.0).bind(id.0).fetch_optional(&self.pool).await?;
        row.map_or_else(|| Err(not_found(format!("snapshot {id} of dataset {dataset}"))), |row| snapshot_from_row(&row))
    }

    /// A dataset's snapshots, newest first, at most `limit`, older than `before` if given
    /// (for paging through time travel).
    pub async fn snapshots(&self, dataset: DatasetId, before: Option<SnapshotId>, limit: i64) -> Result<Vec<Snapshot>> {
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE dataset_id = $1 AND ($2::bigint IS NULL OR id < $2) \
             AND expired_at IS NULL ORDER BY id DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(dataset.0)
            .bind(before.map(|s| s.0))
            .bind(limit.clamp(1, 10_000))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(snapshot_from_row).collect()
    }

    /// The files that make up snapshot `id` of a dataset, by path.
    pub async fn snapshot_files(&self, dataset: DatasetId, id: SnapshotId) -> Result<Vec<FileRecord>> {
        let rows = sqlx::query(
            "SELECT path, bytes, rows, sha256, partition, added_in FROM files \
             WHERE dataset_id = $1 AND added_in <= $2 AND (removed_in IS NULL OR removed_in > $2) \
             AND EXISTS (SELECT 1 FROM snapshots s WHERE s.dataset_id = $1 AND s.id = $2 AND s.expired_at IS NULL) \
             ORDER BY path",
        )
        .bind(dataset.0)
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(file_from_row).collect()
    }

    /// A job by id.
    pub async fn job(&self, id: JobId) -> Result<JobRecord> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        let row = sqlx::query(&sql).bind(id.0).fetch_optional(&self.pool).await?;
        row.map_or_else(|| Err(not_found(format!("job {id}"))), |row| job_from_row(&row))
    }

    /// The live (not deleted) job with this namespace and name.
    pub async fn job_by_name(&self, namespace: &str, name: &str) -> Result<JobRecord> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE namespace = $1 AND name = $2 AND deleted_at IS NULL");
        let row = sqlx::query(&sql).bind(namespace).bind(name).fetch_optional(&self.pool).await?;
        row.map_or_else(|| Err(not_found(format!("job {namespace}/{name}"))), |row| job_from_row(&row))
    }

    /// Live jobs, newest first.
    pub async fn jobs(&self) -> Result<Vec<JobRecord>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE deleted_at IS NULL ORDER BY id DESC");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// A bounded summary of a job (counts per phase, a few failed task names).
    pub async fn job_summary(&self, id: JobId) -> Result<JobSummary> {
        let job = self.job(id).await?;
        let counts: Vec<(String, i64)> =
            sqlx::query_as("SELECT phase, count(*) FROM tasks WHERE job_id = $1 GROUP BY phase ORDER BY phase")
                .bind(id.0)
                .fetch_all(&self.pool)
                .await?;
        let failed_tasks: Vec<String> =
            sqlx::query_scalar("SELECT name FROM tasks WHERE job_id = $1 AND phase = 'Failed' ORDER BY id LIMIT $2")
                .bind(id.0)
                .bind(JobSummary::FAILED_NAMES_CAP as i64)
                .fetch_all(&self.pool)
                .await?;
        let started_at: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT min(started_at) FROM tasks WHERE job_id = $1")
                .bind(id.0)
                .fetch_one(&self.pool)
                .await?;
        let first_run_at: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT min(a.confirmed_at) FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE t.job_id = $1",
        )
        .bind(id.0)
        .fetch_one(&self.pool)
        .await?;
        let total = counts.iter().map(|(_, n)| *n as u64).sum();
        Ok(JobSummary {
            job,
            counts: counts.into_iter().map(|(phase, n)| (phase, n as u64)).collect::<BTreeMap<_, _>>(),
            total,
            failed_tasks,
            started_at,
            first_run_at,
        })
    }

    /// A task by id.
    pub async fn task(&self, id: TaskId) -> Result<TaskRecord> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1");
        let row = sqlx::query(&sql).bind(id.0).fetch_optional(&self.pool).await?;
        row.map_or_else(|| Err(not_found(format!("task {id}"))), |row| task_from_row(&row))
    }

    /// A job's tasks in creation (topological) order.
    pub async fn tasks_of_job(&self, job: JobId) -> Result<Vec<TaskRecord>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE job_id = $1 ORDER BY id");
        let rows = sqlx::query(&sql).bind(job.0).fetch_all(&self.pool).await?;
        rows.iter().map(task_from_row).collect()
    }

    /// The task named `name` (its node name) of a job, if the job has one. One indexed row,
    /// however large the job: for callers that look up one task at a time (the operator's Task
    /// reconciler).
    pub async fn task_in_job(&self, job: JobId, name: &str) -> Result<Option<TaskRecord>> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE job_id = $1 AND name = $2");
        let row = sqlx::query(&sql).bind(job.0).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(task_from_row).transpose()
    }

    /// An attempt by id.
    pub async fn attempt(&self, id: AttemptId) -> Result<AttemptRecord> {
        let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE id = $1");
        let row = sqlx::query(&sql).bind(id.0).fetch_optional(&self.pool).await?;
        row.map_or_else(|| Err(not_found(format!("attempt {id}"))), |row| attempt_from_row(&row))
    }

    /// A task's attempts, oldest first.
    pub async fn attempts_of_task(&self, task: TaskId) -> Result<Vec<AttemptRecord>> {
        let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE task_id = $1 ORDER BY n");
        let rows = sqlx::query(&sql).bind(task.0).fetch_all(&self.pool).await?;
        rows.iter().map(attempt_from_row).collect()
    }

    /// Backlog and lease figures for the control-plane metrics.
    pub async fn backlog_stats(&self) -> Result<BacklogStats> {
        let row = sqlx::query(
            "WITH runnable AS ( \
                 SELECT t.created_at, t.next_retry_at FROM tasks t \
                 WHERE t.phase IN ('Pending', 'Retrying') \
                   AND (t.next_retry_at IS NULL OR t.next_retry_at <= clock_timestamp()) \
                   AND NOT EXISTS (SELECT 1 FROM tasks d WHERE d.id = ANY (t.depends_on) AND d.phase <> 'Succeeded')) \
             SELECT (SELECT count(*) FROM runnable) AS runnable, \
                    (SELECT coalesce(extract(epoch FROM clock_timestamp() - min(coalesce(next_retry_at, created_at))), 0) \
                       FROM runnable)::bigint AS oldest, \
                    (SELECT count(*) FROM tasks WHERE phase IN ('Leased', 'Running')) AS active, \
                    (SELECT count(*) FROM attempts WHERE state IN ('Leased', 'Running') \
                       AND lease_expires_at < clock_timestamp()) AS expired, \
                    (SELECT coalesce(extract(epoch FROM clock_timestamp() - min(lease_expires_at)), 0) \
                       FROM attempts WHERE state IN ('Leased', 'Running') \
                       AND lease_expires_at < clock_timestamp())::bigint AS lag",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(BacklogStats {
            runnable: row.try_get("runnable")?,
            oldest_runnable_age_seconds: row.try_get("oldest")?,
            active: row.try_get("active")?,
            expired_unreaped: row.try_get("expired")?,
            max_lease_lag_seconds: row.try_get("lag")?,
        })
    }
}

/// The dataset named `namespace/name`, read through `executor` (the pool or a transaction).
pub(crate) async fn dataset_by_name_in<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    namespace: &str,
    name: &str,
) -> Result<DatasetRecord> {
    let sql = format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE namespace = $1 AND name = $2");
    let row = sqlx::query(&sql).bind(namespace).bind(name).fetch_optional(executor).await?;
    row.map_or_else(|| Err(not_found(format!("dataset {namespace}/{name}"))), |row| dataset_from_row(&row))
}

fn not_found(what: String) -> Error {
    Error::NotFound { what }
}

pub(crate) fn dataset_from_row(row: &PgRow) -> Result<DatasetRecord> {
    let current: i64 = row.try_get("current_snapshot_id")?;
    let schema: Option<Json<Vec<Column>>> = row.try_get("schema")?;
    Ok(DatasetRecord {
        id: DatasetId(row.try_get("id")?),
        namespace: row.try_get("namespace")?,
        name: row.try_get("name")?,
        uid: row.try_get("uid")?,
        generation: row.try_get("generation")?,
        tenant: row.try_get("tenant")?,
        schema: schema.map(|json| json.0),
        spec: row.try_get("spec")?,
        current_snapshot: (current > 0).then_some(SnapshotId(current)),
        visibility_token: row.try_get("visibility_token")?,
        file_count: row.try_get("file_count")?,
        row_count: row.try_get("row_count")?,
        byte_count: row.try_get("byte_count")?,
        last_commit_at: row.try_get("last_commit_at")?,
    })
}

pub(crate) fn job_from_row(row: &PgRow) -> Result<JobRecord> {
    let phase: String = row.try_get("phase")?;
    let max_parallel: Option<i32> = row.try_get("max_parallel")?;
    Ok(JobRecord {
        id: JobId(row.try_get("id")?),
        namespace: row.try_get("namespace")?,
        name: row.try_get("name")?,
        uid: row.try_get("uid")?,
        generation: row.try_get("generation")?,
        phase: phase.parse::<JobPhase>()?,
        max_parallel: max_parallel.map(|cap| cap as u32),
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

pub(crate) fn task_from_row(row: &PgRow) -> Result<TaskRecord> {
    let phase: String = row.try_get("phase")?;
    let depends_on: Vec<i64> = row.try_get("depends_on")?;
    let output_dataset: Option<i64> = row.try_get("output_dataset_id")?;
    let output_mode: Option<String> = row.try_get("output_mode")?;
    let output = match (output_dataset, output_mode) {
        (Some(dataset), Some(mode)) => Some(TaskOutput {
            dataset: DatasetId(dataset),
            mode: CommitMode::parse(&mode).ok_or_else(|| Error::Corrupt(format!("output mode {mode:?}")))?,
        }),
        _ => None,
    };
    let attempts: i32 = row.try_get("attempts")?;
    let max_attempts: i32 = row.try_get("max_attempts")?;
    let timeout: Option<i32> = row.try_get("timeout_seconds")?;
    Ok(TaskRecord {
        id: TaskId(row.try_get("id")?),
        job: row.try_get::<Option<i64>, _>("job_id")?.map(JobId),
        namespace: row.try_get("namespace")?,
        name: row.try_get("name")?,
        tenant: row.try_get("tenant")?,
        kind: row.try_get("kind")?,
        spec: row.try_get("spec")?,
        depends_on: depends_on.into_iter().map(TaskId).collect(),
        phase: phase.parse()?,
        attempts: attempts as u32,
        max_attempts: max_attempts as u32,
        timeout_seconds: timeout.map(|t| t as u32),
        fence: row.try_get::<Option<i64>, _>("fence")?.map(Fence),
        next_retry_at: row.try_get("next_retry_at")?,
        output,
        output_snapshot: row.try_get::<Option<i64>, _>("output_snapshot_id")?.map(SnapshotId),
        last_error_code: row.try_get("last_error_code")?,
        last_error_message: row.try_get("last_error_message")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// A `files` row (path, bytes, rows, sha256, partition, added_in).
pub(crate) fn file_from_row(row: &PgRow) -> Result<FileRecord> {
    Ok(FileRecord {
        path: row.try_get("path")?,
        bytes: row.try_get("bytes")?,
        rows: row.try_get("rows")?,
        sha256: row.try_get("sha256")?,
        partition: row.try_get("partition")?,
        added_in: SnapshotId(row.try_get("added_in")?),
    })
}

pub(crate) fn snapshot_from_row(row: &PgRow) -> Result<Snapshot> {
    Ok(Snapshot {
        dataset: DatasetId(row.try_get("dataset_id")?),
        id: SnapshotId(row.try_get("id")?),
        parent: row.try_get::<Option<i64>, _>("parent_id")?.map(SnapshotId),
        visibility_token: row.try_get("visibility_token")?,
        kind: row.try_get("kind")?,
        task: row.try_get::<Option<i64>, _>("task_id")?.map(TaskId),
        attempt: row.try_get::<Option<i64>, _>("attempt_id")?.map(AttemptId),
        file_count: row.try_get("file_count")?,
        row_count: row.try_get("row_count")?,
        byte_count: row.try_get("byte_count")?,
        manifest_path: row.try_get("manifest_path")?,
        committed_at: row.try_get("committed_at")?,
    })
}

fn attempt_from_row(row: &PgRow) -> Result<AttemptRecord> {
    let state: String = row.try_get("state")?;
    let n: i32 = row.try_get("n")?;
    Ok(AttemptRecord {
        id: AttemptId(row.try_get("id")?),
        task: TaskId(row.try_get("task_id")?),
        number: n as u32,
        fence: Fence(row.try_get("fence")?),
        state: state.parse()?,
        runner: row.try_get("runner")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        heartbeat_at: row.try_get("heartbeat_at")?,
        error_code: row.try_get("error_code")?,
        error_message: row.try_get("error_message")?,
    })
}
