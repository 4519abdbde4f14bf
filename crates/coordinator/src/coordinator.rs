//! The coordinator loop and one batch from claim to commit.
//!
//! A batch is claimed (leased and fenced) in the catalog, converted and written as Parquet
//! under `<dataset>/ingest/<fence>/` with a manifest, and committed by one fenced catalog
//! transaction that also parks the poison records. Any failure before the commit gives the
//! batch back (or leaves it to its lease); a commit refused because the claim was lost is never
//! retried, since the events may belong to another coordinator by then. Files of a batch that
//! did not commit are never referenced and are left for GC.

use crate::config::CoordinatorConfig;
use crate::convert::{self, Conversion, Plan};
use crate::error::{Error, Result};
use crate::manifest::{INGEST_MANIFEST_FORMAT, IngestManifest, ManifestEvents};
use crate::metrics::{
    ClaimRetryLabels, ClaimRetryReason, CoordinatorMetrics, DeadLetterLabels, DeadLetterReason, PublishFailureLabels,
    PublishFailureReason,
};
use crate::outbox::{OutboxDispatcher, OutboxOptions};
use duckmesh_catalog::{
    Catalog, ClaimOptions, ClaimedBatch, DatasetRecord, IngestCommit, IngestCommitted, NewFile, PoisonEvent,
};
use duckmesh_contracts::manifest::{ManifestDataset, ManifestFile};
use duckmesh_core::{DatasetId, Fence, SnapshotId};
use duckmesh_engine::ExportedFile;
use duckmesh_storage::{ObjectStore, layout};
use duckmesh_telemetry::Metrics;
use futures::{StreamExt, TryStreamExt};
use sqlx::postgres::PgListener;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field};

/// Parallel uploads per batch.
const UPLOAD_CONCURRENCY: usize = 4;
/// Commit attempts after a transient catalog failure, while the claim's lease lasts.
const COMMIT_RETRIES: u32 = 3;
/// Trace links from a batch's span to the ingest requests of its events, at most.
const MAX_TRACE_LINKS: usize = 32;
/// First and longest pause after a failed batch.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReport {
    /// The dataset written.
    pub dataset: DatasetId,
    /// The claim's fencing token (the batch's directory is `<dataset>/ingest/<fence>/`).
    pub fence: Fence,
    /// Events whose rows were committed.
    pub committed: u64,
    /// Events parked in the dead-letter table.
    pub dead_lettered: u64,
    /// The new snapshot (`None` when every event was dead-lettered).
    pub snapshot: Option<SnapshotId>,
    /// The dataset's visibility token after the commit (`None` without a snapshot).
    pub visibility_token: Option<i64>,
    /// Parquet files committed.
    pub files: usize,
    /// Rows committed.
    pub rows: i64,
    /// Where the manifest was written (`None` without files).
    pub manifest_path: Option<String>,
}

/// The ingest coordinator: turns pending ingest events into committed Parquet snapshots,
/// exactly once. Cheap to clone; any number of replicas may run against one catalog.
#[derive(Debug, Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    catalog: Catalog,
    store: Arc<dyn ObjectStore>,
    /// The process registry, served on `/metrics`.
    registry: Metrics,
    metrics: CoordinatorMetrics,
    config: CoordinatorConfig,
    /// The read-only state last seen, to log its changes once.
    read_only: AtomicBool,
}

/// A batch written and ready to commit.
#[derive(Debug, Default)]
struct Staged {
    committed: Vec<i64>,
    poison: Vec<PoisonEvent>,
    files: Vec<NewFile>,
    manifest_path: Option<String>,
}

impl Staged {
    /// Nothing written: every event is parked.
    fn parked(poison: Vec<PoisonEvent>) -> Self {
        Self { poison, ..Self::default() }
    }
}

/// What to do after a refused or failed commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// The claim is gone: never retry, never release (the events may be someone else's).
    Abandon,
    /// Nothing was committed: give the batch back so it is claimed again soon.
    Release,
    /// The outcome is unknown (the connection failed mid-call): find out whether it landed.
    Recheck,
}

