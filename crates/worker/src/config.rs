//! The worker's knobs (SPEC §3) as a clap `Args` struct: flags, `DUCKMESH_*` variables and safe
//! defaults, parsed once into a [`WorkerConfig`].

use crate::error::{Error, Result};
use duckmesh_config::knob;
use std::path::PathBuf;
use std::time::Duration;

/// The worker's knobs.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Worker")]
pub struct WorkerArgs {
    /// Interval between lease renewals while the attempt runs (seconds)
    #[arg(long, env = "DUCKMESH_HEARTBEAT_SECONDS", default_value = "30", value_parser = knob::seconds(0.0, 3600.0))]
    pub heartbeat_seconds: Duration,
    /// Runtime limit of an attempt whose task sets no timeoutSeconds (seconds)
    #[arg(long, env = "DUCKMESH_TASK_TIMEOUT_SECONDS", default_value = "300", value_parser = knob::seconds(0.0, 7.0 * 86_400.0))]
    pub task_timeout_seconds: Duration,
    /// Local cache of input files, keyed by SHA-256; unset: <temp dir>/duckmesh-cache
    #[arg(long, env = "DUCKMESH_CACHE_DIR", value_parser = knob::path())]
    pub cache_dir: Option<PathBuf>,
    /// Where an attempt writes its output and DuckDB spills; unset: the temp dir
    #[arg(long, env = "DUCKMESH_WORK_DIR", value_parser = knob::path())]
    pub work_dir: Option<PathBuf>,
    /// Input downloads and output uploads in flight at once
    #[arg(long, env = "DUCKMESH_WORKER_TRANSFER_CONCURRENCY", default_value = "4", value_parser = knob::number(1, 64))]
    pub worker_transfer_concurrency: u64,
    /// The runner name recorded on the attempt (the pod name in Kubernetes); unset: $HOSTNAME
    #[arg(long, env = "DUCKMESH_RUNNER", value_parser = knob::text())]
    pub runner: Option<String>,
    /// The host's name, the runner name when DUCKMESH_RUNNER is unset.
    #[arg(long, env = "HOSTNAME", hide = true, value_parser = knob::text())]
    pub hostname: Option<String>,
}

impl WorkerArgs {
    /// The typed configuration.
    pub fn into_config(self) -> WorkerConfig {
        let defaults = WorkerConfig::default();
        WorkerConfig {
            heartbeat: self.heartbeat_seconds,
            default_timeout: self.task_timeout_seconds,
            cache_dir: self.cache_dir.unwrap_or(defaults.cache_dir),
            work_dir: self.work_dir.unwrap_or(defaults.work_dir),
            transfer_concurrency: usize::try_from(self.worker_transfer_concurrency).unwrap_or(usize::MAX),
            runner: self.runner.or(self.hostname),
        }
    }
}

/// How the worker behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Interval between heartbeats.
    pub heartbeat: Duration,
    /// Timeout of an attempt whose task declares none.
    pub default_timeout: Duration,
    /// The input cache directory.
    pub cache_dir: PathBuf,
    /// The parent of each attempt's scratch directory.
    pub work_dir: PathBuf,
    /// Transfers in flight at once.
    pub transfer_concurrency: usize,
    /// The name recorded on the attempt as its runner.
    pub runner: Option<String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        let temp = std::env::temp_dir();
        Self {
            heartbeat: Duration::from_secs(30),
            default_timeout: Duration::from_secs(300),
            cache_dir: temp.join("duckmesh-cache"),
            work_dir: temp,
            transfer_concurrency: 4,
            runner: None,
        }
    }
}

impl WorkerConfig {
    /// Reads the knobs from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the knobs through `lookup` (a map in tests, dev mode's overlay). Unset or blank
    /// variables keep their defaults; set but invalid ones are errors naming the variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        duckmesh_config::from_lookup::<WorkerArgs>(lookup)
            .map(WorkerArgs::into_config)
            .map_err(|error| Error::Config { message: error.message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<WorkerConfig> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        WorkerConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_and_overrides() {
        let defaults = from(&[]).expect("defaults");
        assert_eq!(defaults, WorkerConfig::default());
        assert_eq!(defaults.heartbeat, Duration::from_secs(30));
        assert_eq!(defaults.default_timeout, Duration::from_secs(300));

        let config = from(&[
            ("DUCKMESH_HEARTBEAT_SECONDS", "0.5"),
            ("DUCKMESH_TASK_TIMEOUT_SECONDS", "60"),
            ("DUCKMESH_CACHE_DIR", "/cache"),
            ("DUCKMESH_WORK_DIR", "/scratch"),
            ("DUCKMESH_WORKER_TRANSFER_CONCURRENCY", "8"),
            ("HOSTNAME", "worker-pod-1"),
        ])
        .expect("valid");
        assert_eq!(config.heartbeat, Duration::from_millis(500));
        assert_eq!(config.default_timeout, Duration::from_secs(60));
        assert_eq!(config.cache_dir, PathBuf::from("/cache"));
        assert_eq!(config.work_dir, PathBuf::from("/scratch"));
        assert_eq!(config.transfer_concurrency, 8);
        assert_eq!(config.runner.as_deref(), Some("worker-pod-1"));
        let named = from(&[("DUCKMESH_RUNNER", "dev-1"), ("HOSTNAME", "h")]).expect("valid");
        assert_eq!(named.runner.as_deref(), Some("dev-1"));
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (name, value) in [
            ("DUCKMESH_HEARTBEAT_SECONDS", "0"),
            ("DUCKMESH_HEARTBEAT_SECONDS", "soon"),
            ("DUCKMESH_TASK_TIMEOUT_SECONDS", "-5"),
            ("DUCKMESH_WORKER_TRANSFER_CONCURRENCY", "0"),
        ] {
            let error = from(&[(name, value)]).expect_err("invalid");
            assert_eq!(error.error_code(), "worker_config_invalid");
            assert!(error.to_string().contains(name), "{error}");
        }
        let command = <WorkerArgs as clap::Args>::augment_args(clap::Command::new("worker"));
        for arg in command.get_arguments().filter(|arg| !arg.is_hide_set()) {
            assert!(arg.get_env().and_then(|name| name.to_str()).is_some_and(|name| name.starts_with("DUCKMESH_")));
        }
    }
}
