//! End-to-end tests against a real cluster, gated on `DUCKMESH_E2E_KUBECONFIG` (the path of a
//! kubeconfig). Without it every test prints that it is skipped and returns: these tests are
//! not counted as coverage. See docs/operator.md, "Running the end-to-end tests".
//!
//! By default they expect an operator already running in the cluster (deployed with its RBAC,
//! catalog and store). With `DUCKMESH_E2E_DATABASE_URL` and `DUCKMESH_E2E_WORKER_IMAGE` set,
//! the operator runs inside the test process instead, against that catalog, and worker pods
//! read the catalog URL from the `duckmesh-catalog` Secret (created from
//! `DUCKMESH_E2E_WORKER_DATABASE_URL`, default the same URL).

use duckmesh_resources::{Dataset, Job, Task};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Client, Config, CustomResourceExt, ResourceExt};
use std::time::Duration;

const MANAGER: &str = "duckmesh-e2e";
const NAMESPACE: &str = "default";

/// A client for the cluster under test, or `None` (and a note) when the suite is not enabled.
async fn cluster(test: &str) -> Option<Client> {
    let Ok(path) = std::env::var("DUCKMESH_E2E_KUBECONFIG") else {
        eprintln!("skipped {test}: set DUCKMESH_E2E_KUBECONFIG to a kubeconfig to run the end-to-end tests");
        return None;
    };
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kubeconfig");
    Some(Client::try_from(config).expect("client"))
}

fn timeout() -> Duration {
    let seconds = std::env::var("DUCKMESH_E2E_TIMEOUT_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(900);
    Duration::from_secs(seconds)
}

/// Installs (server-side applies) the three CRDs and waits until they are established.
async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(MANAGER).force();
    for crd in [Dataset::crd(), Job::crd(), Task::crd()] {
        let name = crd.name_any();
        crds.patch(&name, &params, &Patch::Apply(&crd)).await.unwrap_or_else(|e| panic!("installing CRD {name}: {e}"));
        let established = await_condition(crds.clone(), &name, kube::runtime::conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(60), established)
            .await
            .expect("CRD established in time")
            .expect("watch");
    }
}

/// Applies every document of `examples/kubernetes/daily-sales.yaml` as it is.
async fn apply_example(client: &Client) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kubernetes/daily-sales.yaml");
    let text = std::fs::read_to_string(&path).expect("example");
    let params = PatchParams::apply(MANAGER).force();
    for resource in duckmesh_resources::parse_documents(&text, "daily-sales.yaml").expect("parses") {
        match resource {
            duckmesh_resources::Resource::Dataset(dataset) => {
                let api: Api<Dataset> = Api::namespaced(client.clone(), NAMESPACE);
                api.patch(&dataset.name_any(), &params, &Patch::Apply(&dataset)).await.expect("apply Dataset");
            }
            duckmesh_resources::Resource::Job(job) => {
                let api: Api<Job> = Api::namespaced(client.clone(), NAMESPACE);
                api.patch(&job.name_any(), &params, &Patch::Apply(&job)).await.expect("apply Job");
            }
            duckmesh_resources::Resource::Task(task) => {
                let api: Api<Task> = Api::namespaced(client.clone(), NAMESPACE);
                api.patch(&task.name_any(), &params, &Patch::Apply(&task)).await.expect("apply Task");
            }
        }
    }
}

/// Starts the operator in this process when the environment asks for it.
async fn maybe_run_operator(client: &Client) -> Option<tokio_util::sync::CancellationToken> {
    let url = std::env::var("DUCKMESH_E2E_DATABASE_URL").ok()?;
    let image = std::env::var("DUCKMESH_E2E_WORKER_IMAGE").ok()?;
    let worker_url = std::env::var("DUCKMESH_E2E_WORKER_DATABASE_URL").unwrap_or_else(|_| url.clone());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "duckmesh-catalog"}, "stringData": {"url": worker_url}
    });
    secrets
        .patch("duckmesh-catalog", &PatchParams::apply(MANAGER).force(), &Patch::Apply(&secret))
        .await
        .expect("secret");
    let catalog = duckmesh_catalog::Catalog::connect(&duckmesh_catalog::ConnectOptions::new(url), Default::default())
        .await
        .expect("catalog");
    catalog.migrate().await.expect("migrated");
    let config = duckmesh_operator::OperatorConfig {
        namespace: Some(NAMESPACE.into()),
        metrics_listen: "127.0.0.1:0".parse().expect("address"),
        worker: duckmesh_operator::WorkerPodConfig {
            image,
            image_pull_policy: std::env::var("DUCKMESH_E2E_IMAGE_PULL_POLICY").ok(),
            service_account: None,
            database_secret: duckmesh_operator::SecretKey { name: "duckmesh-catalog".into(), key: "url".into() },
            env_secret: std::env::var("DUCKMESH_E2E_WORKER_ENV_SECRET").ok(),
            env: duckmesh_operator::forwarded_env(std::env::vars()),
            scratch_size_limit: None,
        },
        identity: format!("e2e-{}", std::process::id()),
        lease_name: "duckmesh-operator-e2e".into(),
        lease_namespace: NAMESPACE.into(),
        election: Default::default(),
        scheduler_tick: Duration::from_secs(1),
        global_limit: None,
        resync: Default::default(),
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let token = shutdown.clone();
    let client = client.clone();
    let metrics = duckmesh_telemetry::Metrics::new();
    tokio::spawn(async move {
        if let Err(error) = duckmesh_operator::run_with_client(client, config, catalog, metrics, token).await {
            panic!("the in-process operator failed: {error}");
        }
    });
    Some(shutdown)
}