/// The metric reason and the follow-up of a failed `commit_ingest` (pure).
pub(crate) fn classify_commit_failure(error: &duckmesh_catalog::Error) -> (PublishFailureReason, AfterFailure) {
    use duckmesh_catalog::Error as E;
    match error {
        E::ClaimLost { .. } => (PublishFailureReason::FenceRejected, AfterFailure::Abandon),
        E::ReadOnly { .. } => (PublishFailureReason::ReadOnly, AfterFailure::Release),
        // The dataset's schema changed between reading it and committing: convert again.
        E::SchemaMismatch { .. } => (PublishFailureReason::Conflict, AfterFailure::Release),
        other if other.is_retryable() => (PublishFailureReason::CatalogError, AfterFailure::Recheck),
        _ => (PublishFailureReason::CatalogError, AfterFailure::Release),
    }
}

/// The `claim_retries` reason of a failed claim (pure).
pub(crate) fn claim_retry_reason(error: &duckmesh_catalog::Error) -> ClaimRetryReason {
    match error {
        duckmesh_catalog::Error::Database { source: sqlx::Error::Database(db) }
            if matches!(db.code().as_deref(), Some("40001" | "40P01" | "55P03")) =>
        {
            ClaimRetryReason::Contention
        }
        _ => ClaimRetryReason::CatalogError,
    }
}

/// The run loop's pauses after failures: `BACKOFF_BASE` doubling to `BACKOFF_MAX`, for ever
/// (`backon`; a success starts a fresh series).
fn pauses() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::new()
        .with_min_delay(BACKOFF_BASE)
        .with_max_delay(BACKOFF_MAX)
        .with_factor(2.0)
        .without_max_times()
        .build()
}

/// Why the loop woke up.
enum Wake {
    Notified,
    Timeout,
    Stopped,
}

impl Coordinator {
    /// A coordinator over `catalog` (events, claims, commits) and `store` (Parquet, manifests).
    pub fn new(catalog: Catalog, store: Arc<dyn ObjectStore>, metrics: Metrics, config: CoordinatorConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                catalog,
                store,
                metrics: CoordinatorMetrics::new(&metrics),
                registry: metrics,
                config,
                read_only: AtomicBool::new(false),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.inner.config
    }

