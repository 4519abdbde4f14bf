//! The services behind the HTTP API and what they share. [`QueryService`] owns the query path
//! (the `query` module: SQL check, snapshot resolution, the visibility barrier, running
//! DuckDB) with its file cache, engine pool and admission slots, plus the dataset listings and
//! readiness; [`IngestService`](crate::ingest::IngestService) owns ingest. Both read one
//! [`Shared`]: the catalog, the metrics, the configuration and the rate limiters.

mod pool;
mod query;

pub use query::{QueryAnswer, RawBody};

use crate::auth::Principal;
use crate::cache::{CacheStats, FileCache};
use crate::config::QueryConfig;
use crate::error::{Error, Result};
use crate::limits::{Admission, RateLimiter};
use crate::metrics::ApiMetrics;
use crate::model::{DatasetInfo, DatasetList, SnapshotInfo, SnapshotPage};
use duckdb::Connection;
use duckmesh_catalog::{Catalog, DatasetRecord};
use duckmesh_core::SnapshotId;
use duckmesh_storage::ObjectStore;
use duckmesh_telemetry::Metrics;
use pool::EnginePool;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// What the query and ingest services share: one catalog, one metrics registry, one
/// configuration, one set of rate limiters.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) catalog: Catalog,
    /// The process registry, served on `/metrics`.
    pub(crate) registry: Metrics,
    pub(crate) metrics: ApiMetrics,
    pub(crate) config: QueryConfig,
    pub(crate) rate_limiter: RateLimiter,
}

impl Shared {
    /// A dataset of the caller's tenant by name (or by its `_` alias); anything else,
    /// including another tenant's dataset of that name, is "not found".
    pub(crate) async fn find_dataset(
        &self,
        principal: &Principal,
        namespace: &str,
        name: &str,
    ) -> Result<DatasetRecord> {
        let lower = name.to_lowercase();
        let mut candidates = vec![lower.clone()];
        if lower.contains('_') {
            candidates.push(lower.replace('_', "-"));
        }
        for candidate in candidates {
            match self.catalog.dataset_by_name(namespace, &candidate).await {
                Ok(record) if record.tenant == principal.tenant => return Ok(record),
                Ok(_) | Err(duckmesh_catalog::Error::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::DatasetNotFound { name: name.to_owned() })
    }
}

/// The query service. Cheap to clone; every clone shares caches, limits and slots.
#[derive(Debug, Clone)]
pub struct QueryService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    store: Arc<dyn ObjectStore>,
    cache: FileCache,
    admission: Admission,
    barrier_waiters: Arc<Semaphore>,
    engines: EnginePool,
    /// A locked-down database used only to run DuckDB's parser on incoming SQL.
    parser: Mutex<Connection>,
}

/// The outcome of one readiness check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Check {
    /// Whether it passed.
    pub ok: bool,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// Whether every check passed.
    pub ready: bool,
    /// Per-check results.
    pub checks: BTreeMap<&'static str, Check>,
}

