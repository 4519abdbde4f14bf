//! `duckmesh worker` as the operator runs it: the real binary, a real PostgreSQL catalog and a
//! real S3-compatible server (moto) behind a fault-injecting proxy. The worker is SIGKILLed in
//! the middle of its upload; the catalog must never reference a partial file, and the retry
//! must commit exactly one output.

use duckmesh_catalog::{Catalog, CatalogConfig, CommitMode, DatasetSpec, Lease, TaskOutput, TaskSpec};
use duckmesh_core::{BackoffPolicy, TaskPhase};
use duckmesh_storage::testing::{FaultConfig, FaultProxy, MotoServer};
use duckmesh_storage::{ObjectStore, S3Config, S3Store};
use duckmesh_testkit::TestDatabase;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Setup {
    db: TestDatabase,
    catalog: Catalog,
    dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let db = TestDatabase::new().await.expect("test database");
    let config = CatalogConfig {
        task_backoff: BackoffPolicy { base: Duration::from_millis(10), max: Duration::from_millis(20) },
        ..CatalogConfig::default()
    };
    let catalog = db.catalog_with(config, 4).await.expect("catalog");
    Setup { db, catalog, dir: tempfile::tempdir().expect("tempdir") }
}

impl Setup {
    async fn dataset(&self, name: &str) -> duckmesh_catalog::DatasetRecord {
        self.catalog
            .upsert_dataset(&DatasetSpec {
                namespace: "default".into(),
                name: name.into(),
                uid: format!("uid-{name}"),
                generation: 1,
                tenant: "default".into(),
                schema: None,
                spec: json!({}),
            })
            .await
            .expect("dataset")
    }

    async fn task(
        &self,
        name: &str,
        output: duckmesh_core::DatasetId,
        spec: serde_json::Value,
    ) -> duckmesh_core::TaskId {
        self.task_of_kind("sql", name, output, spec).await
    }

    async fn task_of_kind(
        &self,
        kind: &str,
        name: &str,
        output: duckmesh_core::DatasetId,
        spec: serde_json::Value,
    ) -> duckmesh_core::TaskId {
        let task = TaskSpec {
            name: name.into(),
            kind: kind.into(),
            depends_on: vec![],
            max_attempts: Some(3),
            timeout_seconds: None,
            output: Some(TaskOutput { dataset: output, mode: CommitMode::Append }),
            spec,
        };
        self.catalog.upsert_standalone_task("default", "default", &task).await.expect("task")
    }

    /// The `duckmesh worker` command for `lease`, talking to S3 at `s3`.
    fn worker(&self, lease: &Lease, s3: &S3Config) -> Command {
        let mut command = self.duckmesh(&["worker"], s3);
        command
            .env("DUCKMESH_TASK_ID", lease.task.to_string())
            .env("DUCKMESH_ATTEMPT_ID", lease.attempt.to_string())
            .env("DUCKMESH_FENCE", lease.fence.to_string());
        command
    }

