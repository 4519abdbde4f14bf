//! The runnable-task decision: which tasks a scheduler should lease now.
//!
//! A task is runnable when it is `Pending` or `Retrying`, its retry time (if any) has been
//! reached, and every dependency has `Succeeded`. Among runnable tasks, the oldest (lowest id)
//! go first, as long as neither the task's job nor the whole installation is at its
//! concurrency limit. A task whose dependency failed or was cancelled can never run: the plan
//! names it so that the caller fails it as `upstream_failed` instead of letting it wait forever.
//!
//! The decision is advisory: the catalog re-checks the state inside the lease transaction, so
//! two schedulers acting on the same plan still never produce two live attempts for one task.

use crate::{JobId, TaskId, TaskPhase};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// What the decision needs to know about one candidate task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    /// The task.
    pub id: TaskId,
    /// Its job, or `None` for a standalone task.
    pub job: Option<JobId>,
    /// Its current phase.
    pub phase: TaskPhase,
    /// When a `Retrying` task may start again.
    pub next_retry_at: Option<DateTime<Utc>>,
    /// The current phases of the tasks it depends on.
    pub dependency_phases: Vec<TaskPhase>,
}

/// Observed state: candidate tasks plus how many tasks are active (leased or running).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulingState {
    /// Tasks that may become runnable (in any order; non-candidates are ignored).
    pub tasks: Vec<TaskView>,
    /// Active tasks per job.
    pub active_per_job: HashMap<JobId, usize>,
    /// Active tasks in total, across jobs and standalone tasks.
    pub active_total: usize,
}

/// Concurrency limits; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConcurrencyLimits {
    /// At most this many active tasks in total.
    pub global: Option<usize>,
    /// At most this many active tasks per job (jobs not listed are unlimited).
    pub per_job: HashMap<JobId, usize>,
}

/// What a scheduler should do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Tasks to lease, in order.
    pub lease: Vec<TaskId>,
    /// Tasks that can never run because a dependency failed or was cancelled.
    pub upstream_failed: Vec<TaskId>,
}

