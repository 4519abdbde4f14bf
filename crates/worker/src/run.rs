//! One attempt from start to finish: confirm, heartbeat, pin and fetch inputs, run DuckDB,
//! stage Parquet and a manifest under the attempt's prefix, commit once through the catalog's
//! fenced commit, or report a classified failure.
//!
//! Whatever stops the attempt early — a heartbeat that learns the fence is stale, the timeout,
//! a stop request — goes through one [`Guard`] that interrupts DuckDB and abandons the
//! in-flight transfers at once. Nothing is committed after that; staged files stay for GC.

use crate::cache::{Fetched, FileCache, hash_file};
use crate::config::WorkerConfig;
use crate::error::{Error, Result};
use duckdb::InterruptHandle;
use duckmesh_catalog::{
    AttemptRef, Catalog, Column, CommitMode, CommitRequest, Committed, DatasetRecord, FailOutcome, Failure, NewFile,
    TaskOutput, TaskRecord, schema_difference,
};
use duckmesh_contracts::manifest::{
    MANIFEST_FORMAT, Manifest, ManifestAttempt, ManifestDataset, ManifestFile, ManifestInput, ManifestTask,
};
use duckmesh_contracts::task::{DEFAULT_TARGET_FILE_SIZE_BYTES, DatasetOptions, SqlTaskSpec};
use duckmesh_core::{AttemptId, AttemptState, Fence, SnapshotId, TaskId};
use duckmesh_engine::{Database, ExportOptions, ExportedFile, Limits, Relation};
use duckmesh_storage::{ObjectStore, layout};
use futures::{StreamExt, TryStreamExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The process exit codes of `duckmesh worker` (docs/worker.md).
pub use duckmesh_core::exit;

/// Who this worker is: the attempt it runs, as handed over by the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptIdentity {
    /// The task.
    pub task: TaskId,
    /// The attempt (lease) to run.
    pub attempt: AttemptId,
    /// The attempt's fencing token.
    pub fence: Fence,
    /// W3C trace context of the scheduler that started this attempt.
    pub traceparent: Option<String>,
}

impl AttemptIdentity {
    /// The reference presented on every fenced catalog call.
    pub fn attempt_ref(&self) -> AttemptRef {
        AttemptRef { attempt: self.attempt, fence: self.fence }
    }
}

/// What a successful attempt committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitSummary {
    /// The catalog's answer.
    pub committed: Committed,
    /// Data files committed.
    pub files: usize,
    /// Rows committed.
    pub rows: i64,
    /// Bytes committed.
    pub bytes: i64,
    /// Where the manifest was written.
    pub manifest_path: String,
    /// Input files served from the local cache.
    pub cache_hits: usize,
    /// Input files downloaded.
    pub downloads: usize,
}

/// How an attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// The output was committed.
    Committed(CommitSummary),
    /// The attempt failed; `reported` is what the catalog did with the failure, `None` when it
    /// could not be told.
    Failed {
        /// The failure.
        error: Error,
        /// The catalog's answer to `fail_attempt`.
        reported: Option<FailOutcome>,
    },
    /// The attempt lost its right to act and stopped without committing.
    Fenced(Error),
    /// The identity does not name a runnable attempt of the task; nothing was touched.
    Rejected(Error),
}

impl Outcome {
    /// The process exit code for this outcome (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Committed(_) => exit::COMMITTED,
            Self::Failed { reported: None, .. } => exit::UNREPORTED,
            Self::Failed { error, .. } if error.is_retryable() => exit::FAILED_RETRYABLE,
            Self::Failed { .. } => exit::FAILED_PERMANENT,
            Self::Fenced(_) => exit::FENCED,
            Self::Rejected(_) => exit::USAGE,
        }
    }

    /// The error, unless the attempt committed.
    pub fn error(&self) -> Option<&Error> {
        match self {
            Self::Committed(_) => None,
            Self::Failed { error, .. } | Self::Fenced(error) | Self::Rejected(error) => Some(error),
        }
    }
}

/// Runs attempts: a catalog, an object store and the worker's knobs.
#[derive(Debug, Clone)]
pub struct Worker {
    catalog: Catalog,
    store: Arc<dyn ObjectStore>,
    config: WorkerConfig,
}

