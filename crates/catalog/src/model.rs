//! The catalog's records and requests.

use chrono::{DateTime, Utc};
use duckmesh_core::{AttemptId, AttemptState, DatasetId, Fence, JobId, JobPhase, SnapshotId, TaskId, TaskPhase};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A Dataset as declared by a user (a `Dataset` resource or a dev-mode YAML document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetSpec {
    /// Kubernetes namespace (or `default` in dev mode).
    pub namespace: String,
    /// Name, unique in its namespace.
    pub name: String,
    /// The resource's uid; a new uid under the same name is a new incarnation.
    pub uid: String,
    /// The resource's `metadata.generation`; older generations never overwrite newer ones.
    pub generation: i64,
    /// Owning tenant.
    pub tenant: String,
    /// The declared columns, if any.
    pub schema: Option<Vec<Column>>,
    /// The full spec, kept for the operator and maintenance tasks.
    pub spec: serde_json::Value,
}

pub use duckmesh_contracts::Column;
pub use duckmesh_contracts::commit::{CommitMode, NewFile};

/// A dataset as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetRecord {
    /// Catalog id.
    pub id: DatasetId,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Resource uid.
    pub uid: String,
    /// Last applied generation.
    pub generation: i64,
    /// Owning tenant.
    pub tenant: String,
    /// Known columns.
    pub schema: Option<Vec<Column>>,
    /// Full spec.
    pub spec: serde_json::Value,
    /// The latest committed snapshot, if any.
    pub current_snapshot: Option<SnapshotId>,
    /// The latest visibility token (0 before the first commit).
    pub visibility_token: i64,
    /// Files in the current snapshot.
    pub file_count: i64,
    /// Rows in the current snapshot.
    pub row_count: i64,
    /// Bytes in the current snapshot.
    pub byte_count: i64,
    /// When the latest snapshot was committed.
    pub last_commit_at: Option<DateTime<Utc>>,
}

/// A job (one DAG run) as declared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Resource uid.
    pub uid: String,
    /// Resource generation.
    pub generation: i64,
    /// Owning tenant.
    pub tenant: String,
    /// At most this many of its tasks run at once.
    pub max_parallel: Option<u32>,
    /// The full spec.
    pub spec: serde_json::Value,
    /// Its tasks; the graph is fixed when the job is first stored.
    pub tasks: Vec<TaskSpec>,
}

/// One task of a job, or a standalone task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Node name, unique in the job.
    pub name: String,
    /// Task kind: `sql`, `compact`, `gc`, `integrity`, `export`.
    pub kind: String,
    /// Names of the tasks (in the same job) that must succeed first.
    pub depends_on: Vec<String>,
    /// At most this many attempts (default from the catalog config).
    pub max_attempts: Option<u32>,
    /// Runtime limit per attempt.
    pub timeout_seconds: Option<u32>,
    /// The dataset the task commits to, if any.
    pub output: Option<TaskOutput>,
    /// The kind-specific spec (SQL, inputs, resources…).
    pub spec: serde_json::Value,
}

/// Where a task's result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOutput {
    /// The output dataset.
    pub dataset: DatasetId,
    /// Append or overwrite.
    pub mode: CommitMode,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    /// Catalog id.
    pub id: JobId,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Resource uid.
    pub uid: String,
    /// The resource generation last applied (a finished job is never updated again, so for
    /// a finished job this is the generation that ran).
    pub generation: i64,
    /// Recorded phase (terminal phases are final).
    pub phase: JobPhase,
    /// Concurrency cap.
    pub max_parallel: Option<u32>,
    /// When stored.
    pub created_at: DateTime<Utc>,
    /// When it reached a terminal phase.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A bounded summary of a job's tasks, safe to put into a resource status whatever the size
/// of the job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobSummary {
    /// The job.
    pub job: JobRecord,
    /// Tasks per phase.
    pub counts: BTreeMap<String, u64>,
    /// Total tasks.
    pub total: u64,
    /// Up to [`JobSummary::FAILED_NAMES_CAP`] names of failed tasks.
    pub failed_tasks: Vec<String>,
    /// When the first task started (was first leased).
    pub started_at: Option<DateTime<Utc>>,
    /// When a worker first actually ran one of its tasks (confirmed its attempt from inside
    /// its pod or process); `None` while no worker ever started.
    pub first_run_at: Option<DateTime<Utc>>,
}

