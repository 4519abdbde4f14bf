//! The control plane's metrics (SPEC §6 "our addition", at controller-runtime parity):
//! reconciles and work queues of the operator's controllers, task backlog, leases, retries,
//! terminal phases and durations of tasks and jobs, and the outbox, registered in a
//! sub-registry of the process registry (`duckmesh_telemetry::Metrics`).
//!
//! They live with the scheduler, the crate both the operator and `duckmesh dev` build on, so
//! that every process running the control plane exports the same names (dev mode has no
//! controllers, yet its `/metrics` serves every name the operator's does).

use duckmesh_telemetry::metrics::{FloatGauge, HistogramFamily};
use duckmesh_telemetry::{ComponentMetrics, Metrics};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Buckets (seconds) of the reconcile duration histogram, as in controller-runtime.
pub const RECONCILE_SECONDS_BUCKETS: [f64; 13] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Buckets (seconds) of job and task durations: one second to one day.
pub const RUN_SECONDS_BUCKETS: [f64; 14] =
    [1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1_200.0, 1_800.0, 3_600.0, 7_200.0, 21_600.0, 86_400.0];

duckmesh_telemetry::label_values! {
    /// Controller (one per watched kind), as controller-runtime's `controller` label.
    Controller {
        /// Dataset reconciler
        Dataset => "dataset",
        /// Job reconciler
        Job => "job",
        /// Task reconciler
        Task => "task",
        /// Worker Pod watcher
        WorkerPod => "worker_pod",
    }
}

duckmesh_telemetry::label_values! {
    /// Result of one reconcile, as controller-runtime's `result` label.
    ReconcileResult {
        /// Done, no requeue asked.
        Success => "success",
        /// Returned an error (the error policy decides the requeue).
        Error => "error",
        /// Asked to be requeued at once.
        Requeue => "requeue",
        /// Asked to be requeued after a delay.
        RequeueAfter => "requeue_after",
    }
}

duckmesh_telemetry::label_values! {
    /// Task kinds (SPEC §1).
    TaskKind {
        /// DuckDB SQL
        Sql => "sql",
        /// Compaction
        Compact => "compact",
        /// Garbage collection
        Gc => "gc",
        /// Integrity check
        Integrity => "integrity",
        /// Export
        Export => "export",
    }
}

duckmesh_telemetry::label_values! {
    /// Why a task attempt is retried.
    RetryReason {
        /// The attempt's lease expired (worker died or stalled).
        LeaseExpired => "lease_expired",
        /// The attempt failed with a retryable error.
        Failed => "failed",
        /// The attempt exceeded `timeoutSeconds`.
        Timeout => "timeout",
        /// The worker pod disappeared or could not start.
        PodLost => "pod_lost",
    }
}

duckmesh_telemetry::label_values! {
    /// Terminal phase of a job or task.
    TerminalPhase {
        /// Completed.
        Succeeded => "succeeded",
        /// Failed after `maxAttempts` (task) or because a task failed (job).
        Failed => "failed",
        /// Deleted or cancelled before completion.
        Cancelled => "cancelled",
    }
}

/// `{controller}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// Controller.
    pub controller: Controller,
}

/// `{controller, result}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// Controller.
    pub controller: Controller,
    /// Reconcile result.
    pub result: ReconcileResult,
}

/// `{task_kind}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskKindLabels {
    /// Task kind.
    pub task_kind: TaskKind,
}

/// `{task_kind, reason}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskRetryLabels {
    /// Task kind.
    pub task_kind: TaskKind,
    /// Why it is retried.
    pub reason: RetryReason,
}

/// `{task_kind, phase}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskPhaseLabels {
    /// Task kind.
    pub task_kind: TaskKind,
    /// Terminal phase.
    pub phase: TerminalPhase,
}

/// `{phase}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Terminal phase.
    pub phase: TerminalPhase,
}

fn reconcile_seconds_histogram() -> Histogram {
    Histogram::new(RECONCILE_SECONDS_BUCKETS)
}

fn run_seconds_histogram() -> Histogram {
    Histogram::new(RUN_SECONDS_BUCKETS)
}

