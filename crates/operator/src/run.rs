//! Wiring: the start-up checks, the health and metrics server, leader election, and — while
//! this replica leads — the three controllers, the worker-pod watcher, the commit listener and
//! the scheduler loop. Losing the Lease stops all of them; the replica then campaigns again as
//! a standby. Shutdown always wins over everything else: the leader stops its work (waiting at
//! most 2 s, then aborting it), never leads again, releases the Lease and exits.

use crate::commits::CommitWatcher;
use crate::controllers::{Context, Resync, error_policy, reconcile_dataset, reconcile_job, reconcile_task};
use crate::error::{Error, Result, is_status};
use crate::executor::{PodExecutor, PodWatcher};
use crate::leader::{ElectionTimings, LeaderElector};
use crate::names;
use crate::pod::WorkerPodConfig;
use crate::triggers::{self, Triggers};
use axum::http::StatusCode;
use axum::routing::get;
use duckmesh_catalog::Catalog;
use duckmesh_resources::{Dataset, Job, Task};
use duckmesh_scheduler::{Scheduler, SchedulerOptions};
use duckmesh_telemetry::Metrics;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::Controller;
use kube::runtime::watcher;
use kube::{Client, Resource};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Everything the operator is configured with (see docs/operator.md).
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Watch only this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_listen: SocketAddr,
    /// What every worker pod gets.
    pub worker: WorkerPodConfig,
    /// This replica's name in the election and in Events (the pod name).
    pub identity: String,
    /// The Lease's name.
    pub lease_name: String,
    /// The Lease's namespace (the operator's own).
    pub lease_namespace: String,
    /// Election timings.
    pub election: ElectionTimings,
    /// Scheduler pass interval (the catalog's NOTIFY wakes it sooner).
    pub scheduler_tick: Duration,
    /// Cap on active tasks across the installation.
    pub global_limit: Option<usize>,
    /// Reconcile resync intervals.
    pub resync: Resync,
}

/// Whether this replica leads, and whether it is ready, for `/readyz`.
#[derive(Debug, Default)]
struct Health {
    leading: AtomicBool,
    started: AtomicBool,
}

/// Runs the operator until `shutdown`, with a client from the environment (in-cluster
/// service account, or `KUBECONFIG`).
pub async fn run(
    config: OperatorConfig,
    catalog: Catalog,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<()> {
    let client = Client::try_default().await?;
    run_with_client(client, config, catalog, metrics, shutdown).await
}

/// [`run`] with a given client.
pub async fn run_with_client(
    client: Client,
    config: OperatorConfig,
    catalog: Catalog,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<()> {
    check_crds(&client, config.namespace.as_deref()).await?;
    // The control plane's series are served from the start, by a standby as by the leader.
    let _ = duckmesh_scheduler::metrics::ControlPlaneMetrics::new(&metrics);
    let health = Arc::new(Health::default());
    let server = serve(config.metrics_listen, &metrics, catalog.clone(), Arc::clone(&health), shutdown.clone()).await?;
    health.started.store(true, Ordering::SeqCst);

    let leases: Api<Lease> = Api::namespaced(client.clone(), &config.lease_namespace);
    let mut elector = LeaderElector::new(leases, config.lease_name.clone(), config.identity.clone(), config.election);
    let timings = config.election;
    'campaign: loop {
        // Standby until the Lease is ours. A round in flight is never abandoned (a write the
        // API server accepted must be known, or the Lease could not be released); the token is
        // checked before and after each one.
        loop {
            if shutdown.is_cancelled() {
                break 'campaign;
            }
            match elector.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => warn!(error = %error, error_code = error.error_code(), "leader election round failed"),
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break 'campaign,
                () = tokio::time::sleep(timings.retry_period) => {}
            }
        }
        // Never start leading once shutdown began: release the Lease just taken instead.
        if shutdown.is_cancelled() {
            break 'campaign;
        }
        health.leading.store(true, Ordering::SeqCst);
        let lead = shutdown.child_token();
        let mut workers = lead_workers(&client, &config, &catalog, &metrics, &lead);
        let mut renewed = Instant::now();
        let ended = loop {
            // Biased: shutdown always wins. Cancelling `shutdown` also cancels `lead`, which
            // ends the workers; a random branch order could take that end for a crash.
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break LeadEnd::Shutdown,
                Some(done) = workers.join_next() => {
                    if shutdown.is_cancelled() {
                        break LeadEnd::Shutdown;
                    }
                    // A worker ended on its own: lead no longer, let another replica try.
                    error!(result = ?done.map(|_| ()), error_code = "controller_stopped", "a controller stopped unexpectedly");
                    break LeadEnd::WorkerStopped;
                }
                () = tokio::time::sleep(timings.retry_period) => {}
            }
            match elector.try_acquire_or_renew().await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {
                    warn!(error_code = "leadership_lost", "lost the lease; stopping controllers");
                    break LeadEnd::Lost;
                }
                Err(error) if renewed.elapsed() > timings.renew_deadline => {
                    warn!(error = %error, error_code = "leadership_lost", "could not renew the lease in time; stopping controllers");
                    break LeadEnd::Lost;
                }
                Err(error) => {
                    warn!(error = %error, error_code = error.error_code(), "renewing the lease failed; retrying")
                }
            }
        };
        lead.cancel();
        stop_workers(&mut workers, LEAD_STOP_GRACE).await;
        health.leading.store(false, Ordering::SeqCst);
        if ended == LeadEnd::Shutdown || shutdown.is_cancelled() {
            break;
        }
    }
    // Bounded: an unreachable API server must not keep the process from exiting (the Lease
    // then simply expires).
    match tokio::time::timeout(timings.renew_deadline, elector.release()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => warn!(error = %error, error_code = error.error_code(), "releasing the lease failed"),
        Err(_) => warn!(error_code = "lease_release_timeout", "releasing the lease timed out; it will expire"),
    }
    shutdown.cancel();
    if tokio::time::timeout(timings.renew_deadline, server).await.is_err() {
        warn!(error_code = "serve_stop_timeout", "the metrics server did not stop in time");
    }
    info!("operator stopped");
    Ok(())
}

