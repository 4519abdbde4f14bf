//! Catalog knobs from the environment (SPEC §3), parsed once with safe defaults.

use crate::CatalogConfig;
use duckmesh_core::BackoffPolicy;
use std::time::Duration;

/// A `DUCKMESH_*` variable with a value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {variable}={value:?}: {expected}")]
pub struct ConfigError {
    /// The variable.
    pub variable: &'static str,
    /// Its value.
    pub value: String,
    /// What a valid value looks like.
    pub expected: String,
}

impl ConfigError {
    /// A stable code for logs.
    pub fn error_code(&self) -> &'static str {
        "invalid_config"
    }
}

/// Every catalog knob: variable, default, meaning (for docs and `--help`).
pub const KNOBS: &[(&str, &str, &str)] = &[
    ("DUCKMESH_TASK_LEASE_SECONDS", "120", "lease granted per attempt, renewed by each heartbeat"),
    ("DUCKMESH_TASK_MAX_ATTEMPTS", "3", "attempts per task unless the task sets maxAttempts"),
    ("DUCKMESH_TASK_RETRY_BASE_SECONDS", "30", "first retry delay (before ×0.5–1.5 jitter)"),
    ("DUCKMESH_TASK_RETRY_MAX_SECONDS", "600", "cap on the retry delay (before jitter)"),
    ("DUCKMESH_OUTBOX_RETRY_BASE_SECONDS", "1", "first outbox redelivery delay"),
    ("DUCKMESH_OUTBOX_RETRY_MAX_SECONDS", "300", "cap on the outbox redelivery delay"),
    ("DUCKMESH_OUTBOX_MAX_ATTEMPTS", "20", "deliveries before an outbox row is marked Failed"),
];

impl CatalogConfig {
    /// Reads the knobs from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the knobs through `lookup` (the environment, or a map in tests). Unset variables
    /// keep their defaults; set but invalid ones are errors, never silently ignored.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let seconds = |variable: &'static str, default: Duration, min: f64, max: f64| {
            parse(&lookup, variable, default.as_secs_f64(), min, max).map(Duration::from_secs_f64)
        };
        let count = |variable: &'static str, default: u32, max: u32| {
            parse(&lookup, variable, f64::from(default), 1.0, f64::from(max)).map(|v| v as u32)
        };
        let config = Self {
            lease: seconds("DUCKMESH_TASK_LEASE_SECONDS", defaults.lease, 1.0, 86_400.0)?,
            default_max_attempts: count("DUCKMESH_TASK_MAX_ATTEMPTS", defaults.default_max_attempts, 100)?,
            task_backoff: BackoffPolicy {
                base: seconds("DUCKMESH_TASK_RETRY_BASE_SECONDS", defaults.task_backoff.base, 0.001, 86_400.0)?,
                max: seconds("DUCKMESH_TASK_RETRY_MAX_SECONDS", defaults.task_backoff.max, 0.001, 86_400.0)?,
            },
            outbox_backoff: BackoffPolicy {
                base: seconds("DUCKMESH_OUTBOX_RETRY_BASE_SECONDS", defaults.outbox_backoff.base, 0.001, 86_400.0)?,
                max: seconds("DUCKMESH_OUTBOX_RETRY_MAX_SECONDS", defaults.outbox_backoff.max, 0.001, 86_400.0)?,
            },
            outbox_max_attempts: count("DUCKMESH_OUTBOX_MAX_ATTEMPTS", defaults.outbox_max_attempts, 1_000)?,
        };
        for (variable, policy) in [
            ("DUCKMESH_TASK_RETRY_MAX_SECONDS", config.task_backoff),
            ("DUCKMESH_OUTBOX_RETRY_MAX_SECONDS", config.outbox_backoff),
        ] {
            if policy.max < policy.base {
                return Err(ConfigError {
                    variable,
                    value: policy.max.as_secs_f64().to_string(),
                    expected: format!("at least the base delay ({} s)", policy.base.as_secs_f64()),
                });
            }
        }
        Ok(config)
    }
}

fn parse(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: f64,
    min: f64,
    max: f64,
) -> Result<f64, ConfigError> {
    let Some(raw) = lookup(variable) else {
        return Ok(default);
    };
    match raw.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && (min..=max).contains(&value) => Ok(value),
        _ => Err(ConfigError { variable, value: raw, expected: format!("a number from {min} to {max}") }),
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
        for (variable, default, _) in KNOBS {
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
