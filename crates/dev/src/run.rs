//! `duckmesh dev`: the whole pipeline in one process tree on one machine — a private
//! PostgreSQL, a local object store, the shared scheduler with the process executor, the API
//! (queries and ingest) and an ingest coordinator —
//! driven by the same YAML a cluster takes.

use crate::instance::Instance;
use crate::process::{ProcessConfig, ProcessExecutor};
use crate::progress::{JobView, Progress, datasets_table, human_bytes, tasks_table};
use crate::source::{self, Applied, SourceError};
use duckmesh_catalog::{Catalog, CatalogConfig, ConnectOptions};
use duckmesh_coordinator::metrics::CoordinatorMetrics;
use duckmesh_coordinator::{Coordinator, CoordinatorArgs};
use duckmesh_core::{JobPhase, TaskPhase};
use duckmesh_localpg::{ClusterOptions, LocalCluster, resolve_state_dir};
use duckmesh_query::metrics::ApiMetrics;
use duckmesh_scheduler::metrics::ControlPlaneMetrics;
use duckmesh_scheduler::{Scheduler, SchedulerOptions};
use duckmesh_storage::{Pruned, StoreConfig, StoreCounters, prune_cached};
use duckmesh_telemetry::Metrics;
use duckmesh_worker::{WorkerArgs, WorkerConfig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Dev-mode defaults that differ from a cluster's, used unless the variable is set: short
/// leases and retries, so a crashed or stopped run resumes within seconds.
pub const DEV_DEFAULTS: &[(&str, &str)] = &[
    ("DUCKMESH_TASK_LEASE_SECONDS", "30"),
    ("DUCKMESH_HEARTBEAT_SECONDS", "5"),
    ("DUCKMESH_TASK_RETRY_BASE_SECONDS", "2"),
    ("DUCKMESH_TASK_RETRY_MAX_SECONDS", "60"),
];

/// Files used this recently are never pruned: a worker left from a crashed run may be about to
/// open one.
const CACHE_KEEP_RECENT: Duration = Duration::from_secs(600);

/// How to run.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// YAML files or directories.
    pub files: Vec<PathBuf>,
    /// Where the private PostgreSQL, the object store, caches and logs live.
    pub state_dir: PathBuf,
    /// Use this PostgreSQL instead of a private one.
    pub database_url: Option<String>,
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Keep serving the API after the jobs end, until Ctrl-C.
    pub keep_serving: bool,
    /// Workers running at once at most.
    pub max_parallel: usize,
    /// The `duckmesh` executable that runs workers.
    pub program: PathBuf,
    /// Variables set for this process's configuration and every worker, over the process
    /// environment (e.g. the S3 settings given as flags).
    pub extra_env: Vec<(String, String)>,
}

/// How a dev run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevOutcome {
    /// Every job succeeded (or there were none and serving stopped on Ctrl-C).
    Succeeded,
    /// A job failed or was cancelled.
    Failed,
    /// Stopped by Ctrl-C before the jobs ended; a rerun resumes.
    Interrupted,
}

impl DevOutcome {
    /// The process exit code: 0, 1, or 130 (interrupted, as shells report Ctrl-C).
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Succeeded => 0,
            Self::Failed => 1,
            Self::Interrupted => 130,
        }
    }
}

