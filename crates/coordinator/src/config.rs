//! The coordinator's knobs, parsed once from `DUCKMESH_*` variables with safe defaults. A
//! variable that is set but invalid is an error naming it, never a silent default.

use crate::error::ConfigError;
use std::path::PathBuf;
use std::time::Duration;

/// Every knob: variable, default, meaning (for docs and `--help`).
pub const KNOBS: &[(&str, &str, &str)] = &[
    ("DUCKMESH_COORDINATOR_BATCH_MAX_EVENTS", "10000", "most ingest events claimed and committed in one batch"),
    (
        "DUCKMESH_COORDINATOR_LINGER_MS",
        "100",
        "after a wake-up, wait this long so a batch can fill: higher means fewer, larger files but later visibility",
    ),
    (
        "DUCKMESH_COORDINATOR_CLAIM_LEASE_SECONDS",
        "30",
        "how long a claimed batch is reserved; after that another coordinator may take the events",
    ),
    (
        "DUCKMESH_COORDINATOR_MAX_CLAIMS",
        "5",
        "claims after which an event whose claim ran out again is dead-lettered (`claim_attempts_exhausted`)",
    ),
    (
        "DUCKMESH_COORDINATOR_POLL_INTERVAL_MS",
        "1000",
        "how often to look for pending events when no notification arrives",
    ),
    ("DUCKMESH_COORDINATOR_WORK_DIR", "<temp dir>", "parent of each batch's scratch directory (event file, Parquet)"),
    (
        "DUCKMESH_COORDINATOR_MEMORY_LIMIT_MB",
        "<DuckDB's default>",
        "DuckDB memory limit per batch conversion (set it below the pod's memory limit; larger batches spill to the work dir)",
    ),
    (
        "DUCKMESH_COORDINATOR_THREADS",
        "<DuckDB's default>",
        "DuckDB threads per batch conversion (set it to the pod's CPU limit)",
    ),
    (
        "DUCKMESH_READ_ONLY",
        "false",
        "process-local emergency read-only override: claim and commit nothing (the catalog switch is the main one)",
    ),
    ("DUCKMESH_COORDINATOR_ID", "$HOSTNAME", "this replica's name in logs and manifests"),
];

/// How the coordinator behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// Most events per batch.
    pub batch_max_events: u32,
    /// Pause after a wake-up before claiming, so a batch can fill.
    pub linger: Duration,
    /// Lease of a claimed batch.
    pub claim_lease: Duration,
    /// Claims after which an event is dead-lettered instead of claimed again.
    pub max_claims: u32,
    /// Fallback interval between looks for pending events.
    pub poll_interval: Duration,
    /// Parent of each batch's scratch directory.
    pub work_dir: PathBuf,
    /// DuckDB memory limit for a batch conversion; `None` keeps DuckDB's default.
    pub memory_limit_bytes: Option<u64>,
    /// DuckDB threads for a batch conversion; `None` keeps DuckDB's default.
    pub threads: Option<u64>,
    /// Process-local read-only override.
    pub read_only: bool,
    /// This replica's name (pod name) for logs and manifests.
    pub identity: String,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            batch_max_events: 10_000,
            linger: Duration::from_millis(100),
            claim_lease: Duration::from_secs(30),
            max_claims: 5,
            poll_interval: Duration::from_millis(1000),
            work_dir: std::env::temp_dir(),
            memory_limit_bytes: None,
            threads: None,
            read_only: false,
            identity: "duckmesh-coordinator".into(),
        }
    }
}

