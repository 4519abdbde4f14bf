//! The process exit codes of `duckmesh worker` (docs/worker.md), shared by the worker that
//! sets them and the executors (pods, local processes) that read them.

/// The attempt committed its output.
pub const COMMITTED: u8 = 0;
/// Invalid arguments, environment or attempt identity: the worker could not start.
pub const USAGE: u8 = 2;
/// A permanent failure (SQL, spec, schema, inputs) was reported: the task will not retry.
pub const FAILED_PERMANENT: u8 = 10;
/// A retryable failure was reported: the task retries after its backoff while it has
/// attempts left.
pub const FAILED_RETRYABLE: u8 = 11;
/// The attempt was fenced out (stale fence, expired lease, cancelled): nothing committed.
pub const FENCED: u8 = 12;
/// The attempt failed and the failure could not be recorded in the catalog; its lease
/// expires and the reaper retries the task.
pub const UNREPORTED: u8 = 13;

/// Whether the worker itself recorded how the attempt ended (commit, failure or fencing), so
/// the scheduler has nothing to add.
pub fn reported_by_worker(code: i32) -> bool {
    matches!(u8::try_from(code), Ok(COMMITTED | FAILED_PERMANENT | FAILED_RETRYABLE | FENCED))
}
