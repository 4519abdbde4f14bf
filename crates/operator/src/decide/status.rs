//! Status projection: what the `Dataset`, `Job` and `Task` statuses say, computed from the
//! catalog's records and the previous status — counts, phases, times, and Kubernetes-style
//! conditions whose transition times move only when their status changes.

use chrono::{DateTime, Utc};
use duckmesh_catalog::{AttemptRecord, DatasetRecord, JobSummary, TaskRecord};
use duckmesh_core::{JobPhase, TaskPhase};
use duckmesh_resources::{
    Condition, ConditionStatus, DatasetStatus, JobStatus, PhaseCounts, TaskStatus, set_condition,
};

/// Condition type: the resource is registered in the catalog and healthy.
pub const READY: &str = "Ready";
/// Condition type: the spec passed validation.
pub const VALID: &str = "Valid";
/// Condition type: the job or task finished successfully (`kubectl wait --for=condition=Succeeded`).
pub const SUCCEEDED: &str = "Succeeded";
/// Condition type: the job or task finished unsuccessfully (failed or cancelled).
pub const FAILED: &str = "Failed";
/// `Ready` reason (and Warning event) of a finished Job whose spec changed: not applied.
pub const SPEC_CHANGED_AFTER_FINISH: &str = "SpecChangedAfterFinish";

fn condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: String,
    now: &str,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        last_transition_time: now.to_owned(),
        observed_generation: generation,
    }
}

fn bool_status(value: bool) -> ConditionStatus {
    if value { ConditionStatus::True } else { ConditionStatus::False }
}

