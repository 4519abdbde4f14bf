//! The worker under faults, on real Postgres and moto S3: flaky storage, fences that go stale
//! before or during an attempt, timeouts, and stop requests.

mod common;

use common::{Harness, committed, identity, moto};
use duckmesh_catalog::CommitMode;
use duckmesh_core::{AttemptState, TaskPhase};
use duckmesh_storage::testing::{FaultConfig, FaultProxy};
use duckmesh_storage::{Operation, RetryConfig};
use duckmesh_worker::{Outcome, exit};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A query that would run for hours; only an interrupt ends it.
const ENDLESS: &str = "SELECT sum(a.range * b.range) AS s FROM range(1000000000) a, range(1000000) b";

#[tokio::test]
async fn thirty_percent_of_s3_requests_failing_with_slow_down_still_commits() {
    let server = moto().await;
    let proxy = FaultProxy::start(server.endpoint(), FaultConfig::slow_down(0.3, 2024)).await.expect("proxy");
    let mut config = server.config_via(&proxy.endpoint());
    config.retry =
        RetryConfig { base_delay: Duration::from_millis(5), max_delay: Duration::from_millis(100), max_attempts: 12 };
    let harness = Harness::with_s3_config(config).await;
    let numbers = harness.dataset("numbers", json!({}), None).await;
    let squares = harness.dataset("squares", json!({}), None).await;

    let generate = harness
        .task(
            "generate",
            numbers.id,
            CommitMode::Append,
            json!({"sql": "SELECT i AS n, i * 3 AS m FROM range(300000) t(i)", "targetFileSizeBytes": 1048576}),
        )
        .await;
    let first = committed(harness.run_task(generate).await);
    assert!(first.files >= 1);
    // The second task downloads the first one's files through the faulty proxy as well.
    let square = harness
        .task(
            "square",
            squares.id,
            CommitMode::Append,
            json!({"sql": "SELECT sum(n * n)::HUGEINT AS s, count(*) AS c FROM numbers", "inputs": [{"dataset": "numbers"}]}),
        )
        .await;
    let second = committed(harness.run_task(square).await);
    assert_eq!(second.downloads, first.files);

    let stats = proxy.stats();
    assert!(stats.injected_failures > 0, "{stats:?}");
    let counters = &harness.counters;
    assert!(counters.total_retries() > 0, "{:?}", counters.snapshot());
    assert!(counters.counts(Operation::GetObject).requests > 0);
    assert_eq!(counters.total_failures(), 0, "nothing gave up: {:?}", counters.snapshot());

    let expected: i128 = (0..300_000i128).map(|n| n * n).sum();
    let rows = harness
        .query(squares.id, "SELECT s, c FROM t", |row| Ok((row.get::<_, i128>(0)?, row.get::<_, i64>(1)?)))
        .await;
    assert_eq!(rows, vec![(expected, 300_000)]);
}

