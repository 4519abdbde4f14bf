//! The engine's errors, each with a stable `error_code()`. DuckDB reports every failure as text
//! prefixed with its error class (`Binder Error: …`); [`classify`] turns that into whose fault it
//! is: the SQL's (a caller's 4xx, a task's non-retryable failure) or the engine's.

/// Everything that can go wrong running DuckDB.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQL failed on its own terms: parser, binder, catalog, conversion, constraint and other
    /// user-level errors.
    #[error("SQL error: {message}")]
    Sql {
        /// DuckDB's message.
        message: String,
    },
    /// The SQL is not exactly one read-only query over the registered relations.
    #[error("SQL not allowed: {message}")]
    SqlNotAllowed {
        /// What is not allowed.
        message: String,
    },
    /// The SQL reached for a file or setting that the locked-down database refuses.
    #[error("access refused: {message}")]
    AccessDenied {
        /// DuckDB's message.
        message: String,
    },
    /// The statement needed more memory than the database's limit.
    #[error("out of memory: {message}")]
    OutOfMemory {
        /// DuckDB's message.
        message: String,
    },
    /// The statement was interrupted through [`crate::Database::interrupt_handle`].
    #[error("interrupted: {message}")]
    Interrupted {
        /// DuckDB's message.
        message: String,
    },
    /// A `PIVOT` without an `IN` list would make more columns than allowed from the data.
    #[error(
        "the PIVOT would make more than {max_columns} columns from the values in the data; name the values you \
         want: ON <column> IN ('a', 'b')"
    )]
    PivotTooWide {
        /// The limit.
        max_columns: usize,
    },
    /// A relation has no files and no declared columns: there is nothing to expose.
    #[error("{name:?} has no committed files and no known schema, so there is nothing to read")]
    NoData {
        /// The relation's (dataset's) name.
        name: String,
    },
    /// A relation could not be exposed as a view: a declared type that is not a type, or files
    /// DuckDB cannot read as Parquet.
    #[error("{name:?}: {message}")]
    Relation {
        /// The relation's (dataset's) name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// DuckDB failed on one of DuckMesh's own statements (set-up, export, local disk).
    #[error("DuckDB failed while {step}: {message}")]
    Engine {
        /// What was being done.
        step: &'static str,
        /// DuckDB's message.
        message: String,
    },
    /// A local file operation around DuckDB failed (listing, moving or removing output).
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
}

/// `Result` with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A stable code for logs, statuses and metric labels.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::Sql { .. } => "sql_error",
            Self::SqlNotAllowed { .. } => "sql_not_allowed",
            Self::AccessDenied { .. } => "sql_access_denied",
            Self::OutOfMemory { .. } => "sql_out_of_memory",
            Self::Interrupted { .. } => "sql_interrupted",
            Self::PivotTooWide { .. } => "pivot_too_wide",
            Self::NoData { .. } => "relation_empty",
            Self::Relation { .. } => "relation_invalid",
            Self::Engine { .. } => "engine_error",
            Self::Io { .. } => "engine_io_error",
        }
    }

    /// Whether the same SQL on the same data would fail again: the SQL's own faults do, the
    /// engine's (disk, set-up, an interrupt) may not.
    pub fn is_sql_fault(&self) -> bool {
        matches!(
            self,
            Self::Sql { .. }
                | Self::SqlNotAllowed { .. }
                | Self::AccessDenied { .. }
                | Self::OutOfMemory { .. }
                | Self::PivotTooWide { .. }
                | Self::NoData { .. }
                | Self::Relation { .. }
        )
    }

    pub(crate) fn io(operation: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io { operation, path: path.display().to_string(), source }
    }
}

/// Classifies a DuckDB error raised by SQL that DuckMesh was given (a task's query, an API
/// caller's query): by the class DuckDB prefixes its message with, since the C API does not hand
/// the class over for every call. `step` names what was being done, for the engine's own faults.
pub fn classify(step: &'static str, error: &duckdb::Error) -> Error {
    let message = error.to_string();
    let class = message.split_once(" Error:").map(|(class, _)| class.trim().to_ascii_lowercase()).unwrap_or_default();
    match class.as_str() {
        "out of memory" => Error::OutOfMemory { message },
        "permission" => Error::AccessDenied { message },
        "interrupt" => Error::Interrupted { message },
        "io" | "internal" | "fatal" | "connection" | "scheduler" | "http" | "network" => {
            Error::Engine { step, message }
        }
        _ => Error::Sql { message },
    }
}

/// Wraps a DuckDB error raised by DuckMesh's own statements (set-up, export): the engine's
/// fault, unless memory ran out or the statement was interrupted.
pub(crate) fn engine(step: &'static str, error: duckdb::Error) -> Error {
    match classify(step, &error) {
        error @ (Error::OutOfMemory { .. } | Error::Interrupted { .. }) => error,
        _ => Error::Engine { step, message: error.to_string() },
    }
}

/// The engine's error for SQL that the shared statement check refused.
pub(crate) fn statement(error: duckmesh_core::StatementError) -> Error {
    use duckmesh_core::StatementError;
    match error {
        StatementError::Invalid { message } | StatementError::TooComplex { message } => Error::Sql { message },
        StatementError::NotAllowed { message } => Error::SqlNotAllowed { message },
        StatementError::Unreadable { .. } => Error::Engine { step: "checking the SQL", message: error.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(sql: &str) -> duckdb::Error {
        let connection = duckdb::Connection::open_in_memory().expect("duckdb");
        connection.execute_batch(sql).expect_err(sql)
    }

    #[test]
    fn duckdb_errors_are_classified_by_their_class() {
        for sql in ["SELEC 1", "SELECT * FROM no_such_table", "SELECT 'x'::INTEGER", "SELECT no_such_column"] {
            let error = classify("running the SQL", &failure(sql));
            assert_eq!(error.error_code(), "sql_error", "{sql}: {error}");
            assert!(error.is_sql_fault());
        }
        let connection = duckdb::Connection::open_in_memory().expect("duckdb");
        connection.execute_batch("SET enable_external_access = false").expect("lock");
        let error = connection.execute_batch("SELECT * FROM read_text('/etc/hostname')").expect_err("refused");
        assert_eq!(classify("running the SQL", &error).error_code(), "sql_access_denied", "{error}");
        let error = engine("exporting", failure("SELECT * FROM no_such_table"));
        assert_eq!(error.error_code(), "engine_error");
        assert!(!error.is_sql_fault());
        assert!(error.to_string().starts_with("DuckDB failed while exporting: Catalog Error"), "{error}");
    }
}
