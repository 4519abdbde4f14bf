//! Delivery drills: a poison ingest record (dead-lettered, ingest goes on, replayed with the
//! CLI), the outbox failing to write commit records until its rows are `Failed` (and their
//! re-queue once the bucket accepts writes again), a compaction SIGKILLed mid-upload, and a
//! `sql` task's worker SIGKILLed mid-upload and between uploading its data files and committing
//! them.

use crate::harness::{self, DrillResult, Load, Stack, StackOptions, metric, metric_with, workers_of};
use crate::{BATCH, until};
use duckmesh_history::{AckedRecords, Expectations, PinnedRead};
use duckmesh_query::QueryRequest;
use duckmesh_query::client::{ClientError, QueryClient};
use duckmesh_storage::testing::{FaultConfig, FaultKind};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// An ingest dataset with a `DATE` column: a string that is no date passes the API (a string
/// is a string) and fails the coordinator's exact conversion.
const DATED_YAML: &str = r#"apiVersion: duckmesh.io/v1alpha1
kind: Dataset
metadata:
  name: dated
spec:
  schema:
    - {name: id, type: VARCHAR}
    - {name: day, type: DATE}
  ingest:
    dedupeKey: id
"#;

/// The `dead-letters list --json` entries of dataset `dated` not yet replayed.
fn dead_letters(stack: &Stack) -> Vec<Value> {
    let listed = stack.cli(&["dead-letters", "list", "--dataset", "dated", "--json"]);
    serde_json::from_str(&listed).unwrap_or_else(|error| panic!("dead letters JSON ({error}): {listed}"))
}

