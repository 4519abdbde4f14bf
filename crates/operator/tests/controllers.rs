//! The reconcilers against a mocked API server (every request asserted in order) and a real
//! catalog on PostgreSQL.

mod common;

use chrono::Utc;
use common::{catalog_with, exchange, mock_client};
use duckmesh_catalog::Catalog;
use duckmesh_core::{AttemptState, JobPhase, TaskPhase};
use duckmesh_operator::{Context, reconcile_dataset, reconcile_job, reconcile_task};
use duckmesh_resources::{Dataset, Job, Task};
use duckmesh_scheduler::ObjectRef;
use duckmesh_testkit::BoxError;
use http::StatusCode;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const GROUP_PATH: &str = "/apis/duckmesh.io/v1alpha1/namespaces/default";

fn job_json(tasks: Value, finalizers: bool, deleting: bool) -> Value {
    let mut job = json!({
        "apiVersion": "duckmesh.io/v1alpha1", "kind": "Job",
        "metadata": {"name": "nightly", "namespace": "default", "uid": "job-uid", "generation": 2, "resourceVersion": "7"},
        "spec": {"tenant": "acme", "tasks": tasks}
    });
    if finalizers {
        job["metadata"]["finalizers"] = json!(["duckmesh.io/job"]);
    }
    if deleting {
        job["metadata"]["deletionTimestamp"] = json!("2026-11-23T10:00:00Z");
    }
    job
}

