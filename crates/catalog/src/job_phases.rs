//! Phases that follow from other tasks' phases: tasks whose dependency failed fail as
//! `upstream_failed`, and each job takes its phase from its tasks'.

use crate::{Catalog, Result};
use duckmesh_core::{JobId, JobPhase, TaskId, TaskPhase};
use serde_json::json;

impl Catalog {
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
    ///
    /// Runs on every scheduling pass, so its cost must not grow with the size of a job: a job's
    /// phase needs only whether some task is unfinished, some has started, some failed and some
    /// was cancelled (`JobPhase::from_task_counts`), and each of those is one probe of the
    /// `(job_id, phase)` index, never a count over the job's tasks.
    pub async fn refresh_jobs(&self) -> Result<Vec<(JobId, JobPhase)>> {
        let rows: Vec<(i64, String, bool, bool, bool, bool)> = sqlx::query_as(
            "SELECT j.id, j.phase, \
                 EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = j.id \
                         AND t.phase IN ('Pending', 'Retrying', 'Leased', 'Running')) AS unfinished, \
                 EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = j.id \
                         AND t.phase IN ('Retrying', 'Leased', 'Running', 'Succeeded', 'Failed', 'Cancelled')) AS started, \
                 EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = j.id AND t.phase = 'Failed') AS failed, \
                 EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = j.id AND t.phase = 'Cancelled') AS cancelled \
             FROM jobs j \
             WHERE j.phase NOT IN ('Succeeded', 'Failed', 'Cancelled') \
               AND EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = j.id) \
             ORDER BY j.id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut per_job: Vec<(i64, String, JobPhase)> = Vec::with_capacity(rows.len());
        for (job, stored, unfinished, started, failed, cancelled) in rows {
            // One task standing for each kind present is enough for the phase rule.
            let present = [
                (TaskPhase::Pending, unfinished),
                (TaskPhase::Running, unfinished && started),
                (TaskPhase::Succeeded, !unfinished || started),
                (TaskPhase::Failed, failed),
                (TaskPhase::Cancelled, cancelled),
            ];
            let phase = JobPhase::from_task_counts(present.into_iter().filter(|(_, here)| *here).map(|(p, _)| (p, 1)));
            per_job.push((job, stored, phase));
        }
        let mut changed = Vec::new();
        for (job, stored, phase) in per_job {
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
}
