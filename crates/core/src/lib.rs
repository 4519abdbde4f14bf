//! The pure heart of DuckMesh's scheduler.
//!
//! Everything here is a plain function of observed state and a `now` that the caller passes
//! in: no clock reads, no I/O, no Kubernetes. The catalog (Postgres) and the adapters
//! (operator, `duckmesh dev`) perform what these functions decide, so the rules are written
//! and tested exactly once. The same goes for the SQL statement check ([`statement`]) that the
//! query API and the worker share.

pub mod backoff;
pub mod dag;
pub mod exit;
pub mod failure;
pub mod ids;
pub mod phase;
pub mod pivot;
pub mod schedule;
pub mod statement;

pub use backoff::BackoffPolicy;
pub use dag::{DagError, topological_order};
pub use failure::RunnerFailure;
pub use ids::{AttemptId, DatasetId, Fence, JobId, SnapshotId, TaskId};
pub use phase::{AttemptState, JobPhase, TaskPhase, UnknownPhase};
pub use schedule::{ConcurrencyLimits, Plan, SchedulingState, TaskView, runnable};
pub use statement::StatementError;