fn two_tasks() -> Value {
    json!([
        {"name": "extract", "sql": "SELECT * FROM trips", "inputs": [{"dataset": "trips"}], "output": {"dataset": "out"}},
        {"name": "load", "dependsOn": ["extract"], "sql": "SELECT 1", "output": {"dataset": "out", "mode": "overwrite"}}
    ])
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

fn context(client: kube::Client, catalog: &Catalog) -> Arc<Context> {
    Arc::new(Context::new(client, catalog.clone(), Some(duckmesh_telemetry::Metrics::new()), Some("operator-0".into())))
}

#[tokio::test]
async fn a_job_creates_owned_task_resources_registers_and_reports_a_bounded_status() -> Result<(), BoxError> {
    let (_db, catalog) = catalog_with(&["trips", "out"]).await?;
    let (client, mut server) = mock_client();
    let job: Job = serde_json::from_value(job_json(two_tasks(), true, false))?;
    let job_object = job_json(two_tasks(), true, false);
    let action = exchange(reconcile_job(Arc::new(job), context(client, &catalog)), async move {
        for (task, node) in [("nightly-extract", "extract"), ("nightly-load", "load")] {
            let seen = server.next().await.expect("PATCH", &format!("{GROUP_PATH}/tasks/{task}"));
            assert!(
                seen.query.contains("fieldManager=duckmesh-operator") && seen.query.contains("force=true"),
                "{}",
                seen.query
            );
            let owner = &seen.body["metadata"]["ownerReferences"][0];
            assert_eq!(
                (owner["kind"].as_str(), owner["name"].as_str(), owner["uid"].as_str()),
                (Some("Job"), Some("nightly"), Some("job-uid"))
            );
            assert_eq!(
                (owner["controller"].as_bool(), owner["blockOwnerDeletion"].as_bool()),
                (Some(true), Some(true))
            );
            assert_eq!(seen.body["metadata"]["labels"]["duckmesh.io/job"], "nightly");
            assert_eq!(seen.body["spec"]["job"], "nightly");
            assert_eq!(seen.body["spec"]["template"]["name"], node);
            assert!(seen.body.get("status").is_none(), "children are applied without status");
            seen.echo();
        }
        let seen = server.next().await.expect("PATCH", &format!("{GROUP_PATH}/jobs/nightly/status"));
        let status = seen.body["status"].clone();
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(status["phase"], "Pending");
        assert_eq!(status["counts"]["total"], 2);
        assert_eq!(status["counts"]["pending"], 2);
        for type_ in ["Ready", "Valid", "Succeeded", "Failed"] {
            assert_eq!(condition(&status, type_)["observedGeneration"], 2, "{type_}");
        }
        assert_eq!(condition(&status, "Ready")["status"], "True");
        assert_eq!(condition(&status, "Succeeded")["status"], "False");
        let mut object = job_object;
        object["status"] = status;
        seen.reply(StatusCode::OK, &object);
    })
    .await?;
    assert_eq!(action, Action::requeue(Duration::from_secs(10)), "unfinished jobs are looked at again");
    let record = catalog.job_by_name("default", "nightly").await?;
    assert_eq!(record.uid, "job-uid");
    let tasks = catalog.tasks_of_job(record.id).await?;
    assert_eq!(tasks.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["extract", "load"]);
    Ok(())
}

#[tokio::test]
async fn an_unchanged_registered_job_writes_nothing() -> Result<(), BoxError> {
    let (_db, catalog) = catalog_with(&["trips", "out"]).await?;
    let object =
        ObjectRef { namespace: "default".into(), name: "nightly".into(), uid: "job-uid".into(), generation: 2 };
    let mut job: Job = serde_json::from_value(job_json(two_tasks(), true, false))?;
    let upsert = duckmesh_scheduler::apply_job(&catalog, &object, &job.spec).await?;
    let summary = catalog.job_summary(upsert.job.id).await?;
    job.status = Some(duckmesh_operator::decide::job_status(&summary, None, Some(2), Utc::now()));
    let (client, server) = mock_client();
    // The verifier expects nothing: any request would find the mock server gone and fail.
    let action = exchange(reconcile_job(Arc::new(job), context(client, &catalog)), async move { drop(server) }).await?;
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    Ok(())
}

#[tokio::test]
async fn an_invalid_job_is_marked_and_warned_about_without_a_crash_loop() -> Result<(), BoxError> {
    let (_db, catalog) = catalog_with(&["out"]).await?;
    let (client, mut server) = mock_client();
    let cyclic = json!([
        {"name": "a", "dependsOn": ["b"], "sql": "SELECT 1", "output": {"dataset": "out"}},
        {"name": "b", "dependsOn": ["a"], "sql": "SELECT 1", "output": {"dataset": "out"}}
    ]);
    let job: Job = serde_json::from_value(job_json(cyclic.clone(), true, false))?;
    let object = job_json(cyclic, true, false);
    let action = exchange(reconcile_job(Arc::new(job), context(client, &catalog)), async move {
        let seen = server.next().await.expect("PATCH", &format!("{GROUP_PATH}/jobs/nightly/status"));
        let status = seen.body["status"].clone();
        let ready = condition(&status, "Ready");
        assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("InvalidSpec")));
        assert!(ready["message"].as_str().is_some_and(|m| m.contains("cycle")), "{ready}");
        assert_eq!(condition(&status, "Valid")["status"], "False");
        assert_eq!(status["observedGeneration"], 2);
        let mut reply = object;
        reply["status"] = status;
        seen.reply(StatusCode::OK, &reply);
        let event = server.event("default").await;
        assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Warning"), Some("InvalidSpec")));
        assert_eq!(event["regarding"]["name"], "nightly");
    })
    .await?;
    assert_eq!(action, Action::await_change(), "an invalid spec waits for the user to change it");
    assert!(catalog.job_by_name("default", "nightly").await.is_err(), "nothing was registered");
    Ok(())
}

#[tokio::test]
async fn a_job_whose_dataset_is_missing_waits_for_it() -> Result<(), BoxError> {
    let (_db, catalog) = catalog_with(&["out"]).await?; // no "trips"
    let (client, mut server) = mock_client();
    let job: Job = serde_json::from_value(job_json(two_tasks(), true, false))?;
    let object = job_json(two_tasks(), true, false);
    let action = exchange(reconcile_job(Arc::new(job), context(client, &catalog)), async move {
        for task in ["nightly-extract", "nightly-load"] {
            server.next().await.expect("PATCH", &format!("{GROUP_PATH}/tasks/{task}")).echo();
        }
        let seen = server.next().await.expect("PATCH", &format!("{GROUP_PATH}/jobs/nightly/status"));
        let status = seen.body["status"].clone();
        let ready = condition(&status, "Ready");
        assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("DatasetNotFound")));
        assert!(ready["message"].as_str().is_some_and(|m| m.contains("trips")), "{ready}");
        assert_eq!(condition(&status, "Valid")["status"], "True");
        let mut reply = object;
        reply["status"] = status;
        seen.reply(StatusCode::OK, &reply);
        let event = server.event("default").await;
        assert_eq!(event["reason"], "DatasetNotFound");
    })
    .await?;
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    Ok(())
}

