//! Leases: the runnable-task decision put into practice, confirming and heartbeating an
//! attempt, failing it with a classified error, and reaping attempts whose runner died.
//!
//! Each task has at most one live attempt — the transaction that takes a lease moves the task
//! out of `Pending`/`Retrying` under its row lock, and a unique index on live attempts backs
//! that up — so duplicate wake-ups (two schedulers, the same event twice) lease nothing twice.

use crate::model::{AttemptRef, FailOutcome, Failure, Lease, TaskOutput};
use crate::{Catalog, CommitMode, Error, Result, seconds};
use chrono::{DateTime, Utc};
use duckmesh_core::schedule::{ConcurrencyLimits, Plan, SchedulingState, TaskView, runnable};
use duckmesh_core::{AttemptId, AttemptState, DatasetId, Fence, JobId, JobPhase, TaskId, TaskPhase};
use serde_json::json;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};
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

/// What one scheduling pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scheduled {
    /// Leases taken, to be handed to runners.
    pub leased: Vec<Lease>,
    /// Tasks failed because a dependency failed or was cancelled.
    pub upstream_failed: Vec<TaskId>,
}

/// An expired attempt that a reaper retired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// The task.
    pub task: TaskId,
    /// The expired attempt.
    pub attempt: AttemptId,
    /// Who held it.
    pub runner: Option<String>,
    /// What happened to the task.
    pub outcome: FailOutcome,
}

/// An attempt and its task, locked for the rest of a transaction.
#[derive(Debug)]
pub(crate) struct LockedAttempt {
    pub attempt: AttemptId,
    pub task: TaskId,
    pub job: Option<JobId>,
    pub task_name: String,
    pub state: AttemptState,
    pub fence: Fence,
    pub runner: Option<String>,
    pub task_fence: Option<Fence>,
    pub task_phase: TaskPhase,
    pub lease_expires_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub output: Option<TaskOutput>,
}

const LOCK_ATTEMPT: &str = "SELECT a.id, a.state, a.fence, a.runner, a.lease_expires_at, clock_timestamp() AS now, \
        t.id AS task_id, t.job_id, t.name, t.fence AS task_fence, t.phase, t.attempts, t.max_attempts, \
        t.output_dataset_id, t.output_mode \
    FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE a.id = $1";

impl LockedAttempt {
    fn from_row(row: &PgRow) -> Result<Self> {
        let state: String = row.try_get("state")?;
        let phase: String = row.try_get("phase")?;
        let attempts: i32 = row.try_get("attempts")?;
        let max_attempts: i32 = row.try_get("max_attempts")?;
        let output_dataset: Option<i64> = row.try_get("output_dataset_id")?;
        let output_mode: Option<String> = row.try_get("output_mode")?;
        Ok(Self {
            attempt: AttemptId(row.try_get("id")?),
            task: TaskId(row.try_get("task_id")?),
            job: row.try_get::<Option<i64>, _>("job_id")?.map(JobId),
            task_name: row.try_get("name")?,
            state: state.parse()?,
            fence: Fence(row.try_get("fence")?),
            runner: row.try_get("runner")?,
            task_fence: row.try_get::<Option<i64>, _>("task_fence")?.map(Fence),
            task_phase: phase.parse()?,
            lease_expires_at: row.try_get("lease_expires_at")?,
            now: row.try_get("now")?,
            attempts: attempts as u32,
            max_attempts: max_attempts as u32,
            output: match (output_dataset, output_mode.as_deref().and_then(CommitMode::parse)) {
                (Some(dataset), Some(mode)) => Some(TaskOutput { dataset: DatasetId(dataset), mode }),
                _ => None,
            },
        })
    }

    /// Locks the attempt and its task (`FOR UPDATE`), or with `skip_locked` returns `None`
    /// when another transaction holds them.
    pub(crate) async fn lock(
        tx: &mut Transaction<'_, Postgres>,
        attempt: AttemptId,
        skip_locked: bool,
    ) -> Result<Option<Self>> {
        let sql = if skip_locked {
            format!("{LOCK_ATTEMPT} FOR UPDATE OF a, t SKIP LOCKED")
        } else {
            format!("{LOCK_ATTEMPT} FOR UPDATE OF a, t")
        };
        let row = sqlx::query(&sql).bind(attempt.0).fetch_optional(&mut **tx).await?;
        row.as_ref().map(Self::from_row).transpose()
    }

