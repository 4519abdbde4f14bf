//! `duckmesh migrate`: bring a catalog database to this build's schema.

use anyhow::Context;
use duckmesh_catalog::{Catalog, CatalogConfig, ConnectOptions};
use duckmesh_localpg::resolve_state_dir;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `duckmesh migrate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Catalog database URL, e.g. postgres://duckmesh:secret@db:5432/duckmesh.
    #[arg(long, env = "DUCKMESH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    /// Where the private PostgreSQL keeps its data when no --database-url is given.
    #[arg(long, env = "DUCKMESH_STATE_DIR", default_value = ".duckmesh")]
    state_dir: PathBuf,

    /// Only report pending migrations; change nothing.
    #[arg(long)]
    check: bool,
}

/// Runs the command.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut _cluster = None;
    let url = match args.database_url {
        Some(url) => url,
        None => {
            let requested = args.state_dir.join("postgres");
            let state = resolve_state_dir(&requested)?;
            if std::fs::canonicalize(&requested).ok().as_deref() != Some(state.as_path()) {
                eprintln!(
                    "note: PostgreSQL runs as 'nobody' and cannot reach {}; keeping its data in {}",
                    requested.display(),
                    state.display()
                );
            }
            let cluster =
                duckmesh_dev::private_postgres(&args.state_dir).await.context("starting the private PostgreSQL")?;
            eprintln!("private PostgreSQL on 127.0.0.1:{} ({})", cluster.port(), cluster.base_dir().display());
            let url = cluster.url("postgres");
            _cluster = Some(cluster);
            url
        }
    };
    let mut options = ConnectOptions::new(url);
    options.max_connections = 2;
    options.acquire_timeout = Duration::from_secs(15);
    let config = CatalogConfig::from_env()?;
    let catalog = Catalog::connect(&options, config).await.context("connecting to the catalog database")?;

    catalog.ensure_not_newer().await?;
    let applied = catalog.applied_migrations().await.context("reading applied migrations")?;
    let known = Catalog::known_migrations();
    let pending: Vec<_> = known.iter().filter(|m| !applied.contains(m)).collect();
    if args.check {
        for (version, description) in &pending {
            println!("pending  {version:>4}  {description}");
        }
        println!("{} applied, {} pending", applied.len(), pending.len());
        return Ok(if pending.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(3) });
    }
    catalog.migrate().await.context("applying migrations")?;
    for (version, description) in Catalog::known_migrations() {
        let marker = if pending.iter().any(|(v, _)| *v == version) { "applied" } else { "present" };
        println!("{marker:<8} {version:>4}  {description}");
    }
    println!("catalog schema is up to date ({} migrations)", known.len());
    catalog.close().await;
    Ok(ExitCode::SUCCESS)
}