#[tokio::test]
async fn a_stale_attempt_is_fenced_out_and_commits_nothing_while_the_current_one_commits_once() {
    let harness = Harness::s3().await;
    let out = harness.dataset("out", json!({}), None).await;
    let task = harness.task("produce", out.id, CommitMode::Append, json!({"sql": "SELECT 42 AS answer"})).await;

    // Attempt 1 leases with a short lease and never runs; the reaper retires it.
    let stale = harness.lease(task, Duration::from_millis(300)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reaped = harness.catalog.reap_expired_leases(10).await.expect("reap");
    assert_eq!(reaped.len(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await; // past the (test-sized) retry backoff
    let current = harness.lease(task, Duration::from_secs(60)).await;
    assert!(current.fence > stale.fence);

    // The stale runner wakes up late: refused at once, nothing staged, nothing committed.
    let outcome = harness.run(&stale).await;
    assert_eq!(outcome.exit_code(), exit::FENCED, "{outcome:?}");
    assert!(matches!(outcome, Outcome::Fenced(_)));
    assert!(harness.store.list("out/").await.expect("list").is_empty());
    assert_eq!(harness.catalog.dataset(out.id).await.expect("dataset").current_snapshot, None);

    // The current attempt commits; a second run of the same attempt is fenced.
    let summary = committed(harness.run(&current).await);
    assert_eq!(summary.rows, 1);
    let again = harness.run(&current).await;
    assert_eq!(again.exit_code(), exit::FENCED, "{again:?}");
    let snapshots = harness.catalog.snapshots(out.id, None, 10).await.expect("snapshots");
    assert_eq!(snapshots.len(), 1, "exactly one committed output");
    assert_eq!(snapshots[0].attempt, Some(current.attempt));

    // The catalog itself refuses a commit presented with the stale fence.
    let error = harness
        .catalog
        .commit(
            stale.attempt_ref(),
            &duckmesh_catalog::CommitRequest {
                dataset: out.id,
                mode: CommitMode::Append,
                files: vec![],
                manifest_path: None,
                schema: None,
            },
        )
        .await
        .expect_err("stale fence");
    assert!(error.is_fencing(), "{error}");
}

#[tokio::test]
async fn a_fence_that_goes_stale_mid_query_interrupts_duckdb_at_once() {
    let harness = Harness::s3().await;
    let out = harness.dataset("out", json!({}), None).await;
    let task = harness.task("endless", out.id, CommitMode::Append, json!({"sql": ENDLESS})).await;
    let lease = harness.lease(task, Duration::from_secs(60)).await;

    let worker = harness.worker();
    let id = identity(&lease);
    let started = Instant::now();
    let running = tokio::spawn(async move { worker.run(&id, CancellationToken::new()).await });
    // Let the query get going, then supersede the attempt the way a reaper + new lease would.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sqlx::query("UPDATE tasks SET fence = nextval('fence_seq') WHERE id = $1")
        .bind(task.0)
        .execute(harness.catalog.pool())
        .await
        .expect("supersede");
    let outcome = running.await.expect("join");
    let elapsed = started.elapsed();
    assert_eq!(outcome.exit_code(), exit::FENCED, "{outcome:?}");
    assert_eq!(outcome.error().expect("error").error_code(), "stale_fence");
    // Heartbeats every 500 ms: the stop lands well within a few heartbeats.
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert_eq!(harness.catalog.dataset(out.id).await.expect("dataset").current_snapshot, None);
    let attempt = harness.catalog.attempt(lease.attempt).await.expect("attempt");
    assert_eq!(attempt.state, AttemptState::Running, "a fenced attempt reports nothing");
}

#[tokio::test]
async fn the_timeout_interrupts_the_query_and_is_a_retryable_failure() {
    let harness = Harness::local().await;
    let out = harness.dataset("out", json!({}), None).await;
    let mut spec = common::sql_task("slow", &[], out.id, CommitMode::Append, json!({"sql": ENDLESS}));
    spec.timeout_seconds = Some(1);
    let task = harness.task_with(spec).await;
    let started = Instant::now();
    let outcome = harness.run_task(task).await;
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(outcome.exit_code(), exit::FAILED_RETRYABLE, "{outcome:?}");
    let record = harness.catalog.task(task).await.expect("task");
    assert_eq!(record.phase, TaskPhase::Retrying);
    assert_eq!(record.last_error_code.as_deref(), Some("task_timeout"));
    assert!(record.last_error_message.as_deref().unwrap_or("").contains("timeout of 1 s"), "{record:?}");
}

#[tokio::test]
async fn a_stop_request_interrupts_and_reports_a_retryable_failure() {
    let harness = Harness::local().await;
    let out = harness.dataset("out", json!({}), None).await;
    let task = harness.task("endless", out.id, CommitMode::Append, json!({"sql": ENDLESS})).await;
    let lease = harness.lease(task, Duration::from_secs(60)).await;
    let stop = CancellationToken::new();
    let worker = harness.worker();
    let id = identity(&lease);
    let token = stop.clone();
    let running = tokio::spawn(async move { worker.run(&id, token).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(10), running).await.expect("stops promptly").expect("join");
    assert_eq!(outcome.exit_code(), exit::FAILED_RETRYABLE, "{outcome:?}");
    let record = harness.catalog.task(task).await.expect("task");
    assert_eq!(record.last_error_code.as_deref(), Some("worker_stopped"));
    assert_eq!(record.phase, TaskPhase::Retrying);
}
