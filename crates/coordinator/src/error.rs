//! The coordinator's errors: one variant per failing step, each with a stable `error_code()`
//! used in logs and metric labels, and a retry classification.

use duckmesh_core::{DatasetId, Fence};

pub use duckmesh_config::ConfigError;

/// Everything that can stop a batch or the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A catalog call failed (claim, dataset read, commit, release, backlog).
    #[error("catalog, while {step}: {source}")]
    Catalog {
        /// What the coordinator was doing.
        step: &'static str,
        /// The catalog's error.
        #[source]
        source: duckmesh_catalog::Error,
    },
    /// The batch's claim was lost before its commit (the lease ran out and another
    /// coordinator may hold the events now): nothing was committed, and it must not be retried.
    #[error("the claim with fence {fence} on ingest events of dataset {dataset} was lost before the commit")]
    ClaimLost {
        /// The dataset.
        dataset: DatasetId,
        /// The lost claim's fence.
        fence: Fence,
    },
    /// Emergency read-only mode refused the commit; the batch was given back.
    #[error("the commit was refused: emergency read-only mode is on")]
    ReadOnly,
    /// An object-store call failed (uploading a data file or the manifest).
    #[error("object store, while {step}: {source}")]
    Storage {
        /// What the coordinator was doing.
        step: &'static str,
        /// The store's error (boxed: it is large and rare).
        #[source]
        source: Box<duckmesh_storage::Error>,
    },
    /// DuckDB failed while converting the batch (not because of a record: those are parked).
    #[error("converting the batch: {source}")]
    Engine {
        /// The engine's error.
        #[source]
        source: duckmesh_engine::Error,
    },
    /// The converted Parquet does not hold one row per event that was not parked: nothing is
    /// committed, and the batch is claimed again.
    #[error("converting the batch: {written} rows were written for {events} events")]
    RowCountMismatch {
        /// Rows in the written files.
        written: u64,
        /// Events the files should hold.
        events: usize,
    },
    /// A local file operation failed (work directory, event file).
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
    /// The manifest could not be encoded.
    #[error("encoding the manifest: {source}")]
    Manifest {
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The blocking conversion task died (a panic inside DuckDB or a runtime shutting down).
    #[error("the conversion task stopped unexpectedly: {message}")]
    Task {
        /// The join error.
        message: String,
    },
}

impl Error {
    /// A stable code for logs and metric labels.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::Config(error) => error.error_code(),
            Self::Catalog { source, .. } => source.error_code(),
            Self::ClaimLost { .. } => "claim_lost",
            Self::ReadOnly => "read_only",
            Self::Storage { source, .. } => source.error_code(),
            Self::Engine { source } => source.error_code(),
            Self::RowCountMismatch { .. } => "conversion_row_count_mismatch",
            Self::Io { .. } => "coordinator_io_error",
            Self::Manifest { .. } => "manifest_encode_failed",
            Self::Task { .. } => "coordinator_task_failed",
        }
    }

    /// Whether trying again later may succeed (the coordinator backs off and claims again).
    /// Configuration errors are final.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Config(_))
    }

    pub(crate) fn catalog(step: &'static str) -> impl FnOnce(duckmesh_catalog::Error) -> Self {
        move |source| Self::Catalog { step, source }
    }

    pub(crate) fn storage(step: &'static str) -> impl FnOnce(duckmesh_storage::Error) -> Self {
        move |source| Self::Storage { step, source: Box::new(source) }
    }

    pub(crate) fn io(operation: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io { operation, path: path.display().to_string(), source }
    }
}

/// `Result` with the coordinator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        assert_eq!(Error::ClaimLost { dataset: DatasetId(1), fence: Fence(2) }.error_code(), "claim_lost");
        assert_eq!(Error::ReadOnly.error_code(), "read_only");
        let catalog = Error::Catalog { step: "claiming", source: duckmesh_catalog::Error::Corrupt("x".into()) };
        assert_eq!(catalog.error_code(), "catalog_corrupt");
        let config = Error::from(ConfigError::new("DUCKMESH_COORDINATOR_LINGER_MS=abc"));
        assert_eq!(config.error_code(), "invalid_config");
        assert!(!config.is_retryable());
        assert!(Error::ReadOnly.is_retryable());
        let io = Error::io("creating", std::path::Path::new("/x"), std::io::Error::other("disk full"));
        assert_eq!(io.error_code(), "coordinator_io_error");
        assert!(io.to_string().contains("/x"));
    }
}