impl CoordinatorConfig {
    /// Reads the knobs from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the knobs through `lookup` (tests pass a map instead of touching the process
    /// environment). The identity is `DUCKMESH_COORDINATOR_ID`, else `HOSTNAME` (the pod name).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let knobs = duckmesh_core::Knobs::new(lookup);
        let get = |name: &str| knobs.string(name);
        let number = |name: &str, min: u64, max: u64| knobs.number(name, min, max).map_err(ConfigError::from);
        let mut config = Self::default();
        if let Some(events) = number("DUCKMESH_COORDINATOR_BATCH_MAX_EVENTS", 1, 1_000_000)? {
            config.batch_max_events = u32::try_from(events).unwrap_or(u32::MAX);
        }
        if let Some(ms) = number("DUCKMESH_COORDINATOR_LINGER_MS", 0, 60_000)? {
            config.linger = Duration::from_millis(ms);
        }
        if let Some(seconds) = number("DUCKMESH_COORDINATOR_CLAIM_LEASE_SECONDS", 1, 3_600)? {
            config.claim_lease = Duration::from_secs(seconds);
        }
        if let Some(claims) = number("DUCKMESH_COORDINATOR_MAX_CLAIMS", 1, 1_000)? {
            config.max_claims = u32::try_from(claims).unwrap_or(u32::MAX);
        }
        if let Some(ms) = number("DUCKMESH_COORDINATOR_POLL_INTERVAL_MS", 10, 3_600_000)? {
            config.poll_interval = Duration::from_millis(ms);
        }
        if let Some(dir) = get("DUCKMESH_COORDINATOR_WORK_DIR") {
            config.work_dir = dir.into();
        }
        config.memory_limit_bytes =
            number("DUCKMESH_COORDINATOR_MEMORY_LIMIT_MB", crate::convert::MIN_MEMORY_LIMIT_MB, 1024 * 1024)?
                .map(|mb| mb * 1024 * 1024);
        config.threads = number("DUCKMESH_COORDINATOR_THREADS", 1, 1024)?;
        config.read_only = knobs.flag("DUCKMESH_READ_ONLY")?;
        if let Some(identity) = get("DUCKMESH_COORDINATOR_ID").or_else(|| get("HOSTNAME")) {
            config.identity = identity;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<CoordinatorConfig, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        CoordinatorConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_knob_table() {
        let config = parse(&[]).expect("defaults");
        assert_eq!(config.batch_max_events, 10_000);
        assert_eq!(config.linger, Duration::from_millis(100));
        assert_eq!(config.claim_lease, Duration::from_secs(30));
        assert_eq!(config.max_claims, 5);
        assert_eq!(config.poll_interval, Duration::from_secs(1));
        assert_eq!(config.work_dir, std::env::temp_dir());
        assert!(!config.read_only);
        assert_eq!((config.memory_limit_bytes, config.threads), (None, None));
        assert_eq!(config.identity, "duckmesh-coordinator");
        for (name, default, _) in KNOBS {
            assert!(name.starts_with("DUCKMESH_"), "{name}");
            assert!(!default.is_empty());
        }
        let table: Vec<&str> = KNOBS.iter().map(|(name, _, _)| *name).collect();
        for name in ["DUCKMESH_COORDINATOR_BATCH_MAX_EVENTS", "DUCKMESH_COORDINATOR_LINGER_MS", "DUCKMESH_READ_ONLY"] {
            assert!(table.contains(&name), "{name} is documented");
        }
    }

    #[test]
    fn every_knob_is_read() {
        let config = parse(&[
            ("DUCKMESH_COORDINATOR_BATCH_MAX_EVENTS", "500"),
            ("DUCKMESH_COORDINATOR_LINGER_MS", "0"),
            ("DUCKMESH_COORDINATOR_CLAIM_LEASE_SECONDS", " 12 "),
            ("DUCKMESH_COORDINATOR_MAX_CLAIMS", "2"),
            ("DUCKMESH_COORDINATOR_POLL_INTERVAL_MS", "250"),
            ("DUCKMESH_COORDINATOR_WORK_DIR", "/scratch"),
            ("DUCKMESH_COORDINATOR_MEMORY_LIMIT_MB", "512"),
            ("DUCKMESH_COORDINATOR_THREADS", "2"),
            ("DUCKMESH_READ_ONLY", "TRUE"),
            ("HOSTNAME", "coordinator-7f9c"),
        ])
        .expect("valid");
        assert_eq!(config.batch_max_events, 500);
        assert_eq!(config.linger, Duration::ZERO);
        assert_eq!(config.claim_lease, Duration::from_secs(12));
        assert_eq!(config.max_claims, 2);
        assert_eq!(config.poll_interval, Duration::from_millis(250));
        assert_eq!(config.work_dir, PathBuf::from("/scratch"));
        assert_eq!((config.memory_limit_bytes, config.threads), (Some(512 * 1024 * 1024), Some(2)));
        assert!(config.read_only);
        assert_eq!(config.identity, "coordinator-7f9c");
    }

    #[test]
    fn an_explicit_id_wins_over_the_hostname_and_blank_values_are_unset() {
        let config = parse(&[
            ("HOSTNAME", "pod-1"),
            ("DUCKMESH_COORDINATOR_ID", "replica-a"),
            ("DUCKMESH_COORDINATOR_LINGER_MS", "  "),
            ("DUCKMESH_READ_ONLY", "off"),
        ])
        .expect("valid");
        assert_eq!(config.identity, "replica-a");
        assert_eq!(config.linger, Duration::from_millis(100));
        assert!(!config.read_only);
    }

    #[test]
    fn invalid_values_name_their_variable() {
        for (name, value) in [
            ("DUCKMESH_COORDINATOR_BATCH_MAX_EVENTS", "0"),
            ("DUCKMESH_COORDINATOR_BATCH_MAX_EVENTS", "lots"),
            ("DUCKMESH_COORDINATOR_LINGER_MS", "-1"),
            ("DUCKMESH_COORDINATOR_CLAIM_LEASE_SECONDS", "0"),
            ("DUCKMESH_COORDINATOR_MAX_CLAIMS", "1.5"),
            ("DUCKMESH_COORDINATOR_POLL_INTERVAL_MS", "5"),
            ("DUCKMESH_READ_ONLY", "maybe"),
        ] {
            let error = parse(&[(name, value)]).expect_err(name);
            assert!(error.message.contains(name), "{name}: {}", error.message);
            assert_eq!(error.error_code(), "invalid_config");
        }
    }
}
