//! The pod executor and the worker-pod watcher against a mocked API server and a real catalog.

mod common;

use common::{exchange, mock_client};
use duckmesh_catalog::{Catalog, Lease, TaskRecord};
use duckmesh_core::AttemptId;
use duckmesh_operator::{PodExecutor, PodWatcher, SecretKey, WorkerPodConfig};
use duckmesh_scheduler::{Executor, Launch, RunnerEnded, RunnerExit};
use duckmesh_testkit::{BoxError, TestDatabase};
use http::StatusCode;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::mpsc;

fn config() -> WorkerPodConfig {
    WorkerPodConfig {
        image: "duckmesh:test".into(),
        image_pull_policy: None,
        service_account: Some("duckmesh-worker".into()),
        database_secret: SecretKey { name: "duckmesh-catalog".into(), key: "url".into() },
        env_secret: None,
        env: vec![("DUCKMESH_S3_BUCKET".into(), "lake".into())],
        scratch_size_limit: None,
    }
}

fn launch(task: TaskRecord, lease: Lease, job: Option<&str>) -> Launch {
    Launch {
        lease,
        task,
        job: job.map(str::to_owned),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
    }
}

/// A real job with one leased task: (catalog, task record, lease).
async fn leased() -> Result<(TestDatabase, Catalog, TaskRecord, Lease), BoxError> {
    let db = TestDatabase::new().await?;
    let catalog = db.catalog().await?;
    let object = |name: &str| duckmesh_scheduler::ObjectRef {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        generation: 1,
    };
    let dataset: duckmesh_resources::DatasetSpec = serde_json::from_value(json!({}))?;
    duckmesh_scheduler::apply_dataset(&catalog, &object("out"), &dataset).await?;
    let job: duckmesh_resources::JobSpec = serde_json::from_value(json!({
        "tasks": [{"name": "load", "sql": "SELECT 1", "output": {"dataset": "out"},
                   "timeoutSeconds": 900, "resources": {"memory": "1Gi", "cpu": "2"}}]
    }))?;
    let upsert = duckmesh_scheduler::apply_job(&catalog, &object("nightly"), &job).await?;
    let task = catalog.task_in_job(upsert.job.id, "load").await?.expect("load");
    let lease = catalog.lease_task(task.id, "operator-0", Duration::from_secs(120)).await?.expect("leased");
    let task = catalog.task(task.id).await?;
    Ok((db, catalog, task, lease))
}

fn task_resource() -> Value {
    json!({
        "apiVersion": "duckmesh.io/v1alpha1", "kind": "Task",
        "metadata": {"name": "nightly-load", "namespace": "default", "uid": "task-resource-uid"},
        "spec": {"job": "nightly", "template": {"name": "load", "sql": "SELECT 1", "output": {"dataset": "out"}}}
    })
}

fn env_value<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["containers"][0]["env"]
        .as_array()
        .and_then(|env| env.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no env {name}"))
}

