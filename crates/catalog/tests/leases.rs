//! Leases, heartbeats, failures, retries and reaping on a real PostgreSQL.

mod common;

use common::*;
use duckmesh_catalog::*;
use duckmesh_core::{AttemptState, Fence, JobPhase, TaskPhase};
use duckmesh_testkit::BoxError;
use std::time::Duration;

#[tokio::test]
async fn migrations_apply_once_and_are_recorded() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    catalog.migrate().await?; // again: a no-op
    assert_eq!(catalog.applied_migrations().await?, Catalog::known_migrations());
    assert!(!Catalog::known_migrations().is_empty());
    Ok(())
}

#[tokio::test]
async fn an_unreachable_catalog_is_a_retryable_typed_error() -> Result<(), BoxError> {
    // Port 9 (discard) on loopback: nothing listens there.
    let mut options = ConnectOptions::new("postgres://postgres@127.0.0.1:9/none");
    options.acquire_timeout = Duration::from_secs(2);
    let error = Catalog::connect(&options, CatalogConfig::default()).await.expect_err("must fail");
    assert_eq!(error.error_code(), "catalog_unavailable");
    assert!(error.is_retryable(), "{error}");
    let message = error.to_string();
    assert!(message.contains("127.0.0.1:9/none") && message.contains("refused"), "{message}");
    Ok(())
}

#[tokio::test]
async fn upserts_are_idempotent_and_ordered_by_generation() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let mut spec = DatasetSpec {
        namespace: "default".into(),
        name: "trips".into(),
        uid: "u1".into(),
        generation: 2,
        tenant: "acme".into(),
        schema: None,
        spec: serde_json::json!({"retention": "7d"}),
    };
    let first = catalog.upsert_dataset(&spec).await?;
    let again = catalog.upsert_dataset(&spec).await?;
    assert_eq!(first, again);

    spec.generation = 1; // a late, older event
    spec.spec = serde_json::json!({"retention": "1d"});
    assert_eq!(catalog.upsert_dataset(&spec).await?.spec, serde_json::json!({"retention": "7d"}));

    spec.generation = 3;
    let newer = catalog.upsert_dataset(&spec).await?;
    assert_eq!((newer.generation, newer.spec.clone()), (3, serde_json::json!({"retention": "1d"})));
    assert_eq!(newer.id, first.id);

    let bad = DatasetSpec { name: "Not Valid".into(), ..spec };
    assert_eq!(catalog.upsert_dataset(&bad).await.expect_err("invalid").error_code(), "invalid_spec");
    Ok(())
}

#[tokio::test]
async fn jobs_create_their_task_graph_once() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let out = dataset(&catalog, "out").await?;
    let spec = job_spec(
        "etl",
        vec![task("agg", &["clean"], Some(out)), task("clean", &["gen"], None), task("gen", &[], None)],
    );
    let first = catalog.upsert_job(&spec).await?;
    assert!(first.created);
    let again = catalog.upsert_job(&spec).await?;
    assert!(!again.created);
    assert_eq!(again.job.id, first.job.id);

    let tasks = catalog.tasks_of_job(first.job.id).await?;
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["gen", "clean", "agg"], "stored in topological order");
    assert_eq!(tasks[1].depends_on, vec![tasks[0].id]);
    assert_eq!(tasks[2].depends_on, vec![tasks[1].id]);
    assert_eq!(tasks[2].output, Some(TaskOutput { dataset: out, mode: CommitMode::Append }));
    assert!(tasks.iter().all(|t| t.phase == TaskPhase::Pending && t.max_attempts == 3));

    let cyclic = job_spec("loop", vec![task("a", &["b"], None), task("b", &["a"], None)]);
    let error = catalog.upsert_job(&cyclic).await.expect_err("cycle rejected");
    assert_eq!(error.error_code(), "invalid_spec");
    assert!(error.to_string().contains("cycle"), "{error}");

    let dangling = job_spec("dangling", vec![task("a", &["ghost"], None)]);
    assert!(catalog.upsert_job(&dangling).await.expect_err("unknown dep").to_string().contains("ghost"));
    assert!(catalog.job_by_name("default", "loop").await.is_err(), "nothing stored for an invalid job");
    Ok(())
}

