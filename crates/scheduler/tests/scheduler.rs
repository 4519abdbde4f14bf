//! The scheduling loop on a real PostgreSQL catalog, with a scripted executor standing in for
//! pods or processes: dependency order, one launch per attempt, runner ends the worker could
//! not record (killed, crashed, never started), and expired leases whose runner is stopped.

use duckmesh_catalog::{Catalog, CatalogConfig, JobSpec, TaskSpec};
use duckmesh_core::{AttemptId, AttemptState, BackoffPolicy, JobPhase, TaskPhase};
use duckmesh_scheduler::{Executor, ExecutorError, Launch, RunnerEnded, RunnerExit, Scheduler, SchedulerOptions};
use duckmesh_testkit::TestDatabase;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the scripted runner of one attempt does.
#[derive(Debug, Clone, Copy)]
enum Script {
    /// Confirms, completes the task in the catalog, exits 0 (a healthy worker).
    Succeed,
    /// Confirms, then dies with no record (SIGKILL, OOM).
    Killed,
    /// Confirms, then exits with this code without recording anything.
    Exit(i32),
    /// Cannot be started.
    RefuseLaunch,
    /// Confirms and then hangs without heartbeats until stopped.
    Hang,
}

struct Scripted {
    catalog: Catalog,
    ends: mpsc::Sender<RunnerEnded>,
    scripts: HashMap<(String, u32), Script>,
    launches: Mutex<Vec<(String, u32)>>,
    stopped: Mutex<Vec<AttemptId>>,
}

impl Executor for Scripted {
    async fn launch(&self, launch: Launch) -> Result<(), ExecutorError> {
        let key = (launch.task.name.clone(), launch.lease.number);
        let script = self.scripts.get(&key).copied().unwrap_or(Script::Succeed);
        self.launches.lock().expect("lock").push(key);
        assert_eq!(launch.job.as_deref(), Some("pipeline"));
        if let Script::RefuseLaunch = script {
            return Err(ExecutorError::new("spawn_failed", "no such program"));
        }
        let catalog = self.catalog.clone();
        let ends = self.ends.clone();
        let lease = launch.lease;
        tokio::spawn(async move {
            let reference = lease.attempt_ref();
            catalog.confirm_attempt(reference, Some("scripted")).await.expect("confirm");
            let exit = match script {
                Script::Succeed => {
                    catalog.complete(reference).await.expect("complete");
                    RunnerExit::Exited(0)
                }
                Script::Killed => RunnerExit::Killed { reason: "SIGKILL".into() },
                Script::Exit(code) => RunnerExit::Exited(code),
                Script::Hang | Script::RefuseLaunch => return,
            };
            let _ = ends.send(RunnerEnded { task: lease.task, attempt: lease.attempt, fence: lease.fence, exit }).await;
        });
        Ok(())
    }

    async fn stop(&self, attempt: AttemptId) -> Result<(), ExecutorError> {
        self.stopped.lock().expect("lock").push(attempt);
        Ok(())
    }
}

fn task(name: &str, deps: &[&str]) -> TaskSpec {
    TaskSpec {
        name: name.into(),
        kind: "sql".into(),
        depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
        max_attempts: Some(3),
        timeout_seconds: None,
        output: None,
        spec: serde_json::json!({"sql": "SELECT 1"}),
    }
}

struct Run {
    _db: TestDatabase,
    catalog: Catalog,
    executor: Arc<Scripted>,
}

