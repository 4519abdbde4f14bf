//! Ending an attempt that did not succeed — a failure its runner reported, or a lease that ran
//! out because its runner died — and deciding whether its task retries or fails (taking its
//! waiting dependents with it).

use crate::fencing::LockedAttempt;
use crate::model::{AttemptRef, FailOutcome, Failure};
use crate::{Catalog, Result, seconds, truncate};
use chrono::{DateTime, Utc};
use duckmesh_core::{AttemptId, AttemptState, Fence, TaskId};
use serde_json::json;
use sqlx::{Postgres, Transaction};

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

impl Catalog {
    /// The runner reports a classified failure. A retryable failure with attempts left sends
    /// the task to `Retrying` after a jittered backoff; otherwise the task fails terminally and
    /// its dependents fail as `upstream_failed`. A commit refused by the read-only switch
    /// always retries and does not use up an attempt. A stale attempt changes nothing.
    pub async fn fail_attempt(&self, attempt: AttemptRef, failure: &Failure) -> Result<FailOutcome> {
        let mut tx = self.pool.begin().await?;
        let locked = LockedAttempt::lock_existing(&mut tx, attempt).await?;
        locked.ensure_current(false)?;
        let outcome = self.retire(&mut tx, &locked, failure, AttemptState::Failed).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Retires live attempts whose lease has run out (their runner died, hung or was
    /// partitioned away) so their tasks are retried or failed, never lost. Attempts that are
    /// locked right now (for example committing) are skipped and left to their own checks.
    pub async fn reap_expired_leases(&self, limit: i64) -> Result<Vec<Reaped>> {
        let expired: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, fence FROM attempts WHERE state IN ('Leased', 'Running') \
               AND lease_expires_at < clock_timestamp() ORDER BY lease_expires_at LIMIT $1",
        )
        .bind(limit.max(1))
        .fetch_all(&self.pool)
        .await?;
        let mut reaped = Vec::new();
        for (id, fence) in expired {
            let mut tx = self.pool.begin().await?;
            // The reaper acts for the attempt itself (its own fence) and judges expiry and
            // supersession below, not by the fence rule: it retires what the rule refuses.
            let attempt = AttemptRef { attempt: AttemptId(id), fence: Fence(fence) };
            let Some(locked) = LockedAttempt::lock(&mut tx, attempt, true).await? else {
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
