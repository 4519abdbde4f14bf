//! The bed's one error type.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why the bed could not be built, started or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system or process step failed.
    #[error("{step}: {source}")]
    Io {
        /// What was being done.
        step: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Creating a certificate or key failed.
    #[error("{step}: {message}")]
    Pki {
        /// What was being created.
        step: String,
        /// The cause.
        message: String,
    },
    /// A binary directory lacks some of the bed's binaries.
    #[error("{} lacks {missing}: run `scripts/testbed.sh build` (or `just testbed`), or unset DUCKMESH_TESTBED_BIN_DIR", dir.display())]
    AssetsMissing {
        /// The directory.
        dir: PathBuf,
        /// The missing binaries.
        missing: String,
    },
    /// `scripts/testbed.sh build` failed (its output went to stderr).
    #[error("{} build failed ({status}); its output above says why", script.display())]
    BuildFailed {
        /// The script.
        script: PathBuf,
        /// How it exited.
        status: ExitStatus,
    },
    /// A process of the bed exited.
    #[error("{name} exited ({status}); the end of its log:\n{log}")]
    Exited {
        /// The process.
        name: String,
        /// How it exited.
        status: ExitStatus,
        /// The end of its log.
        log: String,
    },
    /// Something did not become ready in time.
    #[error("{what} not ready after {waited:?} (last: {last_error}); the end of its log:\n{log}")]
    NotReady {
        /// What was waited for.
        what: String,
        /// How long.
        waited: Duration,
        /// The last error seen.
        last_error: String,
        /// The end of the relevant log.
        log: String,
    },
    /// A program the test node runs containers with is not on `PATH`.
    #[error("the test node needs {tool} (util-linux/coreutils) on PATH")]
    ToolMissing {
        /// The program.
        tool: String,
    },
    /// An object the node builds or reads is malformed.
    #[error("{what}: {message}")]
    Invalid {
        /// What.
        what: String,
        /// Why.
        message: String,
    },
    /// Something asked for (a pod, a container's log) is not on the node.
    #[error("{what} not found")]
    NotFound {
        /// What.
        what: String,
    },
    /// The log server's TLS setup failed.
    #[error("{step}: {message}")]
    Tls {
        /// What was being done.
        step: String,
        /// The cause.
        message: String,
    },
    /// An API request failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// A kubeconfig could not be read.
    #[error(transparent)]
    Kubeconfig(#[from] kube::config::KubeconfigError),
}

impl Error {
    /// An [`Error::Io`] maker for `map_err`.
    pub fn io(step: String) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { step, source }
    }
}

/// The bed's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
