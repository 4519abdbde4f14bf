//! The `Task` resource and the task template shared with `Job`.

use crate::conditions::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a task does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// DuckDB SQL over the inputs' pinned snapshots; the result becomes the output's next
    /// snapshot.
    #[default]
    Sql,
    /// Rewrite a dataset's small files into fewer large ones.
    Compact,
    /// Delete unreferenced files past retention and stale staging files.
    Gc,
    /// Check that every committed file exists with its recorded size and hash.
    Integrity,
    /// Export a snapshot to another location.
    Export,
}

impl TaskKind {
    /// The name stored in the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sql => "sql",
            Self::Compact => "compact",
            Self::Gc => "gc",
            Self::Integrity => "integrity",
            Self::Export => "export",
        }
    }
}

/// How the output dataset changes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputMode {
    /// The result's files join the current ones.
    #[default]
    Append,
    /// The result replaces the dataset's contents.
    Overwrite,
}

/// A dataset the task reads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct InputRef {
    /// The dataset's name (same namespace). SQL sees it as a table of that name, with `-`
    /// written as `_` (`trips-clean` → `trips_clean`).
    #[schemars(length(min = 1, max = 63))]
    pub dataset: String,
    /// Read this snapshot instead of the latest one at task start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub snapshot: Option<i64>,
}

/// The dataset the task writes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct OutputRef {
    /// The dataset's name (same namespace).
    #[schemars(length(min = 1, max = 63))]
    pub dataset: String,
    /// `append` (default) or `overwrite`.
    #[serde(default)]
    pub mode: OutputMode,
}

/// Compute for one attempt.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Resources {
    /// Memory for the worker (Kubernetes quantity, e.g. `2Gi`); also DuckDB's memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// CPU for the worker (e.g. `500m`, `2`); DuckDB uses that many threads (at least one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
}

/// Settings of a `compact` task (its dataset is `output.dataset`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompactSettings {
    /// Compact a partition once it has at least this many files smaller than the target size
    /// (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 100000))]
    pub min_files: Option<u32>,
    /// Size of the files written, and below which a file counts as small (default the
    /// Dataset's `targetFileSizeBytes`, else 128 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1048576, max = 17179869184u64))]
    pub target_file_size_bytes: Option<u64>,
}

/// Settings of an `integrity` task (its dataset is `output.dataset`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntegritySettings {
    /// Also download every file and compare its SHA-256 (reads all the data; default false:
    /// presence and sizes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_hashes: Option<bool>,
}

/// Settings of a `gc` task (its dataset is `output.dataset`; what is expired is the Dataset's
/// `retention`). The same as `duckmesh gc --dry-run --grace <SECONDS>`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcSettings {
    /// Change nothing: the worker logs what the run would expire, checkpoint and delete
    /// (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Seconds between a snapshot's expiry and the deletion of the files only it referenced;
    /// longer than any query runs (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub grace_seconds: Option<u64>,
}

/// The file format of an export.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// ZSTD Parquet files of about the Dataset's target size.
    #[default]
    Parquet,
    /// One CSV file with a header line.
    Csv,
}

/// Settings of an `export` task (its dataset is `output.dataset`; the dataset is read, never
/// changed).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportSettings {
    /// Where to write, under `_exports/<namespace>/` of the bucket (e.g. `trips/2026-12-02`):
    /// `/`-separated segments, none empty, `.` or `..`. An export already there is overwritten.
    #[schemars(length(min = 1, max = 512))]
    pub prefix: String,
    /// `parquet` (default) or `csv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ExportFormat>,
    /// The snapshot to export (default the dataset's current snapshot when the task runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub snapshot: Option<i64>,
}

/// One task: a node of a Job, or the spec of a standalone Task.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskTemplate {
    /// The task's name, unique in its Job (a DNS label: lower-case letters, digits, `-`).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// `sql` (default), `compact`, `gc`, `integrity` or `export`. A maintenance kind works
    /// on the dataset named by `output.dataset`, with the settings of its kind (`compact`,
    /// `gc`, `integrity`, `export`; `gc` takes its retention from the Dataset).
    #[serde(default)]
    pub kind: TaskKind,
    /// The query for `sql` tasks. Inputs are tables named after their datasets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1048576))]
    pub sql: Option<String>,
    /// Names of tasks of the same Job that must succeed first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub depends_on: Vec<String>,
    /// Datasets the task reads, each pinned to one committed snapshot for the whole attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub inputs: Vec<InputRef>,
    /// The dataset the task commits to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputRef>,
    /// Attempts before the task fails for good (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: Option<u32>,
    /// Per-attempt time limit in seconds; the query is interrupted and the attempt fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub timeout_seconds: Option<u32>,
    /// Memory and CPU per attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Target size of each Parquet file an `sql` task writes (overrides the dataset's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1048576, max = 17179869184u64))]
    pub target_file_size_bytes: Option<u64>,
    /// Settings of a `compact` task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact: Option<CompactSettings>,
    /// Settings of a `gc` task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc: Option<GcSettings>,
    /// Settings of an `integrity` task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<IntegritySettings>,
    /// Settings of an `export` task (required for that kind: it names the prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportSettings>,
}

/// One unit of work leased to a worker pod. Created by the operator for each node of a Job
/// (named `<job>-<task>`), or by a user as a standalone task.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "duckmesh.io",
    version = "v1alpha1",
    kind = "Task",
    doc = "A DuckMesh task: one unit of work, leased to one worker pod per attempt.",
    namespaced,
    status = "TaskStatus",
    shortname = "dmtask",
    category = "duckmesh",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Attempt","type":"integer","jsonPath":".status.attempt"}"#,
    printcolumn = r#"{"name":"Snapshot","type":"integer","jsonPath":".status.outputSnapshot"}"#,
    printcolumn = r#"{"name":"Error","type":"string","jsonPath":".status.lastErrorCode","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::unsigned_formats)]
pub struct TaskSpec {
    /// The owning Job's name, for tasks created from a Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The tenant (standalone tasks; a Job's tasks inherit the Job's).
    #[serde(default = "crate::dataset::default_tenant")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$"))]
    pub tenant: String,
    /// What to run.
    pub template: TaskTemplate,
}

/// What the operator observed about a task.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::unsigned_formats)]
pub struct TaskStatus {
    /// `Pending`, `Leased`, `Running`, `Retrying`, `Succeeded`, `Failed` or `Cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The current (or last) attempt number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The attempt budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The pod or process running the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_holder: Option<String>,
    /// When the current lease runs out unless renewed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<String>,
    /// The snapshot the successful attempt committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_snapshot: Option<i64>,
    /// When a retrying task may start its next attempt (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_time: Option<String>,
    /// The last error's stable code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_code: Option<String>,
    /// The last error's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_message: Option<String>,
    /// When the first attempt started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When the task became terminal (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Succeeded` and `Failed` conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
