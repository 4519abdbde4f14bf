//! The query service: resolve the datasets a query names to committed snapshots (pinned or
//! latest, behind an optional strict visibility barrier), fetch their files into the local
//! cache, and answer from a locked-down DuckDB over exactly those files — inline, or exported
//! as Parquet behind a presigned URL when the result is over the caps.

use crate::auth::Principal;
use crate::cache::{CacheStats, FileCache, HeldFiles};
use crate::config::QueryConfig;
use crate::engine::{Body, Caps, DatasetView, EngineSettings, Outcome, Sandbox};
use crate::error::{Error, Result};
use crate::ingest::{IngestResponse, IngestSettings};
use crate::limits::{Admission, RateLimiter};
use crate::metrics::{ApiMetrics, Barrier, IngestResult, QueryKind, QueryObservation, QueryResult};
use crate::model::{
    DatasetInfo, DatasetList, ExportInfo, Format, QueryRequest, QueryResponse, SnapshotInfo, SnapshotPage,
};
use crate::sql;
use duckdb::{Connection, InterruptHandle};
use duckmesh_catalog::{Catalog, DatasetRecord, FileRecord, IngestRequest};
use duckmesh_core::{DatasetId, SnapshotId};
use duckmesh_storage::ObjectStore;
use duckmesh_telemetry::Metrics;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The query service. Cheap to clone; every clone shares caches, limits and slots.
#[derive(Debug, Clone)]
pub struct QueryService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    catalog: Catalog,
    store: Arc<dyn ObjectStore>,
    /// The process registry, served on `/metrics`.
    registry: Metrics,
    metrics: ApiMetrics,
    config: QueryConfig,
    cache: FileCache,
    admission: Admission,
    barrier_waiters: Arc<Semaphore>,
    rate_limiter: RateLimiter,
    engines: EnginePool,
    /// A locked-down database used only to run DuckDB's parser on incoming SQL.
    parser: Mutex<Connection>,
}

/// A finished query: the metadata (with the rows in `json` format) and, for `csv` and
/// `arrow`, the body.
#[derive(Debug)]
pub struct QueryAnswer {
    /// Metadata, and the rows for `json` (or an exported result in any format).
    pub response: QueryResponse,
    /// The CSV or Arrow body when the result is inline in those formats.
    pub body: Option<RawBody>,
}

/// A non-JSON inline body.
#[derive(Debug)]
pub enum RawBody {
    /// `text/csv`.
    Csv(String),
    /// `application/vnd.apache.arrow.stream`.
    Arrow(Vec<u8>),
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

/// Locked-down databases kept for reuse, keyed by tenant and the exact files of their views
/// (snapshots are immutable, so an entry never goes stale). Each holds its files in the cache
/// and its scratch directory; a query takes a fresh connection on it.
#[derive(Debug)]
struct EnginePool {
    capacity: usize,
    entries: Mutex<lru::LruCache<String, Arc<PooledEngine>>>,
}

#[derive(Debug)]
struct PooledEngine {
    sandbox: Mutex<Sandbox>,
    // Dropped after the sandbox: the database closes, then its files and directory go.
    _files: HeldFiles,
    work: tempfile::TempDir,
}

impl EnginePool {
    fn get(&self, key: &str) -> Option<Arc<PooledEngine>> {
        if self.capacity == 0 {
            return None;
        }
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(key).cloned()
    }

    fn put(&self, key: String, engine: Arc<PooledEngine>) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.put(key, engine);
        while entries.len() > self.capacity {
            entries.pop_lru();
        }
    }
}

/// One dataset of a query, resolved.
#[derive(Debug)]
struct Resolved {
    record: DatasetRecord,
    pin: Option<SnapshotId>,
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
                rate_limiter: RateLimiter::new(config.rate_limits),
                engines: EnginePool { capacity: config.engine_pool, entries: Mutex::new(lru::LruCache::unbounded()) },
                catalog,
                store,
                metrics: ApiMetrics::new(&metrics),
                registry: metrics,
                cache,
                parser: Mutex::new(parser),
                config,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &QueryConfig {
        &self.inner.config
    }