#[tokio::test]
async fn deleting_a_job_cancels_it_in_the_catalog_and_deletes_its_pods() -> Result<(), BoxError> {
    let (_db, catalog) = catalog_with(&["trips", "out"]).await?;
    let object =
        ObjectRef { namespace: "default".into(), name: "nightly".into(), uid: "job-uid".into(), generation: 2 };
    let spec: Job = serde_json::from_value(job_json(two_tasks(), true, true))?;
    let upsert = duckmesh_scheduler::apply_job(&catalog, &object, &spec.spec).await?;
    let extract = catalog.task_in_job(upsert.job.id, "extract").await?.expect("extract");
    let lease = catalog.lease_task(extract.id, "operator-0", Duration::from_secs(120)).await?.expect("leased");

    let (client, mut server) = mock_client();
    let reply_object = job_json(two_tasks(), false, true);
    let action = exchange(reconcile_job(Arc::new(spec), context(client, &catalog)), async move {
        let seen = server.next().await.expect("DELETE", "/api/v1/namespaces/default/pods");
        let query = seen.query.replace("%2C", ",").replace("%3D", "=").replace("%2F", "/");
        assert!(query.contains("duckmesh.io/job=nightly"), "{query}");
        assert!(query.contains("app.kubernetes.io/component=worker"), "{query}");
        seen.reply(StatusCode::OK, &json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []}));
        let event = server.event("default").await;
        assert_eq!(event["reason"], "Cancelled");
        let seen = server.next().await.expect("PATCH", &format!("{GROUP_PATH}/jobs/nightly"));
        assert!(seen.body.to_string().contains("/metadata/finalizers"), "finalizer removal: {}", seen.body);
        seen.reply(StatusCode::OK, &reply_object);
    })
    .await?;
    assert_eq!(action, Action::await_change());
    assert_eq!(catalog.job(upsert.job.id).await?.phase, JobPhase::Cancelled);
    assert!(catalog.tasks_of_job(upsert.job.id).await?.iter().all(|t| t.phase == TaskPhase::Cancelled));
    assert_eq!(
        catalog.attempt(lease.attempt).await?.state,
        AttemptState::Cancelled,
        "the live attempt can no longer commit"
    );
    Ok(())
}

#[tokio::test]
async fn a_new_job_first_gets_its_finalizer() -> Result<(), BoxError> {
    let (_db, catalog) = catalog_with(&[]).await?;
    let (client, mut server) = mock_client();
    let job: Job = serde_json::from_value(job_json(two_tasks(), false, false))?;
    let reply = job_json(two_tasks(), true, false);
    let action = exchange(reconcile_job(Arc::new(job), context(client, &catalog)), async move {
        let seen = server.next().await.expect("PATCH", &format!("{GROUP_PATH}/jobs/nightly"));
        assert!(seen.body.to_string().contains("duckmesh.io/job"), "{}", seen.body);
        seen.reply(StatusCode::OK, &reply);
    })
    .await?;
    assert_eq!(action, Action::await_change(), "the finalizer patch itself triggers the next reconcile");
    Ok(())
}

fn dataset_json(finalizers: bool, deleting: bool) -> Value {
    let mut dataset = json!({
        "apiVersion": "duckmesh.io/v1alpha1", "kind": "Dataset",
        "metadata": {"name": "trips", "namespace": "default", "uid": "ds-uid", "generation": 4},
        "spec": {"tenant": "acme", "partitionBy": ["day"], "schema": [{"name": "day", "type": "DATE"}]}
    });
    if finalizers {
        dataset["metadata"]["finalizers"] = json!(["duckmesh.io/dataset"]);
    }
    if deleting {
        dataset["metadata"]["deletionTimestamp"] = json!("2026-11-23T10:00:00Z");
    }
    dataset
}

