//! The operator's pure decision core: plain functions of observed state (resources, catalog
//! records, pods) and a `now` passed in, returning what should exist or be written. No client,
//! no clock, no I/O: the controllers perform what these functions decide, and the tables in
//! the tests pin every rule.
//!
//! This module decides the `Task` resources a Job owns. `status` projects catalog state into
//! what the custom resources' statuses and conditions say; `pods` decides what a finished,
//! failed or vanished worker pod means for its attempt. Everything is re-exported here.

use crate::error::{Error, Result};
use crate::names;
use duckmesh_resources::{Job, Task, TaskSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::ResourceExt;

mod pods;
mod status;

pub use pods::{PodAttempt, PodDecision, decide_pod, decide_pod_deleted, pod_attempt, pod_exit};
pub use status::{
    FAILED, FRESHNESS_SLACK_SECONDS, NotReady, READY, SPEC_CHANGED_AFTER_FINISH, SUCCEEDED, VALID, dataset_not_ready,
    dataset_status, dataset_status_changed, job_not_ready, job_spec_change_refused, job_status, not_ready_conditions,
    spec_change_refused_message, task_event, task_not_ready, task_status,
};

/// The `Task` resources a Job should own: one per node, named `<job>-<task>`, with a
/// controller owner reference to the Job (so deleting the Job deletes them) and the Job's
/// labels. Pure: the same Job always gives the same objects.
pub fn desired_tasks(job: &Job) -> Result<Vec<Task>> {
    let job_name = job.name_any();
    let mut owner = job.controller_owner_ref(&()).ok_or_else(|| Error::MissingField {
        kind: "Job",
        name: job_name.clone(),
        field: "metadata.uid",
    })?;
    // Foreground deletion of the Job waits for its Tasks (and they for their pods).
    owner.block_owner_deletion = Some(true);
    let mut labels = names::common_labels("task");
    labels.insert(names::JOB_LABEL.to_owned(), names::label_value(&job_name));
    Ok(job
        .spec
        .tasks
        .iter()
        .map(|template| Task {
            metadata: ObjectMeta {
                name: Some(names::task_resource_name(&job_name, &template.name)),
                namespace: job.namespace(),
                labels: Some(labels.clone()),
                owner_references: Some(vec![owner.clone()]),
                ..ObjectMeta::default()
            },
            spec: TaskSpec { job: Some(job_name.clone()), tenant: job.spec.tenant.clone(), template: template.clone() },
            status: None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use duckmesh_resources::{JobSpec, TaskTemplate};

    fn template(name: &str) -> TaskTemplate {
        serde_json::from_value(serde_json::json!({"name": name, "sql": "SELECT 1", "output": {"dataset": "out"}}))
            .expect("template")
    }

    fn job(name: &str, tasks: &[&str]) -> Job {
        let mut job = Job::new(
            name,
            JobSpec { tenant: "acme".into(), max_parallel: None, tasks: tasks.iter().map(|t| template(t)).collect() },
        );
        job.metadata.namespace = Some("team".into());
        job.metadata.uid = Some("uid-1".into());
        job.metadata.generation = Some(3);
        job
    }

    #[test]
    fn desired_tasks_are_named_owned_and_labelled() {
        let long = "t".repeat(60);
        let job = job("nightly", &["extract", "load", &long]);
        let tasks = desired_tasks(&job).expect("tasks");
        let names: Vec<String> = tasks.iter().map(|t| t.name_any()).collect();
        assert_eq!(names[..2], ["nightly-extract".to_owned(), "nightly-load".to_owned()]);
        assert!(names[2].len() <= 63 && names[2].starts_with("nightly-ttt"), "{}", names[2]);
        for task in &tasks {
            assert_eq!(task.namespace().as_deref(), Some("team"));
            let owners = task.owner_references();
            assert_eq!(owners.len(), 1);
            assert_eq!(
                (owners[0].kind.as_str(), owners[0].name.as_str(), owners[0].uid.as_str()),
                ("Job", "nightly", "uid-1")
            );
            assert_eq!((owners[0].controller, owners[0].block_owner_deletion), (Some(true), Some(true)));
            assert_eq!(task.labels().get(names::JOB_LABEL).map(String::as_str), Some("nightly"));
            assert_eq!(task.labels().get(names::MANAGED_BY).map(String::as_str), Some(names::MANAGER));
            assert_eq!(task.spec.job.as_deref(), Some("nightly"));
            assert_eq!(task.spec.tenant, "acme");
        }
        assert_eq!(tasks[1].spec.template.name, "load");
        // Deterministic.
        let json = |tasks: &[Task]| serde_json::to_value(tasks).expect("serialises");
        assert_eq!(json(&desired_tasks(&job).expect("again")), json(&tasks));
        // A Job the API server has not stored (no uid) cannot own anything.
        let mut unsaved = job.clone();
        unsaved.metadata.uid = None;
        assert_eq!(desired_tasks(&unsaved).map(|_| ()).map_err(|e| e.error_code()), Err("missing_field"));
    }
}