/// Decides which tasks to lease at `now`.
pub fn runnable(state: &SchedulingState, limits: &ConcurrencyLimits, now: DateTime<Utc>) -> Plan {
    let mut candidates: Vec<&TaskView> =
        state.tasks.iter().filter(|task| matches!(task.phase, TaskPhase::Pending | TaskPhase::Retrying)).collect();
    candidates.sort_by_key(|task| task.id);

    let mut plan = Plan::default();
    let mut active_total = state.active_total;
    let mut active_per_job = state.active_per_job.clone();
    for task in candidates {
        if task.dependency_phases.iter().any(|phase| matches!(phase, TaskPhase::Failed | TaskPhase::Cancelled)) {
            plan.upstream_failed.push(task.id);
            continue;
        }
        let dependencies_done = task.dependency_phases.iter().all(|phase| *phase == TaskPhase::Succeeded);
        let retry_due = task.next_retry_at.is_none_or(|at| at <= now);
        if !dependencies_done || !retry_due {
            continue;
        }
        if limits.global.is_some_and(|cap| active_total >= cap) {
            // Keep scanning: later candidates may still be upstream-failed.
            continue;
        }
        if let Some(job) = task.job {
            let active = active_per_job.entry(job).or_insert(0);
            if limits.per_job.get(&job).is_some_and(|cap| *active >= *cap) {
                continue;
            }
            *active += 1;
        }
        active_total += 1;
        plan.lease.push(task.id);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskPhase::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).single().expect("valid time")
    }

    fn task(id: i64, job: Option<i64>, phase: TaskPhase, deps: &[TaskPhase]) -> TaskView {
        TaskView { id: TaskId(id), job: job.map(JobId), phase, next_retry_at: None, dependency_phases: deps.to_vec() }
    }

    fn ids(ids: &[i64]) -> Vec<TaskId> {
        ids.iter().copied().map(TaskId).collect()
    }

    #[test]
    fn dependency_and_phase_table() {
        let cases: &[(&str, TaskView, bool)] = &[
            ("pending, no deps", task(1, Some(1), Pending, &[]), true),
            ("pending, deps done", task(1, Some(1), Pending, &[Succeeded, Succeeded]), true),
            ("pending, one dep running", task(1, Some(1), Pending, &[Succeeded, Running]), false),
            ("pending, dep pending", task(1, Some(1), Pending, &[Pending]), false),
            ("pending, dep retrying", task(1, Some(1), Pending, &[Retrying]), false),
            ("pending, dep leased", task(1, Some(1), Pending, &[Leased]), false),
            ("retrying, no time", task(1, Some(1), Retrying, &[]), true),
            ("leased", task(1, Some(1), Leased, &[]), false),
            ("running", task(1, Some(1), Running, &[]), false),
            ("succeeded", task(1, Some(1), Succeeded, &[]), false),
            ("failed", task(1, Some(1), Failed, &[]), false),
            ("cancelled", task(1, Some(1), Cancelled, &[]), false),
            ("standalone", task(1, None, Pending, &[]), true),
        ];
        for (name, view, expected) in cases {
            let state = SchedulingState { tasks: vec![view.clone()], ..Default::default() };
            let plan = runnable(&state, &ConcurrencyLimits::default(), now());
            assert_eq!(plan.lease == ids(&[1]), *expected, "case {name}: {plan:?}");
            assert!(plan.upstream_failed.is_empty(), "case {name}");
        }
    }

    #[test]
    fn retry_time_table() {
        let second = chrono::Duration::seconds(1);
        let cases = [(Some(now() - second), true), (Some(now()), true), (Some(now() + second), false), (None, true)];
        for (at, expected) in cases {
            let mut view = task(1, Some(1), Retrying, &[]);
            view.next_retry_at = at;
            let state = SchedulingState { tasks: vec![view], ..Default::default() };
            let plan = runnable(&state, &ConcurrencyLimits::default(), now());
            assert_eq!(!plan.lease.is_empty(), expected, "retry at {at:?}");
        }
    }

    #[test]
    fn failed_or_cancelled_dependencies_doom_the_task() {
        let state = SchedulingState {
            tasks: vec![
                task(1, Some(1), Pending, &[Succeeded, Failed]),
                task(2, Some(1), Pending, &[Cancelled]),
                task(3, Some(1), Retrying, &[Running, Failed]),
                task(4, Some(1), Pending, &[Succeeded]),
            ],
            ..Default::default()
        };
        let plan = runnable(&state, &ConcurrencyLimits::default(), now());
        assert_eq!(plan.upstream_failed, ids(&[1, 2, 3]));
        assert_eq!(plan.lease, ids(&[4]));
    }

    #[test]
    fn limits_table() {
        // Tasks 1..=3 in job 1, 4..=5 in job 2, 6 standalone; all runnable.
        let tasks: Vec<TaskView> = (1..=6)
            .map(|id| {
                let job = match id {
                    1..=3 => Some(1),
                    4..=5 => Some(2),
                    _ => None,
                };
                task(id, job, Pending, &[])
            })
            .collect();
        struct Case {
            name: &'static str,
            global: Option<usize>,
            per_job: &'static [(i64, usize)],
            active: &'static [(i64, usize)],
            active_total: usize,
            expected: &'static [i64],
        }
        let cases = [
            Case {
                name: "unlimited",
                global: None,
                per_job: &[],
                active: &[],
                active_total: 0,
                expected: &[1, 2, 3, 4, 5, 6],
            },
            Case { name: "global 2", global: Some(2), per_job: &[], active: &[], active_total: 0, expected: &[1, 2] },
            Case {
                name: "global 3, one active",
                global: Some(3),
                per_job: &[],
                active: &[],
                active_total: 1,
                expected: &[1, 2],
            },
            Case { name: "global full", global: Some(4), per_job: &[], active: &[], active_total: 4, expected: &[] },
            Case {
                name: "global over-full",
                global: Some(4),
                per_job: &[],
                active: &[],
                active_total: 9,
                expected: &[],
            },
            Case {
                name: "job 1 capped at 1",
                global: None,
                per_job: &[(1, 1)],
                active: &[],
                active_total: 0,
                expected: &[1, 4, 5, 6],
            },
            Case {
                name: "job 1 capped, already 1 active",
                global: None,
                per_job: &[(1, 1)],
                active: &[(1, 1)],
                active_total: 1,
                expected: &[4, 5, 6],
            },
            Case {
                name: "job 2 capped at 1",
                global: None,
                per_job: &[(2, 1)],
                active: &[],
                active_total: 0,
                expected: &[1, 2, 3, 4, 6],
            },
            Case {
                name: "both caps",
                global: Some(3),
                per_job: &[(1, 1), (2, 1)],
                active: &[],
                active_total: 0,
                expected: &[1, 4, 6],
            },
            Case {
                name: "job cap 0",
                global: None,
                per_job: &[(1, 0)],
                active: &[],
                active_total: 0,
                expected: &[4, 5, 6],
            },
        ];
        for Case { name, global, per_job, active, active_total, expected } in cases {
            let limits =
                ConcurrencyLimits { global, per_job: per_job.iter().map(|(job, cap)| (JobId(*job), *cap)).collect() };
            let state = SchedulingState {
                tasks: tasks.clone(),
                active_per_job: active.iter().map(|(job, n)| (JobId(*job), *n)).collect(),
                active_total,
            };
            let plan = runnable(&state, &limits, now());
            assert_eq!(plan.lease, ids(expected), "case {name}");
        }
    }

    #[test]
    fn oldest_tasks_go_first_whatever_the_input_order() {
        let state = SchedulingState {
            tasks: vec![
                task(9, Some(1), Pending, &[]),
                task(3, Some(1), Retrying, &[]),
                task(5, Some(1), Pending, &[]),
            ],
            ..Default::default()
        };
        let limits = ConcurrencyLimits { global: Some(2), ..Default::default() };
        assert_eq!(runnable(&state, &limits, now()).lease, ids(&[3, 5]));
    }

    #[test]
    fn a_full_installation_still_reports_doomed_tasks() {
        let state = SchedulingState {
            tasks: vec![task(1, Some(1), Pending, &[]), task(2, Some(1), Pending, &[Failed])],
            active_per_job: HashMap::new(),
            active_total: 10,
        };
        let limits = ConcurrencyLimits { global: Some(10), ..Default::default() };
        let plan = runnable(&state, &limits, now());
        assert!(plan.lease.is_empty());
        assert_eq!(plan.upstream_failed, ids(&[2]));
    }
}
