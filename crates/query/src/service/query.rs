//! The query path: check the SQL on DuckDB's parser, resolve the datasets it names to
//! committed snapshots (pinned or latest, behind an optional strict visibility barrier), fetch
//! their files into the local cache, and answer from a pooled, locked-down DuckDB over exactly
//! those files — inline, or exported as Parquet behind a presigned URL when the result is over
//! the caps. A query is interrupted at its deadline or when its request is dropped.

use super::pool::{PooledEngine, PooledView};
use super::{QueryService, invalid};
use crate::auth::Principal;
use crate::engine::{Body, Caps, DatasetView, EngineSettings, Outcome, Sandbox};
use crate::error::{Error, Result};
use crate::metrics::{Barrier, QueryKind, QueryObservation, QueryResult};
use crate::model::{ExportInfo, Format, QueryRequest, QueryResponse};
use crate::sql;
use duckdb::InterruptHandle;
use duckmesh_catalog::{DatasetRecord, FileRecord};
use duckmesh_core::{DatasetId, SnapshotId};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

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

/// One dataset of a query, resolved.
#[derive(Debug)]
struct Resolved {
    record: DatasetRecord,
    pin: Option<SnapshotId>,
}

impl QueryService {
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
        self.api_metrics().observe_query(QueryObservation {
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
        let config = self.config();
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
                    let snapshot = self.catalog().snapshot(record.id, pin).await.map_err(|error| match error {
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
                Some(id) => self.catalog().snapshot_files(record.id, id).await?,
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
        let scope = format!("{}\n{namespace}", principal.tenant);
        let wanted = pooled_views(views, &all_files, &view_files);
        let (engine, files_downloaded) = match self.inner.engines.find(&scope, &wanted) {
            Some(engine) => (engine, 0),
            None => {
                // A new database also takes over the views of the tenant's most recent one.
                let mut pooled = wanted;
                pooled.extend(self.inner.engines.companions(&scope, &pooled));
                let files: Vec<FileRecord> = pooled.iter().flat_map(|view| view.files.iter().cloned()).collect();
                let held = tokio::time::timeout_at(
                    deadline,
                    self.inner.cache.fetch_all(self.inner.store.as_ref(), &files, config.download_concurrency),
                )
                .await
                .map_err(|_| Error::QueryTimeout { limit_ms: millis(timeout) })??;
                let mut paths = held.paths.iter();
                let views: Vec<DatasetView> = pooled
                    .iter()
                    .map(|view| DatasetView {
                        files: paths.by_ref().take(view.files.len()).cloned().collect(),
                        ..view.view.clone()
                    })
                    .collect();
                let work = tempfile::Builder::new()
                    .prefix("duckmesh-query-")
                    .tempdir_in(&config.work_dir)
                    .map_err(|error| Error::io("creating the query's scratch directory", &config.work_dir, error))?;
                let dir = work.path().to_owned();
                let sandbox = tokio::task::spawn_blocking(move || Sandbox::open(settings, &views, &dir))
                    .await
                    .map_err(|error| Error::Internal { message: format!("the engine thread failed: {error}") })??;
                let downloaded = held.downloaded;
                let key = engine_key(&scope, &pooled);
                let engine =
                    Arc::new(PooledEngine { sandbox: Mutex::new(sandbox), scope, views: pooled, _files: held, work });
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
        let limits = self.config().sql_limits;
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
            let record = self.shared().find_dataset(principal, namespace, table).await?;
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
                self.config().max_barrier_waiters
            ),
            retry_after: Duration::from_secs(1),
        })?;
        let mut listener = self.catalog().listen_commits().await?;
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
            let wake = (now + self.config().barrier_recheck).min(deadline);
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
            dataset.record = self.catalog().dataset(dataset.record.id).await?;
        }
        Ok(())
    }

    /// The unpinned datasets not yet visible at `token`, with their current tokens: a dataset
    /// is visible at `token` once its token reached it and no acknowledged ingest record
    /// promised at or below it is still waiting for its commit.
    async fn lagging(&self, datasets: &[Resolved], token: i64) -> Result<Vec<(String, i64)>> {
        let mut behind = Vec::new();
        for dataset in datasets.iter().filter(|d| d.pin.is_none()) {
            if !self.catalog().visible_at(dataset.record.id, token).await? {
                let current = self.catalog().dataset(dataset.record.id).await?;
                behind.push((current.name, current.visibility_token));
            }
        }
        Ok(behind)
    }
}

/// The identity of a database's views: tenant, then each view's name with its files' hashes
/// (or its declared schema when it has no files).
/// The query's views with their files and what identifies them: the files' hashes, or the
/// schema of a dataset without files.
fn pooled_views(views: Vec<DatasetView>, files: &[FileRecord], counts: &[usize]) -> Vec<PooledView> {
    let mut files = files.iter();
    views
        .into_iter()
        .zip(counts)
        .map(|(view, count)| {
            let files: Vec<FileRecord> = files.by_ref().take(*count).cloned().collect();
            let signature = if files.is_empty() {
                serde_json::to_string(&view.schema).unwrap_or_default()
            } else {
                files.iter().map(|file| file.sha256.as_str()).collect::<Vec<_>>().join(",")
            };
            PooledView { view, files, signature }
        })
        .collect()
}

/// The pool key of a database of `scope` with `views` (unique per set of views and files).
fn engine_key(scope: &str, views: &[PooledView]) -> String {
    let mut parts: Vec<String> = views.iter().map(|view| format!("{}={}", view.view.name, view.signature)).collect();
    parts.sort();
    format!("{scope}\n{}", parts.join("\n"))
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

/// A checked query: its text, and for a `PIVOT` whose values come from the data, what
/// completes it.
struct Statement {
    sql: String,
    pivot: Option<duckmesh_core::pivot::DynamicPivot>,
    max_pivot_columns: usize,
}

/// Runs the query on a new connection of `engine` on a blocking thread, interrupting DuckDB at
/// `deadline` or when the request is dropped. At the deadline the answer is a timeout at once,
/// and the slot is released with it: DuckDB cannot be interrupted while it binds, so the thread
/// may need a moment to notice.
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