    /// `duckmesh <args>` with the catalog and S3 at `s3` in its environment, and nothing else.
    fn duckmesh(&self, args: &[&str], s3: &S3Config) -> Command {
        let credentials = s3.credentials.clone().expect("static test credentials");
        let mut command = Command::new(env!("CARGO_BIN_EXE_duckmesh"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DUCKMESH_DATABASE_URL", self.db.url())
            .env("DUCKMESH_S3_BUCKET", &s3.bucket)
            .env("DUCKMESH_S3_PREFIX", s3.prefix.as_deref().unwrap_or_default())
            .env("DUCKMESH_S3_ENDPOINT", s3.endpoint.as_deref().unwrap_or_default())
            .env("DUCKMESH_S3_REGION", &s3.region)
            .env("AWS_ACCESS_KEY_ID", credentials.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", credentials.secret_access_key)
            .env("DUCKMESH_HEARTBEAT_SECONDS", "1")
            .env("DUCKMESH_WORKER_TRANSFER_CONCURRENCY", "1")
            .env("DUCKMESH_CACHE_DIR", self.dir.path().join("cache"))
            .env("DUCKMESH_WORK_DIR", self.dir.path().join("work"))
            .env("DUCKMESH_LOG", "info")
            .env("TRACEPARENT", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        command
    }
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

async fn wait_for(child: Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output()).await.expect("join").expect("wait")
}

#[tokio::test]
async fn a_worker_killed_mid_upload_commits_nothing_and_the_retry_commits_exactly_once() {
    let server = MotoServer::shared().await.expect("S3 test server (moto_server on PATH)");
    // Every upload request (PUT) waits 1.5 s in the proxy: the upload is slow enough to be
    // caught halfway.
    let slow = FaultConfig {
        latency_rate: 1.0,
        latency: Duration::from_millis(1500),
        only_method: Some(http_put()),
        ..FaultConfig::default()
    };
    let proxy = FaultProxy::start(server.endpoint(), slow).await.expect("proxy");
    let s3 = server.config_via(&proxy.endpoint());
    let store =
        S3Store::new(server.config().with_prefix(s3.prefix.clone().expect("scoped prefix"))).await.expect("store");

    let setup = setup().await;
    let out = setup.dataset("readings").await;
    let task = setup
        .task(
            "readings",
            out.id,
            json!({
                "sql": "SELECT i AS id, hash(i) AS h, random() AS r FROM range(600000) t(i)",
                "targetFileSizeBytes": 1048576
            }),
        )
        .await;
    let first = setup
        .catalog
        .lease_task(task, "test-scheduler", Duration::from_secs(3))
        .await
        .expect("lease")
        .expect("runnable");

    let child = setup.worker(&first, &s3).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let pid = child.id();
    // Wait until at least one part file is stored and another upload is in flight.
    let attempt_prefix = format!("readings/attempts/{}/1/", task);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored = store.list(&attempt_prefix).await.expect("list");
        if !stored.is_empty() && proxy.stats().delayed > stored.len() as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "the upload never started; proxy {:?}", proxy.stats());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut child = child;
    child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
    let killed = wait_for(child).await;
    assert!(!killed.status.success(), "pid {pid}: {}", text(&killed));

    // Killed halfway: some part files, no manifest, and no snapshot.
    let staged = store.list(&attempt_prefix).await.expect("list");
    assert!(!staged.is_empty());
    assert!(staged.iter().all(|object| !object.key.ends_with("manifest.json")), "{staged:?}");
    assert_eq!(setup.catalog.dataset(out.id).await.expect("dataset").current_snapshot, None);

    // The lease runs out (no more heartbeats), the reaper retires the attempt, the task retries.
    proxy.set_config(FaultConfig::default());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reaped = setup.catalog.reap_expired_leases(10).await.expect("reap");
        if reaped.iter().any(|r| r.attempt == first.attempt) {
            break;
        }
        assert!(Instant::now() < deadline, "the dead worker's lease never expired");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(setup.catalog.task(task).await.expect("task").phase, TaskPhase::Retrying);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = setup
        .catalog
        .lease_task(task, "test-scheduler", Duration::from_secs(60))
        .await
        .expect("lease")
        .expect("runnable");
    assert_eq!(second.number, 2);

    // The killed attempt's identity is fenced out; the new one commits.
    let stale =
        wait_for(setup.worker(&first, &s3).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn")).await;
    assert_eq!(stale.status.code(), Some(12), "{}", text(&stale));
    let retry =
        wait_for(setup.worker(&second, &s3).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn"))
            .await;
    assert_eq!(retry.status.code(), Some(0), "{}", text(&retry));
    assert!(text(&retry).contains("committed snapshot 1"), "{}", text(&retry));

    let snapshots = setup.catalog.snapshots(out.id, None, 10).await.expect("snapshots");
    assert_eq!(snapshots.len(), 1, "exactly one committed output");
    assert_eq!(snapshots[0].attempt, Some(second.attempt));
    assert_eq!(snapshots[0].row_count, 600_000);
    let record = setup.catalog.task(task).await.expect("task");
    assert_eq!((record.phase, record.attempts), (TaskPhase::Succeeded, 2));

    // Every committed file is whole: present, with the recorded size and hash, and from the
    // second attempt's prefix only.
    let files = setup.catalog.snapshot_files(out.id, snapshots[0].id).await.expect("files");
    assert!(files.len() >= 2, "{files:?}");
    for file in &files {
        assert!(file.path.starts_with(&format!("readings/attempts/{task}/2/")), "{}", file.path);
        let data = store.get(&file.path).await.expect("committed file exists");
        assert_eq!(data.len() as i64, file.bytes);
        assert_eq!(hex(&Sha256::digest(&data)), file.sha256);
    }
    assert_eq!(files.iter().map(|f| f.rows).sum::<i64>(), 600_000);
}

/// Every row of `files` (downloaded from `store`), sorted: the dataset's row multiset.
async fn rows_of(store: &S3Store, files: &[duckmesh_catalog::FileRecord]) -> Vec<(i64, String, f64)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut paths = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let path = dir.path().join(format!("{index}.parquet"));
        std::fs::write(&path, store.get(&file.path).await.expect("a committed file")).expect("write");
        paths.push(format!("'{}'", path.display()));
    }
    let duck = duckdb::Connection::open_in_memory().expect("duckdb");
    let sql = format!("SELECT id, h::VARCHAR, r FROM read_parquet([{}]) ORDER BY ALL", paths.join(", "));
    let mut statement = duck.prepare(&sql).expect("prepare");
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?))).expect("query");
    rows.collect::<Result<_, _>>().expect("rows")
}