#[tokio::test]
async fn a_dataset_is_registered_and_its_status_projected_from_the_catalog() -> Result<(), BoxError> {
    let (_db, catalog) = catalog_with(&[]).await?;
    let (client, mut server) = mock_client();
    let dataset: Dataset = serde_json::from_value(dataset_json(true, false))?;
    let reply = dataset_json(true, false);
    let action = exchange(reconcile_dataset(Arc::new(dataset), context(client, &catalog)), async move {
        let seen = server.next().await.expect("PATCH", &format!("{GROUP_PATH}/datasets/trips/status"));
        assert!(seen.query.contains("fieldManager=duckmesh-operator"), "{}", seen.query);
        let status = seen.body["status"].clone();
        assert_eq!(status["observedGeneration"], 4);
        assert_eq!(status["visibilityToken"], 0);
        assert_eq!(status["files"], 0);
        assert!(status.get("currentSnapshot").is_none(), "no snapshot yet: {status}");
        let ready = condition(&status, "Ready");
        assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("True"), Some("Registered")));
        assert_eq!(ready["observedGeneration"], 4);
        let mut object = reply;
        object["status"] = status;
        seen.reply(StatusCode::OK, &object);
    })
    .await?;
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let record = catalog.dataset_by_name("default", "trips").await?;
    assert_eq!((record.uid.as_str(), record.generation, record.tenant.as_str()), ("ds-uid", 4, "acme"));
    Ok(())
}

#[tokio::test]
async fn deleting_a_dataset_keeps_its_data_and_says_so() -> Result<(), BoxError> {
    let (_db, catalog) = catalog_with(&["trips"]).await?;
    let (client, mut server) = mock_client();
    let dataset: Dataset = serde_json::from_value(dataset_json(true, true))?;
    let reply = dataset_json(false, true);
    let action = exchange(reconcile_dataset(Arc::new(dataset), context(client, &catalog)), async move {
        let event = server.event("default").await;
        assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Normal"), Some("DataRetained")));
        server.next().await.expect("PATCH", &format!("{GROUP_PATH}/datasets/trips")).reply(StatusCode::OK, &reply);
    })
    .await?;
    assert_eq!(action, Action::await_change());
    assert!(catalog.dataset_by_name("default", "trips").await.is_ok(), "the catalog keeps the dataset");
    Ok(())
}

fn standalone_json(finalizers: bool, deleting: bool) -> Value {
    let mut task = json!({
        "apiVersion": "duckmesh.io/v1alpha1", "kind": "Task",
        "metadata": {"name": "adhoc", "namespace": "default", "uid": "task-uid", "generation": 3, "resourceVersion": "4"},
        "spec": {"tenant": "acme", "template": {"name": "adhoc", "sql": "SELECT 1", "output": {"dataset": "out"}, "maxAttempts": 5}}
    });
    if finalizers {
        task["metadata"]["finalizers"] = json!(["duckmesh.io/task"]);
    }
    if deleting {
        task["metadata"]["deletionTimestamp"] = json!("2026-11-23T10:00:00Z");
    }
    task
}

async fn standalone_tasks_named(catalog: &Catalog, name: &str) -> Result<Vec<(i64, String, bool)>, BoxError> {
    Ok(sqlx::query_as(
        "SELECT id, phase, deleted_at IS NOT NULL FROM tasks WHERE job_id IS NULL AND name = $1 ORDER BY id",
    )
    .bind(name)
    .fetch_all(catalog.pool())
    .await?)
}

#[tokio::test]
async fn a_new_standalone_task_first_gets_its_finalizer() -> Result<(), BoxError> {
    let (_db, catalog) = catalog_with(&["out"]).await?;
    let (client, mut server) = mock_client();
    let task: Task = serde_json::from_value(standalone_json(false, false))?;
    let action = exchange(reconcile_task(Arc::new(task), context(client, &catalog)), async move {
        let seen = server.next().await.expect("PATCH", &format!("{GROUP_PATH}/tasks/adhoc"));
        assert!(seen.body.to_string().contains("duckmesh.io/task"), "{}", seen.body);
        seen.reply(StatusCode::OK, &standalone_json(true, false));
    })
    .await?;
    assert_eq!(action, Action::await_change(), "the finalizer patch itself triggers the next reconcile");
    assert!(standalone_tasks_named(&catalog, "adhoc").await?.is_empty(), "registered only once it can be deleted");
    Ok(())
}

