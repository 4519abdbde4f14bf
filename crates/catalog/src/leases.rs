//! Leases: the runnable-task decision put into practice, then confirming and heartbeating the
//! attempt that holds a lease.
//!
//! Each task has at most one live attempt — the transaction that takes a lease moves the task
//! out of `Pending`/`Retrying` under its row lock, and a unique index on live attempts backs
//! that up — so duplicate wake-ups (two schedulers, the same event twice) lease nothing twice.

use crate::model::{AttemptRef, Lease};
use crate::{Catalog, Result};
use chrono::{DateTime, Utc};
use duckmesh_core::schedule::{ConcurrencyLimits, Plan, SchedulingState, TaskView, runnable};
use duckmesh_core::{AttemptId, Fence, JobId, TaskId};
use sqlx::Row;
use std::collections::HashMap;
use std::time::Duration;

/// How [`Catalog::schedule`] should lease.
#[derive(Debug, Clone)]
pub struct ScheduleOptions {
    /// Recorded on each attempt as the scheduler that leased it.
    pub runner: String,
    /// Cap on active tasks across the installation.
    pub global_limit: Option<usize>,
    /// Lease length; the catalog's default when `None`.
    pub lease: Option<Duration>,
    /// At most this many candidate tasks are examined per call.
    pub max_candidates: i64,
}

impl ScheduleOptions {
    /// Defaults: no global cap, the catalog's lease, 1,000 candidates per call.
    pub fn new(runner: impl Into<String>) -> Self {
        Self { runner: runner.into(), global_limit: None, lease: None, max_candidates: 1_000 }
    }
}

/// What [`Catalog::lease_batch`] should lease.
#[derive(Debug, Clone, Copy)]
pub struct BatchLease<'a> {
    /// The tasks that may be leased, as the caller's runnable decision chose them.
    pub candidates: &'a [TaskId],
    /// At most this many leases.
    pub limit: usize,
    /// Recorded on each attempt: the scheduler that leased it, or with `confirm` the runner.
    pub runner: &'a str,
    /// Lease length.
    pub lease: Duration,
    /// The leasing process runs the attempts itself: they start `Running`, confirmed.
    pub confirm: bool,
}

/// What one scheduling pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scheduled {
    /// Leases taken, to be handed to runners.
    pub leased: Vec<Lease>,
    /// Tasks failed because a dependency failed or was cancelled.
    pub upstream_failed: Vec<TaskId>,
}

impl Catalog {
    /// Reads what the runnable-task decision needs: candidate tasks whose dependencies are all
    /// finished, active counts, per-job caps, and the database clock.
    pub async fn scheduling_state(
        &self,
        max_candidates: i64,
    ) -> Result<(SchedulingState, HashMap<JobId, usize>, DateTime<Utc>)> {
        let mut conn = self.pool.acquire().await?;
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(&mut *conn).await?;
        let rows = sqlx::query(
            "SELECT t.id, t.job_id, t.phase, t.next_retry_at, \
                 coalesce((SELECT array_agg(d.phase) FROM tasks d WHERE d.id = ANY (t.depends_on)), '{}') AS dep_phases \
             FROM tasks t \
             WHERE t.phase IN ('Pending', 'Retrying') \
               AND NOT EXISTS (SELECT 1 FROM tasks d WHERE d.id = ANY (t.depends_on) \
                               AND d.phase NOT IN ('Succeeded', 'Failed', 'Cancelled')) \
             ORDER BY t.id LIMIT $1",
        )
        .bind(max_candidates.max(1))
        .fetch_all(&mut *conn)
        .await?;
        let mut tasks = Vec::with_capacity(rows.len());
        for row in &rows {
            let phase: String = row.try_get("phase")?;
            let deps: Vec<String> = row.try_get("dep_phases")?;
            tasks.push(TaskView {
                id: TaskId(row.try_get("id")?),
                job: row.try_get::<Option<i64>, _>("job_id")?.map(JobId),
                phase: phase.parse()?,
                next_retry_at: row.try_get("next_retry_at")?,
                dependency_phases: deps.iter().map(|p| p.parse()).collect::<Result<_, _>>()?,
            });
        }
        let active: Vec<(Option<i64>, i64)> =
            sqlx::query_as("SELECT job_id, count(*) FROM tasks WHERE phase IN ('Leased', 'Running') GROUP BY job_id")
                .fetch_all(&mut *conn)
                .await?;
        let caps: Vec<(i64, i32)> = sqlx::query_as(
            "SELECT id, max_parallel FROM jobs WHERE max_parallel IS NOT NULL \
             AND phase NOT IN ('Succeeded', 'Failed', 'Cancelled')",
        )
        .fetch_all(&mut *conn)
        .await?;
        let state = SchedulingState {
            tasks,
            active_total: active.iter().map(|(_, n)| *n as usize).sum(),
            active_per_job: active.iter().filter_map(|(job, n)| Some((JobId((*job)?), *n as usize))).collect(),
        };
        let per_job = caps.into_iter().map(|(job, cap)| (JobId(job), cap.max(0) as usize)).collect();
        Ok((state, per_job, now))
    }

