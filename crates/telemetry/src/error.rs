//! The telemetry crate's error type: one variant per step that can fail while wiring up
//! logs, traces and metrics, each with a stable `error_code()`.

use opentelemetry_otlp::ExporterBuildError;
use tracing_subscriber::filter::ParseError;
use tracing_subscriber::util::TryInitError;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `DUCKMESH_LOG` / `RUST_LOG` holds a filter directive that does not parse.
    #[error("invalid log filter {value:?} (from {variable})")]
    LogFilter {
        /// The environment variable the filter came from.
        variable: &'static str,
        /// The rejected filter text.
        value: String,
        /// The parser's complaint.
        #[source]
        source: ParseError,
    },
    /// `DUCKMESH_LOG_FORMAT` is neither `json` nor `pretty`.
    #[error("invalid DUCKMESH_LOG_FORMAT {0:?}: expected \"json\" or \"pretty\"")]
    LogFormat(String),
    /// A logging or tracing variable holds a value that cannot be used.
    #[error(transparent)]
    Config(#[from] duckmesh_config::ConfigError),
    /// The OTLP span exporter could not be built from the `OTEL_*` variables.
    #[error("building the OTLP span exporter from OTEL_* variables")]
    OtlpExporter(#[source] ExporterBuildError),
    /// A global tracing subscriber was installed before `init()` ran (or `init()` ran twice).
    #[error("a global tracing subscriber is already installed")]
    SubscriberAlreadySet(#[source] TryInitError),
    /// Rendering the metrics registry as OpenMetrics text failed.
    #[error("encoding the metrics registry")]
    MetricsEncode(#[source] std::fmt::Error),
}

impl Error {
    /// Stable, machine-readable code for logs, API responses and metric labels.
    pub fn error_code(&self) -> &'static str {
        match self {
            Error::LogFilter { .. } => "TELEMETRY_LOG_FILTER_INVALID",
            Error::LogFormat(_) => "TELEMETRY_LOG_FORMAT_INVALID",
            Error::Config(_) => "TELEMETRY_CONFIG_INVALID",
            Error::OtlpExporter(_) => "TELEMETRY_OTLP_EXPORTER_FAILED",
            Error::SubscriberAlreadySet(_) => "TELEMETRY_ALREADY_INITIALIZED",
            Error::MetricsEncode(_) => "TELEMETRY_METRICS_ENCODE_FAILED",
        }
    }
}
