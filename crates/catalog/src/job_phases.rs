//! Phases that follow from other tasks' phases: tasks whose dependency failed fail as
//! `upstream_failed`, and each job takes its phase from its tasks'.

use crate::{Catalog, Result};
use duckmesh_core::{JobId, JobPhase, TaskId, TaskPhase};
use serde_json::json;
use std::collections::HashMap;

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
}
