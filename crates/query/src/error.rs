//! The query service's errors: one variant per failing step, each with a stable
//! `error_code()` (API responses, logs, metric results) and the HTTP status it is answered with.

use std::path::PathBuf;
use std::time::Duration;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a request to the query service can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No API key, or one the service does not know.
    #[error("{message}")]
    Unauthorized {
        /// What was missing or wrong (never the key itself).
        message: String,
    },
    /// The caller went over a per-user or per-tenant request rate.
    #[error("rate limit exceeded ({scope}); retry in {} s", retry_after_seconds(*retry_after))]
    RateLimited {
        /// Which limit: `query per user`, `api per user`, `api per tenant`.
        scope: &'static str,
        /// When a retry can succeed.
        retry_after: Duration,
    },
    /// Every query slot is busy and the wait queue is full (or the wait ran out).
    #[error("the query service is at capacity ({message}); retry in {} s", retry_after_seconds(*retry_after))]
    Overloaded {
        /// Which bound was hit.
        message: String,
        /// A suggested delay before retrying.
        retry_after: Duration,
    },
    /// The request is malformed (JSON, fields, values).
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// What is wrong.
        message: String,
    },
    /// An ingest request refused by the request check ([`duckmesh_contracts::ingest`]): a
    /// malformed body, a record that does not fit the dataset, a NUL character. The whole
    /// request is rejected; the message names the record and field.
    #[error(transparent)]
    Ingest(#[from] duckmesh_contracts::ingest::IngestError),
    /// The request body is larger than the service accepts.
    #[error("the request body is larger than {limit} bytes; send smaller batches")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Ingest into a dataset whose columns are unknown.
    #[error("dataset {name:?} has no schema: declare spec.schema on the Dataset to ingest into it")]
    SchemaRequired {
        /// The dataset.
        name: String,
    },
    /// Emergency read-only mode is on: ingest is refused, queries keep working.
    #[error("DuckMesh is in emergency read-only mode{}: ingest is refused until it is turned off; queries work", reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
    ReadOnly {
        /// Why it was turned on.
        reason: Option<String>,
    },
    /// The dataset's buffer of acknowledged, not yet visible records is full.
    #[error("dataset {name:?} has {pending} records waiting to become visible (limit {limit}); retry in {} s", retry_after_seconds(*retry_after))]
    IngestBackpressure {
        /// The dataset.
        name: String,
        /// Pending records.
        pending: i64,
        /// The limit.
        limit: i64,
        /// A suggested delay.
        retry_after: Duration,
    },
    /// The SQL does not parse or bind (syntax, unknown column, type error…).
    #[error("invalid query: {message}")]
    QueryInvalid {
        /// DuckDB's message.
        message: String,
    },
    /// The SQL is longer, wider or deeper than the service's limits allow.
    #[error("query too complex: {message}")]
    QueryTooComplex {
        /// Which limit, and by how much.
        message: String,
    },
    /// The SQL is not a single read-only query over datasets (DDL, COPY, ATTACH, SET, PRAGMA,
    /// file or network reads, several statements…).
    #[error("query not allowed: {message}")]
    QueryNotAllowed {
        /// Why it was refused.
        message: String,
    },
    /// The query names a dataset that does not exist for the caller's tenant and namespace.
    #[error("dataset {name:?} not found")]
    DatasetNotFound {
        /// The name as written in the query or the path.
        name: String,
    },
    /// A pinned snapshot does not exist.
    #[error("snapshot {snapshot} of dataset {dataset:?} not found")]
    SnapshotNotFound {
        /// The dataset.
        dataset: String,
        /// The requested snapshot id.
        snapshot: i64,
    },
    /// A dataset has no committed snapshot and no declared schema, so there is nothing to read.
    #[error("dataset {name:?} has no committed snapshot and no declared schema yet")]
    DatasetEmpty {
        /// The dataset.
        name: String,
    },
    /// The strict barrier (`min_visibility_token`) was not reached in time.
    #[error("datasets not visible at token {token} after {waited_ms} ms (lagging: {lagging})")]
    ConsistencyTimeout {
        /// The requested token.
        token: i64,
        /// How long the request waited.
        waited_ms: u64,
        /// `dataset=token` of the datasets still below it.
        lagging: String,
    },
    /// The query ran past its runtime limit and was interrupted.
    #[error("the query ran longer than its limit of {limit_ms} ms and was interrupted")]
    QueryTimeout {
        /// The limit that applied.
        limit_ms: u64,
    },
    /// The query needed more memory than the service allows one query.
    #[error("the query ran out of memory: {message}")]
    OutOfMemory {
        /// DuckDB's message.
        message: String,
    },
    /// The catalog could not answer.
    #[error("catalog error: {source}")]
    Catalog {
        /// The catalog's error.
        #[from]
        source: duckmesh_catalog::Error,
    },
    /// The object store failed (downloading an input or uploading an export).
    #[error("object store error: {source}")]
    Store {
        /// The store's error.
        #[from]
        source: duckmesh_storage::Error,
    },
    /// A downloaded file does not have the size or SHA-256 the catalog recorded.
    #[error("file {path} does not match the catalog: {message}")]
    InputCorrupt {
        /// The object key.
        path: String,
        /// Which check failed.
        message: String,
    },
    /// DuckDB failed for a reason outside the caller's SQL.
    #[error("DuckDB failed while {step}: {message}")]
    Engine {
        /// What the service was doing.
        step: &'static str,
        /// DuckDB's message.
        message: String,
    },
    /// A local file operation failed (cache, scratch directory).
    #[error("{operation} {}: {source}", path.display())]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A bug or an unexpected state (a panicked blocking task, for example).
    #[error("internal error: {message}")]
    Internal {
        /// What happened.
        message: String,
    },
}

