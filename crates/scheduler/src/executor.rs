//! The executor port: what the scheduler asks of whatever runs attempts (worker Pods in a
//! cluster, child processes in `duckmesh dev`), and the pure rule that turns a runner's end
//! into a catalog action.

use duckmesh_catalog::{Failure, Lease, TaskRecord};
use duckmesh_core::{AttemptId, RunnerFailure, TaskId, exit};
use std::future::Future;

/// Everything a runner needs to start one leased attempt.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The lease: task, attempt, number, fence and expiry.
    pub lease: Lease,
    /// The task as stored (namespace, tenant, kind, spec, timeout…).
    pub task: TaskRecord,
    /// Name of the task's Job, if it has one.
    pub job: Option<String>,
    /// W3C trace context of the scheduling pass, handed to the runner as `TRACEPARENT`.
    pub traceparent: Option<String>,
}

/// How a runner ended, as its executor observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerExit {
    /// The worker exited with this code (docs/worker.md lists them).
    Exited(i32),
    /// The worker was killed: by a signal, the OOM killer, an eviction.
    Killed {
        /// What killed it, for the attempt's error message (`SIGKILL`, `OOMKilled`…).
        reason: String,
    },
    /// The executor stopped it for running past the task's timeout.
    TimedOut {
        /// The limit it exceeded.
        seconds: u64,
    },
    /// The runner could not be started (spawn error, pod rejected, image missing).
    StartFailed {
        /// Why.
        reason: String,
    },
    /// The runner disappeared without an exit status (pod deleted, node lost).
    Lost {
        /// What was observed.
        reason: String,
    },
}

/// A runner's end, reported by an executor to the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerEnded {
    /// The task.
    pub task: TaskId,
    /// The attempt the runner ran.
    pub attempt: AttemptId,
    /// The attempt's fencing token.
    pub fence: duckmesh_core::Fence,
    /// How it ended.
    pub exit: RunnerExit,
}

/// An executor could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExecutorError {
    /// Stable error code, e.g. `spawn_failed`, `pod_create_failed`.
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
}

impl ExecutorError {
    /// A new error.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// Stable error code.
    pub fn error_code(&self) -> &'static str {
        self.code
    }
}

/// Starts, and stops, the runner of one attempt. Runners' ends are reported separately, on
/// the channel of [`RunnerEnded`] the executor was built with, so the scheduler can record
/// what the worker itself could not.
pub trait Executor: Send + Sync + 'static {
    /// Starts the runner of `launch`. An error means no runner is running for it.
    fn launch(&self, launch: Launch) -> impl Future<Output = Result<(), ExecutorError>> + Send;

    /// Stops the runner of an attempt that lost its lease or was cancelled. Idempotent: stopping
    /// an attempt that has no runner is not an error.
    fn stop(&self, attempt: AttemptId) -> impl Future<Output = Result<(), ExecutorError>> + Send;
}

/// What the catalog should record when a runner ends: `None` when the worker recorded the
/// outcome itself (committed, failed or fenced out), otherwise the failure to record against
/// the attempt. Recording is fenced, so a failure for an attempt that already ended is refused
/// by the catalog and changes nothing.
pub fn failure_for(exit: &RunnerExit) -> Option<Failure> {
    let (kind, message) = match exit {
        RunnerExit::Exited(code) if exit::reported_by_worker(*code) => return None,
        RunnerExit::Exited(code) if *code == i32::from(exit::USAGE) => (
            RunnerFailure::WorkerMisconfigured,
            "the worker could not start: invalid arguments or environment (see its log)".to_owned(),
        ),
        RunnerExit::Exited(code) if *code == i32::from(exit::UNREPORTED) => {
            (RunnerFailure::WorkerUnreported, "the worker failed and could not record why (see its log)".to_owned())
        }
        RunnerExit::Exited(code) => {
            (RunnerFailure::WorkerCrashed, format!("the worker exited with unexpected code {code}"))
        }
        RunnerExit::Killed { reason } => (RunnerFailure::WorkerKilled, format!("the worker was killed ({reason})")),
        RunnerExit::TimedOut { seconds } => {
            (RunnerFailure::TaskTimeout, format!("the attempt ran past its timeout of {seconds} s and was stopped"))
        }
        RunnerExit::StartFailed { reason } => {
            (RunnerFailure::RunnerStartFailed, format!("the worker could not be started: {reason}"))
        }
        RunnerExit::Lost { reason } => (RunnerFailure::RunnerLost, format!("the worker disappeared: {reason}")),
    };
    Some(runner_failure(kind, message))
}

/// The catalog failure that records `kind` with `message`.
pub fn runner_failure(kind: RunnerFailure, message: String) -> Failure {
    Failure { code: kind.code().to_owned(), message, retryable: kind.is_retryable() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_ends_table() {
        let killed = RunnerExit::Killed { reason: "OOMKilled".into() };
        let lost = RunnerExit::Lost { reason: "pod deleted".into() };
        let cases: Vec<(RunnerExit, Option<(&str, bool)>)> = vec![
            (RunnerExit::Exited(0), None),
            (RunnerExit::Exited(10), None),
            (RunnerExit::Exited(11), None),
            (RunnerExit::Exited(12), None),
            (RunnerExit::Exited(2), Some(("worker_misconfigured", false))),
            (RunnerExit::Exited(13), Some(("worker_unreported", true))),
            (RunnerExit::Exited(1), Some(("worker_crashed", true))),
            (RunnerExit::Exited(101), Some(("worker_crashed", true))),
            (RunnerExit::Exited(-1), Some(("worker_crashed", true))),
            (killed, Some(("worker_killed", true))),
            (RunnerExit::TimedOut { seconds: 60 }, Some(("task_timeout", true))),
            (RunnerExit::StartFailed { reason: "no such file".into() }, Some(("runner_start_failed", true))),
            (lost, Some(("runner_lost", true))),
        ];
        for (exit, expected) in cases {
            let got = failure_for(&exit);
            assert_eq!(got.as_ref().map(|f| (f.code.as_str(), f.retryable)), expected, "{exit:?}");
            if let Some(failure) = got {
                assert!(!failure.message.is_empty());
            }
        }
        let message = failure_for(&RunnerExit::Killed { reason: "OOMKilled".into() }).map(|f| f.message);
        assert_eq!(message.as_deref(), Some("the worker was killed (OOMKilled)"));
    }
}