fn has_condition<K: kube::Resource>(
    type_: &'static str,
    status: &'static str,
    read: fn(&K) -> Vec<duckmesh_resources::Condition>,
) -> impl Condition<K> {
    move |object: Option<&K>| {
        object.is_some_and(|o| {
            read(o).iter().any(|c| c.type_ == type_ && serde_json::to_value(c.status).ok() == Some(status.into()))
        })
    }
}

fn job_conditions(job: &Job) -> Vec<duckmesh_resources::Condition> {
    job.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default()
}

#[tokio::test]
async fn the_kubernetes_example_runs_to_success() {
    let Some(client) = cluster("the_kubernetes_example_runs_to_success").await else { return };
    install_crds(&client).await;
    let operator = maybe_run_operator(&client).await;
    apply_example(&client).await;

    let jobs: Api<Job> = Api::namespaced(client.clone(), NAMESPACE);
    let succeeded = await_condition(jobs.clone(), "daily-sales", has_condition("Succeeded", "True", job_conditions));
    let job = tokio::time::timeout(timeout(), succeeded)
        .await
        .expect("the job succeeded in time (kubectl describe job.duckmesh.io/daily-sales tells why not)")
        .expect("watch")
        .expect("job exists");
    let status = job.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
    assert_eq!((status.counts.succeeded, status.counts.total), (2, 2));

    let tasks: Api<Task> = Api::namespaced(client.clone(), NAMESPACE);
    let owned = tasks.list(&ListParams::default().labels("duckmesh.io/job=daily-sales")).await.expect("tasks");
    assert_eq!(owned.items.len(), 2);
    for task in &owned.items {
        assert_eq!(task.owner_references().first().map(|o| o.kind.as_str()), Some("Job"));
        assert_eq!(task.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded"));
    }
    let datasets: Api<Dataset> = Api::namespaced(client.clone(), NAMESPACE);
    let daily = datasets.get("sales-daily").await.expect("dataset");
    let status = daily.status.expect("dataset status");
    assert!(status.current_snapshot.is_some(), "{status:?}");
    assert_eq!(status.rows, Some(30));

    jobs.delete("daily-sales", &DeleteParams::foreground()).await.expect("delete job");
    if let Some(operator) = operator {
        operator.cancel();
    }
}

#[tokio::test]
async fn an_invalid_job_is_reported_with_a_condition() {
    let Some(client) = cluster("an_invalid_job_is_reported_with_a_condition").await else { return };
    install_crds(&client).await;
    let operator = maybe_run_operator(&client).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), NAMESPACE);
    let cyclic: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "duckmesh.io/v1alpha1", "kind": "Job", "metadata": {"name": "e2e-cyclic"},
        "spec": {"tasks": [
            {"name": "a", "dependsOn": ["b"], "sql": "SELECT 1", "output": {"dataset": "sales-daily"}},
            {"name": "b", "dependsOn": ["a"], "sql": "SELECT 1", "output": {"dataset": "sales-daily"}}
        ]}
    }))
    .expect("job");
    jobs.patch("e2e-cyclic", &PatchParams::apply(MANAGER).force(), &Patch::Apply(&cyclic)).await.expect("applied");
    let invalid = await_condition(jobs.clone(), "e2e-cyclic", has_condition("Ready", "False", job_conditions));
    let job = tokio::time::timeout(Duration::from_secs(120), invalid)
        .await
        .expect("in time")
        .expect("watch")
        .expect("exists");
    let ready = job_conditions(&job).into_iter().find(|c| c.type_ == "Ready").expect("Ready");
    assert_eq!(ready.reason, "InvalidSpec");
    jobs.delete("e2e-cyclic", &DeleteParams::default()).await.expect("delete");
    if let Some(operator) = operator {
        operator.cancel();
    }
}
