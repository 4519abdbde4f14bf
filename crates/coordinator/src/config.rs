//! The coordinator's knobs as a clap `Args` struct: flags, `DUCKMESH_*` variables and safe
//! defaults, parsed once into a [`CoordinatorConfig`]. A variable that is set but invalid is an
//! error naming it, never a silent default.

use crate::error::ConfigError;
use duckmesh_config::knob;
use std::path::PathBuf;
use std::time::Duration;

/// The coordinator's knobs.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Ingest coordinator")]
pub struct CoordinatorArgs {
    /// Most ingest events claimed and committed in one batch
    #[arg(long, env = "DUCKMESH_COORDINATOR_BATCH_MAX_EVENTS", default_value = "10000", value_parser = knob::number(1, 1_000_000))]
    pub coordinator_batch_max_events: u64,
    /// After a wake-up, wait this long so a batch can fill: higher means fewer, larger files but
    /// later visibility (milliseconds)
    #[arg(long, env = "DUCKMESH_COORDINATOR_LINGER_MS", default_value = "100", value_parser = knob::number(0, 60_000))]
    pub coordinator_linger_ms: u64,
    /// How long a claimed batch is reserved; after that another coordinator may take the events
    /// (seconds)
    #[arg(long, env = "DUCKMESH_COORDINATOR_CLAIM_LEASE_SECONDS", default_value = "30", value_parser = knob::number(1, 3_600))]
    pub coordinator_claim_lease_seconds: u64,
    /// Claims after which an event whose claim ran out again is dead-lettered
    /// (`claim_attempts_exhausted`)
    #[arg(long, env = "DUCKMESH_COORDINATOR_MAX_CLAIMS", default_value = "5", value_parser = knob::number(1, 1_000))]
    pub coordinator_max_claims: u64,
    /// How often to look for pending events when no notification arrives (milliseconds)
    #[arg(long, env = "DUCKMESH_COORDINATOR_POLL_INTERVAL_MS", default_value = "1000", value_parser = knob::number(10, 3_600_000))]
    pub coordinator_poll_interval_ms: u64,
    /// Parent of each batch's scratch directory (event file, Parquet); unset: the temp dir
    #[arg(long, env = "DUCKMESH_COORDINATOR_WORK_DIR", value_parser = knob::path())]
    pub coordinator_work_dir: Option<PathBuf>,
    /// DuckDB memory limit per batch conversion in MiB (set it below the pod's memory limit;
    /// larger batches spill to the work dir); unset: DuckDB's default
    #[arg(long, env = "DUCKMESH_COORDINATOR_MEMORY_LIMIT_MB", value_parser = knob::number(crate::convert::MIN_MEMORY_LIMIT_MB, 1024 * 1024))]
    pub coordinator_memory_limit_mb: Option<u64>,
    /// DuckDB threads per batch conversion (set it to the pod's CPU limit); unset: DuckDB's
    /// default
    #[arg(long, env = "DUCKMESH_COORDINATOR_THREADS", value_parser = knob::number(1, 1024))]
    pub coordinator_threads: Option<u64>,
    /// Process-local emergency read-only override: claim and commit nothing (the catalog switch
    /// is the main one)
    #[arg(long, env = "DUCKMESH_READ_ONLY", default_value = "false", value_parser = knob::flag(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub read_only: bool,
    /// This replica's name in logs and manifests; unset: $HOSTNAME, else `duckmesh-coordinator`
    #[arg(long, env = "DUCKMESH_COORDINATOR_ID", value_parser = knob::text())]
    pub coordinator_id: Option<String>,
    /// The host's name, the replica's name when DUCKMESH_COORDINATOR_ID is unset.
    #[arg(long, env = "HOSTNAME", hide = true, value_parser = knob::text())]
    pub hostname: Option<String>,
}

impl CoordinatorArgs {
    /// The typed configuration.
    pub fn into_config(self) -> CoordinatorConfig {
        let defaults = CoordinatorConfig::default();
        CoordinatorConfig {
            batch_max_events: u32::try_from(self.coordinator_batch_max_events).unwrap_or(u32::MAX),
            linger: Duration::from_millis(self.coordinator_linger_ms),
            claim_lease: Duration::from_secs(self.coordinator_claim_lease_seconds),
            max_claims: u32::try_from(self.coordinator_max_claims).unwrap_or(u32::MAX),
            poll_interval: Duration::from_millis(self.coordinator_poll_interval_ms),
            work_dir: self.coordinator_work_dir.unwrap_or(defaults.work_dir),
            memory_limit_bytes: self.coordinator_memory_limit_mb.map(|mb| mb * 1024 * 1024),
            threads: self.coordinator_threads,
            read_only: self.read_only,
            identity: self.coordinator_id.or(self.hostname).unwrap_or(defaults.identity),
        }
    }
}

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

    /// Reads the knobs through `lookup` (a map in tests, dev mode's overlay). The identity is
    /// `DUCKMESH_COORDINATOR_ID`, else `HOSTNAME` (the pod name).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        duckmesh_config::from_lookup::<CoordinatorArgs>(lookup).map(CoordinatorArgs::into_config)
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
        let command = <CoordinatorArgs as clap::Args>::augment_args(clap::Command::new("coordinator"));
        let table: Vec<&str> = command
            .get_arguments()
            .filter(|arg| !arg.is_hide_set())
            .filter_map(|arg| arg.get_env().and_then(|name| name.to_str()))
            .collect();
        for name in &table {
            assert!(name.starts_with("DUCKMESH_"), "{name}");
        }
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