fn retry_after_seconds(delay: Duration) -> u64 {
    delay.as_secs() + u64::from(delay.subsec_nanos() > 0)
}

impl Error {
    /// The stable, machine-readable code.
    pub fn error_code(&self) -> &'static str {
        match self {
            Error::Unauthorized { .. } => "unauthorized",
            Error::RateLimited { .. } => "rate_limited",
            Error::Overloaded { .. } => "overloaded",
            Error::InvalidRequest { .. } => "invalid_request",
            Error::QueryInvalid { .. } => "query_invalid",
            Error::QueryNotAllowed { .. } => "query_not_allowed",
            Error::QueryTooComplex { .. } => "query_too_complex",
            Error::DatasetNotFound { .. } => "dataset_not_found",
            Error::SnapshotNotFound { .. } => "snapshot_not_found",
            Error::Ingest(error) => error.error_code(),
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::SchemaRequired { .. } => "schema_required",
            Error::ReadOnly { .. } => "read_only",
            Error::IngestBackpressure { .. } => "ingest_backpressure",
            Error::DatasetEmpty { .. } => "dataset_empty",
            Error::ConsistencyTimeout { .. } => "consistency_timeout",
            Error::QueryTimeout { .. } => "query_timeout",
            Error::OutOfMemory { .. } => "query_out_of_memory",
            Error::Catalog { source: duckmesh_catalog::Error::NotFound { .. } } => "not_found",
            Error::Catalog { .. } => "catalog_unavailable",
            Error::Store { source } => source.error_code(),
            Error::InputCorrupt { .. } => "input_corrupt",
            Error::Engine { .. } => "engine_error",
            Error::Io { .. } => "io_error",
            Error::Internal { .. } => "internal",
        }
    }

    /// The HTTP status the error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Error::Unauthorized { .. } => 401,
            Error::RateLimited { .. } | Error::Overloaded { .. } | Error::IngestBackpressure { .. } => 429,
            Error::Ingest(_) => 400,
            Error::PayloadTooLarge { .. } => 413,
            Error::SchemaRequired { .. } => 409,
            Error::ReadOnly { .. } => 503,
            Error::InvalidRequest { .. }
            | Error::QueryInvalid { .. }
            | Error::QueryNotAllowed { .. }
            | Error::QueryTooComplex { .. } => 400,
            Error::DatasetNotFound { .. } | Error::SnapshotNotFound { .. } => 404,
            Error::DatasetEmpty { .. } => 409,
            Error::OutOfMemory { .. } => 422,
            Error::ConsistencyTimeout { .. } | Error::QueryTimeout { .. } => 504,
            Error::Catalog { source: duckmesh_catalog::Error::NotFound { .. } } => 404,
            Error::Catalog { .. } => 503,
            Error::Store { source } if source.is_retryable() => 503,
            Error::Store { .. } | Error::InputCorrupt { .. } => 502,
            Error::Engine { .. } | Error::Io { .. } | Error::Internal { .. } => 500,
        }
    }

    /// For 429 answers: the `Retry-After` delay in whole seconds (at least 1).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Error::RateLimited { retry_after, .. }
            | Error::Overloaded { retry_after, .. }
            | Error::IngestBackpressure { retry_after, .. } => Some(retry_after_seconds(*retry_after).max(1)),
            _ => None,
        }
    }

    /// Whether the error is the caller's (4xx), for logs.
    pub fn is_client_error(&self) -> bool {
        (400..500).contains(&self.status())
    }

    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { operation, path: path.into(), source }
    }
}