/// Control-plane metrics at controller-runtime parity, plus scheduler and outbox state.
/// Cheap to clone: all handles share the same underlying series.
#[derive(Clone, Debug)]
pub struct ControlPlaneMetrics {
    /// `duckmesh_reconcile_total{controller, result}`
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// `duckmesh_reconcile_errors_total{controller}`
    pub reconcile_errors: Family<ControllerLabels, Counter>,
    /// `duckmesh_reconcile_duration_seconds{controller}`
    pub reconcile_duration_seconds: HistogramFamily<ControllerLabels>,
    /// `duckmesh_workqueue_depth{controller}`
    pub workqueue_depth: Family<ControllerLabels, Gauge>,
    /// `duckmesh_workqueue_retries_total{controller}`
    pub workqueue_retries: Family<ControllerLabels, Counter>,
    /// `duckmesh_task_backlog_depth{task_kind}`: runnable tasks without a live lease.
    pub task_backlog_depth: Family<TaskKindLabels, Gauge>,
    /// `duckmesh_task_backlog_oldest_age_seconds{task_kind}`: how long the oldest has waited.
    pub task_backlog_oldest_age_seconds: Family<TaskKindLabels, FloatGauge>,
    /// `duckmesh_lease_lag_seconds`: how far past expiry the oldest un-reaped lease is.
    pub lease_lag_seconds: FloatGauge,
    /// `duckmesh_leases_expired_total{task_kind}`: leases reaped after expiry.
    pub leases_expired: Family<TaskKindLabels, Counter>,
    /// `duckmesh_task_retries_total{task_kind, reason}`
    pub task_retries: Family<TaskRetryLabels, Counter>,
    /// `duckmesh_tasks_finished_total{task_kind, phase}`
    pub tasks_finished: Family<TaskPhaseLabels, Counter>,
    /// `duckmesh_task_duration_seconds{task_kind}`: first lease to terminal phase.
    pub task_duration_seconds: HistogramFamily<TaskKindLabels>,
    /// `duckmesh_jobs_finished_total{phase}`: jobs by terminal phase.
    pub jobs_finished: Family<PhaseLabels, Counter>,
    /// `duckmesh_job_duration_seconds{phase}`: creation to terminal phase.
    pub job_duration_seconds: HistogramFamily<PhaseLabels>,
    /// `duckmesh_outbox_depth`: rows pending dispatch.
    pub outbox_depth: Gauge,
    /// `duckmesh_outbox_oldest_age_seconds`: age of the oldest pending row.
    pub outbox_oldest_age_seconds: FloatGauge,
    /// `duckmesh_outbox_failed_rows`: rows in `Failed` after exhausting retries.
    pub outbox_failed_rows: Gauge,
}

impl ComponentMetrics for ControlPlaneMetrics {
    fn register(registry: &mut Registry, _process: &Metrics) -> Self {
        let metrics = ControlPlaneMetrics {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration_seconds: Family::new_with_constructor(reconcile_seconds_histogram),
            workqueue_depth: Family::default(),
            workqueue_retries: Family::default(),
            task_backlog_depth: Family::default(),
            task_backlog_oldest_age_seconds: Family::default(),
            lease_lag_seconds: FloatGauge::default(),
            leases_expired: Family::default(),
            task_retries: Family::default(),
            tasks_finished: Family::default(),
            task_duration_seconds: Family::new_with_constructor(run_seconds_histogram),
            jobs_finished: Family::default(),
            job_duration_seconds: Family::new_with_constructor(run_seconds_histogram),
            outbox_depth: Gauge::default(),
            outbox_oldest_age_seconds: FloatGauge::default(),
            outbox_failed_rows: Gauge::default(),
        };
        registry.register("reconcile", "Reconciles by controller and result", metrics.reconciles.clone());
        registry.register("reconcile_errors", "Reconcile errors by controller", metrics.reconcile_errors.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Seconds spent in one reconcile, by controller",
            metrics.reconcile_duration_seconds.clone(),
        );
        registry.register(
            "workqueue_depth",
            "Objects waiting in a controller's queue",
            metrics.workqueue_depth.clone(),
        );
        registry.register(
            "workqueue_retries",
            "Objects requeued after an error, by controller",
            metrics.workqueue_retries.clone(),
        );
        registry.register(
            "task_backlog_depth",
            "Runnable tasks waiting for a lease, by task kind",
            metrics.task_backlog_depth.clone(),
        );
        registry.register(
            "task_backlog_oldest_age_seconds",
            "Seconds the oldest runnable task has waited for a lease, by task kind",
            metrics.task_backlog_oldest_age_seconds.clone(),
        );
        registry.register(
            "lease_lag_seconds",
            "Seconds the oldest expired but not yet reaped lease is past its expiry",
            metrics.lease_lag_seconds.clone(),
        );
        registry.register(
            "leases_expired",
            "Task attempt leases reaped after expiry, by task kind",
            metrics.leases_expired.clone(),
        );
        registry.register(
            "task_retries",
            "Task attempts scheduled for retry, by task kind and reason",
            metrics.task_retries.clone(),
        );
        registry.register(
            "tasks_finished",
            "Tasks reaching a terminal phase, by task kind and phase",
            metrics.tasks_finished.clone(),
        );
        registry.register(
            "task_duration_seconds",
            "Seconds from a task's first lease to its terminal phase, by task kind",
            metrics.task_duration_seconds.clone(),
        );
        registry.register("jobs_finished", "Jobs reaching a terminal phase, by phase", metrics.jobs_finished.clone());
        registry.register(
            "job_duration_seconds",
            "Seconds from job creation to its terminal phase, by phase",
            metrics.job_duration_seconds.clone(),
        );
        registry.register("outbox_depth", "Outbox rows pending dispatch", metrics.outbox_depth.clone());
        registry.register(
            "outbox_oldest_age_seconds",
            "Seconds the oldest pending outbox row has waited",
            metrics.outbox_oldest_age_seconds.clone(),
        );
        registry.register(
            "outbox_failed_rows",
            "Outbox rows in Failed after exhausting their retries",
            metrics.outbox_failed_rows.clone(),
        );
        metrics.create_known_series();
        metrics
    }
}