#[tokio::test]
async fn a_recreated_job_cancels_the_old_incarnation() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let old = job_spec("nightly", vec![task("only", &[], None)]);
    let tasks = job(&catalog, &old).await?;
    let lease = lease(&catalog, id_of(&tasks, "only")).await?;

    let new = JobSpec { uid: "uid-nightly-2".into(), ..old };
    let upsert = catalog.upsert_job(&new).await?;
    assert!(upsert.created);
    assert_eq!(upsert.cancelled_attempts.len(), 1);
    assert_eq!(upsert.cancelled_attempts[0].attempt, lease.attempt);
    let error = catalog.complete(lease.attempt_ref()).await.expect_err("cancelled attempt cannot finish");
    assert_eq!(error.error_code(), "attempt_not_active");
    assert_eq!(catalog.task(lease.task).await?.phase, TaskPhase::Cancelled);
    assert_eq!(catalog.job_by_name("default", "nightly").await?.uid, "uid-nightly-2");
    Ok(())
}

#[tokio::test]
async fn duplicate_wake_ups_never_yield_two_live_attempts() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let tasks = job(&catalog, &job_spec("one", vec![task("t", &[], None)])).await?;
    let task = id_of(&tasks, "t");

    // 16 schedulers race for the same task at once.
    let racers: Vec<_> = (0..16)
        .map(|i| {
            let catalog = catalog.clone();
            tokio::spawn(async move { catalog.lease_task(task, &format!("s{i}"), Duration::from_secs(30)).await })
        })
        .collect();
    let mut granted = Vec::new();
    for racer in racers {
        if let Some(lease) = racer.await?? {
            granted.push(lease);
        }
    }
    assert_eq!(granted.len(), 1, "exactly one lease: {granted:?}");
    // The same wake-up delivered again later is also a no-op.
    assert!(catalog.lease_task(task, "late", Duration::from_secs(30)).await?.is_none());
    let attempts = catalog.attempts_of_task(task).await?;
    assert_eq!(attempts.len(), 1);
    assert_eq!(catalog.task(task).await?.phase, TaskPhase::Leased);
    Ok(())
}

#[tokio::test]
async fn dependencies_gate_leasing_and_fences_strictly_increase() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let out = dataset(&catalog, "out").await?;
    let tasks = job(&catalog, &job_spec("dag", vec![task("a", &[], Some(out)), task("b", &["a"], Some(out))])).await?;
    let (a, b) = (id_of(&tasks, "a"), id_of(&tasks, "b"));

    assert!(catalog.lease_task(b, "t", Duration::from_secs(30)).await?.is_none(), "b waits for a");
    let first = lease(&catalog, a).await?;
    catalog.commit(first.attempt_ref(), &append(out, vec![file("a/1.parquet", 5)])).await?;
    let second = lease(&catalog, b).await?;
    assert!(second.fence > first.fence);
    assert_eq!((first.number, second.number), (1, 1));
    Ok(())
}

#[tokio::test]
async fn confirm_and_heartbeat_extend_only_a_current_lease() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let tasks = job(&catalog, &job_spec("hb", vec![task("t", &[], None)])).await?;
    let task = id_of(&tasks, "t");
    let lease = catalog.lease_task(task, "sched", Duration::from_millis(400)).await?.expect("lease");

    let confirmed = catalog.confirm_attempt(lease.attempt_ref(), Some("pod-t-a1")).await?;
    assert!(confirmed >= lease.expires_at);
    let record = catalog.attempt(lease.attempt).await?;
    assert_eq!((record.state, record.runner.as_deref()), (AttemptState::Running, Some("pod-t-a1")));
    assert_eq!(catalog.task(task).await?.phase, TaskPhase::Running);

    let renewed = catalog.heartbeat(lease.attempt_ref()).await?;
    assert!(renewed > confirmed);

    let wrong_fence = AttemptRef { attempt: lease.attempt, fence: Fence(lease.fence.0 + 1000) };
    assert_eq!(catalog.heartbeat(wrong_fence).await.expect_err("stale").error_code(), "stale_fence");

    tokio::time::sleep(Duration::from_millis(600)).await;
    let error = catalog.heartbeat(lease.attempt_ref()).await.expect_err("expired");
    assert_eq!(error.error_code(), "lease_expired");
    assert!(error.is_fencing());
    Ok(())
}

