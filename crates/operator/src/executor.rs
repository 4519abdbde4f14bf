//! The Kubernetes executor: one worker Pod per leased attempt, and the watcher that turns
//! worker pods' ends into [`RunnerEnded`] reports for the scheduler.
//!
//! Pods are owned by their `Task` resource (controller owner reference), which is owned by its
//! Job: deleting a Job garbage-collects its Tasks and their pods, and `kubectl get pods -l
//! duckmesh.io/task=<task>` lists a task's attempts. The owner is looked up when the pod is
//! created; the Job controller creates Task resources before it registers the job in the
//! catalog, so a leased task always has one.

use crate::controllers::FIELD_MANAGER;
use crate::decide::{self, PodDecision};
use crate::error::is_status;
use crate::names;
use crate::pod::{WorkerPodConfig, pod_name_of, task_resource_of, worker_pod};
use duckmesh_catalog::Catalog;
use duckmesh_core::AttemptId;
use duckmesh_resources::Task;
use duckmesh_scheduler::metrics::{ControlPlaneMetrics, Controller, ReconcileResult};
use duckmesh_scheduler::{Executor, ExecutorError, Launch, RunnerEnded};
use duckmesh_telemetry::Metrics;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Runs attempts as worker Pods.
#[derive(Clone)]
pub struct PodExecutor {
    client: Client,
    catalog: Catalog,
    config: WorkerPodConfig,
}

impl std::fmt::Debug for PodExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodExecutor").field("image", &self.config.image).finish_non_exhaustive()
    }
}

impl PodExecutor {
    /// An executor creating pods from `config`.
    pub fn new(client: Client, catalog: Catalog, config: WorkerPodConfig) -> Self {
        Self { client, catalog, config }
    }

    async fn create(&self, launch: Launch) -> Result<(), ExecutorError> {
        let namespace = launch.task.namespace.clone();
        let tasks: Api<Task> = Api::namespaced(self.client.clone(), &namespace);
        let task_resource = task_resource_of(&launch);
        let owner = match tasks.get_opt(&task_resource).await {
            Ok(Some(task)) => task.controller_owner_ref(&()).map(|mut owner| {
                owner.block_owner_deletion = Some(true);
                owner
            }),
            Ok(None) => None,
            Err(error) => {
                return Err(ExecutorError::new("kube_api_error", format!("looking up Task {task_resource}: {error}")));
            }
        };
        let Some(owner) = owner else {
            return Err(ExecutorError::new(
                "owner_not_found",
                format!("Task resource {namespace}/{task_resource} does not exist; the worker pod would have no owner"),
            ));
        };
        let pod = worker_pod(&launch, owner, &self.config);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        match pods.create(&params, &pod).await {
            Ok(_) => {
                info!(pod = pod.name_any(), task = %launch.lease.task, attempt = %launch.lease.attempt, "worker pod created");
                Ok(())
            }
            // Deterministic names make a repeated launch of the same attempt a no-op.
            Err(error) if is_status(&error, 409) => Ok(()),
            Err(error) => {
                Err(ExecutorError::new("pod_create_failed", format!("creating pod {}: {error}", pod.name_any())))
            }
        }
    }

    async fn delete(&self, attempt: AttemptId) -> Result<(), ExecutorError> {
        let catalog_error =
            |error: duckmesh_catalog::Error| ExecutorError::new("catalog_unavailable", error.to_string());
        let record = match self.catalog.attempt(attempt).await {
            Ok(record) => record,
            Err(duckmesh_catalog::Error::NotFound { .. }) => return Ok(()),
            Err(error) => return Err(catalog_error(error)),
        };
        let task = self.catalog.task(record.task).await.map_err(catalog_error)?;
        let job = match task.job {
            Some(job) => Some(self.catalog.job(job).await.map_err(catalog_error)?.name),
            None => None,
        };
        let resource = match &job {
            Some(job) => names::task_resource_name(job, &task.name),
            None => task.name.clone(),
        };
        let name = names::pod_name(&resource, record.number);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &task.namespace);
        match pods.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {
                info!(pod = name, attempt = %attempt, "worker pod deleted");
                Ok(())
            }
            Err(error) if is_status(&error, 404) => Ok(()),
            Err(error) => Err(ExecutorError::new("pod_delete_failed", format!("deleting pod {name}: {error}"))),
        }
    }
}

impl Executor for PodExecutor {
    async fn launch(&self, launch: Launch) -> Result<(), ExecutorError> {
        let name = pod_name_of(&launch);
        debug!(pod = name, "launching a worker pod");
        self.create(launch).await
    }

