//! The Prometheus registry of a DuckMesh process and what every component's metrics share:
//! the `duckmesh_` prefix, the capped `tenant` label, the latency buckets, the label-value
//! macro, the encoder and the `/metrics` handler.
//!
//! Each component owns its metrics: a struct of handles implementing [`ComponentMetrics`]
//! in the component's own `metrics` module (`duckmesh_query::metrics`,
//! `duckmesh_coordinator::metrics`, `duckmesh_scheduler::metrics`), registered once per
//! process in a sub-registry of its own by [`Metrics::component`]. A process registers
//! every component up front so that its `/metrics` exports every name (a dashboard never
//! shows "no data" because a process has not yet hit a code path). Two groups stay here:
//! the storage and maintenance metrics no component records yet ([`storage`]) and the
//! read-only gauge both the query API and the coordinator set ([`Metrics::read_only_mode`]).
//!
//! Label sets are bounded by construction: label values are enums or `&'static str` error
//! codes, never object names. The only free-form label is `tenant`, on the ingest counters
//! where SPEC §2.9 asks for per-tenant attribution, and it is capped: past
//! [`Metrics::tenant_limit`] distinct tenants new ones are counted under [`OTHER_TENANT`].
//!
//! Counters are registered without `_total`; prometheus-client appends it, so the exported
//! names equal the spec's (`duckmesh_ingest_requests_total`). Histograms whose names end in
//! `_ms` use [`LATENCY_MS_BUCKETS`], which include the SLO thresholds 200, 2000 and 3000.

pub mod storage;

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::{Error, Result};
pub use storage::StorageMetrics;

/// Prefix of every exported metric name.
pub const METRIC_PREFIX: &str = "duckmesh";

/// Content type of the `/metrics` response.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets (milliseconds) of every `_ms` histogram. 200, 2000 and 3000 are the SLO
/// thresholds of SPEC §5; 60 000 and 300 000 are the user and task query time limits.
pub const LATENCY_MS_BUCKETS: [f64; 17] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 300.0, 500.0, 1_000.0, 2_000.0, 3_000.0, 5_000.0, 10_000.0, 30_000.0,
    60_000.0, 120_000.0, 300_000.0,
];

/// Tenant label value that absorbs tenants beyond the cardinality cap.
pub const OTHER_TENANT: &str = "_other";

/// Default cap on distinct `tenant` label values per process.
pub const DEFAULT_TENANT_LIMIT: usize = 100;

/// A gauge holding a float (ages, lags in seconds).
pub type FloatGauge = Gauge<f64, AtomicU64>;
/// A histogram family with a shared bucket layout.
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A histogram with [`LATENCY_MS_BUCKETS`], for every `_ms` metric.
pub fn latency_ms_histogram() -> Histogram {
    Histogram::new(LATENCY_MS_BUCKETS)
}

/// Items the [`label_values!`](crate::label_values) macro expands to, so that its users
/// need not import them.
#[doc(hidden)]
pub mod macro_support {
    pub use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
    pub use std::fmt::{Result, Write};
}

