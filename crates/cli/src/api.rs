//! `duckmesh api`: the query deployment's HTTP server — `/v1/query`, `/v1/task/query`,
//! `/v1/datasets`, health, readiness and `/metrics` (docs/query.md). Configuration comes from
//! flags or `DUCKMESH_*` variables (`duckmesh_query::QueryArgs` and the catalog's and object
//! store's knobs; docs/configuration.md); the work is `duckmesh_query`.

use anyhow::Context;
use duckmesh_catalog::CatalogArgs;
use duckmesh_query::{QueryArgs, QueryService};
use duckmesh_storage::{StoreArgs, StoreCounters};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

/// Arguments of `duckmesh api`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to serve on.
    #[arg(long, env = "DUCKMESH_API_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,

    /// Catalog database URL.
    #[arg(long, env = "DUCKMESH_DATABASE_URL", hide_env_values = true)]
    database_url: String,

    /// Catalog connections.
    #[arg(long, env = "DUCKMESH_API_DB_CONNECTIONS", default_value_t = 16)]
    db_connections: u32,

    #[command(flatten)]
    query: QueryArgs,

    #[command(flatten)]
    catalog: CatalogArgs,

    #[command(flatten)]
    store: StoreArgs,
}

/// Serves until SIGTERM or Ctrl-C, then finishes the requests in flight.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.query.into_config()?;
    if config.auth.is_none() {
        tracing::warn!("DUCKMESH_QUERY_AUTH=none: serving every request as tenant `default` without authentication");
    }
    let catalog =
        crate::connect::service_catalog(args.database_url, args.db_connections.max(2), args.catalog.into_config()?)
            .await?;
    let counters = Arc::new(StoreCounters::new());
    let store = args.store.store_config()?.build(Arc::clone(&counters)).await.context("opening the object store")?;
    let metrics = crate::metrics::every_component();
    crate::metrics::follow_store(&metrics, counters);
    let service = QueryService::new(catalog.clone(), store, metrics, config).context("starting the query service")?;
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %args.listen, "query API listening");
    duckmesh_query::serve(listener, duckmesh_query::router(service), shutdown_signal()).await?;
    catalog.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn shutdown_signal() {
    crate::signals::terminated().await;
    tracing::info!("shutting down: finishing requests in flight");
}
