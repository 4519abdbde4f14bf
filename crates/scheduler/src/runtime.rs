//! The scheduling loop shared by the operator and `duckmesh dev`: reap expired leases, lease
//! runnable tasks, hand each lease to the executor, and record the ends that runners could not
//! record themselves. Every decision is the catalog's (fenced, row-locked), so any number of
//! passes — duplicate wake-ups, a second scheduler — lease nothing twice.

use crate::executor::{Executor, Launch, RunnerEnded, RunnerExit, failure_for, runner_failure};
use crate::metrics::{
    ControlPlaneMetrics, PhaseLabels, RetryReason, TaskKind, TaskKindLabels, TaskPhaseLabels, TaskRetryLabels,
    TerminalPhase,
};
use backon::{BackoffBuilder, ExponentialBuilder};
use duckmesh_catalog::{Catalog, ScheduleOptions};
use duckmesh_catalog::{CommitMode, TaskOutput, TaskSpec};
use duckmesh_contracts::maintenance::{MaintenanceKind, MaintenancePolicy};
use duckmesh_core::{AttemptId, JobId, JobPhase, RunnerFailure, TaskId, exit};
use duckmesh_telemetry::Metrics;
use duckmesh_telemetry::metrics::StorageMetrics;
use duckmesh_telemetry::metrics::storage::{GcKind, GcKindLabels, RunResult, RunResultLabels};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The longest pause between passes while they keep failing.
const FAILURE_PAUSE_MAX: Duration = Duration::from_secs(30);

/// The pauses after passes that failed in a row: twice `tick`, doubling to
/// [`FAILURE_PAUSE_MAX`], for ever (`backon`; a successful pass starts a fresh series).
fn failure_pauses(tick: Duration) -> backon::ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(tick.saturating_mul(2).min(FAILURE_PAUSE_MAX))
        .with_max_delay(FAILURE_PAUSE_MAX)
        .with_factor(2.0)
        .without_max_times()
        .build()
}

/// How the loop behaves.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Recorded on each attempt as the scheduler that leased it (`operator/<pod>`,
    /// `dev/<host>/<pid>`).
    pub runner: String,
    /// A pass runs at least this often, whatever the wake-ups.
    pub tick: Duration,
    /// Cap on tasks running at once across the installation.
    pub global_limit: Option<usize>,
    /// Expired leases reaped per pass at most.
    pub reap_batch: i64,
    /// How often the Datasets' maintenance policies are looked at (`None`: never).
    pub maintenance_every: Option<Duration>,
}

impl SchedulerOptions {
    /// Defaults: a pass every second, no global cap, 100 reaps per pass, maintenance policies
    /// looked at every minute.
    pub fn new(runner: impl Into<String>) -> Self {
        Self {
            runner: runner.into(),
            tick: Duration::from_secs(1),
            global_limit: None,
            reap_batch: 100,
            maintenance_every: Some(Duration::from_secs(60)),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Attempts started.
    pub launched: Vec<(TaskId, AttemptId)>,
    /// Attempts whose runner could not be started (recorded as failed).
    pub launch_failures: usize,
    /// Expired leases retired.
    pub reaped: usize,
    /// Tasks failed because a dependency failed.
    pub upstream_failed: usize,
    /// Maintenance tasks created from Dataset policies.
    pub maintenance_created: Vec<TaskId>,
    /// Jobs whose phase changed.
    pub jobs_changed: Vec<(JobId, JobPhase)>,
}

/// Why a pass stopped early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The catalog failed; the next pass retries.
    #[error(transparent)]
    Catalog(#[from] duckmesh_catalog::Error),
}

impl Error {
    /// Stable error code.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::Catalog(error) => error.error_code(),
        }
    }
}

/// The loop. Cheap to share: the executor sits behind an `Arc`.
pub struct Scheduler<E: Executor> {
    catalog: Catalog,
    executor: Arc<E>,
    options: SchedulerOptions,
    metrics: Option<ControlPlaneMetrics>,
    /// The maintenance counters, fed from the catalog's record of finished runs.
    maintenance: Option<StorageMetrics>,
    /// The newest maintenance run already counted (`None` until the first pass, which starts
    /// from the newest run so history is not counted again after a restart).
    maintenance_cursor: Mutex<Option<i64>>,
    /// When the maintenance policies were last looked at.
    maintenance_planned: Mutex<Option<std::time::Instant>>,
    job_names: Mutex<HashMap<JobId, String>>,
    /// When the backlog gauges were last refreshed.
    gauges_refreshed: Mutex<Option<std::time::Instant>>,
}

