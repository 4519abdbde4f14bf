//! Catalog changes wake the reconciles they concern (against a mocked API server and a real
//! catalog): a commit wakes its Dataset, Task and Job; a registered dataset wakes the Jobs
//! waiting for it; a Task's change wakes its Job; a finished Job wakes its Tasks. Also: the
//! `Started` event waits for a worker to run, and a finished Job refuses spec changes.

mod common;

use chrono::Utc;
use common::{catalog_with, exchange, mock_client};
use duckmesh_catalog::{Catalog, CommitEvent};
use duckmesh_core::{SnapshotId, TaskPhase};
use duckmesh_operator::{
    CommitWatcher, Context, TriggerReceivers, Triggers, reconcile_dataset, reconcile_job, reconcile_task,
};
use duckmesh_resources::{Dataset, Job, Task};
use duckmesh_scheduler::ObjectRef;
use duckmesh_testkit::BoxError;
use http::StatusCode;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const GROUP_PATH: &str = "/apis/duckmesh.io/v1alpha1/namespaces/default";

fn context(client: kube::Client, catalog: &Catalog) -> (Arc<Context>, TriggerReceivers) {
    let (triggers, receivers) = Triggers::channels();
    let mut context = Context::new(client, catalog.clone(), None, Some("operator-0".into()));
    context.triggers = triggers;
    (Arc::new(context), receivers)
}

fn two_tasks(sql: &str) -> Value {
    json!([
        {"name": "extract", "sql": sql, "inputs": [{"dataset": "trips"}], "output": {"dataset": "out"}},
        {"name": "load", "dependsOn": ["extract"], "sql": "SELECT 1", "output": {"dataset": "out", "mode": "overwrite"}}
    ])
}

fn job_json(tasks: Value, generation: i64) -> Value {
    json!({
        "apiVersion": "duckmesh.io/v1alpha1", "kind": "Job",
        "metadata": {"name": "nightly", "namespace": "default", "uid": "job-uid", "generation": generation,
                     "resourceVersion": "7", "finalizers": ["duckmesh.io/job"]},
        "spec": {"tenant": "acme", "tasks": tasks}
    })
}

fn dataset_json() -> Value {
    json!({
        "apiVersion": "duckmesh.io/v1alpha1", "kind": "Dataset",
        "metadata": {"name": "trips", "namespace": "default", "uid": "ds-uid", "generation": 1,
                     "finalizers": ["duckmesh.io/dataset"]},
        "spec": {"tenant": "acme"}
    })
}

