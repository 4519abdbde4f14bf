//! The coordinator's own HTTP endpoints for Kubernetes and Prometheus: `/metrics`,
//! `/healthz` (the process runs) and `/readyz` (the catalog answers).

use crate::coordinator::Coordinator;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// `/metrics` (the process's registry), `/healthz` and `/readyz` for `coordinator`.
pub fn health_router(coordinator: &Coordinator) -> Router {
    let ready = coordinator.clone();
    duckmesh_telemetry::metrics_router(coordinator.metrics()).route("/healthz", get(|| async { "ok" })).route(
        "/readyz",
        get(move || {
            let coordinator = ready.clone();
            async move {
                match coordinator.catalog().ping().await {
                    Ok(()) => (StatusCode::OK, "ready".to_owned()),
                    Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.error_code().to_owned()),
                }
            }
        }),
    )
}

/// Serves `router` on `listener` until `stop`.
pub async fn serve(listener: tokio::net::TcpListener, router: Router, stop: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await
}
