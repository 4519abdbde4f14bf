//! The `Dataset` resource: a table with an optional schema, partitioning, retention,
//! compaction and ingest settings.

use crate::conditions::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub(crate) fn default_tenant() -> String {
    "default".to_owned()
}

/// A table whose contents are immutable snapshots of Parquet files in object storage.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "duckmesh.io",
    version = "v1alpha1",
    kind = "Dataset",
    doc = "A DuckMesh dataset: a table made of immutable snapshots of Parquet files, recorded in the catalog.",
    namespaced,
    status = "DatasetStatus",
    shortname = "dmds",
    category = "duckmesh",
    printcolumn = r#"{"name":"Snapshot","type":"integer","jsonPath":".status.currentSnapshot"}"#,
    printcolumn = r#"{"name":"Token","type":"integer","jsonPath":".status.visibilityToken"}"#,
    printcolumn = r#"{"name":"Files","type":"integer","jsonPath":".status.files"}"#,
    printcolumn = r#"{"name":"Rows","type":"integer","jsonPath":".status.rows"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::unsigned_formats)]
pub struct DatasetSpec {
    /// The tenant that owns the dataset; other tenants can neither query nor ingest into it.
    #[serde(default = "default_tenant")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$"))]
    pub tenant: String,
    /// Declared columns. Optional: without it the first commit's columns become the schema,
    /// and every later append must match it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub schema: Vec<SchemaColumn>,
    /// Columns whose values split the data into one directory per value
    /// (`<column>=<value>/`), so queries filtering on them read less.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub partition_by: Vec<String>,
    /// Target size of each Parquet file written to this dataset (default 128 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1048576, max = 17179869184u64))]
    pub target_file_size_bytes: Option<u64>,
    /// How long old snapshots (and files only they reference) are kept for time travel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionPolicy>,
    /// Background compaction of small files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<CompactionPolicy>,
    /// The scheduled integrity check of the dataset's files against the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<IntegrityPolicy>,
    /// Settings for records posted to `/v1/ingest/{dataset}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest: Option<IngestSettings>,
}

/// One declared column.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SchemaColumn {
    /// Column name.
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    /// DuckDB type, e.g. `BIGINT`, `DOUBLE`, `VARCHAR`, `DATE`, `TIMESTAMP`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 255))]
    pub data_type: String,
}

/// Snapshot retention.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicy {
    /// Keep at least this many most recent snapshots (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub keep_snapshots: Option<u32>,
    /// Also keep every snapshot younger than this many days (default 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3650))]
    pub max_age_days: Option<u32>,
    /// When garbage collection runs: a cron expression (minute hour day month weekday, UTC;
    /// default `30 3 * * *`, daily at 03:30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    pub gc_schedule: Option<String>,
}

/// Compaction policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompactionPolicy {
    /// Whether compaction tasks are scheduled for this dataset.
    #[serde(default)]
    pub enabled: bool,
    /// Compact once the current snapshot has at least this many files smaller than the
    /// target size (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 100000))]
    pub min_files: Option<u32>,
    /// When compaction runs: a cron expression (minute hour day month weekday, UTC; default
    /// `0 * * * *`, hourly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    pub schedule: Option<String>,
}

/// The scheduled integrity check (on by default, daily).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntegrityPolicy {
    /// Whether integrity tasks are scheduled for this dataset (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// When the check runs: a cron expression (minute hour day month weekday, UTC; default
    /// `0 4 * * *`, daily at 04:00).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    pub schedule: Option<String>,
    /// Also download every file and compare its SHA-256 (reads all the data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_hashes: Option<bool>,
}

/// Ingest settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestSettings {
    /// The column whose value identifies a record: a second record with the same key is
    /// acknowledged as a duplicate and never stored twice.
    #[schemars(length(min = 1, max = 255))]
    pub dedupe_key: String,
    /// Records per minute one tenant may post to this dataset before getting 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rate_limit_per_minute: Option<u32>,
    /// Pending (acknowledged, not yet committed) records beyond which ingest answers 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_pending_records: Option<u64>,
}

/// What the operator observed about a dataset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::unsigned_formats)]
pub struct DatasetStatus {
    /// The latest committed snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_snapshot: Option<i64>,
    /// The latest visibility token (pass it as `min_visibility_token` to read your writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility_token: Option<i64>,
    /// Files in the current snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<i64>,
    /// Rows in the current snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
    /// Bytes in the current snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// When the latest snapshot was committed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit_time: Option<String>,
    /// Seconds between the latest commit and the last status update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness_seconds: Option<i64>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (registered and healthy) and `Valid` conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