/// Defines a label-value enum with its exported spelling, the list of all values (used to
/// pre-create series) and its prometheus-client encoding.
///
/// ```
/// duckmesh_telemetry::label_values! {
///     /// Outcome of one thing.
///     Outcome {
///         /// It worked.
///         Ok => "ok",
///         /// It did not.
///         Failed => "failed",
///     }
/// }
/// assert_eq!(Outcome::ALL.len(), 2);
/// assert_eq!(Outcome::Failed.as_str(), "failed");
/// ```
#[macro_export]
macro_rules! label_values {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label value as exported.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl $crate::metrics::macro_support::EncodeLabelValue for $name {
            fn encode(
                &self,
                encoder: &mut $crate::metrics::macro_support::LabelValueEncoder<'_>,
            ) -> $crate::metrics::macro_support::Result {
                $crate::metrics::macro_support::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

/// The metrics of one component: a cheap-to-clone struct of metric handles that registers
/// itself, once per process, through [`Metrics::component`].
pub trait ComponentMetrics: Clone + Send + Sync + 'static {
    /// Creates the component's metrics, registers them in `registry` (the component's own
    /// sub-registry, under the `duckmesh_` prefix and without extra labels, so the exported
    /// names are exactly the registered ones) and creates every series whose labels are all
    /// enums, at zero, so rates start from a real baseline and absent-metric alerts can tell
    /// "quiet" from "missing". `process` gives the shared parts (the tenant cap, the
    /// read-only gauge); calling [`Metrics::component`] or [`Metrics::encode`] on it here
    /// deadlocks.
    fn register(registry: &mut Registry, process: &Metrics) -> Self;
}

/// Caps the number of distinct `tenant` label values; clones share the cap.
#[derive(Clone, Debug)]
pub struct TenantCap {
    limit: usize,
    seen: Arc<Mutex<HashSet<String>>>,
}

impl TenantCap {
    /// At most `limit` (at least one) distinct tenants.
    pub fn new(limit: usize) -> Self {
        Self { limit: limit.max(1), seen: Arc::new(Mutex::new(HashSet::new())) }
    }

    /// Most distinct tenants that get their own label value.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The `tenant` label value to use for `tenant`: itself while under the cap (or
    /// already seen), [`OTHER_TENANT`] otherwise.
    pub fn label(&self, tenant: &str) -> String {
        let mut seen = lock(&self.seen);
        if seen.contains(tenant) {
            return tenant.to_owned();
        }
        if seen.len() < self.limit && !tenant.is_empty() && tenant != OTHER_TENANT {
            seen.insert(tenant.to_owned());
            return tenant.to_owned();
        }
        OTHER_TENANT.to_owned()
    }
}

/// Registered components, by type.
type Components = HashMap<TypeId, Box<dyn Any + Send + Sync>>;

/// The metrics registry of one DuckMesh process, with the storage and maintenance metrics
/// and the read-only gauge registered; components add theirs with [`Metrics::component`].
/// Cheap to clone: clones share the registry and every series.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<RwLock<Registry>>,
    components: Arc<Mutex<Components>>,
    tenants: TenantCap,
    read_only_mode: Gauge,
    /// Storage and maintenance metrics (compaction, GC, integrity, object store requests).
    pub storage: StorageMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Metrics")
            .field("components", &lock(&self.components).len())
            .field("tenants", &self.tenants)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the default tenant cap.
    pub fn new() -> Self {
        Self::with_tenant_limit(DEFAULT_TENANT_LIMIT)
    }

    /// A registry with at most `limit` distinct `tenant` label values.
    pub fn with_tenant_limit(limit: usize) -> Self {
        let mut registry = Registry::with_prefix(METRIC_PREFIX);
        let read_only_mode = Gauge::default();
        // Both the query API and the coordinator refuse writes in read-only mode and set this
        // gauge; a process running both (dev mode) must export it once.
        registry.register(
            "read_only_mode",
            "1 while emergency read-only mode rejects ingest and task commits",
            read_only_mode.clone(),
        );
        let storage = StorageMetrics::register_in(registry.sub_registry_with_labels(std::iter::empty()));
        Metrics {
            registry: Arc::new(RwLock::new(registry)),
            components: Arc::new(Mutex::new(Components::new())),
            tenants: TenantCap::new(limit),
            read_only_mode,
            storage,
        }
    }

    /// The metrics of component `C`: registered in a sub-registry of their own on the first
    /// call, the same handles on every later one.
    pub fn component<C: ComponentMetrics>(&self) -> C {
        let mut components = lock(&self.components);
        if let Some(registered) = components.get(&TypeId::of::<C>()).and_then(|any| any.downcast_ref::<C>()) {
            return registered.clone();
        }
        let metrics = {
            let mut registry = match self.registry.write() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            C::register(registry.sub_registry_with_labels(std::iter::empty()), self)
        };
        components.insert(TypeId::of::<C>(), Box::new(metrics.clone()));
        metrics
    }

    /// The tenant cap shared by every clone.
    pub fn tenants(&self) -> &TenantCap {
        &self.tenants
    }

    /// Most distinct tenants that get their own `tenant` label value.
    pub fn tenant_limit(&self) -> usize {
        self.tenants.limit()
    }

    /// The `tenant` label value to use for `tenant`: itself while under the cap (or
    /// already seen), [`OTHER_TENANT`] otherwise.
    pub fn tenant_label(&self, tenant: &str) -> String {
        self.tenants.label(tenant)
    }

    /// `duckmesh_read_only_mode`: 1 while emergency read-only mode is on.
    pub fn read_only_mode(&self) -> &Gauge {
        &self.read_only_mode
    }

    /// Renders every metric as OpenMetrics text.
    pub fn encode(&self) -> String {
        encode(&self.read())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        match self.registry.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Renders `registry` as OpenMetrics text (ending in `# EOF`), or says why it could not.
pub fn try_encode(registry: &Registry) -> Result<String> {
    let mut text = String::with_capacity(64 * 1024);
    prometheus_client::encoding::text::encode(&mut text, registry).map_err(Error::MetricsEncode)?;
    Ok(text)
}

/// Renders `registry` as OpenMetrics text (ending in `# EOF`).
///
/// Writing into a `String` only fails if a label value refuses to encode, which none of
/// ours does; should it happen, the error is logged and the text is returned without its
/// `# EOF` terminator, so the scrape fails visibly instead of exporting partial data.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::with_capacity(64 * 1024);
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, registry) {
        let error = Error::MetricsEncode(error);
        tracing::error!(error_code = error.error_code(), %error, "metrics encoding failed");
        if let Some(end) = text.rfind("# EOF") {
            text.truncate(end);
        }
    }
    text
}

/// An axum router serving `GET /metrics` from `metrics`' registry.
pub fn metrics_router(metrics: &Metrics) -> Router {
    let metrics = metrics.clone();
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move { metrics_response(&metrics.read()) }
        }),
    )
}

