//! `duckmesh coordinator`: the ingest coordinator — claims batches of acknowledged ingest
//! events, writes them as Parquet and commits them as ingest snapshots, and serves `/metrics`,
//! `/healthz` and `/readyz` (docs/coordinator.md). Configuration comes from flags or
//! `DUCKMESH_*` variables (`duckmesh_coordinator::CoordinatorArgs` and the catalog's and object
//! store's knobs; docs/configuration.md); the work is `duckmesh_coordinator`.

use anyhow::Context;
use duckmesh_catalog::CatalogArgs;
use duckmesh_coordinator::{Coordinator, CoordinatorArgs};
use duckmesh_storage::{StoreArgs, StoreCounters};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Arguments of `duckmesh coordinator`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "DUCKMESH_COORDINATOR_LISTEN", default_value = "0.0.0.0:9091")]
    listen: SocketAddr,

    /// Catalog database URL.
    #[arg(long, env = "DUCKMESH_DATABASE_URL", hide_env_values = true)]
    database_url: String,

    /// Catalog connections.
    #[arg(long, env = "DUCKMESH_COORDINATOR_DB_CONNECTIONS", default_value_t = 8)]
    db_connections: u32,

    #[command(flatten)]
    coordinator: CoordinatorArgs,

    #[command(flatten)]
    catalog: CatalogArgs,

    #[command(flatten)]
    store: StoreArgs,
}

/// Runs until SIGTERM or Ctrl-C, then finishes the batch in hand and exits.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.coordinator.into_config();
    if config.read_only {
        tracing::warn!("DUCKMESH_READ_ONLY is set: this coordinator claims and commits nothing");
    }
    // The claim/commit path, the LISTEN connection and the readiness probe run at once.
    let catalog =
        crate::connect::service_catalog(args.database_url, args.db_connections.max(3), args.catalog.into_config()?)
            .await?;
    let counters = Arc::new(StoreCounters::new());
    let store = args.store.store_config()?.build(Arc::clone(&counters)).await.context("opening the object store")?;
    let metrics = crate::metrics::every_component();
    crate::metrics::follow_store(&metrics, counters);
    let coordinator = Coordinator::new(catalog.clone(), store, metrics, config);

    let stop = CancellationToken::new();
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %args.listen, "serving /metrics, /healthz and /readyz");
    let server = tokio::spawn(duckmesh_coordinator::serve(
        listener,
        duckmesh_coordinator::health_router(&coordinator),
        stop.clone(),
    ));
    let signal = stop.clone();
    tokio::spawn(async move {
        crate::signals::terminated().await;
        tracing::info!("shutting down: finishing the batch in hand");
        signal.cancel();
    });

    let result = coordinator.run(stop.clone()).await;
    stop.cancel();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(error = %error, "the metrics server failed"),
        Err(error) => tracing::warn!(error = %error, "the metrics server stopped unexpectedly"),
    }
    catalog.close().await;
    result.context("running the ingest coordinator")?;
    Ok(ExitCode::SUCCESS)
}
