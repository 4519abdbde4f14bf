//! How the operator-facing commands (`status`, `dead-letters`, `read-only`) reach a catalog,
//! and how the API clients (`query`, `ingest`) find an API: an explicit URL, else the running
//! `duckmesh dev` instance of the state directory, else that directory's stopped dev catalog.

use anyhow::Context;
use duckmesh_catalog::{Catalog, CatalogConfig, ConnectOptions};
use duckmesh_dev::InstanceInfo;
use duckmesh_localpg::{LocalCluster, resolve_state_dir};
use std::path::Path;
use std::time::Duration;

/// Where an operator-facing command finds its catalog (flattened into its arguments).
#[derive(Debug, clap::Args)]
pub struct CatalogArgs {
    /// Catalog database URL; default: the dev instance of --state-dir.
    #[arg(long, global = true, env = "DUCKMESH_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// The dev state directory to use when no --database-url is given.
    #[arg(long, global = true, env = "DUCKMESH_STATE_DIR", default_value = ".duckmesh")]
    pub state_dir: std::path::PathBuf,
}

impl CatalogArgs {
    /// Connects as [`catalog`] does.
    pub async fn connect(&self) -> anyhow::Result<CatalogHandle> {
        catalog(self.database_url.as_deref(), &self.state_dir).await
    }
}

/// A catalog connection, with the private PostgreSQL it started (kept running while held).
pub struct CatalogHandle {
    /// The catalog.
    pub catalog: Catalog,
    _cluster: Option<LocalCluster>,
}

/// Connects to `database_url`, or to the dev catalog of `state_dir` (the running instance's,
/// or its stopped PostgreSQL, started for the duration of the command).
pub async fn catalog(database_url: Option<&str>, state_dir: &Path) -> anyhow::Result<CatalogHandle> {
    let mut cluster = None;
    let url = match (database_url, InstanceInfo::running(state_dir)) {
        (Some(url), _) => url.to_owned(),
        (None, Some(instance)) => instance.database_url,
        (None, None) => {
            let requested = state_dir.join("postgres");
            if !requested.exists() && !resolve_state_dir(&requested)?.join("data").exists() {
                anyhow::bail!(
                    "no dev catalog under {} (run `duckmesh dev <file.yaml>` first, or pass --database-url)",
                    state_dir.display()
                );
            }
            let started = duckmesh_dev::private_postgres(state_dir).await.context("starting the dev PostgreSQL")?;
            let url = started.url("postgres");
            cluster = Some(started);
            url
        }
    };
    let mut options = ConnectOptions::new(url);
    options.max_connections = 2;
    options.acquire_timeout = Duration::from_secs(15);
    let catalog = Catalog::connect(&options, CatalogConfig::from_env()?).await.context("connecting to the catalog")?;
    Ok(CatalogHandle { catalog, _cluster: cluster })
}

/// The catalog of a long-running service (`api`, `coordinator`): a pool of `connections`,
/// 15 s to get a connection, and the schema brought up to date as every component does at
/// start-up (the migrator takes an advisory lock; a database migrated by a newer build is
/// refused).
pub async fn service_catalog(url: String, connections: u32, config: CatalogConfig) -> anyhow::Result<Catalog> {
    let mut options = ConnectOptions::new(url);
    options.max_connections = connections;
    options.acquire_timeout = Duration::from_secs(15);
    let catalog = Catalog::connect(&options, config).await.context("connecting to the catalog")?;
    catalog.migrate().await.context("applying catalog migrations")?;
    Ok(catalog)
}

/// The API base URL: `url`, else the running dev instance's, else `http://localhost:8080`.
pub fn api_url(url: Option<String>, state_dir: &Path) -> String {
    url.or_else(|| InstanceInfo::running(state_dir).map(|instance| instance.api_url))
        .unwrap_or_else(|| "http://localhost:8080".to_owned())
}