/// Why dev mode could not run.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The YAML could not be read or applied.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The state directory is unusable or another instance holds it.
    #[error(transparent)]
    Instance(#[from] crate::instance::InstanceError),
    /// The private PostgreSQL could not start.
    #[error("cannot start the private PostgreSQL: {0}")]
    Postgres(#[from] duckmesh_localpg::Error),
    /// The catalog failed.
    #[error("catalog: {0}")]
    Catalog(#[from] duckmesh_catalog::Error),
    /// A knob has an invalid value.
    #[error("configuration: {0}")]
    Config(String),
    /// The object store could not be set up.
    #[error("object store: {0}")]
    Store(#[from] duckmesh_storage::Error),
    /// The API address is taken or invalid.
    #[error("cannot listen on {address}: {source} (pick another with --listen, e.g. --listen 127.0.0.1:8081)")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl DevError {
    /// Stable error code.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::Source(error) => error.error_code(),
            Self::Instance(error) => error.error_code(),
            Self::Postgres(error) => error.error_code(),
            Self::Catalog(error) => error.error_code(),
            Self::Config(_) => "invalid_config",
            Self::Store(error) => error.error_code(),
            Self::Listen { .. } => "listen_failed",
        }
    }
}

/// The environment workers get, and that this process reads its own knobs from: the
/// process environment, plus dev defaults and the local object store where it sets nothing.
fn environment(state_dir: &Path, extra: &[(String, String)]) -> HashMap<String, String> {
    let mut overlay: HashMap<String, String> = extra.iter().cloned().collect();
    for (name, value) in DEV_DEFAULTS {
        if !is_set(&overlay, name) {
            overlay.insert((*name).to_owned(), (*value).to_owned());
        }
    }
    let configured = ["DUCKMESH_STORAGE_BACKEND", "DUCKMESH_S3_BUCKET", "DUCKMESH_LOCAL_STORE_ROOT"]
        .iter()
        .any(|name| is_set(&overlay, name));
    if !configured {
        overlay.insert("DUCKMESH_STORAGE_BACKEND".into(), "local".into());
        overlay.insert("DUCKMESH_LOCAL_STORE_ROOT".into(), state_dir.join("objects").display().to_string());
    }
    if !is_set(&overlay, "DUCKMESH_CACHE_DIR") {
        overlay.insert("DUCKMESH_CACHE_DIR".into(), state_dir.join("cache").display().to_string());
    }
    if !is_set(&overlay, "DUCKMESH_WORK_DIR") {
        overlay.insert("DUCKMESH_WORK_DIR".into(), state_dir.join("work").display().to_string());
    }
    overlay
}

fn is_set(overlay: &HashMap<String, String>, name: &str) -> bool {
    overlay.contains_key(name) || std::env::var_os(name).is_some()
}

/// Trims the worker cache this instance owns (`<state dir>/cache`, unless `DUCKMESH_CACHE_DIR`
/// points elsewhere, when it is left alone) to `DUCKMESH_DEV_CACHE_MAX_MB`, least recently used
/// first. It runs while this instance holds the state directory and before any worker starts;
/// a cache that cannot be trimmed is logged and the run goes on.
async fn trim_worker_cache(
    state_dir: &Path,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<Pruned>, DevError> {
    let max_mb = duckmesh_config::from_lookup::<crate::DevArgs>(&lookup)
        .map_err(|e| DevError::Config(e.to_string()))?
        .dev_cache_max_mb;
    let root = state_dir.join("cache");
    let worker = duckmesh_config::from_lookup::<WorkerArgs>(&lookup).map_err(|e| DevError::Config(e.to_string()))?;
    if worker.cache_dir.is_some_and(|dir| dir != root) {
        return Ok(None);
    }
    let trimmed = tokio::task::spawn_blocking({
        let root = root.clone();
        move || prune_cached(&root, max_mb << 20, CACHE_KEEP_RECENT)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|result| result);
    match trimmed {
        Ok(pruned) => {
            tracing::info!(
                cache = %root.display(),
                removed_files = pruned.removed_files,
                removed_bytes = pruned.removed_bytes,
                kept_bytes = pruned.kept_bytes,
                "trimmed the worker cache"
            );
            Ok(Some(pruned))
        }
        Err(error) => {
            tracing::warn!(cache = %root.display(), %error, error_code = "cache_prune_failed", "cannot trim the worker cache; it is left as it is");
            Ok(None)
        }
    }
}

/// Starts (creating it on first use) the private PostgreSQL of a state directory, kept in
/// `<state_dir>/postgres`, or in its `/var/tmp` stand-in when running as root
/// ([`resolve_state_dir`]). Shared by `duckmesh dev`, `migrate` and `status`.
pub async fn private_postgres(state_dir: &Path) -> Result<LocalCluster, duckmesh_localpg::Error> {
    let data = resolve_state_dir(&state_dir.join("postgres"))?;
    tokio::task::spawn_blocking(move || LocalCluster::start(&ClusterOptions::persistent(data))).await.map_err(
        |error| duckmesh_localpg::Error::Io {
            step: "starting PostgreSQL".into(),
            source: std::io::Error::other(error.to_string()),
        },
    )?
}

/// Runs dev mode to the end of its jobs (or Ctrl-C).
pub async fn run(options: DevOptions) -> Result<DevOutcome, DevError> {
    // Everything the user wrote is checked before anything starts.
    let resources = source::load(&options.files)?;
    // Counted from here on, so that no Ctrl-C falls through to the default (kill) action.
    let interrupts = count_interrupts();
    let instance = Instance::acquire(&options.state_dir)?;
    let state_dir = instance.dir().to_path_buf();
    let overlay = environment(&state_dir, &options.extra_env);
    let lookup = |name: &str| overlay.get(name).cloned().or_else(|| std::env::var(name).ok());
    let trimmed = trim_worker_cache(&state_dir, lookup).await?;
    // Holding the state directory, every worker of it is an orphan of a killed instance.
    let orphans = crate::orphans::stop_orphans(&state_dir, crate::process::STOP_GRACE).await;
    let mut watchdog = crate::orphans::spawn_watchdog(crate::process::STOP_GRACE);

    let (_cluster, database_url) = match &options.database_url {
        Some(url) => (None, url.clone()),
        None => {
            let cluster = private_postgres(&state_dir).await?;
            let url = cluster.url("postgres");
            (Some(cluster), url)
        }
    };
    let catalog_config = CatalogConfig::from_lookup(lookup).map_err(|e| DevError::Config(e.to_string()))?;
    let mut connect = ConnectOptions::new(database_url.clone());
    connect.max_connections = 10;
    connect.acquire_timeout = Duration::from_secs(15);
    let catalog = Catalog::connect(&connect, catalog_config).await?;
    catalog.migrate().await?;
    let store = StoreConfig::from_lookup(lookup)?.build(Arc::new(StoreCounters::new())).await?;

    let applied = source::apply(&catalog, &resources).await?;
    // Every component's metrics are served from the first scrape, as by the other binaries.
    let metrics = Metrics::new();
    let _ = (ApiMetrics::new(&metrics), CoordinatorMetrics::new(&metrics), ControlPlaneMetrics::new(&metrics));
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| DevError::Listen { address: options.listen, source })?;
    let address = listener.local_addr().map_err(|source| DevError::Listen { address: options.listen, source })?;
    let api_url = format!("http://{address}");
    instance.publish(&database_url, &api_url)?;

    let shutdown = CancellationToken::new();
    // Live ingest: records posted to the API become visible through this coordinator.
    let mut coordinator_args = duckmesh_config::from_lookup::<CoordinatorArgs>(lookup)
        .map_err(|e| DevError::Config(format!("coordinator: {e}")))?;
    coordinator_args.coordinator_work_dir.get_or_insert_with(|| state_dir.join("work").join("coordinator"));
    let mut coordinator_config = coordinator_args.into_config();
    coordinator_config.identity = format!("dev/{}", std::process::id());
    let coordinator = Coordinator::new(catalog.clone(), Arc::clone(&store), metrics.clone(), coordinator_config);
    let ingesting = tokio::spawn({
        let stop = shutdown.clone();
        async move {
            if let Err(error) = coordinator.run(stop).await {
                tracing::error!(error_code = error.error_code(), %error, "the ingest coordinator stopped");
            }
        }
    });
    let router = crate::api::router(catalog.clone(), store, metrics.clone(), &state_dir)
        .map_err(|e| DevError::Config(format!("query API: {e}")))?;
    let api = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await }
    });

    let mut progress = Progress::new();
    progress.println(&format!(
        "duckmesh dev: {} dataset(s), {} job(s), {} task(s) from {}; API on {api_url}; state in {}",
        applied.datasets.len(),
        applied.jobs.len(),
        applied.tasks.len(),
        options.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "),
        state_dir.display(),
    ));
    if !orphans.is_empty() {
        progress.println(&format!(
            "stopped {} orphaned worker(s) of a previous duckmesh dev of this state directory (pid {})",
            orphans.len(),
            orphans.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        ));
    }
    if let Some(pruned) = trimmed.filter(|pruned| pruned.removed_files > 0) {
        progress.println(&format!(
            "worker cache: removed {} least recently used file(s) ({}), kept {} (bound: DUCKMESH_DEV_CACHE_MAX_MB)",
            pruned.removed_files,
            human_bytes(i64::try_from(pruned.removed_bytes).unwrap_or(i64::MAX)),
            human_bytes(i64::try_from(pruned.kept_bytes).unwrap_or(i64::MAX)),
        ));
    }
    for (_, name, created) in &applied.jobs {
        if !created {
            progress.println(&format!("job {name}: resuming from the catalog (committed tasks are not run again)"));
        }
    }

    // Workers read their knobs themselves; dev mode needs their default timeout.
    let worker_config = WorkerConfig::from_lookup(lookup).map_err(|e| DevError::Config(format!("worker: {e}")))?;
    let (ends, ends_rx) = mpsc::channel(1024);
    let executor = Arc::new(ProcessExecutor::new(
        ProcessConfig {
            program: options.program.clone(),
            database_url: database_url.clone(),
            env: overlay.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            log_dir: state_dir.join("logs"),
            runner_prefix: format!("dev/{}", std::process::id()),
            default_timeout: worker_config.default_timeout,
            state_dir: state_dir.clone(),
            process_group: watchdog.as_ref().map(std::process::Child::id),
        },
        ends,
    ));
    let mut scheduler_options = SchedulerOptions::new(format!("dev/{}", std::process::id()));
    scheduler_options.global_limit = Some(options.max_parallel.max(1));
    scheduler_options.tick = Duration::from_millis(500);
    let scheduler = Scheduler::new(catalog.clone(), Arc::clone(&executor), scheduler_options, Some(metrics.clone()));
    let stop_scheduling = CancellationToken::new();
    let scheduling = tokio::spawn({
        let stop = stop_scheduling.clone();
        async move { scheduler.run(ends_rx, stop).await }
    });

    let outcome = watch_jobs(&catalog, &applied, &executor, &stop_scheduling, interrupts.clone(), &mut progress).await;
    // Files with only Datasets are an ingest setup: nothing to wait for but Ctrl-C.
    let nothing_to_run = applied.jobs.is_empty() && applied.tasks.is_empty();
    let serving = matches!(&outcome, Ok(outcome) if (options.keep_serving || nothing_to_run) && *outcome != DevOutcome::Interrupted);
    // While it serves, the scheduler keeps running: the Datasets' scheduled maintenance goes
    // on, and its gauges on /metrics (task backlog, outbox) stay live.
    let mut scheduling = Some(scheduling);
    if !serving {
        stop_scheduling.cancel();
        if let Some(scheduling) = scheduling.take() {
            let _ = scheduling.await;
        }
    }
    progress.clear();

    if let Ok(outcome) = &outcome {
        print_summary(&catalog, &applied, *outcome, &api_url).await;
        if serving {
            eprintln!("serving the API (queries and ingest) on {api_url} until Ctrl-C");
            wait_for_interrupt(interrupts).await;
        }
    }
    stop_scheduling.cancel();
    if let Some(scheduling) = scheduling {
        let _ = scheduling.await;
    }
    shutdown.cancel();
    let _ = api.await;
    let _ = ingesting.await;
    catalog.close().await;
    if let Some(watchdog) = watchdog.as_mut() {
        let _ = watchdog.kill();
        let _ = watchdog.wait();
    }
    instance.release();
    outcome
}

