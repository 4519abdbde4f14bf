//! The failure codes the scheduler records for an attempt whose worker could not record its
//! own outcome: it crashed, was killed, ran past its timeout, could not be started, or its
//! runner vanished. The worker records its own failures (`sql_error`, `input_corrupt`, …);
//! these are the scheduler's, decided and matched on as values rather than strings.

/// Why a runner ended without its worker recording the attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunnerFailure {
    /// The worker refused its arguments or environment (exit code 2): retrying cannot help.
    WorkerMisconfigured,
    /// The worker failed and could not record why (exit code 13).
    WorkerUnreported,
    /// The worker exited with a code it never uses on purpose (a panic, a signal).
    WorkerCrashed,
    /// The runner was killed (out of memory, evicted).
    WorkerKilled,
    /// The attempt ran past its task's timeout and was stopped.
    TaskTimeout,
    /// The runner (process or pod) could not be started.
    RunnerStartFailed,
    /// The runner disappeared (pod deleted, node lost).
    RunnerLost,
}

impl RunnerFailure {
    /// Every failure, in declaration order.
    pub const ALL: [Self; 7] = [
        Self::WorkerMisconfigured,
        Self::WorkerUnreported,
        Self::WorkerCrashed,
        Self::WorkerKilled,
        Self::TaskTimeout,
        Self::RunnerStartFailed,
        Self::RunnerLost,
    ];

    /// The stable error code stored with the attempt (`last_error_code`).
    pub fn code(self) -> &'static str {
        match self {
            Self::WorkerMisconfigured => "worker_misconfigured",
            Self::WorkerUnreported => "worker_unreported",
            Self::WorkerCrashed => "worker_crashed",
            Self::WorkerKilled => "worker_killed",
            Self::TaskTimeout => "task_timeout",
            Self::RunnerStartFailed => "runner_start_failed",
            Self::RunnerLost => "runner_lost",
        }
    }

    /// The failure whose [`RunnerFailure::code`] is `code`.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|failure| failure.code() == code)
    }

    /// Whether another attempt may succeed: all but a misconfigured worker.
    pub fn is_retryable(self) -> bool {
        self != Self::WorkerMisconfigured
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_read_back() {
        let mut codes: Vec<&str> = RunnerFailure::ALL.iter().map(|failure| failure.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), RunnerFailure::ALL.len());
        for failure in RunnerFailure::ALL {
            assert_eq!(RunnerFailure::from_code(failure.code()), Some(failure));
        }
        assert_eq!(RunnerFailure::from_code("sql_error"), None);
        assert!(!RunnerFailure::WorkerMisconfigured.is_retryable());
        assert!(RunnerFailure::RunnerLost.is_retryable());
    }
}