#[tokio::test]
async fn deleting_a_standalone_task_cancels_it_frees_its_name_and_deletes_its_pods() -> Result<(), BoxError> {
    let (_db, catalog) = catalog_with(&["out"]).await?;
    let object = ObjectRef { namespace: "default".into(), name: "adhoc".into(), uid: "task-uid".into(), generation: 3 };
    let task: Task = serde_json::from_value(standalone_json(true, true))?;
    let id = duckmesh_scheduler::apply_task(&catalog, &object, &task.spec).await?;
    let lease = catalog.lease_task(id, "operator-0", Duration::from_secs(120)).await?.expect("leased");

    let (client, mut server) = mock_client();
    let action = exchange(reconcile_task(Arc::new(task.clone()), context(client, &catalog)), async move {
        let seen = server.next().await.expect("DELETE", "/api/v1/namespaces/default/pods");
        let query = seen.query.replace("%2C", ",").replace("%3D", "=").replace("%2F", "/").replace("%21", "!");
        assert!(query.contains("duckmesh.io/task=adhoc"), "{query}");
        assert!(query.contains("!duckmesh.io/job"), "a Job's pods are never selected: {query}");
        assert!(query.contains("app.kubernetes.io/component=worker"), "{query}");
        seen.reply(StatusCode::OK, &json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []}));
        let event = server.event("default").await;
        assert_eq!(event["reason"], "Cancelled");
        assert!(event["note"].as_str().is_some_and(|n| n.contains("running attempt was cancelled")), "{event}");
        let seen = server.next().await.expect("PATCH", &format!("{GROUP_PATH}/tasks/adhoc"));
        assert!(seen.body.to_string().contains("/metadata/finalizers"), "finalizer removal: {}", seen.body);
        seen.reply(StatusCode::OK, &standalone_json(false, true));
    })
    .await?;
    assert_eq!(action, Action::await_change());
    assert_eq!(catalog.task(id).await?.phase, TaskPhase::Cancelled);
    assert_eq!(catalog.attempt(lease.attempt).await?.state, AttemptState::Cancelled, "it can no longer commit");
    // A Task created again under the name is a new task.
    let again = duckmesh_scheduler::apply_task(&catalog, &object, &task.spec).await?;
    assert_ne!(again, id);
    let rows = standalone_tasks_named(&catalog, "adhoc").await?;
    assert_eq!(rows, [(id.0, "Cancelled".to_owned(), true), (again.0, "Pending".to_owned(), false)]);
    Ok(())
}

#[tokio::test]
async fn a_standalone_task_is_registered_and_its_status_carries_the_generation() -> Result<(), BoxError> {
    let (_db, catalog) = catalog_with(&["out"]).await?;
    let (client, mut server) = mock_client();
    let object = standalone_json(true, false);
    let task: Task = serde_json::from_value(object.clone())?;
    let action = exchange(reconcile_task(Arc::new(task), context(client, &catalog)), async move {
        let seen = server.next().await.expect("PATCH", &format!("{GROUP_PATH}/tasks/adhoc/status"));
        let status = seen.body["status"].clone();
        assert_eq!(status["phase"], "Pending");
        assert_eq!(status["maxAttempts"], 5);
        assert_eq!(status["observedGeneration"], 3);
        assert_eq!(condition(&status, "Ready")["observedGeneration"], 3);
        let mut reply = object;
        reply["status"] = status;
        seen.reply(StatusCode::OK, &reply);
    })
    .await?;
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    Ok(())
}

