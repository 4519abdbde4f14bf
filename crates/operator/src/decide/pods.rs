//! Pod-exit decisions: which attempt a worker pod runs, how its runner ended (exit code,
//! kill, deadline, eviction, a container that can never start), and what the operator should
//! do about a pod that exists or has disappeared.

use crate::names;
use duckmesh_core::{AttemptId, AttemptState, Fence, TaskId};
use duckmesh_scheduler::{RunnerEnded, RunnerExit};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

/// The attempt a worker pod runs, read from the annotations the pod builder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodAttempt {
    /// The task.
    pub task: TaskId,
    /// The attempt.
    pub attempt: AttemptId,
    /// Its fence.
    pub fence: Fence,
}

/// Reads a worker pod's attempt identity; `None` for a pod without (valid) annotations.
pub fn pod_attempt(pod: &Pod) -> Option<PodAttempt> {
    let annotations = pod.metadata.annotations.as_ref()?;
    let number = |key: &str| annotations.get(key)?.trim().parse::<i64>().ok();
    Some(PodAttempt {
        task: TaskId(number(names::TASK_ID_ANNOTATION)?),
        attempt: AttemptId(number(names::ATTEMPT_ID_ANNOTATION)?),
        fence: Fence(number(names::FENCE_ANNOTATION)?),
    })
}

/// Container waiting reasons that never resolve on their own: the worker will never start.
const HOPELESS_WAITING: &[&str] =
    &["CreateContainerConfigError", "InvalidImageName", "ErrImageNeverPull", "CreateContainerError"];

/// How a pod's runner ended, if it did: the worker container's exit code, an `OOMKilled` or
/// signal kill, the pod's `activeDeadlineSeconds` (`DeadlineExceeded`), an eviction, or a
/// container that can never start. `None` while it runs (or is still being pulled: a pull that
/// never succeeds ends with the lease).
pub fn pod_exit(pod: &Pod) -> Option<RunnerExit> {
    let status = pod.status.as_ref()?;
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let reason = status.reason.as_deref().unwrap_or_default();
    if phase == "Failed" && reason == "DeadlineExceeded" {
        // The task's own timeout, when the pod names it (its deadline adds a margin).
        let timeout = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(names::TIMEOUT_ANNOTATION))
            .and_then(|t| t.trim().parse::<u64>().ok());
        let deadline = pod.spec.as_ref().and_then(|s| s.active_deadline_seconds).unwrap_or_default();
        let seconds = timeout.unwrap_or_else(|| u64::try_from(deadline).unwrap_or_default());
        return Some(RunnerExit::TimedOut { seconds });
    }
    let container = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == crate::pod::WORKER_CONTAINER)
        .or_else(|| status.container_statuses.iter().flatten().next());
    let state = container.and_then(|c| c.state.as_ref());
    if let Some(terminated) = state.and_then(|s| s.terminated.as_ref()) {
        let why = terminated.reason.as_deref().unwrap_or_default();
        return Some(if why == "OOMKilled" {
            RunnerExit::Killed { reason: "OOMKilled".to_owned() }
        } else if terminated.exit_code > 128 {
            RunnerExit::Killed {
                reason: format!("signal {} (exit code {})", terminated.exit_code - 128, terminated.exit_code),
            }
        } else {
            RunnerExit::Exited(terminated.exit_code)
        });
    }
    if let Some(waiting) = state.and_then(|s| s.waiting.as_ref())
        && let Some(why) = waiting.reason.as_deref()
        && HOPELESS_WAITING.contains(&why)
    {
        let detail = waiting.message.as_deref().unwrap_or_default();
        return Some(RunnerExit::StartFailed {
            reason: format!("{why}: {detail}").trim_end_matches([':', ' ']).to_owned(),
        });
    }
    match phase {
        "Succeeded" => Some(RunnerExit::Exited(0)),
        "Failed" => Some(RunnerExit::Killed {
            reason: if reason.is_empty() { "pod failed".to_owned() } else { reason.to_owned() },
        }),
        _ => None,
    }
}

