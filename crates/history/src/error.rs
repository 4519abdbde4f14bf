//! Why the checker could not finish (a broken property is a finding, not an error).

/// A check that could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A catalog query failed.
    #[error("catalog, while {step}: {source}")]
    Catalog {
        /// What the checker was reading.
        step: &'static str,
        /// The catalog's error.
        #[source]
        source: duckmesh_catalog::Error,
    },
    /// A direct SQL read of the catalog failed.
    #[error("catalog, while {step}: {source}")]
    Sql {
        /// What the checker was reading.
        step: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The integrity check could not run.
    #[error("integrity check: {0}")]
    Maintenance(#[from] duckmesh_maintenance::Error),
    /// Downloading a file to read failed (other than a mismatch, which is a finding).
    #[error("object store, while {step}: {source}")]
    Storage {
        /// What the checker was reading.
        step: &'static str,
        /// The store's error.
        #[source]
        source: Box<duckmesh_storage::Error>,
    },
    /// DuckDB could not read the files.
    #[error("DuckDB: {0}")]
    Engine(#[from] duckmesh_engine::Error),
    /// A local scratch directory could not be made.
    #[error("scratch directory: {0}")]
    Io(#[from] std::io::Error),
    /// An expectation names something the catalog does not have.
    #[error("{0}")]
    Expectation(String),
}

/// `Result` with the checker's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn catalog(step: &'static str) -> impl FnOnce(duckmesh_catalog::Error) -> Self {
        move |source| Self::Catalog { step, source }
    }

    pub(crate) fn sql(step: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Sql { step, source }
    }
}