#[tokio::test]
async fn launch_creates_a_locked_down_worker_pod_owned_by_its_task() -> Result<(), BoxError> {
    let (_db, catalog, task, lease) = leased().await?;
    let (client, mut server) = mock_client();
    let executor = PodExecutor::new(client, catalog, config());
    let expected_lease = lease.clone();
    let result = exchange(executor.launch(launch(task.clone(), lease.clone(), Some("nightly"))), async move {
        server
            .next()
            .await
            .expect("GET", "/apis/duckmesh.io/v1alpha1/namespaces/default/tasks/nightly-load")
            .reply(StatusCode::OK, &task_resource());
        let seen = server.next().await.expect("POST", "/api/v1/namespaces/default/pods");
        let pod = seen.body.clone();
        assert_eq!(pod["metadata"]["name"], "nightly-load-a1");
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["uid"].as_str(), owner["controller"].as_bool()),
            (Some("Task"), Some("task-resource-uid"), Some(true))
        );
        assert_eq!(pod["metadata"]["labels"]["duckmesh.io/attempt"], "1");
        assert_eq!(pod["metadata"]["annotations"]["duckmesh.io/attempt-id"], expected_lease.attempt.0.to_string());
        assert_eq!(env_value(&pod, "DUCKMESH_TASK_ID")["value"], expected_lease.task.0.to_string());
        assert_eq!(env_value(&pod, "DUCKMESH_ATTEMPT_ID")["value"], expected_lease.attempt.0.to_string());
        assert_eq!(env_value(&pod, "DUCKMESH_FENCE")["value"], expected_lease.fence.0.to_string());
        assert_eq!(env_value(&pod, "TRACEPARENT")["value"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(env_value(&pod, "DUCKMESH_RUNNER")["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
        assert_eq!(env_value(&pod, "DUCKMESH_DATABASE_URL")["valueFrom"]["secretKeyRef"]["name"], "duckmesh-catalog");
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Never");
        // The task's 900 s timeout plus 10 %: the worker's own timeout fires first.
        assert_eq!(spec["activeDeadlineSeconds"], 990);
        assert_eq!(pod["metadata"]["annotations"]["duckmesh.io/timeout-seconds"], "900");
        assert_eq!(spec["serviceAccountName"], "duckmesh-worker");
        let container = &spec["containers"][0];
        assert_eq!(container["args"], json!(["worker"]));
        assert_eq!(container["resources"]["limits"]["memory"], "1Gi");
        assert_eq!(container["resources"]["requests"]["cpu"], "2");
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["runAsNonRoot"], true);
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
        seen.reply(StatusCode::CREATED, &pod);
    })
    .await;
    assert_eq!(result, Ok(()));
    Ok(())
}

#[tokio::test]
async fn launching_the_same_attempt_twice_is_harmless_and_a_missing_owner_is_an_error() -> Result<(), BoxError> {
    let (_db, catalog, task, lease) = leased().await?;
    let (client, mut server) = mock_client();
    let executor = PodExecutor::new(client, catalog, config());
    let twice = launch(task.clone(), lease.clone(), Some("nightly"));
    let result = exchange(executor.launch(twice), async move {
        server
            .next()
            .await
            .expect("GET", "/apis/duckmesh.io/v1alpha1/namespaces/default/tasks/nightly-load")
            .reply(StatusCode::OK, &task_resource());
        server.next().await.expect("POST", "/api/v1/namespaces/default/pods").fail(409, "AlreadyExists");
    })
    .await;
    assert_eq!(result, Ok(()), "AlreadyExists means the pod is there: idempotent");

    let (client, mut server) = mock_client();
    let (_db2, catalog2, _, _) = leased().await?;
    let executor = PodExecutor::new(client, catalog2, config());
    let result = exchange(executor.launch(launch(task, lease, Some("nightly"))), async move {
        server
            .next()
            .await
            .expect("GET", "/apis/duckmesh.io/v1alpha1/namespaces/default/tasks/nightly-load")
            .fail(404, "NotFound");
    })
    .await;
    assert_eq!(result.map_err(|e| e.error_code()), Err("owner_not_found"));
    Ok(())
}

#[tokio::test]
async fn stop_deletes_the_attempts_pod() -> Result<(), BoxError> {
    let (_db, catalog, _task, lease) = leased().await?;
    let (client, mut server) = mock_client();
    let executor = PodExecutor::new(client, catalog, config());
    let result = exchange(executor.stop(lease.attempt), async move {
        server.next().await.expect("DELETE", "/api/v1/namespaces/default/pods/nightly-load-a1").reply(
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nightly-load-a1"}}),
        );
    })
    .await;
    assert_eq!(result, Ok(()));
    // Stopping an attempt the catalog does not know is not an error (and asks nothing).
    let (client, server) = mock_client();
    let (_db2, catalog2, _, _) = leased().await?;
    let executor = PodExecutor::new(client, catalog2, config());
    let result = exchange(executor.stop(AttemptId(999_999)), async move { drop(server) }).await;
    assert_eq!(result, Ok(()));
    Ok(())
}

fn worker_pod(lease: &Lease, phase: &str, container_state: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "nightly-load-a1", "namespace": "default",
                     "labels": {"app.kubernetes.io/managed-by": "duckmesh-operator", "app.kubernetes.io/component": "worker"},
                     "annotations": {"duckmesh.io/task-id": lease.task.0.to_string(), "duckmesh.io/attempt-id": lease.attempt.0.to_string(),
                                     "duckmesh.io/fence": lease.fence.0.to_string()}},
        "spec": {"containers": [{"name": "worker", "image": "duckmesh:test"}], "activeDeadlineSeconds": 900},
        "status": {"phase": phase, "containerStatuses": [{"name": "worker", "image": "duckmesh:test", "imageID": "", "ready": false,
                                                          "restartCount": 0, "state": container_state}]}
    }))
    .expect("pod")
}

async fn observe(
    watcher: &PodWatcher,
    pod: &Pod,
    deleted: bool,
    verify: impl std::future::Future<Output = ()> + Send + 'static,
) {
    exchange(watcher.observe(pod, deleted), verify).await;
}