impl Worker {
    /// A worker over `catalog` and `store`.
    pub fn new(catalog: Catalog, store: Arc<dyn ObjectStore>, config: WorkerConfig) -> Self {
        Self { catalog, store, config }
    }

    /// Runs one attempt to its end. Never panics on bad input: every problem becomes an
    /// [`Outcome`]. Cancelling `stop` (SIGTERM) interrupts the work and reports a retryable
    /// `worker_stopped` failure.
    pub async fn run(&self, identity: &AttemptIdentity, stop: CancellationToken) -> Outcome {
        let span = tracing::info_span!(
            "attempt",
            task = %identity.task,
            attempt = %identity.attempt,
            fence = %identity.fence,
            tenant_id = tracing::field::Empty,
            namespace = tracing::field::Empty,
            job = tracing::field::Empty,
        );
        let outcome = self.run_attempt(identity, stop).instrument(span.clone()).await;
        let _entered = span.enter();
        match &outcome {
            Outcome::Committed(summary) => tracing::info!(
                dataset = %summary.committed.dataset,
                snapshot = %summary.committed.snapshot,
                files = summary.files,
                rows = summary.rows,
                bytes = summary.bytes,
                "attempt committed"
            ),
            Outcome::Failed { error, reported } => tracing::error!(
                error_code = error.error_code(),
                retryable = error.is_retryable(),
                reported = reported.is_some(),
                error = %error,
                "attempt failed"
            ),
            Outcome::Fenced(error) => {
                tracing::warn!(error_code = error.error_code(), error = %error, "attempt fenced out, nothing committed")
            }
            Outcome::Rejected(error) => {
                tracing::error!(error_code = error.error_code(), error = %error, "attempt identity rejected")
            }
        }
        outcome
    }

    async fn run_attempt(&self, identity: &AttemptIdentity, stop: CancellationToken) -> Outcome {
        let reference = identity.attempt_ref();
        let attempt = match self.catalog.attempt(identity.attempt).await {
            Ok(attempt) if attempt.task == identity.task => attempt,
            Ok(attempt) => {
                return Outcome::Rejected(Error::Config {
                    message: format!(
                        "attempt {} belongs to task {}, not to task {}",
                        identity.attempt, attempt.task, identity.task
                    ),
                });
            }
            Err(duckmesh_catalog::Error::NotFound { what }) => {
                return Outcome::Rejected(Error::Config { message: format!("{what} does not exist") });
            }
            Err(error) => return Outcome::Failed { error: error.into(), reported: None },
        };
        if let Err(error) = self.catalog.confirm_attempt(reference, self.config.runner.as_deref()).await {
            return report_failure(&self.catalog, reference, error.into()).await;
        }
        tracing::info!(number = attempt.number, traceparent = identity.traceparent.as_deref(), "attempt confirmed");

        let guard = Arc::new(Guard::default());
        let mut background = Background {
            heartbeat: tokio::spawn(heartbeat(self.catalog.clone(), reference, self.config.heartbeat, guard.clone())),
            stop: tokio::spawn({
                let guard = guard.clone();
                async move {
                    stop.cancelled().await;
                    guard.stop(StopReason::Stopped);
                }
            }),
            deadline: None,
        };

        let plan = tokio::select! {
            plan = self.plan(identity, attempt.number) => plan,
            () = guard.stopped() => Err(guard.error()),
        };
        let (plan, workspace) = match plan {
            Ok(planned) => planned,
            Err(error) => {
                background.abort();
                return report_failure(&self.catalog, reference, error).await;
            }
        };
        let timeout_seconds = plan.timeout.as_secs().max(1);
        background.deadline = Some(tokio::spawn({
            let guard = guard.clone();
            let timeout = plan.timeout;
            async move {
                tokio::time::sleep(timeout).await;
                guard.stop(StopReason::Timeout(timeout_seconds));
            }
        }));

        let staged = tokio::select! {
            staged = self.produce(&plan, workspace, &guard) => staged,
            () = guard.stopped() => Err(guard.error()),
        };
        let staged = match staged {
            // A stop that raced the last step still wins: never commit after it.
            Ok(_) if guard.is_stopped() => Err(guard.error()),
            other => other,
        };
        let staged = match staged {
            Ok(staged) => staged,
            Err(error) => {
                background.abort();
                return report_failure(&self.catalog, reference, error).await;
            }
        };

        // The commit is not raced against the guard: dropping it halfway would leave us not
        // knowing whether it landed. The catalog re-checks the fence and lease inside it.
        let result = self.catalog.commit(reference, &staged.request).await;
        background.abort();
        match result {
            Ok(committed) => Outcome::Committed(staged.summary(committed)),
            Err(error) if error.is_retryable() => match self.landed(identity).await {
                Some(committed) => Outcome::Committed(staged.summary(committed)),
                None => report_failure(&self.catalog, reference, error.into()).await,
            },
            Err(error) => report_failure(&self.catalog, reference, error.into()).await,
        }
    }

