//! What the node knows about a pod's containers, and the pure function that turns it into the
//! `PodStatus` the kubelet would report: phase (the kubelet's `getPhase`), conditions, container
//! statuses.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP,
    PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// How a container run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    /// The exit code (128 + signal when killed).
    pub exit_code: i32,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `StartError`.
    pub reason: String,
    /// The end of the log on failure.
    pub message: Option<String>,
    /// When it started.
    pub started_at: Option<Time>,
    /// When it ended.
    pub finished_at: Time,
    /// `testnode://<pid>`.
    pub container_id: Option<String>,
}

/// A container's current state.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// Not running (yet, or again).
    Waiting {
        /// `ContainerCreating`, `PodInitializing`, `CrashLoopBackOff`, `CreateContainerConfigError`, …
        reason: String,
        /// Why.
        message: Option<String>,
    },
    /// Running as a process.
    Running {
        /// When it started.
        started_at: Time,
        /// Its pid.
        pid: u32,
    },
    /// Ended (and not restarting).
    Terminated(Terminated),
}

/// One container as the node runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRun {
    /// The container's name.
    pub name: String,
    /// The image reference of the spec.
    pub image: String,
    /// `testnode://<executable>` once resolved.
    pub image_id: String,
    /// The state now.
    pub state: RunState,
    /// The previous run's end.
    pub last_state: Option<Terminated>,
    /// How often it was restarted.
    pub restart_count: i32,
    /// Readiness (probe or running).
    pub ready: bool,
    /// Whether the startup probe (if any) passed.
    pub started: bool,
}

impl ContainerRun {
    /// A container not started yet.
    pub fn new(name: &str, image: &str, reason: &str) -> Self {
        Self {
            name: name.to_owned(),
            image: image.to_owned(),
            image_id: String::new(),
            state: RunState::Waiting { reason: reason.to_owned(), message: None },
            last_state: None,
            restart_count: 0,
            ready: false,
            started: false,
        }
    }

    fn succeeded(&self) -> bool {
        matches!(&self.state, RunState::Terminated(t) if t.exit_code == 0)
    }

    fn terminated(&self) -> bool {
        matches!(&self.state, RunState::Terminated(_))
    }
}

/// Everything the node reports about one pod.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodState {
    /// When the node accepted the pod.
    pub start_time: Option<Time>,
    /// Volumes are ready (`PodReadyToStartContainers`).
    pub sandbox_ready: bool,
    /// The init containers, in order.
    pub init: Vec<ContainerRun>,
    /// The containers.
    pub containers: Vec<ContainerRun>,
    /// A pod-level failure (deadline, unknown image, impossible mount): phase Failed.
    pub failure: Option<(String, String)>,
    /// The pod is being stopped (deletion): once every container ended, the phase is terminal
    /// whatever the restart policy.
    pub terminating: bool,
    /// The pod's own loopback address (`status.podIP`); the node's when unset.
    pub pod_ip: Option<String>,
}