/// Counts SIGINT/SIGTERM deliveries. The handlers are installed before this returns.
fn count_interrupts() -> watch::Receiver<u32> {
    use tokio::signal::unix::{SignalKind, signal};
    let (sender, receiver) = watch::channel(0u32);
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                received = next_signal(interrupt.as_mut()) => if received.is_none() { return },
                received = next_signal(terminate.as_mut()) => if received.is_none() { return },
            }
            sender.send_modify(|count| *count += 1);
        }
    });
    receiver
}

async fn next_signal(stream: Option<&mut tokio::signal::unix::Signal>) -> Option<()> {
    match stream {
        Some(stream) => stream.recv().await,
        None => std::future::pending().await,
    }
}

/// Waits for the first Ctrl-C of the run. Called only when none was handled yet, so one that
/// arrived just before the call (while the summary was printed) counts too.
async fn wait_for_interrupt(mut interrupts: watch::Receiver<u32>) {
    while *interrupts.borrow_and_update() == 0 {
        if interrupts.changed().await.is_err() {
            return;
        }
    }
}

/// How often the jobs' phases are looked at (one row per job).
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// The task list of a job is read in full at most this often per task it holds, within
/// [`WATCH_EVERY`] and [`PROGRESS_EVERY_MAX`]: the progress display's reads cost the same per
/// task however large the job (a 10,000-task job's list is read every 2.5 s, not 4 times a
/// second).
const PROGRESS_EVERY_PER_TASK: Duration = Duration::from_micros(250);
/// The longest pause between two reads of the task lists.
const PROGRESS_EVERY_MAX: Duration = Duration::from_secs(5);