    /// After a commit call failed in transit: whether it committed anyway.
    async fn landed(&self, identity: &AttemptIdentity) -> Option<Committed> {
        let attempt = self.catalog.attempt(identity.attempt).await.ok()?;
        if attempt.state != AttemptState::Succeeded {
            return None;
        }
        let task = self.catalog.task(identity.task).await.ok()?;
        let (output, snapshot) = (task.output?, task.output_snapshot?);
        let snapshot = self.catalog.snapshot(output.dataset, snapshot).await.ok()?;
        Some(Committed {
            dataset: output.dataset,
            snapshot: snapshot.id,
            parent: snapshot.parent,
            visibility_token: snapshot.visibility_token,
        })
    }

    /// Loads and checks everything the attempt needs before doing any work, and opens the
    /// attempt's database: the statement check runs on the database the query will run on, so
    /// a worker starts DuckDB once.
    async fn plan(&self, identity: &AttemptIdentity, number: u32) -> Result<(Plan, Workspace)> {
        let task = self.catalog.task(identity.task).await?;
        // Every later log line of the attempt is attributable (SPEC §2.9).
        let span = tracing::Span::current();
        span.record("tenant_id", task.tenant.as_str());
        span.record("namespace", task.namespace.as_str());
        if let Some(job) = task.job {
            span.record("job", job.0);
        }
        if task.kind != "sql" {
            return Err(Error::UnsupportedKind { task: task.id, kind: task.kind.clone() });
        }
        let spec = SqlTaskSpec::parse(&task.spec)?;
        // One read-only query, refused before any input is fetched.
        let workspace = self.workspace(identity, &spec).await?;
        let output = task.output.ok_or_else(|| Error::InvalidSpec {
            message: format!("task {:?} declares no output dataset; a sql task writes one", task.name),
        })?;
        let dataset = self.catalog.dataset(output.dataset).await?;
        same_tenant("output", &task, &dataset)?;
        let options = DatasetOptions::parse(&dataset.name, &dataset.spec)?;
        let target_file_size_bytes =
            spec.target_file_size_bytes.or(options.target_file_size_bytes).unwrap_or(DEFAULT_TARGET_FILE_SIZE_BYTES);
        let timeout = task.timeout_seconds.map_or(self.config.default_timeout, |s| Duration::from_secs(u64::from(s)));
        // The task id, not its name, keeps prefixes unique across jobs that reuse task names.
        let prefix = layout::attempt_prefix(&dataset.name, &task.id.to_string(), number)?;
        let manifest_key = layout::manifest_key(&dataset.name, &task.id.to_string(), number)?;
        let plan = Plan {
            identity: identity.clone(),
            number,
            task,
            spec,
            output,
            dataset,
            options,
            target_file_size_bytes,
            timeout,
            prefix,
            manifest_key,
        };
        Ok((plan, workspace))
    }

    /// The attempt's scratch directory and its database, opened with the task's limits, with
    /// the task's SQL checked on it.
    async fn workspace(&self, identity: &AttemptIdentity, spec: &SqlTaskSpec) -> Result<Workspace> {
        let limits = spec.limits()?;
        std::fs::create_dir_all(&self.config.work_dir)
            .map_err(|error| Error::io("creating the work directory", &self.config.work_dir, error))?;
        let scratch = tempfile::Builder::new()
            .prefix(&format!("duckmesh-attempt-{}-", identity.attempt))
            .tempdir_in(&self.config.work_dir)
            .map_err(|error| Error::io("creating the attempt's scratch directory", &self.config.work_dir, error))?;
        let spill_dir = scratch.path().join("spill");
        std::fs::create_dir_all(&spill_dir)
            .map_err(|error| Error::io("creating the spill directory", &spill_dir, error))?;
        let limits = Limits { memory_limit_bytes: limits.memory_limit_bytes, threads: limits.threads, spill_dir };
        let sql = spec.query().to_owned();
        let engine = tokio::task::spawn_blocking(move || -> Result<Database> {
            let engine = Database::open(&limits)?;
            engine.check_statement(&sql)?;
            Ok(engine)
        })
        .await
        .map_err(|error| Error::Engine { step: "checking the task's SQL", message: error.to_string() })??;
        Ok(Workspace { scratch, engine })
    }

