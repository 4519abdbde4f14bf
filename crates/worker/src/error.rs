//! The worker's errors: one variant per failing step, each with a stable `error_code()` and a
//! retry classification, which together decide what the task status says and whether the
//! scheduler tries again.

use duckmesh_core::TaskId;

/// Everything that can stop an attempt.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The task's spec (or its output dataset's spec) is not usable as written.
    #[error("invalid task spec: {message}")]
    InvalidSpec {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The task is of a kind this worker does not run.
    #[error("task {task} is of kind {kind:?}; `duckmesh worker` runs `sql` tasks")]
    UnsupportedKind {
        /// The task.
        task: TaskId,
        /// Its kind.
        kind: String,
    },
    /// An input dataset or pinned snapshot does not exist, or cannot be read as declared.
    #[error("input {dataset:?}: {message}")]
    Input {
        /// The input's dataset name.
        dataset: String,
        /// What is wrong.
        message: String,
    },
    /// A cached or downloaded input file does not have the size or SHA-256 the catalog recorded.
    #[error("input file {path} is corrupt: {message}")]
    InputCorrupt {
        /// The object key.
        path: String,
        /// Which check failed.
        message: String,
    },
    /// The task's SQL failed: parser, binder, catalog, conversion or other user-level errors.
    #[error("SQL error: {message}")]
    Sql {
        /// DuckDB's message.
        message: String,
    },
    /// The task's SQL is not exactly one read-only query over its inputs (several statements,
    /// DDL/DML, `COPY`, `SET`, a table function that reads files, a file path as a table…).
    #[error("SQL not allowed: {message}; a task's SQL must be exactly one read-only query over its inputs")]
    SqlNotAllowed {
        /// What is not allowed, about the task's own SQL text.
        message: String,
    },
    /// The task reads or writes a dataset of another tenant or namespace (refused when the
    /// resource is applied; checked again here for tasks stored before that check, or whose
    /// dataset changed hands since).
    #[error(
        "{role} dataset {dataset:?} belongs to {owner}; the task runs as {runner} and may only use \
         that tenant's datasets in that namespace"
    )]
    CrossTenant {
        /// `input` or `output`.
        role: &'static str,
        /// The dataset's name.
        dataset: String,
        /// The dataset's tenant and namespace, as `tenant "t" in namespace "n"`.
        owner: String,
        /// The task's tenant and namespace, in the same form.
        runner: String,
    },
    /// The query needed more memory than the task's `resources.memory` allows.
    #[error("the query ran out of memory (raise resources.memory): {message}")]
    OutOfMemory {
        /// DuckDB's message.
        message: String,
    },
    /// DuckDB failed for a reason outside the task's SQL (local disk, engine set-up).
    #[error("DuckDB failed while {step}: {message}")]
    Engine {
        /// What the worker was doing.
        step: &'static str,
        /// DuckDB's message.
        message: String,
    },
    /// The result does not fit the output dataset (incompatible append schema, missing
    /// partition columns).
    #[error("the result does not match output dataset {dataset:?}: {message}")]
    SchemaMismatch {
        /// The output dataset.
        dataset: String,
        /// Which columns differ.
        message: String,
    },
    /// The attempt ran longer than the task's timeout and was interrupted.
    #[error("the attempt exceeded its timeout of {seconds} s and was interrupted")]
    Timeout {
        /// The timeout.
        seconds: u64,
    },
    /// The attempt lost its right to act (stale fence, expired lease, cancelled): it stopped
    /// and committed nothing.
    #[error("fenced out: {message}")]
    Fenced {
        /// The catalog's code for the refusal (`stale_fence`, `lease_expired`, `attempt_not_active`).
        code: &'static str,
        /// The catalog's explanation.
        message: String,
    },
    /// The worker was asked to stop (SIGTERM) before it finished.
    #[error("the worker was stopped before the attempt finished")]
    Stopped,
    /// A catalog call failed.
    #[error("catalog: {source}")]
    Catalog {
        /// The catalog's error.
        #[from]
        source: duckmesh_catalog::Error,
    },
    /// An object-store call failed.
    #[error("object store: {source}")]
    Storage {
        /// The store's error.
        #[from]
        source: duckmesh_storage::Error,
    },
    /// A local file operation failed (cache, work directory).
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The local path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The worker's own configuration (environment, identity) is unusable.
    #[error("invalid worker configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
}