    /// The catalog.
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The process's metrics registry (every component's metrics, served on `/metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.registry
    }

    /// The metrics this service records.
    pub fn api_metrics(&self) -> &ApiMetrics {
        &self.inner.metrics
    }

    /// File cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// The request-rate limiters.
    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.inner.rate_limiter
    }

    /// Runs one query for `principal` and records it in the metrics.
    pub async fn query(&self, principal: &Principal, request: QueryRequest, kind: QueryKind) -> Result<QueryAnswer> {
        let started = Instant::now();
        let barrier = if request.min_visibility_token.is_some() { Barrier::Strict } else { Barrier::None };
        let query_id = uuid::Uuid::new_v4().simple().to_string();
        let result = self.run(principal, request, kind, started, &query_id).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (result_label, files, bytes) = match &result {
            Ok(answer) => (QueryResult::Ok, answer.response.files_scanned, answer.response.bytes_scanned),
            Err(error) => {
                let label = match error.status() {
                    429 => QueryResult::Throttled,
                    504 => QueryResult::Timeout,
                    status if status < 500 => QueryResult::Rejected,
                    _ => QueryResult::Error,
                };
                (label, 0, 0)
            }
        };
        self.inner.metrics.observe_query(QueryObservation {
            kind,
            barrier,
            result: result_label,
            barrier_timed_out: matches!(result, Err(Error::ConsistencyTimeout { .. })),
            latency_ms,
            scanned_files: files,
            scanned_bytes: bytes,
        });
        match &result {
            Ok(answer) => tracing::info!(
                query_id,
                tenant_id = %principal.tenant,
                user = %principal.user,
                kind = kind.as_str(),
                rows = answer.response.row_count,
                files = answer.response.files_scanned,
                downloaded = answer.response.files_downloaded,
                exported = answer.response.exported,
                elapsed_ms = latency_ms as u64,
                "query answered"
            ),
            Err(error) if error.is_client_error() => tracing::info!(
                query_id, tenant_id = %principal.tenant, error_code = error.error_code(), %error, "query refused"
            ),
            Err(error) => tracing::warn!(
                query_id, tenant_id = %principal.tenant, error_code = error.error_code(), %error, "query failed"
            ),
        }
        result
    }

    async fn run(
        &self,
        principal: &Principal,
        request: QueryRequest,
        kind: QueryKind,
        started: Instant,
        query_id: &str,
    ) -> Result<QueryAnswer> {
        let config = &self.inner.config;
        let limit = match kind {
            QueryKind::Interactive => config.user_timeout,
            QueryKind::Task => config.task_timeout,
        };
        let timeout = match request.timeout_ms {
            Some(ms) if ms <= 0 => return Err(invalid("timeout_ms must be positive")),
            Some(ms) => Duration::from_millis(ms.unsigned_abs()).min(limit),
            None => limit,
        };
        let deadline = started + timeout;
        let format = request.format.unwrap_or_default();
        if request.sql.trim().is_empty() {
            return Err(invalid("sql is empty"));
        }
        let namespace = request.namespace.clone().unwrap_or_else(|| config.namespace.clone());

        let analysis = self.analyze(&request.sql, deadline).await.map_err(|error| match error {
            Error::QueryTimeout { .. } => Error::QueryTimeout { limit_ms: millis(timeout) },
            other => other,
        })?;
        let mut datasets = self.resolve(principal, &namespace, &analysis.tables, &request.snapshots).await?;
        if let Some(token) = request.min_visibility_token {
            self.barrier(&mut datasets, token, started, deadline).await?;
        }

        // Pin every dataset to one snapshot and list its files.
        let mut snapshots = BTreeMap::new();
        let mut tokens = BTreeMap::new();
        let mut views = Vec::new();
        let mut all_files: Vec<FileRecord> = Vec::new();
        let mut view_files = Vec::new();
        for dataset in &datasets {
            let record = &dataset.record;
            let (snapshot, token) = match dataset.pin {
                Some(pin) => {
                    let snapshot = self.inner.catalog.snapshot(record.id, pin).await.map_err(|error| match error {
                        duckmesh_catalog::Error::NotFound { .. } => {
                            Error::SnapshotNotFound { dataset: record.name.clone(), snapshot: pin.0 }
                        }
                        other => other.into(),
                    })?;
                    (Some(pin), snapshot.visibility_token)
                }
                None => (record.current_snapshot, record.visibility_token),
            };
            let files = match snapshot {
                Some(id) => self.inner.catalog.snapshot_files(record.id, id).await?,
                None => Vec::new(),
            };
            snapshots.insert(record.name.clone(), snapshot.map_or(0, |id| id.0));
            tokens.insert(record.name.clone(), token);
            view_files.push(files.len());
            views.push(DatasetView { name: record.name.clone(), files: Vec::new(), schema: record.schema.clone() });
            all_files.extend(files);
        }
        let files_scanned = all_files.len() as u64;
        let bytes_scanned = all_files.iter().map(|file| u64::try_from(file.bytes).unwrap_or(0)).sum();

        let _slot = self.inner.admission.admit(deadline).await?;
        let settings = EngineSettings { threads: config.threads, memory_limit_bytes: config.memory_limit_bytes };
        let caps = Caps { max_rows: config.inline_max_rows, max_bytes: config.inline_max_bytes };
        let key = engine_key(&principal.tenant, &views, &all_files, &view_files);
        let (engine, files_downloaded) = match self.inner.engines.get(&key) {
            Some(engine) => (engine, 0),
            None => {
                let held = tokio::time::timeout_at(
                    deadline,
                    self.inner.cache.fetch_all(self.inner.store.as_ref(), &all_files, config.download_concurrency),
                )
                .await
                .map_err(|_| Error::QueryTimeout { limit_ms: millis(timeout) })??;
                let mut paths = held.paths.iter();
                for (view, count) in views.iter_mut().zip(view_files) {
                    view.files = paths.by_ref().take(count).cloned().collect();
                }
                let work = tempfile::Builder::new()
                    .prefix("duckmesh-query-")
                    .tempdir_in(&config.work_dir)
                    .map_err(|error| Error::io("creating the query's scratch directory", &config.work_dir, error))?;
                let dir = work.path().to_owned();
                let sandbox = tokio::task::spawn_blocking(move || Sandbox::open(settings, &views, &dir))
                    .await
                    .map_err(|error| Error::Internal { message: format!("the engine thread failed: {error}") })??;
                let downloaded = held.downloaded;
                let engine = Arc::new(PooledEngine { sandbox: Mutex::new(sandbox), _files: held, work });
                self.inner.engines.put(key, Arc::clone(&engine));
                (engine, downloaded)
            }
        };
        let statement = Statement {
            sql: request.sql,
            pivot: analysis.pivot,
            max_pivot_columns: config.sql_limits.max_select_expressions,
        };
        let outcome =
            execute(Arc::clone(&engine), statement, format, caps, deadline).await.map_err(|error| match error {
                Error::QueryTimeout { .. } => Error::QueryTimeout { limit_ms: millis(timeout) },
                other => other,
            })?;

        let mut response = QueryResponse {
            query_id: query_id.to_owned(),
            columns: Vec::new(),
            rows: Vec::new(),
            row_count: 0,
            snapshots,
            visibility_tokens: tokens,
            files_scanned,
            bytes_scanned,
            files_downloaded,
            elapsed_ms: 0,
            exported: false,
            export: None,
        };
        let mut body = None;
        match outcome {
            Outcome::Inline { columns, row_count, body: rendered } => {
                response.columns = columns;
                response.row_count = row_count;
                match rendered {
                    Body::Json(rows) => response.rows = rows,
                    Body::Csv(text) => body = Some(RawBody::Csv(text)),
                    Body::Arrow(data) => body = Some(RawBody::Arrow(data)),
                }
            }
            Outcome::Exported { columns, row_count, file } => {
                let key = format!("{}/{}/{query_id}.parquet", config.export_prefix, principal.tenant);
                let uploaded = self.inner.store.put_file(&key, &file).await;
                if let Some(dir) = file.parent().filter(|dir| dir.starts_with(engine.work.path())) {
                    let _ = tokio::fs::remove_dir_all(dir).await;
                }
                let bytes = uploaded?;
                let url = self.inner.store.presign_get(&key, config.export_ttl).await?;
                let expires_at = chrono::Utc::now()
                    + chrono::Duration::from_std(config.export_ttl).unwrap_or_else(|_| chrono::Duration::hours(1));
                response.columns = columns;
                response.row_count = row_count;
                response.exported = true;
                response.export = Some(ExportInfo { url, key, format: "parquet".into(), expires_at, row_count, bytes });
            }
        }
        response.elapsed_ms = millis(started.elapsed());
        Ok(QueryAnswer { response, body })
    }

    /// Checks `sql` (text limits, DuckDB's parser, the statement check) on a thread of its own
    /// with a deep stack, on a connection of its own that is interrupted at `deadline` or when
    /// the request is dropped.
    async fn analyze(&self, sql: &str, deadline: Instant) -> Result<sql::Analysis> {
        let limits = self.inner.config.sql_limits;
        crate::limits::check_sql_text(sql, &limits)?;
        let connection = self
            .inner
            .parser
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .try_clone()
            .map_err(|error| Error::Engine { step: "opening the parser", message: error.to_string() })?;
        let cancel = Arc::new(Cancel::default());
        cancel.set_handle(connection.interrupt_handle());
        let mut guard = CancelOnDrop(Arc::clone(&cancel), false);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let text = sql.to_owned();
        let done = Arc::clone(&cancel);
        std::thread::Builder::new()
            .name("duckmesh-parse".into())
            .stack_size(sql::PARSER_STACK_BYTES)
            .spawn(move || {
                let _ = sender.send(sql::analyze_with(&connection, &text, &limits));
                done.finish();
            })
            .map_err(|error| Error::Internal { message: format!("starting the parser thread: {error}") })?;
        let answer = tokio::time::timeout_at(deadline, receiver).await;
        guard.1 = true;
        match answer {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Internal { message: "the parser thread failed".into() }),
            Err(_elapsed) => {
                cancel.cancel();
                Err(Error::QueryTimeout { limit_ms: 0 })
            }
        }
    }

    /// Finds the datasets `tables` names for `principal` and applies `pins`.
    async fn resolve(
        &self,
        principal: &Principal,
        namespace: &str,
        tables: &[String],
        pins: &BTreeMap<String, i64>,
    ) -> Result<Vec<Resolved>> {
        let mut resolved: Vec<Resolved> = Vec::new();
        let mut names: BTreeMap<String, DatasetId> = BTreeMap::new();
        for table in tables {
            let record = self.find_dataset(principal, namespace, table).await?;
            names.insert(table.clone(), record.id);
            names.insert(record.name.clone(), record.id);
            if !resolved.iter().any(|dataset| dataset.record.id == record.id) {
                resolved.push(Resolved { record, pin: None });
            }
        }
        for (name, snapshot) in pins {
            let key = name.to_lowercase();
            let id = names
                .get(&key)
                .or_else(|| names.get(&key.replace('_', "-")))
                .ok_or_else(|| invalid(&format!("snapshot pin for {name:?}, which the query does not read")))?;
            if *snapshot <= 0 {
                return Err(invalid(&format!("snapshot pin for {name:?} must be a positive snapshot id")));
            }
            if let Some(dataset) = resolved.iter_mut().find(|dataset| dataset.record.id == *id) {
                dataset.pin = Some(SnapshotId(*snapshot));
            }
        }
        Ok(resolved)
    }

    /// A dataset of the caller's tenant by name (or by its `_` alias); anything else,
    /// including another tenant's dataset of that name, is "not found".
    async fn find_dataset(&self, principal: &Principal, namespace: &str, name: &str) -> Result<DatasetRecord> {
        let lower = name.to_lowercase();
        let mut candidates = vec![lower.clone()];
        if lower.contains('_') {
            candidates.push(lower.replace('_', "-"));
        }
        for candidate in candidates {
            match self.inner.catalog.dataset_by_name(namespace, &candidate).await {
                Ok(record) if record.tenant == principal.tenant => return Ok(record),
                Ok(_) | Err(duckmesh_catalog::Error::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::DatasetNotFound { name: name.to_owned() })
    }

    /// Waits until every unpinned dataset is visible at `token` or more, updating the records.
    /// Subscribes to commit notifications before re-reading, so no commit falls in between;
    /// re-reads on each relevant notification and every `barrier_recheck` (a lost notification).
    async fn barrier(&self, datasets: &mut [Resolved], token: i64, started: Instant, deadline: Instant) -> Result<()> {
        if self.lagging(datasets, token).await?.is_empty() {
            return self.reread_heads(datasets).await;
        }
        let _waiter = Arc::clone(&self.inner.barrier_waiters).try_acquire_owned().map_err(|_| Error::Overloaded {
            message: format!(
                "{} queries are already waiting for a visibility barrier",
                self.inner.config.max_barrier_waiters
            ),
            retry_after: Duration::from_secs(1),
        })?;
        let mut listener = self.inner.catalog.listen_commits().await?;
        loop {
            let behind = self.lagging(datasets, token).await?;
            if behind.is_empty() {
                return self.reread_heads(datasets).await;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::ConsistencyTimeout {
                    token,
                    waited_ms: millis(now - started),
                    lagging: behind.iter().map(|(name, at)| format!("{name}={at}")).collect::<Vec<_>>().join(", "),
                });
            }
            let wake = (now + self.inner.config.barrier_recheck).min(deadline);
            loop {
                tokio::select! {
                    event = listener.recv() => match event {
                        Ok(event) if datasets.iter().any(|d| d.record.id == event.dataset) => break,
                        Ok(_) => continue,
                        Err(error) => {
                            tracing::warn!(%error, "commit listener failed; re-reading the catalog");
                            tokio::time::sleep_until((Instant::now() + Duration::from_millis(200)).min(wake)).await;
                            break;
                        }
                    },
                    () = tokio::time::sleep_until(wake) => break,
                }
            }
        }
    }

    /// Re-reads the unpinned datasets' heads after a barrier passed: the records resolved
    /// before the check may predate the commit that made it pass.
    async fn reread_heads(&self, datasets: &mut [Resolved]) -> Result<()> {
        for dataset in datasets.iter_mut().filter(|d| d.pin.is_none()) {
            dataset.record = self.inner.catalog.dataset(dataset.record.id).await?;
        }
        Ok(())
    }

    /// The unpinned datasets not yet visible at `token`, with their current tokens: a dataset
    /// is visible at `token` once its token reached it and no acknowledged ingest record
    /// promised at or below it is still waiting for its commit.
    async fn lagging(&self, datasets: &[Resolved], token: i64) -> Result<Vec<(String, i64)>> {
        let mut behind = Vec::new();
        for dataset in datasets.iter().filter(|d| d.pin.is_none()) {
            if !self.inner.catalog.visible_at(dataset.record.id, token).await? {
                let current = self.inner.catalog.dataset(dataset.record.id).await?;
                behind.push((current.name, current.visibility_token));
            }
        }
        Ok(behind)
    }

    /// Buffers the records of one `POST /v1/ingest/{dataset}` body durably and acknowledges
    /// them (all or nothing), recording the request in the ingest metrics.
    pub async fn ingest(
        &self,
        principal: &Principal,
        name: &str,
        namespace: Option<&str>,
        body: &[u8],
        traceparent: Option<&str>,
    ) -> Result<IngestResponse> {
        let started = Instant::now();
        let result = self.ingest_inner(principal, name, namespace, body, traceparent).await;
        let metrics = &self.inner.metrics;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match &result {
            Ok(ack) => {
                metrics.read_only_mode.set(0);
                metrics.observe_ingest(
                    &principal.tenant,
                    IngestResult::Accepted,
                    ack.accepted,
                    ack.duplicates,
                    elapsed_ms,
                );
                tracing::debug!(
                    tenant_id = %principal.tenant, dataset = name, accepted = ack.accepted,
                    duplicates = ack.duplicates, visibility_token = ack.visibility_token, "ingest acknowledged"
                );
            }
            Err(error) => {
                let outcome = match error {
                    Error::ReadOnly { .. } => {
                        metrics.read_only_mode.set(1);
                        IngestResult::ReadOnly
                    }
                    Error::RateLimited { .. } | Error::IngestBackpressure { .. } | Error::Overloaded { .. } => {
                        IngestResult::RateLimited
                    }
                    error if error.is_client_error() => IngestResult::Rejected,
                    _ => IngestResult::Error,
                };
                metrics.observe_ingest(&principal.tenant, outcome, 0, 0, elapsed_ms);
                if outcome == IngestResult::Error {
                    tracing::error!(tenant_id = %principal.tenant, dataset = name, error_code = error.error_code(), %error, "ingest failed");
                } else {
                    tracing::info!(tenant_id = %principal.tenant, dataset = name, error_code = error.error_code(), %error, "ingest refused");
                }
            }
        }
        result
    }

    async fn ingest_inner(
        &self,
        principal: &Principal,
        name: &str,
        namespace: Option<&str>,
        body: &[u8],
        traceparent: Option<&str>,
    ) -> Result<IngestResponse> {
        let config = &self.inner.config;
        if config.read_only {
            return Err(Error::ReadOnly { reason: Some("DUCKMESH_READ_ONLY is set on this API process".into()) });
        }
        let namespace = namespace.unwrap_or(&config.namespace);
        let record = self.find_dataset(principal, namespace, name).await?;
        let schema = record.schema.clone().filter(|columns| !columns.is_empty());
        let Some(schema) = schema else {
            return Err(Error::SchemaRequired { name: record.name.clone() });
        };
        let settings = IngestSettings::from_spec(&record.spec);
        let parsed = crate::ingest::parse_body(body, config.ingest.max_records)?;
        let records = crate::ingest::prepare(parsed, &schema, settings.dedupe_key.as_deref())?;
        let per_minute = match settings.rate_limit_per_minute {
            Some(n) => std::num::NonZeroU32::new(n),
            None => config.ingest.records_per_minute,
        };
        self.inner.rate_limiter.check_ingest(&principal.tenant, record.id.0, per_minute, records.len())?;
        let request = IngestRequest {
            dataset: record.id,
            tenant: &principal.tenant,
            records: &records,
            traceparent,
            max_pending: Some(settings.max_pending_records.unwrap_or(config.ingest.max_pending)),
        };
        let ack = self.inner.catalog.ingest(request).await.map_err(|error| match error {
            duckmesh_catalog::Error::ReadOnly { reason } => Error::ReadOnly { reason },
            duckmesh_catalog::Error::BufferFull { pending, limit, .. } => Error::IngestBackpressure {
                name: record.name.clone(),
                pending,
                limit,
                retry_after: Duration::from_secs(1),
            },
            duckmesh_catalog::Error::Invalid { message, .. } => Error::InvalidRequest { message },
            other => other.into(),
        })?;
        Ok(IngestResponse {
            accepted: ack.accepted,
            duplicates: ack.duplicates,
            visibility_token: ack.visibility_token,
            dataset: record.name,
            namespace: record.namespace,
        })
    }

    /// The caller tenant's datasets.
    pub async fn datasets(&self, principal: &Principal) -> Result<DatasetList> {
        let records = self.inner.catalog.datasets(Some(&principal.tenant)).await?;
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
        let namespace = namespace.unwrap_or(&self.inner.config.namespace);
        let record = self.find_dataset(principal, namespace, name).await?;
        let limit = limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(invalid("limit must be from 1 to 1000"));
        }
        let page = self.inner.catalog.snapshots(record.id, before.map(SnapshotId), limit).await?;
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
        let catalog = match tokio::time::timeout(limit, self.inner.catalog.ping()).await {
            Ok(Ok(())) => Check { ok: true, error: None },
            Ok(Err(error)) => Check { ok: false, error: Some(error.to_string()) },
            Err(_) => Check { ok: false, error: Some("no answer within 3 s".into()) },
        };
        let probe = format!("{}/.readiness-probe", self.inner.config.export_prefix);
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

/// The identity of a database's views: tenant, then each view's name with its files' hashes
/// (or its declared schema when it has no files).
fn engine_key(tenant: &str, views: &[DatasetView], files: &[FileRecord], counts: &[usize]) -> String {
    let mut key = format!("{tenant}\n");
    let mut files = files.iter();
    for (view, count) in views.iter().zip(counts) {
        key.push_str(&view.name);
        key.push('=');
        for file in files.by_ref().take(*count) {
            key.push_str(&file.sha256);
            key.push(',');
        }
        if *count == 0 {
            key.push_str(&serde_json::to_string(&view.schema).unwrap_or_default());
        }
        key.push('\n');
    }
    key
}

fn invalid(message: &str) -> Error {
    Error::InvalidRequest { message: message.to_owned() }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Stops a query's DuckDB: on the deadline, or when the request is dropped (client gone).
/// DuckDB forgets an interrupt that arrives between two statements, so once cancelled the
/// handle is interrupted again and again until the blocking thread has [`Cancel::finish`]ed,
/// and [`Sandbox::run_until`] stops between statements on its own.
#[derive(Default)]
struct Cancel {
    cancelled: AtomicBool,
    finished: AtomicBool,
    handle: Mutex<Option<Arc<InterruptHandle>>>,
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel").field("cancelled", &self.is_cancelled()).finish_non_exhaustive()
    }
}

impl Cancel {
    fn set_handle(&self, handle: Arc<InterruptHandle>) {
        *self.handle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(handle);
    }

    fn interrupt(&self) {
        if let Some(handle) = self.handle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).as_ref() {
            handle.interrupt();
        }
    }

    /// Marks the query cancelled and interrupts it until its thread finishes.
    fn cancel(self: &Arc<Self>) {
        if self.cancelled.swap(true, Ordering::SeqCst) {
            return;
        }
        self.interrupt();
        if self.is_finished() {
            return;
        }
        let cancel = Arc::clone(self);
        let repeat = async move {
            while !cancel.is_finished() {
                cancel.interrupt();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(repeat);
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Called by the blocking thread when it is done with DuckDB.
    fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
    }

    fn is_finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }
}

struct CancelOnDrop(Arc<Cancel>, bool);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.1 {
            self.0.cancel();
        }
    }
}

/// Runs the query on a new connection of `engine` on a blocking thread, interrupting DuckDB at
/// `deadline` or when the request is dropped. At the deadline the answer is a timeout at once,
/// and the slot is released with it: DuckDB cannot be interrupted while it binds, so the thread
/// may need a moment to notice.
/// A checked query: its text, and for a `PIVOT` whose values come from the data, what
/// completes it.
struct Statement {
    sql: String,
    pivot: Option<duckmesh_core::pivot::DynamicPivot>,
    max_pivot_columns: usize,
}

async fn execute(
    engine: Arc<PooledEngine>,
    statement: Statement,
    format: Format,
    caps: Caps,
    deadline: Instant,
) -> Result<Outcome> {
    let cancel = Arc::new(Cancel::default());
    let mut guard = CancelOnDrop(Arc::clone(&cancel), false);
    let worker_cancel = Arc::clone(&cancel);
    let mut join = tokio::task::spawn_blocking(move || {
        let result = (|| {
            let session = engine.sandbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).session()?;
            worker_cancel.set_handle(session.interrupt_handle());
            let stopped = || worker_cancel.is_cancelled();
            let sql = match &statement.pivot {
                Some(pivot) => session.complete_pivot(pivot, statement.max_pivot_columns, &stopped)?,
                None => statement.sql,
            };
            session.run_until(&sql, format, caps, &stopped)
        })();
        worker_cancel.finish();
        result
    });
    let joined = tokio::select! {
        joined = &mut join => joined,
        () = tokio::time::sleep_until(deadline) => {
            guard.1 = true;
            cancel.cancel();
            return Err(Error::QueryTimeout { limit_ms: 0 });
        }
    };
    guard.1 = true;
    let timed_out = cancel.is_cancelled();
    match joined {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(_)) if timed_out => Err(Error::QueryTimeout { limit_ms: 0 }),
        Ok(Err(error)) => Err(error),
        Err(join_error) => Err(Error::Internal { message: format!("the query thread failed: {join_error}") }),
    }
}
