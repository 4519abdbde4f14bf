//! The invariant test (SPEC §2): 16 concurrent runners work through 500 tasks in 25 DAGs on a
//! real PostgreSQL while misbehaving on purpose — crashing (they stop heartbeating and vanish),
//! stalling past their lease and then trying to commit, receiving duplicate wake-ups, and
//! failing retryably or permanently — next to a reaper and a job refresher. At the end:
//!
//! - every task is `Succeeded` or terminally `Failed`, and no attempt is left live;
//! - no task has two committed outputs, and every committed output came from the task's final,
//!   current, unexpired attempt; no crashed or stalled attempt ever committed;
//! - every commit a runner saw succeed is in the catalog, and nothing else is;
//! - per dataset, snapshot ids run 1..n, parents chain, visibility tokens strictly increase.
//!
//! The RNG is seeded (`DUCKMESH_INVARIANT_SEED` to replay); the seed is printed on failure.

mod common;

use common::*;
use duckmesh_catalog::*;
use duckmesh_core::schedule::{ConcurrencyLimits, runnable};
use duckmesh_core::{AttemptId, AttemptState, DatasetId, TaskId};
use duckmesh_testkit::BoxError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const RUNNERS: usize = 16;
const JOBS: usize = 25;
const TASKS_PER_JOB: usize = 20;
const DATASETS: usize = 5;
const LEASE: Duration = Duration::from_millis(400);
const DEADLINE: Duration = Duration::from_secs(240);

#[derive(Default)]
struct Tally {
    leased: AtomicU64,
    batch_leased: AtomicU64,
    lost_races: AtomicU64,
    duplicate_wake_ups: AtomicU64,
    crashes: AtomicU64,
    stalls: AtomicU64,
    stale_rejected: AtomicU64,
    retryable_failures: AtomicU64,
    permanent_failures: AtomicU64,
    commits: AtomicU64,
    reaped: AtomicU64,
}

#[derive(Default)]
struct Journal {
    /// Attempts a runner abandoned (crash) or stalled past their lease: must never commit.
    doomed: HashSet<AttemptId>,
    /// Commits a runner saw succeed.
    committed: HashMap<AttemptId, (TaskId, DatasetId)>,
}

fn count(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// How the runners of a run take their leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leasing {
    /// `lease_task` per task, then `confirm_attempt`.
    Single,
    /// Half the runners lease several tasks in one `lease_batch` statement with the confirm
    /// folded in; the other half lease one at a time, racing them for the same tasks.
    Batch,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misbehaving_runners_never_break_the_invariants() -> Result<(), BoxError> {
    scenario(Leasing::Single).await
}

/// The same misbehaving run with batch leases (`Catalog::lease_batch`, `FOR UPDATE SKIP
/// LOCKED LIMIT k`, confirm folded into the lease) racing single leases: the invariants hold
/// unchanged, and a batch never leases a task twice or a task another runner holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_leases_with_folded_confirms_never_break_the_invariants() -> Result<(), BoxError> {
    scenario(Leasing::Batch).await
}

