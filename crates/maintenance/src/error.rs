//! Why a maintenance run could not finish (as opposed to what it found: problems are results).

/// A run that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A catalog call failed.
    #[error("catalog, while {step}: {source}")]
    Catalog {
        /// What the run was doing.
        step: &'static str,
        /// The catalog's error.
        #[source]
        source: duckmesh_catalog::Error,
    },
    /// An object-store call failed (other than a missing object, which is a finding).
    #[error("object store, while {step}: {source}")]
    Storage {
        /// What the run was doing.
        step: &'static str,
        /// The store's error (boxed: it is large and rare).
        #[source]
        source: Box<duckmesh_storage::Error>,
    },
    /// The task's spec is not usable as written.
    #[error("invalid task spec: {message}")]
    InvalidSpec {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A file to read does not have the size or SHA-256 the catalog recorded.
    #[error("file {path} is corrupt: {message}")]
    InputCorrupt {
        /// The object key.
        path: String,
        /// Which check failed.
        message: String,
    },
    /// DuckDB failed.
    #[error("DuckDB: {source}")]
    Engine {
        /// The engine's error.
        #[from]
        source: duckmesh_engine::Error,
    },
    /// The rewritten files do not hold the rows read.
    #[error("{written} rows were written for {read} rows read")]
    RowCountMismatch {
        /// Rows in the files read.
        read: i64,
        /// Rows in the files written.
        written: u64,
    },
    /// The attempt lost its right to act (its heartbeat was refused): it stopped.
    #[error("fenced out: {message}")]
    Fenced {
        /// Why.
        message: String,
    },
    /// A blocking task or an encoding step failed unexpectedly.
    #[error("internal error: {message}")]
    Task {
        /// What happened.
        message: String,
    },
    /// A local file operation failed (downloading a file to hash it).
    #[error("{operation}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A catalog rebuild cannot restore a dataset faithfully from the bucket.
    #[error("cannot rebuild dataset {dataset}, snapshot {snapshot}: {message}")]
    Rebuild {
        /// What is wrong.
        kind: RebuildFailure,
        /// `<namespace>/<name>`.
        dataset: String,
        /// The snapshot concerned.
        snapshot: i64,
        /// Details.
        message: String,
    },
}

/// Why a rebuild refused a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildFailure {
    /// A commit record or checkpoint cannot be read (`rebuild_record_unreadable`).
    RecordUnreadable,
    /// A commit's manifest is missing or unreadable (`rebuild_manifest_missing`).
    ManifestMissing,
    /// Replaying a commit does not give the files, rows or bytes its record states
    /// (`rebuild_mismatch`).
    Mismatch,
    /// A snapshot between the checkpoint and a later commit record has no record
    /// (`rebuild_gap`).
    Gap,
}

impl RebuildFailure {
    /// The stable error code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RecordUnreadable => "rebuild_record_unreadable",
            Self::ManifestMissing => "rebuild_manifest_missing",
            Self::Mismatch => "rebuild_mismatch",
            Self::Gap => "rebuild_gap",
        }
    }
}

/// `Result` with the maintenance [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A task spec the runner cannot use (`invalid_task_spec`).
    pub(crate) fn spec(error: duckmesh_contracts::task::SpecError) -> Self {
        Self::InvalidSpec { message: error.message }
    }

    /// A stable code for logs, statuses and metric labels.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::Catalog { source, .. } => source.error_code(),
            Self::Storage { source, .. } => source.error_code(),
            Self::InvalidSpec { .. } => "invalid_task_spec",
            Self::InputCorrupt { .. } => "input_corrupt",
            Self::Engine { source } => source.error_code(),
            Self::RowCountMismatch { .. } => "compaction_row_count_mismatch",
            Self::Fenced { .. } => "fenced",
            Self::Task { .. } => "maintenance_internal_error",
            Self::Io { .. } => "maintenance_io_error",
            Self::Rebuild { kind, .. } => kind.as_str(),
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Catalog { source, .. } => source.is_retryable(),
            Self::Storage { source, .. } => source.is_retryable(),
            Self::InvalidSpec { .. } | Self::InputCorrupt { .. } | Self::Fenced { .. } | Self::Rebuild { .. } => false,
            Self::Engine { source } => !source.is_sql_fault(),
            Self::RowCountMismatch { .. } | Self::Task { .. } | Self::Io { .. } => true,
        }
    }

    /// Whether the attempt lost its right to act (it must stop and report nothing).
    pub fn is_fenced(&self) -> bool {
        match self {
            Self::Fenced { .. } => true,
            Self::Catalog { source, .. } => source.is_fencing(),
            _ => false,
        }
    }

    pub(crate) fn catalog(step: &'static str) -> impl FnOnce(duckmesh_catalog::Error) -> Self {
        move |source| Self::Catalog { step, source }
    }

    pub(crate) fn storage(step: &'static str) -> impl FnOnce(duckmesh_storage::Error) -> Self {
        move |source| Self::Storage { step, source: Box::new(source) }
    }
}
