//! Telemetry in one place for every DuckMesh process (operator, worker, coordinator, api,
//! dev): JSON logs with secret scrubbing, OpenTelemetry traces over OTLP configured only by
//! the standard `OTEL_*` variables, W3C trace-context propagation, and the one Prometheus
//! registry of a process, in which each component registers its own metrics (SPEC §6).
//!
//! ```no_run
//! fn main() -> Result<(), duckmesh_telemetry::Error> {
//!     let _telemetry = duckmesh_telemetry::init("duckmesh-api")?;
//!     let metrics = duckmesh_telemetry::Metrics::new();
//!     let _router = duckmesh_telemetry::metrics_router(&metrics);
//!     tracing::info!(tenant_id = "acme", "ready");
//!     Ok(())
//! }
//! ```

pub mod config;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod scrub;
pub mod slo;
pub mod traces;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use config::{LogFormat, TelemetryArgs, TelemetryConfig};
pub use error::{Error, Result};
pub use logging::LogLayer;
pub use metrics::{ComponentMetrics, Metrics, encode, metrics_router, try_encode};
pub use traces::{
    TRACEPARENT_ENV, context_from_env, context_from_traceparent, current_trace_env, current_trace_id,
    current_traceparent, extract_from_headers, inject_current_into_headers, link_to_traceparent, set_parent_from_env,
    set_parent_from_headers,
};

/// Name of the OpenTelemetry instrumentation scope of DuckMesh spans.
pub const INSTRUMENTATION_SCOPE: &str = "duckmesh";

/// Keeps trace export alive; dropping it flushes and shuts down the exporter. Hold it in
/// `main` for the life of the process.
#[must_use = "dropping the guard shuts trace export down"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
    config: TelemetryConfig,
}

impl TelemetryGuard {
    /// The configuration `init()` resolved from the environment.
    pub fn config(&self) -> &TelemetryConfig {
        &self.config
    }

    /// Whether spans are being exported over OTLP.
    pub fn exporting_traces(&self) -> bool {
        self.config.otlp_traces
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            // Logging is on its way down too; stderr is the only place left to say it.
            eprintln!("duckmesh-telemetry: flushing traces on shutdown failed: {error}");
        }
    }
}

/// Sets up logs and traces for the process `service` from the environment:
/// `DUCKMESH_LOG_FORMAT` (`json` | `pretty`), `DUCKMESH_LOG` / `RUST_LOG` (filter, default
/// `info`) and the standard `OTEL_*` variables (export is off without an endpoint).
/// Call once, first thing in `main`; a second call fails with
/// [`Error::SubscriberAlreadySet`].
pub fn init(service: &str) -> Result<TelemetryGuard> {
    init_with(TelemetryConfig::from_env(service)?, std::io::stderr)
}

/// [`init`] with an explicit configuration and log destination.
pub fn init_with<W>(config: TelemetryConfig, make_writer: W) -> Result<TelemetryGuard>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let provider = traces::tracer_provider(&config)?;
    let subscriber = subscriber(&config, make_writer, &provider)?;
    subscriber.try_init().map_err(Error::SubscriberAlreadySet)?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(TelemetryGuard { provider, config })
}

/// The subscriber `init()` installs, for tests and for callers that scope it with
/// `tracing::subscriber::with_default`: filter → OpenTelemetry layer → log layer.
pub fn subscriber<W>(
    config: &TelemetryConfig,
    make_writer: W,
    provider: &SdkTracerProvider,
) -> Result<impl Subscriber + for<'lookup> LookupSpan<'lookup> + Send + Sync + 'static>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&config.log_filter).map_err(|source| Error::LogFilter {
        variable: config.log_filter_source,
        value: config.log_filter.clone(),
        source,
    })?;
    let tracer = provider.tracer(INSTRUMENTATION_SCOPE);
    Ok(tracing_subscriber::registry()
        .with(filter)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .with(LogLayer::new(&config.service, config.log_format, make_writer)))
}