impl<E: Executor> Scheduler<E> {
    /// A scheduler over `catalog` that runs attempts through `executor`, recording the
    /// control plane's metrics in `metrics`' registry when given.
    pub fn new(catalog: Catalog, executor: Arc<E>, options: SchedulerOptions, metrics: Option<Metrics>) -> Self {
        let maintenance = metrics.as_ref().map(|metrics| metrics.storage.clone());
        let metrics = metrics.as_ref().map(ControlPlaneMetrics::new);
        Self {
            catalog,
            executor,
            options,
            metrics,
            maintenance,
            maintenance_cursor: Mutex::new(None),
            maintenance_planned: Mutex::new(None),
            job_names: Mutex::new(HashMap::new()),
            gauges_refreshed: Mutex::new(None),
        }
    }

    /// The catalog it schedules from.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Runs passes until `shutdown`: after every wake-up (new tasks, commits, runner ends) and
    /// at least every `tick`. Catalog errors are logged and retried with a growing pause; they
    /// never end the loop.
    pub async fn run(&self, mut exits: mpsc::Receiver<RunnerEnded>, shutdown: CancellationToken) {
        let mut wakeups = None;
        let mut pauses = failure_pauses(self.options.tick);
        // The next pass may be skipped only when nothing but committed workers' exits woke the
        // loop (their commits' wake-ups run the passes that reuse their slots); one still runs at
        // least every `pause`.
        let mut pass_due = true;
        let mut next_pass = tokio::time::Instant::now();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            if wakeups.is_none() {
                // Connecting may wait for a pool connection: shutdown must not wait for it.
                let listened = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    listened = self.catalog.listen_wakeups() => listened,
                };
                match listened {
                    Ok(listener) => wakeups = Some(listener),
                    Err(error) => {
                        tracing::warn!(%error, error_code = error.error_code(), "cannot listen for wake-ups; polling")
                    }
                }
            }
            if pass_due || tokio::time::Instant::now() >= next_pass {
                let pause = match self.pass().await {
                    Ok(_) => {
                        pauses = failure_pauses(self.options.tick);
                        self.options.tick
                    }
                    Err(error) => {
                        tracing::error!(%error, error_code = error.error_code(), "scheduling pass failed; retrying");
                        pauses.next().unwrap_or(FAILURE_PAUSE_MAX)
                    }
                };
                next_pass = tokio::time::Instant::now() + pause;
            }
            pass_due = true;
            let wakeup = async {
                match wakeups.as_mut() {
                    Some(listener) => listener.recv().await,
                    None => std::future::pending().await,
                }
            };
            // Biased: shutdown wins over a steady stream of runner ends and wake-ups. A pass in
            // progress is not interrupted (its launches must reach the executor); it is bounded
            // by the catalog's timeouts, and the operator aborts the loop after a grace period.
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                ended = exits.recv() => match ended {
                    Some(ended) => {
                        let mut committed = ended.exit == RunnerExit::Exited(i32::from(exit::COMMITTED));
                        self.record_end(ended).await;
                        while !shutdown.is_cancelled()
                            && let Ok(more) = exits.try_recv()
                        {
                            committed &= more.exit == RunnerExit::Exited(i32::from(exit::COMMITTED));
                            self.record_end(more).await;
                        }
                        // A worker that committed sent a wake-up after its commit, and the pass
                        // it runs reuses the slot: its exit needs no pass of its own (a lost
                        // wake-up costs one `pause`, as any).
                        pass_due = !(committed && wakeups.is_some());
                    }
                    // Every sender is gone: the executor shut down.
                    None => return,
                },
                result = wakeup => if let Err(error) = result {
                    tracing::warn!(%error, "lost the wake-up connection; reconnecting");
                    wakeups = None;
                },
                () = tokio::time::sleep_until(next_pass) => {}
            }
        }
    }

    /// One pass: reap, lease and launch, refresh job phases, update backlog metrics.
    #[tracing::instrument(name = "schedule_pass", skip_all)]
    pub async fn pass(&self) -> Result<PassReport, Error> {
        let mut report = PassReport::default();

        for reaped in self.catalog.reap_expired_leases(self.options.reap_batch).await? {
            report.reaped += 1;
            if let Err(error) = self.executor.stop(reaped.attempt).await {
                tracing::warn!(attempt = %reaped.attempt, %error, error_code = error.error_code(), "cannot stop the runner of an expired lease");
            }
            let kind = self.task_kind(reaped.task).await;
            if let Some(metrics) = &self.metrics {
                metrics.leases_expired.get_or_create(&TaskKindLabels { task_kind: kind }).inc();
            }
            self.count_outcome(kind, &reaped.outcome, RetryReason::LeaseExpired);
        }

        report.maintenance_created = self.plan_maintenance().await?;

        let mut options = ScheduleOptions::new(self.options.runner.clone());
        options.global_limit = self.options.global_limit;
        let scheduled = self.catalog.schedule(&options).await?;
        report.upstream_failed = scheduled.upstream_failed.len();
        for lease in scheduled.leased {
            let task = self.catalog.task(lease.task).await?;
            let job = match task.job {
                Some(job) => Some(self.job_name(job).await?),
                None => None,
            };
            let span = tracing::info_span!("launch", job = job.as_deref().unwrap_or(""), task = %task.name, attempt = lease.number, tenant_id = %task.tenant);
            let traceparent = {
                let _entered = span.enter();
                duckmesh_telemetry::current_traceparent()
            };
            let reference = lease.attempt_ref();
            let identity = (lease.task, lease.attempt);
            let launch = Launch { lease, task, job, traceparent };
            match self.executor.launch(launch).await {
                Ok(()) => report.launched.push(identity),
                Err(error) => {
                    report.launch_failures += 1;
                    tracing::error!(parent: &span, %error, error_code = error.error_code(), "cannot start the runner");
                    let failure = runner_failure(
                        RunnerFailure::RunnerStartFailed,
                        format!("the worker could not be started: {error}"),
                    );
                    if let Err(error) = self.catalog.fail_attempt(reference, &failure).await
                        && !error.is_fencing()
                    {
                        return Err(error.into());
                    }
                }
            }
        }

        report.jobs_changed = self.catalog.refresh_jobs().await?;
        if let Some(metrics) = &self.metrics {
            for (job, phase) in &report.jobs_changed {
                let terminal = match phase {
                    JobPhase::Succeeded => TerminalPhase::Succeeded,
                    JobPhase::Failed => TerminalPhase::Failed,
                    JobPhase::Cancelled => TerminalPhase::Cancelled,
                    _ => continue,
                };
                metrics.jobs_finished.get_or_create(&PhaseLabels { phase: terminal }).inc();
                if let Ok(record) = self.catalog.job(*job).await
                    && let Some(finished) = record.finished_at
                {
                    let seconds = (finished - record.created_at).num_milliseconds() as f64 / 1000.0;
                    metrics.job_duration_seconds.get_or_create(&PhaseLabels { phase: terminal }).observe(seconds);
                }
            }
        }
        // The backlog gauges read every runnable task: at most once per tick, not on every
        // wake-up (a pass runs after every commit), so their cost does not grow per task.
        if let Some(metrics) = &self.metrics
            && self.gauges_due()
        {
            let backlog = self.catalog.backlog_stats().await?;
            let labels = TaskKindLabels { task_kind: TaskKind::Sql };
            metrics.task_backlog_depth.get_or_create(&labels).set(backlog.runnable);
            metrics
                .task_backlog_oldest_age_seconds
                .get_or_create(&labels)
                .set(backlog.oldest_runnable_age_seconds as f64);
            metrics.lease_lag_seconds.set(backlog.max_lease_lag_seconds as f64);
            let outbox = self.catalog.outbox_stats().await?;
            metrics.outbox_depth.set(outbox.pending);
            metrics.outbox_oldest_age_seconds.set(outbox.oldest_pending_age_seconds as f64);
            metrics.outbox_failed_rows.set(outbox.failed);
        }
        self.count_maintenance_runs().await;
        if report != PassReport::default() {
            tracing::debug!(?report, "scheduling pass");
        }
        Ok(report)
    }

    /// Records a runner's end that its worker could not record (crash, kill, timeout, lost
    /// runner). Fenced: an attempt that already ended is left as it is.
    pub async fn record_end(&self, ended: RunnerEnded) {
        let Some(failure) = failure_for(&ended.exit) else {
            return;
        };
        let reference = duckmesh_catalog::AttemptRef { attempt: ended.attempt, fence: ended.fence };
        match self.catalog.fail_attempt(reference, &failure).await {
            Ok(outcome) => {
                tracing::warn!(task = %ended.task, attempt = %ended.attempt, error_code = %failure.code, message = %failure.message, "runner ended without recording its outcome");
                let kind = self.task_kind(ended.task).await;
                let reason = match RunnerFailure::from_code(&failure.code) {
                    Some(RunnerFailure::TaskTimeout) => RetryReason::Timeout,
                    Some(RunnerFailure::RunnerLost | RunnerFailure::RunnerStartFailed) => RetryReason::PodLost,
                    _ => RetryReason::Failed,
                };
                self.count_outcome(kind, &outcome, reason);
            }
            Err(error) if error.is_fencing() => {}
            Err(error) => {
                // The lease will expire and the reaper retries the task: nothing is lost.
                tracing::error!(task = %ended.task, attempt = %ended.attempt, %error, error_code = error.error_code(), "cannot record a runner's end; its lease will expire");
            }
        }
    }

    fn count_outcome(&self, kind: TaskKind, outcome: &duckmesh_catalog::FailOutcome, reason: RetryReason) {
        let Some(metrics) = &self.metrics else { return };
        match outcome {
            duckmesh_catalog::FailOutcome::Retrying { .. } => {
                metrics.task_retries.get_or_create(&TaskRetryLabels { task_kind: kind, reason }).inc();
            }
            duckmesh_catalog::FailOutcome::Failed { .. } => {
                metrics
                    .tasks_finished
                    .get_or_create(&TaskPhaseLabels { task_kind: kind, phase: TerminalPhase::Failed })
                    .inc();
            }
        }
    }

    /// Creates the maintenance tasks the Datasets' policies make due (at most one running per
    /// dataset), at most every `maintenance_every`; they are then leased and run like any
    /// task. A dataset whose policy cannot be read is skipped with a warning (the resource is
    /// validated when applied, so this means the catalog holds a spec from an older build).
    async fn plan_maintenance(&self) -> Result<Vec<TaskId>, Error> {
        let Some(every) = self.options.maintenance_every else { return Ok(Vec::new()) };
        {
            let Ok(mut planned) = self.maintenance_planned.lock() else { return Ok(Vec::new()) };
            if planned.is_some_and(|at| at.elapsed() < every) {
                return Ok(Vec::new());
            }
            *planned = Some(std::time::Instant::now());
        }
        let now = chrono::Utc::now();
        let mut created = Vec::new();
        for state in self.catalog.maintenance_states().await? {
            if state.busy {
                continue;
            }
            let policy = match MaintenancePolicy::parse(&state.name, &state.spec) {
                Ok(policy) => policy,
                Err(error) => {
                    tracing::warn!(dataset = %state.name, namespace = %state.namespace, message = %error.message, "cannot read the dataset's maintenance policy");
                    continue;
                }
            };
            let last = |kind| match kind {
                MaintenanceKind::Compact => state.last_compact,
                MaintenanceKind::Gc => state.last_gc,
                MaintenanceKind::Integrity => state.last_integrity,
            };
            let Some((kind, spec)) = policy.due(state.created_at, last, now) else { continue };
            let task = TaskSpec {
                name: format!("{}-{}-{}", kind.as_str(), state.dataset.0, now.format("%Y%m%d%H%M")),
                kind: kind.as_str().to_owned(),
                depends_on: Vec::new(),
                max_attempts: Some(3),
                timeout_seconds: None,
                output: Some(TaskOutput { dataset: state.dataset, mode: CommitMode::Append }),
                spec,
            };
            let id = self.catalog.upsert_standalone_task(&state.namespace, &state.tenant, &task).await?;
            tracing::info!(dataset = %state.name, namespace = %state.namespace, kind = kind.as_str(), task = %id, "maintenance task scheduled by the dataset's policy");
            created.push(id);
        }
        Ok(created)
    }

    /// Counts the maintenance runs recorded since the last pass (by tasks anywhere, or the
    /// CLI) in the compaction, GC and integrity counters. A catalog error only delays them.
    async fn count_maintenance_runs(&self) {
        let Some(metrics) = &self.maintenance else { return };
        let cursor = self.maintenance_cursor.lock().ok().and_then(|cursor| *cursor);
        let after = match cursor {
            Some(after) => after,
            None => {
                if let Ok(latest) = self.catalog.latest_maintenance_run_id().await
                    && let Ok(mut cursor) = self.maintenance_cursor.lock()
                {
                    *cursor = Some(latest);
                }
                return;
            }
        };
        let runs = match self.catalog.maintenance_runs_after(after, 1_000).await {
            Ok(runs) => runs,
            Err(error) => {
                tracing::warn!(%error, error_code = error.error_code(), "cannot read maintenance runs for metrics");
                return;
            }
        };
        let Some(last) = runs.last().map(|run| run.id) else { return };
        for run in &runs {
            count_maintenance_run(metrics, run);
        }
        if let Ok(mut cursor) = self.maintenance_cursor.lock() {
            *cursor = Some(last);
        }
    }

    /// Whether the backlog gauges are due (at most once per tick); marks them refreshed.
    fn gauges_due(&self) -> bool {
        let Ok(mut refreshed) = self.gauges_refreshed.lock() else { return true };
        if refreshed.is_some_and(|at| at.elapsed() < self.options.tick) {
            return false;
        }
        *refreshed = Some(std::time::Instant::now());
        true
    }

    async fn task_kind(&self, task: TaskId) -> TaskKind {
        match self.catalog.task(task).await {
            Ok(record) => task_kind_label(&record.kind),
            Err(_) => TaskKind::Sql,
        }
    }

    async fn job_name(&self, job: JobId) -> Result<String, Error> {
        if let Some(name) = self.job_names.lock().ok().and_then(|names| names.get(&job).cloned()) {
            return Ok(name);
        }
        let name = self.catalog.job(job).await?.name;
        if let Ok(mut names) = self.job_names.lock() {
            names.insert(job, name.clone());
        }
        Ok(name)
    }
}