/// Why this replica stopped leading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeadEnd {
    /// Shutdown was requested: stop for good.
    Shutdown,
    /// The Lease was lost (another holder, or no renewal within the deadline).
    Lost,
    /// A controller, the pod watcher or the scheduler ended on its own.
    WorkerStopped,
}

/// How long the leader's workers get to finish after shutdown or a lost Lease, before they are
/// aborted. Short on purpose: the standby waits for the Lease release that follows. The pod
/// watcher, the commit listener and the scheduler end at once on their token; kube's
/// controllers, asked to shut down gracefully, keep their queue open until every requeue they
/// hold comes due (minutes, with the idle resync), and one whose watch never became ready waits
/// for its store forever. Nothing needs to finish: every reconcile step is idempotent and the
/// catalog is the source of truth.
const LEAD_STOP_GRACE: Duration = Duration::from_secs(2);

/// Waits up to `grace` for the leader's workers to end after their token was cancelled, then
/// aborts what is left (see [`LEAD_STOP_GRACE`]).
async fn stop_workers(workers: &mut JoinSet<()>, grace: Duration) {
    let drained = tokio::time::timeout(grace, async { while workers.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        info!(
            remaining = workers.len(),
            grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            "aborting the leader's workers still draining (controllers hold queued requeues)"
        );
        workers.abort_all();
        while workers.join_next().await.is_some() {}
    }
    info!("leader's controllers, pod watcher and scheduler stopped");
}

/// Fails with a hint when a CRD is not installed (listing a kind whose CRD is missing answers
/// 404). Needs no permission beyond what the controllers need anyway.
pub async fn check_crds(client: &Client, namespace: Option<&str>) -> Result<()> {
    async fn probe<K>(client: &Client, namespace: Option<&str>) -> Result<Option<String>>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = match namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        };
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => Ok(None),
            Err(error) if is_status(&error, 404) => Ok(Some(format!("{}.{}", K::plural(&()), K::group(&())))),
            Err(error) => Err(error.into()),
        }
    }
    let missing: Vec<String> = [
        probe::<Dataset>(client, namespace).await?,
        probe::<Job>(client, namespace).await?,
        probe::<Task>(client, namespace).await?,
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() { Ok(()) } else { Err(Error::CrdsMissing { missing }) }
}

