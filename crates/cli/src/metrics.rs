//! The metrics registry of every `duckmesh` process that serves `/metrics` (api,
//! coordinator, operator): each component's metrics registered up front, whatever the role,
//! so every binary exports every name and a dashboard never shows "no data" because a
//! process has not yet hit a code path. `duckmesh dev` registers the same components.

use duckmesh_coordinator::metrics::CoordinatorMetrics;
use duckmesh_query::metrics::ApiMetrics;
use duckmesh_scheduler::metrics::ControlPlaneMetrics;
use duckmesh_storage::StoreCounters;
use duckmesh_telemetry::Metrics;
use duckmesh_telemetry::metrics::storage::ObjectStoreOperation;
use std::sync::Arc;
use std::time::Duration;

/// A registry holding every component's metrics.
pub fn every_component() -> Metrics {
    let metrics = Metrics::new();
    register_every_component(&metrics);
    metrics
}

/// Registers every component's metrics in `metrics` (the storage and maintenance metrics
/// come with the registry itself).
pub fn register_every_component(metrics: &Metrics) {
    let _ = ApiMetrics::new(metrics);
    let _ = CoordinatorMetrics::new(metrics);
    let _ = ControlPlaneMetrics::new(metrics);
}

/// How often the object store's counters are copied into the registry.
const STORE_COUNTERS_EVERY: Duration = Duration::from_secs(1);

/// Exports the object store's request, retry and failure counts (`counters`, kept by the
/// storage layer's retry loop) as `duckmesh_object_store_requests_total` and
/// `duckmesh_object_store_retries_total`, refreshed every second for the life of the process.
/// Without it those families stay at zero whatever the store does, and the alerts on them
/// never fire (found by the object-store drill, issue 18).
pub fn follow_store(metrics: &Metrics, counters: Arc<StoreCounters>) {
    let storage = metrics.storage.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(STORE_COUNTERS_EVERY);
        loop {
            every.tick().await;
            for counts in counters.snapshot() {
                let Some(operation) =
                    ObjectStoreOperation::ALL.iter().find(|operation| operation.as_str() == counts.operation.as_str())
                else {
                    continue;
                };
                storage.observe_object_store_totals(*operation, counts.requests, counts.retries, counts.failures);
            }
        }
    });
}