fn object(generation: i64) -> ObjectRef {
    ObjectRef { namespace: "default".into(), name: "nightly".into(), uid: "job-uid".into(), generation }
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

fn names<K>(receiver: &mut tokio::sync::mpsc::UnboundedReceiver<kube::runtime::reflector::ObjectRef<K>>) -> Vec<String>
where
    K: kube::Resource<DynamicType = ()>,
{
    let mut names = Vec::new();
    while let Ok(reference) = receiver.try_recv() {
        assert_eq!(reference.namespace.as_deref(), Some("default"));
        names.push(reference.name);
    }
    names.sort();
    names
}

#[tokio::test]
async fn registering_a_dataset_wakes_the_job_waiting_for_it() -> Result<(), BoxError> {
    let (_db, catalog) = catalog_with(&["out"]).await?; // "trips" is not registered yet
    let (client, mut server) = mock_client();
    let (ctx, mut receivers) = context(client, &catalog);
    let job: Job = serde_json::from_value(job_json(two_tasks("SELECT * FROM trips"), 1))?;
    let dataset: Dataset = serde_json::from_value(dataset_json())?;
    let job_reply = job_json(two_tasks("SELECT * FROM trips"), 1);
    let work = {
        let ctx = Arc::clone(&ctx);
        async move {
            let waiting = reconcile_job(Arc::new(job), Arc::clone(&ctx)).await;
            let registered = reconcile_dataset(Arc::new(dataset), ctx).await;
            (waiting, registered)
        }
    };
    let (waiting, registered) = exchange(work, async move {
        for task in ["nightly-extract", "nightly-load"] {
            server.next().await.expect("PATCH", &format!("{GROUP_PATH}/tasks/{task}")).echo();
        }
        let seen = server.next().await.expect("PATCH", &format!("{GROUP_PATH}/jobs/nightly/status"));
        assert_eq!(condition(&seen.body["status"], "Ready")["reason"], "DatasetNotFound");
        seen.reply(StatusCode::OK, &job_reply);
        assert_eq!(server.event("default").await["reason"], "DatasetNotFound");
        // The dataset's registration.
        let seen = server.next().await.expect("PATCH", &format!("{GROUP_PATH}/datasets/trips/status"));
        assert_eq!(condition(&seen.body["status"], "Ready")["reason"], "Registered");
        seen.reply(StatusCode::OK, &dataset_json());
    })
    .await;
    assert_eq!(waiting?, Action::requeue(Duration::from_secs(15)), "the resync stays as the fallback");
    assert_eq!(registered?, Action::requeue(Duration::from_secs(300)));
    assert_eq!(names(&mut receivers.jobs), ["nightly"], "registering trips woke the job at once");
    assert!(catalog.dataset_by_name("default", "trips").await.is_ok());
    // Registered again on resync: nobody waits any more, nobody is woken twice.
    let (client, mut server) = mock_client();
    let mut again = Context::new(client, catalog.clone(), None, None);
    again.triggers = ctx.triggers.clone();
    let dataset: Dataset = serde_json::from_value(dataset_json())?;
    exchange(reconcile_dataset(Arc::new(dataset), Arc::new(again)), async move {
        server
            .next()
            .await
            .expect("PATCH", &format!("{GROUP_PATH}/datasets/trips/status"))
            .reply(StatusCode::OK, &dataset_json());
    })
    .await?;
    assert!(names(&mut receivers.jobs).is_empty());
    Ok(())
}

/// Registers the Job (generation `generation`) and returns its catalog id.
async fn registered_job(catalog: &Catalog, generation: i64) -> Result<duckmesh_core::JobId, BoxError> {
    let job: Job = serde_json::from_value(job_json(two_tasks("SELECT * FROM trips"), generation))?;
    Ok(duckmesh_scheduler::apply_job(catalog, &object(generation), &job.spec).await?.job.id)
}

/// Fails the job: `extract` fails for good, so `load` fails as upstream_failed.
async fn fail_job(catalog: &Catalog, job: duckmesh_core::JobId) -> Result<(), BoxError> {
    let extract = catalog.task_in_job(job, "extract").await?.expect("extract");
    let lease = catalog.lease_task(extract.id, "operator-0", Duration::from_secs(120)).await?.expect("leased");
    let failure =
        duckmesh_catalog::Failure { code: "sql_error".into(), message: "no such column".into(), retryable: false };
    catalog.fail_attempt(lease.attempt_ref(), &failure).await?;
    catalog.refresh_jobs().await?;
    assert!(catalog.job(job).await?.phase.is_terminal());
    assert!(catalog.tasks_of_job(job).await?.iter().all(|t| t.phase == TaskPhase::Failed));
    Ok(())
}

#[tokio::test]
async fn a_finished_job_wakes_its_tasks_and_refuses_spec_changes() -> Result<(), BoxError> {
    let (_db, catalog) = catalog_with(&["trips", "out"]).await?;
    let id = registered_job(&catalog, 2).await?;
    let summary = catalog.job_summary(id).await?;
    let running = duckmesh_operator::decide::job_status(&summary, None, Some(2), Utc::now());
    fail_job(&catalog, id).await?;

    // The reconcile that sees the job finish wakes every Task, so they show it too.
    let (client, mut server) = mock_client();
    let (ctx, mut receivers) = context(client, &catalog);
    let mut job: Job = serde_json::from_value(job_json(two_tasks("SELECT * FROM trips"), 2))?;
    job.status = Some(running);
    let reply = job_json(two_tasks("SELECT * FROM trips"), 2);
    let action = exchange(reconcile_job(Arc::new(job), Arc::clone(&ctx)), async move {
        let seen = server.next().await.expect("PATCH", &format!("{GROUP_PATH}/jobs/nightly/status"));
        assert_eq!(seen.body["status"]["phase"], "Failed");
        seen.reply(StatusCode::OK, &reply);
        let event = server.event("default").await;
        assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Warning"), Some("Failed")));
    })
    .await?;
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert_eq!(names(&mut receivers.tasks), ["nightly-extract", "nightly-load"]);
    let finished = catalog.job_summary(id).await?;
    let finished = duckmesh_operator::decide::job_status(&finished, None, Some(2), Utc::now());

    // Now the user edits the finished Job's SQL (generation 3): nothing is applied — no Task
    // resource is touched, the catalog keeps what ran — and the edit is reported.
    let (client, mut server) = mock_client();
    let (ctx, mut receivers) = context(client, &catalog);
    let mut edited: Job = serde_json::from_value(job_json(two_tasks("SELECT 'never ran'"), 3))?;
    edited.status = Some(finished);
    let reply = job_json(two_tasks("SELECT 'never ran'"), 3);
    let written = Arc::new(std::sync::Mutex::new(None));
    let keep = Arc::clone(&written);
    let action = exchange(reconcile_job(Arc::new(edited.clone()), Arc::clone(&ctx)), async move {
        let seen = server.next().await.expect("PATCH", &format!("{GROUP_PATH}/jobs/nightly/status"));
        let status = seen.body["status"].clone();
        assert_eq!(status["observedGeneration"], 3, "the change was seen");
        assert_eq!(status["phase"], "Failed", "the outcome of what ran is kept");
        let ready = condition(&status, "Ready");
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("False"), Some("SpecChangedAfterFinish"))
        );
        let message = ready["message"].as_str().unwrap_or_default();
        assert!(message.contains("generation 2") && message.contains("generation 3"), "{message}");
        assert_eq!(condition(&status, "Failed")["status"], "True");
        if let Ok(mut slot) = keep.lock() {
            *slot = Some(status.clone());
        }
        let mut object = reply;
        object["status"] = status;
        seen.reply(StatusCode::OK, &object);
        let event = server.event("default").await;
        assert_eq!(
            (event["type"].as_str(), event["reason"].as_str()),
            (Some("Warning"), Some("SpecChangedAfterFinish"))
        );
        assert!(event["note"].as_str().is_some_and(|n| n.contains("new name")), "{event}");
    })
    .await?;
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let record = catalog.job(id).await?;
    assert_eq!(record.generation, 2, "the catalog keeps the generation that ran");
    let extract = catalog.task_in_job(id, "extract").await?.expect("extract");
    assert_eq!(extract.spec["sql"], "SELECT * FROM trips", "the catalog keeps the SQL that ran");
    assert!(names(&mut receivers.tasks).is_empty(), "no phase change: the Tasks are not woken again");

    // Reconciled again with that status: nothing to write, nothing to announce.
    let status = written.lock().ok().and_then(|s| s.clone()).expect("a status was written");
    edited.status = Some(serde_json::from_value(status)?);
    let (client, server) = mock_client();
    let (ctx, _receivers) = context(client, &catalog);
    let action = exchange(reconcile_job(Arc::new(edited), ctx), async move { drop(server) }).await?;
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    Ok(())
}

