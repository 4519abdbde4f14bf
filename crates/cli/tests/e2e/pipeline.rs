//! Pipelines through `kubectl`: the quickstart applied as users do, waited for with
//! `kubectl wait`, its Datasets' status fresh, its results equal to `duckmesh dev`'s; an invalid
//! Job answered with a condition and a Warning event, without a hot loop; an idle operator.

use crate::harness::{Env, JOB_TIMEOUT, REPO, free_port, http_get, snapshot_of, tasks_of};
use duckmesh_resources::Dataset;
use kube::ResourceExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const QUICKSTART_TASKS: usize = 7;
/// What a fresh commit may take to show in its Dataset's status (the resync is 5 minutes).
const STATUS_FRESHNESS: Duration = Duration::from_secs(20);

/// The rows `sql` returns as CSV from the query API at `url` (namespace `ns`).
fn query_csv(url: &str, ns: Option<&str>, sql: &str) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_duckmesh"));
    command.args(["query", sql, "--format", "csv", "--url", url]);
    if let Some(ns) = ns {
        command.args(["--namespace", ns]);
    }
    let output = command.output().expect("duckmesh query");
    assert!(output.status.success(), "duckmesh query {sql}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn wait_http(url: &str, what: &str) {
    let started = Instant::now();
    let port: u16 = url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    while http_get(port, "/v1/ready").is_none() {
        assert!(started.elapsed() < Duration::from_secs(120), "{what} did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The same queries on both sides. Sums of DOUBLE fares are rounded to the cent: DuckDB's
/// parallel aggregation adds them in a varying order, so the last bits differ run to run.
const RESULT_QUERIES: [&str; 4] = [
    "SELECT trips, round(revenue, 2) AS revenue, busiest_borough, top_route FROM trip_summary",
    "SELECT borough, trips, round(revenue, 2) AS revenue FROM borough_stats ORDER BY borough",
    "SELECT pickup, dropoff, trips, round(revenue, 2) AS revenue FROM top_routes ORDER BY ALL",
    "SELECT day, trips, round(revenue, 2) AS revenue, round(avg_distance_km, 6) AS d FROM daily_revenue ORDER BY day",
];

#[tokio::test]
async fn the_quickstart_applied_with_kubectl_succeeds_and_matches_dev_mode() {
    let mut env = Env::new("quickstart").await;
    env.start_operator("op-a");

    // As a user: apply the file (Datasets and the Job together) and wait with kubectl.
    let applied = Instant::now();
    env.kubectl_ok(&["apply", "-f", &format!("{REPO}/examples/quickstart.yaml")]);
    let waited = env
        .kubectl()
        .args(["wait", "--for=condition=Succeeded", "job.duckmesh.io/quickstart"])
        .arg(format!("--timeout={}s", JOB_TIMEOUT.as_secs()))
        .output()
        .expect("kubectl wait");
    assert!(waited.status.success(), "kubectl wait: {:?}\n{}", waited, env.diagnostics());
    let succeeded_after = applied.elapsed();

    // The Job was applied with its Datasets: it must not have waited for them.
    let events = env.kubectl_ok(&["get", "events", "-o", "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}"]);
    assert!(!events.lines().any(|r| r == "DatasetNotFound"), "the Job waited for its Datasets:\n{events}");

    // Every output Dataset shows its commit within seconds of the Job's success, not at the
    // next resync.
    let job_outputs = ["trips-raw", "trips-clean", "daily-revenue", "borough-stats", "top-routes", "trip-summary"];
    for name in job_outputs {
        let dataset = env
            .wait_for::<Dataset>(name, "a committed snapshot in status", STATUS_FRESHNESS, |d: Option<&Dataset>| {
                d.and_then(snapshot_of).is_some()
            })
            .await;
        let status = dataset.status.expect("status");
        assert!(status.rows.unwrap_or(0) > 0 && status.files.unwrap_or(0) > 0, "{name}: {status:?}");
    }
    let summary = env.api::<Dataset>().get("trip-summary").await.expect("dataset");
    assert_eq!(summary.status.as_ref().and_then(|s| s.rows), Some(1), "{summary:?}");

    // Tasks show their final phase; the catalog has exactly one commit per task.
    let tasks = tasks_of(&env, "quickstart").await;
    assert_eq!(tasks.len(), QUICKSTART_TASKS);
    for task in &tasks {
        let phase = task.status.as_ref().and_then(|s| s.phase.clone());
        assert_eq!(phase.as_deref(), Some("Succeeded"), "{}", task.name_any());
    }
    env.assert_each_task_committed_once(QUICKSTART_TASKS).await;
    eprintln!("quickstart: applied to Succeeded in {:.1} s", succeeded_after.as_secs_f64());

    // The same pipeline in dev mode gives the same rows to the same queries.
    let api_port = free_port();
    let mut api = Command::new(env!("CARGO_BIN_EXE_duckmesh"));
    api.args(["api", "--listen", &format!("127.0.0.1:{api_port}"), "--database-url", env.db.url()])
        .env("DUCKMESH_QUERY_AUTH", "none")
        .env("DUCKMESH_QUERY_NAMESPACE", &env.ns)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    crate::harness::s3_env(&mut api, &env.s3);
    let mut api = api.spawn().expect("duckmesh api");
    let cluster_url = format!("http://127.0.0.1:{api_port}");
    wait_http(&cluster_url, "duckmesh api").await;

    let dev_db = duckmesh_testkit::TestDatabase::new().await.expect("dev database");
    let state = tempfile::tempdir().expect("dev state");
    let dev_port = free_port();
    let mut dev = Command::new(env!("CARGO_BIN_EXE_duckmesh"))
        .arg("dev")
        .arg(Path::new(REPO).join("examples/quickstart.yaml"))
        .arg("--state-dir")
        .arg(state.path())
        .args(["--database-url", dev_db.url(), "--listen", &format!("127.0.0.1:{dev_port}"), "--keep-serving"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("duckmesh dev");
    let dev_url = format!("http://127.0.0.1:{dev_port}");
    // dev runs the job, then keeps serving its API (--keep-serving): wait for the job in its
    // catalog.
    let pool = sqlx::PgPool::connect(dev_db.url()).await.expect("dev catalog");
    let started = Instant::now();
    loop {
        let phase: Option<(String,)> = sqlx::query_as("SELECT phase FROM jobs WHERE name = 'quickstart'")
            .fetch_optional(&pool)
            .await
            .expect("dev job phase");
        match phase.as_ref().map(|p| p.0.as_str()) {
            Some("Succeeded") => break,
            Some("Failed" | "Cancelled") => panic!("duckmesh dev's quickstart ended {phase:?}"),
            _ => {}
        }
        assert!(started.elapsed() < JOB_TIMEOUT, "duckmesh dev did not finish the quickstart");
        assert!(dev.try_wait().expect("dev").is_none(), "duckmesh dev exited early");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pool.close().await;
    wait_http(&dev_url, "duckmesh dev").await;
    for sql in RESULT_QUERIES {
        let cluster = query_csv(&cluster_url, Some(&env.ns), sql);
        let local = query_csv(&dev_url, None, sql);
        assert!(cluster.lines().count() >= 2, "{sql}: {cluster}");
        assert_eq!(cluster, local, "{sql}: the cluster and dev mode disagree");
    }
    let _ = api.kill();
    let _ = dev.kill();
    let _ = api.wait();
    let _ = dev.wait();

    // Idle: one finished Job, nothing to do. Reconciles per minute stay bounded (a hot loop
    // makes thousands). Measured over 30 s.
    let window = Duration::from_secs(30);
    let before = env.reconciles("op-a");
    tokio::time::sleep(window).await;
    let after = env.reconciles("op-a");
    let per_minute = (after - before) * 60.0 / window.as_secs_f64();
    eprintln!("idle operator: {per_minute:.1} reconciles/min with one finished Job and 7 Datasets");
    assert!(per_minute <= 120.0, "idle operator reconciles {per_minute:.0}/min");
}

#[tokio::test]
async fn an_invalid_job_gets_a_condition_and_a_warning_event_without_a_hot_loop() {
    let mut env = Env::new("invalid").await;
    env.start_operator("op-a");
    env.apply_yaml(
        r#"apiVersion: duckmesh.io/v1alpha1
kind: Dataset
metadata: {name: out}
spec: {}
---
apiVersion: duckmesh.io/v1alpha1
kind: Job
metadata: {name: cyclic}
spec:
  tasks:
    - {name: a, dependsOn: [b], sql: SELECT 1 AS x, output: {dataset: out}}
    - {name: b, dependsOn: [a], sql: SELECT 1 AS x, output: {dataset: out}}
"#,
    );
    let job = env
        .wait_for::<duckmesh_resources::Job>(
            "cyclic",
            "Ready=False",
            Duration::from_secs(60),
            crate::harness::job_condition("Ready", "False"),
        )
        .await;
    let ready = job.status.expect("status").conditions.into_iter().find(|c| c.type_ == "Ready").expect("Ready");
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(ready.message.contains('a') && ready.message.to_lowercase().contains("cycle"), "{}", ready.message);

    let started = Instant::now();
    let warning = loop {
        let events = env.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=cyclic,type=Warning",
            "-o",
            "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
        ]);
        if events.lines().any(|r| r == "InvalidSpec") {
            break events;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no Warning InvalidSpec event:\n{}", env.diagnostics());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(!warning.is_empty());

    // No crash loop, no hot loop: the operator stays up and the invalid Job is not retried
    // over and over.
    let window = Duration::from_secs(20);
    let before = env.reconciles("op-a");
    tokio::time::sleep(window).await;
    let after = env.reconciles("op-a");
    let per_minute = (after - before) * 60.0 / window.as_secs_f64();
    eprintln!("operator with an invalid Job: {per_minute:.1} reconciles/min");
    assert!(per_minute <= 120.0, "{per_minute:.0} reconciles/min");
    assert!(env.operators.get_mut("op-a").expect("op").try_wait().expect("status").is_none(), "the operator exited");
    assert!(env.task_commits().await.is_empty(), "an invalid Job registered tasks");
}
