//! One dev instance per state directory: an exclusive lock held while `duckmesh dev` runs, and
//! a small `dev.json` telling `duckmesh status` and `duckmesh query` where the running
//! instance's catalog and API are.

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The file a running instance describes itself in.
pub const INSTANCE_FILE: &str = "dev.json";
const LOCK_FILE: &str = "dev.lock";

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The directory or a file in it cannot be created or written.
    #[error("state directory {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another `duckmesh dev` runs on this state directory.
    #[error("another duckmesh dev is running with state directory {path}{}; stop it first or use --state-dir", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Busy {
        /// The directory.
        path: PathBuf,
        /// Its process, when known.
        pid: Option<u32>,
    },
}

impl InstanceError {
    /// Stable error code.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::Io { .. } => "state_dir_unusable",
            Self::Busy { .. } => "dev_already_running",
        }
    }
}

/// What a running instance publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Its process id.
    pub pid: u32,
    /// Its catalog.
    pub database_url: String,
    /// Its API.
    pub api_url: String,
}

impl InstanceInfo {
    /// The instance running on `state_dir`, if one is (its lock is held).
    pub fn running(state_dir: &Path) -> Option<Self> {
        let lock = File::options().read(true).write(true).open(state_dir.join(LOCK_FILE)).ok()?;
        match Flock::lock(lock, FlockArg::LockExclusiveNonblock) {
            // We got the lock: nobody runs there (the lock is released on drop).
            Ok(_free) => None,
            Err(_) => Self::read(state_dir),
        }
    }

    fn read(state_dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(state_dir.join(INSTANCE_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// The held state directory of this process.
#[derive(Debug)]
pub struct Instance {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Instance {
    /// Creates (if needed) and locks `state_dir`.
    pub fn acquire(state_dir: &Path) -> Result<Self, InstanceError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| InstanceError::Io { path, source }
        };
        std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
        let dir = std::fs::canonicalize(state_dir).map_err(io(state_dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|_| InstanceError::Busy { pid: InstanceInfo::read(&dir).map(|i| i.pid), path: dir.clone() })?;
        Ok(Self { dir, _lock: lock })
    }

    /// The (absolute) state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `dev.json` for the other commands.
    pub fn publish(&self, database_url: &str, api_url: &str) -> Result<(), InstanceError> {
        let info = InstanceInfo { pid: std::process::id(), database_url: database_url.into(), api_url: api_url.into() };
        let path = self.dir.join(INSTANCE_FILE);
        let text = serde_json::to_string_pretty(&info).unwrap_or_default();
        std::fs::write(&path, text).map_err(|source| InstanceError::Io { path, source })
    }

    /// Removes `dev.json` and releases the lock.
    pub fn release(self) {
        let _ = std::fs::remove_file(self.dir.join(INSTANCE_FILE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_instance_per_state_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Instance::acquire(dir.path()).expect("free");
        assert_eq!(InstanceInfo::running(dir.path()), None, "not published yet");
        first.publish("postgres://x", "http://127.0.0.1:8080").expect("publish");
        let running = InstanceInfo::running(dir.path()).expect("running");
        assert_eq!(running.api_url, "http://127.0.0.1:8080");
        let busy = Instance::acquire(dir.path()).expect_err("held");
        assert_eq!(busy.error_code(), "dev_already_running");
        assert!(busy.to_string().contains(&format!("pid {}", std::process::id())), "{busy}");
        first.release();
        assert_eq!(InstanceInfo::running(dir.path()), None);
        Instance::acquire(dir.path()).expect("free again");
    }
}
