//! `duckmesh dev` end to end, as a user runs it: the real binary on the quickstart example,
//! workers as child processes, a real PostgreSQL catalog. The final numbers are checked
//! against values computed here independently (plain Rust over the same integer formulas),
//! and the run survives a SIGKILLed worker and a SIGKILLed `duckmesh dev`.

mod common;
#[allow(dead_code)] // the binary's module; this test uses part of it
#[path = "../src/metrics.rs"]
mod process_metrics;

use common::{sigkill, until, wait};
use duckmesh_catalog::{Catalog, TaskRecord};
use duckmesh_core::{AttemptState, JobPhase, TaskPhase};
use duckmesh_testkit::TestDatabase;
use std::collections::HashMap;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

const QUICKSTART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/quickstart.yaml");

/// The quickstart's `trip-summary`, computed without DuckMesh or DuckDB.
#[derive(Debug, PartialEq)]
struct Summary {
    trips: i64,
    revenue_cents: i64,
    busiest_borough: String,
    top_route: String,
}

fn expected_summary() -> Summary {
    let borough = |zone: i64| match zone % 4 {
        0 => "Manhattan",
        1 => "Brooklyn",
        2 => "Queens",
        _ => "Bronx",
    };
    let (mut trips, mut revenue_cents) = (0i64, 0i64);
    let mut boroughs: HashMap<&str, i64> = HashMap::new();
    let mut routes: HashMap<(i64, i64), i64> = HashMap::new();
    for i in 0..1_200_000i64 {
        let r1 = (i * 2_654_435_761) % 4_294_967_291;
        let r2 = (i * 40_503 + 12_345) % 65_521;
        let pickup = 1 + r1 % 100;
        let dropoff = 1 + (r1 / 100) % 100;
        let distance = if i % 89 == 0 { 0 } else { (r1 / 10_000) % 3_000 };
        let sign = if i % 97 == 0 { -1 } else { 1 };
        let fare = sign * (250 + ((r1 / 10_000) % 3_000) * 18 / 10 + r2 % 500);
        if fare > 0 && distance > 0 {
            trips += 1;
            revenue_cents += fare;
            *boroughs.entry(borough(pickup)).or_default() += 1;
            *routes.entry((pickup, dropoff)).or_default() += 1;
        }
    }
    let busiest = boroughs.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(b, _)| b.to_string());
    let top = routes.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(r, _)| *r);
    Summary {
        trips,
        revenue_cents,
        busiest_borough: busiest.unwrap_or_default(),
        top_route: top.map(|(p, d)| format!("Zone {p:03} → Zone {d:03}")).unwrap_or_default(),
    }
}

struct Dev {
    db: TestDatabase,
    catalog: Catalog,
    state: tempfile::TempDir,
}

impl Dev {
    async fn new() -> Self {
        let db = TestDatabase::new().await.expect("test database");
        let catalog = db.catalog().await.expect("catalog");
        Self { db, catalog, state: tempfile::tempdir().expect("state dir") }
    }

    fn command(&self, file: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_duckmesh"));
        command
            .arg("dev")
            .arg(file)
            .arg("--state-dir")
            .arg(self.state.path())
            .arg("--database-url")
            .arg(self.db.url())
            .args(["--listen", "127.0.0.1:0", "--max-parallel", "2"])
            // Fast lease expiry so that a run after a crash does not wait long.
            .env("DUCKMESH_TASK_LEASE_SECONDS", "6")
            .env("DUCKMESH_HEARTBEAT_SECONDS", "1")
            .env("DUCKMESH_TASK_RETRY_BASE_SECONDS", "0.2")
            .env("DUCKMESH_TASK_RETRY_MAX_SECONDS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn start(&self, file: &str) -> Child {
        self.command(file).spawn().expect("start duckmesh dev")
    }

    async fn run_to_end(&self, file: &str) -> (ExitStatus, String, String) {
        let child = self.start(file);
        wait(child).await
    }

    async fn tasks(&self) -> HashMap<String, TaskRecord> {
        let Ok(job) = self.catalog.job_by_name("default", "quickstart").await else { return HashMap::new() };
        let tasks = self.catalog.tasks_of_job(job.id).await.expect("tasks");
        tasks.into_iter().map(|t| (t.name.clone(), t)).collect()
    }

    /// Reads the committed `trip-summary` from the local store's Parquet files.
    async fn summary(&self) -> Summary {
        let dataset = self.catalog.dataset_by_name("default", "trip-summary").await.expect("dataset");
        let snapshot = self.catalog.latest_snapshot(dataset.id).await.expect("read").expect("a snapshot");
        let files = self.catalog.snapshot_files(dataset.id, snapshot.id).await.expect("files");
        let root = self.state.path().canonicalize().expect("state dir").join("objects");
        let paths: Vec<String> = files.iter().map(|f| format!("'{}'", root.join(&f.path).display())).collect();
        let duck = duckdb::Connection::open_in_memory().expect("duckdb");
        let sql = format!(
            "SELECT trips::BIGINT, round(revenue * 100)::BIGINT, busiest_borough, top_route FROM read_parquet([{}])",
            paths.join(", ")
        );
        duck.query_row(&sql, [], |row| {
            Ok(Summary {
                trips: row.get(0)?,
                revenue_cents: row.get(1)?,
                busiest_borough: row.get(2)?,
                top_route: row.get(3)?,
            })
        })
        .expect("one summary row")
    }

    /// Every task succeeded with exactly one committed snapshot.
    async fn assert_each_task_committed_once(&self) {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT t.name, count(s.id) FROM tasks t LEFT JOIN snapshots s ON s.task_id = t.id GROUP BY t.name",
        )
        .fetch_all(self.catalog.pool())
        .await
        .expect("snapshot counts");
        assert_eq!(rows.len(), 7, "{rows:?}");
        for (task, snapshots) in rows {
            assert_eq!(snapshots, 1, "task {task} committed {snapshots} snapshots");
        }
        for (name, task) in self.tasks().await {
            assert_eq!(task.phase, TaskPhase::Succeeded, "{name}");
            assert!(task.output_snapshot.is_some(), "{name}");
        }
        let job = self.catalog.job_by_name("default", "quickstart").await.expect("job");
        assert_eq!(job.phase, JobPhase::Succeeded);
    }
}

