//! `just chaos [KILLS]`: a kill -9 chaos run checked against the recorded history (issue 18).
//!
//! `duckmesh api`, `duckmesh coordinator` and `duckmesh dev` (the scheduler, its worker
//! processes, and its own API and coordinator) run on a real PostgreSQL catalog and a prefix
//! of the moto bucket. Open-loop producers post records with dedupe keys (retrying each post
//! until it is acknowledged) while `duckmesh dev` runs one Job after another; every few seconds
//! a driver SIGKILLs a random worker, the coordinator, the API or the whole `duckmesh dev`, and
//! restarts what it killed. After KILLS kills the load stops, the backlog drains, the last Job
//! finishes, and the history checker looks at everything. The last line printed is
//!
//! `kills=… acked_records=… visible_exactly_once=… duplicate_outputs=… stale_commits=… violations=…`
//!
//! and the program exits 1 on any violation. `DUCKMESH_CHAOS_INTERVAL_MS` (default 3000) sets
//! the time between kills, `DUCKMESH_CHAOS_SEED` the random choices.

#[path = "../tests/drills/harness.rs"]
mod harness;

use duckmesh_history::{PinnedRead, Property};
use duckmesh_query::QueryRequest;
use harness::{Load, Proc, Role, Stack, StackOptions, workers_of};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Rows each round's work task scans: about a second of DuckDB.
const WORK_ROWS: u64 = 300_000_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// `duckmesh dev` running one round's Job after another.
struct Rounds {
    round: usize,
    dev: Proc,
    succeeded: usize,
    failed: usize,
}

impl Rounds {
    fn start(stack: &Stack) -> Self {
        let file = stack.job_file(1, WORK_ROWS, true);
        Self { round: 1, dev: stack.spawn_dev(&file), succeeded: 0, failed: 0 }
    }

    /// Starts the next round when the current one ended; whether dev is running.
    async fn advance(&mut self, stack: &Stack) {
        if let Ok(Some(status)) = self.dev.child.try_wait() {
            if status.code() == Some(0) {
                self.succeeded += 1;
            } else {
                self.failed += 1;
                println!("chaos: round {} ended with {status}: {:?}", self.round, failures(stack, self.round).await);
            }
            self.round += 1;
            self.dev = stack.spawn_dev(&stack.job_file(self.round, WORK_ROWS, true));
        }
    }

    /// Restarts the killed `duckmesh dev` on the same round (it resumes the Job).
    fn restart(&mut self, stack: &Stack) {
        self.dev = stack.spawn_dev(&stack.dir.path().join(format!("round-{}.yaml", self.round)));
    }
}

/// Why the failed tasks of a round failed (their last attempt's error).
async fn failures(stack: &Stack, round: usize) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT t.name || ' ' || t.phase || ': ' || coalesce(a.error_code, '') || ' ' || coalesce(a.error_message, '') \
           FROM tasks t JOIN jobs j ON j.id = t.job_id JOIN attempts a ON a.task_id = t.id \
          WHERE j.name = $1 AND t.phase <> 'Succeeded' \
            AND a.n = (SELECT max(n) FROM attempts b WHERE b.task_id = t.id)",
    )
    .bind(format!("round-{round}"))
    .fetch_all(stack.catalog.pool())
    .await
    .unwrap_or_default()
}

