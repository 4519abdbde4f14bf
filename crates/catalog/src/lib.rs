//! DuckMesh's catalog on PostgreSQL: the single source of truth for datasets, snapshots,
//! files, jobs, tasks, attempts (leases), the outbox and the ingest buffer (SPEC §2).
//!
//! Every write is one transaction. Every action an attempt takes — confirming, heartbeating,
//! committing, failing — presents the attempt's fencing token and is checked inside the same
//! transaction (`SELECT … FOR UPDATE`), so a superseded or expired attempt can never change
//! anything. Kubernetes watches and `LISTEN/NOTIFY` are only wake-ups: the state lives here.
//!
//! Clock: every lease decision uses the database server's clock (`clock_timestamp()`), so
//! schedulers, workers and reapers on different machines agree on when a lease expires.

mod commit;
mod compaction;
mod config;
mod consistency;
mod error;
mod failures;
mod fencing;
mod gc;
mod ingest;
mod integrity;
mod job_phases;
mod leases;
mod maintenance_runs;
mod model;
mod notify;
mod outbox;
mod reads;
mod rebuild;
mod specs;
mod wakeup_batch;

pub use commit::schema_difference;
pub use compaction::CompactionCommit;
pub use config::{CatalogArgs, ConfigError};
pub use consistency::{DatasetState, FileGroup, GROUP_SAMPLE_PATHS, RecoveryStatus, SnapshotState};
pub use duckmesh_contracts::canonical_type;
pub use error::{Error, Result};
pub use failures::Reaped;
pub use gc::ExpiredSnapshot;
pub use ingest::{
    ClaimOptions, ClaimedBatch, ClaimedEvent, DeadLetter, DeadLetterFilter, INGEST_CHANNEL, IngestAck, IngestBacklog,
    IngestClaim, IngestCommit, IngestCommitted, IngestRecord, IngestRequest, MAX_DEDUPE_KEY_BYTES, PoisonEvent,
    ReadOnlyState,
};
pub use integrity::{
    INTEGRITY_PROBLEMS_KEPT, INTEGRITY_RUNS_KEPT, IntegrityCounts, IntegrityProblem, IntegrityRun, NewIntegrityRun,
    ProblemKind, SnapshotManifest,
};
pub use leases::{BatchLease, ScheduleOptions, Scheduled};
pub use maintenance_runs::{MaintenanceRun, MaintenanceState};
pub use model::*;
pub use notify::{COMMITS_CHANNEL, CommitEvent, CommitListener, TASKS_CHANNEL, Wakeups};
pub use outbox::{OutboxMessage, OutboxStats};
pub use reads::BacklogStats;
pub use rebuild::{RestoreSummary, RestoredDataset};
pub use specs::{CancelledAttempt, JobUpsert, MAX_ATTEMPTS_LIMIT, SpecBatch, TIMEOUT_LIMIT_SECONDS};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

/// The embedded, versioned schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A handle on the catalog: a connection pool plus behaviour knobs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Catalog {
    pool: PgPool,
    config: CatalogConfig,
    /// Wake-up notifications of this handle and its clones, sent in batches.
    wakeups: std::sync::Arc<wakeup_batch::WakeupBatch>,
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Postgres URL (`postgres://user:pass@host:port/db`).
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// How long a call waits for a free connection (or for an unreachable server).
    pub acquire_timeout: Duration,
    /// Open one direct connection before the pool, so that an unreachable server is reported at
    /// once with its real cause (refused, DNS, authentication…), where a pool that cannot connect
    /// retries until `acquire_timeout` and reports only "pool timed out". Without it (a
    /// short-lived process such as a worker, which saves a connection per run) the pool's first
    /// connection is the check, and the direct connection is made only after it failed, to tell
    /// why.
    pub probe: bool,
}

impl ConnectOptions {
    /// Defaults for `url`: 10 connections, 10 s acquire timeout, a probe connection first.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), max_connections: 10, acquire_timeout: Duration::from_secs(10), probe: true }
    }
}