#[tokio::test]
async fn retryable_failures_back_off_then_exhaust_attempts_and_fail_dependents() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let tasks =
        job(&catalog, &job_spec("flaky", vec![task("a", &[], None), task("b", &["a"], None), task("c", &["b"], None)]))
            .await?;
    let (a, b, c) = (id_of(&tasks, "a"), id_of(&tasks, "b"), id_of(&tasks, "c"));
    let failure = Failure { code: "object_store_unavailable".into(), message: "S3 503".into(), retryable: true };

    let mut early = None;
    for attempt in 1..=3u32 {
        let lease = match early.take() {
            Some(lease) => lease,
            None => loop {
                // the backoff is 20-150 ms in the test config
                if let Some(lease) = catalog.lease_task(a, "t", Duration::from_secs(30)).await? {
                    break lease;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            },
        };
        assert_eq!(lease.number, attempt);
        let before = catalog.now().await?;
        let outcome = catalog.fail_attempt(lease.attempt_ref(), &failure).await?;
        if attempt < 3 {
            let FailOutcome::Retrying { next_retry_at } = outcome else { panic!("expected retry, got {outcome:?}") };
            let delay = (next_retry_at - before).to_std()?;
            let capped = fast_config().task_backoff.capped(attempt - 1);
            assert!(delay <= capped.mul_f64(1.5) + Duration::from_millis(50), "delay {delay:?}");
            assert!(delay >= capped.mul_f64(0.5) - Duration::from_millis(5), "delay {delay:?}");
            // Not leasable before its retry time. A loaded machine may reach the retry time
            // before this call: then the lease must have been taken at or after it (its
            // expiry is the database's `now()` at leasing plus the 30 s asked for), and it is
            // the next attempt.
            if let Some(lease) = catalog.lease_task(a, "t", Duration::from_secs(30)).await? {
                let leased_at = lease.expires_at - chrono::Duration::seconds(30);
                assert!(leased_at >= next_retry_at, "leased at {leased_at}, before its retry time {next_retry_at}");
                early = Some(lease);
            }
        } else {
            assert_eq!(outcome, FailOutcome::Failed { dependents_failed: 2 });
        }
        // a failed attempt cannot fail again
        let again = catalog.fail_attempt(lease.attempt_ref(), &failure).await.expect_err("already failed");
        assert_eq!(again.error_code(), "attempt_not_active");
    }
    let a_record = catalog.task(a).await?;
    assert_eq!((a_record.phase, a_record.attempts), (TaskPhase::Failed, 3));
    assert_eq!(a_record.last_error_code.as_deref(), Some("object_store_unavailable"));
    for dependent in [b, c] {
        let record = catalog.task(dependent).await?;
        assert_eq!((record.phase, record.last_error_code.as_deref()), (TaskPhase::Failed, Some("upstream_failed")));
    }
    let changed = catalog.refresh_jobs().await?;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].1, JobPhase::Failed);
    Ok(())
}

#[tokio::test]
async fn a_permanent_failure_fails_the_task_at_once() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let tasks = job(&catalog, &job_spec("sqlerr", vec![task("t", &[], None)])).await?;
    let lease = lease(&catalog, id_of(&tasks, "t")).await?;
    let failure = Failure {
        code: "sql_error".into(),
        message: "Binder Error: column \"nope\" not found".into(),
        retryable: false,
    };
    assert_eq!(
        catalog.fail_attempt(lease.attempt_ref(), &failure).await?,
        FailOutcome::Failed { dependents_failed: 0 }
    );
    let record = catalog.task(lease.task).await?;
    assert_eq!(record.phase, TaskPhase::Failed);
    assert_eq!(record.attempts, 1);
    assert!(record.last_error_message.as_deref().is_some_and(|m| m.contains("nope")));
    let summary = catalog.job_summary(record.job.expect("job")).await?;
    assert_eq!(summary.failed_tasks, vec!["t".to_owned()]);
    Ok(())
}