impl QueryService {
    /// Builds the service: opens the file cache and the parser database.
    pub fn new(catalog: Catalog, store: Arc<dyn ObjectStore>, metrics: Metrics, config: QueryConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.work_dir)
            .map_err(|error| Error::io("creating the work directory", &config.work_dir, error))?;
        let cache = FileCache::open(&config.cache_dir, config.cache_bytes)?;
        let parser = Connection::open_in_memory_with_flags(
            duckdb::Config::default()
                .enable_autoload_extension(false)
                .map_err(|error| Error::Engine { step: "opening the parser", message: error.to_string() })?,
        )
        .and_then(|connection| {
            connection.execute_batch(
                "SET autoinstall_known_extensions = false; SET enable_external_access = false; \
                 SET lock_configuration = true",
            )?;
            Ok(connection)
        })
        .map_err(|error| Error::Engine { step: "opening the parser", message: error.to_string() })?;
        Ok(Self {
            inner: Arc::new(Inner {
                admission: Admission::new(config.max_running, config.max_queued),
                barrier_waiters: Arc::new(Semaphore::new(config.max_barrier_waiters.max(1))),
                engines: EnginePool::new(config.engine_pool),
                store,
                cache,
                parser: Mutex::new(parser),
                shared: Arc::new(Shared {
                    rate_limiter: RateLimiter::new(config.rate_limits),
                    catalog,
                    metrics: ApiMetrics::new(&metrics),
                    registry: metrics,
                    config,
                }),
            }),
        })
    }

    /// What this service shares with the ingest service.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// The configuration.
    pub fn config(&self) -> &QueryConfig {
        &self.inner.shared.config
    }

    /// The catalog.
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.inner.shared.catalog
    }

    /// The process's metrics registry (every component's metrics, served on `/metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.shared.registry
    }

    /// The metrics this service records.
    pub fn api_metrics(&self) -> &ApiMetrics {
        &self.inner.shared.metrics
    }

    /// File cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// The request-rate limiters.
    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.inner.shared.rate_limiter
    }

    /// The caller tenant's datasets.
    pub async fn datasets(&self, principal: &Principal) -> Result<DatasetList> {
        let records = self.catalog().datasets(Some(&principal.tenant)).await?;
        Ok(DatasetList { datasets: records.into_iter().map(dataset_info).collect() })
    }

    /// A page of a dataset's snapshots, newest first.
    pub async fn snapshots(
        &self,
        principal: &Principal,
        name: &str,
        namespace: Option<&str>,
        before: Option<i64>,
        limit: Option<i64>,
    ) -> Result<SnapshotPage> {
        let namespace = namespace.unwrap_or(&self.config().namespace);
        let record = self.shared().find_dataset(principal, namespace, name).await?;
        let limit = limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(invalid("limit must be from 1 to 1000"));
        }
        let page = self.catalog().snapshots(record.id, before.map(SnapshotId), limit).await?;
        let next_before = (page.len() as i64 == limit).then(|| page.last().map(|s| s.id.0)).flatten();
        Ok(SnapshotPage {
            dataset: record.name,
            snapshots: page
                .into_iter()
                .map(|s| SnapshotInfo {
                    id: s.id.0,
                    parent: s.parent.map(|p| p.0),
                    visibility_token: s.visibility_token,
                    kind: s.kind,
                    file_count: s.file_count,
                    row_count: s.row_count,
                    byte_count: s.byte_count,
                    committed_at: s.committed_at,
                })
                .collect(),
            next_before,
        })
    }

    /// Readiness: the catalog answers, the object store answers, the cache is writable.
    pub async fn readiness(&self) -> Readiness {
        let limit = Duration::from_secs(3);
        let catalog = match tokio::time::timeout(limit, self.catalog().ping()).await {
            Ok(Ok(())) => Check { ok: true, error: None },
            Ok(Err(error)) => Check { ok: false, error: Some(error.to_string()) },
            Err(_) => Check { ok: false, error: Some("no answer within 3 s".into()) },
        };
        let probe = format!("{}/.readiness-probe", self.config().export_prefix);
        let store = match tokio::time::timeout(limit, self.inner.store.head(&probe)).await {
            Ok(Ok(_)) => Check { ok: true, error: None },
            Ok(Err(error)) if error.is_not_found() => Check { ok: true, error: None },
            Ok(Err(error)) => Check { ok: false, error: Some(error.to_string()) },
            Err(_) => Check { ok: false, error: Some("no answer within 3 s".into()) },
        };
        let cache_probe =
            self.inner.cache.root().join("incoming").join(format!(".ready-{}", uuid::Uuid::new_v4().simple()));
        let cache = match tokio::fs::write(&cache_probe, b"ok").await {
            Ok(()) => {
                let _ = tokio::fs::remove_file(&cache_probe).await;
                Check { ok: true, error: None }
            }
            Err(error) => Check { ok: false, error: Some(format!("{}: {error}", cache_probe.display())) },
        };
        let checks = BTreeMap::from([("catalog", catalog), ("object_store", store), ("cache", cache)]);
        Readiness { ready: checks.values().all(|check| check.ok), checks }
    }
}

fn dataset_info(record: DatasetRecord) -> DatasetInfo {
    DatasetInfo {
        namespace: record.namespace,
        name: record.name,
        current_snapshot: record.current_snapshot.map(|s| s.0),
        visibility_token: record.visibility_token,
        file_count: record.file_count,
        row_count: record.row_count,
        byte_count: record.byte_count,
        last_commit_at: record.last_commit_at,
        schema: record.schema.map(|columns| {
            columns.into_iter().map(|c| crate::model::ColumnInfo { name: c.name, data_type: c.data_type }).collect()
        }),
    }
}

fn invalid(message: &str) -> Error {
    Error::InvalidRequest { message: message.to_owned() }
}