/// Adds one finished maintenance run to the counters of its kind.
fn count_maintenance_run(metrics: &StorageMetrics, run: &duckmesh_catalog::MaintenanceRun) {
    let result = RunResultLabels {
        result: match run.result.as_str() {
            "succeeded" => RunResult::Succeeded,
            "noop" => RunResult::Noop,
            "issues_found" => RunResult::IssuesFound,
            _ => RunResult::Failed,
        },
    };
    let count = |value: i64| u64::try_from(value).unwrap_or_default();
    match run.kind.as_str() {
        "compact" => {
            metrics.compaction_runs.get_or_create(&result).inc();
            metrics.compaction_bytes_rewritten.inc_by(count(run.bytes_rewritten));
        }
        "gc" => {
            metrics.gc_runs.get_or_create(&result).inc();
            for (kind, deleted) in [
                (GcKind::Unreferenced, run.unreferenced_deleted),
                (GcKind::Staging, run.staging_deleted),
                (GcKind::QueryExport, run.exports_deleted),
            ] {
                metrics.gc_files_deleted.get_or_create(&GcKindLabels { kind }).inc_by(count(deleted));
            }
        }
        "integrity" => {
            metrics.integrity_runs.get_or_create(&result).inc();
            metrics.integrity_files_checked.inc_by(count(run.files_checked));
            metrics.integrity_missing_files.inc_by(count(run.missing_files));
            metrics.integrity_size_mismatch_files.inc_by(count(run.size_mismatch_files));
        }
        _ => {}
    }
}

/// The bounded `task_kind` label of a stored kind.
pub fn task_kind_label(kind: &str) -> TaskKind {
    match kind {
        "compact" => TaskKind::Compact,
        "gc" => TaskKind::Gc,
        "integrity" => TaskKind::Integrity,
        "export" => TaskKind::Export,
        _ => TaskKind::Sql,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_pauses_double_from_twice_the_tick_to_thirty_seconds() {
        let millis = |tick: Duration| -> Vec<u64> {
            // backon computes in f32 seconds: compare whole milliseconds.
            failure_pauses(tick).take(8).map(|pause| (pause.as_secs_f64() * 1000.0).round() as u64).collect()
        };
        assert_eq!(millis(Duration::from_secs(1)), [2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000, 30_000]);
        assert_eq!(millis(Duration::from_millis(50)), [100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800]);
        assert_eq!(millis(Duration::from_secs(20)), [30_000, 30_000, 30_000, 30_000, 30_000, 30_000, 30_000, 30_000]);
    }
}
