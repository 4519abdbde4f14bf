//! Telemetry settings as a clap `Args` struct, parsed once into a typed [`TelemetryConfig`].
//!
//! DuckMesh's own knobs are `DUCKMESH_LOG_FORMAT` and `DUCKMESH_LOG`; traces are driven only
//! by the standard OpenTelemetry variables, so the same pod spec works with any collector.

use crate::error::{Error, Result};
use duckmesh_config::knob;

/// Log filter used when neither `DUCKMESH_LOG` nor `RUST_LOG` is set.
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn";

/// How log lines are rendered on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line (the default; what log pipelines parse).
    #[default]
    Json,
    /// Human-readable single lines for a terminal (`duckmesh dev`, local debugging).
    Pretty,
}

impl LogFormat {
    /// Parses `json` or `pretty` (case-insensitive, surrounding space ignored).
    pub fn parse(value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(LogFormat::Json),
            "pretty" | "text" => Ok(LogFormat::Pretty),
            _ => Err(Error::LogFormat(value.to_owned())),
        }
    }
}

/// The logging and tracing knobs, global to every subcommand of the binary.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Logs and traces")]
pub struct TelemetryArgs {
    /// Log rendering on stderr: `json` (what log pipelines parse) or `pretty` (for a terminal)
    #[arg(long, env = "DUCKMESH_LOG_FORMAT", global = true, default_value = "json", value_parser = knob::text())]
    pub log_format: String,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `duckmesh_catalog=debug`; unset:
    /// RUST_LOG, else `info,sqlx=warn`
    #[arg(long = "log", env = "DUCKMESH_LOG", global = true, value_parser = knob::text())]
    pub log: Option<String>,
    /// Log filter used when DUCKMESH_LOG is unset
    #[arg(long, env = "RUST_LOG", global = true, value_parser = knob::text())]
    pub rust_log: Option<String>,
    /// OTLP endpoint: spans are exported over OTLP only when this or
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true, value_parser = knob::text())]
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// OTLP endpoint of traces alone
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", global = true, value_parser = knob::text())]
    pub otel_exporter_otlp_traces_endpoint: Option<String>,
    /// `none` turns span export off
    #[arg(long, env = "OTEL_TRACES_EXPORTER", global = true, value_parser = knob::text())]
    pub otel_traces_exporter: Option<String>,
    /// `true` turns span export off
    #[arg(long, env = "OTEL_SDK_DISABLED", global = true, value_parser = knob::text())]
    pub otel_sdk_disabled: Option<String>,
}

impl TelemetryArgs {
    /// The typed configuration of the process whose log lines say `service`.
    pub fn into_config(self, service: &str) -> Result<TelemetryConfig> {
        let log_format = LogFormat::parse(&self.log_format)?;
        let (log_filter, log_filter_source) = match (self.log, self.rust_log) {
            (Some(value), _) => (value, "DUCKMESH_LOG"),
            (None, Some(value)) => (value, "RUST_LOG"),
            (None, None) => (DEFAULT_LOG_FILTER.to_owned(), "default"),
        };
        let sdk_disabled = self.otel_sdk_disabled.is_some_and(|value| value.eq_ignore_ascii_case("true"));
        let exporter_none = self.otel_traces_exporter.is_some_and(|value| value.eq_ignore_ascii_case("none"));
        let has_endpoint =
            self.otel_exporter_otlp_traces_endpoint.is_some() || self.otel_exporter_otlp_endpoint.is_some();
        Ok(TelemetryConfig {
            service: service.to_owned(),
            log_format,
            log_filter,
            log_filter_source,
            otlp_traces: has_endpoint && !sdk_disabled && !exporter_none,
        })
    }
}

/// Everything `init()` needs, read from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Value of the `service` field on every log line; also the OpenTelemetry
    /// `service.name` unless `OTEL_SERVICE_NAME` overrides it.
    pub service: String,
    /// Log rendering, from `DUCKMESH_LOG_FORMAT` (`json` | `pretty`, default `json`).
    pub log_format: LogFormat,
    /// `EnvFilter` directives, from `DUCKMESH_LOG`, else `RUST_LOG`, else `info`.
    pub log_filter: String,
    /// Name of the variable `log_filter` came from (for error messages).
    pub log_filter_source: &'static str,
    /// Whether spans are exported over OTLP: true only when an OTLP endpoint variable is
    /// set and neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` says no.
    pub otlp_traces: bool,
}

impl TelemetryConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env(service: &str) -> Result<Self> {
        Self::from_lookup(service, |name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (a pure seam for tests).
    pub fn from_lookup(service: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        duckmesh_config::from_lookup::<TelemetryArgs>(lookup)?.into_config(service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<TelemetryConfig> {
        let env: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        TelemetryConfig::from_lookup("api", |name| env.get(name).cloned())
    }

    #[test]
    fn defaults_are_json_info_and_no_otlp() -> Result<()> {
        let config = config(&[])?;
        assert_eq!(config.service, "api");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.log_filter, "info,sqlx=warn");
        assert_eq!(config.log_filter_source, "default");
        assert!(!config.otlp_traces);
        Ok(())
    }

    #[test]
    fn duckmesh_log_wins_over_rust_log() -> Result<()> {
        let config = config(&[("DUCKMESH_LOG", "debug"), ("RUST_LOG", "warn")])?;
        assert_eq!(config.log_filter, "debug");
        assert_eq!(config.log_filter_source, "DUCKMESH_LOG");
        let config = self::config(&[("RUST_LOG", "warn")])?;
        assert_eq!(config.log_filter, "warn");
        Ok(())
    }

    #[test]
    fn log_format_parses_and_rejects() -> Result<()> {
        assert_eq!(config(&[("DUCKMESH_LOG_FORMAT", "Pretty")])?.log_format, LogFormat::Pretty);
        assert_eq!(config(&[("DUCKMESH_LOG_FORMAT", " json ")])?.log_format, LogFormat::Json);
        let err = config(&[("DUCKMESH_LOG_FORMAT", "xml")]).err();
        assert!(matches!(err, Some(Error::LogFormat(ref v)) if v == "xml"));
        Ok(())
    }

    #[test]
    fn otlp_needs_an_endpoint_and_respects_the_off_switches() -> Result<()> {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        let traces = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces");
        assert!(config(&[endpoint])?.otlp_traces);
        assert!(config(&[traces])?.otlp_traces);
        assert!(!config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])?.otlp_traces);
        assert!(!config(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")])?.otlp_traces);
        assert!(!config(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")])?.otlp_traces);
        assert!(config(&[endpoint, ("OTEL_TRACES_EXPORTER", "otlp")])?.otlp_traces);
        Ok(())
    }
}
