//! The fence rule from Rust: an attempt and its task locked for the rest of a transaction and
//! judged, in the same statement, by the catalog's one fence rule, and the diagnosis of a fenced
//! call the catalog refused.
//!
//! Every fenced action — confirming, heartbeating, committing, completing, failing — presents
//! the attempt's fencing token; only the task's current, live attempt may act. The rule itself
//! is the SQL function `duckmesh_attempt_refusal` (migration 0007), which the confirm and
//! heartbeat statements and the commit function ask too; this module only turns its answer into
//! the typed error.

use crate::model::{AttemptRef, TaskOutput};
use crate::{Catalog, CommitMode, Error, Result};
use chrono::{DateTime, Utc};
use duckmesh_core::{AttemptId, AttemptState, DatasetId, Fence, JobId, TaskId, TaskPhase};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};

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
    /// The fence presented when the attempt was locked.
    presented: Fence,
    /// What the fence rule said of `presented` under the lock (`None`: the attempt may act).
    refusal: Option<Refusal>,
}

/// Why the fence rule (`duckmesh_attempt_refusal`) refuses an attempt, in the order it checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The presented fence is not the attempt's, or the task has a newer attempt.
    StaleFence,
    /// The attempt is no longer `Leased` or `Running`.
    AttemptNotLive,
    /// The attempt is live but its task is no longer `Leased` or `Running`.
    TaskNotActive,
    /// The lease ran out (checked last, so nothing else is wrong).
    LeaseExpired,
}

impl Refusal {
    /// Reads the rule's answer.
    fn parse(code: Option<&str>) -> Result<Option<Self>> {
        Ok(match code {
            None => None,
            Some("stale_fence") => Some(Self::StaleFence),
            Some("attempt_not_live") => Some(Self::AttemptNotLive),
            Some("task_not_active") => Some(Self::TaskNotActive),
            Some("lease_expired") => Some(Self::LeaseExpired),
            Some(other) => return Err(Error::Corrupt(format!("duckmesh_attempt_refusal returned {other:?}"))),
        })
    }
}

/// Reads attempt `$1` and its task and judges the presented fence `$2` by the fence rule, on one
/// reading of the clock.
const LOCK_ATTEMPT: &str = "SELECT a.id, a.state, a.fence, a.runner, a.lease_expires_at, c.now, \
        t.id AS task_id, t.job_id, t.name, t.fence AS task_fence, t.phase, t.attempts, t.max_attempts, \
        t.output_dataset_id, t.output_mode, $2::bigint AS presented, \
        duckmesh_attempt_refusal($2, a.fence, t.fence, a.state, t.phase, a.lease_expires_at, c.now) AS refusal \
    FROM attempts a JOIN tasks t ON t.id = a.task_id CROSS JOIN (SELECT clock_timestamp() AS now) c \
    WHERE a.id = $1";

impl LockedAttempt {
    fn from_row(row: &PgRow) -> Result<Self> {
        let state: String = row.try_get("state")?;
        let phase: String = row.try_get("phase")?;
        let attempts: i32 = row.try_get("attempts")?;
        let max_attempts: i32 = row.try_get("max_attempts")?;
        let output_dataset: Option<i64> = row.try_get("output_dataset_id")?;
        let output_mode: Option<String> = row.try_get("output_mode")?;
        let refusal: Option<String> = row.try_get("refusal")?;
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
            presented: Fence(row.try_get("presented")?),
            refusal: Refusal::parse(refusal.as_deref())?,
        })
    }

    /// Locks the attempt and its task (`FOR UPDATE`) and judges the fence it presents, or with
    /// `skip_locked` returns `None` when another transaction holds them.
    pub(crate) async fn lock(
        tx: &mut Transaction<'_, Postgres>,
        attempt: AttemptRef,
        skip_locked: bool,
    ) -> Result<Option<Self>> {
        let sql = if skip_locked {
            format!("{LOCK_ATTEMPT} FOR UPDATE OF a, t SKIP LOCKED")
        } else {
            format!("{LOCK_ATTEMPT} FOR UPDATE OF a, t")
        };
        let row = sqlx::query(&sql).bind(attempt.attempt.0).bind(attempt.fence.0).fetch_optional(&mut **tx).await?;
        row.as_ref().map(Self::from_row).transpose()
    }

    /// Locks an attempt that must exist.
    pub(crate) async fn lock_existing(tx: &mut Transaction<'_, Postgres>, attempt: AttemptRef) -> Result<Self> {
        Self::lock(tx, attempt, false)
            .await?
            .ok_or_else(|| Error::NotFound { what: format!("attempt {}", attempt.attempt) })
    }

    /// Fails, with the error that names the reason, unless the fence rule let the presented fence
    /// act: it is the task's current fence and the attempt is live (and, when asked, its lease
    /// has not run out).
    pub(crate) fn ensure_current(&self, require_unexpired: bool) -> Result<()> {
        match self.refusal {
            None => Ok(()),
            Some(Refusal::StaleFence) => Err(Error::StaleFence {
                attempt: self.attempt,
                task: self.task,
                presented: self.presented,
                current: self.task_fence.unwrap_or(self.fence),
            }),
            Some(Refusal::AttemptNotLive) => {
                Err(Error::AttemptNotActive { attempt: self.attempt, state: self.state.to_string() })
            }
            Some(Refusal::TaskNotActive) => Err(Error::AttemptNotActive {
                attempt: self.attempt,
                state: format!("live, but its task is {}", self.task_phase),
            }),
            // The rule checks the lease last, so an attempt refused only for it is otherwise current.
            Some(Refusal::LeaseExpired) if !require_unexpired => Ok(()),
            Some(Refusal::LeaseExpired) => {
                Err(Error::LeaseExpired { attempt: self.attempt, expired_at: self.lease_expires_at })
            }
        }
    }
}

impl Catalog {
    /// Explains why a fenced call was refused.
    pub(crate) async fn diagnose(&self, attempt: AttemptRef) -> Error {
        let row = match sqlx::query(LOCK_ATTEMPT)
            .bind(attempt.attempt.0)
            .bind(attempt.fence.0)
            .fetch_optional(&self.pool)
            .await
        {
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
        match locked.ensure_current(true) {
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
}