    /// One scheduling pass: decide (purely) which tasks to lease, fail tasks whose
    /// dependencies failed, and take the leases. A task that another scheduler leased in the
    /// meantime is skipped, never leased twice.
    pub async fn schedule(&self, options: &ScheduleOptions) -> Result<Scheduled> {
        let (state, per_job, now) = self.scheduling_state(options.max_candidates).await?;
        let limits = ConcurrencyLimits { global: options.global_limit, per_job };
        let Plan { lease, upstream_failed } = runnable(&state, &limits, now);
        let mut scheduled = Scheduled::default();
        if !upstream_failed.is_empty() {
            scheduled.upstream_failed = self.fail_upstream(&upstream_failed).await?;
        }
        let duration = options.lease.unwrap_or(self.config.lease);
        for task in lease {
            if let Some(lease) = self.lease_task(task, &options.runner, duration).await? {
                scheduled.leased.push(lease);
            }
        }
        Ok(scheduled)
    }

    /// Takes a lease on one task: a new attempt with the next fencing token, expiring after
    /// `lease` unless heartbeated. Returns `None` when the task is not runnable (already
    /// leased, finished, waiting for a dependency or for its retry time) or the catalog is in
    /// emergency read-only mode, where its commit would be refused anyway.
    ///
    /// Attempt numbers count every try; `tasks.attempts` counts the ones held against
    /// `maxAttempts`, which leaves out read-only refusals.
    pub async fn lease_task(&self, task: TaskId, runner: &str, lease: Duration) -> Result<Option<Lease>> {
        let lease_ms = i32::try_from(lease.as_millis()).unwrap_or(i32::MAX).max(1);
        let row = sqlx::query(
            "WITH leased AS ( \
                 UPDATE tasks t SET phase = 'Leased', attempts = t.attempts + 1, fence = nextval('fence_seq'), \
                     next_retry_at = NULL, updated_at = clock_timestamp(), \
                     started_at = coalesce(t.started_at, clock_timestamp()) \
                 WHERE t.id = $1 AND t.phase IN ('Pending', 'Retrying') AND t.attempts < t.max_attempts \
                   AND (t.next_retry_at IS NULL OR t.next_retry_at <= clock_timestamp()) \
                   AND NOT duckmesh_read_only() \
                   AND NOT EXISTS (SELECT 1 FROM tasks d WHERE d.id = ANY (t.depends_on) AND d.phase <> 'Succeeded') \
                 RETURNING t.id, t.attempts, t.fence) \
             INSERT INTO attempts (task_id, n, fence, state, runner, lease_ms, lease_expires_at) \
             SELECT l.id, (SELECT coalesce(max(a.n), 0) + 1 FROM attempts a WHERE a.task_id = l.id), l.fence, \
                 'Leased', $2, $3, clock_timestamp() + make_interval(secs => $4) FROM leased l \
             RETURNING id, task_id, n, fence, lease_expires_at",
        )
        .bind(task.0)
        .bind(runner)
        .bind(lease_ms)
        .bind(f64::from(lease_ms) / 1000.0)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(lease_from_row).transpose()
    }