/// `Result` with the worker's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A stable code for logs, task status and metric labels.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::InvalidSpec { .. } => "invalid_task_spec",
            Self::UnsupportedKind { .. } => "unsupported_task_kind",
            Self::Input { .. } => "invalid_input",
            Self::InputCorrupt { .. } => "input_corrupt",
            Self::Sql { .. } => "sql_error",
            Self::SqlNotAllowed { .. } => "sql_not_allowed",
            Self::CrossTenant { .. } => "cross_tenant_dataset",
            Self::OutOfMemory { .. } => "sql_out_of_memory",
            Self::Engine { .. } => "engine_error",
            Self::SchemaMismatch { .. } => "schema_mismatch",
            Self::Timeout { .. } => "task_timeout",
            Self::Fenced { code, .. } => code,
            Self::Stopped => "worker_stopped",
            Self::Catalog { source } => match source {
                duckmesh_catalog::Error::SchemaMismatch { .. } => "schema_mismatch",
                other => other.error_code(),
            },
            Self::Storage { source } => source.error_code(),
            Self::Io { .. } => "worker_io_error",
            Self::Config { .. } => "worker_config_invalid",
        }
    }

    /// Whether another attempt may succeed: transient storage and catalog trouble, local I/O,
    /// engine failures outside the user's SQL, timeouts and stops. User errors (spec, SQL,
    /// schema, inputs) would fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::InvalidSpec { .. }
            | Self::UnsupportedKind { .. }
            | Self::Input { .. }
            | Self::InputCorrupt { .. }
            | Self::Sql { .. }
            | Self::SqlNotAllowed { .. }
            | Self::CrossTenant { .. }
            | Self::OutOfMemory { .. }
            | Self::SchemaMismatch { .. }
            | Self::Config { .. } => false,
            Self::Engine { .. } | Self::Timeout { .. } | Self::Stopped | Self::Io { .. } => true,
            Self::Fenced { .. } => false,
            Self::Catalog { source } => source.is_retryable(),
            Self::Storage { source } => source.is_retryable(),
        }
    }

    /// Whether the attempt lost its right to act (it must stop and report nothing).
    pub fn is_fenced(&self) -> bool {
        match self {
            Self::Fenced { .. } => true,
            Self::Catalog { source } => source.is_fencing(),
            _ => false,
        }
    }

    /// The error of an attempt that the catalog refused (`source` is a fencing error).
    pub fn fenced(source: &duckmesh_catalog::Error) -> Self {
        Self::Fenced { code: source.error_code(), message: source.to_string() }
    }

    pub(crate) fn io(operation: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io { operation, path: path.display().to_string(), source }
    }
}

/// The worker's error for a failure of DuckDB (its codes as they were before the engine had a
/// crate of its own: a task's status and the scheduler's retry decision read them).
impl From<duckmesh_engine::Error> for Error {
    fn from(error: duckmesh_engine::Error) -> Self {
        use duckmesh_engine::Error as Engine;
        match error {
            Engine::Sql { message } | Engine::AccessDenied { message } | Engine::Interrupted { message } => {
                Self::Sql { message }
            }
            Engine::SqlNotAllowed { message } => Self::SqlNotAllowed { message },
            Engine::PivotTooWide { .. } => Self::SqlNotAllowed { message: error.to_string() },
            Engine::OutOfMemory { message } => Self::OutOfMemory { message },
            Engine::NoData { name } => Self::Input {
                dataset: name,
                message: "it has no committed files and no known schema, so there is nothing to read; declare the \
                          dataset's schema or run the task that fills it first"
                    .into(),
            },
            Engine::Relation { name, message } => Self::Input { dataset: name, message },
            Engine::Engine { step, message } => Self::Engine { step, message },
            Engine::Io { operation, path, source } => Self::Io { operation, path, source },
        }
    }
}