/// The `duckmesh worker` process running `task_id` against `database_url`, if any (found
/// through /proc; tests run in parallel, each on its own database).
fn worker_of(task_id: i64, database_url: &str) -> Option<i32> {
    let wanted = format!("DUCKMESH_TASK_ID={task_id}");
    let database = format!("DUCKMESH_DATABASE_URL={database_url}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let is_worker = cmdline.split(|b| *b == 0).any(|arg| arg == b"worker");
        let has = |entry: &str| environ.split(|b| *b == 0).any(|var| var == entry.as_bytes());
        if is_worker && has(&wanted) && has(&database) {
            return Some(pid);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_runs_end_to_end_with_the_right_numbers_and_a_rerun_changes_nothing() {
    let dev = Dev::new().await;
    let expected = expected_summary();
    let (status, stdout, stderr) = dev.run_to_end(QUICKSTART).await;
    assert!(status.success(), "exit {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("Job quickstart: Succeeded"), "{stdout}");
    assert!(stdout.contains("trip-summary"), "the summary lists datasets: {stdout}");
    for task in ["zones", "generate-trips", "clean-trips", "daily-revenue", "borough-stats", "top-routes", "summary"] {
        assert!(stderr.contains(task), "progress mentions {task}: {stderr}");
    }
    assert_eq!(dev.summary().await, expected);
    dev.assert_each_task_committed_once().await;
    let raw = dev.catalog.dataset_by_name("default", "trips-raw").await.expect("trips-raw");
    assert_eq!(raw.row_count, 1_200_000);
    assert!(raw.file_count >= 31, "partitioned by day: {} files", raw.file_count);

    // A rerun resumes from the catalog: nothing runs again.
    let (status, stdout, _) = dev.run_to_end(QUICKSTART).await;
    assert!(status.success(), "{stdout}");
    dev.assert_each_task_committed_once().await;
    for (name, task) in dev.tasks().await {
        assert_eq!(task.attempts, 1, "{name} ran again");
    }

    // With --keep-serving the API stays up: `duckmesh query` reads the committed result.
    let mut command = dev.command(QUICKSTART);
    command.arg("--keep-serving");
    let child = command.spawn().expect("start");
    let instance = dev.state.path().join("dev.json");
    until("the API", Duration::from_secs(60), async || instance.exists().then_some(())).await;
    let output = Command::new(env!("CARGO_BIN_EXE_duckmesh"))
        .args(["query", "SELECT trips, busiest_borough FROM trip_summary", "--format", "csv", "--state-dir"])
        .arg(dev.state.path())
        .output()
        .expect("duckmesh query");
    assert!(output.status.success(), "{output:?}");
    let csv = String::from_utf8_lossy(&output.stdout).into_owned();
    let expected = expected_summary();
    assert!(csv.contains(&format!("{},{}", expected.trips, expected.busiest_borough)), "{csv}");
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().expect("kill").success());
    let (status, _, stderr) = wait(child).await;
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_is_retried_and_commits_exactly_once() {
    let dev = Dev::new().await;
    let child = dev.start(QUICKSTART);
    let task = until("generate-trips in the catalog", Duration::from_secs(60), async || {
        dev.tasks().await.remove("generate-trips")
    })
    .await;
    let pid =
        until("the generate-trips worker", Duration::from_secs(60), async || worker_of(task.id.0, dev.db.url())).await;
    sigkill(pid);
    let (status, stdout, stderr) = wait(child).await;
    assert!(status.success(), "exit {status:?}\n{stdout}\n{stderr}");

    let attempts = dev.catalog.attempts_of_task(task.id).await.expect("attempts");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].state, AttemptState::Failed);
    assert_eq!(attempts[0].error_code.as_deref(), Some("worker_killed"), "{attempts:?}");
    assert_eq!(attempts[1].state, AttemptState::Succeeded);
    dev.assert_each_task_committed_once().await;
    assert_eq!(dev.summary().await, expected_summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_dev_process_resumes_on_rerun_with_the_same_numbers() {
    let dev = Dev::new().await;
    let child = dev.start(QUICKSTART);
    let pid = i32::try_from(child.id()).expect("pid");
    // Kill it mid-job: after the first commit, while another task runs.
    until("a commit and a running task", Duration::from_secs(120), async || {
        let tasks = dev.tasks().await;
        let committed = tasks.values().any(|t| t.phase == TaskPhase::Succeeded);
        let running = tasks.values().any(|t| t.phase.is_active());
        (committed && running).then_some(())
    })
    .await;
    sigkill(pid);
    let (status, _, _) = wait(child).await;
    assert!(!status.success());
    let before = dev.tasks().await;
    assert!(before.values().any(|t| !t.phase.is_terminal()), "the job was mid-way: {before:?}");

    let (status, stdout, stderr) = dev.run_to_end(QUICKSTART).await;
    assert!(status.success(), "exit {status:?}\n{stdout}\n{stderr}");
    dev.assert_each_task_committed_once().await;
    assert_eq!(dev.summary().await, expected_summary());
    // Tasks that had committed before the crash were not run again.
    let after = dev.tasks().await;
    for (name, task) in before.iter().filter(|(_, t)| t.phase == TaskPhase::Succeeded) {
        assert_eq!(after[name].attempts, task.attempts, "{name} ran again");
    }
}

const MAINTENANCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/maintenance.yaml");

/// The maintenance kinds as Job nodes with their settings from YAML: three loads append small
/// files, then `compact` (minFiles 2) rewrites them into one snapshot of fewer files with the
/// same rows, `integrity` (verifyHashes) records a clean run that hashed every file, and
/// `export` (csv) writes the compacted rows and a manifest under its prefix, and `gc` (a dry
/// run) changes nothing and records no run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_nodes_of_a_job_compact_check_and_export_with_their_settings() {
    let dev = Dev::new().await;
    let (status, stdout, stderr) = dev.run_to_end(MAINTENANCE).await;
    assert!(status.success(), "exit {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("Job readings-maintenance: Succeeded"), "{stdout}");
    let job = dev.catalog.job_by_name("default", "readings-maintenance").await.expect("job");
    let tasks: HashMap<String, TaskRecord> =
        dev.catalog.tasks_of_job(job.id).await.expect("tasks").into_iter().map(|t| (t.name.clone(), t)).collect();
    for name in ["load-1", "load-2", "load-3", "compact", "check", "export", "gc"] {
        assert_eq!(tasks[name].phase, TaskPhase::Succeeded, "{name}: {:?}", tasks[name]);
    }
    // The settings reached the runners as their specs.
    assert_eq!(tasks["compact"].spec, serde_json::json!({"minFiles": 2}));
    assert_eq!(tasks["check"].spec, serde_json::json!({"verifyHashes": true}));
    assert_eq!(tasks["export"].spec, serde_json::json!({"prefix": "readings/latest", "format": "csv"}));
    assert_eq!(tasks["gc"].spec, serde_json::json!({"dryRun": true, "graceSeconds": 600}));
    let gc_runs: i64 = sqlx::query_scalar("SELECT count(*) FROM maintenance_runs WHERE kind = 'gc'")
        .fetch_one(dev.catalog.pool())
        .await
        .expect("runs");
    assert_eq!(gc_runs, 0, "a dry run is not recorded");

    // Compacted: three one-file appends became one file in a `compact` snapshot, same rows.
    let dataset = dev.catalog.dataset_by_name("default", "readings").await.expect("dataset");
    assert_eq!((dataset.file_count, dataset.row_count), (1, 3000));
    let snapshots = dev.catalog.snapshots(dataset.id, None, 10).await.expect("snapshots");
    let kinds: Vec<(&str, i64)> = snapshots.iter().map(|s| (s.kind.as_str(), s.file_count)).collect();
    assert_eq!(kinds, [("compact", 1), ("append", 3), ("append", 2), ("append", 1)], "newest first");
    assert_eq!(snapshots[0].task, Some(tasks["compact"].id));
    assert_eq!(tasks["compact"].output_snapshot, Some(snapshots[0].id));
    let root = dev.state.path().canonicalize().expect("state dir").join("objects");
    let files = dev.catalog.snapshot_files(dataset.id, snapshots[0].id).await.expect("files");
    let duck = duckdb::Connection::open_in_memory().expect("duckdb");
    let (rows, sum): (i64, f64) = duck
        .query_row(
            &format!(
                "SELECT count(DISTINCT sensor), sum(reading) FROM read_parquet('{}')",
                root.join(&files[0].path).display()
            ),
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("compacted rows");
    assert_eq!((rows, sum), (3000, (0..3000).map(|i| f64::from(i) * 0.5).sum()));

    // Checked: one integrity run, hashes verified, every retained file (3 replaced + 1) clean.
    let runs = dev.catalog.latest_integrity_runs("default", "default").await.expect("runs");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs[0].verify_hashes);
    assert_eq!(runs[0].counts.files_checked, 4, "{runs:?}");
    assert_eq!(
        (runs[0].counts.missing_files, runs[0].counts.hash_mismatch_files, runs[0].counts.manifest_problems),
        (0, 0, 0),
        "{runs:?}"
    );

    // Exported: one CSV with a header and every row, and a manifest that lists it.
    let target = root.join("_exports/default/readings/latest");
    let csv = std::fs::read_to_string(target.join("part-00000.csv")).expect("the exported CSV");
    assert_eq!(csv.lines().next(), Some("sensor,reading"));
    assert_eq!(csv.lines().count(), 3001);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(target.join("manifest.json")).expect("the manifest")).expect("json");
    assert_eq!(manifest["rows"], 3000, "{manifest}");
    assert_eq!(manifest["files"][0]["path"], "_exports/default/readings/latest/part-00000.csv", "{manifest}");
}

#[test]
fn invalid_files_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {name: j}\nspec:\n  tasks:\n    - {name: a, sql: 'SELECT 1', dependsOn: [b]}\n    - {name: b, sql: 'SELECT 1', dependsOn: [a]}\n",
    )
    .expect("write");
    let state = dir.path().join("state");
    let output = Command::new(env!("CARGO_BIN_EXE_duckmesh"))
        .arg("dev")
        .arg(&file)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid_resource") && stderr.contains("cycle"), "{stderr}");
    assert!(!state.join("postgres").exists(), "nothing was started");

    let missing = Command::new(env!("CARGO_BIN_EXE_duckmesh"))
        .args(["dev", "/nonexistent/pipeline.yaml", "--state-dir"])
        .arg(&state)
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("file_unreadable"));
}

