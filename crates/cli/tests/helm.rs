//! `helm install duckmesh` for real, on the Kubernetes test bed (crates/testbed): the chart in
//! `charts/duckmesh` installed with the pinned helm (`scripts/go-tools.sh`) into a real API
//! server, its pods run by the test node from the `duckmesh` binary under test as the image, on
//! a real PostgreSQL catalog and a real S3-compatible store (moto).
//!
//! One test walks a release's life: install (the pre-install hook Job migrates an empty catalog;
//! two operator replicas, two API replicas and a coordinator become Ready, each on its own pod
//! IP), the quickstart Job applied with kubectl succeeds, `helm test` (the API's `/v1/ready`, one
//! query) passes, an upgrade that changes nothing the pods run leaves them alone, an upgrade
//! with a changed value rolls every pod and keeps the Job's history, and `helm uninstall` leaves
//! nothing of the release but the CRDs and the data. `just e2e-helm` runs it.

#[path = "common/mod.rs"]
mod common;
// The e2e suite's harness, for its bed, image and test database helpers only.
#[allow(dead_code, unused_imports)]
#[path = "e2e/harness.rs"]
mod harness;

use harness::{JOB_TIMEOUT, REPO};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const NAMESPACE: &str = "duckmesh-system";
const RELEASE: &str = "dm";
/// How long helm waits for the release's pods (a debug build of DuckMesh on two loaded cores).
const HELM_TIMEOUT: &str = "8m";

struct World {
    bed: duckmesh_testbed::Bed,
    client: Client,
    helm: PathBuf,
    dir: tempfile::TempDir,
}

impl World {
    fn helm(&self, args: &[&str]) -> Output {
        let mut command = Command::new(&self.helm);
        for (variable, sub) in
            [("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")]
        {
            command.env(variable, self.dir.path().join(sub));
        }
        command.arg("--kubeconfig").arg(self.bed.control_plane().kubeconfig()).args(["--namespace", NAMESPACE]);
        let started = Instant::now();
        let output = command.args(args).output().expect("helm runs");
        eprintln!("helm {} ({:.1} s)", args.join(" "), started.elapsed().as_secs_f64());
        output
    }