impl From<duckmesh_contracts::task::SpecError> for Error {
    fn from(error: duckmesh_contracts::task::SpecError) -> Self {
        Self::InvalidSpec { message: error.message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duckmesh_core::{AttemptId, DatasetId, Fence};

    fn failure(message: &str) -> duckdb::Error {
        duckdb::Error::DuckDBFailure(duckdb::ffi::Error::new(1), Some(message.into()))
    }

    #[test]
    fn sql_errors_are_classified_by_their_duckdb_class() {
        let cases = [
            ("Parser Error: syntax error at or near \"SELEC\"", "sql_error", false),
            ("Binder Error: Referenced column \"x\" not found", "sql_error", false),
            ("Catalog Error: Table with name missing does not exist!", "sql_error", false),
            ("Conversion Error: Could not convert string 'a' to INT32", "sql_error", false),
            ("Out of Memory Error: could not allocate block", "sql_out_of_memory", false),
            ("IO Error: No space left on device", "engine_error", true),
            ("INTERNAL Error: assertion failed", "engine_error", true),
        ];
        for (message, code, retryable) in cases {
            let error = Error::from(duckmesh_engine::classify("running the task's SQL", &failure(message)));
            assert_eq!(error.error_code(), code, "{message}");
            assert_eq!(error.is_retryable(), retryable, "{message}");
            assert!(error.to_string().contains(message), "{error}");
        }
    }

    #[test]
    fn codes_and_classes() {
        let stale = duckmesh_catalog::Error::StaleFence {
            attempt: AttemptId(1),
            task: TaskId(2),
            presented: Fence(3),
            current: Fence(4),
        };
        let fenced = Error::fenced(&stale);
        assert_eq!(fenced.error_code(), "stale_fence");
        assert!(fenced.is_fenced() && !fenced.is_retryable());

        let mismatch = Error::from(duckmesh_catalog::Error::SchemaMismatch {
            dataset: DatasetId(1),
            message: "missing columns b".into(),
        });
        assert_eq!(mismatch.error_code(), "schema_mismatch");
        assert!(!mismatch.is_retryable());

        let unavailable = Error::from(duckmesh_catalog::Error::from(sqlx_pool_timeout()));
        assert_eq!(unavailable.error_code(), "catalog_unavailable");
        assert!(unavailable.is_retryable());

        let storage = Error::from(duckmesh_storage::Error::Unavailable {
            operation: "put_object",
            key: "k".into(),
            attempts: 8,
            message: "503".into(),
            source: None,
        });
        assert_eq!(storage.error_code(), "object_store_unavailable");
        assert!(storage.is_retryable());
        let denied = Error::from(duckmesh_storage::Error::PermissionDenied {
            operation: "put_object",
            key: "k".into(),
            message: "AccessDenied".into(),
        });
        assert!(!denied.is_retryable());

        assert!(Error::Timeout { seconds: 5 }.is_retryable());
        let not_allowed = Error::SqlNotAllowed { message: "exactly one statement is allowed, found 3".into() };
        assert_eq!(not_allowed.error_code(), "sql_not_allowed");
        assert!(!not_allowed.is_retryable());
        let foreign = Error::CrossTenant {
            role: "input",
            dataset: "payroll".into(),
            owner: "tenant \"globex\" in namespace \"default\"".into(),
            runner: "tenant \"default\" in namespace \"default\"".into(),
        };
        assert_eq!(foreign.error_code(), "cross_tenant_dataset");
        assert!(!foreign.is_retryable());
        assert!(foreign.to_string().contains("tenant \"globex\""), "{foreign}");
        assert_eq!(Error::InvalidSpec { message: "x".into() }.error_code(), "invalid_task_spec");
    }

    fn sqlx_pool_timeout() -> sqlx::Error {
        sqlx::Error::PoolTimedOut
    }
}