#[tokio::test]
async fn expired_leases_are_reaped_and_retried_never_lost() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let tasks = job(&catalog, &job_spec("dead", vec![task("t", &[], None), task("u", &[], None)])).await?;
    let (t, u) = (id_of(&tasks, "t"), id_of(&tasks, "u"));
    let dead = catalog.lease_task(t, "s", Duration::from_millis(200)).await?.expect("lease");
    let alive = catalog.lease_task(u, "s", Duration::from_millis(300)).await?.expect("lease");
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        catalog.heartbeat(alive.attempt_ref()).await?; // u's runner keeps heartbeating
    }
    let reaped = catalog.reap_expired_leases(100).await?;
    assert_eq!(reaped.len(), 1, "{reaped:?}");
    assert_eq!(reaped[0].attempt, dead.attempt);
    assert!(matches!(reaped[0].outcome, FailOutcome::Retrying { .. }));
    assert_eq!(catalog.attempt(dead.attempt).await?.state, AttemptState::Expired);
    assert_eq!(catalog.task(t).await?.phase, TaskPhase::Retrying);
    assert_eq!(catalog.task(u).await?.phase, TaskPhase::Leased);
    assert!(catalog.reap_expired_leases(100).await?.is_empty(), "reaping is idempotent");

    // The dead runner wakes up and tries to act: refused.
    assert!(catalog.complete(dead.attempt_ref()).await.expect_err("reaped").is_fencing());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let retry = lease(&catalog, t).await?;
    assert_eq!(retry.number, 2);
    catalog.complete(retry.attempt_ref()).await?;
    assert_eq!(catalog.task(t).await?.phase, TaskPhase::Succeeded);
    Ok(())
}

#[tokio::test]
async fn schedule_respects_job_and_global_limits_and_fails_doomed_tasks() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let mut capped = job_spec("capped", (0..5).map(|i| task(&format!("t{i}"), &[], None)).collect());
    capped.max_parallel = Some(2);
    job(&catalog, &capped).await?;
    job(&catalog, &job_spec("free", (0..5).map(|i| task(&format!("t{i}"), &[], None)).collect())).await?;

    let mut options = ScheduleOptions::new("scheduler-1");
    options.global_limit = Some(6);
    let first = catalog.schedule(&options).await?;
    assert_eq!(first.leased.len(), 6, "global cap");
    let capped_job = catalog.job_by_name("default", "capped").await?.id;
    let summary = catalog.job_summary(capped_job).await?;
    assert_eq!(summary.counts.get("Leased"), Some(&2), "per-job cap: {summary:?}");
    assert!(catalog.schedule(&options).await?.leased.is_empty(), "at the global cap");

    options.global_limit = None;
    let second = catalog.schedule(&options).await?;
    assert_eq!(second.leased.len(), 1, "the last task of the free job; capped stays at 2");
    assert_eq!(catalog.job_summary(capped_job).await?.counts.get("Leased"), Some(&2));

    // A dependency that failed outside the normal cascade (written directly, as an older
    // version or an operator's manual fix might) still dooms its dependents.
    let tasks = job(&catalog, &job_spec("doomed", vec![task("a", &[], None), task("b", &["a"], None)])).await?;
    sqlx::query("UPDATE tasks SET phase = 'Failed' WHERE id = $1")
        .bind(id_of(&tasks, "a").0)
        .execute(catalog.pool())
        .await?;
    let third = catalog.schedule(&options).await?;
    assert_eq!(third.upstream_failed, vec![id_of(&tasks, "b")]);
    let b = catalog.task(id_of(&tasks, "b")).await?;
    assert_eq!((b.phase, b.last_error_code.as_deref()), (TaskPhase::Failed, Some("upstream_failed")));
    Ok(())
}

#[tokio::test]
async fn cancelling_a_job_retires_its_attempts() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let out = dataset(&catalog, "out").await?;
    let tasks = job(&catalog, &job_spec("cancel-me", vec![task("a", &[], Some(out)), task("b", &["a"], None)])).await?;
    let lease = lease(&catalog, id_of(&tasks, "a")).await?;
    let job_id = catalog.job_by_name("default", "cancel-me").await?.id;
    let cancelled = catalog.delete_job(job_id).await?;
    assert_eq!(cancelled.len(), 1);
    let error =
        catalog.commit(lease.attempt_ref(), &append(out, vec![file("x.parquet", 1)])).await.expect_err("refused");
    assert!(error.is_fencing(), "{error}");
    assert_eq!(catalog.dataset(out).await?.current_snapshot, None, "nothing committed");
    assert!(catalog.tasks_of_job(job_id).await?.iter().all(|t| t.phase == TaskPhase::Cancelled));
    assert_eq!(catalog.job(job_id).await?.phase, JobPhase::Cancelled);
    assert!(catalog.job_by_name("default", "cancel-me").await.is_err(), "deleted");
    Ok(())
}