    /// Locks an attempt that must exist.
    pub(crate) async fn lock_existing(tx: &mut Transaction<'_, Postgres>, attempt: AttemptRef) -> Result<Self> {
        Self::lock(tx, attempt.attempt, false)
            .await?
            .ok_or_else(|| Error::NotFound { what: format!("attempt {}", attempt.attempt) })
    }

    /// Checks that `presented` is the task's current fence and the attempt is live (and, when
    /// asked, that its lease has not run out).
    pub(crate) fn ensure_current(&self, presented: Fence, require_unexpired: bool) -> Result<()> {
        let current = self.task_fence.unwrap_or(self.fence);
        if presented != self.fence || self.task_fence != Some(self.fence) {
            return Err(Error::StaleFence { attempt: self.attempt, task: self.task, presented, current });
        }
        if !self.state.is_live() {
            return Err(Error::AttemptNotActive { attempt: self.attempt, state: self.state.to_string() });
        }
        if !self.task_phase.is_active() {
            return Err(Error::AttemptNotActive {
                attempt: self.attempt,
                state: format!("live, but its task is {}", self.task_phase),
            });
        }
        if require_unexpired && self.lease_expires_at <= self.now {
            return Err(Error::LeaseExpired { attempt: self.attempt, expired_at: self.lease_expires_at });
        }
        Ok(())
    }
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
        row.map(|row| -> Result<Lease> {
            let n: i32 = row.try_get("n")?;
            Ok(Lease {
                task: TaskId(row.try_get("task_id")?),
                attempt: AttemptId(row.try_get("id")?),
                number: n as u32,
                fence: Fence(row.try_get("fence")?),
                expires_at: row.try_get("lease_expires_at")?,
            })
        })
        .transpose()
    }

    /// The runner reports that it started: the attempt becomes `Running` (task too), the
    /// lease is renewed, and `runner` (pod or process name) is recorded. Idempotent.
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
                 WHERE a.id = $1 AND a.fence = $2 AND a.state IN ('Leased', 'Running') \
                   AND a.lease_expires_at > clock_timestamp() AND t.id = a.task_id AND t.fence = a.fence \
                   AND t.phase IN ('Leased', 'Running') \
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

    /// Renews the lease, only while the attempt is live, holds the task's fence and has not
    /// expired. Any other answer means the runner must stop at once (self-fencing). Written
    /// without waiting for the WAL flush, for the reason given at [`Catalog::confirm_attempt`].
    pub async fn heartbeat(&self, attempt: AttemptRef) -> Result<DateTime<Utc>> {
        let renewed: Option<DateTime<Utc>> = sqlx::query_scalar(
            "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)) \
             UPDATE attempts a SET heartbeat_at = clock_timestamp(), \
                 lease_expires_at = clock_timestamp() + a.lease_ms * interval '1 millisecond' \
             FROM tasks t, relaxed \
             WHERE a.id = $1 AND a.fence = $2 AND a.state IN ('Leased', 'Running') \
               AND a.lease_expires_at > clock_timestamp() AND t.id = a.task_id AND t.fence = a.fence \
               AND t.phase IN ('Leased', 'Running') \
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

    /// Explains why a fenced call was refused.
    pub(crate) async fn diagnose(&self, attempt: AttemptRef) -> Error {
        let row = match sqlx::query(LOCK_ATTEMPT).bind(attempt.attempt.0).fetch_optional(&self.pool).await {
            Ok(row) => row,
            Err(error) => return error.into(),
        };
        let Some(row) = row else {
            return Error::NotFound { what: format!("attempt {}", attempt.attempt) };
        };
        let locked = match LockedAttempt::from_row(&row) {
            Ok(locked) => locked,
            Err(error) => return error,
        };
        match locked.ensure_current(attempt.fence, true) {
            Err(error) => error,
            // Fences only move forward and leases only run out, so a refusal cannot turn into
            // a pass; report the fence mismatch rather than invent success.
            Ok(()) => Error::StaleFence {
                attempt: attempt.attempt,
                task: locked.task,
                presented: attempt.fence,
                current: locked.task_fence.unwrap_or(locked.fence),
            },
        }
    }

    /// The runner reports a classified failure. A retryable failure with attempts left sends
    /// the task to `Retrying` after a jittered backoff; otherwise the task fails terminally and
    /// its dependents fail as `upstream_failed`. A commit refused by the read-only switch
    /// always retries and does not use up an attempt. A stale attempt changes nothing.
    pub async fn fail_attempt(&self, attempt: AttemptRef, failure: &Failure) -> Result<FailOutcome> {
        let mut tx = self.pool.begin().await?;
        let locked = LockedAttempt::lock_existing(&mut tx, attempt).await?;
        locked.ensure_current(attempt.fence, false)?;
        let outcome = self.retire(&mut tx, &locked, failure, AttemptState::Failed).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Retires live attempts whose lease has run out (their runner died, hung or was
    /// partitioned away) so their tasks are retried or failed, never lost. Attempts that are
    /// locked right now (for example committing) are skipped and left to their own checks.
    pub async fn reap_expired_leases(&self, limit: i64) -> Result<Vec<Reaped>> {
        let expired: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM attempts WHERE state IN ('Leased', 'Running') AND lease_expires_at < clock_timestamp() \
             ORDER BY lease_expires_at LIMIT $1",
        )
        .bind(limit.max(1))
        .fetch_all(&self.pool)
        .await?;
        let mut reaped = Vec::new();
        for id in expired {
            let mut tx = self.pool.begin().await?;
            let Some(locked) = LockedAttempt::lock(&mut tx, AttemptId(id), true).await? else {
                continue;
            };
            if !locked.state.is_live() || locked.lease_expires_at >= locked.now {
                continue; // finished or heartbeated since the scan
            }
            let failure = Failure {
                code: "lease_expired".into(),
                message: format!(
                    "attempt {} lost its lease at {} (runner {} stopped heartbeating)",
                    locked.attempts,
                    locked.lease_expires_at.to_rfc3339(),
                    locked.runner.as_deref().unwrap_or("unknown"),
                ),
                retryable: true,
            };
            let outcome = if locked.task_fence == Some(locked.fence) {
                self.retire(&mut tx, &locked, &failure, AttemptState::Expired).await?
            } else {
                // Superseded already; only the attempt row needs closing.
                close_attempt(&mut tx, &locked, &failure, AttemptState::Expired).await?;
                FailOutcome::Failed { dependents_failed: 0 }
            };
            tx.commit().await?;
            tracing::warn!(task = %locked.task, attempt = %locked.attempt, error_code = "lease_expired", "reaped an expired lease");
            reaped.push(Reaped { task: locked.task, attempt: locked.attempt, runner: locked.runner, outcome });
        }
        Ok(reaped)
    }

    /// Fails tasks that can never run because a dependency failed or was cancelled.
    /// Returns the tasks actually changed.
    pub async fn fail_upstream(&self, tasks: &[TaskId]) -> Result<Vec<TaskId>> {
        let ids: Vec<i64> = tasks.iter().map(|t| t.0).collect();
        let changed: Vec<i64> = sqlx::query_scalar(
            "UPDATE tasks t SET phase = 'Failed', finished_at = clock_timestamp(), updated_at = clock_timestamp(), \
                 last_error_code = 'upstream_failed', last_error_message = 'a dependency failed or was cancelled' \
             WHERE t.id = ANY ($1) AND t.phase IN ('Pending', 'Retrying') \
               AND EXISTS (SELECT 1 FROM tasks d WHERE d.id = ANY (t.depends_on) AND d.phase IN ('Failed', 'Cancelled')) \
             RETURNING t.id",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(changed.into_iter().map(TaskId).collect())
    }

    /// Records the phase of every unfinished job from its tasks' phases; returns the jobs
    /// whose phase changed. A job that reaches a terminal phase gets a `job_finished` outbox row.
    pub async fn refresh_jobs(&self) -> Result<Vec<(JobId, JobPhase)>> {
        let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
            "SELECT j.id, j.phase, t.phase, count(*) FROM jobs j JOIN tasks t ON t.job_id = j.id \
             WHERE j.phase NOT IN ('Succeeded', 'Failed', 'Cancelled') GROUP BY j.id, j.phase, t.phase ORDER BY j.id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut per_job: HashMap<i64, (String, Vec<(TaskPhase, u64)>)> = HashMap::new();
        for (job, job_phase, task_phase, count) in rows {
            let entry = per_job.entry(job).or_insert_with(|| (job_phase, Vec::new()));
            entry.1.push((task_phase.parse()?, count as u64));
        }
        let mut changed = Vec::new();
        for (job, (stored, counts)) in per_job {
            let phase = JobPhase::from_task_counts(counts.iter().copied());
            if phase.as_str() == stored {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE jobs SET phase = $2, \
                     finished_at = CASE WHEN $3 THEN clock_timestamp() ELSE finished_at END \
                 WHERE id = $1 AND phase NOT IN ('Succeeded', 'Failed', 'Cancelled')",
            )
            .bind(job)
            .bind(phase.as_str())
            .bind(phase.is_terminal())
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 1 {
                if phase.is_terminal() {
                    crate::outbox::enqueue_in(&mut tx, "job_finished", &json!({"job": job, "phase": phase})).await?;
                }
                changed.push((JobId(job), phase));
            }
            tx.commit().await?;
        }
        changed.sort_by_key(|(job, _)| *job);
        Ok(changed)
    }

    /// Moves a locked, current attempt's task to `Retrying` or `Failed`.
    pub(crate) async fn retire(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        locked: &LockedAttempt,
        failure: &Failure,
        attempt_state: AttemptState,
    ) -> Result<FailOutcome> {
        close_attempt(tx, locked, failure, attempt_state).await?;
        let message = truncate(&failure.message, 4_000);
        // A read-only refusal is the operator's doing, not the task's: it is given back so an
        // emergency switch left on for an hour does not fail every job that tried to commit.
        let excused = failure.is_read_only_refusal();
        if failure.retryable && (excused || locked.attempts < locked.max_attempts) {
            let delay = self.config.task_backoff.sample(locked.attempts.saturating_sub(1), &mut rand::rng());
            let next_retry_at: DateTime<Utc> = sqlx::query_scalar(
                "UPDATE tasks SET phase = 'Retrying', next_retry_at = clock_timestamp() + make_interval(secs => $2), \
                     attempts = attempts - CASE WHEN $5 THEN 1 ELSE 0 END, \
                     last_error_code = $3, last_error_message = $4, updated_at = clock_timestamp() \
                 WHERE id = $1 RETURNING next_retry_at",
            )
            .bind(locked.task.0)
            .bind(seconds(delay))
            .bind(&failure.code)
            .bind(message)
            .bind(excused)
            .fetch_one(&mut **tx)
            .await?;
            let payload = json!({
                "task": locked.task, "job": locked.job, "attempt": locked.attempt, "error_code": failure.code,
                "next_retry_at": next_retry_at, "attempt_counted": !excused,
            });
            crate::outbox::enqueue_in(tx, "task_retrying", &payload).await?;
            return Ok(FailOutcome::Retrying { next_retry_at });
        }
        sqlx::query(
            "UPDATE tasks SET phase = 'Failed', finished_at = clock_timestamp(), updated_at = clock_timestamp(), \
                 last_error_code = $2, last_error_message = $3 WHERE id = $1",
        )
        .bind(locked.task.0)
        .bind(&failure.code)
        .bind(message)
        .execute(&mut **tx)
        .await?;
        let dependents_failed = match locked.job {
            Some(job) => sqlx::query(
                "WITH RECURSIVE downstream AS ( \
                     SELECT id FROM tasks WHERE job_id = $1 AND $2 = ANY (depends_on) \
                     UNION SELECT t.id FROM tasks t JOIN downstream d ON d.id = ANY (t.depends_on) WHERE t.job_id = $1) \
                 UPDATE tasks SET phase = 'Failed', finished_at = clock_timestamp(), updated_at = clock_timestamp(), \
                     last_error_code = 'upstream_failed', last_error_message = $3 \
                 WHERE id IN (SELECT id FROM downstream) AND phase IN ('Pending', 'Retrying')",
            )
            .bind(job.0)
            .bind(locked.task.0)
            .bind(format!("dependency {:?} failed", locked.task_name))
            .execute(&mut **tx)
            .await?
            .rows_affected(),
            None => 0,
        };
        let payload = json!({
            "task": locked.task, "job": locked.job, "attempt": locked.attempt, "error_code": failure.code,
            "retryable": failure.retryable, "dependents_failed": dependents_failed,
        });
        crate::outbox::enqueue_in(tx, "task_failed", &payload).await?;
        Ok(FailOutcome::Failed { dependents_failed })
    }
}

async fn close_attempt(
    tx: &mut Transaction<'_, Postgres>,
    locked: &LockedAttempt,
    failure: &Failure,
    state: AttemptState,
) -> Result<()> {
    sqlx::query(
        "UPDATE attempts SET state = $2, finished_at = clock_timestamp(), error_code = $3, error_message = $4, \
             retryable = $5 WHERE id = $1",
    )
    .bind(locked.attempt.0)
    .bind(state.as_str())
    .bind(&failure.code)
    .bind(truncate(&failure.message, 4_000))
    .bind(failure.retryable)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Cuts a message at a character boundary so an enormous error cannot bloat the catalog.
pub(crate) fn truncate(message: &str, max_bytes: usize) -> &str {
    if message.len() <= max_bytes {
        return message;
    }
    let mut end = max_bytes;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("ééé", 3), "é"); // each é is two bytes
    }
}
