//! The crate's error type: one variant per kind of failure, each with a stable
//! `error_code()` for logs, API responses and metric labels.

use std::path::PathBuf;

/// A boxed error used as the `source` of transport-level failures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything an [`ObjectStore`](crate::ObjectStore) operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key (or list prefix) is not a valid relative object path.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key, as given.
        key: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// No object exists under the key.
    #[error("object not found: {key}")]
    NotFound {
        /// The key that was looked up.
        key: String,
    },

    /// The requested byte range does not lie within the object.
    #[error("invalid range {start}..{end} for object {key} (size {size:?})")]
    InvalidRange {
        /// The object key.
        key: String,
        /// First byte requested.
        start: u64,
        /// One past the last byte requested.
        end: u64,
        /// The object's size, when known.
        size: Option<u64>,
    },

    /// The store refused the request because of missing rights or bad credentials.
    #[error("permission denied for {operation} on {key}: {message}")]
    PermissionDenied {
        /// The operation that was refused.
        operation: &'static str,
        /// The key (or prefix) involved.
        key: String,
        /// The store's explanation.
        message: String,
    },

    /// The configured bucket does not exist.
    #[error("bucket not found: {bucket}")]
    BucketNotFound {
        /// The bucket name from the configuration.
        bucket: String,
    },

    /// The store kept failing with transient errors (throttling, 5xx, timeouts, connection
    /// resets) until the retry budget was spent. Retrying later may succeed.
    #[error("object store unavailable: {operation} on {key} failed after {attempts} attempt(s): {message}")]
    Unavailable {
        /// The operation that failed.
        operation: &'static str,
        /// The key (or prefix) involved.
        key: String,
        /// How many attempts were made.
        attempts: u32,
        /// A rendering of the last transient failure.
        message: String,
        /// The last transient failure.
        #[source]
        source: Option<BoxError>,
    },

    /// The store rejected the request for a reason that retrying will not fix.
    #[error("object store request {operation} on {key} failed: {message}")]
    Request {
        /// The operation that failed.
        operation: &'static str,
        /// The key (or prefix) involved.
        key: String,
        /// HTTP status, when a response was received.
        status: Option<u16>,
        /// The service's error code, e.g. `InvalidArgument`.
        code: Option<String>,
        /// A rendering of the failure.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// A local filesystem operation failed (the local backend, or the local side of
    /// `put_file` / `get_to_file`).
    #[error("{operation} {path}: {source}", path = path.display())]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The local path involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A presigned URL could not be produced.
    #[error("cannot presign {key}: {message}")]
    Presign {
        /// The key to presign.
        key: String,
        /// Why it failed.
        message: String,
    },

    /// The store configuration is missing or invalid.
    #[error("invalid object store configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// A stable, machine-readable code for logs, API responses and metric labels.
    pub fn error_code(&self) -> &'static str {
        match self {
            Error::InvalidKey { .. } => "invalid_object_key",
            Error::NotFound { .. } => "object_not_found",
            Error::InvalidRange { .. } => "invalid_object_range",
            Error::PermissionDenied { .. } => "object_store_permission_denied",
            Error::BucketNotFound { .. } => "object_store_bucket_not_found",
            Error::Unavailable { .. } => "object_store_unavailable",
            Error::Request { .. } => "object_store_request_failed",
            Error::Io { .. } => "object_store_io_error",
            Error::Presign { .. } => "object_store_presign_failed",
            Error::Config { .. } => "object_store_config_invalid",
        }
    }

    /// Whether the same operation may succeed if tried again later.
    ///
    /// Only transient failures are retryable: a store that stayed unavailable through the
    /// whole retry budget, and local I/O errors that are timing-related. Everything else
    /// (not found, permission denied, invalid key or range, bad configuration) is permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable { .. } => true,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }

    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { operation, path: path.into(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_retryability_is_classified() {
        let cases: Vec<(Error, &str, bool)> = vec![
            (Error::InvalidKey { key: "/a".into(), reason: "leading slash" }, "invalid_object_key", false),
            (Error::NotFound { key: "a".into() }, "object_not_found", false),
            (
                Error::Unavailable {
                    operation: "get",
                    key: "a".into(),
                    attempts: 8,
                    message: "503 SlowDown".into(),
                    source: None,
                },
                "object_store_unavailable",
                true,
            ),
            (
                Error::PermissionDenied { operation: "get", key: "a".into(), message: "AccessDenied".into() },
                "object_store_permission_denied",
                false,
            ),
            (
                Error::io("read", "/tmp/x", std::io::Error::from(std::io::ErrorKind::TimedOut)),
                "object_store_io_error",
                true,
            ),
            (
                Error::io("read", "/tmp/x", std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
                "object_store_io_error",
                false,
            ),
        ];
        for (error, code, retryable) in cases {
            assert_eq!(error.error_code(), code, "{error}");
            assert_eq!(error.is_retryable(), retryable, "{error}");
        }
    }
}
