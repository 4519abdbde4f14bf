//! The life cycles of tasks, attempts and jobs, and their stable string forms as stored in the
//! catalog and shown in Kubernetes status.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A phase string that names no known phase (a catalog written by a newer version, or a typo).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} phase {value:?}")]
pub struct UnknownPhase {
    /// Which life cycle was being parsed.
    pub kind: &'static str,
    /// The offending value.
    pub value: String,
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in life-cycle order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable string stored in the catalog.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownPhase;

            fn from_str(value: &str) -> Result<Self, Self::Err> {
                match value {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownPhase { kind: $kind, value: value.to_owned() }),
                }
            }
        }
    };
}

string_enum!(
    /// Where a task stands. `Leased` and `Running` are *active*: they count against
    /// concurrency limits and hold a lease that must be heartbeated.
    TaskPhase, "task" {
        /// Waiting for its dependencies or for a scheduler to lease it.
        Pending => "Pending",
        /// A lease was taken; the runner has not confirmed that it started.
        Leased => "Leased",
        /// The runner confirmed its attempt and heartbeats it.
        Running => "Running",
        /// The last attempt failed retryably; the next may start at `next_retry_at`.
        Retrying => "Retrying",
        /// One attempt committed the task's output. Terminal.
        Succeeded => "Succeeded",
        /// Attempts are exhausted, the error was permanent, or a dependency failed. Terminal.
        Failed => "Failed",
        /// The task's job was deleted or cancelled. Terminal.
        Cancelled => "Cancelled",
    }
);

impl TaskPhase {
    /// Whether the phase can never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// Whether the task holds a lease (counts against concurrency limits).
    pub fn is_active(self) -> bool {
        matches!(self, Self::Leased | Self::Running)
    }
}

string_enum!(
    /// Where one attempt (one lease) stands.
    AttemptState, "attempt" {
        /// The lease was granted; the runner has not confirmed yet.
        Leased => "Leased",
        /// The runner confirmed and heartbeats.
        Running => "Running",
        /// The attempt committed. Terminal.
        Succeeded => "Succeeded",
        /// The attempt reported a failure. Terminal.
        Failed => "Failed",
        /// The lease ran out before a commit; a reaper retired it. Terminal.
        Expired => "Expired",
        /// The task was cancelled while this attempt held it. Terminal.
        Cancelled => "Cancelled",
    }
);

impl AttemptState {
    /// Whether the attempt still holds its lease.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Leased | Self::Running)
    }
}

string_enum!(
    /// A job's phase, derived from its tasks' phases.
    JobPhase, "job" {
        /// No task has started yet.
        Pending => "Pending",
        /// Some task is active or waiting to run.
        Running => "Running",
        /// Every task succeeded. Terminal.
        Succeeded => "Succeeded",
        /// Every task is terminal and at least one failed. Terminal.
        Failed => "Failed",
        /// The job was cancelled. Terminal.
        Cancelled => "Cancelled",
    }
);

impl JobPhase {
    /// Derives a job's phase from how many of its tasks are in each phase.
    ///
    /// A job is terminal only when every task is terminal, so that a failure never hides
    /// work that is still running. A job with no tasks has nothing to do and has succeeded.
    pub fn from_task_counts(counts: impl IntoIterator<Item = (TaskPhase, u64)>) -> Self {
        let (mut total, mut terminal, mut failed, mut cancelled, mut started) = (0, 0, 0, 0, 0);
        for (phase, count) in counts {
            total += count;
            if phase.is_terminal() {
                terminal += count;
            }
            match phase {
                TaskPhase::Failed => failed += count,
                TaskPhase::Cancelled => cancelled += count,
                TaskPhase::Pending => {}
                _ => started += count,
            }
        }
        if terminal == total {
            if failed > 0 {
                Self::Failed
            } else if cancelled > 0 {
                Self::Cancelled
            } else {
                Self::Succeeded
            }
        } else if started + terminal > 0 {
            Self::Running
        } else {
            Self::Pending
        }
    }

    /// Whether the phase can never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip_through_their_strings() {
        for phase in TaskPhase::ALL {
            assert_eq!(phase.as_str().parse::<TaskPhase>(), Ok(*phase));
        }
        for state in AttemptState::ALL {
            assert_eq!(state.as_str().parse::<AttemptState>(), Ok(*state));
        }
        for phase in JobPhase::ALL {
            assert_eq!(phase.as_str().parse::<JobPhase>(), Ok(*phase));
        }
        let err = "Exploded".parse::<TaskPhase>().expect_err("unknown phase");
        assert_eq!(err.to_string(), "unknown task phase \"Exploded\"");
    }

    #[test]
    fn job_phase_table() {
        use TaskPhase::*;
        let cases: &[(&[(TaskPhase, u64)], JobPhase)] = &[
            (&[], JobPhase::Succeeded),
            (&[(Pending, 3)], JobPhase::Pending),
            (&[(Pending, 2), (Leased, 1)], JobPhase::Running),
            (&[(Pending, 2), (Succeeded, 1)], JobPhase::Running),
            (&[(Retrying, 1)], JobPhase::Running),
            (&[(Succeeded, 4)], JobPhase::Succeeded),
            (&[(Succeeded, 3), (Failed, 1)], JobPhase::Failed),
            (&[(Running, 1), (Failed, 1)], JobPhase::Running),
            (&[(Succeeded, 1), (Cancelled, 2)], JobPhase::Cancelled),
            (&[(Failed, 1), (Cancelled, 2)], JobPhase::Failed),
        ];
        for (counts, expected) in cases {
            assert_eq!(JobPhase::from_task_counts(counts.iter().copied()), *expected, "counts {counts:?}");
        }
    }
}
