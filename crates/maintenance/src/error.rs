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
    /// A local file operation failed (downloading a file to hash it).
    #[error("{operation}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with the maintenance [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A stable code for logs, statuses and metric labels.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::Catalog { source, .. } => source.error_code(),
            Self::Storage { source, .. } => source.error_code(),
            Self::Io { .. } => "maintenance_io_error",
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Catalog { source, .. } => source.is_retryable(),
            Self::Storage { source, .. } => source.is_retryable(),
            Self::Io { .. } => true,
        }
    }

    pub(crate) fn catalog(step: &'static str) -> impl FnOnce(duckmesh_catalog::Error) -> Self {
        move |source| Self::Catalog { step, source }
    }

    pub(crate) fn storage(step: &'static str) -> impl FnOnce(duckmesh_storage::Error) -> Self {
        move |source| Self::Storage { step, source: Box::new(source) }
    }
}
