//! The control plane's binaries: built from the pinned Go modules under `testbed/go/` by
//! `scripts/testbed.sh build`, which caches them outside the clone and reuses them.

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pinned Kubernetes release (`testbed/go/kubernetes/go.mod`).
pub const KUBERNETES_VERSION: &str = "v1.36.3";
/// The pinned etcd release (`testbed/go/etcd/go.mod`): the one that Kubernetes release is tested with.
pub const ETCD_VERSION: &str = "v3.6.8";
/// Every binary the bed runs.
pub const BINARIES: [&str; 5] = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"];

/// A directory holding every binary in [`BINARIES`].
#[derive(Debug, Clone)]
pub struct Assets {
    dir: PathBuf,
}

impl Assets {
    /// Uses `dir` when it holds every binary.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let missing: Vec<&str> = BINARIES.iter().copied().filter(|name| !dir.join(name).is_file()).collect();
        if missing.is_empty() {
            Ok(Self { dir })
        } else {
            Err(Error::AssetsMissing { dir, missing: missing.join(", ") })
        }
    }

    /// `DUCKMESH_TESTBED_BIN_DIR` when set; otherwise what `scripts/testbed.sh build` prints
    /// (it builds the binaries once, honouring `KUBEBUILDER_ASSETS`, and reuses its cache).
    pub fn locate() -> Result<Self> {
        if let Some(dir) = std::env::var_os("DUCKMESH_TESTBED_BIN_DIR") {
            return Self::from_dir(dir);
        }
        let script = repo_root().join("scripts/testbed.sh");
        eprintln!("testbed: locating the control plane binaries with {} build", script.display());
        let output = Command::new(&script)
            .arg("build")
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(Error::io(format!("running {}", script.display())))?;
        if !output.status.success() {
            return Err(Error::BuildFailed { script, status: output.status });
        }
        let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        Self::from_dir(dir)
    }

    /// The path of one binary.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The repository's root (this crate lives in `crates/testbed`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