/// What to do about one worker pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodDecision {
    /// Tell the scheduler how the runner ended (then mark the pod reported).
    Report(RunnerEnded),
    /// The pod still runs but its attempt is no longer live in the catalog (expired,
    /// superseded, cancelled, unknown): delete it. The worker would fence itself out anyway;
    /// deleting frees the node sooner.
    DeleteStale,
    /// Nothing to do.
    Keep,
}

/// Decides about a worker pod that exists. `attempt_state` is the catalog's state of the
/// pod's attempt (`None` when the catalog does not know it); it is only consulted for pods
/// that still run.
pub fn decide_pod(pod: &Pod, attempt_state: Option<AttemptState>) -> PodDecision {
    let Some(identity) = pod_attempt(pod) else { return PodDecision::Keep };
    if let Some(exit) = pod_exit(pod) {
        let reported = pod.annotations().contains_key(names::REPORTED_ANNOTATION);
        return if reported { PodDecision::Keep } else { PodDecision::Report(ended(identity, exit)) };
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return PodDecision::Keep; // already going; its deletion is reported when it is gone
    }
    match attempt_state {
        Some(state) if state.is_live() => PodDecision::Keep,
        _ => PodDecision::DeleteStale,
    }
}

/// What a pod's disappearance means: its exit if it had one (and it was not reported yet),
/// otherwise the runner was lost.
pub fn decide_pod_deleted(pod: &Pod) -> Option<RunnerEnded> {
    let identity = pod_attempt(pod)?;
    match pod_exit(pod) {
        Some(_) if pod.annotations().contains_key(names::REPORTED_ANNOTATION) => None,
        Some(exit) => Some(ended(identity, exit)),
        None => Some(ended(
            identity,
            RunnerExit::Lost { reason: "the worker pod was deleted before it finished".to_owned() },
        )),
    }
}

