//! Catalog knobs (SPEC §3) as a clap `Args` struct: flags, `DUCKMESH_*` variables and safe
//! defaults, parsed once into a [`CatalogConfig`].

use crate::CatalogConfig;
use duckmesh_config::knob;
use duckmesh_core::BackoffPolicy;
use std::time::Duration;

pub use duckmesh_config::ConfigError;

/// The catalog's knobs: leases, task retries and outbox redelivery.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Catalog")]
pub struct CatalogArgs {
    /// Lease granted per attempt, renewed by each heartbeat (seconds)
    #[arg(long, env = "DUCKMESH_TASK_LEASE_SECONDS", default_value = "120", value_parser = knob::seconds(1.0, 86_400.0))]
    pub task_lease_seconds: Duration,
    /// Attempts per task unless the task sets maxAttempts
    #[arg(long, env = "DUCKMESH_TASK_MAX_ATTEMPTS", default_value = "3", value_parser = knob::number(1, 100))]
    pub task_max_attempts: u64,
    /// First retry delay, before the ×0.5–1.5 jitter (seconds)
    #[arg(long, env = "DUCKMESH_TASK_RETRY_BASE_SECONDS", default_value = "30", value_parser = knob::seconds(0.001, 86_400.0))]
    pub task_retry_base_seconds: Duration,
    /// Cap on the retry delay, before jitter (seconds)
    #[arg(long, env = "DUCKMESH_TASK_RETRY_MAX_SECONDS", default_value = "600", value_parser = knob::seconds(0.001, 86_400.0))]
    pub task_retry_max_seconds: Duration,
    /// First outbox redelivery delay (seconds)
    #[arg(long, env = "DUCKMESH_OUTBOX_RETRY_BASE_SECONDS", default_value = "1", value_parser = knob::seconds(0.001, 86_400.0))]
    pub outbox_retry_base_seconds: Duration,
    /// Cap on the outbox redelivery delay (seconds)
    #[arg(long, env = "DUCKMESH_OUTBOX_RETRY_MAX_SECONDS", default_value = "300", value_parser = knob::seconds(0.001, 86_400.0))]
    pub outbox_retry_max_seconds: Duration,
    /// Deliveries before an outbox row is marked Failed (and alerts)
    #[arg(long, env = "DUCKMESH_OUTBOX_MAX_ATTEMPTS", default_value = "20", value_parser = knob::number(1, 1_000))]
    pub outbox_max_attempts: u64,
}

impl CatalogArgs {
    /// The typed configuration; a retry cap below its base delay is an error naming the cap.
    pub fn into_config(self) -> Result<CatalogConfig, ConfigError> {
        let config = CatalogConfig {
            lease: self.task_lease_seconds,
            default_max_attempts: u32::try_from(self.task_max_attempts).unwrap_or(u32::MAX),
            task_backoff: BackoffPolicy { base: self.task_retry_base_seconds, max: self.task_retry_max_seconds },
            outbox_backoff: BackoffPolicy { base: self.outbox_retry_base_seconds, max: self.outbox_retry_max_seconds },
            outbox_max_attempts: u32::try_from(self.outbox_max_attempts).unwrap_or(u32::MAX),
        };
        for (variable, policy) in [
            ("DUCKMESH_TASK_RETRY_MAX_SECONDS", config.task_backoff),
            ("DUCKMESH_OUTBOX_RETRY_MAX_SECONDS", config.outbox_backoff),
        ] {
            if policy.max < policy.base {
                return Err(ConfigError::invalid(
                    variable,
                    &policy.max.as_secs_f64().to_string(),
                    format!("at least the base delay ({} s)", policy.base.as_secs_f64()),
                ));
            }
        }
        Ok(config)
    }
}

impl CatalogConfig {
    /// Reads the knobs from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        duckmesh_config::from_env::<CatalogArgs>()?.into_config()
    }

    /// Reads the knobs through `lookup` (a map in tests, dev mode's overlay). Unset and blank
    /// variables keep their defaults; set but invalid ones are errors, never silently ignored.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        duckmesh_config::from_lookup::<CatalogArgs>(lookup)?.into_config()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<CatalogConfig, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        CatalogConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_spec() {
        let config = from(&[]).expect("defaults");
        assert_eq!(config, CatalogConfig::default());
        assert_eq!(config.lease, Duration::from_secs(120));
        assert_eq!(config.default_max_attempts, 3);
        assert_eq!(config.task_backoff, BackoffPolicy::TASK);
        assert_eq!(config.outbox_backoff, BackoffPolicy::OUTBOX);
        assert_eq!(config.outbox_max_attempts, 20);
        let command = <CatalogArgs as clap::Args>::augment_args(clap::Command::new("catalog"));
        for arg in command.get_arguments() {
            let variable = arg.get_env().and_then(|name| name.to_str()).expect("every knob has a variable");
            let default = arg.get_default_values()[0].to_str().expect("text");
            assert!(from(&[(variable, default)]).is_ok(), "{variable}={default} is valid");
        }
    }

    #[test]
    fn overrides_and_invalid_values() {
        let config = from(&[("DUCKMESH_TASK_LEASE_SECONDS", "45"), ("DUCKMESH_TASK_MAX_ATTEMPTS", "5")]).expect("ok");
        assert_eq!((config.lease, config.default_max_attempts), (Duration::from_secs(45), 5));
        let cases = [
            ("DUCKMESH_TASK_LEASE_SECONDS", "soon"),
            ("DUCKMESH_TASK_LEASE_SECONDS", "0"),
            ("DUCKMESH_TASK_LEASE_SECONDS", "NaN"),
            ("DUCKMESH_TASK_MAX_ATTEMPTS", "0"),
            ("DUCKMESH_OUTBOX_MAX_ATTEMPTS", "-1"),
            ("DUCKMESH_TASK_RETRY_MAX_SECONDS", "10"), // below the 30 s base
        ];
        for (variable, value) in cases {
            let error = from(&[(variable, value)]).expect_err("invalid");
            assert_eq!(error.variable, variable);
            assert!(error.to_string().contains(variable), "{error}");
        }
    }
}