#[tokio::test]
async fn started_is_announced_when_a_worker_runs_not_at_lease_and_task_changes_wake_the_job() -> Result<(), BoxError> {
    let (_db, catalog) = catalog_with(&["trips", "out"]).await?;
    let id = registered_job(&catalog, 1).await?;
    let pending = duckmesh_operator::decide::job_status(&catalog.job_summary(id).await?, None, Some(1), Utc::now());
    let extract = catalog.task_in_job(id, "extract").await?.expect("extract");
    let lease = catalog.lease_task(extract.id, "operator-0", Duration::from_secs(120)).await?.expect("leased");

    // Leased, but no worker runs yet (its pod may never start): Running, no `Started`.
    let (client, mut server) = mock_client();
    let (ctx, _receivers) = context(client, &catalog);
    let mut job: Job = serde_json::from_value(job_json(two_tasks("SELECT * FROM trips"), 1))?;
    job.status = Some(pending);
    let reply = job_json(two_tasks("SELECT * FROM trips"), 1);
    let leased_status = Arc::new(std::sync::Mutex::new(None));
    let keep = Arc::clone(&leased_status);
    exchange(reconcile_job(Arc::new(job.clone()), ctx), async move {
        let seen = server.next().await.expect("PATCH", &format!("{GROUP_PATH}/jobs/nightly/status"));
        let status = seen.body["status"].clone();
        assert_eq!(status["phase"], "Running");
        assert!(status.get("startTime").is_none(), "no worker ran yet: {status}");
        if let Ok(mut slot) = keep.lock() {
            *slot = Some(status.clone());
        }
        let mut object = reply;
        object["status"] = status;
        seen.reply(StatusCode::OK, &object);
        // Nothing else: a request here would find the mock gone and fail the reconcile.
        drop(server);
    })
    .await?;

    // The worker's pod runs and the worker confirms its attempt: now `Started`.
    catalog.confirm_attempt(lease.attempt_ref(), Some("nightly-extract-a1")).await?;
    let status = leased_status.lock().ok().and_then(|s| s.clone()).expect("a status was written");
    job.status = Some(serde_json::from_value(status)?);
    let (client, mut server) = mock_client();
    let (ctx, _receivers) = context(client, &catalog);
    let reply = job_json(two_tasks("SELECT * FROM trips"), 1);
    exchange(reconcile_job(Arc::new(job), ctx), async move {
        let seen = server.next().await.expect("PATCH", &format!("{GROUP_PATH}/jobs/nightly/status"));
        assert!(seen.body["status"]["startTime"].is_string(), "{}", seen.body);
        seen.reply(StatusCode::OK, &reply);
        let event = server.event("default").await;
        assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Normal"), Some("Started")));
    })
    .await?;

    // The Task's reconcile sees its change and wakes the Job, so its counts follow at once.
    let task_object = json!({
        "apiVersion": "duckmesh.io/v1alpha1", "kind": "Task",
        "metadata": {"name": "nightly-extract", "namespace": "default", "uid": "t-uid", "generation": 1},
        "spec": {"job": "nightly", "template": two_tasks("SELECT * FROM trips")[0].clone()}
    });
    let task: Task = serde_json::from_value(task_object.clone())?;
    let (client, mut server) = mock_client();
    let (ctx, mut receivers) = context(client, &catalog);
    exchange(reconcile_task(Arc::new(task), ctx), async move {
        let seen = server.next().await.expect("PATCH", &format!("{GROUP_PATH}/tasks/nightly-extract/status"));
        assert_eq!(seen.body["status"]["phase"], "Running");
        seen.reply(StatusCode::OK, &task_object);
    })
    .await?;
    assert_eq!(names(&mut receivers.jobs), ["nightly"]);
    Ok(())
}

