//! The metrics registry of every `duckmesh` process that serves `/metrics` (api,
//! coordinator, operator): each component's metrics registered up front, whatever the role,
//! so every binary exports every name and a dashboard never shows "no data" because a
//! process has not yet hit a code path. `duckmesh dev` registers the same components.

use duckmesh_coordinator::metrics::CoordinatorMetrics;
use duckmesh_query::metrics::ApiMetrics;
use duckmesh_scheduler::metrics::ControlPlaneMetrics;
use duckmesh_telemetry::Metrics;

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