fn rfc3339(time: Option<DateTime<Utc>>) -> Option<String> {
    time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn counts_from(summary: &JobSummary) -> (PhaseCounts, Vec<(TaskPhase, u64)>) {
    let mut counts = PhaseCounts::default();
    let mut parsed = Vec::new();
    let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    for (phase, n) in &summary.counts {
        let Ok(phase) = phase.parse::<TaskPhase>() else { continue };
        parsed.push((phase, *n));
        let slot = match phase {
            TaskPhase::Pending | TaskPhase::Retrying => &mut counts.pending,
            TaskPhase::Leased | TaskPhase::Running => &mut counts.running,
            TaskPhase::Succeeded => &mut counts.succeeded,
            TaskPhase::Failed => &mut counts.failed,
            TaskPhase::Cancelled => &mut counts.cancelled,
        };
        *slot = slot.saturating_add(clamp(*n));
    }
    counts.total = clamp(summary.total);
    (counts, parsed)
}

/// A Job's status from the catalog's bounded summary: counts per phase, at most
/// [`JobSummary::FAILED_NAMES_CAP`] failed task names, phase, times, and the `Valid`, `Ready`,
/// `Succeeded` and `Failed` conditions (transition times kept from `previous` when a
/// condition's status did not change). Its size does not grow with the number of tasks.
pub fn job_status(
    summary: &JobSummary,
    previous: Option<&JobStatus>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> JobStatus {
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (counts, parsed) = counts_from(summary);
    // The recorded phase is refreshed by the scheduler loop; between two refreshes the counts
    // are newer. A recorded terminal phase (a cancellation) is final.
    let phase = if summary.job.phase.is_terminal() { summary.job.phase } else { JobPhase::from_task_counts(parsed) };
    let mut conditions = previous.map(|s| s.conditions.clone()).unwrap_or_default();
    set_condition(
        &mut conditions,
        condition(VALID, ConditionStatus::True, "SpecValid", "the spec is valid".into(), &at, generation),
    );
    set_condition(
        &mut conditions,
        condition(
            READY,
            ConditionStatus::True,
            "Registered",
            format!("{} tasks registered in the catalog", counts.total),
            &at,
            generation,
        ),
    );
    let (succeeded_reason, failed_reason, message) = match phase {
        JobPhase::Pending => ("Pending", "NotFailed", "no task has started yet".to_owned()),
        JobPhase::Running => (
            "Running",
            "NotFailed",
            format!("{} of {} tasks succeeded, {} running", counts.succeeded, counts.total, counts.running),
        ),
        JobPhase::Succeeded => ("AllTasksSucceeded", "NotFailed", format!("all {} tasks succeeded", counts.total)),
        JobPhase::Failed => (
            "TasksFailed",
            "TasksFailed",
            format!("{} of {} tasks failed: {}", counts.failed, counts.total, summary.failed_tasks.join(", ")),
        ),
        JobPhase::Cancelled => ("Cancelled", "Cancelled", "the job was cancelled".to_owned()),
    };
    set_condition(
        &mut conditions,
        condition(
            SUCCEEDED,
            bool_status(phase == JobPhase::Succeeded),
            succeeded_reason,
            message.clone(),
            &at,
            generation,
        ),
    );
    let failed = matches!(phase, JobPhase::Failed | JobPhase::Cancelled);
    set_condition(&mut conditions, condition(FAILED, bool_status(failed), failed_reason, message, &at, generation));
    JobStatus {
        phase: Some(phase.as_str().to_owned()),
        counts,
        failed_tasks: summary.failed_tasks.iter().take(JobSummary::FAILED_NAMES_CAP).cloned().collect(),
        // When a worker first actually ran (not when the first task was leased): the `Started`
        // event is announced when this appears.
        start_time: rfc3339(summary.first_run_at),
        // Until the scheduler records the finish time, keep the first one observed (a status
        // that changed on every reconcile would trigger the next one).
        completion_time: if phase.is_terminal() {
            rfc3339(summary.job.finished_at)
                .or_else(|| previous.and_then(|p| p.completion_time.clone()))
                .or(Some(at.clone()))
        } else {
            None
        },
        observed_generation: generation,
        conditions,
    }
}

/// What a finished Job's `Ready` condition and event say about a spec change that was not
/// applied.
pub fn spec_change_refused_message(ran: i64, generation: Option<i64>) -> String {
    let generation = generation.map_or_else(|| "a later generation".to_owned(), |g| format!("generation {g}"));
    format!(
        "the job finished running generation {ran}; the change in {generation} was not applied: a finished Job is \
         immutable. To run the new spec, create it under a new name, or delete this Job and apply it again"
    )
}

/// A finished Job's status after its spec changed: the outcome of the generation that ran is
/// kept (counts, phase, `Succeeded`/`Failed`), `observedGeneration` acknowledges the new
/// generation, and `Ready=False reason=SpecChangedAfterFinish` says it was not applied.
pub fn job_spec_change_refused(
    mut status: JobStatus,
    previous: Option<&JobStatus>,
    ran: i64,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> JobStatus {
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // Compare with the previous `Ready`, so its transition time moves only on a real change.
    let previous_ready = previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == READY));
    if let Some(ready) = previous_ready
        && let Some(slot) = status.conditions.iter_mut().find(|c| c.type_ == READY)
    {
        *slot = ready.clone();
    }
    set_condition(
        &mut status.conditions,
        condition(
            READY,
            ConditionStatus::False,
            SPEC_CHANGED_AFTER_FINISH,
            spec_change_refused_message(ran, generation),
            &at,
            generation,
        ),
    );
    status
}

/// Why a resource is not (yet) registered in the catalog, as a CamelCase condition reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// The spec breaks a validation rule; the user must change it.
    InvalidSpec,
    /// A task refers to a dataset that is not declared (yet); retried.
    DatasetNotFound,
    /// The catalog could not be reached; retried.
    CatalogUnavailable,
    /// The catalog refused the resource for another reason.
    Rejected,
}

impl NotReady {
    /// The condition reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::InvalidSpec => "InvalidSpec",
            Self::DatasetNotFound => "DatasetNotFound",
            Self::CatalogUnavailable => "CatalogUnavailable",
            Self::Rejected => "Rejected",
        }
    }

    /// Classifies an error code of the scheduler's `ApplyError` (or the catalog's).
    pub fn from_error_code(code: &str) -> Self {
        match code {
            "invalid_resource" | "invalid_spec" => Self::InvalidSpec,
            "dataset_not_found" => Self::DatasetNotFound,
            "catalog_unavailable" => Self::CatalogUnavailable,
            _ => Self::Rejected,
        }
    }
}

