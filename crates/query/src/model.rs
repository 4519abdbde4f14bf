//! The JSON shapes of the HTTP API, shared by the server and [`crate::client`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The body of `POST /v1/query` and `POST /v1/task/query`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// One read-only SQL query (`SELECT`, `WITH … SELECT`, `VALUES`, `FROM …`). Datasets are
    /// tables; a name with `-` is also reachable with `_` (`trips-clean` → `trips_clean`).
    #[schema(min_length = 1, example = "SELECT zone_id, count(*) AS trips FROM trips GROUP BY zone_id")]
    pub sql: String,
    /// Snapshot pins: dataset name → snapshot id. Unpinned datasets are read at their latest
    /// committed snapshot.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub snapshots: BTreeMap<String, i64>,
    /// Strict barrier: wait until every unpinned dataset the query names has a visibility
    /// token of at least this, or fail with `consistency_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_visibility_token: Option<i64>,
    /// Overall time limit in milliseconds (barrier wait, queueing and execution), capped by
    /// the endpoint's maximum (60 s interactive, 300 s task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub timeout_ms: Option<i64>,
    /// Response format; `json` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// Namespace whose datasets the query reads; the service's default namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl QueryRequest {
    /// A request for `sql` with every option at its default.
    pub fn new(sql: impl Into<String>) -> Self {
        Self { sql: sql.into(), ..Self::default() }
    }
}

/// How a query's rows are returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A [`QueryResponse`] with the rows inline.
    #[default]
    Json,
    /// `text/csv` with a header line; the metadata goes into `X-DuckMesh-*` headers.
    Csv,
    /// An Arrow IPC stream (`application/vnd.apache.arrow.stream`).
    Arrow,
}

impl Format {
    /// The name used in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Arrow => "arrow",
        }
    }
}

/// A result column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// DuckDB type, e.g. `BIGINT`, `VARCHAR`, `DECIMAL(18,3)`.
    #[serde(rename = "type")]
    pub data_type: String,
}

/// Where an over-sized result went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExportInfo {
    /// Presigned URL of the Parquet file (a bearer credential until `expires_at`).
    pub url: String,
    /// Object key of the export.
    pub key: String,
    /// Always `parquet`.
    pub format: String,
    /// When the URL stops working.
    pub expires_at: DateTime<Utc>,
    /// Rows in the file (the whole result).
    pub row_count: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
}

/// The answer to a query in `json` format (and to an exported query in every format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueryResponse {
    /// Identifies the query in logs and export keys.
    pub query_id: String,
    /// Result columns.
    pub columns: Vec<ColumnInfo>,
    /// The rows, each an array in column order; empty when the result was exported.
    pub rows: Vec<Vec<serde_json::Value>>,
    /// Rows in the result (inline or exported).
    pub row_count: u64,
    /// The snapshot each dataset was read at.
    pub snapshots: BTreeMap<String, i64>,
    /// The visibility token of each dataset's snapshot.
    pub visibility_tokens: BTreeMap<String, i64>,
    /// Parquet files the query's datasets consist of.
    pub files_scanned: u64,
    /// Their bytes.
    pub bytes_scanned: u64,
    /// Files that had to be downloaded (the rest came from the local cache).
    pub files_downloaded: u64,
    /// Milliseconds from receipt to response.
    pub elapsed_ms: u64,
    /// Whether the result went over the inline caps and was exported instead.
    pub exported: bool,
    /// The export, when `exported`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportInfo>,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub error_code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// One dataset in `GET /v1/datasets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DatasetInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Latest committed snapshot.
    pub current_snapshot: Option<i64>,
    /// Latest visibility token (0 before the first commit).
    pub visibility_token: i64,
    /// Files in the current snapshot.
    pub file_count: i64,
    /// Rows in the current snapshot.
    pub row_count: i64,
    /// Bytes in the current snapshot.
    pub byte_count: i64,
    /// When the current snapshot was committed.
    pub last_commit_at: Option<DateTime<Utc>>,
    /// Known columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<ColumnInfo>>,
}

/// `GET /v1/datasets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DatasetList {
    /// The caller tenant's datasets, by namespace and name.
    pub datasets: Vec<DatasetInfo>,
}

/// One snapshot in `GET /v1/datasets/{name}/snapshots`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotInfo {
    /// Snapshot id.
    pub id: i64,
    /// The snapshot it followed.
    pub parent: Option<i64>,
    /// Its visibility token.
    pub visibility_token: i64,
    /// `append`, `overwrite`, `ingest` or `compact`.
    pub kind: String,
    /// Files.
    pub file_count: i64,
    /// Rows.
    pub row_count: i64,
    /// Bytes.
    pub byte_count: i64,
    /// Commit time.
    pub committed_at: DateTime<Utc>,
}

/// `GET /v1/datasets/{name}/snapshots`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotPage {
    /// The dataset.
    pub dataset: String,
    /// Up to `limit` snapshots older than `before`.
    pub snapshots: Vec<SnapshotInfo>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

/// `GET /v1/integrity`: the latest integrity run of each of the caller tenant's datasets in a
/// namespace that has one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IntegrityList {
    /// The namespace.
    pub namespace: String,
    /// One entry per dataset with a run, by name.
    pub datasets: Vec<IntegrityInfo>,
}

/// The latest integrity run of one dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IntegrityInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The run's id.
    pub run_id: i64,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it was recorded.
    pub finished_at: DateTime<Utc>,
    /// Whether file contents were hashed too.
    pub verify_hashes: bool,
    /// Nothing missing, mismatched or misdescribed (orphans aside).
    pub clean: bool,
    /// What was checked and found.
    pub counts: IntegrityCountsInfo,
    /// The first problems, by kind then path (`limit`, default 20).
    pub problems: Vec<IntegrityProblemInfo>,
}

/// Counts of one integrity run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IntegrityCountsInfo {
    /// Snapshots whose manifests were compared.
    pub snapshots_checked: i64,
    /// Committed files checked.
    pub files_checked: i64,
    /// Their bytes.
    pub bytes_checked: i64,
    /// Files missing from the bucket.
    pub missing_files: i64,
    /// Files of the wrong size.
    pub size_mismatch_files: i64,
    /// Files with the wrong SHA-256.
    pub hash_mismatch_files: i64,
    /// Manifests missing, unreadable or disagreeing with the catalog.
    pub manifest_problems: i64,
    /// Unreferenced objects under the dataset's prefix.
    pub orphan_files: i64,
}

/// One problem an integrity run found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IntegrityProblemInfo {
    /// `missing_file`, `size_mismatch`, `hash_mismatch`, `manifest` or `orphan`.
    pub kind: String,
    /// The object key.
    pub path: String,
    /// What was expected and what was found.
    pub detail: String,
}

/// `GET /v1/health` (and `/healthz`): liveness only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: String,
}
