//! Failure drills (SPEC §9, issue 18): each test runs DuckMesh's components as real `duckmesh`
//! processes under open-loop ingest (and Jobs where the drill is about tasks), injects one
//! failure at the process level (SIGKILL, SIGSTOP of PostgreSQL, object-store faults through a
//! proxy in front of moto), checks on `/metrics` that the metric an alert watches moved, waits
//! for recovery, and ends with the history checker (`duckmesh-history`) over the catalog and
//! the bucket. Each prints one line; `just drills` collects them into docs/drills.md.

mod catalog;
mod delivery;
mod harness;

use harness::{DrillResult, Load, Role, Stack, StackOptions, metric, workers_of};
use std::time::{Duration, Instant};

const PRODUCERS: usize = 4;
const BATCH: usize = 25;
const EVERY: Duration = Duration::from_millis(25);

/// Waits until `probe` is true, polling every 50 ms.
async fn until(what: &str, timeout: Duration, mut probe: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !probe().await {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Tasks in the catalog, for the table.
async fn task_count(stack: &Stack) -> usize {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tasks").fetch_one(stack.catalog.pool()).await.unwrap_or(0)
        as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_sigkill_during_high_ingest() {
    let stack = Stack::new(StackOptions::default()).await;
    let mut api = stack.spawn(Role::Api);
    let _coordinator = stack.spawn(Role::Coordinator);
    stack.api_ready(Duration::from_secs(60)).await;
    let load = Load::start(stack.client(), PRODUCERS, BATCH, EVERY);
    load.acks_after(0, 100, Duration::from_secs(60)).await;

    api.kill9();
    let killed = Instant::now();
    let acked_at_kill = load.posts();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _api = stack.spawn(Role::Api);
    let resumed = load.acks_after(acked_at_kill, 1, Duration::from_secs(60)).await;
    let recovered = resumed - killed;
    let retries = load.retries();
    load.acks_after(load.posts(), 100, Duration::from_secs(60)).await;
    let accepted = metric(stack.api_port, "duckmesh_ingest_records_total").await.unwrap_or(0.0);
    let acked = load.stop(Duration::from_secs(120)).await;
    stack.drained(Duration::from_secs(120)).await;
    let lag = metric(stack.coordinator_port, "duckmesh_ingest_lag_events").await;
    assert!(retries > 0, "producers retried while the API was down");
    assert!(accepted > 0.0, "the restarted API counts accepted records on /metrics");
    let report = stack.check(acked.keys, Vec::new(), true).await;
    DrillResult {
        scenario: "api_sigkill_during_high_ingest",
        injected: "SIGKILL duckmesh api under 4 open-loop producers, restarted after 2 s".into(),
        recovered,
        records: report.checked.acked_records,
        tasks: report.checked.tasks,
        metric: format!(
            "client retries={retries}, restarted API duckmesh_ingest_records_total={accepted}, duckmesh_ingest_lag_events={}",
            lag.unwrap_or(-1.0)
        ),
        report,
    }
    .finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinator_crash_with_claimed_uncommitted_events() {
    let stack = Stack::new(StackOptions::default()).await;
    let _api = stack.spawn(Role::Api);
    let mut coordinator = stack.spawn(Role::Coordinator);
    stack.api_ready(Duration::from_secs(60)).await;
    let load = Load::start(stack.client(), PRODUCERS, BATCH, EVERY);
    // Kill it while it holds claimed events (a batch can commit between the look and the kill:
    // then try again).
    let mut stranded = 0;
    for _ in 0..20 {
        until("a claimed batch", Duration::from_secs(60), async || stack.claimed_events().await > 0).await;
        coordinator.kill9();
        stranded = stack.claimed_events().await;
        if stranded > 0 {
            break;
        }
        coordinator = stack.spawn(Role::Coordinator);
    }
    assert!(stranded > 0, "a coordinator was killed holding claimed events");
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let backlog = stack.pending_events().await.unwrap_or(0);
    let _coordinator = stack.spawn(Role::Coordinator);
    // The restarted coordinator reports the backlog the crash left, then drains it.
    let mut lag_seen = 0.0f64;
    until("the coordinator's metrics", Duration::from_secs(60), async || {
        match metric(stack.coordinator_port, "duckmesh_ingest_lag_events").await {
            Some(lag) => {
                lag_seen = lag_seen.max(lag);
                true
            }
            None => false,
        }
    })
    .await;
    let acked = load.stop(Duration::from_secs(120)).await;
    stack.drained(Duration::from_secs(120)).await;
    let recovered = killed.elapsed();
    let reclaimed: i64 = sqlx::query_scalar("SELECT count(*) FROM ingest_events WHERE claims > 1")
        .fetch_one(stack.catalog.pool())
        .await
        .expect("reclaimed events");
    assert!(backlog > 0, "the backlog grew while no coordinator ran");
    assert!(reclaimed > 0, "the {stranded} stranded events were claimed again");
    let report = stack.check(acked.keys, Vec::new(), true).await;
    DrillResult {
        scenario: "coordinator_crash_with_claimed_events",
        injected: format!("SIGKILL duckmesh coordinator holding {stranded} claimed, uncommitted events"),
        recovered,
        records: report.checked.acked_records,
        tasks: report.checked.tasks,
        metric: format!(
            "backlog at restart={backlog}, duckmesh_ingest_lag_events max after restart={lag_seen}, events claimed twice={reclaimed}"
        ),
        report,
    }
    .finish();
}

/// Waits until a task of the stack holds a live lease (a worker is running it).
async fn leased_task(stack: &Stack, timeout: Duration) {
    until("a leased task", timeout, async || {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM attempts WHERE state = 'Running' AND lease_expires_at > clock_timestamp()",
        )
        .fetch_one(stack.catalog.pool())
        .await
        .unwrap_or(0)
            > 0
    })
    .await;
}

/// Runs `duckmesh dev <file>` to its end; its exit code.
async fn dev_to_end(stack: &Stack, file: &std::path::Path, timeout: Duration) -> i32 {
    let mut dev = stack.spawn_dev(file);
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = dev.child.try_wait() {
            return status.code().unwrap_or(-1);
        }
        assert!(started.elapsed() < timeout, "duckmesh dev did not finish\n{}", stack.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rows a task's work query scans: a few seconds of DuckDB on one core.
const WORK_ROWS: u64 = 1_500_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dev_scheduler_crash_with_leased_work() {
    let stack = Stack::new(StackOptions::default()).await;
    let file = stack.job_file(1, WORK_ROWS, false);
    let mut dev = stack.spawn_dev(&file);
    leased_task(&stack, Duration::from_secs(120)).await;
    dev.kill9();
    let killed = Instant::now();
    // Its workers are stopped by its watchdog; their leases stay until they expire.
    let code = dev_to_end(&stack, &file, Duration::from_secs(300)).await;
    let recovered = killed.elapsed();
    assert_eq!(code, 0, "the restarted dev finished the job\n{}", stack.log_tail());
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM attempts").fetch_one(stack.catalog.pool()).await.expect("attempts");
    let tasks = task_count(&stack).await;
    assert!(attempts > tasks as i64, "the killed run's attempts were superseded by new ones");
    let report = stack.check(Vec::new(), Vec::new(), true).await;
    DrillResult {
        scenario: "dev_scheduler_crash_with_leased_work",
        injected: "SIGKILL duckmesh dev while its worker held a task lease".into(),
        recovered,
        records: 0,
        tasks,
        metric: format!("attempts={attempts} for {tasks} tasks (expired leases re-run)"),
        report,
    }
    .finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_killed_mid_task() {
    let stack = Stack::new(StackOptions::default()).await;
    let file = stack.job_file(1, WORK_ROWS, false);
    let mut dev = stack.spawn_dev(&file);
    leased_task(&stack, Duration::from_secs(120)).await;
    let mut workers = Vec::new();
    until("a worker process", Duration::from_secs(30), async || {
        workers = workers_of(dev.pid());
        !workers.is_empty()
    })
    .await;
    harness::kill9(workers[0]);
    let killed = Instant::now();
    let mut retries = 0.0;
    until("a retry on /metrics", Duration::from_secs(60), async || {
        retries = metric(stack.dev_port, "duckmesh_task_retries_total").await.unwrap_or(0.0);
        retries > 0.0
    })
    .await;
    let started = Instant::now();
    let code = loop {
        if let Ok(Some(status)) = dev.child.try_wait() {
            break status.code().unwrap_or(-1);
        }
        assert!(started.elapsed() < Duration::from_secs(300), "dev did not finish\n{}", stack.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let recovered = killed.elapsed();
    assert_eq!(code, 0, "the job succeeded after the worker was killed\n{}", stack.log_tail());
    let tasks = task_count(&stack).await;
    let report = stack.check(Vec::new(), Vec::new(), true).await;
    DrillResult {
        scenario: "worker_killed_mid_task",
        injected: "SIGKILL a duckmesh worker process mid-query".into(),
        recovered,
        records: 0,
        tasks,
        metric: format!("duckmesh_task_retries_total={retries}"),
        report,
    }
    .finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn object_store_503s_stalls_and_outage() {
    use duckmesh_storage::testing::{FaultConfig, FaultKind};
    let stack = Stack::new(StackOptions { fault_proxy: true, ..StackOptions::default() }).await;
    let proxy = stack.proxy.as_ref().expect("proxy");
    let (_api, _coordinator) = stack.start_ingest().await;
    let load = Load::start(stack.client(), PRODUCERS, BATCH, EVERY);
    load.acks_after(0, 50, Duration::from_secs(60)).await;
    // 503 SlowDown on a third of the requests, and stalls of 2 s on a tenth.
    proxy.set_config(FaultConfig {
        failure_rate: 0.3,
        latency_rate: 0.1,
        latency: Duration::from_secs(2),
        ..FaultConfig::slow_down(0.3, 18)
    });
    tokio::time::sleep(Duration::from_secs(8)).await;
    let retried = metric(stack.coordinator_port, "duckmesh_object_store_retries_total").await.unwrap_or(0.0);
    // A full outage: every connection reset, 30 s.
    proxy.set_config(FaultConfig { failure_rate: 1.0, failure: FaultKind::ConnectionReset, ..FaultConfig::default() });
    tokio::time::sleep(Duration::from_secs(30)).await;
    let backlog = stack.pending_events().await.unwrap_or(0);
    let failed = metric(stack.coordinator_port, "duckmesh_snapshot_publish_failures_total").await.unwrap_or(0.0);
    proxy.set_config(FaultConfig::default());
    let healed = Instant::now();
    let acked = load.stop(Duration::from_secs(120)).await;
    stack.drained(Duration::from_secs(180)).await;
    let recovered = healed.elapsed();
    let stats = proxy.stats();
    assert!(stats.injected_failures > 0, "the proxy injected failures");
    assert!(backlog > 0, "ingest was acknowledged and buffered while the bucket was out");
    assert!(retried > 0.0, "the coordinator retried object-store requests (duckmesh_object_store_retries_total)");
    let report = stack.check(acked.keys, Vec::new(), true).await;
    DrillResult {
        scenario: "object_store_503s_stalls_30s_outage",
        injected: format!(
            "8 s of 30% 503 SlowDown + 10% 2 s stalls, then 30 s of connection resets ({} failures injected)",
            stats.injected_failures
        ),
        recovered,
        records: report.checked.acked_records,
        tasks: report.checked.tasks,
        metric: format!(
            "duckmesh_object_store_retries_total={retried}, duckmesh_snapshot_publish_failures_total={failed}, backlog during outage={backlog}"
        ),
        report,
    }
    .finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catalog_lock_contention_on_hot_rows() {
    let stack = Stack::new(StackOptions::default()).await;
    let (_api, _coordinator) = stack.start_ingest().await;
    let load = Load::start(stack.client(), PRODUCERS, BATCH, EVERY);
    load.acks_after(0, 50, Duration::from_secs(60)).await;
    // A session holds the events dataset's row (every ingest commit updates it) for 10 s.
    let mut holder = stack.catalog.pool().begin().await.expect("begin");
    sqlx::query("SELECT id FROM datasets WHERE name = 'events' FOR UPDATE")
        .fetch_all(&mut *holder)
        .await
        .expect("lock the hot row");
    let mut lag_seen = 0.0f64;
    let locked = Instant::now();
    while locked.elapsed() < Duration::from_secs(10) {
        lag_seen = lag_seen.max(metric(stack.coordinator_port, "duckmesh_ingest_lag_events").await.unwrap_or(0.0));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let pending_at_release = stack.pending_events().await.unwrap_or(0);
    holder.rollback().await.expect("release");
    let released = Instant::now();
    let acked = load.stop(Duration::from_secs(120)).await;
    stack.drained(Duration::from_secs(120)).await;
    let recovered = released.elapsed();
    assert!(pending_at_release > 0, "commits waited on the lock and the backlog grew");
    assert!(lag_seen > 0.0, "duckmesh_ingest_lag_events showed the backlog while the row was locked");
    let report = stack.check(acked.keys, Vec::new(), true).await;
    DrillResult {
        scenario: "catalog_lock_contention_10s",
        injected: "a session holding the ingest dataset's row FOR UPDATE for 10 s under load".into(),
        recovered,
        records: report.checked.acked_records,
        tasks: report.checked.tasks,
        metric: format!("duckmesh_ingest_lag_events max={lag_seen}, backlog at release={pending_at_release}"),
        report,
    }
    .finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_wakeups_two_schedulers_and_a_notify_storm() {
    let stack = Stack::new(StackOptions::default()).await;
    let file = stack.job_file(1, WORK_ROWS / 3, false);
    let mut first = stack.spawn_dev(&file);
    let mut second = stack.spawn_dev_in(&file, "dev-2", harness::free_port());
    let started = Instant::now();
    // A storm of wake-ups on the task and commit channels while both schedulers run.
    let mut sent = 0;
    while first.running() || second.running() {
        for channel in [duckmesh_catalog::TASKS_CHANNEL, duckmesh_catalog::COMMITS_CHANNEL] {
            let _ = sqlx::query("SELECT pg_notify($1, 'drill') FROM generate_series(1, 50)")
                .bind(channel)
                .execute(stack.catalog.pool())
                .await;
            sent += 50;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "the job did not finish\n{}", stack.log_tail());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let codes = (first.child.wait().expect("first").code(), second.child.wait().expect("second").code());
    assert_eq!(codes, (Some(0), Some(0)), "both dev processes saw the job succeed\n{}", stack.log_tail());
    let recovered = started.elapsed();
    let tasks = task_count(&stack).await;
    let runners: i64 = sqlx::query_scalar("SELECT count(DISTINCT runner) FROM attempts")
        .fetch_one(stack.catalog.pool())
        .await
        .expect("runners");
    let report = stack.check(Vec::new(), Vec::new(), true).await;
    DrillResult {
        scenario: "duplicate_wakeups",
        injected: format!("two duckmesh dev schedulers on one Job and {sent} NOTIFYs on the task and commit channels"),
        recovered,
        records: 0,
        tasks,
        metric: format!("attempts by {runners} runner(s), each task committed once"),
        report,
    }
    .finish();
}
