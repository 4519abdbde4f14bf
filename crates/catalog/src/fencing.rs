//! The fence rule in Rust: an attempt and its task locked for the rest of a transaction, the
//! check that the attempt presented is still the task's current one, and the diagnosis of a
//! fenced call the catalog refused.
//!
//! Every fenced action — confirming, heartbeating, committing, completing, failing — presents
//! the attempt's fencing token; only the task's current, live attempt may act.

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
}