/// Follows the jobs until they end. The first Ctrl-C stops leasing and lets running workers
/// finish; the second stops them (each records its attempt as retryable).
///
/// Whether the jobs are done is read from the jobs' phases (one row each, which the scheduler
/// keeps current) every [`WATCH_EVERY`]; the tasks shown as progress are read less often for
/// large jobs, and once more at the end.
async fn watch_jobs(
    catalog: &Catalog,
    applied: &Applied,
    executor: &ProcessExecutor,
    stop_scheduling: &CancellationToken,
    mut interrupts: watch::Receiver<u32>,
    progress: &mut Progress,
) -> Result<DevOutcome, DevError> {
    let mut draining = false;
    let mut failing_since: Option<std::time::Instant> = None;
    if applied.jobs.is_empty() && applied.tasks.is_empty() {
        return Ok(DevOutcome::Succeeded);
    }
    let mut shown: Option<std::time::Instant> = None;
    let mut progress_every = WATCH_EVERY;
    loop {
        match read_phases(catalog, applied).await {
            Ok((jobs, standalone)) => {
                failing_since = None;
                let done = jobs.iter().all(|p| p.is_terminal()) && standalone.iter().all(|p| p.is_terminal());
                if done || shown.is_none_or(|at| at.elapsed() >= progress_every) {
                    match read_views(catalog, applied).await {
                        Ok(views) => {
                            for view in &views {
                                progress.update(view);
                            }
                            let tasks: u32 = views.iter().map(|v| v.tasks.len() as u32).sum();
                            progress_every = (PROGRESS_EVERY_PER_TASK * tasks).clamp(WATCH_EVERY, PROGRESS_EVERY_MAX);
                            shown = Some(std::time::Instant::now());
                        }
                        Err(error) => {
                            tracing::warn!(%error, error_code = error.error_code(), "cannot read the jobs' tasks")
                        }
                    }
                }
                if done {
                    let succeeded = jobs.iter().all(|p| *p == JobPhase::Succeeded)
                        && standalone.iter().all(|p| *p == TaskPhase::Succeeded);
                    return Ok(if succeeded { DevOutcome::Succeeded } else { DevOutcome::Failed });
                }
            }
            Err(error) => {
                let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                tracing::warn!(%error, error_code = error.error_code(), "cannot read job state");
                if since.elapsed() > Duration::from_secs(60) {
                    return Err(error.into());
                }
            }
        }
        let count = *interrupts.borrow();
        if count >= 2 {
            progress.println("stopping the running workers (their attempts are retried on the next run)");
            executor.stop_all().await;
            return Ok(DevOutcome::Interrupted);
        }
        if count == 1 && !draining {
            draining = true;
            stop_scheduling.cancel();
            progress.println(&format!(
                "stopping: no new tasks start; waiting for {} running worker(s) to finish (Ctrl-C again to stop them now)",
                executor.running()
            ));
        }
        if draining && executor.running() == 0 {
            return Ok(DevOutcome::Interrupted);
        }
        tokio::select! {
            () = tokio::time::sleep(WATCH_EVERY) => {}
            _ = interrupts.changed() => {}
        }
    }
}