#[tokio::test]
async fn a_jobs_task_reports_its_catalog_state() -> Result<(), BoxError> {
    let (_db, catalog) = catalog_with(&["trips", "out"]).await?;
    let object =
        ObjectRef { namespace: "default".into(), name: "nightly".into(), uid: "job-uid".into(), generation: 2 };
    let job: Job = serde_json::from_value(job_json(two_tasks(), true, false))?;
    let upsert = duckmesh_scheduler::apply_job(&catalog, &object, &job.spec).await?;
    let extract = catalog.task_in_job(upsert.job.id, "extract").await?.expect("extract");
    catalog.lease_task(extract.id, "operator-0", Duration::from_secs(120)).await?.expect("leased");
    let (client, mut server) = mock_client();
    let task_object = json!({
        "apiVersion": "duckmesh.io/v1alpha1", "kind": "Task",
        "metadata": {"name": "nightly-extract", "namespace": "default", "uid": "t-uid", "generation": 1,
                     "ownerReferences": [{"apiVersion": "duckmesh.io/v1alpha1", "kind": "Job", "name": "nightly", "uid": "job-uid", "controller": true}]},
        "spec": {"job": "nightly", "template": two_tasks()[0].clone()}
    });
    let task: Task = serde_json::from_value(task_object.clone())?;
    let action = exchange(reconcile_task(Arc::new(task), context(client, &catalog)), async move {
        let seen = server.next().await.expect("PATCH", &format!("{GROUP_PATH}/tasks/nightly-extract/status"));
        let status = seen.body["status"].clone();
        assert_eq!(status["phase"], "Leased");
        assert_eq!(status["attempt"], 1);
        assert_eq!(status["leaseHolder"], "operator-0");
        assert!(status["leaseExpiresAt"].is_string(), "{status}");
        let mut reply = task_object;
        reply["status"] = status;
        seen.reply(StatusCode::OK, &reply);
    })
    .await?;
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    Ok(())
}

#[tokio::test]
async fn a_task_that_fails_for_good_says_so_in_its_status_and_an_event() -> Result<(), BoxError> {
    let (_db, catalog) = catalog_with(&["trips", "out"]).await?;
    let object =
        ObjectRef { namespace: "default".into(), name: "nightly".into(), uid: "job-uid".into(), generation: 2 };
    let job: Job = serde_json::from_value(job_json(two_tasks(), true, false))?;
    let upsert = duckmesh_scheduler::apply_job(&catalog, &object, &job.spec).await?;
    let extract = catalog.task_in_job(upsert.job.id, "extract").await?.expect("extract");
    let lease = catalog.lease_task(extract.id, "operator-0", Duration::from_secs(120)).await?.expect("leased");
    let failure =
        duckmesh_catalog::Failure { code: "sql_error".into(), message: "no such column".into(), retryable: false };
    catalog.fail_attempt(lease.attempt_ref(), &failure).await?;

    let (client, mut server) = mock_client();
    let task_object = json!({
        "apiVersion": "duckmesh.io/v1alpha1", "kind": "Task",
        "metadata": {"name": "nightly-extract", "namespace": "default", "uid": "t-uid", "generation": 1},
        "spec": {"job": "nightly", "template": two_tasks()[0].clone()}
    });
    let task: Task = serde_json::from_value(task_object.clone())?;
    let action = exchange(reconcile_task(Arc::new(task), context(client, &catalog)), async move {
        let seen = server.next().await.expect("PATCH", &format!("{GROUP_PATH}/tasks/nightly-extract/status"));
        let status = seen.body["status"].clone();
        assert_eq!(status["phase"], "Failed");
        assert_eq!(status["lastErrorCode"], "sql_error");
        let failed = condition(&status, "Failed");
        assert_eq!((failed["status"].as_str(), failed["reason"].as_str()), (Some("True"), Some("AttemptsFailed")));
        assert_eq!(condition(&status, "Succeeded")["status"], "False");
        let mut reply = task_object;
        reply["status"] = status;
        seen.reply(StatusCode::OK, &reply);
        let event = server.event("default").await;
        assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Warning"), Some("Failed")));
        assert!(event["note"].as_str().is_some_and(|n| n.contains("sql_error: no such column")), "{event}");
    })
    .await?;
    assert_eq!(action, Action::requeue(Duration::from_secs(300)), "finished tasks are looked at rarely");
    Ok(())
}