#[tokio::test]
async fn deleting_a_standalone_task_cancels_it_and_frees_its_name() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let out = dataset(&catalog, "out").await?;
    let first = catalog.upsert_standalone_task("default", "acme", &task("backfill", &[], Some(out))).await?;
    assert_eq!(catalog.upsert_standalone_task("default", "acme", &task("backfill", &[], Some(out))).await?, first);
    let running = lease(&catalog, first).await?;

    let cancelled = catalog.delete_standalone_task("default", "backfill").await?;
    assert_eq!(cancelled.iter().map(|c| (c.task, c.attempt)).collect::<Vec<_>>(), [(first, running.attempt)]);
    let error =
        catalog.commit(running.attempt_ref(), &append(out, vec![file("x.parquet", 1)])).await.expect_err("refused");
    assert!(error.is_fencing(), "{error}");
    assert_eq!(catalog.dataset(out).await?.current_snapshot, None, "nothing committed");
    let gone = catalog.task(first).await?;
    assert_eq!((gone.phase, gone.last_error_code.as_deref()), (TaskPhase::Cancelled, Some("cancelled")));
    assert_eq!(catalog.attempt(running.attempt).await?.state, AttemptState::Cancelled);
    assert!(catalog.delete_standalone_task("default", "backfill").await?.is_empty(), "idempotent");

    // The name is free again: a Task created anew under it is a new task that runs.
    let second = catalog.upsert_standalone_task("default", "acme", &task("backfill", &[], Some(out))).await?;
    assert_ne!(second, first);
    assert_eq!(catalog.task(second).await?.phase, TaskPhase::Pending);
    let rerun = lease(&catalog, second).await?;
    catalog.commit(rerun.attempt_ref(), &append(out, vec![file("y.parquet", 1)])).await?;
    assert_eq!(catalog.task(second).await?.phase, TaskPhase::Succeeded);

    // A finished task keeps its outcome when deleted; it only frees the name.
    assert!(catalog.delete_standalone_task("default", "backfill").await?.is_empty());
    assert_eq!(catalog.task(second).await?.phase, TaskPhase::Succeeded);
    assert_eq!(catalog.task(first).await?.phase, TaskPhase::Cancelled, "history stays");
    Ok(())
}

#[tokio::test]
async fn one_task_of_a_job_is_found_by_its_node_name() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let out = dataset(&catalog, "out").await?;
    let spec = job_spec("nightly", vec![task("extract", &[], Some(out)), task("load", &["extract"], Some(out))]);
    let upsert = catalog.upsert_job(&spec).await?;
    let load = catalog.task_in_job(upsert.job.id, "load").await?.expect("load exists");
    assert_eq!((load.name.as_str(), load.job), ("load", Some(upsert.job.id)));
    assert_eq!(load.depends_on.len(), 1);
    assert_eq!(catalog.task_in_job(upsert.job.id, "missing").await?, None);
    let other = catalog.upsert_job(&job_spec("other", vec![task("load", &[], Some(out))])).await?;
    let other_load = catalog.task_in_job(other.job.id, "load").await?.expect("other load");
    assert_ne!(other_load.id, load.id, "names are scoped to their job");
    Ok(())
}

