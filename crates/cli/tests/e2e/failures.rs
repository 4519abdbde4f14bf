//! Failures users would hit: the operator killed while tasks are leased, a worker pod deleted
//! under a running attempt, a Job deleted mid-run.

use crate::harness::{Env, JOB_TIMEOUT, chain_job, live_attempts, running_worker, tasks_of};
use duckmesh_resources::Dataset;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use nix::sys::signal::Signal;
use std::time::Duration;

#[tokio::test]
async fn a_sigkilled_operator_restarts_and_every_task_commits_exactly_once() {
    let mut env = Env::new("operator-kill").await;
    env.start_operator("op-a");
    env.apply_yaml(&chain_job("chain", 3));
    running_worker(&env, "chain", JOB_TIMEOUT).await;
    assert!(live_attempts(&env).await > 0, "no task was leased when the operator was killed");
    env.signal_operator("op-a", Signal::SIGKILL);
    env.wait_operator_exit("op-a", Duration::from_secs(10)).await.expect("killed");
    // The replacement (a restarted pod keeps its name) finds the leased work in the catalog.
    env.start_operator("op-a");
    env.wait_job("chain", "Succeeded", JOB_TIMEOUT).await;
    env.assert_each_task_committed_once(3).await;
}

#[tokio::test]
async fn a_deleted_worker_pod_ends_its_attempt_and_the_task_retries_to_success() {
    let mut env = Env::new("pod-delete").await;
    env.start_operator("op-a");
    env.apply_yaml(&chain_job("retry", 2));
    let pod = running_worker(&env, "retry", JOB_TIMEOUT).await;
    env.kubectl_ok(&["delete", "pod", &pod, "--wait=false"]);
    env.wait_job("retry", "Succeeded", JOB_TIMEOUT).await;
    env.assert_each_task_committed_once(2).await;
    // The deleted pod's attempt ended without a commit, and the task ran again.
    let pool = sqlx::PgPool::connect(env.db.url()).await.expect("pool");
    let (attempts,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE t.name = 't1'")
            .fetch_one(&pool)
            .await
            .expect("attempts");
    assert!(attempts >= 2, "t1 ran {attempts} time(s); its pod {pod} was deleted mid-run\n{}", env.diagnostics());
    let task = tasks_of(&env, "retry").await.into_iter().find(|t| t.spec.template.name == "t1").expect("t1");
    assert!(task.status.and_then(|s| s.attempt).unwrap_or(0) >= 2, "the Task resource shows the retry");
}

#[tokio::test]
async fn deleting_a_job_cancels_its_tasks_removes_its_pods_and_keeps_committed_outputs() {
    let mut env = Env::new("job-delete").await;
    env.start_operator("op-a");
    env.apply_yaml(&chain_job("doomed", 3));
    // Wait for t1's commit and t2's worker to be running.
    env.wait_for::<Dataset>("doomed-t1", "t1's commit", JOB_TIMEOUT, |d: Option<&Dataset>| {
        d.and_then(crate::harness::snapshot_of).is_some()
    })
    .await;
    running_worker(&env, "doomed", JOB_TIMEOUT).await;
    env.kubectl_ok(&["delete", "job.duckmesh.io/doomed", "--timeout=120s"]);

    // The finalizer ran (the Job is gone once kubectl returns); the garbage collector then
    // removes the owned Task resources and their pods.
    let started = std::time::Instant::now();
    loop {
        let tasks = tasks_of(&env, "doomed").await;
        let pods = env.api::<Pod>().list(&ListParams::default().labels("duckmesh.io/job=doomed")).await.expect("pods");
        if tasks.is_empty() && pods.items.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} Task resource(s) and {} pod(s) remain a minute after the Job was deleted\n{}",
            tasks.len(),
            pods.items.len(),
            env.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The catalog: t1 committed and kept; the rest cancelled.
    let commits = env.task_commits().await;
    assert_eq!(commits.get("t1").map(|c| (c.0.as_str(), c.1)), Some(("Succeeded", 1)), "{commits:?}");
    for name in ["t2", "t3"] {
        assert_eq!(commits.get(name).map(|c| (c.0.as_str(), c.1)), Some(("Cancelled", 0)), "{commits:?}");
    }
    let kept = env.api::<Dataset>().get("doomed-t1").await.expect("dataset kept");
    assert!(kept.status.and_then(|s| s.rows).unwrap_or(0) > 0, "the committed output is kept");
}