    /// Fetches inputs, runs the SQL, stages files and manifest; returns the commit to make.
    async fn produce(&self, plan: &Plan, workspace: Workspace, guard: &Arc<Guard>) -> Result<Staged> {
        let Workspace { scratch, engine } = workspace;
        let cache = FileCache::open(&self.config.cache_dir)?;
        let inputs = self.fetch_inputs(plan, &cache).await?;
        let output_dir = scratch.path().join("out");

        let query = QueryJob {
            engine,
            // Never the cache root: other tenants' files live there too. The inputs' own files
            // are allowed one by one when the engine registers them.
            allowed_dirs: vec![scratch.path().to_owned()],
            relations: inputs.iter().map(|input| input.relation.clone()).collect(),
            sql: plan.spec.query().to_owned(),
            export: ExportOptions {
                output_dir,
                partition_by: plan.options.partition_by.clone(),
                target_file_size_bytes: plan.target_file_size_bytes,
            },
            dataset: plan.dataset.name.clone(),
            append_schema: (plan.output.mode == CommitMode::Append).then(|| plan.dataset.schema.clone()).flatten(),
        };
        let engine_guard = guard.clone();
        let (schema, exported) = tokio::task::spawn_blocking(move || query.run(&engine_guard))
            .await
            .map_err(|error| Error::Engine { step: "running the query", message: error.to_string() })??;
        tracing::info!(files = exported.len(), rows = exported.iter().map(|f| f.rows).sum::<u64>(), "query finished");

        let files = self.upload(plan, &exported).await?;
        let manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            dataset: ManifestDataset {
                id: plan.dataset.id.0,
                namespace: plan.dataset.namespace.clone(),
                name: plan.dataset.name.clone(),
            },
            mode: plan.output.mode,
            task: ManifestTask {
                id: plan.task.id.0,
                job: plan.task.job.map(|job| job.0),
                namespace: plan.task.namespace.clone(),
                name: plan.task.name.clone(),
            },
            attempt: ManifestAttempt { id: plan.identity.attempt.0, number: plan.number, fence: plan.identity.fence.0 },
            parent_snapshot: plan.dataset.current_snapshot.map(|snapshot| snapshot.0),
            inputs: inputs
                .iter()
                .map(|input| ManifestInput {
                    dataset: input.relation.name.clone(),
                    snapshot: input.snapshot.map(|s| s.0),
                    files: input.relation.files.len(),
                })
                .collect(),
            schema: schema.clone(),
            files: files.iter().map(ManifestFile::from).collect(),
            replaces: Vec::new(),
            rows: files.iter().map(|f| f.rows).sum(),
            bytes: files.iter().map(|f| f.bytes).sum(),
            created_at: chrono::Utc::now(),
        };
        let body = serde_json::to_vec_pretty(&manifest)
            .map_err(|error| Error::Engine { step: "writing the manifest", message: error.to_string() })?;
        self.store.put(&plan.manifest_key, body.into()).await?;
        drop(scratch);