impl JobSummary {
    /// How many failed task names a summary lists at most.
    pub const FAILED_NAMES_CAP: usize = 10;
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRecord {
    /// Catalog id.
    pub id: TaskId,
    /// Its job, if any.
    pub job: Option<JobId>,
    /// Namespace.
    pub namespace: String,
    /// Node name (or standalone task name).
    pub name: String,
    /// Owning tenant.
    pub tenant: String,
    /// Kind.
    pub kind: String,
    /// Kind-specific spec.
    pub spec: serde_json::Value,
    /// Dependencies.
    pub depends_on: Vec<TaskId>,
    /// Phase.
    pub phase: TaskPhase,
    /// Attempts taken so far.
    pub attempts: u32,
    /// Attempt budget.
    pub max_attempts: u32,
    /// Runtime limit.
    pub timeout_seconds: Option<u32>,
    /// The latest attempt's fence.
    pub fence: Option<Fence>,
    /// When a retrying task may run again.
    pub next_retry_at: Option<DateTime<Utc>>,
    /// Output, if any.
    pub output: Option<TaskOutput>,
    /// The snapshot its success committed.
    pub output_snapshot: Option<SnapshotId>,
    /// The last error's code.
    pub last_error_code: Option<String>,
    /// The last error's message.
    pub last_error_message: Option<String>,
    /// When the first attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it became terminal.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A granted lease: the identity a runner needs to confirm, heartbeat and commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The task.
    pub task: TaskId,
    /// The new attempt.
    pub attempt: AttemptId,
    /// The attempt's 1-based number.
    pub number: u32,
    /// Its fencing token.
    pub fence: Fence,
    /// When the lease runs out unless heartbeated.
    pub expires_at: DateTime<Utc>,
}

impl Lease {
    /// The reference used for every fenced call.
    pub fn attempt_ref(&self) -> AttemptRef {
        AttemptRef { attempt: self.attempt, fence: self.fence }
    }
}

/// The identity an attempt presents on every fenced call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRef {
    /// The attempt.
    pub attempt: AttemptId,
    /// Its fencing token.
    pub fence: Fence,
}

/// An attempt as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRecord {
    /// Catalog id.
    pub id: AttemptId,
    /// Its task.
    pub task: TaskId,
    /// 1-based number.
    pub number: u32,
    /// Fencing token.
    pub fence: Fence,
    /// State.
    pub state: AttemptState,
    /// Scheduler, then pod or process.
    pub runner: Option<String>,
    /// When the lease runs out.
    pub lease_expires_at: DateTime<Utc>,
    /// Last heartbeat.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// Error code of a failed attempt.
    pub error_code: Option<String>,
    /// Error message of a failed attempt.
    pub error_message: Option<String>,
}

/// A fenced commit of one attempt's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRequest {
    /// Target dataset (must be the task's output when it declares one).
    pub dataset: DatasetId,
    /// Append or overwrite.
    pub mode: CommitMode,
    /// Files written by the attempt.
    pub files: Vec<NewFile>,
    /// Where the attempt's manifest was written.
    pub manifest_path: Option<String>,
    /// The files' columns; checked against the dataset's for appends.
    pub schema: Option<Vec<Column>>,
}

/// The result of a successful commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The dataset.
    pub dataset: DatasetId,
    /// The new snapshot.
    pub snapshot: SnapshotId,
    /// The snapshot it replaced as current.
    pub parent: Option<SnapshotId>,
    /// The dataset's new visibility token.
    pub visibility_token: i64,
}

/// A classified failure reported by a runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Stable error code.
    pub code: String,
    /// Human-readable message (shown in task status).
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
}

impl Failure {
    /// Whether the catalog's emergency read-only switch refused the attempt's commit. The
    /// attempt did nothing wrong, so the refusal does not count against the task's
    /// `maxAttempts`: the task waits and retries for as long as the switch stays on.
    pub fn is_read_only_refusal(&self) -> bool {
        self.code == crate::Error::READ_ONLY_CODE
    }
}

/// What failing an attempt did to its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FailOutcome {
    /// Another attempt may start at the given time.
    Retrying {
        /// Earliest start of the next attempt.
        next_retry_at: DateTime<Utc>,
    },
    /// The task failed terminally; dependents were failed as `upstream_failed`.
    Failed {
        /// How many dependent tasks were failed with it.
        dependents_failed: u64,
    },
}

/// A committed snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// Dataset.
    pub dataset: DatasetId,
    /// Snapshot id.
    pub id: SnapshotId,
    /// Previous snapshot.
    pub parent: Option<SnapshotId>,
    /// Visibility token.
    pub visibility_token: i64,
    /// `append`, `overwrite`, `ingest` or `compact`.
    pub kind: String,
    /// Producing task.
    pub task: Option<TaskId>,
    /// Producing attempt.
    pub attempt: Option<AttemptId>,
    /// Files in the snapshot.
    pub file_count: i64,
    /// Rows in the snapshot.
    pub row_count: i64,
    /// Bytes in the snapshot.
    pub byte_count: i64,
    /// Manifest written with it.
    pub manifest_path: Option<String>,
    /// Commit time.
    pub committed_at: DateTime<Utc>,
}

/// A file of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileRecord {
    /// Object-store key.
    pub path: String,
    /// Size in bytes.
    pub bytes: i64,
    /// Row count.
    pub rows: i64,
    /// Hex SHA-256.
    pub sha256: String,
    /// Partition values.
    pub partition: Option<serde_json::Value>,
    /// The snapshot that added it.
    pub added_in: SnapshotId,
}

/// Catalog behaviour knobs (SPEC §3 defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CatalogConfig {
    /// Lease granted per attempt and renewed by each heartbeat.
    pub lease: Duration,
    /// Attempts per task unless its spec says otherwise.
    pub default_max_attempts: u32,
    /// Delay before a failed task's next attempt.
    pub task_backoff: duckmesh_core::BackoffPolicy,
    /// Delay before an outbox row is offered again.
    pub outbox_backoff: duckmesh_core::BackoffPolicy,
    /// Deliveries before an outbox row is marked `Failed`.
    pub outbox_max_attempts: u32,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(120),
            default_max_attempts: 3,
            task_backoff: duckmesh_core::BackoffPolicy::TASK,
            outbox_backoff: duckmesh_core::BackoffPolicy::OUTBOX,
            outbox_max_attempts: 20,
        }
    }
}
