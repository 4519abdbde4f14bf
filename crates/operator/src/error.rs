//! The operator's errors, one variant per failing step, each with a stable `error_code()` for
//! logs (never for metric labels: those stay bounded by controller and result).

use duckmesh_scheduler::ApplyError;

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API call failed: {0}")]
    Kube(#[source] Box<kube::Error>),
    /// A resource could not be applied to the catalog.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// A catalog read or write failed.
    #[error(transparent)]
    Catalog(#[from] duckmesh_catalog::Error),
    /// An object lacks a field the API server always sets (uid, namespace…).
    #[error("{kind} {name} has no {field}")]
    MissingField {
        /// Its kind.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The missing field.
        field: &'static str,
    },
    /// The finalizer helper failed (adding, removing, or the cleanup itself).
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The custom resource definitions are not installed.
    #[error(
        "the DuckMesh CRDs are not installed ({}); install them with `duckmesh crds | kubectl apply -f -`",
        missing.join(", ")
    )]
    CrdsMissing {
        /// The missing CRD names.
        missing: Vec<String>,
    },
    /// An object could not be serialised for a patch.
    #[error("serialising a patch: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The metrics and health server could not listen.
    #[error("serving metrics on {address}: {source}")]
    Serve {
        /// The address.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The operator's configuration is unusable.
    #[error("invalid operator configuration: {0}")]
    Config(String),
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Self::Kube(Box::new(error))
    }
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(error: kube::runtime::finalizer::Error<Error>) -> Self {
        Self::Finalizer(Box::new(error))
    }
}

impl Error {
    /// A stable code for logs and events.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube_api_error",
            Self::Apply(error) => error.error_code(),
            Self::Catalog(error) => error.error_code(),
            Self::MissingField { .. } => "missing_field",
            Self::Finalizer(error) => match error.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.error_code(),
                _ => "finalizer_failed",
            },
            Self::CrdsMissing { .. } => "crds_missing",
            Self::Serialize(_) => "serialize_failed",
            Self::Serve { .. } => "serve_failed",
            Self::Config(_) => "config_invalid",
        }
    }

    /// Whether the API server answered 404 Not Found.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Kube(error) if is_status(error, 404))
    }
}

/// Whether a kube error is an API status with this HTTP code.
pub fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// `Result` with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