/// Metric names of an exposition: every sample's name without its labels.
fn sample_names(exposition: &str) -> std::collections::BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

async fn http_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = url.trim_start_matches("http://").split('/').next().expect("host").to_owned();
    let path = format!("/{}", url.trim_start_matches("http://").split_once('/').map(|(_, p)| p).unwrap_or(""));
    let mut stream = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_binary_exports_every_metric_and_stops_on_ctrl_c() {
    let dev = Dev::new().await;
    let file = dev.state.path().join("datasets.yaml");
    std::fs::write(&file, "apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {name: events}\nspec: {}\n")
        .expect("write");
    let child = dev.start(file.to_str().expect("utf-8"));
    let instance = dev.state.path().join("dev.json");
    let api_url = until("dev.json", Duration::from_secs(60), async || {
        let text = std::fs::read_to_string(&instance).ok()?;
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        value["api_url"].as_str().map(str::to_owned)
    })
    .await;
    // The scheduler's first pass sets the backlog gauges; scrape until they are there.
    let mut scraped = std::collections::BTreeSet::new();
    for _ in 0..100 {
        scraped = sample_names(&http_get(&format!("{api_url}/metrics")).await);
        if scraped.contains("duckmesh_task_backlog_depth") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Everything a registry with every component exports (which the rules, dashboard and
    // SPEC §6 checks of the `metrics` test are run against) is served by the real binary.
    let registry = sample_names(&process_metrics::every_component().encode());
    let missing: Vec<_> = registry.difference(&scraped).collect();
    assert!(missing.is_empty(), "not served by duckmesh dev: {missing:?}");
    assert!(scraped.contains("duckmesh_task_backlog_depth"), "{scraped:?}");
    for spec_name in
        ["duckmesh_query_latency_ms_bucket", "duckmesh_ingest_requests_total", "duckmesh_lease_lag_seconds"]
    {
        assert!(scraped.contains(spec_name), "{spec_name}");
    }

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().expect("kill").success());
    let (status, _, stderr) = wait(child).await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!instance.exists(), "dev.json is removed on a clean stop");
}