    fn helm_ok(&self, args: &[&str]) -> String {
        let output = self.helm(args);
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "helm {args:?} failed:\n{text}\n{}", self.diagnostics());
        text
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        let mut command = self.bed.kubectl();
        command.args(["--namespace", NAMESPACE]).args(args);
        command.output().expect("kubectl runs")
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.diagnostics()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The release's pods by component: name → (uid, pod IP), Ready ones only.
    async fn ready_pods(&self, component: &str) -> BTreeMap<String, (String, String)> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        let selector = format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}");
        let list = pods.list(&ListParams::default().labels(&selector)).await.expect("pods");
        list.items
            .into_iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .filter(|pod| {
                pod.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .map(|pod| {
                let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
                (pod.name_any(), (pod.uid().unwrap_or_default(), ip))
            })
            .collect()
    }

    /// What the cluster says, for a failure message.
    fn diagnostics(&self) -> String {
        let mut out = String::new();
        for args in [
            vec!["get", "all,leases,secrets,serviceaccounts,jobs.duckmesh.io,tasks.duckmesh.io", "-o", "wide"],
            vec!["get", "events", "--sort-by=.lastTimestamp"],
        ] {
            let mut command = self.bed.kubectl();
            if let Ok(output) = command.args(["--namespace", NAMESPACE]).args(&args).output() {
                out.push_str(&format!(
                    "$ kubectl {}\n{}{}\n",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
        }
        let pods_dir = self.bed.control_plane().dir().join("pods");
        for entry in std::fs::read_dir(&pods_dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&format!("{NAMESPACE}_{RELEASE}-")) {
                continue;
            }
            for container in std::fs::read_dir(entry.path()).into_iter().flatten().flatten() {
                for log in std::fs::read_dir(container.path()).into_iter().flatten().flatten() {
                    let text = std::fs::read_to_string(log.path()).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    out.push_str(&format!(
                        "--- {name}/{} (last 15 lines)\n{}\n",
                        log.file_name().to_string_lossy(),
                        lines[lines.len().saturating_sub(15)..].join("\n")
                    ));
                }
            }
        }
        out
    }
}

/// The applied catalog migrations.
async fn migrations(url: &str) -> i64 {
    let pool = sqlx::PgPool::connect(url).await.expect("catalog");
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .expect("catalog query");
    let count = if exists {
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success").fetch_one(&pool).await.expect("count")
    } else {
        0
    };
    pool.close().await;
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn helm_install_test_upgrade_and_uninstall_on_the_bed() {
    let started = Instant::now();
    let images = harness::image_dir();
    let bed = harness::start_bed(images.path()).await.expect("the Kubernetes test bed starts");
    let client = bed.client();
    let helm = tokio::task::spawn_blocking(common::helm_path).await.expect("helm");
    let world =
        World { bed, client, helm, dir: tempfile::Builder::new().prefix("duckmesh-e2e-helm-").tempdir().expect("dir") };

    // An empty catalog database: the hook Job is what migrates it.
    let db = duckmesh_testkit::TestDatabase::new().await.expect("test database");
    {
        let pool = sqlx::PgPool::connect(db.url()).await.expect("catalog");
        sqlx::raw_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;").execute(&pool).await.expect("emptied");
        pool.close().await;
    }
    assert_eq!(migrations(db.url()).await, 0);
    let moto = duckmesh_storage::testing::MotoServer::shared().await.expect("moto");
    let s3 = moto.scoped_config();
    let credentials = s3.credentials.clone().expect("moto credentials");

    // The bed's values: the binary under test as the image, listeners on each pod's own IP,
    // Secrets made from values, no API keys (a test cluster).
    let values = serde_json::json!({
        "image": {"repository": harness::IMAGE, "tag": "e2e", "pullPolicy": "Never"},
        "listenHost": "$(POD_IP)",
        "catalog": {"url": db.url()},
        "objectStore": {
            "bucket": s3.bucket,
            "prefix": s3.prefix.clone().unwrap_or_default(),
            "endpoint": s3.endpoint.clone().unwrap_or_default(),
            "region": s3.region,
            "accessKeyId": credentials.access_key_id,
            "secretAccessKey": credentials.secret_access_key,
        },
        "api": {"auth": {"mode": "none"}, "queryNamespace": NAMESPACE},
        "tests": {"query": "SELECT trips FROM trip_summary"},
    });
    let values_file = world.dir.path().join("values.yaml");
    std::fs::write(&values_file, serde_yaml_ng::to_string(&values).expect("yaml")).expect("values");
    let values_path = values_file.display().to_string();
    let chart = Path::new(REPO).join("charts/duckmesh").display().to_string();
    world.kubectl_ok(&["create", "namespace", NAMESPACE]);

    // Install: the CRDs from crds/, the hook, then every object; --wait until the pods are Ready.
    let install =
        world.helm_ok(&["install", RELEASE, &chart, "--values", &values_path, "--wait", "--timeout", HELM_TIMEOUT]);
    assert!(install.contains("STATUS: deployed"), "{install}");
    assert!(install.contains("port-forward svc/dm-duckmesh-api"), "the notes say how to reach the API:\n{install}");
    assert!(install.contains("quickstart"), "the notes say how to run the quickstart:\n{install}");
    let installed_after = started.elapsed();
    let crds = world.kubectl_ok(&["get", "crd", "-o", "name"]);
    for crd in ["datasets.duckmesh.io", "jobs.duckmesh.io", "tasks.duckmesh.io"] {
        assert!(crds.contains(crd), "{crd} installed from the chart's crds/: {crds}");
    }
    // The hook Job ran (its events outlive it; it is deleted once it succeeded) and migrated.
    let events = world.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Job",
        "-o",
        "jsonpath={range .items[*]}{.involvedObject.name} {.reason}{\"\\n\"}{end}",
    ]);
    assert!(events.lines().any(|l| l == "dm-duckmesh-migrate Completed"), "the migration Job completed:\n{events}");
    assert!(migrations(db.url()).await > 0, "the catalog is migrated");
    let migrate_logs: String = std::fs::read_dir(world.bed.control_plane().dir().join("pods"))
        .expect("pods dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{NAMESPACE}_dm-duckmesh-migrate-")))
        .map(|e| std::fs::read_to_string(e.path().join("migrate/0.log")).unwrap_or_default())
        .collect();
    assert!(migrate_logs.contains("catalog schema is up to date"), "{migrate_logs}");
    assert!(migrate_logs.lines().any(|l| l.starts_with("applied")), "the hook applied the migrations:\n{migrate_logs}");

    let operators = world.ready_pods("operator").await;
    let apis = world.ready_pods("api").await;
    let coordinators = world.ready_pods("coordinator").await;
    assert_eq!((operators.len(), apis.len(), coordinators.len()), (2, 2, 1), "{}", world.diagnostics());
    let ips: std::collections::BTreeSet<&String> =
        operators.values().chain(apis.values()).chain(coordinators.values()).map(|(_, ip)| ip).collect();
    assert_eq!(ips.len(), 5, "each pod on an address of its own: {ips:?}");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(world.client.clone(), NAMESPACE);
    // Ready means started (leader or standby): the election may take a moment more.
    let deadline = Instant::now() + Duration::from_secs(30);
    let holder = loop {
        let holder = leases.get_opt("duckmesh-operator").await.expect("lease").and_then(|l| l.spec?.holder_identity);
        if holder.as_ref().is_some_and(|h| operators.contains_key(h)) || Instant::now() > deadline {
            break holder;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(holder.as_ref().is_some_and(|h| operators.contains_key(h)), "one operator leads: {holder:?}");

    // The quickstart, as a user applies it.
    let quickstart = Path::new(REPO).join("examples/quickstart.yaml").display().to_string();
    world.kubectl_ok(&["apply", "-f", &quickstart]);
    let waited = world.kubectl(&[
        "wait",
        "--for=condition=Succeeded",
        "job.duckmesh.io/quickstart",
        &format!("--timeout={}s", JOB_TIMEOUT.as_secs()),
    ]);
    assert!(waited.status.success(), "the quickstart Job: {waited:?}\n{}", world.diagnostics());
    let quickstart_after = started.elapsed();
    let job_uid = world.kubectl_ok(&["get", "job.duckmesh.io/quickstart", "-o", "jsonpath={.metadata.uid}"]);

    // Services do not route on the bed (no kube-proxy): the test pod gets an API pod's IP.
    let (_, api_ip) = apis.values().next().expect("an API pod").clone();
    let api_url = format!("http://{api_ip}:8080");
    world.helm_ok(&[
        "upgrade",
        RELEASE,
        &chart,
        "--reuse-values",
        "--set",
        &format!("tests.apiUrl={api_url}"),
        "--wait",
        "--timeout",
        HELM_TIMEOUT,
    ]);
    for (component, before) in [("operator", &operators), ("api", &apis), ("coordinator", &coordinators)] {
        let after = world.ready_pods(component).await;
        assert_eq!(&after, before, "{component}: an upgrade that changes nothing the pods run leaves them alone");
    }
    let tested = world.helm_ok(&["test", RELEASE, "--logs", "--timeout", "5m"]);
    eprintln!("{tested}");
    assert!(tested.contains("Succeeded") && !tested.contains("Failed"), "{tested}");
    let answer = tested.split("trips\n").nth(1).and_then(|rest| rest.lines().next()).unwrap_or_default();
    assert!(answer.parse::<u64>().is_ok_and(|trips| trips > 0), "the test query's answer is in its log:\n{tested}");
    let helm_tested_after = started.elapsed();

    // A changed value rolls every pod; the Job and its history stay.
    world.helm_ok(&[
        "upgrade",
        RELEASE,
        &chart,
        "--reuse-values",
        "--set",
        "logLevel=info",
        "--wait",
        "--timeout",
        HELM_TIMEOUT,
    ]);
    for (component, before) in [("operator", &operators), ("api", &apis), ("coordinator", &coordinators)] {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let after = world.ready_pods(component).await;
            let rolled = after.len() == before.len()
                && after.values().all(|(uid, _)| !before.values().any(|(old, _)| old == uid));
            if rolled {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{component} pods did not roll: {before:?} → {after:?}\n{}",
                world.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let env = world.kubectl_ok(&[
        "get",
        "deployment/dm-duckmesh-api",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"DUCKMESH_LOG\")].value}",
    ]);
    assert_eq!(env, "info");
    assert_eq!(world.kubectl_ok(&["get", "job.duckmesh.io/quickstart", "-o", "jsonpath={.metadata.uid}"]), job_uid);
    let succeeded = world.kubectl_ok(&[
        "get",
        "job.duckmesh.io/quickstart",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Succeeded\")].status}",
    ]);
    assert_eq!(succeeded, "True", "the Job's history stays");
    let history = world.helm_ok(&["history", RELEASE]);
    assert_eq!(history.lines().filter(|l| l.contains("deployed") || l.contains("superseded")).count(), 3, "{history}");

    // Uninstall: nothing of the release is left; the CRDs, the resources and the data are.
    world.helm_ok(&["uninstall", RELEASE, "--cascade", "foreground", "--wait", "--timeout", HELM_TIMEOUT]);
    let kinds = "deployments,replicasets,pods,services,secrets,configmaps,serviceaccounts,roles,rolebindings,leases,poddisruptionbudgets,networkpolicies,horizontalpodautoscalers,jobs.batch";
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left =
            world.kubectl_ok(&["get", kinds, "-l", &format!("app.kubernetes.io/instance={RELEASE}"), "-o", "name"]);
        let pods = world.kubectl_ok(&["get", "pods", "-o", "name"]);
        // Worker pods belong to their Task resources (kept with them), not to the release.
        let release_pods: Vec<&str> =
            pods.lines().filter(|p| p.starts_with(&format!("pod/{RELEASE}-duckmesh-"))).collect();
        if left.trim().is_empty() && release_pods.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left after uninstall:\n{left}{release_pods:?}\n{}", world.diagnostics());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cluster_left = world.kubectl_ok(&[
        "get",
        "clusterroles,clusterrolebindings",
        "-l",
        &format!("app.kubernetes.io/instance={RELEASE}"),
        "-o",
        "name",
    ]);
    assert!(cluster_left.trim().is_empty(), "{cluster_left}");
    // What is left in the namespace: the DuckMesh resources, the worker pods they own, and the
    // operator's election Lease (the operator's own object, not the release's).
    let left =
        world.kubectl_ok(&["get", "all,secrets,configmaps,serviceaccounts,roles,rolebindings,leases", "-o", "name"]);
    for object in left.lines() {
        let expected = object.starts_with("pod/quickstart-")
            || object.starts_with("job.duckmesh.io/")
            || object == "lease.coordination.k8s.io/duckmesh-operator"
            || object == "serviceaccount/default"
            || object == "configmap/kube-root-ca.crt";
        assert!(expected, "{object} left after uninstall:\n{left}");
    }
    let crds = world.kubectl_ok(&["get", "crd", "-o", "name"]);
    assert_eq!(crds.lines().filter(|l| l.ends_with(".duckmesh.io")).count(), 3, "the CRDs stay: {crds}");
    let rows = world.kubectl_ok(&["get", "dataset.duckmesh.io/trip-summary", "-o", "jsonpath={.status.rows}"]);
    assert_eq!(rows, "1", "the Datasets and their status stay");
    let pool = sqlx::PgPool::connect(db.url()).await.expect("catalog");
    let snapshots: i64 =
        sqlx::query_scalar("SELECT count(*) FROM snapshots").fetch_one(&pool).await.expect("snapshots");
    pool.close().await;
    assert!(snapshots >= 7, "the catalog keeps the committed snapshots: {snapshots}");
    let store = duckmesh_storage::StoreConfig::S3(Box::new(s3.clone()))
        .build(std::sync::Arc::new(duckmesh_storage::StoreCounters::new()))
        .await
        .expect("store");
    let files = store.list("").await.expect("list");
    assert!(!files.is_empty(), "the bucket keeps the data");

    eprintln!(
        "e2e-helm: installed (Ready) after {:.0} s, quickstart succeeded after {:.0} s, helm test passed after {:.0} s, all done in {:.0} s",
        installed_after.as_secs_f64(),
        quickstart_after.as_secs_f64(),
        helm_tested_after.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    world.bed.stop().await;
}