fn api_for<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Starts everything only the leader runs.
fn lead_workers(
    client: &Client,
    config: &OperatorConfig,
    catalog: &Catalog,
    metrics: &Metrics,
    lead: &CancellationToken,
) -> JoinSet<()> {
    let mut workers = JoinSet::new();
    let namespace = config.namespace.as_deref();
    let (ended_tx, ended_rx) = mpsc::channel(1024);

    let executor = Arc::new(PodExecutor::new(client.clone(), catalog.clone(), config.worker.clone()));
    let options = SchedulerOptions {
        tick: config.scheduler_tick,
        global_limit: config.global_limit,
        ..SchedulerOptions::new(format!("operator/{}", config.identity))
    };
    let scheduler = Scheduler::new(catalog.clone(), executor, options, Some(metrics.clone()));
    let token = lead.clone();
    workers.spawn(async move { scheduler.run(ended_rx, token).await });

    let watcher =
        PodWatcher::new(client.clone(), catalog.clone(), config.namespace.clone(), ended_tx, Some(metrics.clone()));
    workers.spawn(watcher.run(lead.clone()));

    // Catalog changes wake the reconciles they concern: commits (the commit listener), a
    // registered dataset (the Jobs and Tasks waiting for it), a finished Job (its Tasks), a
    // Task's change (its Job). The resyncs stay as the fallback.
    let (triggers, receivers) = Triggers::channels();
    workers.spawn(CommitWatcher::new(catalog.clone(), triggers.clone()).run(lead.clone()));

    let mut context =
        Context::new(client.clone(), catalog.clone(), Some(metrics.clone()), Some(config.identity.clone()));
    context.resync = config.resync;
    context.triggers = triggers;
    let ctx = Arc::new(context);
    let stop = |token: CancellationToken| async move { token.cancelled().await };

    let datasets = Controller::new(api_for::<Dataset>(client, namespace), watcher::Config::default().any_semantic())
        .reconcile_on(triggers::stream(receivers.datasets))
        .reconcile_all_on(triggers::stream(receivers.all_datasets))
        .graceful_shutdown_on(stop(lead.clone()))
        .run(reconcile_dataset, error_policy, Arc::clone(&ctx))
        .for_each(|_| futures::future::ready(()));
    workers.spawn(datasets);

    let owned_tasks = watcher::Config::default().labels(&format!("{}={}", names::MANAGED_BY, names::MANAGER));
    let jobs = Controller::new(api_for::<Job>(client, namespace), watcher::Config::default().any_semantic())
        .owns(api_for::<Task>(client, namespace), owned_tasks)
        .reconcile_on(triggers::stream(receivers.jobs))
        .graceful_shutdown_on(stop(lead.clone()))
        .run(reconcile_job, error_policy, Arc::clone(&ctx))
        .for_each(|_| futures::future::ready(()));
    workers.spawn(jobs);

    let tasks = Controller::new(api_for::<Task>(client, namespace), watcher::Config::default().any_semantic())
        .owns(api_for::<Pod>(client, namespace), watcher::Config::default().labels(names::WORKER_SELECTOR))
        .reconcile_on(triggers::stream(receivers.tasks))
        .graceful_shutdown_on(stop(lead.clone()))
        .run(reconcile_task, error_policy, Arc::clone(&ctx))
        .for_each(|_| futures::future::ready(()));
    workers.spawn(tasks);
    info!("leading: controllers, pod watcher, commit listener and scheduler started");
    workers
}

/// Binds the health and metrics server and serves it until `shutdown`. `/healthz` answers
/// while the process runs; `/readyz` once start-up checks passed and the catalog answers
/// (standbys are ready too: they are healthy and waiting to lead); `/metrics` is the registry.
async fn serve(
    address: SocketAddr,
    metrics: &Metrics,
    catalog: Catalog,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let ready_health = Arc::clone(&health);
    let router = duckmesh_telemetry::metrics_router(metrics).route("/healthz", get(|| async { "ok" })).route(
        "/readyz",
        get(move || {
            let health = Arc::clone(&ready_health);
            let catalog = catalog.clone();
            async move {
                if !health.started.load(Ordering::SeqCst) {
                    return (StatusCode::SERVICE_UNAVAILABLE, "starting".to_owned());
                }
                match catalog.ping().await {
                    Ok(()) => {
                        let role = if health.leading.load(Ordering::SeqCst) { "leader" } else { "standby" };
                        (StatusCode::OK, role.to_owned())
                    }
                    Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.error_code().to_owned()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| Error::Serve { address: address.to_string(), source })?;
    info!(address = %address, "serving /metrics, /healthz and /readyz");
    Ok(tokio::spawn(async move {
        let stop = async move { shutdown.cancelled().await };
        if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
            warn!(error = %error, error_code = "serve_failed", "the metrics server stopped");
        }
    }))
}
