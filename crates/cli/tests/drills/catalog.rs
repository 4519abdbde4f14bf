//! Catalog drills: the emergency read-only switch turned on and off under load, PostgreSQL
//! restarted (fast shutdown) under load while a Job runs, and PostgreSQL paused (every process
//! of the server SIGSTOPped) for 20 s under load.

use super::{BATCH, PRODUCERS, WORK_ROWS, leased_task, task_count, until};
use crate::harness::{self, DrillResult, Load, Stack, StackOptions, metric};
use duckmesh_query::QueryRequest;
use duckmesh_query::client::ClientError;
use std::time::{Duration, Instant};

/// The sum of the samples of `name` on `port`'s `/metrics` whose labels hold `label` (such as
/// `result="read_only"`); 0 when none does or the scrape fails.
async fn labelled(port: u16, name: &str, label: &str) -> f64 {
    let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else { return 0.0 };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{')?.split_once("} "))
        .filter(|(labels, _)| labels.split(',').any(|pair| pair == label))
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .sum()
}

/// The highest sequence number of a stored ingest event (0: none yet).
async fn last_event(stack: &Stack) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM ingest_events")
        .fetch_one(stack.catalog.pool())
        .await
        .expect("last ingest event")
}

/// The events dataset's current snapshot id (0: none yet).
async fn events_snapshot(stack: &Stack) -> i64 {
    sqlx::query_scalar("SELECT current_snapshot_id FROM datasets WHERE name = 'events'")
        .fetch_one(stack.catalog.pool())
        .await
        .expect("events snapshot")
}