async fn scenario(leasing: Leasing) -> Result<(), BoxError> {
    let seed: u64 = std::env::var("DUCKMESH_INVARIANT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("invariant seed = {seed} (replay with DUCKMESH_INVARIANT_SEED={seed})");
    let ctx = format!("[{leasing:?} leases, seed {seed}]");

    let db = duckmesh_testkit::TestDatabase::new().await?;
    let config = CatalogConfig { lease: LEASE, ..fast_config() };
    let catalog = db.catalog_with(config, (RUNNERS + 8) as u32).await?;

    // Datasets and random DAGs: each task depends on up to two earlier tasks of its job.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut datasets = Vec::new();
    for i in 0..DATASETS {
        datasets.push(dataset(&catalog, &format!("ds{i}")).await?);
    }
    for j in 0..JOBS {
        let mut tasks = Vec::new();
        for t in 0..TASKS_PER_JOB {
            let mut deps: Vec<String> = Vec::new();
            for _ in 0..rng.random_range(0..=2usize) {
                if t > 0 {
                    let dep = format!("t{}", rng.random_range(0..t));
                    if !deps.contains(&dep) {
                        deps.push(dep);
                    }
                }
            }
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            let mut spec = task(&format!("t{t}"), &deps, Some(datasets[rng.random_range(0..DATASETS)]));
            if rng.random_bool(0.2) {
                spec.output = spec.output.map(|o| TaskOutput { mode: CommitMode::Overwrite, ..o });
            }
            if rng.random_bool(0.25) {
                spec.max_attempts = Some(5);
            }
            tasks.push(spec);
        }
        catalog.upsert_job(&job_spec(&format!("job{j}"), tasks)).await?;
    }

    let tally = Arc::new(Tally::default());
    let journal = Arc::new(Mutex::new(Journal::default()));
    let done = Arc::new(AtomicBool::new(false));

    let reaper = {
        let (catalog, tally, done) = (catalog.clone(), tally.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                match catalog.reap_expired_leases(100).await {
                    Ok(reaped) => tally.reaped.fetch_add(reaped.len() as u64, Ordering::Relaxed),
                    Err(error) => panic!("reaper failed: {error}"),
                };
                let _ = catalog.refresh_jobs().await.expect("job refresh");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let runners: Vec<_> = (0..RUNNERS)
        .map(|index| {
            let (catalog, tally, journal, done) = (catalog.clone(), tally.clone(), journal.clone(), done.clone());
            let rng = StdRng::seed_from_u64(seed.wrapping_add(index as u64 + 1));
            let batch = leasing == Leasing::Batch && index % 2 == 0;
            tokio::spawn(run(index, batch, catalog, rng, tally, journal, done))
        })
        .collect();

    let started = Instant::now();
    loop {
        let unfinished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tasks WHERE phase NOT IN ('Succeeded', 'Failed', 'Cancelled')")
                .fetch_one(catalog.pool())
                .await?;
        if unfinished == 0 {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "{ctx} {unfinished} tasks still unfinished after {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.store(true, Ordering::Relaxed);
    for runner in runners {
        runner.await?;
    }
    reaper.await?;
    catalog.refresh_jobs().await?;

    let journal = journal.lock().await;
    verify(&catalog, &journal, &ctx).await?;

    println!(
        "{ctx} {:?}: leased {} (batch-leased, confirm folded: {}) lost-races {} duplicate-wake-ups {} crashes {} stalls {} stale-rejected {} \
         retryable {} permanent {} commits {} reaped {}",
        started.elapsed(),
        count(&tally.leased),
        count(&tally.batch_leased),
        count(&tally.lost_races),
        count(&tally.duplicate_wake_ups),
        count(&tally.crashes),
        count(&tally.stalls),
        count(&tally.stale_rejected),
        count(&tally.retryable_failures),
        count(&tally.permanent_failures),
        count(&tally.commits),
        count(&tally.reaped),
    );
    // The run really exercised every kind of misbehaviour.
    for (name, value) in [
        ("duplicate wake-ups", count(&tally.duplicate_wake_ups)),
        ("crashes", count(&tally.crashes)),
        ("stalls", count(&tally.stalls)),
        ("stale commits rejected", count(&tally.stale_rejected)),
        ("retryable failures", count(&tally.retryable_failures)),
        ("permanent failures", count(&tally.permanent_failures)),
        ("reaped leases", count(&tally.reaped)),
        ("commits", count(&tally.commits)),
        ("batch leases", if leasing == Leasing::Batch { count(&tally.batch_leased) } else { 1 }),
    ] {
        assert!(value > 0, "{ctx} the run produced no {name}");
    }
    Ok(())
}

async fn run(
    index: usize,
    batch: bool,
    catalog: Catalog,
    mut rng: StdRng,
    tally: Arc<Tally>,
    journal: Arc<Mutex<Journal>>,
    done: Arc<AtomicBool>,
) {
    let name = format!("runner-{index}");
    while !done.load(Ordering::Relaxed) {
        let (state, per_job, now) = catalog.scheduling_state(200).await.expect("scheduling state");
        let plan = runnable(&state, &ConcurrencyLimits { global: None, per_job }, now);
        if !plan.upstream_failed.is_empty() {
            catalog.fail_upstream(&plan.upstream_failed).await.expect("fail upstream");
        }
        if plan.lease.is_empty() {
            tokio::time::sleep(Duration::from_millis(rng.random_range(5..25))).await;
            continue;
        }
        if batch {
            // Several of the first few candidates in one statement, so that batches race each
            // other and the single leases for the same tasks.
            let candidates: Vec<TaskId> = plan.lease.iter().copied().take(6).collect();
            let limit = rng.random_range(1..=3);
            let leases = catalog
                .lease_batch(&BatchLease { candidates: &candidates, limit, runner: &name, lease: LEASE, confirm: true })
                .await
                .expect("batch lease call");
            assert!(leases.len() <= limit, "a batch of {limit} took {} leases", leases.len());
            let tasks: HashSet<TaskId> = leases.iter().map(|lease| lease.task).collect();
            assert_eq!(tasks.len(), leases.len(), "a batch leased a task twice");
            assert!(tasks.iter().all(|task| candidates.contains(task)), "a batch leased a task it was not offered");
            if leases.is_empty() {
                bump(&tally.lost_races);
                continue;
            }
            if rng.random_bool(0.15) {
                // The same wake-up delivered twice: nothing of ours is leasable again.
                let mine: Vec<TaskId> = tasks.iter().copied().collect();
                let again = catalog
                    .lease_batch(&BatchLease {
                        candidates: &mine,
                        limit: 8,
                        runner: &name,
                        lease: LEASE,
                        confirm: true,
                    })
                    .await
                    .expect("batch lease call");
                assert!(again.is_empty(), "a duplicate wake-up produced second live attempts: {again:?}");
                bump(&tally.duplicate_wake_ups);
            }
            for lease in &leases {
                // Folded confirm: never `Leased`, already run by this runner (the reaper may
                // have expired it since on a slow machine).
                let attempt = catalog.attempt(lease.attempt).await.expect("attempt");
                assert_ne!(
                    attempt.state,
                    AttemptState::Leased,
                    "a folded confirm left attempt {} Leased",
                    lease.attempt
                );
                assert_eq!(attempt.runner.as_deref(), Some(name.as_str()), "attempt {}", lease.attempt);
            }
            for lease in leases {
                bump(&tally.leased);
                bump(&tally.batch_leased);
                work(&name, lease, true, &catalog, &mut rng, &tally, &journal).await;
            }
            continue;
        }
        // Pick among the first few so that runners often race for the same task.
        let task = plan.lease[rng.random_range(0..plan.lease.len().min(4))];
        let Some(lease) = catalog.lease_task(task, &name, LEASE).await.expect("lease call") else {
            bump(&tally.lost_races);
            continue;
        };
        bump(&tally.leased);
        if rng.random_bool(0.15) {
            // The same wake-up delivered twice.
            let again = catalog.lease_task(task, &name, LEASE).await.expect("lease call");
            assert!(again.is_none(), "a duplicate wake-up produced a second live attempt for task {task}");
            bump(&tally.duplicate_wake_ups);
        }
        work(&name, lease, false, &catalog, &mut rng, &tally, &journal).await;
    }
}

/// One leased attempt, run (or misbehaved with) to its end; `confirmed` when the confirm was
/// folded into the lease.
async fn work(
    name: &str,
    lease: Lease,
    confirmed: bool,
    catalog: &Catalog,
    rng: &mut StdRng,
    tally: &Tally,
    journal: &Mutex<Journal>,
) {
    if confirmed && let Err(error) = catalog.heartbeat(lease.attempt_ref()).await {
        // A runner holding several leases keeps each alive while it works through the others;
        // one that ran out meanwhile must stop (self-fencing) and can never commit.
        assert!(error.is_fencing(), "heartbeat failed unexpectedly: {error}");
        journal.lock().await.doomed.insert(lease.attempt);
        return;
    }
    let task = lease.task;
    let task_record = catalog.task(task).await.expect("task");
    let output = task_record.output.expect("every task has an output");
    let request = CommitRequest {
        dataset: output.dataset,
        mode: output.mode,
        files: (0..rng.random_range(0..3))
            .map(|n| file(&format!("ds{}/attempts/{}/{}/part-{n}.parquet", output.dataset, task, lease.number), 10))
            .collect(),
        manifest_path: None,
        schema: None,
    };
    let roll: f64 = rng.random();
    if roll < 0.08 {
        // Crash: vanish without a word; the reaper must notice.
        journal.lock().await.doomed.insert(lease.attempt);
        bump(&tally.crashes);
        return;
    }
    if !confirmed {
        let confirmed = catalog.confirm_attempt(lease.attempt_ref(), Some(name)).await;
        if let Err(error) = &confirmed {
            assert!(error.is_fencing(), "confirm failed unexpectedly: {error}");
            // Slow machine: the lease ran out before we confirmed. Treat as crashed.
            journal.lock().await.doomed.insert(lease.attempt);
            return;
        }
    }
    if roll < 0.14 {
        // Stall past the lease (GC pause, network partition), then try to commit anyway.
        journal.lock().await.doomed.insert(lease.attempt);
        bump(&tally.stalls);
        tokio::time::sleep(LEASE + Duration::from_millis(rng.random_range(100..300))).await;
        let error = catalog.commit(lease.attempt_ref(), &request).await.expect_err("a stalled attempt committed");
        assert!(error.is_fencing(), "stalled commit refused for the wrong reason: {error}");
        bump(&tally.stale_rejected);
        return;
    }
    if roll < 0.28 {
        let retryable = roll < 0.26;
        let failure = Failure {
            code: if retryable { "object_store_unavailable" } else { "sql_error" }.into(),
            message: format!("{name} failed on purpose"),
            retryable,
        };
        match catalog.fail_attempt(lease.attempt_ref(), &failure).await {
            Ok(_) if retryable => bump(&tally.retryable_failures),
            Ok(_) => bump(&tally.permanent_failures),
            Err(error) => assert!(error.is_fencing(), "fail_attempt failed unexpectedly: {error}"),
        }
        return;
    }
    // The normal path: a little work, maybe a heartbeat, then the fenced commit.
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..8))).await;
    if rng.random_bool(0.3)
        && let Err(error) = catalog.heartbeat(lease.attempt_ref()).await
    {
        assert!(error.is_fencing(), "heartbeat failed unexpectedly: {error}");
        return; // self-fencing: stop at once
    }
    match catalog.commit(lease.attempt_ref(), &request).await {
        Ok(_) => {
            journal.lock().await.committed.insert(lease.attempt, (task, output.dataset));
            bump(&tally.commits);
        }
        Err(error) => {
            assert!(error.is_fencing(), "commit failed unexpectedly: {error}");
            bump(&tally.stale_rejected);
        }
    }
}

/// One task with its committed snapshot and the attempt that made it, if any.
#[derive(sqlx::FromRow)]
struct TaskOutcome {
    task: i64,
    phase: String,
    output_snapshot: Option<i64>,
    snapshot: Option<i64>,
    attempt_state: Option<String>,
    fence_gap: Option<i64>,
    within_lease: Option<bool>,
    past_lease_ms: Option<f64>,
}

/// One snapshot's ordering facts.
#[derive(sqlx::FromRow)]
struct SnapshotRow {
    dataset: i64,
    id: i64,
    parent: Option<i64>,
    token: i64,
    at: chrono::DateTime<chrono::Utc>,
}

async fn verify(catalog: &Catalog, journal: &Journal, ctx: &str) -> Result<(), BoxError> {
    let pool = catalog.pool();
    let unfinished: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE phase NOT IN ('Succeeded', 'Failed')")
        .fetch_one(pool)
        .await?;
    assert_eq!(unfinished, 0, "{ctx} every task is Succeeded or terminally Failed");
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts WHERE state IN ('Leased', 'Running')")
        .fetch_one(pool)
        .await?;
    assert_eq!(live, 0, "{ctx} no attempt is left live");
    let over_budget: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasks WHERE attempts > max_attempts").fetch_one(pool).await?;
    assert_eq!(over_budget, 0, "{ctx} no task ran more attempts than allowed");

    let doubles: Vec<i64> = sqlx::query_scalar("SELECT task_id FROM snapshots GROUP BY task_id HAVING count(*) > 1")
        .fetch_all(pool)
        .await?;
    assert!(doubles.is_empty(), "{ctx} tasks with two committed outputs: {doubles:?}");

    // Succeeded ⇔ exactly one snapshot, produced by the task's final attempt while its lease held.
    let rows: Vec<TaskOutcome> = sqlx::query_as(
        "SELECT t.id AS task, t.phase, t.output_snapshot_id AS output_snapshot, s.id AS snapshot, \
                a.state AS attempt_state, a.fence - t.fence AS fence_gap, \
                s.committed_at <= a.lease_expires_at AS within_lease, \
                extract(epoch FROM s.committed_at - a.lease_expires_at)::float8 * 1000 AS past_lease_ms \
         FROM tasks t LEFT JOIN snapshots s ON s.task_id = t.id LEFT JOIN attempts a ON a.id = s.attempt_id",
    )
    .fetch_all(pool)
    .await?;
    let (mut succeeded, mut failed) = (0, 0);
    for TaskOutcome { task, phase, output_snapshot, snapshot, attempt_state, fence_gap, within_lease, past_lease_ms } in
        rows
    {
        match phase.as_str() {
            "Succeeded" => {
                succeeded += 1;
                assert!(snapshot.is_some(), "{ctx} succeeded task {task} has no snapshot");
                assert_eq!(output_snapshot, snapshot, "{ctx} task {task} points at its snapshot");
                assert_eq!(attempt_state.as_deref(), Some("Succeeded"), "{ctx} task {task}");
                assert_eq!(fence_gap, Some(0), "{ctx} task {task} committed by a non-current attempt");
                assert_eq!(
                    within_lease,
                    Some(true),
                    "{ctx} task {task} committed {past_lease_ms:?} ms after its lease expired"
                );
            }
            _ => {
                failed += 1;
                assert_eq!(snapshot, None, "{ctx} failed task {task} has a committed output");
            }
        }
    }
    assert!(succeeded > 0 && failed > 0, "{ctx} succeeded {succeeded}, failed {failed}");

    // What runners saw is what the catalog holds.
    let committed: Vec<(i64, i64, i64)> =
        sqlx::query_as("SELECT attempt_id, task_id, dataset_id FROM snapshots ORDER BY attempt_id")
            .fetch_all(pool)
            .await?;
    let in_catalog: HashMap<AttemptId, (TaskId, DatasetId)> = committed
        .into_iter()
        .map(|(attempt, task, dataset)| (AttemptId(attempt), (TaskId(task), DatasetId(dataset))))
        .collect();
    assert_eq!(in_catalog, journal.committed, "{ctx} acknowledged commits == catalog snapshots");
    for attempt in &journal.doomed {
        assert!(!in_catalog.contains_key(attempt), "{ctx} doomed attempt {attempt} committed");
    }

    // Per dataset: ids 1..n, parents chain, tokens and commit times increase.
    let snapshots: Vec<SnapshotRow> = sqlx::query_as(
        "SELECT dataset_id AS dataset, id, parent_id AS parent, visibility_token AS token, committed_at AS at \
         FROM snapshots ORDER BY dataset_id, id",
    )
    .fetch_all(pool)
    .await?;
    let mut previous: HashMap<i64, (i64, i64, chrono::DateTime<chrono::Utc>)> = HashMap::new();
    for SnapshotRow { dataset, id, parent, token, at } in snapshots {
        match previous.get(&dataset) {
            None => {
                assert_eq!((id, parent), (1, None), "{ctx} dataset {dataset} starts at snapshot 1");
            }
            Some(&(prev_id, prev_token, prev_at)) => {
                assert_eq!(id, prev_id + 1, "{ctx} dataset {dataset} snapshot ids are contiguous");
                assert_eq!(parent, Some(prev_id), "{ctx} dataset {dataset} parents chain");
                assert!(token > prev_token, "{ctx} dataset {dataset} tokens strictly increase");
                assert!(at >= prev_at, "{ctx} dataset {dataset} commit times increase");
            }
        }
        previous.insert(dataset, (id, token, at));
    }
    // Each dataset's header agrees with its latest snapshot and its live files.
    let mismatched: Vec<i64> = sqlx::query_scalar(
        "SELECT d.id FROM datasets d \
         WHERE d.current_snapshot_id <> coalesce((SELECT max(id) FROM snapshots s WHERE s.dataset_id = d.id), 0) \
            OR d.file_count <> (SELECT count(*) FROM files f WHERE f.dataset_id = d.id AND f.removed_in IS NULL) \
            OR d.row_count <> (SELECT coalesce(sum(rows), 0) FROM files f WHERE f.dataset_id = d.id AND f.removed_in IS NULL)",
    )
    .fetch_all(pool)
    .await?;
    assert!(mismatched.is_empty(), "{ctx} dataset headers disagree with their files: {mismatched:?}");
    // Overwrites under concurrency: every file added before a dataset's last overwrite is
    // retired, every file added at or after it is live.
    let misplaced: Vec<(i64, String)> = sqlx::query_as(
        "WITH last_overwrite AS ( \
             SELECT dataset_id, max(id) AS id FROM snapshots WHERE kind = 'overwrite' GROUP BY dataset_id) \
         SELECT f.dataset_id, f.path FROM files f JOIN last_overwrite o ON o.dataset_id = f.dataset_id \
         WHERE (f.added_in < o.id AND (f.removed_in IS NULL OR f.removed_in > o.id)) \
            OR (f.added_in >= o.id AND f.removed_in IS NOT NULL)",
    )
    .fetch_all(pool)
    .await?;
    assert!(misplaced.is_empty(), "{ctx} files on the wrong side of an overwrite: {misplaced:?}");
    let overwrites: i64 =
        sqlx::query_scalar("SELECT count(*) FROM snapshots WHERE kind = 'overwrite'").fetch_one(pool).await?;
    assert!(overwrites > 0, "{ctx} the run committed no overwrite");
    let unfinished_jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE phase NOT IN ('Succeeded', 'Failed')")
            .fetch_one(pool)
            .await?;
    assert_eq!(unfinished_jobs, 0, "{ctx} every job reached a terminal phase");
    Ok(())
}