fn metrics_response(registry: &Registry) -> Response {
    match try_encode(registry) {
        Ok(body) => ([(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE))], body).into_response(),
        Err(error) => {
            let mut body = String::new();
            let _ = write!(body, "{}: {error}", error.error_code());
            (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[derive(Clone)]
    struct Probe {
        hits: Counter,
    }

    impl ComponentMetrics for Probe {
        fn register(registry: &mut Registry, _process: &Metrics) -> Self {
            let probe = Probe { hits: Counter::default() };
            registry.register("probe_hits", "Probe hits", probe.hits.clone());
            probe
        }
    }

    #[test]
    fn components_register_once_under_the_prefix() {
        let metrics = Metrics::new();
        metrics.component::<Probe>().hits.inc();
        metrics.clone().component::<Probe>().hits.inc();
        let text = metrics.encode();
        assert_eq!(text.matches("# TYPE duckmesh_probe_hits counter").count(), 1, "{text}");
        assert!(text.contains("duckmesh_probe_hits_total 2"), "{text}");
        assert!(text.contains("duckmesh_read_only_mode 0"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn latency_buckets_include_the_slo_thresholds() {
        for threshold in [200.0, 2000.0, 3000.0] {
            assert!(LATENCY_MS_BUCKETS.contains(&threshold));
        }
    }

    #[test]
    fn tenant_labels_are_capped() {
        let metrics = Metrics::with_tenant_limit(2);
        assert_eq!(metrics.tenant_label("a"), "a");
        assert_eq!(metrics.tenant_label("b"), "b");
        assert_eq!(metrics.tenant_label("c"), OTHER_TENANT);
        assert_eq!(metrics.tenant_label("a"), "a");
        // Clones share the cap.
        let clone = metrics.clone();
        assert_eq!(clone.tenant_label("d"), OTHER_TENANT);
        assert_eq!(metrics.tenant_label(""), OTHER_TENANT);
    }
}