/// The query API's error for a failure of DuckDB: the caller's SQL is a 4xx, the engine's own
/// trouble a 500.
impl From<duckmesh_engine::Error> for Error {
    fn from(error: duckmesh_engine::Error) -> Self {
        use duckmesh_engine::Error as Engine;
        match error {
            Engine::Sql { message } => Error::QueryInvalid { message },
            Engine::SqlNotAllowed { message } | Engine::AccessDenied { message } => Error::QueryNotAllowed { message },
            Engine::OutOfMemory { message } => Error::OutOfMemory { message },
            Engine::Interrupted { .. } => Error::QueryTimeout { limit_ms: 0 },
            Engine::PivotTooWide { max_columns } => Error::QueryTooComplex {
                message: format!(
                    "the PIVOT would make more than {max_columns} columns from the values in the data \
                     (DUCKMESH_QUERY_MAX_SELECT_EXPRESSIONS); name the values you want: ON <column> IN ('a', 'b')"
                ),
            },
            Engine::NoData { name } => Error::DatasetEmpty { name },
            Engine::Relation { name, message } => {
                Error::Engine { step: "creating a dataset view", message: format!("dataset {name:?}: {message}") }
            }
            Engine::Engine { step, message } => Error::Engine { step, message },
            Engine::Io { operation, path, source } => Error::Io { operation, path: path.into(), source },
        }
    }
}

pub use duckmesh_config::ConfigError;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_are_stable() {
        let cases: Vec<(Error, &str, u16, Option<u64>)> = vec![
            (Error::Unauthorized { message: "no key".into() }, "unauthorized", 401, None),
            (
                Error::RateLimited { scope: "query per user", retry_after: Duration::from_millis(5_200) },
                "rate_limited",
                429,
                Some(6),
            ),
            (
                Error::Overloaded { message: "queue full".into(), retry_after: Duration::ZERO },
                "overloaded",
                429,
                Some(1),
            ),
            (Error::QueryNotAllowed { message: "COPY".into() }, "query_not_allowed", 400, None),
            (Error::QueryInvalid { message: "syntax".into() }, "query_invalid", 400, None),
            (Error::QueryTooComplex { message: "wide".into() }, "query_too_complex", 400, None),
            (Error::DatasetNotFound { name: "x".into() }, "dataset_not_found", 404, None),
            (
                Error::ConsistencyTimeout { token: 3, waited_ms: 10, lagging: "x=2".into() },
                "consistency_timeout",
                504,
                None,
            ),
            (Error::QueryTimeout { limit_ms: 5 }, "query_timeout", 504, None),
            (Error::Catalog { source: duckmesh_catalog::Error::NotFound { what: "x".into() } }, "not_found", 404, None),
            (Error::Internal { message: "x".into() }, "internal", 500, None),
        ];
        for (error, code, status, retry) in cases {
            assert_eq!((error.error_code(), error.status(), error.retry_after()), (code, status, retry), "{error}");
        }
    }
}