    /// The catalog it commits to.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The process's metrics registry (every component's metrics, served on `/metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.registry
    }

    /// The metrics it records.
    pub fn coordinator_metrics(&self) -> &CoordinatorMetrics {
        &self.inner.metrics
    }

    /// Runs until `stop`: wakes on ingest notifications (then lingers so a batch can fill) or
    /// every poll interval, refreshes the backlog gauges, and claims and commits batches until
    /// none is left. A batch in hand when `stop` fires is finished first. Failures are logged
    /// and followed by a growing pause; only an unusable work directory ends the loop early.
    ///
    /// Alongside, it runs the catalog's outbox dispatcher ([`crate::outbox`]): every
    /// coordinator has the store the commit records go to, in a cluster and in `duckmesh dev`
    /// alike, and any number of dispatchers may run.
    pub async fn run(&self, stop: CancellationToken) -> Result<()> {
        let work_dir = &self.inner.config.work_dir;
        std::fs::create_dir_all(work_dir).map_err(|error| Error::io("creating the work directory", work_dir, error))?;
        let dispatcher =
            OutboxDispatcher::new(self.inner.catalog.clone(), Arc::clone(&self.inner.store), OutboxOptions::default());
        let outbox_stop = stop.child_token();
        let dispatching = tokio::spawn({
            let stop = outbox_stop.clone();
            async move { dispatcher.run(stop).await }
        });
        self.claim_loop(&stop).await;
        outbox_stop.cancel();
        if let Err(error) = dispatching.await {
            tracing::warn!(%error, "the outbox dispatcher stopped unexpectedly");
        }
        Ok(())
    }

    async fn claim_loop(&self, stop: &CancellationToken) {
        let mut listener = self.listen().await;
        let mut backoff = pauses();
        tracing::info!(coordinator = %self.inner.config.identity, "ingest coordinator started");
        while !stop.is_cancelled() {
            self.refresh_backlog().await;
            let mut failed = false;
            let mut committed = false;
            while !stop.is_cancelled() {
                match self.run_once().await {
                    Ok(Some(_)) => {
                        backoff = pauses();
                        committed = true;
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::warn!(error_code = error.error_code(), error = %error, "ingest batch failed");
                        failed = true;
                        break;
                    }
                }
            }
            if committed {
                // The gauge shows the drained backlog at once, not at the next wake-up.
                self.refresh_backlog_gauge().await;
            }
            if failed {
                let pause = backoff.next().unwrap_or(BACKOFF_MAX);
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
            match self.wait(&mut listener, stop).await {
                Wake::Stopped => break,
                Wake::Timeout => {}
                Wake::Notified => {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(self.inner.config.linger) => {}
                    }
                    // The notifications that arrived while lingering are answered by this pass.
                    if let Some(listener) = listener.as_mut() {
                        while listener.next_buffered().is_some() {}
                    }
                }
            }
        }
        tracing::info!(coordinator = %self.inner.config.identity, "ingest coordinator stopped");
    }

    /// Claims and processes exactly one batch; `None` when nothing is pending or read-only
    /// mode is on. Failures come back after the batch was given back or left to its lease.
    pub async fn run_once(&self) -> Result<Option<BatchReport>> {
        if self.refresh_read_only().await? {
            return Ok(None);
        }
        let claimed_at = Instant::now();
        let Some(batch) = self.claim().await? else {
            return Ok(None);
        };
        let span = tracing::info_span!(
            "ingest_batch",
            coordinator = %self.inner.config.identity,
            dataset_id = batch.dataset.0,
            fence = batch.fence.0,
            events = batch.events.len(),
            dataset = field::Empty,
            tenant_id = field::Empty,
        );
        let traceparents: BTreeSet<&str> = batch.events.iter().filter_map(|e| e.traceparent.as_deref()).collect();
        for traceparent in traceparents.into_iter().take(MAX_TRACE_LINKS) {
            duckmesh_telemetry::link_to_traceparent(&span, traceparent);
        }
        self.process(&batch, claimed_at).instrument(span).await.map(Some)
    }

    /// Refreshes `ingest_lag_events` and samples `visibility_lag_ms`.
    pub async fn refresh_backlog(&self) {
        match self.inner.catalog.ingest_backlog().await {
            Ok(backlog) => {
                let freshness = &self.inner.metrics.freshness;
                freshness.ingest_lag_events.set(backlog.pending);
                freshness.visibility_lag_ms.observe(backlog.oldest_pending_ms as f64);
            }
            Err(error) => {
                tracing::warn!(error_code = error.error_code(), error = %error, "cannot read the ingest backlog");
            }
        }
    }

    /// Refreshes `ingest_lag_events` only (`visibility_lag_ms` is sampled once per pass).
    async fn refresh_backlog_gauge(&self) {
        if let Ok(backlog) = self.inner.catalog.ingest_backlog().await {
            self.inner.metrics.freshness.ingest_lag_events.set(backlog.pending);
        }
    }

    /// Whether read-only mode is on (the process override or the catalog switch); sets the
    /// `read_only_mode` gauge and logs changes.
    async fn refresh_read_only(&self) -> Result<bool> {
        let (enabled, reason) = if self.inner.config.read_only {
            (true, Some("DUCKMESH_READ_ONLY is set for this process".to_owned()))
        } else {
            let state = match self.inner.catalog.read_only().await {
                Ok(state) => state,
                Err(error) => {
                    // The check is a claim's first step: a catalog that cannot answer it (down,
                    // restarting) shows in claim_retries as a failed claim does.
                    let reason = claim_retry_reason(&error);
                    self.inner.metrics.batches.claim_retries.get_or_create(&ClaimRetryLabels { reason }).inc();
                    return Err(Error::catalog("reading the read-only switch")(error));
                }
            };
            (state.enabled, state.reason)
        };
        self.inner.metrics.read_only_mode.set(i64::from(enabled));
        if self.inner.read_only.swap(enabled, Ordering::SeqCst) != enabled {
            if enabled {
                tracing::warn!(reason = reason.as_deref().unwrap_or(""), "read-only mode is on: not claiming ingest");
            } else {
                tracing::info!("read-only mode is off: claiming ingest again");
            }
        }
        Ok(enabled)
    }

    async fn listen(&self) -> Option<PgListener> {
        let connect = self.inner.catalog.listen_ingest();
        match tokio::time::timeout(self.inner.config.poll_interval.max(Duration::from_secs(1)), connect).await {
            Ok(Ok(listener)) => Some(listener),
            Ok(Err(error)) => {
                tracing::warn!(error_code = error.error_code(), error = %error, "cannot listen for ingest; polling");
                None
            }
            Err(_) => {
                tracing::warn!("listening for ingest timed out; polling");
                None
            }
        }
    }

    /// Waits for a notification, the poll interval, or `stop`.
    async fn wait(&self, listener: &mut Option<PgListener>, stop: &CancellationToken) -> Wake {
        if listener.is_none() {
            *listener = self.listen().await;
        }
        let poll = self.inner.config.poll_interval;
        let notified = async {
            match listener.as_mut() {
                Some(active) => match active.recv().await {
                    Ok(_) => true,
                    Err(error) => {
                        tracing::warn!(error = %error, "ingest notifications failed; polling");
                        *listener = None;
                        tokio::time::sleep(poll).await;
                        false
                    }
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => Wake::Stopped,
            woke = notified => if woke { Wake::Notified } else { Wake::Timeout },
            () = tokio::time::sleep(poll) => Wake::Timeout,
        }
    }

    async fn claim(&self) -> Result<Option<ClaimedBatch>> {
        let config = &self.inner.config;
        let options = ClaimOptions {
            max_events: config.batch_max_events,
            lease: config.claim_lease,
            max_claims: config.max_claims,
        };
        let metrics = &self.inner.metrics.batches;
        let claim = match self.inner.catalog.claim_ingest(&options).await {
            Ok(claim) => claim,
            Err(error) => {
                metrics.claim_retries.get_or_create(&ClaimRetryLabels { reason: claim_retry_reason(&error) }).inc();
                return Err(Error::catalog("claiming a batch")(error));
            }
        };
        // Counted whether or not a batch follows: parked events that were the last pending
        // ones leave no batch, and the dead-letter alert must still see them.
        if claim.exhausted > 0 {
            metrics
                .dead_letters
                .get_or_create(&DeadLetterLabels { reason: DeadLetterReason::ClaimsExhausted })
                .inc_by(claim.exhausted);
            tracing::warn!(
                exhausted = claim.exhausted,
                error_code = "claim_attempts_exhausted",
                "dead-lettered events that ran out of claims"
            );
        }
        let Some(batch) = claim.batch else {
            return Ok(None);
        };
        metrics.claim_batch_size.observe(batch.events.len() as f64);
        let reclaimed = batch.reclaimed();
        if reclaimed > 0 {
            metrics.claim_retries.get_or_create(&ClaimRetryLabels { reason: ClaimRetryReason::LeaseLost }).inc();
            tracing::warn!(
                dataset_id = batch.dataset.0,
                fence = batch.fence.0,
                reclaimed,
                "claimed events whose earlier claim ran out (a coordinator crashed or stalled)"
            );
        }
        Ok(Some(batch))
    }

    async fn process(&self, batch: &ClaimedBatch, claimed_at: Instant) -> Result<BatchReport> {
        let dataset = match self.inner.catalog.dataset(batch.dataset).await {
            Ok(dataset) => dataset,
            Err(error) => {
                self.release(batch).await;
                return Err(Error::catalog("reading the dataset")(error));
            }
        };
        let span = tracing::Span::current();
        span.record("dataset", format!("{}/{}", dataset.namespace, dataset.name));
        span.record("tenant_id", dataset.tenant.as_str());
        let (staged, schema) = match convert::plan(&dataset) {
            Err(problem) => {
                tracing::warn!(error_code = problem.code, message = %problem.message, "the dataset cannot take ingest");
                (Staged::parked(problem.poison_all(&batch.events)), None)
            }
            Ok(plan) => match self.stage(batch, &dataset, &plan).await {
                Ok(staged) => (staged, Some(plan.columns)),
                Err(error) => {
                    if matches!(error, Error::Storage { .. }) {
                        self.publish_failure(PublishFailureReason::ObjectStoreError);
                    }
                    self.release(batch).await;
                    return Err(error);
                }
            },
        };
        if let Some(first) = staged.poison.first() {
            tracing::warn!(
                dead_lettered = staged.poison.len(),
                error_code = %first.error_code,
                seq = first.seq,
                message = %first.message,
                "dead-lettering records"
            );
        }
        self.commit(batch, staged, schema, claimed_at).await
    }

    /// Converts the batch, uploads its files and writes the manifest.
    async fn stage(&self, batch: &ClaimedBatch, dataset: &DatasetRecord, plan: &Plan) -> Result<Staged> {
        let work_dir = &self.inner.config.work_dir;
        std::fs::create_dir_all(work_dir).map_err(|error| Error::io("creating the work directory", work_dir, error))?;
        let scratch = tempfile::Builder::new()
            .prefix(&format!("duckmesh-ingest-{}-", batch.fence.0))
            .tempdir_in(work_dir)
            .map_err(|error| Error::io("creating the batch's scratch directory", work_dir, error))?;
        let events = batch.events.clone();
        let blocking_plan = plan.clone();
        let directory = scratch.path().to_owned();
        let limits = convert::Limits {
            memory_limit_bytes: self.inner.config.memory_limit_bytes,
            threads: self.inner.config.threads,
        };
        let conversion =
            tokio::task::spawn_blocking(move || convert::convert(&blocking_plan, &events, &directory, limits))
                .await
                .map_err(|error| Error::Task { message: error.to_string() })??;
        let (poison, exported) = match conversion {
            Conversion::InvalidSchema(problem) => {
                tracing::warn!(error_code = problem.code, message = %problem.message, "the dataset cannot take ingest");
                return Ok(Staged::parked(problem.poison_all(&batch.events)));
            }
            Conversion::Rows { poison, files } => (poison, files),
        };
        let parked: HashSet<i64> = poison.iter().map(|p| p.seq).collect();
        let committed: Vec<i64> = batch.events.iter().map(|e| e.seq).filter(|seq| !parked.contains(seq)).collect();
        let rows: u64 = exported.iter().map(|file| file.rows).sum();
        if rows != committed.len() as u64 {
            return Err(Error::RowCountMismatch { written: rows, events: committed.len() });
        }
        if committed.is_empty() {
            return Ok(Staged::parked(poison));
        }

        let files = self.upload(&dataset.name, batch.fence, &exported).await?;
        let manifest_path =
            layout::ingest_manifest_key(&dataset.name, batch.fence.0).map_err(Error::storage("naming the manifest"))?;
        let manifest = IngestManifest {
            format: INGEST_MANIFEST_FORMAT.into(),
            dataset: ManifestDataset {
                id: dataset.id.0,
                namespace: dataset.namespace.clone(),
                name: dataset.name.clone(),
            },
            fence: batch.fence.0,
            coordinator: self.inner.config.identity.clone(),
            events: ManifestEvents {
                first_seq: committed.first().copied().unwrap_or_default(),
                last_seq: committed.last().copied().unwrap_or_default(),
                committed: committed.len() as u64,
                dead_lettered: poison.len() as u64,
            },
            schema: plan.columns.clone(),
            files: files.iter().map(ManifestFile::from).collect(),
            rows: files.iter().map(|f| f.rows).sum(),
            bytes: files.iter().map(|f| f.bytes).sum(),
            created_at: chrono::Utc::now(),
        };
        let body = serde_json::to_vec_pretty(&manifest).map_err(|source| Error::Manifest { source })?;
        self.inner.store.put(&manifest_path, body.into()).await.map_err(Error::storage("writing the manifest"))?;
        drop(scratch);
        Ok(Staged { committed, poison, files, manifest_path: Some(manifest_path) })
    }

    /// Hashes and uploads every file as `<dataset>/ingest/<fence>/[<partition dirs>/]part-<n>.parquet`.
    async fn upload(&self, dataset: &str, fence: Fence, exported: &[ExportedFile]) -> Result<Vec<NewFile>> {
        let prefix = layout::ingest_prefix(dataset, fence.0).map_err(Error::storage("naming the batch's files"))?;
        // The futures are built before they enter the stream, which keeps the batch future `Send`.
        let uploads: Vec<_> =
            exported.iter().enumerate().map(|(index, file)| self.upload_one(&prefix, index, file)).collect();
        futures::stream::iter(uploads).buffered(UPLOAD_CONCURRENCY).try_collect().await
    }

    async fn upload_one(&self, prefix: &str, index: usize, file: &ExportedFile) -> Result<NewFile> {
        let key = file.object_key(prefix, index);
        let (bytes, sha256) =
            duckmesh_storage::hash_file(&file.path).await.map_err(Error::storage("hashing a data file"))?;
        self.inner.store.put_file(&key, &file.path).await.map_err(Error::storage("uploading a data file"))?;
        Ok(file.new_file(key, bytes, sha256))
    }

    /// Commits the staged batch, handling every refusal (see [`classify_commit_failure`]).
    async fn commit(
        &self,
        batch: &ClaimedBatch,
        staged: Staged,
        schema: Option<Vec<duckmesh_catalog::Column>>,
        claimed_at: Instant,
    ) -> Result<BatchReport> {
        let request = IngestCommit {
            dataset: batch.dataset,
            fence: batch.fence,
            committed: staged.committed,
            poison: staged.poison,
            schema: if staged.files.is_empty() { None } else { schema },
            files: staged.files,
            manifest_path: staged.manifest_path,
        };
        let mut retries = 0;
        let committed = loop {
            let error = match self.inner.catalog.commit_ingest(&request).await {
                Ok(committed) => break committed,
                Err(error) => error,
            };
            let (reason, after) = classify_commit_failure(&error);
            self.publish_failure(reason);
            match after {
                AfterFailure::Abandon => {
                    // After a transient failure, "claim lost" may be our own earlier commit.
                    if retries > 0
                        && let Ok(Some(landed)) = self.inner.catalog.ingest_commit_landed(&request).await
                    {
                        break landed;
                    }
                    self.inner
                        .metrics
                        .batches
                        .claim_retries
                        .get_or_create(&ClaimRetryLabels { reason: ClaimRetryReason::LeaseLost })
                        .inc();
                    tracing::warn!(
                        error_code = error.error_code(),
                        "the claim was lost before the commit; the events will be committed by another claim"
                    );
                    return Err(Error::ClaimLost { dataset: batch.dataset, fence: batch.fence });
                }
                AfterFailure::Release => {
                    self.release(batch).await;
                    return Err(match error {
                        duckmesh_catalog::Error::ReadOnly { .. } => Error::ReadOnly,
                        other => Error::catalog("committing the batch")(other),
                    });
                }
                AfterFailure::Recheck => {
                    // The claim's lease, timed on this process's monotonic clock from before
                    // the claim was asked for (never by comparing the database's clock with
                    // ours): a retry must leave it at least 2 s to spare.
                    let lease_left = claimed_at.elapsed() + Duration::from_secs(2) < self.inner.config.claim_lease;
                    if retries < COMMIT_RETRIES && lease_left {
                        retries += 1;
                        tracing::warn!(error_code = error.error_code(), error = %error, retries, "commit failed; retrying");
                        tokio::time::sleep(BACKOFF_BASE * 2u32.pow(retries - 1)).await;
                        if let Ok(Some(landed)) = self.inner.catalog.ingest_commit_landed(&request).await {
                            break landed;
                        }
                        continue;
                    }
                    match self.inner.catalog.ingest_commit_landed(&request).await {
                        Ok(Some(landed)) => break landed,
                        Ok(None) => self.release(batch).await,
                        Err(check) => tracing::warn!(
                            error_code = check.error_code(),
                            "cannot tell whether the commit landed; leaving the claim to run out"
                        ),
                    }
                    return Err(Error::catalog("committing the batch")(error));
                }
            }
        };
        Ok(self.committed(batch, &request, committed, claimed_at))
    }

    /// Records a successful commit in metrics and logs and builds the report.
    fn committed(
        &self,
        batch: &ClaimedBatch,
        request: &IngestCommit,
        committed: IngestCommitted,
        claimed_at: Instant,
    ) -> BatchReport {
        let metrics = &self.inner.metrics;
        metrics.batches.commit_batch_latency_ms.observe(claimed_at.elapsed().as_secs_f64() * 1000.0);
        if let Some(token) = committed.visibility_token
            && token > metrics.freshness.latest_visibility_token.get()
        {
            metrics.freshness.latest_visibility_token.set(token);
        }
        for poison in &request.poison {
            let reason = DeadLetterReason::from_code(&poison.error_code);
            metrics.batches.dead_letters.get_or_create(&DeadLetterLabels { reason }).inc();
        }
        let written: HashSet<i64> = request.committed.iter().copied().collect();
        for event in batch.events.iter().filter(|event| written.contains(&event.seq)) {
            let waited = (committed.committed_at - event.received_at).num_milliseconds().max(0);
            metrics.freshness.write_to_visible_latency_ms.observe(waited as f64);
        }
        let report = BatchReport {
            dataset: batch.dataset,
            fence: batch.fence,
            committed: request.committed.len() as u64,
            dead_lettered: request.poison.len() as u64,
            snapshot: committed.snapshot,
            visibility_token: committed.visibility_token,
            files: request.files.len(),
            rows: request.files.iter().map(|f| f.rows).sum(),
            manifest_path: request.manifest_path.clone(),
        };
        tracing::info!(
            events = report.committed,
            dead_lettered = report.dead_lettered,
            snapshot = report.snapshot.map(|s| s.0),
            visibility_token = report.visibility_token,
            files = report.files,
            rows = report.rows,
            "ingest batch committed"
        );
        report
    }

    async fn release(&self, batch: &ClaimedBatch) {
        match self.inner.catalog.release_ingest_claim(batch.dataset, batch.fence).await {
            Ok(released) => tracing::info!(released, "gave the batch back"),
            Err(error) => tracing::warn!(
                error_code = error.error_code(),
                error = %error,
                "cannot give the batch back; it is claimable again when its lease runs out"
            ),
        }
    }

    fn publish_failure(&self, reason: PublishFailureReason) {
        self.inner.metrics.batches.snapshot_publish_failures.get_or_create(&PublishFailureLabels { reason }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duckmesh_catalog::Error as CatalogError;

    #[test]
    fn commit_failures_are_classified() {
        let lost = CatalogError::ClaimLost { dataset: DatasetId(1), fence: Fence(2) };
        assert_eq!(classify_commit_failure(&lost), (PublishFailureReason::FenceRejected, AfterFailure::Abandon));
        let read_only = CatalogError::ReadOnly { reason: Some("drill".into()) };
        assert_eq!(classify_commit_failure(&read_only), (PublishFailureReason::ReadOnly, AfterFailure::Release));
        let mismatch = CatalogError::SchemaMismatch { dataset: DatasetId(1), message: "x".into() };
        assert_eq!(classify_commit_failure(&mismatch), (PublishFailureReason::Conflict, AfterFailure::Release));
        let unreachable = CatalogError::from(sqlx::Error::PoolTimedOut);
        assert_eq!(classify_commit_failure(&unreachable), (PublishFailureReason::CatalogError, AfterFailure::Recheck));
        let invalid = CatalogError::Invalid { what: "ingest commit", message: "x".into() };
        assert_eq!(classify_commit_failure(&invalid), (PublishFailureReason::CatalogError, AfterFailure::Release));
    }

    #[test]
    fn claim_failures_are_classified() {
        assert_eq!(claim_retry_reason(&CatalogError::from(sqlx::Error::PoolTimedOut)), ClaimRetryReason::CatalogError);
        assert_eq!(claim_retry_reason(&CatalogError::Corrupt("x".into())), ClaimRetryReason::CatalogError);
    }

    #[test]
    fn backoff_doubles_up_to_a_cap_and_resets() {
        let mut backoff = pauses();
        let delays: Vec<Duration> = (0..9).map(|_| backoff.next().unwrap_or_default()).collect();
        assert_eq!(delays[0], BACKOFF_BASE);
        assert_eq!(delays[1], BACKOFF_BASE * 2);
        assert_eq!(delays[8], BACKOFF_MAX);
        assert_eq!(pauses().next(), Some(BACKOFF_BASE));
    }
}