/// The conditions of a resource that could not be registered: `Ready=False` with the reason
/// (and `Valid=False` for an invalid spec, `Valid=True` otherwise), starting from `previous`.
pub fn not_ready_conditions(
    previous: &[Condition],
    why: NotReady,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut conditions = previous.to_vec();
    let valid = why != NotReady::InvalidSpec;
    let (valid_reason, valid_message) =
        if valid { ("SpecValid", "the spec is valid".to_owned()) } else { ("InvalidSpec", message.to_owned()) };
    set_condition(&mut conditions, condition(VALID, bool_status(valid), valid_reason, valid_message, &at, generation));
    set_condition(
        &mut conditions,
        condition(READY, ConditionStatus::False, why.reason(), message.to_owned(), &at, generation),
    );
    conditions
}

/// A Job's status while it cannot be registered: the previous counts are kept, the
/// conditions say why.
pub fn job_not_ready(
    previous: Option<&JobStatus>,
    why: NotReady,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> JobStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.conditions = not_ready_conditions(&status.conditions, why, message, generation, now);
    status.observed_generation = generation;
    status.phase.get_or_insert_with(|| JobPhase::Pending.as_str().to_owned());
    status
}

/// A Task's status from its catalog record and attempts: phase, attempt, lease holder and
/// expiry of the live attempt, output snapshot, next retry time, last error, times, and the
/// `Ready`, `Succeeded` and `Failed` conditions.
pub fn task_status(
    task: &TaskRecord,
    attempts: &[AttemptRecord],
    previous: Option<&TaskStatus>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> TaskStatus {
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let live = attempts.iter().rev().find(|a| a.state.is_live());
    let mut conditions = previous.map(|s| s.conditions.clone()).unwrap_or_default();
    set_condition(
        &mut conditions,
        condition(
            READY,
            ConditionStatus::True,
            "Registered",
            "the task is registered in the catalog".into(),
            &at,
            generation,
        ),
    );
    let error = || {
        format!(
            "{}: {}",
            task.last_error_code.as_deref().unwrap_or("unknown"),
            task.last_error_message.as_deref().unwrap_or("no message")
        )
    };
    let (succeeded_reason, failed_reason, message) = match task.phase {
        TaskPhase::Succeeded => (
            "Committed",
            "NotFailed",
            match task.output_snapshot {
                Some(snapshot) => format!("attempt {} committed snapshot {}", task.attempts, snapshot.0),
                None => format!("attempt {} succeeded", task.attempts),
            },
        ),
        TaskPhase::Failed => ("Failed", "AttemptsFailed", error()),
        TaskPhase::Cancelled => ("Cancelled", "Cancelled", error()),
        TaskPhase::Retrying => ("Retrying", "NotFailed", error()),
        TaskPhase::Leased | TaskPhase::Running => {
            ("Running", "NotFailed", format!("attempt {} of {} is running", task.attempts, task.max_attempts))
        }
        TaskPhase::Pending => ("Pending", "NotFailed", "waiting for its dependencies or a lease".to_owned()),
    };
    set_condition(
        &mut conditions,
        condition(
            SUCCEEDED,
            bool_status(task.phase == TaskPhase::Succeeded),
            succeeded_reason,
            message.clone(),
            &at,
            generation,
        ),
    );
    let failed = matches!(task.phase, TaskPhase::Failed | TaskPhase::Cancelled);
    set_condition(&mut conditions, condition(FAILED, bool_status(failed), failed_reason, message, &at, generation));
    TaskStatus {
        phase: Some(task.phase.as_str().to_owned()),
        attempt: (task.attempts > 0).then_some(task.attempts),
        max_attempts: Some(task.max_attempts),
        lease_holder: live.and_then(|a| a.runner.clone()),
        lease_expires_at: rfc3339(live.map(|a| a.lease_expires_at)),
        output_snapshot: task.output_snapshot.map(|s| s.0),
        next_retry_time: if task.phase == TaskPhase::Retrying { rfc3339(task.next_retry_at) } else { None },
        last_error_code: task.last_error_code.clone(),
        last_error_message: task.last_error_message.as_deref().map(|m| truncate(m, 1024)),
        start_time: rfc3339(task.started_at),
        completion_time: if task.phase.is_terminal() { rfc3339(task.finished_at) } else { None },
        observed_generation: generation,
        conditions,
    }
}

/// The Warning event a task's phase deserves, if any: `Retrying` after a failed attempt, and
/// `Failed` when it failed for good (SPEC §2.5: a task that runs out of attempts fails
/// visibly). Returns the reason and whether the failure is final.
pub fn task_event(task: &TaskRecord) -> Option<(&'static str, bool)> {
    match task.phase {
        TaskPhase::Retrying => Some(("Retrying", false)),
        TaskPhase::Failed => Some(("Failed", true)),
        _ => None,
    }
}

/// A Task's status while it cannot be registered (see [`job_not_ready`]).
pub fn task_not_ready(
    previous: Option<&TaskStatus>,
    why: NotReady,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> TaskStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.conditions = not_ready_conditions(&status.conditions, why, message, generation, now);
    status.observed_generation = generation;
    status.phase.get_or_insert_with(|| TaskPhase::Pending.as_str().to_owned());
    status
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A Dataset's status from its catalog record: current snapshot, visibility token, files,
/// rows, bytes, last commit time, freshness (seconds since the last commit, at `now`), and the
/// `Valid` and `Ready` conditions.
pub fn dataset_status(
    record: &DatasetRecord,
    previous: Option<&DatasetStatus>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> DatasetStatus {
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut conditions = previous.map(|s| s.conditions.clone()).unwrap_or_default();
    set_condition(
        &mut conditions,
        condition(VALID, ConditionStatus::True, "SpecValid", "the spec is valid".into(), &at, generation),
    );
    let message = match record.current_snapshot {
        Some(snapshot) => format!("registered; current snapshot {}", snapshot.0),
        None => "registered; no snapshot committed yet".to_owned(),
    };
    set_condition(&mut conditions, condition(READY, ConditionStatus::True, "Registered", message, &at, generation));
    DatasetStatus {
        current_snapshot: record.current_snapshot.map(|s| s.0),
        visibility_token: Some(record.visibility_token),
        files: Some(record.file_count),
        rows: Some(record.row_count),
        bytes: Some(record.byte_count),
        last_commit_time: rfc3339(record.last_commit_at),
        freshness_seconds: record.last_commit_at.map(|t| (now - t).num_seconds().max(0)),
        observed_generation: generation,
        conditions,
    }
}

/// A Dataset's status while it cannot be registered.
pub fn dataset_not_ready(
    previous: Option<&DatasetStatus>,
    why: NotReady,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> DatasetStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.conditions = not_ready_conditions(&status.conditions, why, message, generation, now);
    status.observed_generation = generation;
    status
}

/// How much the freshness figure may drift before a status is rewritten only for it. Without
/// this slack every reconcile would write a new status (the figure changes every second), and
/// every write would trigger the next reconcile.
pub const FRESHNESS_SLACK_SECONDS: i64 = 30;

/// Whether `new` differs from `old` enough to be written: any change except a freshness drift
/// smaller than [`FRESHNESS_SLACK_SECONDS`].
pub fn dataset_status_changed(old: Option<&DatasetStatus>, new: &DatasetStatus) -> bool {
    let Some(old) = old else { return true };
    let drift = match (old.freshness_seconds, new.freshness_seconds) {
        (Some(a), Some(b)) => (a - b).abs(),
        (None, None) => 0,
        _ => i64::MAX,
    };
    let mut comparable = new.clone();
    comparable.freshness_seconds = old.freshness_seconds;
    comparable != *old || drift >= FRESHNESS_SLACK_SECONDS
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use duckmesh_catalog::JobRecord;
    use duckmesh_core::{AttemptId, AttemptState, DatasetId, Fence, JobId, SnapshotId, TaskId};
    use std::collections::BTreeMap;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + seconds, 0).single().expect("valid time")
    }

    fn summary(recorded: JobPhase, counts: &[(&str, u64)], failed: &[&str]) -> JobSummary {
        JobSummary {
            job: JobRecord {
                id: JobId(1),
                namespace: "team".into(),
                name: "nightly".into(),
                uid: "uid-1".into(),
                generation: 1,
                phase: recorded,
                max_parallel: None,
                created_at: at(0),
                finished_at: recorded.is_terminal().then(|| at(50)),
            },
            counts: counts.iter().map(|(p, n)| ((*p).to_owned(), *n)).collect::<BTreeMap<_, _>>(),
            total: counts.iter().map(|(_, n)| n).sum(),
            failed_tasks: failed.iter().map(|s| (*s).to_owned()).collect(),
            started_at: Some(at(10)),
            first_run_at: Some(at(10)),
        }
    }

    fn find<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_} condition"))
    }

    #[test]
    fn job_status_table() {
        use ConditionStatus::{False, True};
        // (recorded phase, counts, phase, Succeeded, its reason, Failed, its reason)
        let cases: Vec<(JobPhase, Vec<(&str, u64)>, &str, ConditionStatus, &str, ConditionStatus, &str)> = vec![
            (JobPhase::Pending, vec![("Pending", 3)], "Pending", False, "Pending", False, "NotFailed"),
            (JobPhase::Pending, vec![("Pending", 2), ("Leased", 1)], "Running", False, "Running", False, "NotFailed"),
            (JobPhase::Running, vec![("Succeeded", 3)], "Succeeded", True, "AllTasksSucceeded", False, "NotFailed"),
            (JobPhase::Succeeded, vec![("Succeeded", 3)], "Succeeded", True, "AllTasksSucceeded", False, "NotFailed"),
            (
                JobPhase::Running,
                vec![("Succeeded", 1), ("Failed", 2)],
                "Failed",
                False,
                "TasksFailed",
                True,
                "TasksFailed",
            ),
            (JobPhase::Running, vec![("Running", 1), ("Failed", 1)], "Running", False, "Running", False, "NotFailed"),
            (
                JobPhase::Cancelled,
                vec![("Cancelled", 2), ("Succeeded", 1)],
                "Cancelled",
                False,
                "Cancelled",
                True,
                "Cancelled",
            ),
        ];
        for (recorded, counts, phase, succeeded, s_reason, failed, f_reason) in cases {
            let status = job_status(&summary(recorded, &counts, &[]), None, Some(3), at(100));
            assert_eq!(status.phase.as_deref(), Some(phase), "{counts:?}");
            let s = find(&status.conditions, SUCCEEDED);
            assert_eq!((s.status, s.reason.as_str()), (succeeded, s_reason), "{counts:?}");
            let f = find(&status.conditions, FAILED);
            assert_eq!((f.status, f.reason.as_str()), (failed, f_reason), "{counts:?}");
            assert_eq!(find(&status.conditions, READY).status, True);
            assert!(status.conditions.iter().all(|c| c.observed_generation == Some(3)));
            assert_eq!(status.observed_generation, Some(3));
            assert_eq!(status.completion_time.is_some(), matches!(phase, "Succeeded" | "Failed" | "Cancelled"));
        }
    }

    #[test]
    fn job_status_counts_and_bounds() {
        let failed: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
        let failed: Vec<&str> = failed.iter().map(String::as_str).collect();
        let s = summary(
            JobPhase::Running,
            &[("Pending", 1), ("Retrying", 2), ("Leased", 3), ("Running", 4), ("Succeeded", 5), ("Failed", 9_990)],
            &failed,
        );
        let status = job_status(&s, None, Some(1), at(100));
        assert_eq!(
            status.counts,
            PhaseCounts { pending: 3, running: 7, succeeded: 5, failed: 9_990, cancelled: 0, total: 10_005 }
        );
        assert_eq!(status.failed_tasks.len(), JobSummary::FAILED_NAMES_CAP);
        // A 10,000-task job's status stays small.
        let size = serde_json::to_vec(&status).expect("serialises").len();
        assert!(size < 4_096, "status is {size} bytes");
        assert_eq!(status.start_time.as_deref(), Some("2027-01-15T08:00:10Z"));
    }

    #[test]
    fn transition_times_move_only_on_change() {
        let running = summary(JobPhase::Running, &[("Running", 1), ("Pending", 1)], &[]);
        let first = job_status(&running, None, Some(1), at(100));
        let again = job_status(&running, Some(&first), Some(1), at(200));
        assert_eq!(first, again, "nothing changed, so the status is identical (no write)");
        let done = summary(JobPhase::Running, &[("Succeeded", 2)], &[]);
        let finished = job_status(&done, Some(&again), Some(1), at(300));
        let s = find(&finished.conditions, SUCCEEDED);
        assert_eq!(s.last_transition_time, "2027-01-15T08:05:00Z");
        // Finished before the scheduler recorded it: the first observed time is kept.
        assert_eq!(finished.completion_time.as_deref(), Some("2027-01-15T08:05:00Z"));
        let later = job_status(&done, Some(&finished), Some(1), at(400));
        assert_eq!(later, finished, "no churn while the catalog catches up");
        let ready = find(&finished.conditions, READY);
        assert_eq!(ready.last_transition_time, "2027-01-15T08:01:40Z", "Ready stayed True");
    }

    #[test]
    fn a_finished_job_refuses_spec_changes_without_churn() {
        let done = summary(JobPhase::Succeeded, &[("Succeeded", 2)], &[]);
        let ran = job_status(&done, None, Some(1), at(100));
        let edited =
            job_spec_change_refused(job_status(&done, Some(&ran), Some(2), at(200)), Some(&ran), 1, Some(2), at(200));
        let ready = find(&edited.conditions, READY);
        assert_eq!((ready.status, ready.reason.as_str()), (ConditionStatus::False, SPEC_CHANGED_AFTER_FINISH));
        assert!(ready.message.contains("generation 1") && ready.message.contains("generation 2"), "{}", ready.message);
        assert!(ready.message.contains("new name") && ready.message.contains("delete"), "{}", ready.message);
        assert_eq!(edited.observed_generation, Some(2));
        assert_eq!(edited.phase.as_deref(), Some("Succeeded"), "the outcome of what ran is kept");
        assert_eq!(find(&edited.conditions, SUCCEEDED).status, ConditionStatus::True);
        let again = job_spec_change_refused(
            job_status(&done, Some(&edited), Some(2), at(300)),
            Some(&edited),
            1,
            Some(2),
            at(300),
        );
        assert_eq!(again, edited, "nothing changed, so nothing is written");
    }

    #[test]
    fn not_ready_reasons() {
        let cases = [
            ("invalid_resource", NotReady::InvalidSpec, "InvalidSpec", ConditionStatus::False),
            ("dataset_not_found", NotReady::DatasetNotFound, "DatasetNotFound", ConditionStatus::True),
            ("catalog_unavailable", NotReady::CatalogUnavailable, "CatalogUnavailable", ConditionStatus::True),
            ("schema_mismatch", NotReady::Rejected, "Rejected", ConditionStatus::True),
        ];
        for (code, why, reason, valid) in cases {
            assert_eq!(NotReady::from_error_code(code), why);
            let status = job_not_ready(None, why, "because", Some(2), at(0));
            let ready = find(&status.conditions, READY);
            assert_eq!(
                (ready.status, ready.reason.as_str(), ready.message.as_str()),
                (ConditionStatus::False, reason, "because")
            );
            assert_eq!(find(&status.conditions, VALID).status, valid);
            assert_eq!(status.observed_generation, Some(2));
            assert_eq!(ready.observed_generation, Some(2));
        }
    }

    fn task_record(phase: TaskPhase) -> TaskRecord {
        TaskRecord {
            id: TaskId(7),
            job: Some(JobId(1)),
            namespace: "team".into(),
            name: "load".into(),
            tenant: "acme".into(),
            kind: "sql".into(),
            spec: serde_json::json!({}),
            depends_on: vec![],
            phase,
            attempts: 2,
            max_attempts: 3,
            timeout_seconds: None,
            fence: Some(Fence(5)),
            next_retry_at: Some(at(400)),
            output: None,
            output_snapshot: (phase == TaskPhase::Succeeded).then_some(SnapshotId(9)),
            last_error_code: Some("sql_error".into()),
            last_error_message: Some("boom".into()),
            started_at: Some(at(10)),
            finished_at: phase.is_terminal().then(|| at(20)),
        }
    }

    fn attempt(number: u32, state: AttemptState) -> AttemptRecord {
        AttemptRecord {
            id: AttemptId(i64::from(number) + 100),
            task: TaskId(7),
            number,
            fence: Fence(i64::from(number)),
            state,
            runner: Some(format!("team-load-a{number}")),
            lease_expires_at: at(500),
            heartbeat_at: None,
            error_code: None,
            error_message: None,
        }
    }

    #[test]
    fn task_status_table() {
        let attempts = [attempt(1, AttemptState::Failed), attempt(2, AttemptState::Running)];
        let running = task_status(&task_record(TaskPhase::Running), &attempts, None, Some(1), at(100));
        assert_eq!(running.phase.as_deref(), Some("Running"));
        assert_eq!(running.lease_holder.as_deref(), Some("team-load-a2"));
        assert_eq!(running.lease_expires_at.as_deref(), Some("2027-01-15T08:08:20Z"));
        assert_eq!(running.next_retry_time, None);
        assert_eq!((running.attempt, running.max_attempts), (Some(2), Some(3)));

        let retrying = task_status(&task_record(TaskPhase::Retrying), &attempts[..1], None, Some(1), at(100));
        assert_eq!(retrying.next_retry_time.as_deref(), Some("2027-01-15T08:06:40Z"));
        assert_eq!(retrying.lease_holder, None);
        assert_eq!(find(&retrying.conditions, SUCCEEDED).reason, "Retrying");

        let done = task_status(&task_record(TaskPhase::Succeeded), &[], None, Some(1), at(100));
        assert_eq!(done.output_snapshot, Some(9));
        assert_eq!(find(&done.conditions, SUCCEEDED).status, ConditionStatus::True);
        assert!(done.completion_time.is_some());

        assert_eq!(task_event(&task_record(TaskPhase::Retrying)), Some(("Retrying", false)));
        assert_eq!(task_event(&task_record(TaskPhase::Failed)), Some(("Failed", true)));
        assert_eq!(task_event(&task_record(TaskPhase::Running)), None);
        assert_eq!(task_event(&task_record(TaskPhase::Cancelled)), None);
        let failed = task_status(&task_record(TaskPhase::Failed), &[], None, Some(1), at(100));
        let f = find(&failed.conditions, FAILED);
        assert_eq!(
            (f.status, f.reason.as_str(), f.message.as_str()),
            (ConditionStatus::True, "AttemptsFailed", "sql_error: boom")
        );
        assert_eq!(failed.last_error_code.as_deref(), Some("sql_error"));
    }

    fn dataset(last_commit: Option<DateTime<Utc>>) -> DatasetRecord {
        DatasetRecord {
            id: DatasetId(4),
            namespace: "team".into(),
            name: "trips".into(),
            uid: "u".into(),
            generation: 1,
            tenant: "acme".into(),
            schema: None,
            spec: serde_json::json!({}),
            current_snapshot: last_commit.map(|_| SnapshotId(12)),
            visibility_token: if last_commit.is_some() { 40 } else { 0 },
            file_count: 3,
            row_count: 1000,
            byte_count: 65_536,
            last_commit_at: last_commit,
        }
    }

    #[test]
    fn dataset_status_and_freshness_slack() {
        let fresh = dataset_status(&dataset(Some(at(0))), None, Some(2), at(90));
        assert_eq!(
            (fresh.current_snapshot, fresh.visibility_token, fresh.files, fresh.rows, fresh.bytes),
            (Some(12), Some(40), Some(3), Some(1000), Some(65_536))
        );
        assert_eq!(fresh.freshness_seconds, Some(90));
        assert_eq!(fresh.last_commit_time.as_deref(), Some("2027-01-15T08:00:00Z"));
        assert_eq!(find(&fresh.conditions, READY).reason, "Registered");
        let empty = dataset_status(&dataset(None), None, Some(2), at(90));
        assert_eq!((empty.current_snapshot, empty.freshness_seconds), (None, None));

        assert!(dataset_status_changed(None, &fresh));
        let later = dataset_status(&dataset(Some(at(0))), Some(&fresh), Some(2), at(100));
        assert!(!dataset_status_changed(Some(&fresh), &later), "10 s of drift is not worth a write");
        let much_later = dataset_status(&dataset(Some(at(0))), Some(&fresh), Some(2), at(200));
        assert!(dataset_status_changed(Some(&fresh), &much_later));
        let new_generation = dataset_status(&dataset(Some(at(0))), Some(&fresh), Some(3), at(91));
        assert!(dataset_status_changed(Some(&fresh), &new_generation));
    }
}
