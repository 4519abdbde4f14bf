//! The `Job` resource: one run of a DAG of tasks.

use crate::conditions::Condition;
use crate::task::TaskTemplate;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One DAG run. The operator validates the graph, creates one owned `Task` per node and
/// summarises their progress here; `kubectl wait --for=condition=Succeeded job.duckmesh.io/<name>`
/// waits for it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "duckmesh.io",
    version = "v1alpha1",
    kind = "Job",
    doc = "A DuckMesh job: one run of a DAG of SQL (or maintenance) tasks.",
    namespaced,
    status = "JobStatus",
    shortname = "dmjob",
    category = "duckmesh",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Succeeded","type":"integer","jsonPath":".status.counts.succeeded"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.counts.failed"}"#,
    printcolumn = r#"{"name":"Tasks","type":"integer","jsonPath":".status.counts.total"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::unsigned_formats)]
pub struct JobSpec {
    /// The tenant the job's tasks run as.
    #[serde(default = "crate::dataset::default_tenant")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$"))]
    pub tenant: String,
    /// At most this many of the job's tasks run at the same time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_parallel: Option<u32>,
    /// The tasks. Their graph (via `dependsOn`) must be acyclic; it is fixed once the job
    /// starts: to change it, create a new Job.
    #[schemars(length(min = 1, max = 10000))]
    pub tasks: Vec<TaskTemplate>,
}

/// Task counts per phase.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct PhaseCounts {
    /// Waiting for dependencies or a lease (including retrying).
    pub pending: u32,
    /// Leased or running.
    pub running: u32,
    /// Succeeded.
    pub succeeded: u32,
    /// Failed.
    pub failed: u32,
    /// Cancelled.
    pub cancelled: u32,
    /// All tasks.
    pub total: u32,
}

/// A bounded summary of the job's progress (never one entry per task).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::unsigned_formats)]
pub struct JobStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Tasks per phase.
    #[serde(default)]
    pub counts: PhaseCounts,
    /// Up to ten failed task names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tasks: Vec<String>,
    /// When the first task started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When the job became terminal (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid`, `Ready`, `Succeeded` and `Failed` conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