fn ended(identity: PodAttempt, exit: RunnerExit) -> RunnerEnded {
    RunnerEnded { task: identity.task, attempt: identity.attempt, fence: identity.fence, exit }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::HashMap;

    fn pod(phase: &str, reason: Option<&str>, container: Option<ContainerState>) -> Pod {
        let annotations = HashMap::from([
            (names::TASK_ID_ANNOTATION, "7"),
            (names::ATTEMPT_ID_ANNOTATION, "102"),
            (names::FENCE_ANNOTATION, "2"),
        ]);
        Pod {
            metadata: ObjectMeta {
                name: Some("team-load-a2".into()),
                annotations: Some(annotations.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec { active_deadline_seconds: Some(600), ..PodSpec::default() }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                reason: reason.map(Into::into),
                container_statuses: container.map(|state| {
                    vec![ContainerStatus { name: "worker".into(), state: Some(state), ..ContainerStatus::default() }]
                }),
                ..PodStatus::default()
            }),
        }
    }

    fn terminated(code: i32, reason: &str) -> Option<ContainerState> {
        Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(reason.into()),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn waiting(reason: &str) -> Option<ContainerState> {
        Some(ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some(reason.into()), message: Some("detail".into()) }),
            ..Default::default()
        })
    }

    fn timed_out_with_annotation() -> Pod {
        let mut pod = pod("Failed", Some("DeadlineExceeded"), None);
        pod.annotations_mut().insert(names::TIMEOUT_ANNOTATION.into(), "540".into());
        pod
    }

    #[test]
    fn pod_exit_table() {
        let cases: Vec<(Pod, Option<RunnerExit>)> = vec![
            (pod("Pending", None, None), None),
            (pod("Running", None, Some(ContainerState::default())), None),
            (pod("Pending", None, waiting("ContainerCreating")), None),
            (pod("Pending", None, waiting("ImagePullBackOff")), None),
            (
                pod("Pending", None, waiting("CreateContainerConfigError")),
                Some(RunnerExit::StartFailed { reason: "CreateContainerConfigError: detail".into() }),
            ),
            (pod("Succeeded", None, terminated(0, "Completed")), Some(RunnerExit::Exited(0))),
            (pod("Failed", None, terminated(1, "Error")), Some(RunnerExit::Exited(1))),
            (pod("Failed", None, terminated(11, "Error")), Some(RunnerExit::Exited(11))),
            (
                pod("Failed", None, terminated(137, "OOMKilled")),
                Some(RunnerExit::Killed { reason: "OOMKilled".into() }),
            ),
            (
                pod("Failed", None, terminated(137, "Error")),
                Some(RunnerExit::Killed { reason: "signal 9 (exit code 137)".into() }),
            ),
            (pod("Failed", Some("DeadlineExceeded"), None), Some(RunnerExit::TimedOut { seconds: 600 })),
            (timed_out_with_annotation(), Some(RunnerExit::TimedOut { seconds: 540 })),
            (pod("Failed", Some("Evicted"), None), Some(RunnerExit::Killed { reason: "Evicted".into() })),
            (pod("Succeeded", None, None), Some(RunnerExit::Exited(0))),
        ];
        for (pod, expected) in cases {
            assert_eq!(pod_exit(&pod), expected, "{:?}", pod.status);
        }
    }

    #[test]
    fn pod_decision_table() {
        let ended =
            |exit| PodDecision::Report(RunnerEnded { task: TaskId(7), attempt: AttemptId(102), fence: Fence(2), exit });
        let mut reported = pod("Failed", None, terminated(1, "Error"));
        reported.annotations_mut().insert(names::REPORTED_ANNOTATION.into(), "true".into());
        let mut deleting = pod("Running", None, None);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let mut anonymous = pod("Running", None, None);
        anonymous.metadata.annotations = None;
        let cases: Vec<(Pod, Option<AttemptState>, PodDecision)> = vec![
            (pod("Running", None, None), Some(AttemptState::Running), PodDecision::Keep),
            (pod("Pending", None, None), Some(AttemptState::Leased), PodDecision::Keep),
            (pod("Running", None, None), Some(AttemptState::Expired), PodDecision::DeleteStale),
            (pod("Running", None, None), Some(AttemptState::Cancelled), PodDecision::DeleteStale),
            (pod("Running", None, None), None, PodDecision::DeleteStale),
            (deleting, Some(AttemptState::Cancelled), PodDecision::Keep),
            (pod("Failed", None, terminated(1, "Error")), Some(AttemptState::Running), ended(RunnerExit::Exited(1))),
            (
                pod("Failed", None, terminated(137, "OOMKilled")),
                Some(AttemptState::Running),
                ended(RunnerExit::Killed { reason: "OOMKilled".into() }),
            ),
            (reported, Some(AttemptState::Failed), PodDecision::Keep),
            (anonymous, None, PodDecision::Keep),
        ];
        for (pod, state, expected) in cases {
            assert_eq!(decide_pod(&pod, state), expected, "{:?} {state:?}", pod.status);
        }
    }

    #[test]
    fn deleted_pods_are_lost_runners_unless_they_ended() {
        let lost = decide_pod_deleted(&pod("Running", None, None)).expect("reported");
        assert!(matches!(lost.exit, RunnerExit::Lost { .. }), "{lost:?}");
        assert_eq!((lost.task, lost.attempt, lost.fence), (TaskId(7), AttemptId(102), Fence(2)));
        let exited = decide_pod_deleted(&pod("Failed", None, terminated(1, "Error"))).expect("reported");
        assert_eq!(exited.exit, RunnerExit::Exited(1));
        let mut reported = pod("Failed", None, terminated(1, "Error"));
        reported.annotations_mut().insert(names::REPORTED_ANNOTATION.into(), "true".into());
        assert_eq!(decide_pod_deleted(&reported), None);
    }
}
