//! The reconcilers of `Dataset`, `Job` and `Task`, in the controller-rs shape: a free
//! `reconcile(obj, ctx) -> Result<Action>` inside kube's `finalizer()` helper, a synchronous
//! `error_policy` that counts the failure and backs off, status written by server-side apply
//! with one field manager, and Events through one recorder.
//!
//! Each reconciler follows the same steps: validate (pure) → apply to the catalog → build the
//! desired children (pure, [`crate::decide`]) → apply them → project catalog state into a
//! bounded status. An invalid resource is answered with `Ready=False`, a Warning event and
//! `await_change` — never a crash loop.

use crate::decide::{self, NotReady};
use crate::error::{Error, Result, is_status};
use crate::names;
use crate::triggers::{Triggers, Waiter, Waiting};
use chrono::{DateTime, Utc};
use duckmesh_catalog::Catalog;
use duckmesh_resources::{Dataset, Job, JobStatus, Task, TaskStatus};
use duckmesh_scheduler::metrics::{ControlPlaneMetrics, Controller, ControllerLabels, ReconcileResult};
use duckmesh_scheduler::{ApplyError, ObjectRef, apply_dataset, apply_job, apply_task};
use duckmesh_telemetry::Metrics;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, instrument, warn};

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "duckmesh-operator";
/// Finalizer of Datasets (notes that catalog data is retained when the resource goes).
pub const DATASET_FINALIZER: &str = "duckmesh.io/dataset";
/// Finalizer of Jobs (cancels the job in the catalog and stops its pods).
pub const JOB_FINALIZER: &str = "duckmesh.io/job";
/// Finalizer of standalone Tasks (cancels the task in the catalog, frees its name and stops its
/// pods). A Job's Tasks have none: deleting the Job does that for all of them at once.
pub const TASK_FINALIZER: &str = "duckmesh.io/task";

/// How often controllers look at the catalog again while work is in progress (the catalog
/// changes without Kubernetes events: leases, retries, commits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resync {
    /// While a Job is not finished.
    pub active: Duration,
    /// While a Task is not finished. Longer than for Jobs: a Job may have 10,000 Tasks, and
    /// the changes that matter (a pod starting or ending) wake the Task's reconcile anyway.
    pub task: Duration,
    /// For Datasets (freshness), and for finished Jobs and Tasks.
    pub idle: Duration,
    /// While a referenced dataset is missing.
    pub waiting: Duration,
}

impl Default for Resync {
    fn default() -> Self {
        Self {
            active: Duration::from_secs(10),
            task: Duration::from_secs(60),
            idle: Duration::from_secs(300),
            waiting: Duration::from_secs(15),
        }
    }
}

/// What every reconcile gets.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// The catalog.
    pub catalog: Catalog,
    /// Publishes Events.
    pub recorder: Recorder,
    /// The control plane's metrics, when exported.
    pub metrics: Option<ControlPlaneMetrics>,
    /// Requeue intervals.
    pub resync: Resync,
    /// The clock (a plain function so tests can pin it).
    pub now: fn() -> DateTime<Utc>,
    /// Wakes other reconciles (a registered dataset wakes the Jobs waiting for it, a finished
    /// Job its Tasks, a Task's change its Job). Sends nowhere by default.
    pub triggers: Triggers,
    /// Jobs and standalone Tasks waiting for a dataset to be registered.
    pub waiting: Waiting,
    failures: Mutex<HashMap<String, u32>>,
    /// Uids whose `DatasetNotFound` Warning is held back (see [`DATASET_WAIT_QUIET`]).
    deferred_warnings: Mutex<HashSet<String>>,
}

/// How long after its creation a Job or Task waits for a missing dataset without a Warning
/// event. `kubectl apply -f` of a file holding a Job and its Datasets creates them one by one,
/// and the Job's reconcile may run before the Datasets are registered: that is expected, and
/// registering a Dataset wakes the Jobs waiting for it at once. The condition says
/// `DatasetNotFound` meanwhile; the Warning comes only if the dataset is still missing after this.
pub const DATASET_WAIT_QUIET: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("resync", &self.resync).finish_non_exhaustive()
    }
}