impl ControlPlaneMetrics {
    /// The control plane's metrics in `metrics`' registry (registered on first use).
    pub fn new(metrics: &Metrics) -> Self {
        metrics.component()
    }

    /// Creates every series whose labels are all enums, at zero.
    fn create_known_series(&self) {
        for &controller in Controller::ALL {
            for &result in ReconcileResult::ALL {
                let _ = self.reconciles.get_or_create(&ReconcileLabels { controller, result });
            }
            let labels = ControllerLabels { controller };
            let _ = self.reconcile_duration_seconds.get_or_create(&labels);
            let _ = self.workqueue_depth.get_or_create(&labels);
            let _ = self.reconcile_errors.get_or_create(&labels);
            let _ = self.workqueue_retries.get_or_create(&labels);
        }
        for &task_kind in TaskKind::ALL {
            let labels = TaskKindLabels { task_kind };
            let _ = self.task_backlog_depth.get_or_create(&labels);
            let _ = self.task_backlog_oldest_age_seconds.get_or_create(&labels);
            let _ = self.leases_expired.get_or_create(&labels);
            let _ = self.task_duration_seconds.get_or_create(&labels);
            for &reason in RetryReason::ALL {
                let _ = self.task_retries.get_or_create(&TaskRetryLabels { task_kind, reason });
            }
            for &phase in TerminalPhase::ALL {
                let _ = self.tasks_finished.get_or_create(&TaskPhaseLabels { task_kind, phase });
            }
        }
        for &phase in TerminalPhase::ALL {
            let labels = PhaseLabels { phase };
            let _ = self.jobs_finished.get_or_create(&labels);
            let _ = self.job_duration_seconds.get_or_create(&labels);
        }
    }

    /// Counts one reconcile: result, duration and, for [`ReconcileResult::Error`], an error.
    /// (The error's code goes to the log line, not to a label.)
    pub fn observe_reconcile(&self, controller: Controller, result: ReconcileResult, duration_seconds: f64) {
        self.reconciles.get_or_create(&ReconcileLabels { controller, result }).inc();
        self.reconcile_duration_seconds.get_or_create(&ControllerLabels { controller }).observe(duration_seconds);
        if result == ReconcileResult::Error {
            self.reconcile_errors.get_or_create(&ControllerLabels { controller }).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_errors_are_counted_per_controller() {
        let metrics = Metrics::new();
        let control_plane = ControlPlaneMetrics::new(&metrics);
        control_plane.observe_reconcile(Controller::Job, ReconcileResult::Error, 0.2);
        control_plane.observe_reconcile(Controller::Job, ReconcileResult::Success, 0.1);
        let text = metrics.encode();
        assert!(text.contains("duckmesh_reconcile_errors_total{controller=\"job\"} 1"));
        assert!(text.contains("duckmesh_reconcile_total{controller=\"job\",result=\"success\"} 1"));
        assert!(text.contains("duckmesh_reconcile_total{controller=\"job\",result=\"error\"} 1"));
    }
}