/// A `compact` attempt SIGKILLed while it uploads its new files leaves no visible change; once
/// its lease runs out and is reaped, a second attempt finishes the compaction, and the rows
/// read at the new snapshot are exactly those read before.
#[tokio::test]
async fn a_compaction_killed_mid_upload_changes_nothing_and_the_retry_finishes_it() {
    let server = MotoServer::shared().await.expect("S3 test server (moto_server on PATH)");
    let proxy = FaultProxy::start(server.endpoint(), FaultConfig::default()).await.expect("proxy");
    let s3 = server.config_via(&proxy.endpoint());
    let store =
        S3Store::new(server.config().with_prefix(s3.prefix.clone().expect("scoped prefix"))).await.expect("store");
    let setup = setup().await;
    let events = setup.dataset("events").await;
    let load = setup
        .task(
            "load",
            events.id,
            json!({
                "sql": "SELECT i AS id, hash(i) AS h, random() AS r FROM range(400000) t(i)",
                "targetFileSizeBytes": 1048576
            }),
        )
        .await;
    // Loads and the retry talk to moto directly; only the killed attempt goes through the proxy.
    let direct = server.config().with_prefix(s3.prefix.clone().expect("scoped prefix"));
    let lease =
        setup.catalog.lease_task(load, "test", Duration::from_secs(60)).await.expect("lease").expect("runnable");
    let loaded = setup.worker(&lease, &direct).output().expect("run");
    assert_eq!(loaded.status.code(), Some(0), "{}", text(&loaded));
    let before = setup.catalog.dataset(events.id).await.expect("dataset");
    let live_before = setup.catalog.live_files(events.id).await.expect("files");
    assert!(live_before.len() >= 2, "several small files to compact: {live_before:?}");
    let rows_before = rows_of(&store, &live_before).await;
    assert_eq!(rows_before.len(), 400_000);

    // Every upload now waits 1.5 s in the proxy, so the compaction is caught uploading.
    proxy.set_config(FaultConfig {
        latency_rate: 1.0,
        latency: Duration::from_millis(1500),
        only_method: Some(http_put()),
        ..FaultConfig::default()
    });
    let delayed_before = proxy.stats().delayed;
    let compact = setup
        .task_of_kind("compact", "compact-events", events.id, json!({"minFiles": 2, "targetFileSizeBytes": 67108864}))
        .await;
    let first =
        setup.catalog.lease_task(compact, "test", Duration::from_secs(3)).await.expect("lease").expect("runnable");
    let mut child = setup.worker(&first, &s3).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.stats().delayed == delayed_before {
        assert!(Instant::now() < deadline, "the compaction never started uploading; proxy {:?}", proxy.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
    let killed = wait_for(child).await;
    assert!(!killed.status.success(), "{}", text(&killed));
    assert!(!text(&killed).contains("compacted"), "killed before it finished: {}", text(&killed));

    // Nothing visible changed: the same snapshot, files and rows; no manifest was written.
    let after_kill = setup.catalog.dataset(events.id).await.expect("dataset");
    assert_eq!(
        (after_kill.current_snapshot, after_kill.visibility_token, after_kill.file_count, after_kill.row_count),
        (before.current_snapshot, before.visibility_token, before.file_count, before.row_count)
    );
    assert_eq!(setup.catalog.live_files(events.id).await.expect("files"), live_before);
    let staged = store.list(&format!("events/attempts/{compact}/1/")).await.expect("list");
    assert!(staged.iter().all(|object| !object.key.ends_with("manifest.json")), "{staged:?}");

    // The lease runs out, the reaper retires the attempt, and the second attempt compacts.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reaped = setup.catalog.reap_expired_leases(10).await.expect("reap");
        if reaped.iter().any(|r| r.attempt == first.attempt) {
            break;
        }
        assert!(Instant::now() < deadline, "the killed compaction's lease never expired");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(setup.catalog.task(compact).await.expect("task").phase, TaskPhase::Retrying);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second =
        setup.catalog.lease_task(compact, "test", Duration::from_secs(60)).await.expect("lease").expect("runnable");
    assert_eq!(second.number, 2);
    let retry =
        wait_for(setup.worker(&second, &direct).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn"))
            .await;
    assert_eq!(retry.status.code(), Some(0), "{}", text(&retry));
    assert!(text(&retry).contains(&format!("compacted {} files", live_before.len())), "{}", text(&retry));
    let record = setup.catalog.task(compact).await.expect("task");
    assert_eq!((record.phase, record.attempts), (TaskPhase::Succeeded, 2));

    let after = setup.catalog.dataset(events.id).await.expect("dataset");
    let snapshot = setup.catalog.latest_snapshot(events.id).await.expect("read").expect("a snapshot");
    assert_eq!((snapshot.kind.as_str(), snapshot.attempt), ("compact", Some(second.attempt)));
    assert_eq!(after.current_snapshot, Some(snapshot.id));
    assert!(after.file_count < before.file_count, "{} files, {} before", after.file_count, before.file_count);
    assert_eq!(after.row_count, before.row_count);
    let live_after = setup.catalog.snapshot_files(events.id, snapshot.id).await.expect("files");
    for file in &live_after {
        assert!(file.path.starts_with(&format!("events/attempts/{compact}/2/")), "{}", file.path);
    }
    assert_eq!(rows_of(&store, &live_after).await, rows_before, "the same row multiset");
}

#[tokio::test]
async fn exit_codes_tell_a_permanent_failure_from_a_missing_identity() {
    let server = MotoServer::shared().await.expect("S3 test server (moto_server on PATH)");
    let s3 = server.scoped_config();
    let setup = setup().await;
    let out = setup.dataset("out").await;
    let task = setup.task("broken", out.id, json!({"sql": "SELECT nope FROM nowhere"})).await;
    let lease = setup
        .catalog
        .lease_task(task, "test-scheduler", Duration::from_secs(60))
        .await
        .expect("lease")
        .expect("runnable");
    let output = setup.worker(&lease, &s3).output().expect("run");
    assert_eq!(output.status.code(), Some(10), "{}", text(&output));
    assert!(text(&output).contains("sql_error"), "{}", text(&output));
    let record = setup.catalog.task(task).await.expect("task");
    assert_eq!(record.phase, TaskPhase::Failed);
    assert!(record.last_error_message.unwrap_or_default().contains("nowhere"));

    let missing = Command::new(env!("CARGO_BIN_EXE_duckmesh"))
        .args(["worker", "--task", "1"])
        .env_remove("DUCKMESH_ATTEMPT_ID")
        .env_remove("DUCKMESH_FENCE")
        .env_remove("DUCKMESH_DATABASE_URL")
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(text(&missing).contains("--attempt"), "{}", text(&missing));

    let unknown = setup
        .worker(&Lease { attempt: duckmesh_core::AttemptId(999_999), ..lease.clone() }, &s3)
        .output()
        .expect("run");
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
}

/// The maintenance kinds run through the same binary, lease and exit codes as `sql` tasks.
#[tokio::test]
async fn maintenance_tasks_run_through_the_worker_binary() {
    let server = MotoServer::shared().await.expect("S3 test server (moto_server on PATH)");
    let s3 = server.scoped_config();
    let setup = setup().await;
    let out = setup.dataset("out").await;
    let catalog = setup.catalog.clone();
    let lease = |task| {
        let catalog = catalog.clone();
        async move {
            catalog.lease_task(task, "test-scheduler", Duration::from_secs(60)).await.expect("lease").expect("runnable")
        }
    };
    for index in 0..2 {
        let task = setup.task(&format!("load-{index}"), out.id, json!({"sql": format!("SELECT {index} AS id")})).await;
        let output = setup.worker(&lease(task).await, &s3).output().expect("run");
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    }
    let runs = [
        ("compact", json!({"minFiles": 2}), "compacted 2 files"),
        ("integrity", json!({"verifyHashes": true}), "0 missing"),
        ("gc", json!({}), "gc: did expire 0 snapshots"),
        ("export", json!({"prefix": "out/worker"}), "to _exports/default/out/worker/"),
    ];
    for (kind, spec, expected) in runs {
        let task = setup.task_of_kind(kind, &format!("{kind}-out"), out.id, spec).await;
        let output = setup.worker(&lease(task).await, &s3).output().expect("run");
        assert_eq!(output.status.code(), Some(0), "{kind}: {}", text(&output));
        assert!(text(&output).contains(expected), "{kind}: {}", text(&output));
        assert_eq!(setup.catalog.task(task).await.expect("task").phase, TaskPhase::Succeeded, "{kind}");
    }
    let dataset = setup.catalog.dataset(out.id).await.expect("dataset");
    assert_eq!((dataset.file_count, dataset.row_count), (1, 2));
    // A gc task's own settings: a dry run says so.
    let task = setup.task_of_kind("gc", "gc-dry", out.id, json!({"dryRun": true, "graceSeconds": 0})).await;
    let output = setup.worker(&lease(task).await, &s3).output().expect("run");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("gc: would expire 0 snapshots"), "{}", text(&output));

    let task = setup.task_of_kind("compact", "compact-bad", out.id, json!({"minFiles": 0})).await;
    let output = setup.worker(&lease(task).await, &s3).output().expect("run");
    assert_eq!(output.status.code(), Some(10), "{}", text(&output));
    assert!(text(&output).contains("invalid_task_spec"), "{}", text(&output));
}

/// `duckmesh compact`, `integrity` and `gc` by hand, against the same catalog and bucket.
#[tokio::test]
async fn maintenance_commands_compact_check_and_collect() {
    let server = MotoServer::shared().await.expect("S3 test server (moto_server on PATH)");
    let s3 = server.scoped_config();
    let setup = setup().await;
    let out = setup.dataset("out").await;
    for index in 0..3 {
        let task = setup.task(&format!("load-{index}"), out.id, json!({"sql": format!("SELECT {index} AS id")})).await;
        let lease =
            setup.catalog.lease_task(task, "test", Duration::from_secs(60)).await.expect("lease").expect("runnable");
        let output = setup.worker(&lease, &s3).output().expect("run");
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    }
    let run = |args: &[&str]| setup.duckmesh(args, &s3).output().expect("run");

    let output = run(&["compact", "out", "--min-files", "2"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("out: compacted 3 files"), "{}", text(&output));
    let output = run(&["compact", "out"]);
    assert!(text(&output).contains("nothing to compact (1 small files)"), "{}", text(&output));

    let output = run(&["integrity", "--all", "--verify-hashes"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("default/out") && text(&output).contains("clean"), "{}", text(&output));

    let output = run(&["export", "out", "--to", "out/today", "--format", "csv"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("out: exported snapshot") && text(&output).contains("3 rows"), "{}", text(&output));
    let output = run(&["export", "out", "--to", "../escape"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("invalid_task_spec"), "{}", text(&output));

    let output = run(&["gc", "out", "--dry-run"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("out: would expire 0 snapshots"), "{}", text(&output));
    // A collection runs as a gc task whose spec carries the command's grace.
    let output = run(&["gc", "out", "--grace", "120"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("out: did expire 0 snapshots"), "{}", text(&output));
    let specs: Vec<serde_json::Value> = sqlx::query_scalar("SELECT spec FROM tasks WHERE kind = 'gc'")
        .fetch_all(setup.catalog.pool())
        .await
        .expect("gc tasks");
    assert_eq!(specs, [json!({"graceSeconds": 120})]);
    let output = run(&["gc", "out", "--grace", "31536001"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));

    let live = setup.catalog.live_files(out.id).await.expect("files");
    let store = S3Store::new(s3.clone()).await.expect("store");
    store.delete(&live[0].path).await.expect("delete");
    let output = run(&["integrity", "out"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("DAMAGED") && text(&output).contains("missing_file"), "{}", text(&output));

    let output = run(&["integrity", "nope"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("\"nope\""), "{}", text(&output));
}

fn http_put() -> http::Method {
    http::Method::PUT
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