        Ok(Staged {
            request: CommitRequest {
                dataset: plan.output.dataset,
                mode: plan.output.mode,
                files,
                manifest_path: Some(plan.manifest_key.clone()),
                schema: Some(schema),
            },
            manifest_path: plan.manifest_key.clone(),
            cache_hits: inputs.iter().map(|input| input.cache_hits).sum(),
            downloads: inputs.iter().map(|input| input.downloads).sum(),
        })
    }

    /// Pins every input to a committed snapshot and brings its files into the cache.
    async fn fetch_inputs(&self, plan: &Plan, cache: &FileCache) -> Result<Vec<FetchedInput>> {
        let mut inputs = Vec::with_capacity(plan.spec.inputs.len());
        for input in &plan.spec.inputs {
            let dataset = match self.catalog.dataset_by_name(&plan.task.namespace, &input.dataset).await {
                Ok(dataset) => dataset,
                Err(duckmesh_catalog::Error::NotFound { .. }) => {
                    return Err(Error::Input {
                        dataset: input.dataset.clone(),
                        message: format!("no dataset of that name in namespace {:?}", plan.task.namespace),
                    });
                }
                Err(error) => return Err(error.into()),
            };
            same_tenant("input", &plan.task, &dataset)?;
            let snapshot = match input.snapshot {
                Some(pinned) => match self.catalog.snapshot(dataset.id, SnapshotId(pinned)).await {
                    Ok(snapshot) => Some(snapshot.id),
                    Err(duckmesh_catalog::Error::NotFound { .. }) => {
                        return Err(Error::Input {
                            dataset: input.dataset.clone(),
                            message: format!("snapshot {pinned} does not exist"),
                        });
                    }
                    Err(error) => return Err(error.into()),
                },
                None => dataset.current_snapshot,
            };
            let records = match snapshot {
                Some(snapshot) => self.catalog.snapshot_files(dataset.id, snapshot).await?,
                None => Vec::new(),
            };
            // The futures are built before they enter the stream: a closure inside the stream
            // would make the whole attempt future lose `Send` (rust-lang/rust#102211).
            let downloads: Vec<_> = records.iter().map(|record| cache.fetch(self.store.as_ref(), record)).collect();
            let fetched: Vec<(PathBuf, Fetched)> =
                futures::stream::iter(downloads).buffered(self.config.transfer_concurrency).try_collect().await?;
            tracing::info!(
                input = %input.dataset,
                snapshot = snapshot.map_or(0, |s| s.0),
                files = fetched.len(),
                "input pinned"
            );
            inputs.push(FetchedInput {
                cache_hits: fetched.iter().filter(|(_, how)| *how == Fetched::Hit).count(),
                downloads: fetched.iter().filter(|(_, how)| *how == Fetched::Downloaded).count(),
                snapshot,
                relation: Relation {
                    name: input.dataset.clone(),
                    files: fetched.into_iter().map(|(path, _)| path).collect(),
                    schema: dataset.schema.clone(),
                },
            });
        }
        Ok(inputs)
    }

    /// Hashes and uploads every output file under the attempt's prefix.
    async fn upload(&self, plan: &Plan, exported: &[ExportedFile]) -> Result<Vec<NewFile>> {
        let uploads: Vec<_> =
            exported.iter().enumerate().map(|(index, file)| self.upload_one(&plan.prefix, index, file)).collect();
        futures::stream::iter(uploads).buffered(self.config.transfer_concurrency).try_collect().await
    }

    /// Uploads output file number `index` as `<prefix>[<partition dirs>/]part-<index>.parquet`.
    async fn upload_one(&self, prefix: &str, index: usize, file: &ExportedFile) -> Result<NewFile> {
        let key = file.object_key(prefix, index);
        let (bytes, sha256) = hash_file(&file.path).await?;
        self.store.put_file(&key, &file.path).await?;
        Ok(file.new_file(key, bytes, sha256))
    }
}

/// Refuses a dataset outside the task's tenant and namespace (SPEC §2.10). Applying resources
/// refuses such tasks already; this catches tasks stored before that check and datasets that
/// changed hands since, before any of their files is fetched.
fn same_tenant(role: &'static str, task: &TaskRecord, dataset: &DatasetRecord) -> Result<()> {
    if dataset.tenant == task.tenant && dataset.namespace == task.namespace {
        return Ok(());
    }
    let scope = |tenant: &str, namespace: &str| format!("tenant {tenant:?} in namespace {namespace:?}");
    Err(Error::CrossTenant {
        role,
        dataset: dataset.name.clone(),
        owner: scope(&dataset.tenant, &dataset.namespace),
        runner: scope(&task.tenant, &task.namespace),
    })
}