    async fn stop(&self, attempt: AttemptId) -> Result<(), ExecutorError> {
        self.delete(attempt).await
    }
}

/// Watches worker pods (by label) and reports how their runners ended; deletes pods whose
/// attempt is no longer live. Runs until `shutdown`.
///
/// Reports are idempotent on the scheduler's side (failures are recorded fenced, so a second
/// report of the same attempt changes nothing); a reported pod is annotated so that later
/// events about it are not reported again. A pod deleted while the watch was down is not seen
/// here: its attempt's lease runs out and the scheduler's reaper retries the task.
#[derive(Clone)]
pub struct PodWatcher {
    client: Client,
    catalog: Catalog,
    namespace: Option<String>,
    ended: mpsc::Sender<RunnerEnded>,
    metrics: Option<ControlPlaneMetrics>,
}

impl std::fmt::Debug for PodWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodWatcher").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

impl PodWatcher {
    /// A watcher over `namespace` (all namespaces when `None`) reporting into `ended`.
    pub fn new(
        client: Client,
        catalog: Catalog,
        namespace: Option<String>,
        ended: mpsc::Sender<RunnerEnded>,
        metrics: Option<Metrics>,
    ) -> Self {
        Self { client, catalog, namespace, ended, metrics: metrics.as_ref().map(ControlPlaneMetrics::new) }
    }

    fn api(&self) -> Api<Pod> {
        match &self.namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }

    /// Runs the watch until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let config = watcher::Config::default().labels(names::WORKER_SELECTOR);
        let stream = watcher::watcher(self.api(), config).default_backoff();
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                event = stream.next() => event,
            };
            match event {
                None => return,
                Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                    self.observe(&pod, false).await
                }
                Some(Ok(watcher::Event::Delete(pod))) => self.observe(&pod, true).await,
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
                Some(Err(error)) => {
                    warn!(error = %error, error_code = "watch_failed", "watching worker pods failed; retrying")
                }
            }
        }
    }

    /// Handles one observation of a pod (`deleted`: it is gone).
    pub async fn observe(&self, pod: &Pod, deleted: bool) {
        let started = Instant::now();
        let result = self.handle(pod, deleted).await;
        let outcome = if result.is_ok() { ReconcileResult::Success } else { ReconcileResult::Error };
        if let Err(error) = result {
            warn!(pod = pod.name_any(), error = %error, error_code = error.error_code(), "handling a worker pod failed");
        }
        if let Some(metrics) = &self.metrics {
            metrics.observe_reconcile(Controller::WorkerPod, outcome, started.elapsed().as_secs_f64());
        }
    }

    async fn handle(&self, pod: &Pod, deleted: bool) -> crate::Result<()> {
        if deleted {
            if let Some(ended) = decide::decide_pod_deleted(pod) {
                self.report(ended).await;
            }
            return Ok(());
        }
        let Some(identity) = decide::pod_attempt(pod) else { return Ok(()) };
        // The catalog is only asked about pods that still run.
        let needs_state = decide::pod_exit(pod).is_none() && pod.metadata.deletion_timestamp.is_none();
        let state = if needs_state {
            match self.catalog.attempt(identity.attempt).await {
                Ok(attempt) => Some(attempt.state),
                Err(duckmesh_catalog::Error::NotFound { .. }) => None,
                Err(error) => return Err(error.into()),
            }
        } else {
            None
        };
        let namespace = pod.namespace().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        match decide::decide_pod(pod, state) {
            PodDecision::Keep => {}
            PodDecision::Report(ended) => {
                self.report(ended).await;
                let patch = serde_json::json!({"metadata": {"annotations": {names::REPORTED_ANNOTATION: "true"}}});
                match pods.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => {}
                    Err(error) if is_status(&error, 404) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            PodDecision::DeleteStale => {
                info!(pod = pod.name_any(), attempt = %identity.attempt, "deleting a worker pod whose attempt is no longer live");
                match pods.delete(&pod.name_any(), &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(error) if is_status(&error, 404) => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Ok(())
    }

    async fn report(&self, ended: RunnerEnded) {
        debug!(task = %ended.task, attempt = %ended.attempt, exit = ?ended.exit, "worker pod ended");
        if self.ended.send(ended).await.is_err() {
            debug!("the scheduler stopped; dropping a runner end (the lease reaper covers it)");
        }
    }
}