impl Catalog {
    /// Connects (without migrating). Fails with `catalog_unavailable`, naming the server (never
    /// the credentials) and the real cause, when it cannot be reached within the acquire timeout.
    pub async fn connect(options: &ConnectOptions, config: CatalogConfig) -> Result<Self> {
        let connect = PgConnectOptions::from_str(&options.url)?.application_name("duckmesh");
        let target =
            format!("{}:{}/{}", connect.get_host(), connect.get_port(), connect.get_database().unwrap_or("postgres"));
        // A pool reports an unreachable server only as "pool timed out"; one direct connection
        // surfaces the real cause (refused, DNS, authentication…): first, or after the pool failed.
        let probe =
            async || match tokio::time::timeout(options.acquire_timeout, PgConnection::connect_with(&connect)).await {
                Ok(Ok(connection)) => connection.close().await.map_err(Error::from),
                Ok(Err(source)) => Err(Error::Unreachable { target: target.clone(), source }),
                Err(_) => Err(Error::Unreachable { target: target.clone(), source: sqlx::Error::PoolTimedOut }),
            };
        if options.probe {
            probe().await?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await;
        match pool {
            Ok(pool) => Ok(Self::from_pool(pool, config)),
            Err(error) if !options.probe => {
                probe().await?;
                Err(Error::Unreachable { target, source: error })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: PgPool, config: CatalogConfig) -> Self {
        Self { pool, config, wakeups: std::sync::Arc::default() }
    }

    /// Applies any pending migrations. Safe to run concurrently from several processes
    /// (the migrator takes an advisory lock) and on every start-up. Refuses, with
    /// `catalog_schema_too_new` and before changing anything, a database that holds a migration
    /// this build does not know (it was migrated by a newer DuckMesh).
    pub async fn migrate(&self) -> Result<()> {
        self.ensure_not_newer().await?;
        MIGRATOR.run(&self.pool).await?;
        self.canonicalize_stored_schemas().await?;
        Ok(())
    }

    /// Rewrites stored dataset schemas into canonical type names ([`canonical_type`]). Catalogs
    /// written before type names were canonicalized kept a declared `bigint` or `int`, which
    /// a task's `BIGINT` or `INTEGER` would then fail to match. Idempotent; a row that changed
    /// meanwhile is left for the next run.
    async fn canonicalize_stored_schemas(&self) -> Result<()> {
        let rows: Vec<(i64, sqlx::types::Json<Vec<Column>>)> =
            sqlx::query_as("SELECT id, schema FROM datasets WHERE schema IS NOT NULL").fetch_all(&self.pool).await?;
        for (id, sqlx::types::Json(stored)) in rows {
            let canonical = commit::normalized(&stored);
            if canonical != stored {
                sqlx::query("UPDATE datasets SET schema = $2 WHERE id = $1 AND schema = $3")
                    .bind(id)
                    .bind(sqlx::types::Json(&canonical))
                    .bind(sqlx::types::Json(&stored))
                    .execute(&self.pool)
                    .await?;
                tracing::info!(dataset = id, "stored schema rewritten with canonical type names");
            }
        }
        Ok(())
    }

    /// Fails with `catalog_schema_too_new` when the database holds a migration this build does
    /// not know.
    pub async fn ensure_not_newer(&self) -> Result<()> {
        let known = Self::known_migrations();
        let applied = self.applied_migrations().await?;
        match applied.into_iter().find(|migration| !known.contains(migration)) {
            Some((version, description)) => Err(Error::SchemaTooNew { version, description }),
            None => Ok(()),
        }
    }

    /// The migrations this build knows, as `(version, description)`.
    pub fn known_migrations() -> Vec<(i64, String)> {
        MIGRATOR.iter().map(|m| (m.version, m.description.to_string())).collect()
    }

    /// The migrations applied to the database, as `(version, description)` (none for a
    /// database that was never migrated).
    pub async fn applied_migrations(&self) -> Result<Vec<(i64, String)>> {
        let tracked: bool =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(&self.pool).await?;
        if !tracked {
            return Ok(Vec::new());
        }
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT version, description FROM _sqlx_migrations WHERE success ORDER BY version")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows)
    }

    /// Checks that the database answers (for readiness probes).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The database server's current time, the clock all leases are measured against.
    pub async fn now(&self) -> Result<chrono::DateTime<chrono::Utc>> {
        Ok(sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(&self.pool).await?)
    }

    /// The knobs this handle was built with.
    pub fn config(&self) -> &CatalogConfig {
        &self.config
    }

    /// The underlying pool (for adapters that need their own queries, and for tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for checked-out connections to return.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Converts a duration to fractional seconds for `make_interval(secs => …)`.
pub(crate) fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// Cuts a message at a character boundary so an enormous error cannot bloat the catalog.
pub(crate) fn truncate(message: &str, max_bytes: usize) -> &str {
    if message.len() <= max_bytes {
        return message;
    }
    let mut end = max_bytes;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("ééé", 3), "é"); // each é is two bytes
    }
}