/// The pod phase, as the kubelet's `getPhase` computes it.
pub fn phase(state: &PodState, restart_policy: &str) -> &'static str {
    if state.failure.is_some() {
        return "Failed";
    }
    let mut initializing = false;
    for init in &state.init {
        if init.succeeded() {
            continue;
        }
        if init.terminated() && restart_policy == "Never" {
            return "Failed";
        }
        if init.terminated() && state.terminating {
            return "Failed";
        }
        initializing = true;
    }
    if initializing {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for container in &state.containers {
        match &container.state {
            RunState::Running { .. } => running += 1,
            RunState::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            RunState::Waiting { .. } if container.last_state.is_some() => stopped += 1,
            RunState::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped == 0 {
        return "Pending";
    }
    if state.terminating {
        return if stopped == succeeded && state.containers.iter().all(ContainerRun::terminated) {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    if restart_policy == "Always" {
        return "Running";
    }
    if stopped == succeeded {
        return "Succeeded";
    }
    if restart_policy == "Never" {
        return "Failed";
    }
    "Running"
}

fn to_terminated(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.clone(),
        finished_at: Some(t.finished_at.clone()),
        container_id: t.container_id.clone(),
    }
}

fn container_status(run: &ContainerRun) -> ContainerStatus {
    let (state, container_id) = match &run.state {
        RunState::Waiting { reason, message } => (
            ContainerState {
                waiting: Some(ContainerStateWaiting { reason: Some(reason.clone()), message: message.clone() }),
                ..ContainerState::default()
            },
            run.last_state.as_ref().and_then(|t| t.container_id.clone()),
        ),
        RunState::Running { started_at, pid } => (
            ContainerState {
                running: Some(ContainerStateRunning { started_at: Some(started_at.clone()) }),
                ..ContainerState::default()
            },
            Some(format!("testnode://{pid}")),
        ),
        RunState::Terminated(t) => {
            (ContainerState { terminated: Some(to_terminated(t)), ..ContainerState::default() }, t.container_id.clone())
        }
    };
    let running = matches!(run.state, RunState::Running { .. });
    ContainerStatus {
        name: run.name.clone(),
        image: run.image.clone(),
        image_id: run.image_id.clone(),
        container_id,
        state: Some(state),
        last_state: Some(
            run.last_state
                .as_ref()
                .map(|t| ContainerState { terminated: Some(to_terminated(t)), ..ContainerState::default() })
                .unwrap_or_default(),
        ),
        ready: run.ready && running,
        restart_count: run.restart_count,
        started: Some(running && run.started),
        ..ContainerStatus::default()
    }
}

fn condition(type_: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> PodCondition {
    PodCondition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: if ok { None } else { reason.map(str::to_owned) },
        message: if ok { None } else { message },
        ..PodCondition::default()
    }
}

/// The status to report, given what the node knows, the pod's restart policy, the conditions
/// the pod has now (kept when not the node's, and for their transition times) and `now`.
pub fn pod_status(state: &PodState, restart_policy: &str, existing: &[PodCondition], now: &Time) -> PodStatus {
    let phase = phase(state, restart_policy);
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let unfinished_init: Vec<&str> = state.init.iter().filter(|c| !c.succeeded()).map(|c| c.name.as_str()).collect();
    let unready: Vec<&str> = state
        .containers
        .iter()
        .filter(|c| !(c.ready && matches!(c.state, RunState::Running { .. })))
        .map(|c| c.name.as_str())
        .collect();
    let list = |names: &[&str]| format!("[{}]", names.join(" "));
    let (ready_reason, ready_message) = if terminal {
        ("PodCompleted", None)
    } else {
        ("ContainersNotReady", Some(format!("containers with unready status: {}", list(&unready))))
    };
    let initialized = if terminal && unfinished_init.is_empty() {
        condition("Initialized", true, None, None)
    } else if terminal {
        condition("Initialized", false, Some("PodCompleted"), None)
    } else {
        condition(
            "Initialized",
            unfinished_init.is_empty(),
            Some("ContainersNotInitialized"),
            Some(format!("containers with incomplete status: {}", list(&unfinished_init))),
        )
    };
    let ours = vec![
        condition("PodReadyToStartContainers", state.sandbox_ready && !terminal, None, None),
        initialized,
        condition("Ready", unready.is_empty() && !terminal, Some(ready_reason), ready_message.clone()),
        condition("ContainersReady", unready.is_empty() && !terminal, Some(ready_reason), ready_message),
    ];
    let mut conditions: Vec<PodCondition> =
        existing.iter().filter(|c| !ours.iter().any(|o| o.type_ == c.type_)).cloned().collect();
    for mut mine in ours {
        let previous = existing.iter().find(|c| c.type_ == mine.type_);
        mine.last_transition_time = match previous {
            Some(previous) if previous.status == mine.status => previous.last_transition_time.clone(),
            _ => Some(now.clone()),
        };
        mine.last_probe_time = None;
        conditions.push(mine);
    }
    let pod_ip = state.pod_ip.clone().unwrap_or_else(|| super::NODE_IP.to_owned());
    let (reason, message) = match &state.failure {
        Some((reason, message)) => (Some(reason.clone()), Some(message.clone())),
        None => (None, None),
    };
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions),
        host_ip: Some(super::NODE_IP.to_owned()),
        host_ips: Some(vec![HostIP { ip: super::NODE_IP.to_owned() }]),
        pod_ip: Some(pod_ip.clone()),
        pod_ips: Some(vec![PodIP { ip: pod_ip }]),
        start_time: state.start_time.clone(),
        init_container_statuses: if state.init.is_empty() {
            None
        } else {
            Some(state.init.iter().map(container_status).collect())
        },
        container_statuses: Some(state.containers.iter().map(container_status).collect()),
        reason,
        message,
        ..PodStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::now())
    }

    fn ended(code: i32) -> RunState {
        RunState::Terminated(Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: None,
            finished_at: now(),
            container_id: None,
        })
    }

    fn state(containers: Vec<RunState>) -> PodState {
        PodState {
            containers: containers
                .into_iter()
                .enumerate()
                .map(|(i, s)| ContainerRun { state: s, ..ContainerRun::new(&format!("c{i}"), "sh", "x") })
                .collect(),
            ..PodState::default()
        }
    }

    #[test]
    fn phases_follow_the_kubelet() {
        let running = RunState::Running { started_at: now(), pid: 1 };
        let waiting = RunState::Waiting { reason: "ContainerCreating".into(), message: None };
        assert_eq!(phase(&state(vec![waiting.clone()]), "Always"), "Pending");
        assert_eq!(phase(&state(vec![running.clone(), ended(0)]), "Never"), "Running");
        assert_eq!(phase(&state(vec![ended(0), ended(0)]), "Never"), "Succeeded");
        assert_eq!(phase(&state(vec![ended(0), ended(1)]), "Never"), "Failed");
        assert_eq!(phase(&state(vec![ended(0), ended(1)]), "OnFailure"), "Running");
        assert_eq!(phase(&state(vec![ended(0)]), "Always"), "Running");
        let mut terminating = state(vec![ended(0)]);
        terminating.terminating = true;
        assert_eq!(phase(&terminating, "Always"), "Succeeded");
        let mut terminating = state(vec![ended(137)]);
        terminating.terminating = true;
        assert_eq!(phase(&terminating, "Always"), "Failed");
        let mut failed_init = state(vec![waiting]);
        failed_init.init = vec![ContainerRun { state: ended(1), ..ContainerRun::new("i", "sh", "x") }];
        assert_eq!(phase(&failed_init, "Never"), "Failed");
        assert_eq!(phase(&failed_init, "OnFailure"), "Pending");
        let mut failure = state(vec![running]);
        failure.failure = Some(("DeadlineExceeded".into(), "m".into()));
        assert_eq!(phase(&failure, "Always"), "Failed");
    }

    #[test]
    fn conditions_keep_transition_times_and_foreign_conditions() {
        let running = RunState::Running { started_at: now(), pid: 1 };
        let mut s = state(vec![running]);
        s.sandbox_ready = true;
        s.containers[0].ready = true;
        let earlier = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let existing = vec![
            PodCondition {
                type_: "PodScheduled".into(),
                status: "True".into(),
                last_transition_time: Some(earlier.clone()),
                ..PodCondition::default()
            },
            PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(earlier.clone()),
                ..PodCondition::default()
            },
        ];
        let status = pod_status(&s, "Always", &existing, &now());
        let conditions = status.conditions.unwrap_or_default();
        let get = |t: &str| conditions.iter().find(|c| c.type_ == t).cloned().unwrap_or_default();
        assert_eq!(get("PodScheduled").status, "True");
        assert_eq!(get("Ready").last_transition_time, Some(earlier));
        assert_eq!(get("ContainersReady").status, "True");
        assert_eq!(get("Initialized").status, "True");
        assert_eq!(status.phase.as_deref(), Some("Running"));
    }
}
