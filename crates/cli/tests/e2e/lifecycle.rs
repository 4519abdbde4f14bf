//! A Job's life after it ends, as users see it in the API: a failed Job's Tasks show their
//! final phase with a Warning event, a timed-out task is recorded as a timeout (the worker's own
//! deadline fires before the pod's), and an edit to a finished Job is refused visibly.

use crate::harness::{Env, JOB_TIMEOUT, job_condition, tasks_of};
use duckmesh_resources::Job;
use std::time::{Duration, Instant};

const FAILING: &str = r#"apiVersion: duckmesh.io/v1alpha1
kind: Dataset
metadata: {name: never}
spec: {}
---
apiVersion: duckmesh.io/v1alpha1
kind: Dataset
metadata: {name: slow}
spec: {}
---
apiVersion: duckmesh.io/v1alpha1
kind: Job
metadata: {name: doomed}
spec:
  tasks:
    - {name: broken, maxAttempts: 1, output: {dataset: never}, sql: "SELECT no_such_column FROM range(3)"}
    - {name: after, dependsOn: [broken], output: {dataset: never}, sql: "SELECT 1 AS x"}
    - {name: sleepy, maxAttempts: 1, timeoutSeconds: 2, output: {dataset: slow},
       sql: "SELECT count(*) AS n FROM range(100000000000) a(i) WHERE hash(i) = 42"}
"#;

#[tokio::test]
async fn a_failed_job_shows_final_task_phases_timeouts_and_refuses_edits() {
    let mut env = Env::new("failed-job").await;
    env.start_operator("op-a");
    env.apply_yaml(FAILING);
    env.wait_job("doomed", "Failed", JOB_TIMEOUT).await;

    // Within seconds every Task shows where it ended, not a stale Leased or Pending.
    let started = Instant::now();
    let tasks = loop {
        let tasks = tasks_of(&env, "doomed").await;
        let phases: Vec<Option<String>> =
            tasks.iter().map(|t| t.status.as_ref().and_then(|s| s.phase.clone())).collect();
        let done = phases.iter().all(|p| matches!(p.as_deref(), Some("Failed" | "Cancelled" | "Succeeded")));
        if tasks.len() == 3 && done {
            break tasks;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "Task phases lag the Job: {phases:?}\n{}",
            env.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let by_name = |name: &str| tasks.iter().find(|t| t.spec.template.name == name).and_then(|t| t.status.clone());
    let broken = by_name("broken").expect("broken");
    assert_eq!(broken.phase.as_deref(), Some("Failed"));
    assert_eq!(broken.last_error_code.as_deref(), Some("sql_error"), "{broken:?}");
    // The worker's own deadline fires first: a timeout, not a stopped pod.
    let sleepy = by_name("sleepy").expect("sleepy");
    assert_eq!(
        (sleepy.phase.as_deref(), sleepy.last_error_code.as_deref()),
        (Some("Failed"), Some("task_timeout")),
        "{sleepy:?}"
    );

    let started = Instant::now();
    loop {
        let events = env.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=doomed-broken,type=Warning",
            "-o",
            "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
        ]);
        if events.lines().any(|r| r == "Failed") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no Warning Failed event on the Task:\n{events}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Editing the finished Job's SQL: refused visibly, and the Task keeps the SQL that ran.
    env.apply_yaml(&FAILING.replace("SELECT no_such_column FROM range(3)", "SELECT 42 AS fixed"));
    let job = env
        .wait_for::<Job>("doomed", "the edit refused", Duration::from_secs(30), job_condition("Ready", "False"))
        .await;
    let ready = job.status.clone().expect("status").conditions.into_iter().find(|c| c.type_ == "Ready").expect("Ready");
    assert_eq!(ready.reason, "SpecChangedAfterFinish", "{ready:?}");
    assert!(crate::harness::has(&job.status.expect("status").conditions, "Failed", "True"), "the outcome is kept");
    let task = tasks_of(&env, "doomed").await.into_iter().find(|t| t.spec.template.name == "broken").expect("task");
    assert_eq!(task.spec.template.sql.as_deref(), Some("SELECT no_such_column FROM range(3)"));
}