/// Inserts a snapshot of `dataset` committed by `task` (as the fenced commit would).
async fn snapshot_by(catalog: &Catalog, dataset: i64, task: Option<i64>) -> Result<(), BoxError> {
    sqlx::query(
        "INSERT INTO snapshots (dataset_id, id, visibility_token, kind, task_id, file_count, row_count, byte_count, \
                                added_files, removed_files) VALUES ($1, 1, 1, 'append', $2, 0, 0, 0, 0, 0)",
    )
    .bind(dataset)
    .bind(task)
    .execute(catalog.pool())
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_commit_wakes_its_dataset_task_and_job() -> Result<(), BoxError> {
    let (_db, catalog) = catalog_with(&["trips", "out"]).await?;
    let id = registered_job(&catalog, 1).await?;
    let out = catalog.dataset_by_name("default", "out").await?.id;
    let trips = catalog.dataset_by_name("default", "trips").await?.id;
    let extract = catalog.task_in_job(id, "extract").await?.expect("extract");
    snapshot_by(&catalog, out.0, Some(extract.id.0)).await?;
    snapshot_by(&catalog, trips.0, None).await?; // an ingest commit: no task

    let (triggers, mut receivers) = Triggers::channels();
    let mut watcher = CommitWatcher::new(catalog.clone(), triggers.clone());
    let event = CommitEvent { dataset: out, snapshot: SnapshotId(1), visibility_token: 1 };
    let woken = watcher.wake(event).await;
    let pair = |name: &str| Some(("default".to_owned(), name.to_owned()));
    assert_eq!((woken.dataset, woken.task, woken.job), (pair("out"), pair("nightly-extract"), pair("nightly")));
    assert_eq!(names(&mut receivers.datasets), ["out"]);
    assert_eq!(names(&mut receivers.tasks), ["nightly-extract"]);
    assert_eq!(names(&mut receivers.jobs), ["nightly"]);
    let ingest = watcher.wake(CommitEvent { dataset: trips, snapshot: SnapshotId(1), visibility_token: 1 }).await;
    assert_eq!((ingest.dataset, ingest.task, ingest.job), (pair("trips"), None, None));
    assert_eq!(names(&mut receivers.datasets), ["trips"]);

    // Through the catalog's NOTIFY: the running listener wakes the Dataset.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(CommitWatcher::new(catalog.clone(), triggers).run(shutdown.clone()));
    let payload = serde_json::to_string(&event)?;
    let notify = |catalog: Catalog, payload: String| async move {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(duckmesh_catalog::COMMITS_CHANNEL)
            .bind(payload)
            .execute(catalog.pool())
            .await
    };
    // Notifications sent before the listener is connected are lost (they are hints), so send
    // until one arrives.
    let woke = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            notify(catalog.clone(), payload.clone()).await?;
            if let Ok(Some(reference)) =
                tokio::time::timeout(Duration::from_millis(200), receivers.datasets.recv()).await
            {
                return Ok::<_, sqlx::Error>(reference.name);
            }
        }
    })
    .await??;
    assert_eq!(woke, "out");

    // The listener's connection is killed: commits made meanwhile are lost, so every Dataset is
    // refreshed once it is back.
    let killed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid() AND datname = current_database()",
            )
            .execute(catalog.pool())
            .await?;
            if let Ok(Some(())) = tokio::time::timeout(Duration::from_millis(200), receivers.all_datasets.recv()).await
            {
                return Ok::<_, sqlx::Error>(());
            }
        }
    })
    .await;
    assert!(matches!(killed, Ok(Ok(()))), "{killed:?}");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), running).await??;
    Ok(())
}