#[tokio::test]
async fn a_batch_lease_takes_only_runnable_candidates_each_with_its_own_fence() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let spec = job_spec(
        "fan",
        vec![
            task("a", &[], None),
            task("b", &[], None),
            task("c", &[], None),
            task("d", &[], None),
            task("after-a", &["a"], None),
        ],
    );
    let tasks = job(&catalog, &spec).await?;
    let [a, b, c, d, after_a] = ["a", "b", "c", "d", "after-a"].map(|name| id_of(&tasks, name));
    let lease = Duration::from_secs(30);

    // `b` is already leased by someone else; `after-a` waits for `a`; the limit takes the oldest.
    let held = catalog.lease_task(b, "other", lease).await?.expect("b leasable");
    let candidates = [d, c, b, a, after_a];
    let leases = catalog
        .lease_batch(&BatchLease { candidates: &candidates, limit: 2, runner: "sched", lease, confirm: false })
        .await?;
    assert_eq!(leases.iter().map(|l| l.task).collect::<Vec<_>>(), [a, c], "oldest runnable first, up to the limit");
    let mut fences: Vec<Fence> = leases.iter().map(|l| l.fence).collect();
    fences.push(held.fence);
    fences.sort();
    fences.dedup();
    assert_eq!(fences.len(), 3, "every attempt has its own fence");
    for lease in &leases {
        let attempt = catalog.attempt(lease.attempt).await?;
        assert_eq!(
            (attempt.state, attempt.number, attempt.runner.as_deref()),
            (AttemptState::Leased, 1, Some("sched"))
        );
        assert_eq!(catalog.task(lease.task).await?.phase, TaskPhase::Leased);
    }
    // Not folded: the runner confirms as before.
    catalog.confirm_attempt(leases[0].attempt_ref(), Some("pod-a")).await?;

    // Again: only `d` is left runnable among the candidates; nothing is leased twice.
    let again = catalog
        .lease_batch(&BatchLease { candidates: &candidates, limit: 10, runner: "sched", lease, confirm: true })
        .await?;
    assert_eq!(again.iter().map(|l| l.task).collect::<Vec<_>>(), [d]);
    // Folded confirm: the attempt and task start Running, confirmed, run by the leasing runner.
    let attempt = catalog.attempt(again[0].attempt).await?;
    assert_eq!((attempt.state, attempt.runner.as_deref()), (AttemptState::Running, Some("sched")));
    assert!(attempt.heartbeat_at.is_some());
    assert_eq!(catalog.task(d).await?.phase, TaskPhase::Running);
    assert!(catalog.job_summary(catalog.task(d).await?.job.expect("job")).await?.first_run_at.is_some());
    // The folded attempt is fenced like any other: heartbeat and complete pass, a wrong fence is refused.
    catalog.heartbeat(again[0].attempt_ref()).await?;
    let stale = AttemptRef { attempt: again[0].attempt, fence: Fence(again[0].fence.0 - 1) };
    assert_eq!(catalog.heartbeat(stale).await.expect_err("stale").error_code(), "stale_fence");
    catalog.complete(again[0].attempt_ref()).await?;
    assert_eq!(catalog.task(d).await?.phase, TaskPhase::Succeeded);

    // Read-only mode leases nothing; empty candidates or a zero limit lease nothing.
    catalog.complete(leases[0].attempt_ref()).await?; // `a` succeeded: `after-a` is runnable
    catalog.set_read_only(true, Some("test"), "test").await?;
    let none = catalog
        .lease_batch(&BatchLease { candidates: &[after_a], limit: 1, runner: "sched", lease, confirm: true })
        .await?;
    assert!(none.is_empty(), "read-only mode leased {none:?}");
    catalog.set_read_only(false, None, "test").await?;
    for (candidates, limit) in [(&[][..], 5), (&[after_a][..], 0)] {
        let none =
            catalog.lease_batch(&BatchLease { candidates, limit, runner: "sched", lease, confirm: false }).await?;
        assert!(none.is_empty());
    }
    let last = catalog
        .lease_batch(&BatchLease { candidates: &[after_a], limit: 1, runner: "sched", lease, confirm: false })
        .await?;
    assert_eq!(last.iter().map(|l| l.task).collect::<Vec<_>>(), [after_a], "dependency met");
    Ok(())
}

#[tokio::test]
async fn a_folded_attempt_expires_and_retries_like_any_other() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let tasks = job(&catalog, &job_spec("solo", vec![task("only", &[], None)])).await?;
    let only = id_of(&tasks, "only");
    let short = Duration::from_millis(200);
    let leases = catalog
        .lease_batch(&BatchLease { candidates: &[only], limit: 1, runner: "r", lease: short, confirm: true })
        .await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let reaped = catalog.reap_expired_leases(10).await?;
    assert_eq!(reaped.len(), 1, "the folded attempt's lease ran out: {reaped:?}");
    assert_eq!(catalog.attempt(leases[0].attempt).await?.state, AttemptState::Expired);
    let error = catalog.complete(leases[0].attempt_ref()).await.expect_err("expired");
    assert!(error.is_fencing(), "{error}");
    assert_eq!(catalog.task(only).await?.phase, TaskPhase::Retrying);
    Ok(())
}