impl Context {
    /// A context whose events are reported as `duckmesh-operator` from `instance` (the pod name).
    pub fn new(client: Client, catalog: Catalog, metrics: Option<Metrics>, instance: Option<String>) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            catalog,
            metrics: metrics.as_ref().map(ControlPlaneMetrics::new),
            resync: Resync::default(),
            now: Utc::now,
            triggers: Triggers::default(),
            waiting: Waiting::default(),
            failures: Mutex::new(HashMap::new()),
            deferred_warnings: Mutex::new(HashSet::new()),
        }
    }

    /// Whether the not-ready Warning of a resource is due now, and how soon to look again when
    /// it is held back. `changed` says whether the not-ready status was just written. A
    /// `DatasetNotFound` within [`DATASET_WAIT_QUIET`] of the resource's creation is held back;
    /// a held-back Warning is published on the first reconcile after the quiet period if the
    /// dataset is still missing.
    fn not_ready_warning(
        &self,
        meta: &kube::core::ObjectMeta,
        why: NotReady,
        changed: bool,
    ) -> (bool, Option<Duration>) {
        let Some(uid) = meta.uid.clone() else { return (changed, None) };
        let mut deferred = self.deferred_warnings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let age = meta
            .creation_timestamp
            .as_ref()
            .and_then(|t| DateTime::<Utc>::from_timestamp_millis(t.0.as_millisecond()))
            .and_then(|created| ((self.now)() - created).to_std().ok())
            .unwrap_or(Duration::MAX);
        if why == NotReady::DatasetNotFound && age < DATASET_WAIT_QUIET {
            if changed {
                deferred.insert(uid);
            }
            return (false, Some(DATASET_WAIT_QUIET - age));
        }
        let was_deferred = deferred.remove(&uid);
        (changed || (was_deferred && why == NotReady::DatasetNotFound), None)
    }

    /// Forgets a held-back Warning (the resource was registered).
    fn registered(&self, uid: Option<&String>) {
        if let Some(uid) = uid {
            self.deferred_warnings.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(uid);
        }
    }

    async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) {
        let event = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            // Events are best effort: never fail a reconcile for one.
            warn!(error = %error, error_code = "event_failed", "publishing an event failed");
        }
    }

    fn observe(&self, controller: Controller, result: &Result<Action>, started: Instant) {
        let outcome = match result {
            Ok(action) if *action == Action::await_change() => ReconcileResult::Success,
            Ok(_) => ReconcileResult::RequeueAfter,
            Err(_) => ReconcileResult::Error,
        };
        if let Some(metrics) = &self.metrics {
            metrics.observe_reconcile(controller, outcome, started.elapsed().as_secs_f64());
        }
    }

    fn succeeded(&self, uid: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(uid);
        }
    }

    /// The next back-off for an object that failed: 5 s doubling to 5 min.
    fn backoff(&self, uid: &str) -> Duration {
        let n = match self.failures.lock() {
            Ok(mut failures) => {
                let n = failures.entry(uid.to_owned()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        };
        backoff_for(n)
    }
}

/// Back-off after `failures` consecutive failures: 5 s · 2^(n-1), at most 5 minutes.
pub fn backoff_for(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    Duration::from_secs(5u64.saturating_mul(1 << exponent)).min(Duration::from_secs(300))
}

fn object_ref<K: Resource>(object: &K) -> Result<ObjectRef> {
    let name = object.meta().name.clone().unwrap_or_default();
    let missing = |field| Error::MissingField { kind: "object", name: name.clone(), field };
    Ok(ObjectRef {
        namespace: object.meta().namespace.clone().ok_or_else(|| missing("metadata.namespace"))?,
        uid: object.meta().uid.clone().ok_or_else(|| missing("metadata.uid"))?,
        generation: object.meta().generation.unwrap_or(1),
        name,
    })
}

/// Writes `status` with server-side apply (field manager [`FIELD_MANAGER`], forced: the
/// operator owns status).
async fn apply_status<K>(api: &Api<K>, name: &str, status: &impl Serialize) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

/// How a failed apply is answered: the condition to show, whether to warn, and when to look
/// again (`None`: the error is transient, hand it to the error policy).
fn answer(error: &ApplyError, resync: &Resync) -> (NotReady, Option<Action>) {
    let why = NotReady::from_error_code(error.error_code());
    match why {
        NotReady::InvalidSpec | NotReady::Rejected if !error.is_retryable() => (why, Some(Action::await_change())),
        NotReady::DatasetNotFound => (why, Some(Action::requeue(resync.waiting))),
        _ => (why, None),
    }
}

// ---------------------------------------------------------------------------------------------
// Dataset

/// Reconciles a Dataset: registers it in the catalog and projects the catalog's view of it.
#[instrument(skip_all, fields(namespace = dataset.namespace(), dataset = dataset.name_any(), trace_id = duckmesh_telemetry::current_trace_id()))]
pub async fn reconcile_dataset(dataset: Arc<Dataset>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let api: Api<Dataset> = Api::namespaced(ctx.client.clone(), &dataset.namespace().unwrap_or_default());
    let result = finalizer(&api, DATASET_FINALIZER, dataset, |event| async {
        match event {
            Finalized::Apply(dataset) => apply_dataset_resource(&dataset, &ctx, &api).await,
            Finalized::Cleanup(dataset) => cleanup_dataset(&dataset, &ctx).await,
        }
    })
    .await
    .map_err(Error::from);
    ctx.observe(Controller::Dataset, &result, started);
    result
}

async fn apply_dataset_resource(dataset: &Dataset, ctx: &Context, api: &Api<Dataset>) -> Result<Action> {
    let object = object_ref(dataset)?;
    let generation = dataset.meta().generation;
    let previous = dataset.status.as_ref();
    let now = (ctx.now)();
    let (status, action) = match apply_dataset(&ctx.catalog, &object, &dataset.spec).await {
        Ok(record) => {
            // Jobs and Tasks that were refused for want of this dataset can register now.
            let woken = ctx.waiting.wake(&object.namespace, &object.name, &ctx.triggers);
            if woken > 0 {
                info!(woken, "dataset registered: waking the resources waiting for it");
            }
            (decide::dataset_status(&record, previous, generation, now), Action::requeue(ctx.resync.idle))
        }
        Err(error) => {
            let (why, action) = answer(&error, &ctx.resync);
            let Some(action) = action else { return Err(error.into()) };
            let status = decide::dataset_not_ready(previous, why, &error.to_string(), generation, now);
            if decide::dataset_status_changed(previous, &status) {
                ctx.publish(dataset, EventType::Warning, why.reason(), error.to_string(), "Register").await;
            }
            (status, action)
        }
    };
    if decide::dataset_status_changed(previous, &status) {
        apply_status::<Dataset>(api, &object.name, &status).await?;
    }
    ctx.succeeded(&object.uid);
    Ok(action)
}

/// Deleting a Dataset resource never deletes data: its committed snapshots and files stay in
/// the catalog and the bucket (a Dataset re-created under the same name continues from them).
/// The operator says so in an Event; removing the data is an explicit, separate operation.
async fn cleanup_dataset(dataset: &Dataset, ctx: &Context) -> Result<Action> {
    let note = format!(
        "dataset {} was deleted from Kubernetes; its committed snapshots and files are retained in the catalog and object storage",
        dataset.name_any()
    );
    info!(error_code = "dataset_data_retained", "{note}");
    ctx.publish(dataset, EventType::Normal, "DataRetained", note, "Delete").await;
    Ok(Action::await_change())
}

// ---------------------------------------------------------------------------------------------
// Job

/// Reconciles a Job: creates its owned Task resources, registers it in the catalog, and keeps
/// a bounded summary of its progress in its status.
#[instrument(skip_all, fields(namespace = job.namespace(), job = job.name_any(), trace_id = duckmesh_telemetry::current_trace_id()))]
pub async fn reconcile_job(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let result = finalizer(&api, JOB_FINALIZER, job, |event| async {
        match event {
            Finalized::Apply(job) => apply_job_resource(&job, &ctx, &api).await,
            Finalized::Cleanup(job) => cleanup_job(&job, &ctx).await,
        }
    })
    .await
    .map_err(Error::from);
    ctx.observe(Controller::Job, &result, started);
    result
}

async fn apply_job_resource(job: &Job, ctx: &Context, api: &Api<Job>) -> Result<Action> {
    let object = object_ref(job)?;
    let generation = job.meta().generation;
    let previous = job.status.as_ref();
    let now = (ctx.now)();

    // A finished job is immutable in the catalog: a later spec change is reported, never
    // applied (neither to the catalog nor to the Task resources, which keep showing what ran).
    let registered_record = match ctx.catalog.job_by_name(&object.namespace, &object.name).await {
        Ok(record) if record.uid == object.uid => Some(record),
        Ok(_) | Err(duckmesh_catalog::Error::NotFound { .. }) => None,
        Err(error) => return Err(error.into()),
    };
    if let Some(record) = &registered_record
        && record.phase.is_terminal()
        && object.generation > record.generation
    {
        return finished_job_changed(job, ctx, api, record).await;
    }

    if let Err(errors) = duckmesh_resources::validate_job(&object.name, &job.spec) {
        let message = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        return job_not_ready(job, ctx, api, NotReady::InvalidSpec, &message, Action::await_change()).await;
    }

    // The Task resources come first, so that every task the catalog can lease already has its
    // resource (the owner of its worker pods). They are applied until the job is registered:
    // the catalog fixes a job's tasks then, so afterwards they keep showing what it runs.
    let registered = registered_record.is_some();
    if !registered {
        let tasks: Api<Task> = Api::namespaced(ctx.client.clone(), &object.namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        for task in decide::desired_tasks(job)? {
            let name = task.name_any();
            let mut body = serde_json::to_value(&task)?;
            if let Some(map) = body.as_object_mut() {
                map.remove("status");
            }
            tasks.patch(&name, &params, &Patch::Apply(&body)).await?;
        }
    }

    let waiter = Waiter::Job(object.name.clone());
    let upsert = match apply_job(&ctx.catalog, &object, &job.spec).await {
        Ok(upsert) => upsert,
        Err(error) => {
            let (why, action) = answer(&error, &ctx.resync);
            let Some(action) = action else { return Err(error.into()) };
            if await_dataset(ctx, &error, waiter).await? {
                return Ok(Action::requeue(Duration::ZERO));
            }
            return job_not_ready(job, ctx, api, why, &error.to_string(), action).await;
        }
    };
    ctx.waiting.forget(&object.namespace, &waiter);
    ctx.registered(job.meta().uid.as_ref());
    if !upsert.cancelled_attempts.is_empty() {
        info!(cancelled = upsert.cancelled_attempts.len(), "a new incarnation of the job replaced an older one");
    }
    let summary = ctx.catalog.job_summary(upsert.job.id).await?;
    let status = decide::job_status(&summary, previous, generation, now);
    if previous != Some(&status) {
        apply_status::<Job>(api, &object.name, &status).await?;
        if previous.and_then(|s| s.start_time.as_deref()).is_none() && status.start_time.is_some() {
            let note = "a worker pod of the job is running".to_owned();
            ctx.publish(job, EventType::Normal, "Started", note, "Run").await;
        }
        let was = previous.and_then(|s| s.phase.as_deref());
        if was != status.phase.as_deref() {
            announce_job_phase(job, ctx, &status).await;
            if status.completion_time.is_some() {
                // The Tasks' own resync is slow: show every Task's final state now.
                wake_tasks_of_job(ctx, &object, upsert.job.id).await?;
            }
        }
    }
    ctx.succeeded(&object.uid);
    let finished = status.completion_time.is_some();
    Ok(Action::requeue(if finished { ctx.resync.idle } else { ctx.resync.active }))
}

async fn announce_job_phase(job: &Job, ctx: &Context, status: &JobStatus) {
    let counts = &status.counts;
    let (type_, reason, note) = match status.phase.as_deref() {
        Some("Succeeded") => (EventType::Normal, "Succeeded", format!("all {} tasks succeeded", counts.total)),
        Some("Failed") => (
            EventType::Warning,
            "Failed",
            format!("{} of {} tasks failed: {}", counts.failed, counts.total, status.failed_tasks.join(", ")),
        ),
        Some("Cancelled") => (EventType::Warning, "Cancelled", "the job was cancelled".to_owned()),
        // `Started` is announced when a worker actually runs (see `apply_job_resource`), not
        // when the first task is leased.
        _ => return,
    };
    ctx.publish(job, type_, reason, note, "Run").await;
}

/// The answer to a spec change of a finished job: the status keeps the outcome of the
/// generation that ran, `Ready=False reason=SpecChangedAfterFinish` says the change was not
/// applied, and a Warning event says so once per new generation.
async fn finished_job_changed(
    job: &Job,
    ctx: &Context,
    api: &Api<Job>,
    record: &duckmesh_catalog::JobRecord,
) -> Result<Action> {
    let previous = job.status.as_ref();
    let generation = job.meta().generation;
    let summary = ctx.catalog.job_summary(record.id).await?;
    let status = decide::job_status(&summary, previous, generation, (ctx.now)());
    let status = decide::job_spec_change_refused(status, previous, record.generation, generation, (ctx.now)());
    if previous != Some(&status) {
        apply_status::<Job>(api, &job.name_any(), &status).await?;
        let reported = previous.is_some_and(|p| {
            p.observed_generation == generation
                && p.conditions
                    .iter()
                    .any(|c| c.type_ == decide::READY && c.reason == decide::SPEC_CHANGED_AFTER_FINISH)
        });
        if !reported {
            let note = decide::spec_change_refused_message(record.generation, generation);
            warn!(error_code = "spec_changed_after_finish", "{note}");
            ctx.publish(job, EventType::Warning, decide::SPEC_CHANGED_AFTER_FINISH, note, "Update").await;
        }
    }
    if let Some(uid) = &job.meta().uid {
        ctx.succeeded(uid);
    }
    Ok(Action::requeue(ctx.resync.idle))
}

/// Triggers the reconcile of every Task resource of a job (it just finished).
async fn wake_tasks_of_job(ctx: &Context, object: &ObjectRef, job: duckmesh_core::JobId) -> Result<()> {
    for task in ctx.catalog.tasks_of_job(job).await? {
        ctx.triggers.task(&object.namespace, &names::task_resource_name(&object.name, &task.name));
    }
    Ok(())
}

/// When `error` says a dataset is missing, notes that `waiter` waits for it (registering it
/// wakes the waiter) and returns whether it exists by now: registered between the lookup and
/// the note, its wake-up was missed, so the caller should try again at once.
async fn await_dataset(ctx: &Context, error: &ApplyError, waiter: Waiter) -> Result<bool> {
    let ApplyError::UnknownDataset { dataset, namespace, .. } = error else { return Ok(false) };
    ctx.waiting.wait(namespace, dataset, waiter.clone());
    match ctx.catalog.dataset_by_name(namespace, dataset).await {
        Ok(_) => {
            ctx.waiting.forget(namespace, &waiter);
            Ok(true)
        }
        Err(duckmesh_catalog::Error::NotFound { .. }) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

async fn job_not_ready(
    job: &Job,
    ctx: &Context,
    api: &Api<Job>,
    why: NotReady,
    message: &str,
    action: Action,
) -> Result<Action> {
    let previous = job.status.as_ref();
    let status = decide::job_not_ready(previous, why, message, job.meta().generation, (ctx.now)());
    let changed = previous != Some(&status);
    if changed {
        apply_status::<Job>(api, &job.name_any(), &status).await?;
    }
    let (warn_now, look_again) = ctx.not_ready_warning(job.meta(), why, changed);
    if warn_now {
        ctx.publish(job, EventType::Warning, why.reason(), message.to_owned(), "Register").await;
    }
    if let Some(uid) = &job.meta().uid {
        ctx.succeeded(uid);
    }
    Ok(look_again.map_or(action, Action::requeue))
}

/// Deleting a Job cancels it in the catalog (its unfinished tasks become `Cancelled`, their
/// live attempts can no longer commit) and deletes its worker pods at once rather than waiting
/// for garbage collection. Its committed outputs stay.
async fn cleanup_job(job: &Job, ctx: &Context) -> Result<Action> {
    let object = object_ref(job)?;
    match ctx.catalog.job_by_name(&object.namespace, &object.name).await {
        Ok(record) if record.uid == object.uid => {
            let cancelled = ctx.catalog.delete_job(record.id).await?;
            info!(cancelled_attempts = cancelled.len(), "job deleted: cancelled in the catalog");
        }
        Ok(_) => {} // the catalog holds another incarnation; not ours to cancel
        Err(duckmesh_catalog::Error::NotFound { .. }) => {}
        Err(error) => return Err(error.into()),
    }
    let selector = format!("{},{}={}", names::WORKER_SELECTOR, names::JOB_LABEL, names::label_value(&object.name));
    delete_worker_pods(ctx, &object.namespace, &selector).await?;
    ctx.publish(job, EventType::Normal, "Cancelled", "the job was deleted: its tasks were cancelled".into(), "Delete")
        .await;
    Ok(Action::await_change())
}

/// Deletes the worker pods matching `selector` at once (in the background) rather than waiting
/// for garbage collection; none left is not an error.
async fn delete_worker_pods(ctx: &Context, namespace: &str, selector: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    match pods.delete_collection(&DeleteParams::background(), &ListParams::default().labels(selector)).await {
        Ok(_) => Ok(()),
        Err(error) if is_status(&error, 404) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Task

/// Reconciles a Task: a Job's task is projected from the catalog; a standalone task is first
/// registered there.
#[instrument(skip_all, fields(namespace = task.namespace(), task = task.name_any(), trace_id = duckmesh_telemetry::current_trace_id()))]
pub async fn reconcile_task(task: Arc<Task>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    // A standalone task is deleted through its finalizer; one that carries the finalizer keeps
    // going through it, so that it can always be deleted.
    let standalone = task.spec.job.is_none() || task.finalizers().iter().any(|finalizer| finalizer == TASK_FINALIZER);
    let result = if standalone {
        let api: Api<Task> = Api::namespaced(ctx.client.clone(), &task.namespace().unwrap_or_default());
        finalizer(&api, TASK_FINALIZER, task, |event| async {
            match event {
                Finalized::Apply(task) => reconcile_task_inner(&task, &ctx).await,
                Finalized::Cleanup(task) => cleanup_task(&task, &ctx).await,
            }
        })
        .await
        .map_err(Error::from)
    } else {
        reconcile_task_inner(&task, &ctx).await
    };
    ctx.observe(Controller::Task, &result, started);
    result
}

/// Deleting a standalone Task cancels it in the catalog (an unfinished task becomes
/// `Cancelled` and its live attempt can no longer commit), frees its name for a new Task, and
/// deletes its worker pods at once. Its committed output stays.
async fn cleanup_task(task: &Task, ctx: &Context) -> Result<Action> {
    let object = object_ref(task)?;
    if task.spec.job.is_some() {
        return Ok(Action::await_change()); // a Job's task: the Job's deletion cancels it
    }
    let cancelled = ctx.catalog.delete_standalone_task(&object.namespace, &object.name).await?;
    info!(cancelled_attempts = cancelled.len(), "task deleted: cancelled in the catalog");
    let selector = format!(
        "{},{}={},!{}",
        names::WORKER_SELECTOR,
        names::TASK_LABEL,
        names::label_value(&object.name),
        names::JOB_LABEL
    );
    delete_worker_pods(ctx, &object.namespace, &selector).await?;
    let note = if cancelled.is_empty() {
        "the task was deleted".to_owned()
    } else {
        "the task was deleted: its running attempt was cancelled".to_owned()
    };
    ctx.publish(task, EventType::Normal, "Cancelled", note, "Delete").await;
    Ok(Action::await_change())
}

async fn reconcile_task_inner(task: &Task, ctx: &Context) -> Result<Action> {
    let object = object_ref(task)?;
    let api: Api<Task> = Api::namespaced(ctx.client.clone(), &object.namespace);
    let generation = task.meta().generation;
    let previous = task.status.as_ref();
    let now = (ctx.now)();

    let record = match &task.spec.job {
        Some(job) => {
            let owner_uid = task.owner_references().iter().find(|o| o.kind == "Job").map(|o| o.uid.clone());
            match ctx.catalog.job_by_name(&object.namespace, job).await {
                Ok(record) if owner_uid.as_ref().is_none_or(|uid| *uid == record.uid) => {
                    ctx.catalog.task_in_job(record.id, &task.spec.template.name).await?
                }
                Ok(_) | Err(duckmesh_catalog::Error::NotFound { .. }) => None,
                Err(error) => return Err(error.into()),
            }
        }
        None => match apply_task(&ctx.catalog, &object, &task.spec).await {
            Ok(id) => {
                ctx.waiting.forget(&object.namespace, &Waiter::Task(object.name.clone()));
                ctx.registered(task.meta().uid.as_ref());
                Some(ctx.catalog.task(id).await?)
            }
            Err(error) => {
                let (why, action) = answer(&error, &ctx.resync);
                let Some(action) = action else { return Err(error.into()) };
                if await_dataset(ctx, &error, Waiter::Task(object.name.clone())).await? {
                    return Ok(Action::requeue(Duration::ZERO));
                }
                let status = decide::task_not_ready(previous, why, &error.to_string(), generation, now);
                let changed = previous != Some(&status);
                if changed {
                    apply_status::<Task>(&api, &object.name, &status).await?;
                }
                let (warn_now, look_again) = ctx.not_ready_warning(task.meta(), why, changed);
                if warn_now {
                    ctx.publish(task, EventType::Warning, why.reason(), error.to_string(), "Register").await;
                }
                return Ok(look_again.map_or(action, Action::requeue));
            }
        },
    };
    let Some(record) = record else {
        // The Job controller registers the job right after creating its tasks.
        return Ok(Action::requeue(ctx.resync.waiting));
    };
    let attempts = ctx.catalog.attempts_of_task(record.id).await?;
    let status: TaskStatus = decide::task_status(&record, &attempts, previous, generation, now);
    if previous != Some(&status) {
        apply_status::<Task>(&api, &object.name, &status).await?;
        let was = previous.map(|s| (s.phase.clone(), s.attempt));
        let changed = was != Some((status.phase.clone(), status.attempt));
        if changed && let Some(job) = &task.spec.job {
            // The Job's counts changed with this task: refresh its status now.
            ctx.triggers.job(&object.namespace, job);
        }
        if changed && let Some((reason, _)) = decide::task_event(&record) {
            let note = format!(
                "attempt {} of {}: {}: {}",
                record.attempts,
                record.max_attempts,
                record.last_error_code.as_deref().unwrap_or("unknown"),
                record.last_error_message.as_deref().unwrap_or("no message")
            );
            ctx.publish(task, EventType::Warning, reason, note, "Run").await;
        }
    }
    ctx.succeeded(&object.uid);
    Ok(Action::requeue(if record.phase.is_terminal() { ctx.resync.idle } else { ctx.resync.task }))
}

// ---------------------------------------------------------------------------------------------
// Error policy

/// Counts the failure and requeues the object after an exponential back-off (5 s → 5 min).
/// The error's code goes to the log, never to a metric label.
pub fn error_policy<K: Resource<DynamicType = ()>>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let uid = object.meta().uid.clone().unwrap_or_default();
    let delay = ctx.backoff(&uid);
    warn!(
        error = %error,
        error_code = error.error_code(),
        namespace = object.meta().namespace.as_deref().unwrap_or_default(),
        name = object.meta().name.as_deref().unwrap_or_default(),
        retry_in_seconds = delay.as_secs(),
        "reconcile failed"
    );
    if let Some(metrics) = &ctx.metrics {
        let controller = match K::kind(&()).as_ref() {
            "Dataset" => Some(Controller::Dataset),
            "Job" => Some(Controller::Job),
            "Task" => Some(Controller::Task),
            _ => None,
        };
        if let Some(controller) = controller {
            metrics.workqueue_retries.get_or_create(&ControllerLabels { controller }).inc();
        }
    }
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_minutes() {
        let delays: Vec<u64> = (1..=9).map(|n| backoff_for(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff_for(u32::MAX), Duration::from_secs(300));
    }
}