/// Reports a failure to the catalog (a few tries when the catalog is briefly unavailable).
/// A fencing error — from the attempt's own work or from this report — means the attempt was
/// superseded: nothing is reported and the outcome is [`Outcome::Fenced`].
pub async fn report_failure(catalog: &Catalog, reference: AttemptRef, error: Error) -> Outcome {
    if error.is_fenced() {
        return Outcome::Fenced(error);
    }
    let failure =
        Failure { code: error.error_code().to_owned(), message: error.to_string(), retryable: error.is_retryable() };
    let mut delay = Duration::from_millis(500);
    for _ in 0..4 {
        match catalog.fail_attempt(reference, &failure).await {
            Ok(outcome) => return Outcome::Failed { error, reported: Some(outcome) },
            Err(refused) if refused.is_fencing() => return Outcome::Fenced(Error::fenced(&refused)),
            Err(transient) if transient.is_retryable() => {
                tracing::warn!(error = %transient, "cannot report the failure yet, retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(other) => {
                tracing::error!(error = %other, "the catalog refused the failure report");
                break;
            }
        }
    }
    Outcome::Failed { error, reported: None }
}

/// Renews the lease until stopped; a fencing answer stops the attempt at once.
async fn heartbeat(catalog: Catalog, reference: AttemptRef, interval: Duration, guard: Arc<Guard>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = guard.stopped() => return,
        }
        match catalog.heartbeat(reference).await {
            Ok(expires) => tracing::debug!(lease_expires_at = %expires, "heartbeat"),
            Err(error) if error.is_fencing() => {
                tracing::warn!(error_code = error.error_code(), error = %error, "heartbeat refused: stopping the attempt");
                guard.stop(StopReason::Fenced(Error::fenced(&error)));
                return;
            }
            Err(error) => {
                tracing::warn!(error_code = error.error_code(), error = %error, "heartbeat failed, will try again");
            }
        }
    }
}

/// Why an attempt was stopped from outside its own work.
#[derive(Debug)]
enum StopReason {
    Fenced(Error),
    Timeout(u64),
    Stopped,
}

/// The one place that stops an attempt: records the first reason, interrupts DuckDB, and
/// wakes everything waiting on [`Guard::stopped`].
#[derive(Default)]
struct Guard {
    reason: Mutex<Option<StopReason>>,
    token: CancellationToken,
    interrupt: Mutex<Option<Arc<InterruptHandle>>>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("stopped", &self.is_stopped()).finish_non_exhaustive()
    }
}

impl Guard {
    fn stop(&self, reason: StopReason) {
        if let Ok(mut slot) = self.reason.lock()
            && slot.is_none()
        {
            *slot = Some(reason);
        }
        self.token.cancel();
        if let Ok(handle) = self.interrupt.lock()
            && let Some(handle) = handle.as_ref()
        {
            handle.interrupt();
        }
    }

    fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    async fn stopped(&self) {
        self.token.cancelled().await;
    }

    /// The error that describes the stop.
    fn error(&self) -> Error {
        let reason = self.reason.lock().ok();
        match reason.as_deref().and_then(Option::as_ref) {
            Some(StopReason::Fenced(Error::Fenced { code, message })) => {
                Error::Fenced { code, message: message.clone() }
            }
            Some(StopReason::Timeout(seconds)) => Error::Timeout { seconds: *seconds },
            Some(StopReason::Stopped) | Some(StopReason::Fenced(_)) | None => Error::Stopped,
        }
    }

    /// Registers the running engine's interrupt handle; false when the attempt is already
    /// stopped (the caller must not start the query).
    fn arm(&self, handle: Arc<InterruptHandle>) -> bool {
        if let Ok(mut slot) = self.interrupt.lock() {
            *slot = Some(handle);
        }
        !self.is_stopped()
    }

    fn disarm(&self) {
        if let Ok(mut slot) = self.interrupt.lock() {
            *slot = None;
        }
    }
}

/// The background tasks of a running attempt.
struct Background {
    heartbeat: tokio::task::JoinHandle<()>,
    stop: tokio::task::JoinHandle<()>,
    deadline: Option<tokio::task::JoinHandle<()>>,
}

impl Background {
    fn abort(&self) {
        self.heartbeat.abort();
        self.stop.abort();
        if let Some(deadline) = &self.deadline {
            deadline.abort();
        }
    }
}

/// Everything an attempt needs, loaded and checked.
#[derive(Debug)]
struct Plan {
    identity: AttemptIdentity,
    number: u32,
    task: TaskRecord,
    spec: SqlTaskSpec,
    output: TaskOutput,
    dataset: DatasetRecord,
    options: DatasetOptions,
    target_file_size_bytes: u64,
    timeout: Duration,
    prefix: String,
    manifest_key: String,
}

/// An input pinned and fetched.
#[derive(Debug)]
struct FetchedInput {
    snapshot: Option<SnapshotId>,
    relation: Relation,
    cache_hits: usize,
    downloads: usize,
}