#[tokio::test]
async fn pod_ends_are_reported_to_the_scheduler_once() -> Result<(), BoxError> {
    let (_db, catalog, _task, lease) = leased().await?;
    let (tx, mut rx) = mpsc::channel::<RunnerEnded>(8);
    let expect = |exit: RunnerExit| RunnerEnded { task: lease.task, attempt: lease.attempt, fence: lease.fence, exit };

    let cases = [
        (
            worker_pod(&lease, "Failed", json!({"terminated": {"exitCode": 1, "reason": "Error"}})),
            RunnerExit::Exited(1),
        ),
        (
            worker_pod(&lease, "Failed", json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}})),
            RunnerExit::Killed { reason: "OOMKilled".into() },
        ),
        (
            worker_pod(&lease, "Succeeded", json!({"terminated": {"exitCode": 0, "reason": "Completed"}})),
            RunnerExit::Exited(0),
        ),
    ];
    for (pod, exit) in cases {
        let (client, mut server) = mock_client();
        let watcher = PodWatcher::new(client, catalog.clone(), None, tx.clone(), None);
        observe(&watcher, &pod, false, async move {
            let seen = server.next().await.expect("PATCH", "/api/v1/namespaces/default/pods/nightly-load-a1");
            assert_eq!(seen.body["metadata"]["annotations"]["duckmesh.io/reported"], "true");
            seen.echo();
        })
        .await;
        assert_eq!(rx.try_recv().ok(), Some(expect(exit)));
    }

    // Reported already: nothing is sent and nothing is written.
    let mut reported = worker_pod(&lease, "Failed", json!({"terminated": {"exitCode": 1, "reason": "Error"}}));
    reported.metadata.annotations.get_or_insert_default().insert("duckmesh.io/reported".into(), "true".into());
    let (client, server) = mock_client();
    let watcher = PodWatcher::new(client, catalog.clone(), None, tx.clone(), None);
    observe(&watcher, &reported, false, async move { drop(server) }).await;
    assert!(rx.try_recv().is_err());

    // Deleted while running: the runner is lost.
    let running = worker_pod(&lease, "Running", json!({"running": {"startedAt": "2026-11-23T09:00:00Z"}}));
    let (client, server) = mock_client();
    let watcher = PodWatcher::new(client, catalog.clone(), None, tx.clone(), None);
    observe(&watcher, &running, true, async move { drop(server) }).await;
    let lost = rx.try_recv().expect("reported");
    assert!(matches!(lost.exit, RunnerExit::Lost { .. }), "{lost:?}");
    assert_eq!((lost.task, lost.attempt, lost.fence), (lease.task, lease.attempt, lease.fence));
    Ok(())
}

#[tokio::test]
async fn a_running_pod_is_kept_while_its_attempt_is_live_and_deleted_once_it_is_not() -> Result<(), BoxError> {
    let (_db, catalog, _task, lease) = leased().await?;
    let (tx, mut rx) = mpsc::channel::<RunnerEnded>(8);
    let running = worker_pod(&lease, "Running", json!({"running": {"startedAt": "2026-11-23T09:00:00Z"}}));

    let (client, server) = mock_client();
    let watcher = PodWatcher::new(client, catalog.clone(), None, tx.clone(), None);
    observe(&watcher, &running, false, async move { drop(server) }).await;

    // The lease is cancelled (the job is deleted): the pod is stale.
    let job = catalog.task(lease.task).await?.job.expect("job");
    catalog.cancel_job(job, "test").await?;
    let (client, mut server) = mock_client();
    let watcher = PodWatcher::new(client, catalog.clone(), None, tx.clone(), None);
    observe(&watcher, &running, false, async move {
        server.next().await.expect("DELETE", "/api/v1/namespaces/default/pods/nightly-load-a1").reply(
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nightly-load-a1"}}),
        );
    })
    .await;
    assert!(rx.try_recv().is_err(), "nothing to report for a running pod");

    // A pod that names an attempt the catalog never had is stale too.
    let mut stranger = running.clone();
    stranger.metadata.annotations.get_or_insert_default().insert("duckmesh.io/attempt-id".into(), "424242".into());
    let (client, mut server) = mock_client();
    let watcher = PodWatcher::new(client, catalog, None, tx, None);
    observe(&watcher, &stranger, false, async move {
        server.next().await.expect("DELETE", "/api/v1/namespaces/default/pods/nightly-load-a1").fail(404, "NotFound");
    })
    .await;
    Ok(())
}