    /// Takes leases on up to `batch.limit` of `batch.candidates` in one statement and one
    /// synchronous commit: the runnable ones (the same conditions as [`Catalog::lease_task`]),
    /// oldest first, skipping any row another transaction holds locked (`FOR UPDATE SKIP
    /// LOCKED`) rather than waiting for it. Each leased task gets its own attempt and fencing
    /// token, exactly as if leased alone; the result is in task order and may be shorter than
    /// the limit (empty when nothing is runnable or the catalog is read-only).
    ///
    /// The candidates are the caller's runnable decision (per-job and global caps applied, as
    /// [`Catalog::schedule`] does); this call re-checks what the catalog must guarantee itself.
    /// A skipped task is not lost: it is either being leased by someone else or stays runnable
    /// for the next pass.
    ///
    /// With [`BatchLease::confirm`], the leasing process is the one that runs the attempts, so
    /// the confirm is folded into the lease: the attempts start `Running` with `confirmed_at`
    /// and `heartbeat_at` set and `runner` recorded, and no [`Catalog::confirm_attempt`] round
    /// trip is needed. Everything fenced afterwards (heartbeat, commit, fail, the reaper) is
    /// unchanged.
    pub async fn lease_batch(&self, batch: &BatchLease<'_>) -> Result<Vec<Lease>> {
        if batch.candidates.is_empty() || batch.limit == 0 {
            return Ok(Vec::new());
        }
        let lease_ms = i32::try_from(batch.lease.as_millis()).unwrap_or(i32::MAX).max(1);
        let candidates: Vec<i64> = batch.candidates.iter().map(|task| task.0).collect();
        let limit = i64::try_from(batch.limit).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "WITH leased AS ( \
                 UPDATE tasks t SET phase = CASE WHEN $5 THEN 'Running' ELSE 'Leased' END, \
                     attempts = t.attempts + 1, fence = nextval('fence_seq'), next_retry_at = NULL, \
                     updated_at = clock_timestamp(), started_at = coalesce(t.started_at, clock_timestamp()) \
                 WHERE t.id IN ( \
                     SELECT c.id FROM tasks c \
                     WHERE c.id = ANY ($1) AND c.phase IN ('Pending', 'Retrying') AND c.attempts < c.max_attempts \
                       AND (c.next_retry_at IS NULL OR c.next_retry_at <= clock_timestamp()) \
                       AND NOT duckmesh_read_only() \
                       AND NOT EXISTS (SELECT 1 FROM tasks d WHERE d.id = ANY (c.depends_on) AND d.phase <> 'Succeeded') \
                     ORDER BY c.id LIMIT $2 FOR UPDATE SKIP LOCKED) \
                   AND t.phase IN ('Pending', 'Retrying') \
                 RETURNING t.id, t.attempts, t.fence) \
             INSERT INTO attempts (task_id, n, fence, state, runner, lease_ms, lease_expires_at, confirmed_at, heartbeat_at) \
             SELECT l.id, (SELECT coalesce(max(a.n), 0) + 1 FROM attempts a WHERE a.task_id = l.id), l.fence, \
                 CASE WHEN $5 THEN 'Running' ELSE 'Leased' END, $3, $4, \
                 clock_timestamp() + $4 * interval '1 millisecond', \
                 CASE WHEN $5 THEN clock_timestamp() END, CASE WHEN $5 THEN clock_timestamp() END \
             FROM leased l ORDER BY l.id \
             RETURNING id, task_id, n, fence, lease_expires_at",
        )
        .bind(&candidates)
        .bind(limit)
        .bind(batch.runner)
        .bind(lease_ms)
        .bind(batch.confirm)
        .fetch_all(&self.pool)
        .await?;
        let mut leases = rows.iter().map(lease_from_row).collect::<Result<Vec<_>>>()?;
        leases.sort_by_key(|lease| lease.task);
        Ok(leases)
    }

    /// The runner reports that it started: the attempt becomes `Running` (task too), the
    /// lease is renewed, and `runner` (pod or process name) is recorded, only while the attempt
    /// is current (as for [`Catalog::heartbeat`]). Idempotent.
    ///
    /// Like heartbeats, this write does not wait for its WAL flush (`synchronous_commit = off`
    /// for this transaction only): losing it in a database crash merely leaves the attempt
    /// `Leased` or its lease shorter, and every commit re-checks the lease anyway. Leases and
    /// commits stay fully synchronous.
    pub async fn confirm_attempt(&self, attempt: AttemptRef, runner: Option<&str>) -> Result<DateTime<Utc>> {
        let confirmed: Option<DateTime<Utc>> = sqlx::query_scalar(
            "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)), \
             confirmed AS ( \
                 UPDATE attempts a SET state = 'Running', confirmed_at = coalesce(a.confirmed_at, clock_timestamp()), \
                     heartbeat_at = clock_timestamp(), runner = coalesce($3, a.runner), \
                     lease_expires_at = clock_timestamp() + a.lease_ms * interval '1 millisecond' \
                 FROM tasks t, relaxed \
                 WHERE a.id = $1 AND t.id = a.task_id AND duckmesh_attempt_refusal( \
                     $2, a.fence, t.fence, a.state, t.phase, a.lease_expires_at, clock_timestamp()) IS NULL \
                 RETURNING a.task_id, a.lease_expires_at) \
             UPDATE tasks t SET phase = 'Running', updated_at = clock_timestamp() \
             FROM confirmed c WHERE t.id = c.task_id RETURNING c.lease_expires_at",
        )
        .bind(attempt.attempt.0)
        .bind(attempt.fence.0)
        .bind(runner)
        .fetch_optional(&self.pool)
        .await?;
        match confirmed {
            Some(expires) => Ok(expires),
            None => Err(self.diagnose(attempt).await),
        }
    }

    /// Renews the lease, only while the attempt is current (the fence rule,
    /// `duckmesh_attempt_refusal`: live, holding the task's fence, not expired). Any other
    /// answer means the runner must stop at once (self-fencing). Written without waiting for the
    /// WAL flush, for the reason given at [`Catalog::confirm_attempt`].
    pub async fn heartbeat(&self, attempt: AttemptRef) -> Result<DateTime<Utc>> {
        let renewed: Option<DateTime<Utc>> = sqlx::query_scalar(
            "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)) \
             UPDATE attempts a SET heartbeat_at = clock_timestamp(), \
                 lease_expires_at = clock_timestamp() + a.lease_ms * interval '1 millisecond' \
             FROM tasks t, relaxed \
             WHERE a.id = $1 AND t.id = a.task_id AND duckmesh_attempt_refusal( \
                 $2, a.fence, t.fence, a.state, t.phase, a.lease_expires_at, clock_timestamp()) IS NULL \
             RETURNING a.lease_expires_at",
        )
        .bind(attempt.attempt.0)
        .bind(attempt.fence.0)
        .fetch_optional(&self.pool)
        .await?;
        match renewed {
            Some(expires) => Ok(expires),
            None => Err(self.diagnose(attempt).await),
        }
    }
}

/// A lease as the lease statements return it.
fn lease_from_row(row: &sqlx::postgres::PgRow) -> Result<Lease> {
    let n: i32 = row.try_get("n")?;
    Ok(Lease {
        task: TaskId(row.try_get("task_id")?),
        attempt: AttemptId(row.try_get("id")?),
        number: n as u32,
        fence: Fence(row.try_get("fence")?),
        expires_at: row.try_get("lease_expires_at")?,
    })
}