/// Staged output, ready to commit.
#[derive(Debug)]
struct Staged {
    request: CommitRequest,
    manifest_path: String,
    cache_hits: usize,
    downloads: usize,
}

impl Staged {
    fn summary(&self, committed: Committed) -> CommitSummary {
        CommitSummary {
            committed,
            files: self.request.files.len(),
            rows: self.request.files.iter().map(|f| f.rows).sum(),
            bytes: self.request.files.iter().map(|f| f.bytes).sum(),
            manifest_path: self.manifest_path.clone(),
            cache_hits: self.cache_hits,
            downloads: self.downloads,
        }
    }
}

/// Where an attempt works: its scratch directory (spill, output) and its database, opened and
/// with the task's SQL checked before any input is fetched.
struct Workspace {
    scratch: tempfile::TempDir,
    engine: Database,
}

/// The blocking part of an attempt: DuckDB from set-up to exported files.
struct QueryJob {
    engine: Database,
    allowed_dirs: Vec<PathBuf>,
    relations: Vec<Relation>,
    sql: String,
    export: ExportOptions,
    dataset: String,
    append_schema: Option<Vec<Column>>,
}

impl QueryJob {
    fn run(self, guard: &Guard) -> Result<(Vec<Column>, Vec<ExportedFile>)> {
        let result = self.run_armed(guard);
        guard.disarm();
        // An interrupted statement fails with DuckDB's own error; report why it was interrupted.
        match result {
            Err(_) if guard.is_stopped() => Err(guard.error()),
            other => other,
        }
    }

    fn run_armed(&self, guard: &Guard) -> Result<(Vec<Column>, Vec<ExportedFile>)> {
        let engine = &self.engine;
        if !guard.arm(engine.interrupt_handle()) {
            return Err(guard.error());
        }
        for relation in &self.relations {
            engine.register(relation)?;
        }
        engine.lock_down(&self.allowed_dirs)?;
        let schema = engine.prepare_query(&self.sql)?;
        let missing: Vec<&str> = self
            .export
            .partition_by
            .iter()
            .filter(|column| !schema.iter().any(|c| &c.name == *column))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(Error::SchemaMismatch {
                dataset: self.dataset.clone(),
                message: format!(
                    "the dataset is partitioned by {}, which the result lacks (it has {})",
                    missing.join(", "),
                    schema.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        if let Some(existing) = &self.append_schema
            && let Some(message) = schema_difference(existing, &schema)
        {
            return Err(Error::SchemaMismatch { dataset: self.dataset.clone(), message });
        }
        let files = engine.export(&self.export)?;
        Ok((schema, files))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_outcome() {
        let permanent = Outcome::Failed {
            error: Error::Sql { message: "Binder Error".into() },
            reported: Some(FailOutcome::Failed { dependents_failed: 0 }),
        };
        assert_eq!(permanent.exit_code(), exit::FAILED_PERMANENT);
        let retryable = Outcome::Failed {
            error: Error::Timeout { seconds: 1 },
            reported: Some(FailOutcome::Failed { dependents_failed: 0 }),
        };
        assert_eq!(retryable.exit_code(), exit::FAILED_RETRYABLE);
        let unreported = Outcome::Failed { error: Error::Timeout { seconds: 1 }, reported: None };
        assert_eq!(unreported.exit_code(), exit::UNREPORTED);
        let fenced = Outcome::Fenced(Error::Fenced { code: "stale_fence", message: "x".into() });
        assert_eq!(fenced.exit_code(), exit::FENCED);
        assert_eq!(Outcome::Rejected(Error::Config { message: "x".into() }).exit_code(), exit::USAGE);
    }

    #[test]
    fn the_guard_keeps_the_first_reason() {
        let guard = Guard::default();
        assert!(!guard.is_stopped());
        guard.stop(StopReason::Timeout(5));
        guard.stop(StopReason::Stopped);
        assert!(guard.is_stopped());
        assert_eq!(guard.error().error_code(), "task_timeout");
        let fenced = Guard::default();
        fenced.stop(StopReason::Fenced(Error::Fenced { code: "lease_expired", message: "gone".into() }));
        assert!(fenced.error().is_fenced());
        assert_eq!(fenced.error().error_code(), "lease_expired");
    }
}
