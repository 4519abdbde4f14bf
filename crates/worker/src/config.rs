//! The worker's knobs from the environment, parsed once with safe defaults (SPEC §3).

use crate::error::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

/// Every worker knob: variable, default, meaning (for docs and `--help`).
pub const KNOBS: &[(&str, &str, &str)] = &[
    ("DUCKMESH_HEARTBEAT_SECONDS", "30", "interval between lease renewals while the attempt runs"),
    ("DUCKMESH_TASK_TIMEOUT_SECONDS", "300", "runtime limit of an attempt whose task sets no timeoutSeconds"),
    ("DUCKMESH_CACHE_DIR", "<temp dir>/duckmesh-cache", "local cache of input files, keyed by SHA-256"),
    ("DUCKMESH_WORK_DIR", "<temp dir>", "where an attempt writes its output and DuckDB spills"),
    ("DUCKMESH_WORKER_TRANSFER_CONCURRENCY", "4", "input downloads and output uploads in flight at once"),
    ("DUCKMESH_RUNNER", "$HOSTNAME", "the runner name recorded on the attempt (the pod name in Kubernetes)"),
];

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

    /// Reads the knobs through `lookup`. Unset or empty variables keep their defaults; set but
    /// invalid ones are errors naming the variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| lookup(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());
        let defaults = Self::default();
        let seconds = |name: &str, default: Duration, max: f64| -> Result<Duration> {
            match get(name) {
                None => Ok(default),
                Some(raw) => match raw.parse::<f64>() {
                    Ok(value) if value.is_finite() && value > 0.0 && value <= max => Ok(Duration::from_secs_f64(value)),
                    _ => Err(Error::Config {
                        message: format!("{name}={raw:?}: expected a number of seconds from 0 to {max}"),
                    }),
                },
            }
        };
        let transfer_concurrency = match get("DUCKMESH_WORKER_TRANSFER_CONCURRENCY") {
            None => defaults.transfer_concurrency,
            Some(raw) => match raw.parse::<usize>() {
                Ok(value) if (1..=64).contains(&value) => value,
                _ => {
                    return Err(Error::Config {
                        message: format!("DUCKMESH_WORKER_TRANSFER_CONCURRENCY={raw:?}: expected 1 to 64"),
                    });
                }
            },
        };
        Ok(Self {
            heartbeat: seconds("DUCKMESH_HEARTBEAT_SECONDS", defaults.heartbeat, 3600.0)?,
            default_timeout: seconds("DUCKMESH_TASK_TIMEOUT_SECONDS", defaults.default_timeout, 7.0 * 86_400.0)?,
            cache_dir: get("DUCKMESH_CACHE_DIR").map_or(defaults.cache_dir, PathBuf::from),
            work_dir: get("DUCKMESH_WORK_DIR").map_or(defaults.work_dir, PathBuf::from),
            transfer_concurrency,
            runner: get("DUCKMESH_RUNNER").or_else(|| get("HOSTNAME")),
        })
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
        for (name, _, _) in KNOBS {
            assert!(name.starts_with("DUCKMESH_"));
        }
    }
}
