//! Deterministic names and labels of the objects the operator owns. Names are pure functions
//! of their parents' names, so every reconcile (and every operator replica) computes the same
//! name, and creating an object twice is caught by the API server as `AlreadyExists`.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Longest DNS label, and so the longest name we give an owned object (pod names become host
/// names, which are DNS labels).
pub const MAX_NAME: usize = 63;

/// Label: the operator manages the object.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY`].
pub const MANAGER: &str = "duckmesh-operator";
/// Label: the application.
pub const APP_NAME: &str = "app.kubernetes.io/name";
/// Label: which part of DuckMesh the object is (`task`, `worker`).
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// Label: the Job the object belongs to.
pub const JOB_LABEL: &str = "duckmesh.io/job";
/// Label: the Task resource a worker pod runs.
pub const TASK_LABEL: &str = "duckmesh.io/task";
/// Label: the attempt number a worker pod runs.
pub const ATTEMPT_LABEL: &str = "duckmesh.io/attempt";
/// Annotation: catalog id of the task a worker pod runs.
pub const TASK_ID_ANNOTATION: &str = "duckmesh.io/task-id";
/// Annotation: catalog id of the attempt a worker pod runs.
pub const ATTEMPT_ID_ANNOTATION: &str = "duckmesh.io/attempt-id";
/// Annotation: fencing token of the attempt a worker pod runs.
pub const FENCE_ANNOTATION: &str = "duckmesh.io/fence";
/// Annotation: the task's timeout in seconds (the pod's `activeDeadlineSeconds` is longer).
pub const TIMEOUT_ANNOTATION: &str = "duckmesh.io/timeout-seconds";
/// Annotation: the pod's end was reported to the scheduler (it is not reported again).
pub const REPORTED_ANNOTATION: &str = "duckmesh.io/reported";

/// The label selector of every worker pod the operator created.
pub const WORKER_SELECTOR: &str = "app.kubernetes.io/managed-by=duckmesh-operator,app.kubernetes.io/component=worker";

/// `name` made DNS-label safe (lower-case letters, digits, `-`) and at most `max` bytes long.
/// Names that fit are kept as they are (apart from replaced characters); longer ones are cut
/// and end in 8 hex digits of the SHA-256 of the whole original name, so two long names that
/// share a prefix still differ.
pub fn dns_label(name: &str, max: usize) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' }
        })
        .collect();
    let trimmed = cleaned.trim_matches('-');
    if trimmed.len() <= max && trimmed == cleaned && !trimmed.is_empty() {
        return cleaned;
    }
    let hash = hex::encode(Sha256::digest(name.as_bytes()));
    let hash = &hash[..8];
    if trimmed.len() <= max && !trimmed.is_empty() {
        return trimmed.to_owned();
    }
    let keep = max.saturating_sub(hash.len() + 1);
    // `cleaned` is ASCII, so any byte index is a character boundary.
    let head = trimmed.get(..keep.min(trimmed.len())).unwrap_or_default().trim_end_matches('-');
    if head.is_empty() { format!("x-{hash}") } else { format!("{head}-{hash}") }
}

/// The name of the `Task` resource for node `task` of Job `job`: `<job>-<task>`, shortened
/// with a hash when longer than 63 characters.
pub fn task_resource_name(job: &str, task: &str) -> String {
    dns_label(&format!("{job}-{task}"), MAX_NAME)
}

/// The name of the worker pod of attempt `number` of the Task resource `task_resource`:
/// `<task_resource>-a<number>`. The suffix is always kept whole; the base is shortened.
pub fn pod_name(task_resource: &str, number: u32) -> String {
    let suffix = format!("-a{number}");
    let base = dns_label(task_resource, MAX_NAME - suffix.len());
    format!("{base}{suffix}")
}

/// The labels every object the operator creates carries.
pub fn common_labels(component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (APP_NAME.to_owned(), "duckmesh".to_owned()),
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (COMPONENT.to_owned(), component.to_owned()),
    ])
}

/// A label value: at most 63 characters of `[A-Za-z0-9._-]`, starting and ending
/// alphanumeric (values that break the rule are made safe the same way as names).
pub fn label_value(value: &str) -> String {
    let valid = value.len() <= MAX_NAME
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && value.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric());
    if valid { value.to_owned() } else { dns_label(value, MAX_NAME) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns_label(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= MAX_NAME
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
    }

    #[test]
    fn names_table() {
        let long_job = "j".repeat(40);
        let long_task = "t".repeat(40);
        let cases: Vec<(String, String)> = vec![
            (task_resource_name("nightly", "clean"), "nightly-clean".into()),
            (pod_name("nightly-clean", 1), "nightly-clean-a1".into()),
            (pod_name("nightly-clean", 100), "nightly-clean-a100".into()),
            (dns_label("My.Task_1", 63), "my-task-1".into()),
            (dns_label("-edge-", 63), "edge".into()),
        ];
        for (got, expected) in cases {
            assert_eq!(got, expected);
        }
        let long = task_resource_name(&long_job, &long_task);
        assert_eq!(long.len(), MAX_NAME);
        assert!(long.starts_with("jjjj"), "{long}");
        assert!(is_dns_label(&long), "{long}");
        // Deterministic, and distinct for names that share the kept prefix.
        assert_eq!(long, task_resource_name(&long_job, &long_task));
        assert_ne!(long, task_resource_name(&long_job, &format!("{long_task}x")));
        let pod = pod_name(&long, 7);
        assert!(pod.ends_with("-a7") && pod.len() <= MAX_NAME && is_dns_label(&pod), "{pod}");
        assert_ne!(pod_name(&long, 7), pod_name(&long, 8));
    }

    #[test]
    fn degenerate_names_stay_valid() {
        for name in ["", "---", "ÄÖÜ", &"a.".repeat(200)] {
            let label = dns_label(name, MAX_NAME);
            assert!(is_dns_label(&label), "{name:?} -> {label:?}");
        }
    }

    #[test]
    fn label_values_are_kept_or_made_safe() {
        assert_eq!(label_value("nightly"), "nightly");
        assert_eq!(label_value("a_b.c"), "a_b.c");
        let long = "x".repeat(80);
        assert!(label_value(&long).len() <= MAX_NAME);
        assert_eq!(label_value("-bad-"), "bad");
    }
}
