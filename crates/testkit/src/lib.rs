//! Real PostgreSQL for every test, with no manual set-up.
//!
//! With `DATABASE_URL` set, tests use that server (it needs the right to create databases).
//! Otherwise the first test of a process starts a throwaway cluster from the machine's server
//! binaries ([`duckmesh_localpg`]), which a watchdog removes when the process exits.
//!
//! Isolation follows crates.io and sqlx: the catalog is migrated once into a template database
//! named after the migrations' checksums, and every test gets its own database cloned from it
//! (`CREATE DATABASE … TEMPLATE …`, a file copy, far faster than migrating), dropped when the
//! test's [`TestDatabase`] goes out of scope.

use duckmesh_catalog::{Catalog, CatalogConfig, ConnectOptions, MIGRATOR};
use duckmesh_localpg::{ClusterOptions, LocalCluster};
use sqlx::{Connection, Executor, PgConnection};
use std::sync::OnceLock;
use std::time::Duration;

/// A boxed error for test set-up failures (shown in the test's panic message).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Server {
    /// URL of the maintenance database (`postgres`) on the server.
    admin_url: String,
    /// Keeps a throwaway cluster alive for the whole process.
    _cluster: Option<LocalCluster>,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

fn server() -> Result<&'static Server, BoxError> {
    let server = SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return Ok(Server { admin_url: url, _cluster: None });
        }
        LocalCluster::start(&ClusterOptions::ephemeral())
            .map(|cluster| Server { admin_url: cluster.url("postgres"), _cluster: Some(cluster) })
            .map_err(|error| format!("starting a throwaway PostgreSQL for tests: {error}"))
    });
    server.as_ref().map_err(|message| message.clone().into())
}

/// Replaces the database name in a Postgres URL (keeping credentials, host and parameters).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..].find('/').map(|i| authority_start + i);
    let mut out = match path_start {
        Some(i) => format!("{}/{database}", &base[..i]),
        None => format!("{base}/{database}"),
    };
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

async fn template() -> Result<&'static str, BoxError> {
    let name = TEMPLATE
        .get_or_try_init(|| async {
            let server = server()?;
            let checksum: u64 = MIGRATOR.iter().fold(0xcbf2_9ce4_8422_2325, |hash, migration| {
                migration.checksum.iter().fold(hash, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
            });
            let name = format!("duckmesh_template_{checksum:016x}");
            let mut admin = PgConnection::connect(&server.admin_url).await?;
            // Several test processes may race to build the template.
            admin.execute("SELECT pg_advisory_lock(7262617)").await?;
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&name)
                .fetch_one(&mut admin)
                .await?;
            if !exists {
                let building = format!("{name}_building");
                admin.execute(format!("DROP DATABASE IF EXISTS {building}").as_str()).await?;
                admin.execute(format!("CREATE DATABASE {building}").as_str()).await?;
                {
                    let mut conn = PgConnection::connect(&with_database(&server.admin_url, &building)).await?;
                    MIGRATOR.run(&mut conn).await?;
                    conn.close().await?;
                }
                admin.execute(format!("ALTER DATABASE {building} RENAME TO {name}").as_str()).await?;
            }
            admin.execute("SELECT pg_advisory_unlock(7262617)").await?;
            admin.close().await?;
            Ok::<_, BoxError>(name)
        })
        .await?;
    Ok(name.as_str())
}

/// A private, migrated database for one test, dropped on drop.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates a fresh migrated database.
    pub async fn new() -> Result<Self, BoxError> {
        let template = template().await?;
        let server = server()?;
        let name = format!("duckmesh_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&server.admin_url).await?;
        // Cloning needs the template to have no other sessions; retry briefly if one is
        // still closing.
        let mut tries = 0;
        loop {
            match admin.execute(format!("CREATE DATABASE {name} TEMPLATE {template}").as_str()).await {
                Ok(_) => break,
                Err(error) if tries < 50 => {
                    tries += 1;
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
        admin.close().await?;
        Ok(Self { url: with_database(&server.admin_url, &name), admin_url: server.admin_url.clone(), name })
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connects a catalog with `config` and a pool of `max_connections`.
    pub async fn catalog_with(&self, config: CatalogConfig, max_connections: u32) -> Result<Catalog, BoxError> {
        let mut options = ConnectOptions::new(self.url.clone());
        options.max_connections = max_connections;
        Ok(Catalog::connect(&options, config).await?)
    }

    /// Connects a catalog with default knobs.
    pub async fn catalog(&self) -> Result<Catalog, BoxError> {
        self.catalog_with(CatalogConfig::default(), 10).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop may run inside a runtime that is shutting down: use a thread of our own.
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let _ = admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
                    let _ = admin.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_are_replaced_in_urls() {
        let cases = [
            ("postgres://u:p@h:5/db", "x", "postgres://u:p@h:5/x"),
            ("postgres://h:5", "x", "postgres://h:5/x"),
            ("postgres://h/db?sslmode=disable", "x", "postgres://h/x?sslmode=disable"),
            ("postgresql://u@h:5/", "x", "postgresql://u@h:5/x"),
        ];
        for (url, db, expected) in cases {
            assert_eq!(with_database(url, db), expected);
        }
    }
}