/// How long the read-only drill keeps the switch on.
const READ_ONLY_FOR: Duration = Duration::from_secs(5);
/// How often each producer starts a post in the drills whose ingest must wait out the failure
/// and drain within seconds: a quarter of the other drills' rate.
const LIGHT_EVERY: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_only_switched_on_and_off_under_load() {
    let stack = Stack::new(StackOptions::default()).await;
    let (_api, _coordinator) = stack.start_ingest().await;
    // Every post refused while read-only is retried (at most a second apart) until it is
    // accepted, so the posts in flight pile up for as long as the switch is on: a post every
    // 100 ms per producer keeps that retry storm within what a debug build serves on 2 cores.
    let load = Load::start(stack.client(), PRODUCERS, BATCH, LIGHT_EVERY);
    load.acks_after(0, 50, Duration::from_secs(60)).await;
    until("a committed snapshot of events", Duration::from_secs(60), async || events_snapshot(&stack).await > 0).await;
    let client = stack.client();
    let count = QueryRequest::new("SELECT count(*) AS n FROM events");
    client.query(&count).await.expect("a query before read-only");

    stack.cli(&["read-only", "on", "--reason", "drill: read-only under load"]);
    let switched_on = Instant::now();
    until("the coordinator reporting read-only mode", Duration::from_secs(10), async || {
        metric(stack.coordinator_port, "duckmesh_read_only_mode").await == Some(1.0)
    })
    .await;
    // A commit or an ack already past the switch's check when it was turned on may still land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let head = events_snapshot(&stack).await;
    let stored_at_on = last_event(&stack).await;
    let acked_at_on = load.posts();
    let refusals_at_on = labelled(stack.api_port, "duckmesh_ingest_requests_total", "result=\"read_only\"").await;

    // For READ_ONLY_FOR: every query answered (200), one ingest post refused with 503 `read_only`.
    let mut queries = 0;
    let mut slowest = Duration::ZERO;
    let mut refused = None;
    while switched_on.elapsed() < READ_ONLY_FOR {
        let asked = Instant::now();
        let answer = client.query(&count).await;
        slowest = slowest.max(asked.elapsed());
        let answer =
            answer.unwrap_or_else(|error| panic!("a query during read-only failed: {error}\n{}", stack.log_tail()));
        assert_eq!(answer.row_count, 1);
        queries += 1;
        if refused.is_none() {
            refused = Some(client.ingest("events", None, r#"{"id": "refused", "n": 0}"#.to_owned()).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match refused.expect("an ingest post during read-only") {
        Err(ClientError::Api { status, error_code, message, .. }) => {
            assert_eq!((status, error_code.as_str()), (503, "read_only"), "{message}");
            assert!(message.contains("drill: read-only under load"), "the refusal names the reason: {message}");
        }
        other => panic!("ingest during read-only: {other:?}"),
    }
    let acked_during = load.posts() - acked_at_on;
    let stored_during = last_event(&stack).await - stored_at_on;
    let refusals = labelled(stack.api_port, "duckmesh_ingest_requests_total", "result=\"read_only\"").await;
    let api_mode = metric(stack.api_port, "duckmesh_read_only_mode").await;
    let backlog = stack.pending_events().await.unwrap_or(0);
    let head_after = events_snapshot(&stack).await;
    let refused_commits =
        labelled(stack.coordinator_port, "duckmesh_snapshot_publish_failures_total", "reason=\"read_only\"").await;

    stack.cli(&["read-only", "off"]);
    let switched_off = Instant::now();
    load.acks_after(load.posts(), 1, Duration::from_secs(60)).await;
    let resumed = switched_off.elapsed();
    until("the coordinator leaving read-only mode", Duration::from_secs(10), async || {
        metric(stack.coordinator_port, "duckmesh_read_only_mode").await == Some(0.0)
    })
    .await;
    let retries = load.retries();
    let acked = load.stop(Duration::from_secs(120)).await;
    stack.drained(Duration::from_secs(120)).await;
    let recovered = switched_off.elapsed();
    let refused_keys: i64 = sqlx::query_scalar("SELECT count(*) FROM ingest_events WHERE dedupe_key = 'refused'")
        .fetch_one(stack.catalog.pool())
        .await
        .expect("refused key");

    assert_eq!(stored_during, 0, "no ingest event was stored while read-only");
    assert_eq!(refused_keys, 0, "the refused post stored nothing");
    assert_eq!(head_after, head, "no snapshot of events was committed while read-only");
    assert!(queries > 0);
    assert!(
        refusals > refusals_at_on,
        "duckmesh_ingest_requests_total{{result=\"read_only\"}} counted the refusals ({refusals_at_on} → {refusals})"
    );
    assert_eq!(api_mode, Some(1.0), "the API's duckmesh_read_only_mode showed the switch");
    let report = stack.check(acked.keys, Vec::new(), true).await;
    DrillResult {
        scenario: "read_only_on_off_under_load",
        injected: format!(
            "duckmesh read-only on for {} s under 4 open-loop producers and queries, then off",
            READ_ONLY_FOR.as_secs()
        ),
        recovered,
        records: report.checked.acked_records,
        tasks: report.checked.tasks,
        metric: format!(
            "{queries} queries answered during read-only (slowest {:.1} s), ingest 503 read_only, \
             duckmesh_ingest_requests_total{{result=read_only}}={refusals}, duckmesh_read_only_mode=1 (api, coordinator), \
             read_only publish failures={refused_commits}, pending events={backlog}, events stored during=0 \
             (late acks of earlier ones={acked_during}), client retries={retries}, first ack {:.1} s after off",
            slowest.as_secs_f64(),
            resumed.as_secs_f64()
        ),
        report,
    }
    .finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_fast_restart_under_load() {
    let mut stack = Stack::new(StackOptions { private_postgres: true, ..StackOptions::default() }).await;
    let (_api, _coordinator) = stack.start_ingest().await;
    let load = Load::start(stack.client(), PRODUCERS, BATCH, LIGHT_EVERY);
    load.acks_after(0, 50, Duration::from_secs(60)).await;
    // A Job whose first task computes for about a second, so the restart lands mid-task.
    let file = stack.job_file(1, WORK_ROWS / 30, true);
    let mut dev = stack.spawn_dev(&file);
    leased_task(&stack, Duration::from_secs(120)).await;

    let ingest_errors = "result=\"error\"";
    let errors_before = labelled(stack.api_port, "duckmesh_ingest_requests_total", ingest_errors).await;
    let claim_errors_before =
        labelled(stack.coordinator_port, "duckmesh_claim_retries_total", "reason=\"catalog_error\"").await;
    let postmaster = stack.postmaster();
    let injected = Instant::now();
    stack.restart_postgres();
    let down = injected.elapsed();
    assert_ne!(stack.postmaster(), postmaster, "a new postmaster serves the catalog");
    let acked_at_restart = load.posts();
    let resumed = load.acks_after(acked_at_restart, 1, Duration::from_secs(60)).await - injected;

    let started = Instant::now();
    let code = loop {
        if let Ok(Some(status)) = dev.child.try_wait() {
            break status.code().unwrap_or(-1);
        }
        assert!(started.elapsed() < Duration::from_secs(300), "dev did not finish\n{}", stack.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code, 0, "the Job succeeded across the restart\n{}", stack.log_tail());
    let job_done = injected.elapsed();
    let errors = labelled(stack.api_port, "duckmesh_ingest_requests_total", ingest_errors).await - errors_before;
    let claim_errors = labelled(stack.coordinator_port, "duckmesh_claim_retries_total", "reason=\"catalog_error\"")
        .await
        - claim_errors_before;
    let retries = load.retries();
    let acked = load.stop(Duration::from_secs(120)).await;
    stack.drained(Duration::from_secs(120)).await;
    let recovered = injected.elapsed();
    assert!(retries > 0, "producers retried while the catalog was down");
    assert!(
        errors > 0.0,
        "the API counted the ingest requests the restart failed (duckmesh_ingest_requests_total{{result=\"error\"}})"
    );
    let tasks = task_count(&stack).await;
    let report = stack.check(acked.keys, Vec::new(), true).await;
    DrillResult {
        scenario: "postgres_fast_restart_under_load",
        injected: format!(
            "PostgreSQL restarted in place (fast shutdown, down {:.1} s) under open-loop ingest while a Job ran",
            down.as_secs_f64()
        ),
        recovered,
        records: report.checked.acked_records,
        tasks,
        metric: format!(
            "duckmesh_ingest_requests_total{{result=error}} +{errors}, duckmesh_claim_retries_total{{reason=catalog_error}} +{claim_errors}, \
             client retries={retries}, first ack {:.1} s after the restart began, Job succeeded {:.1} s after it",
            resumed.as_secs_f64(),
            job_done.as_secs_f64()
        ),
        report,
    }
    .finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_paused_under_load() {
    let stack = Stack::new(StackOptions { private_postgres: true, ..StackOptions::default() }).await;
    let (_api, _coordinator) = stack.start_ingest().await;
    let load = Load::start(stack.client(), PRODUCERS, BATCH, LIGHT_EVERY);
    load.acks_after(0, 50, Duration::from_secs(60)).await;
    let postmaster = stack.postmaster();
    let latency_before = metric(stack.api_port, "duckmesh_ingest_ack_latency_ms_sum").await.unwrap_or(0.0);
    // Every backend is a process group of its own: each process is stopped, not the group.
    let stopped = tokio::task::block_in_place(|| harness::stop_postgres(postmaster));
    // An ack already on its way back to a producer when its backend stopped may still arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = load.posts();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let during = load.posts() - before;
    let still_stopped = harness::postgres_processes(postmaster)
        .into_iter()
        .filter(|pid| harness::process_state(*pid as i32) != Some('T'))
        .count();
    harness::continue_postgres(postmaster);
    let resumed = Instant::now();
    assert_eq!(still_stopped, 0, "every PostgreSQL process stayed stopped for the 20 s");
    assert_eq!(during, 0, "no post was acknowledged while PostgreSQL was stopped");
    load.acks_after(before + during, 50, Duration::from_secs(120)).await;
    let retries = load.retries();
    // The posts that waited out the pause show in the ack latency an alert watches.
    let latency_after = metric(stack.api_port, "duckmesh_ingest_ack_latency_ms_sum").await.unwrap_or(0.0);
    let stalled_ms = latency_after - latency_before;
    assert!(stalled_ms > 20_000.0, "the pause shows in duckmesh_ingest_ack_latency_ms ({stalled_ms} ms added)");
    let acked = load.stop(Duration::from_secs(180)).await;
    stack.drained(Duration::from_secs(180)).await;
    let recovered = resumed.elapsed();
    let report = stack.check(acked.keys, Vec::new(), true).await;
    DrillResult {
        scenario: "postgres_paused_20s_under_load",
        injected: format!(
            "SIGSTOP each of the {stopped} PostgreSQL processes (postmaster first) for 20 s under open-loop ingest, then SIGCONT"
        ),
        recovered,
        records: report.checked.acked_records,
        tasks: report.checked.tasks,
        metric: format!(
            "posts acked during the pause=0, client retries={retries}, duckmesh_ingest_ack_latency_ms_sum +{stalled_ms:.0} ms"
        ),
        report,
    }
    .finish();
}