/// The phase of every job (as the scheduler last recorded it) and standalone task.
async fn read_phases(
    catalog: &Catalog,
    applied: &Applied,
) -> Result<(Vec<JobPhase>, Vec<TaskPhase>), duckmesh_catalog::Error> {
    let mut jobs = Vec::with_capacity(applied.jobs.len());
    for (id, _, _) in &applied.jobs {
        jobs.push(catalog.job(*id).await?.phase);
    }
    let mut standalone = Vec::with_capacity(applied.tasks.len());
    for (id, _) in &applied.tasks {
        standalone.push(catalog.task(*id).await?.phase);
    }
    Ok((jobs, standalone))
}

/// Every job with its tasks, for the progress display.
async fn read_views(catalog: &Catalog, applied: &Applied) -> Result<Vec<JobView>, duckmesh_catalog::Error> {
    let mut views = Vec::with_capacity(applied.jobs.len());
    for (id, _, _) in &applied.jobs {
        views.push(JobView::read(catalog, *id).await?);
    }
    Ok(views)
}

async fn print_summary(catalog: &Catalog, applied: &Applied, outcome: DevOutcome, api_url: &str) {
    let datasets = catalog.datasets(None).await.unwrap_or_default();
    let names: HashMap<_, _> = datasets.iter().map(|d| (d.id, d.name.clone())).collect();
    for (id, _, _) in &applied.jobs {
        let Ok(view) = JobView::read(catalog, *id).await else { continue };
        let mut outputs = HashMap::new();
        for task in &view.tasks {
            let Some(output) = task.output else { continue };
            let rows = match task.output_snapshot {
                Some(snapshot) => catalog.snapshot(output.dataset, snapshot).await.ok().map(|s| s.row_count),
                None => None,
            };
            outputs.insert(task.name.clone(), (names.get(&output.dataset).cloned().unwrap_or_default(), rows));
        }
        let took = view
            .tasks
            .iter()
            .filter_map(|t| t.started_at)
            .min()
            .map(|start| {
                let end = view.tasks.iter().filter_map(|t| t.finished_at).max().unwrap_or(view.now);
                format!(" in {:.1}s", (end - start).num_milliseconds() as f64 / 1000.0)
            })
            .unwrap_or_default();
        println!("\nJob {}: {}{took}", view.name, view.phase.as_str());
        println!("{}", tasks_table(&view, &outputs));
    }
    let shown: Vec<_> = datasets.into_iter().filter(|d| applied.datasets.contains(&d.name)).collect();
    if !shown.is_empty() {
        println!("\nDatasets");
        println!("{}", datasets_table(&shown));
    }
    match outcome {
        DevOutcome::Succeeded => {
            println!("\nQuery the results: duckmesh query \"SELECT * FROM <dataset> LIMIT 10\" (API on {api_url})")
        }
        DevOutcome::Failed => {
            println!("\nA job did not succeed; worker logs are under the state directory's logs/ folder.")
        }
        DevOutcome::Interrupted => println!("\nStopped; run the same command again to resume."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duckmesh_storage::{cached_path, list_cached};
    use std::time::SystemTime;

    fn cache_file(root: &Path, digit: char, bytes: usize) {
        let path = cached_path(root, &digit.to_string().repeat(64));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("shard");
        std::fs::write(&path, vec![0u8; bytes]).expect("write");
        let day_ago = SystemTime::now() - Duration::from_secs(86_400);
        std::fs::File::options().write(true).open(&path).expect("open").set_modified(day_ago).expect("age");
    }

    fn knobs(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        move |name| map.get(name).cloned()
    }

    #[tokio::test]
    async fn dev_trims_only_its_own_worker_cache_to_the_configured_bound() {
        let state = tempfile::tempdir().expect("state");
        let root = state.path().join("cache");
        cache_file(&root, '1', 1 << 20);
        cache_file(&root, '2', 1 << 20);
        let own = root.display().to_string();

        // Under the default bound nothing goes.
        let pruned = trim_worker_cache(state.path(), knobs(&[("DUCKMESH_CACHE_DIR", own.clone())])).await;
        assert_eq!(pruned.expect("trim").map(|p| (p.removed_files, p.kept_files)), Some((0, 2)));

        // A cache dir pointing elsewhere is not dev's to trim.
        let elsewhere =
            knobs(&[("DUCKMESH_CACHE_DIR", "/srv/cache".into()), ("DUCKMESH_DEV_CACHE_MAX_MB", "0".into())]);
        assert_eq!(trim_worker_cache(state.path(), elsewhere).await.expect("trim"), None);
        assert_eq!(list_cached(&root).expect("list").len(), 2);

        // A 1 MiB bound removes the least recently used file (both old; ties go by hash).
        let pruned = trim_worker_cache(state.path(), knobs(&[("DUCKMESH_DEV_CACHE_MAX_MB", "1".into())]))
            .await
            .expect("trim")
            .expect("trimmed");
        assert_eq!((pruned.removed_files, pruned.removed_bytes, pruned.kept_bytes), (1, 1 << 20, 1 << 20));
        let left: Vec<_> = list_cached(&root).expect("list").into_iter().map(|f| f.sha256).collect();
        assert_eq!(left, ["2".repeat(64)]);

        // A bad value is a configuration error that names the variable.
        let error = trim_worker_cache(state.path(), knobs(&[("DUCKMESH_DEV_CACHE_MAX_MB", "lots".into())]))
            .await
            .expect_err("bad knob");
        assert_eq!(error.error_code(), "invalid_config");
        assert!(error.to_string().contains("DUCKMESH_DEV_CACHE_MAX_MB"), "{error}");
    }
}
