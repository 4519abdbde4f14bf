//! The API dev mode serves on 127.0.0.1: the query service's routes (`/v1/query`, `/v1/ingest`,
//! `/v1/datasets`, health, `/metrics`) over the dev instance's catalog and store, without API
//! keys (everything is tenant `default`), caching files under the state directory.

use axum::Router;
use duckmesh_catalog::Catalog;
use duckmesh_query::{QueryConfig, QueryService};
use duckmesh_storage::ObjectStore;
use duckmesh_telemetry::Metrics;
use std::path::Path;
use std::sync::Arc;

/// The dev API router.
pub fn router(
    catalog: Catalog,
    store: Arc<dyn ObjectStore>,
    metrics: Metrics,
    state_dir: &Path,
) -> Result<Router, duckmesh_query::Error> {
    let service = QueryService::new(catalog, store, metrics, QueryConfig::local(state_dir))?;
    Ok(duckmesh_query::router(service))
}