async fn count(client: &duckmesh_query::client::QueryClient, sql: &str) -> i64 {
    let mut request = QueryRequest::new(sql);
    request.timeout_ms = Some(60_000);
    for _ in 0..100 {
        if let Ok(answer) = client.query(&request).await {
            return answer.rows[0][0].as_i64().unwrap_or(-1);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("query {sql} failed 100 times");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let kills: usize = std::env::args().skip(1).find_map(|arg| arg.parse().ok()).unwrap_or(20);
    let interval = Duration::from_millis(env_or("DUCKMESH_CHAOS_INTERVAL_MS", 3000));
    let seed: u64 = env_or("DUCKMESH_CHAOS_SEED", rand::random());
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    println!("chaos: {kills} kills every {interval:?}, seed {seed}");

    let stack = Stack::new(StackOptions::default()).await;
    let mut api = stack.spawn(Role::Api);
    let mut coordinator = stack.spawn(Role::Coordinator);
    stack.api_ready(Duration::from_secs(60)).await;
    // At most 64 posts in flight per producer (about 3 s of its posts): a client's bounded
    // queue, not a retry storm that grows with every outage.
    let load = Load::start_bounded(stack.client(), 3, 20, Duration::from_millis(50), 64);
    load.acks_after(0, 20, Duration::from_secs(60)).await;
    // A read pinned to an early snapshot of events must return the same rows at the end.
    let first = Instant::now();
    let mut pinned = loop {
        match PinnedRead::take(&stack.catalog, stack.store.as_ref(), "default", "events", None).await {
            Ok(read) => break vec![read],
            Err(error) if first.elapsed() > Duration::from_secs(60) => panic!("pin a read of events: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let mut rounds = Rounds::start(&stack);

    let mut killed: BTreeMap<&str, usize> = BTreeMap::new();
    let mut done = 0;
    while done < kills {
        tokio::time::sleep(interval).await;
        rounds.advance(&stack).await;
        let target = match rng.random_range(0..4) {
            0 => "worker",
            1 => "coordinator",
            2 => "api",
            _ => "dev",
        };
        match target {
            "worker" => {
                let workers = workers_of(rounds.dev.pid());
                let Some(&pid) = workers.get(rng.random_range(0..workers.len().max(1))) else { continue };
                harness::kill9(pid);
            }
            "coordinator" => {
                coordinator.kill9();
                coordinator = stack.spawn(Role::Coordinator);
            }
            "api" => {
                api.kill9();
                api = stack.spawn(Role::Api);
            }
            _ => {
                rounds.dev.kill9();
                rounds.restart(&stack);
            }
        }
        done += 1;
        *killed.entry(target).or_default() += 1;
        if done % 10 == 0 {
            println!(
                "chaos: {done}/{kills} kills {killed:?}, {} posts acked, {} retries, round {}, {:.0} s",
                load.posts(),
                load.retries(),
                rounds.round,
                started.elapsed().as_secs_f64()
            );
        }
        if done == kills / 2
            && let Ok(read) = PinnedRead::take(&stack.catalog, stack.store.as_ref(), "default", "counts", None).await
        {
            pinned.push(read);
        }
    }

    // Quiescence: the load stops, every started post is acknowledged, the backlog drains, the
    // round in flight finishes.
    stack.api_ready(Duration::from_secs(60)).await;
    let acked = load.stop(Duration::from_secs(300)).await;
    stack.drained(Duration::from_secs(300)).await;
    let finishing = Instant::now();
    while rounds.dev.running() {
        assert!(finishing.elapsed() < Duration::from_secs(600), "the last round did not finish\n{}", stack.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = rounds.dev.child.wait().expect("reap dev");
    if last.code() == Some(0) {
        rounds.succeeded += 1;
    } else {
        rounds.failed += 1;
    }
    let client = stack.client();
    let once = count(&client, "SELECT count(*) FROM (SELECT id FROM events GROUP BY id HAVING count(*) = 1)").await;
    let duplicated =
        count(&client, "SELECT count(*) FROM (SELECT id FROM events GROUP BY id HAVING count(*) > 1)").await;
    let report = stack.check(acked.keys, pinned, true).await;
    drop((api, coordinator));

    println!("{report}");
    println!(
        "chaos: {} rounds succeeded, {} failed; {} posts acked after {} retries; kills {killed:?}; {:.0} s",
        rounds.succeeded,
        rounds.failed,
        acked.posts,
        acked.retries,
        started.elapsed().as_secs_f64()
    );
    let violations = report.violations.len() + usize::try_from(duplicated).unwrap_or(1);
    println!(
        "kills={done} acked_records={} visible_exactly_once={once} duplicate_outputs={} stale_commits={} violations={violations}",
        report.checked.acked_records,
        report.of(Property::OneOutputPerTask).count(),
        report.of(Property::NoStaleCommit).count(),
    );
    if violations > 0 {
        eprintln!("logs kept in {}", stack.dir.keep().display());
        std::process::exit(1);
    }
}