/// Events of `dated` neither committed nor dead-lettered.
async fn dated_pending(stack: &Stack) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM ingest_events e JOIN datasets d ON d.id = e.dataset_id \
          WHERE d.name = 'dated' AND e.snapshot_id IS NULL AND e.dead_letter_id IS NULL",
    )
    .fetch_one(stack.catalog.pool())
    .await
    .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_ingest_payload() {
    let stack = Stack::new(StackOptions::default()).await;
    stack.apply_yaml("dated.yaml", DATED_YAML).await;
    let (_api, _coordinator) = stack.start_ingest().await;
    let client = stack.client();
    // Steady load on `events` (lighter than the ingest drills': this one is about the poison
    // record, and queries under 4 producers can meet the API's busy catalog pool).
    let load = Load::start(stack.client(), 2, BATCH, Duration::from_millis(50));
    load.acks_after(0, 50, Duration::from_secs(60)).await;

    // Nine good records and one whose date does not exist, in one post (so in one batch).
    let good: Vec<String> = (0..9).map(|n| format!("d-{n}")).collect();
    let mut body: Vec<String> = good.iter().map(|id| json!({"id": id, "day": "2026-11-23"}).to_string()).collect();
    body.insert(4, json!({"id": "bad", "day": "2026-13-45"}).to_string());
    let ack = client.ingest("dated", None, body.join("\n")).await.expect("the API acknowledges the poison record");
    let posted = Instant::now();
    assert_eq!(ack.accepted, 10, "the API cannot tell the date is impossible");
    let mut request = QueryRequest::new("SELECT count(*) FROM dated WHERE id <> 'bad'");
    request.min_visibility_token = Some(ack.visibility_token);
    request.timeout_ms = Some(30_000);
    let answer = query(&client, &request).await;
    let recovered = posted.elapsed();
    assert_eq!(answer.rows[0][0].as_i64(), Some(9), "the rest of the batch committed");
    let mut counted = 0.0;
    until("duckmesh_ingest_dead_letters_total", Duration::from_secs(30), async || {
        counted = metric(stack.coordinator_port, "duckmesh_ingest_dead_letters_total").await.unwrap_or(0.0);
        counted >= 1.0
    })
    .await;
    let by_reason =
        metric_with(stack.coordinator_port, "duckmesh_ingest_dead_letters_total", "reason=\"conversion_failed\"").await;
    assert_eq!(by_reason, Some(1.0), "counted under reason=conversion_failed");

    let letters = dead_letters(&stack);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        (letters[0]["key"].as_str(), letters[0]["error_code"].as_str()),
        (Some("bad"), Some("conversion_failed")),
        "{letters:?}"
    );
    assert!(letters[0]["error_message"].as_str().unwrap_or_default().contains("day"), "names the field: {letters:?}");

    // Replayed as stored, it still does not convert: parked again, counted again.
    let first = letters[0]["id"].as_i64().expect("id").to_string();
    let replayed = stack.cli(&["dead-letters", "replay", &first]);
    assert!(replayed.contains("1 dead letters re-queued"), "{replayed}");
    until("the replayed record parked again", Duration::from_secs(30), async || {
        metric(stack.coordinator_port, "duckmesh_ingest_dead_letters_total").await.unwrap_or(0.0) >= 2.0
            && dated_pending(&stack).await == 0
    })
    .await;
    let again = dead_letters(&stack);
    assert_eq!(
        again.iter().map(|letter| letter["key"].as_str()).collect::<Vec<_>>(),
        [Some("bad")],
        "one letter left, for the same record: {again:?}"
    );
    // Replaying a letter already replayed is refused (exit 1), and says so.
    let (code, _, stderr) = stack.cli_status(&["dead-letters", "replay", &first]);
    assert_eq!(code, Some(1), "a replayed letter cannot be replayed twice: {stderr}");
    assert!(stderr.contains("already replayed"), "{stderr}");

    // While parked it is never visible.
    let parked = duckmesh_history::check(
        &stack.catalog,
        stack.store.as_ref(),
        &expectations(&good, vec!["bad".into()], Vec::new()),
    )
    .await
    .expect("history check");
    assert!(parked.is_clean(), "{parked}");

    // Replayed with the corrected payload, it commits under its key, once.
    let second = again[0]["id"].as_i64().expect("id").to_string();
    let fixed_at = Instant::now();
    stack.cli(&["dead-letters", "replay", &second, "--payload", r#"{"id": "bad", "day": "2026-12-31"}"#]);
    let mut day = None;
    until("the corrected record visible", Duration::from_secs(30), async || {
        let answer = query(&client, &QueryRequest::new("SELECT day::VARCHAR FROM dated WHERE id = 'bad'")).await;
        day = answer.rows.first().cloned();
        day.is_some()
    })
    .await;
    let replay_visible = fixed_at.elapsed();
    assert_eq!(day, Some(vec![json!("2026-12-31")]));
    assert!(dead_letters(&stack).is_empty(), "nothing left to replay");

    let acked = load.stop(Duration::from_secs(120)).await;
    stack.drained(Duration::from_secs(120)).await;
    let mut all = good.clone();
    all.push("bad".into());
    let mut expected = expectations(&all, Vec::new(), acked.keys);
    expected.quiescent = true;
    let report = duckmesh_history::check(&stack.catalog, stack.store.as_ref(), &expected).await.expect("history");
    let total = metric(stack.coordinator_port, "duckmesh_ingest_dead_letters_total").await.unwrap_or(0.0);
    DrillResult {
        scenario: "poison_ingest_payload",
        injected: "a record with DATE \"2026-13-45\" among 9 good ones, under 2 open-loop producers".into(),
        recovered,
        records: report.checked.acked_records,
        tasks: report.checked.tasks,
        metric: format!(
            "duckmesh_ingest_dead_letters_total={total} (parked, replayed as stored and parked again); replayed fixed with `duckmesh dead-letters replay --payload`, visible in {:.1} s",
            replay_visible.as_secs_f64()
        ),
        report,
    }
    .finish();
}

/// Runs `request`, retrying what a client retries (5xx, 429, connection errors) for up to 60 s.
async fn query(client: &QueryClient, request: &QueryRequest) -> duckmesh_query::QueryResponse {
    let started = Instant::now();
    loop {
        match client.query(request).await {
            Ok(answer) => return answer,
            Err(ClientError::Api { status, .. }) if status < 429 => {
                panic!("query {} refused with {status}", request.sql)
            }
            Err(error) => {
                assert!(started.elapsed() < Duration::from_secs(60), "query {}: {error}", request.sql);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The history checker's expectations: `dated` keys (with `poison`) and the load's `events`.
fn expectations(dated: &[String], poison: Vec<String>, events: Vec<String>) -> Expectations {
    let records = |dataset: &str, dedupe_keys: Vec<String>, poison: Vec<String>| AckedRecords {
        namespace: "default".into(),
        dataset: dataset.into(),
        dedupe_keys,
        poison,
        key_column: Some("id".into()),
    };
    Expectations {
        acked: vec![records("dated", dated.to_vec(), poison), records("events", events, Vec::new())],
        pinned: Vec::new(),
        quiescent: false,
        verify_hashes: false,
    }
}

/// Rows of the outbox with `status` (`snapshot_committed` rows only).
async fn outbox_rows(stack: &Stack, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE kind = 'snapshot_committed' AND status = $1")
        .bind(status)
        .fetch_one(stack.catalog.pool())
        .await
        .unwrap_or(-1)
}

/// The re-queue statement of docs/runbooks/outbox-failed-rows.md ("Remediation", step 2).
const REQUEUE_FAILED: &str = "UPDATE outbox
   SET status = 'Pending', attempts = 0, available_at = now(), last_error = NULL
   WHERE status = 'Failed' AND kind = $1
   RETURNING id";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_delivery_failing_until_max_attempts() {
    let stack = Stack::new(StackOptions { fault_proxy: true, ..StackOptions::default() }).await;
    let proxy = stack.proxy.as_ref().expect("proxy");
    // The bucket refuses every write under _catalog/ (commit records) and takes the data.
    proxy.set_config(FaultConfig {
        failure_rate: 1.0,
        failure: FaultKind::AccessDenied,
        only_path_containing: Some("/_catalog/".into()),
        ..FaultConfig::default()
    });
    let events = stack.dir.path().join("events.yaml");
    let _dev = stack.spawn_dev_serving(
        &events,
        &[
            ("DUCKMESH_OUTBOX_MAX_ATTEMPTS", "3"),
            ("DUCKMESH_OUTBOX_RETRY_BASE_SECONDS", "0.2"),
            ("DUCKMESH_OUTBOX_RETRY_MAX_SECONDS", "0.5"),
        ],
    );
    let client = stack.dev_client();
    let started = Instant::now();
    while client.datasets().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "dev's API did not come up\n{}", stack.log_tail());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Light load: the drill is about the commit records of its snapshots, not ingest.
    let load = Load::start(client, 2, BATCH, Duration::from_millis(100));
    load.acks_after(0, 40, Duration::from_secs(60)).await;
    let acked = load.stop(Duration::from_secs(120)).await;
    stack.drained(Duration::from_secs(120)).await;

    // Every commit record's row runs out of deliveries and is Failed; none is written.
    until("every snapshot_committed row Failed", Duration::from_secs(60), async || {
        outbox_rows(&stack, "Pending").await == 0 && outbox_rows(&stack, "Failed").await > 0
    })
    .await;
    let failed = outbox_rows(&stack, "Failed").await;
    let max_attempts: i32 = sqlx::query_scalar("SELECT max(attempts) FROM outbox WHERE status = 'Failed'")
        .fetch_one(stack.catalog.pool())
        .await
        .expect("attempts");
    assert_eq!(max_attempts, 3, "each row had DUCKMESH_OUTBOX_MAX_ATTEMPTS deliveries");
    let mut gauge = 0.0;
    until("duckmesh_outbox_failed_rows", Duration::from_secs(30), async || {
        gauge = metric(stack.dev_port, "duckmesh_outbox_failed_rows").await.unwrap_or(0.0);
        gauge == failed as f64
    })
    .await;
    let records = stack.store.list("_catalog/").await.expect("list commit records");
    assert!(records.is_empty(), "no commit record got through: {records:?}");
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deployments/observability/prometheus/duckmesh_rules.yaml"),
    )
    .expect("alert rules");
    assert!(
        rules.contains("alert: DuckMeshOutboxFailedRows") && rules.contains("max(duckmesh_outbox_failed_rows) > 0"),
        "an alert fires on duckmesh_outbox_failed_rows > 0"
    );

    // The bucket takes writes again: Failed rows stay Failed (nothing retries them) until an
    // operator re-queues them with the runbook's statement; then every record is written.
    proxy.set_config(FaultConfig::default());
    let healed = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(outbox_rows(&stack, "Failed").await, failed, "Failed rows are not retried by themselves");
    let requeued: Vec<i64> = sqlx::query_scalar(REQUEUE_FAILED)
        .bind("snapshot_committed")
        .fetch_all(stack.catalog.pool())
        .await
        .expect("re-queue");
    assert_eq!(requeued.len() as i64, failed);
    until("the re-queued rows delivered", Duration::from_secs(60), async || {
        outbox_rows(&stack, "Failed").await == 0 && outbox_rows(&stack, "Pending").await == 0
    })
    .await;
    let recovered = healed.elapsed();
    let snapshots: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM snapshots s JOIN datasets d ON d.id = s.dataset_id WHERE d.name = 'events'",
    )
    .fetch_one(stack.catalog.pool())
    .await
    .expect("snapshots");
    let written = stack.store.list("_catalog/default/events/snapshots/").await.expect("list commit records");
    assert_eq!(written.len() as i64, snapshots, "a commit record for every snapshot");
    until("duckmesh_outbox_failed_rows back to 0", Duration::from_secs(30), async || {
        metric(stack.dev_port, "duckmesh_outbox_failed_rows").await == Some(0.0)
    })
    .await;
    let report = stack.check(acked.keys, Vec::new(), true).await;
    DrillResult {
        scenario: "outbox_failing_until_max_attempts",
        injected: format!(
            "403 AccessDenied on every write under _catalog/ (max 3 deliveries): {failed} commit records Failed"
        ),
        recovered,
        records: report.checked.acked_records,
        tasks: report.checked.tasks,
        metric: format!(
            "duckmesh_outbox_failed_rows={gauge} (alert DuckMeshOutboxFailedRows), 0 after the runbook's re-queue; {snapshots} commit records written"
        ),
        report,
    }
    .finish();
}

/// A Job loading `readings` in small files, then compacting them.
const COMPACT_JOB: &str = r#"apiVersion: duckmesh.io/v1alpha1
kind: Dataset
metadata:
  name: readings
spec: {}
---
apiVersion: duckmesh.io/v1alpha1
kind: Job
metadata:
  name: maintain
spec:
  tasks:
    - name: load
      output: {dataset: readings, mode: append}
      targetFileSizeBytes: 1048576
      sql: SELECT i AS id, hash(i) AS h, (i % 97)::DOUBLE AS r FROM range(200000) AS t(i)
    - name: compact
      kind: compact
      maxAttempts: 3
      dependsOn: [load]
      output: {dataset: readings}
      compact: {minFiles: 2, targetFileSizeBytes: 67108864}
"#;

/// The `readings` dataset's current snapshot, file count and rows.
async fn readings(stack: &Stack) -> (i64, i64, i64) {
    sqlx::query_as("SELECT current_snapshot_id, file_count, row_count FROM datasets WHERE name = 'readings'")
        .fetch_one(stack.catalog.pool())
        .await
        .expect("readings")
}

/// A task's phase and attempts.
async fn task_state(stack: &Stack, task: i64) -> (String, i64) {
    sqlx::query_as(
        "SELECT t.phase, (SELECT count(*) FROM attempts a WHERE a.task_id = t.id) FROM tasks t WHERE t.id = $1",
    )
    .bind(task)
    .fetch_one(stack.catalog.pool())
    .await
    .expect("task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_interrupted_mid_upload() {
    let stack = Stack::new(StackOptions { fault_proxy: true, ..StackOptions::default() }).await;
    let proxy = stack.proxy.as_ref().expect("proxy");
    let file = stack.dir.path().join("maintain.yaml");
    std::fs::write(&file, COMPACT_JOB).expect("job yaml");
    let mut dev = stack.spawn_dev_serving(&file, &[]);
    let mut compact = 0i64;
    until("the compact task", Duration::from_secs(60), async || {
        compact = sqlx::query_scalar("SELECT id FROM tasks WHERE kind = 'compact' AND name = 'compact'")
            .fetch_optional(stack.catalog.pool())
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
        compact > 0
    })
    .await;
    // Every upload of the compaction's first attempt waits 1.5 s in the proxy.
    let delayed_before = proxy.stats().delayed;
    proxy.set_config(FaultConfig {
        latency_rate: 1.0,
        latency: Duration::from_millis(1500),
        only_method: Some(http::Method::PUT),
        only_path_containing: Some(format!("/attempts/{compact}/1/")),
        ..FaultConfig::default()
    });
    until("the load committed", Duration::from_secs(120), async || {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tasks WHERE name = 'load' AND phase = 'Succeeded'")
            .fetch_one(stack.catalog.pool())
            .await
            .unwrap_or(0)
            == 1
    })
    .await;
    let before = readings(&stack).await;
    assert!(before.1 >= 2, "several small files to compact: {before:?}");
    let pinned_before =
        PinnedRead::take(&stack.catalog, stack.store.as_ref(), "default", "readings", None).await.expect("pin");

    until("the compaction uploading", Duration::from_secs(60), async || proxy.stats().delayed > delayed_before).await;
    let workers = workers_of(dev.pid());
    assert!(!workers.is_empty(), "the compaction's worker process is running");
    for worker in &workers {
        harness::kill9(*worker);
    }
    let killed = Instant::now();
    assert_eq!(readings(&stack).await, before, "a killed compaction changes nothing");
    proxy.set_config(FaultConfig::default());

    until("the compaction retried and finished", Duration::from_secs(120), async || {
        task_state(&stack, compact).await.0 == "Succeeded"
    })
    .await;
    let recovered = killed.elapsed();
    let (_, attempts) = task_state(&stack, compact).await;
    assert!(attempts >= 2, "the killed attempt was retried ({attempts} attempts)");
    let after = readings(&stack).await;
    assert_ne!(after.0, before.0, "the retry committed a compact snapshot");
    assert!(after.1 < before.1, "fewer files: {after:?} after, {before:?} before");
    assert_eq!(after.2, before.2, "the same row count");
    let pinned_after =
        PinnedRead::take(&stack.catalog, stack.store.as_ref(), "default", "readings", None).await.expect("pin");
    assert_eq!(pinned_after.rows, pinned_before.rows, "the rows read after the compaction are those read before");
    let mut retries = 0.0;
    let mut runs = 0.0;
    until("the retry and the compaction on /metrics", Duration::from_secs(30), async || {
        retries =
            metric_with(stack.dev_port, "duckmesh_task_retries_total", "task_kind=\"compact\"").await.unwrap_or(0.0);
        runs =
            metric_with(stack.dev_port, "duckmesh_compaction_runs_total", "result=\"succeeded\"").await.unwrap_or(0.0);
        retries >= 1.0 && runs >= 1.0
    })
    .await;
    dev.kill9();
    let tasks = crate::task_count(&stack).await;
    let report = stack.check(Vec::new(), vec![pinned_before, pinned_after], true).await;
    DrillResult {
        scenario: "compaction_interrupted_mid_upload",
        injected: format!("SIGKILL the compact task's worker while its upload stalled in the proxy ({} → {} files)", before.1, after.1),
        recovered,
        records: 0,
        tasks,
        metric: format!(
            "duckmesh_task_retries_total{{task_kind=compact}}={retries}, duckmesh_compaction_runs_total{{result=succeeded}}={runs}, {} rows read identical at both snapshots",
            before.2
        ),
        report,
    }
    .finish();
}

/// A Job whose one task writes `written` in a few files.
const WRITE_JOB: &str = r#"apiVersion: duckmesh.io/v1alpha1
kind: Dataset
metadata:
  name: written
spec: {}
---
apiVersion: duckmesh.io/v1alpha1
kind: Job
metadata:
  name: write
spec:
  tasks:
    - name: write
      maxAttempts: 3
      output: {dataset: written, mode: append}
      targetFileSizeBytes: 1048576
      sql: SELECT i AS id, hash(i) AS h FROM range(200000) AS t(i)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_killed_mid_upload() {
    // The first attempt's second data file PUT waits in the proxy: the worker is caught with
    // one data file uploaded and neither the other nor its manifest.
    worker_killed_with_a_put_stalled(
        "worker_killed_mid_upload",
        "/1/part-00001.parquet",
        "its second data file's PUT stalled in the proxy",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_killed_between_upload_and_commit() {
    // The first attempt's manifest PUT (written after its data files, before the commit)
    // waits in the proxy: the worker is caught with its files uploaded.
    worker_killed_with_a_put_stalled(
        "worker_killed_between_upload_and_commit",
        "/1/manifest.json",
        "its manifest PUT stalled in the proxy",
    )
    .await;
}

/// SIGKILLs a `sql` task's worker while the PUT of its first attempt's `stalled` object waits
/// 5 s in the fault proxy (the kill comes well within it) and after another of its objects has
/// landed; then nothing is committed, the retry commits the rows once from its own attempt's
/// files, and the task retry counter moves.
async fn worker_killed_with_a_put_stalled(scenario: &'static str, stalled: &str, caught: &str) {
    let stack = Stack::new(StackOptions { fault_proxy: true, ..StackOptions::default() }).await;
    let proxy = stack.proxy.as_ref().expect("proxy");
    proxy.set_config(FaultConfig {
        latency_rate: 1.0,
        latency: Duration::from_secs(5),
        only_method: Some(http::Method::PUT),
        only_path_containing: Some(stalled.into()),
        ..FaultConfig::default()
    });
    let file = stack.dir.path().join("write.yaml");
    std::fs::write(&file, WRITE_JOB).expect("job yaml");
    let mut dev = stack.spawn_dev_serving(&file, &[]);
    until("the stalled upload", Duration::from_secs(120), async || proxy.stats().delayed > 0).await;
    let task: i64 = sqlx::query_scalar("SELECT id FROM tasks WHERE name = 'write'")
        .fetch_one(stack.catalog.pool())
        .await
        .expect("the write task");
    // The attempt's other uploads run alongside the stalled one: wait for one to land.
    let attempt_prefix = format!("written/attempts/{task}/1/");
    until("an upload of the attempt", Duration::from_secs(3), async || {
        stack.store.list(&attempt_prefix).await.is_ok_and(|objects| !objects.is_empty())
    })
    .await;
    let workers = workers_of(dev.pid());
    assert!(!workers.is_empty(), "the task's worker process is running");
    for worker in &workers {
        harness::kill9(*worker);
    }
    let killed = Instant::now();
    proxy.set_config(FaultConfig::default());
    let uploaded = stack.store.list(&attempt_prefix).await.expect("list");
    let stalled_key = format!("written/attempts/{task}{stalled}");
    assert!(
        uploaded.iter().all(|object| object.key != stalled_key),
        "the stalled object was not written: {uploaded:?}"
    );
    let committed: i64 = sqlx::query_scalar("SELECT current_snapshot_id FROM datasets WHERE name = 'written'")
        .fetch_one(stack.catalog.pool())
        .await
        .expect("written");
    assert_eq!(committed, 0, "nothing committed by the killed attempt");

    until("the retry committed", Duration::from_secs(120), async || task_state(&stack, task).await.0 == "Succeeded")
        .await;
    let recovered = killed.elapsed();
    let (_, attempts) = task_state(&stack, task).await;
    assert!(attempts >= 2, "the killed attempt was retried ({attempts} attempts)");
    let rows: i64 = sqlx::query_scalar("SELECT row_count FROM datasets WHERE name = 'written'")
        .fetch_one(stack.catalog.pool())
        .await
        .expect("rows");
    assert_eq!(rows, 200_000, "committed exactly once");
    let paths: Vec<String> = sqlx::query_scalar(
        "SELECT f.path FROM files f JOIN datasets d ON d.id = f.dataset_id WHERE d.name = 'written' AND f.removed_in IS NULL",
    )
    .fetch_all(stack.catalog.pool())
    .await
    .expect("files");
    assert!(
        !paths.is_empty() && paths.iter().all(|path| !path.contains(&format!("/attempts/{task}/1/"))),
        "no file of the killed attempt is live: {paths:?}"
    );
    let mut retries = 0.0;
    until("the retry on /metrics", Duration::from_secs(30), async || {
        retries = metric_with(stack.dev_port, "duckmesh_task_retries_total", "task_kind=\"sql\"").await.unwrap_or(0.0);
        retries >= 1.0
    })
    .await;
    dev.kill9();
    let tasks = crate::task_count(&stack).await;
    let report = stack.check(Vec::new(), Vec::new(), true).await;
    DrillResult {
        scenario,
        injected: format!("SIGKILL the worker with {} object(s) of its attempt uploaded, {caught}", uploaded.len()),
        recovered,
        records: 0,
        tasks,
        metric: format!("duckmesh_task_retries_total{{task_kind=sql}}={retries}, {rows} rows committed once"),
        report,
    }
    .finish();
}