/// Runs the loop over a diamond `a → (b, c) → d` until the job ends.
async fn run(scripts: &[(&str, u32, Script)], lease: Duration) -> Run {
    let db = TestDatabase::new().await.expect("database");
    let config = CatalogConfig {
        lease,
        task_backoff: BackoffPolicy { base: Duration::from_millis(20), max: Duration::from_millis(50) },
        ..CatalogConfig::default()
    };
    let catalog = db.catalog_with(config, 10).await.expect("catalog");
    catalog
        .upsert_job(&JobSpec {
            namespace: "default".into(),
            name: "pipeline".into(),
            uid: "uid-1".into(),
            generation: 1,
            tenant: "acme".into(),
            max_parallel: None,
            spec: serde_json::json!({}),
            tasks: vec![task("a", &[]), task("b", &["a"]), task("c", &["a"]), task("d", &["b", "c"])],
        })
        .await
        .expect("job");
    let (ends, exits) = mpsc::channel(64);
    let executor = Arc::new(Scripted {
        catalog: catalog.clone(),
        ends,
        scripts: scripts.iter().map(|(t, n, s)| ((t.to_string(), *n), *s)).collect(),
        launches: Mutex::new(Vec::new()),
        stopped: Mutex::new(Vec::new()),
    });
    let mut options = SchedulerOptions::new("test-scheduler");
    options.tick = Duration::from_millis(50);
    let scheduler =
        Scheduler::new(catalog.clone(), Arc::clone(&executor), options, Some(duckmesh_telemetry::Metrics::new()));
    let shutdown = CancellationToken::new();
    let loop_task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { scheduler.run(exits, shutdown).await }
    });
    let job = catalog.job_by_name("default", "pipeline").await.expect("job");
    let started = std::time::Instant::now();
    while !catalog.job(job.id).await.expect("job").phase.is_terminal() {
        assert!(started.elapsed() < Duration::from_secs(30), "the job did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    loop_task.await.expect("loop");
    Run { _db: db, catalog, executor }
}

impl Run {
    fn launches(&self) -> Vec<(String, u32)> {
        self.executor.launches.lock().expect("lock").clone()
    }

    async fn task(&self, name: &str) -> duckmesh_catalog::TaskRecord {
        let job = self.catalog.job_by_name("default", "pipeline").await.expect("job");
        let tasks = self.catalog.tasks_of_job(job.id).await.expect("tasks");
        tasks.into_iter().find(|t| t.name == name).expect("task")
    }

    async fn job_phase(&self) -> JobPhase {
        self.catalog.job_by_name("default", "pipeline").await.expect("job").phase
    }
}

fn position(launches: &[(String, u32)], name: &str) -> usize {
    launches.iter().position(|(t, _)| t == name).unwrap_or_else(|| panic!("{name} never launched: {launches:?}"))
}

#[tokio::test]
async fn tasks_launch_once_each_in_dependency_order() {
    let run = run(&[], Duration::from_secs(30)).await;
    assert_eq!(run.job_phase().await, JobPhase::Succeeded);
    let launches = run.launches();
    assert_eq!(launches.len(), 4, "{launches:?}");
    assert!(launches.iter().all(|(_, n)| *n == 1));
    let (a, b, c, d) =
        (position(&launches, "a"), position(&launches, "b"), position(&launches, "c"), position(&launches, "d"));
    assert!(a < b && a < c && b < d && c < d, "{launches:?}");
}

#[tokio::test]
async fn runner_ends_the_worker_could_not_record_are_recorded_and_retried() {
    let run = run(
        &[
            ("a", 1, Script::Killed),
            ("b", 1, Script::Exit(101)),
            ("c", 1, Script::RefuseLaunch),
            ("c", 2, Script::Exit(13)),
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(run.job_phase().await, JobPhase::Succeeded);
    for (name, codes) in [
        ("a", vec![Some("worker_killed"), None]),
        ("b", vec![Some("worker_crashed"), None]),
        ("c", vec![Some("runner_start_failed"), Some("worker_unreported"), None]),
        ("d", vec![None]),
    ] {
        let task = run.task(name).await;
        assert_eq!(task.phase, TaskPhase::Succeeded, "{name}");
        let attempts = run.catalog.attempts_of_task(task.id).await.expect("attempts");
        let got: Vec<Option<&str>> = attempts.iter().map(|a| a.error_code.as_deref()).collect();
        assert_eq!(got, codes, "{name}: {attempts:?}");
        assert_eq!(attempts.last().map(|a| a.state), Some(AttemptState::Succeeded), "{name}");
    }
}

#[tokio::test]
async fn a_misconfigured_worker_fails_the_task_without_retrying_and_dependents_with_it() {
    let run = run(&[("b", 1, Script::Exit(2))], Duration::from_secs(30)).await;
    assert_eq!(run.job_phase().await, JobPhase::Failed);
    let b = run.task("b").await;
    assert_eq!((b.phase, b.attempts), (TaskPhase::Failed, 1));
    assert_eq!(b.last_error_code.as_deref(), Some("worker_misconfigured"));
    assert_eq!(run.task("d").await.phase, TaskPhase::Failed, "d depends on b");
    assert!(!run.launches().iter().any(|(t, _)| t == "d"));
}

#[tokio::test]
async fn a_hung_runner_loses_its_lease_is_stopped_and_the_task_retried() {
    let run = run(&[("a", 1, Script::Hang)], Duration::from_millis(400)).await;
    assert_eq!(run.job_phase().await, JobPhase::Succeeded);
    let a = run.task("a").await;
    let attempts = run.catalog.attempts_of_task(a.id).await.expect("attempts");
    assert_eq!(attempts[0].state, AttemptState::Expired, "{attempts:?}");
    assert_eq!(attempts[0].error_code.as_deref(), Some("lease_expired"));
    assert!(run.executor.stopped.lock().expect("lock").contains(&attempts[0].id), "the stale runner was stopped");
}

/// Maintenance runs recorded in the catalog (by tasks in short-lived pods, or the CLI) become the
/// compaction, GC and integrity counters of the scheduler's `/metrics`; runs from before the
/// scheduler started are not counted again.
#[tokio::test]
async fn recorded_maintenance_runs_become_counters() {
    use duckmesh_catalog::MaintenanceRun;
    let db = TestDatabase::new().await.expect("test database");
    let catalog = db.catalog().await.expect("catalog");
    let run = |kind: &str, result: &str| MaintenanceRun {
        kind: kind.into(),
        result: result.into(),
        ..MaintenanceRun::default()
    };
    catalog
        .record_maintenance_run(&MaintenanceRun { bytes_rewritten: 999, ..run("compact", "succeeded") })
        .await
        .expect("old");
    let (ends, _exits) = mpsc::channel(1);
    let executor = Arc::new(Scripted {
        catalog: catalog.clone(),
        ends,
        scripts: HashMap::new(),
        launches: Mutex::new(Vec::new()),
        stopped: Mutex::new(Vec::new()),
    });
    let metrics = duckmesh_telemetry::Metrics::new();
    let scheduler = Scheduler::new(catalog.clone(), executor, SchedulerOptions::new("test"), Some(metrics.clone()));
    scheduler.pass().await.expect("first pass");
    for recorded in [
        MaintenanceRun { bytes_rewritten: 100, ..run("compact", "succeeded") },
        run("compact", "noop"),
        MaintenanceRun { unreferenced_deleted: 3, staging_deleted: 2, ..run("gc", "succeeded") },
        MaintenanceRun {
            files_checked: 10,
            missing_files: 2,
            size_mismatch_files: 1,
            ..run("integrity", "issues_found")
        },
        MaintenanceRun { error_code: Some("object_store_unavailable".into()), ..run("integrity", "failed") },
    ] {
        catalog.record_maintenance_run(&recorded).await.expect("record");
    }
    scheduler.pass().await.expect("second pass");
    scheduler.pass().await.expect("third pass counts nothing twice");
    let text = metrics.encode();
    for expected in [
        "duckmesh_compaction_runs_total{result=\"succeeded\"} 1",
        "duckmesh_compaction_runs_total{result=\"noop\"} 1",
        "duckmesh_compaction_bytes_rewritten_total 100",
        "duckmesh_gc_runs_total{result=\"succeeded\"} 1",
        "duckmesh_gc_files_deleted_total{kind=\"unreferenced\"} 3",
        "duckmesh_gc_files_deleted_total{kind=\"staging\"} 2",
        "duckmesh_integrity_runs_total{result=\"issues_found\"} 1",
        "duckmesh_integrity_runs_total{result=\"failed\"} 1",
        "duckmesh_integrity_files_checked_total 10",
        "duckmesh_integrity_missing_files_total 2",
        "duckmesh_integrity_size_mismatch_files_total 1",
    ] {
        assert!(text.lines().any(|line| line == expected), "missing {expected:?} in:\n{text}");
    }
}

/// The Datasets' maintenance policies create maintenance tasks when their cron schedules fire,
/// one running per dataset at a time, with the task spec the policy gives.
#[tokio::test]
async fn maintenance_policies_create_tasks_when_due() {
    let db = TestDatabase::new().await.expect("test database");
    let catalog = db.catalog().await.expect("catalog");
    let spec = serde_json::json!({
        "compaction": {"enabled": true, "minFiles": 3, "schedule": "* * * * *"},
        "retention": {"gcSchedule": "0 0 1 1 *"},
        "integrity": {"schedule": "* * * * *", "verifyHashes": true}
    });
    let dataset = catalog
        .upsert_dataset(&duckmesh_catalog::DatasetSpec {
            namespace: "default".into(),
            name: "events".into(),
            uid: "uid-events".into(),
            generation: 1,
            tenant: "acme".into(),
            schema: None,
            spec,
        })
        .await
        .expect("dataset");
    let pool = sqlx::PgPool::connect(db.url()).await.expect("pool");
    sqlx::query("UPDATE datasets SET created_at = now() - interval '10 minutes' WHERE id = $1")
        .bind(dataset.id.0)
        .execute(&pool)
        .await
        .expect("age the dataset");
    let (ends, _exits) = mpsc::channel(1);
    let executor = Arc::new(Scripted {
        catalog: catalog.clone(),
        ends,
        scripts: HashMap::new(),
        launches: Mutex::new(Vec::new()),
        stopped: Mutex::new(Vec::new()),
    });
    let mut options = SchedulerOptions::new("test");
    // Look at the policies on every pass, and lease nothing: this test is about planning.
    options.maintenance_every = Some(Duration::ZERO);
    options.global_limit = Some(0);
    let scheduler = Scheduler::new(catalog.clone(), executor, options, None);

    let created = scheduler.pass().await.expect("pass").maintenance_created;
    assert_eq!(created.len(), 1, "{created:?}");
    let compact = catalog.task(created[0]).await.expect("task");
    assert_eq!((compact.kind.as_str(), compact.spec.clone()), ("compact", serde_json::json!({"minFiles": 3})));
    assert_eq!((compact.namespace.as_str(), compact.tenant.as_str()), ("default", "acme"));
    assert_eq!(compact.output.map(|output| output.dataset), Some(dataset.id));
    assert!(scheduler.pass().await.expect("pass").maintenance_created.is_empty(), "one at a time per dataset");

    sqlx::query("UPDATE tasks SET phase = 'Succeeded' WHERE id = $1")
        .bind(compact.id.0)
        .execute(&pool)
        .await
        .expect("finish");
    let created = scheduler.pass().await.expect("pass").maintenance_created;
    assert_eq!(created.len(), 1, "{created:?}");
    let integrity = catalog.task(created[0]).await.expect("task");
    assert_eq!(
        (integrity.kind.as_str(), integrity.spec.clone()),
        ("integrity", serde_json::json!({"verifyHashes": true}))
    );
}
