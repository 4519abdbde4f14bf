//! One pod's worker: volumes, init containers one after another, then the containers side by
//! side, each a process restarted per `restartPolicy` with the kubelet's back-off; status
//! written through the status subresource; deletion with the grace period, then the final
//! delete with a UID precondition; `activeDeadlineSeconds`.

use super::env::{self, ConfigError};
use super::expand::{self, StartError, entrypoint, lookup_image};
use super::probe;
use super::status::{ContainerRun, PodState, RunState, Terminated, pod_status};
use super::volumes::{self, Mount, Ownership, VolumeError, Volumes};
use super::{NodeContext, PodRecord, now};
use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, SecurityContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The back-off before the first delayed restart, doubled per restart.
const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// The longest back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long restarts without back-off (the kubelet forgets its back-off
/// after twice the maximum).
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How often a missing Secret, ConfigMap or volume source is looked for again.
const CONFIG_RETRY: Duration = Duration::from_secs(1);
/// The lines of log kept as a failed container's termination message.
const MESSAGE_LINES: usize = 80;
/// At most this many bytes of log in a termination message (the kubelet's 2048 for fallbacks).
const MESSAGE_BYTES: usize = 2048;

/// Which list a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Init,
    Main,
}

/// How a container's runs ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed,
    Stopped,
    /// The pod failed as a whole (unknown image, impossible mount).
    Fatal,
}

/// The pod worker's shared state.
pub(crate) struct PodRuntime {
    pub context: Arc<NodeContext>,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The spec as first seen (a pod's spec does not change, except images and deadlines).
    pub pod: Arc<Pod>,
    pub dir: PathBuf,
    pub state: Arc<Mutex<PodState>>,
    latest: watch::Receiver<Option<Arc<Pod>>>,
    api: Api<Pod>,
    /// Serialises status writes; holds the last status written.
    written: tokio::sync::Mutex<Option<serde_json::Value>>,
    /// The conditions last written (their transition times).
    conditions: Mutex<Vec<k8s_openapi::api::core::v1::PodCondition>>,
    /// `Some(grace)` once the containers must stop.
    stop: watch::Sender<Option<Duration>>,
    gone: AtomicBool,
    dirty: AtomicBool,
}

impl PodRuntime {
    fn restart_policy(&self) -> String {
        self.pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".into())
    }

    fn spec_container(&self, kind: Kind, index: usize) -> Option<Container> {
        let spec = self.pod.spec.as_ref()?;
        match kind {
            Kind::Init => spec.init_containers.as_ref()?.get(index).cloned(),
            Kind::Main => spec.containers.get(index).cloned(),
        }
    }

    /// Changes one container's record.
    pub(crate) fn update(&self, kind: Kind, index: usize, change: impl FnOnce(&mut ContainerRun)) {
        if let Ok(mut state) = self.state.lock() {
            let list = match kind {
                Kind::Init => &mut state.init,
                Kind::Main => &mut state.containers,
            };
            if let Some(run) = list.get_mut(index) {
                change(run);
            }
        }
    }

    fn update_pod(&self, change: impl FnOnce(&mut PodState)) {
        if let Ok(mut state) = self.state.lock() {
            change(&mut state);
        }
    }

    fn stopping(&self) -> bool {
        self.stop.borrow().is_some()
    }

    /// Writes the status when it changed (merge patch of the status subresource with a UID
    /// precondition, like the kubelet's status manager).
    pub(crate) async fn sync(&self) {
        if self.gone.load(Ordering::SeqCst) {
            return;
        }
        let mut written = self.written.lock().await;
        let Ok(state) = self.state.lock().map(|s| s.clone()) else { return };
        let mut existing = self
            .latest
            .borrow()
            .as_ref()
            .and_then(|p| p.status.as_ref().and_then(|s| s.conditions.clone()))
            .unwrap_or_default();
        // Our own last write is newer than the pod as last seen.
        if let Ok(mine) = self.conditions.lock() {
            existing.retain(|c| !mine.iter().any(|m| m.type_ == c.type_));
            existing.extend(mine.iter().cloned());
        }
        let status = pod_status(&state, &self.restart_policy(), &existing, &now());
        let conditions = status.conditions.clone().unwrap_or_default();
        let Ok(mut value) = serde_json::to_value(&status) else { return };
        // Transition times come from the pod as last seen, which lags our own writes: compare
        // without them so an unchanged status is not written again.
        let comparable = strip_times(&value);
        if written.as_ref() == Some(&comparable) {
            return;
        }
        value = serde_json::json!({ "metadata": { "uid": self.uid }, "status": value });
        match self.api.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&value)).await {
            Ok(_) => {
                *written = Some(comparable);
                if let Ok(mut mine) = self.conditions.lock() {
                    *mine = conditions;
                }
                self.dirty.store(false, Ordering::SeqCst);
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                self.gone.store(true, Ordering::SeqCst);
            }
            Err(error) => {
                tracing::warn!(%error, pod = %self.name, namespace = %self.namespace, "writing the pod status failed; retrying");
                self.dirty.store(true, Ordering::SeqCst);
            }
        }
    }

    fn log_dir(&self, container: &str) -> PathBuf {
        self.dir.join(container)
    }
}

fn strip_times(value: &serde_json::Value) -> serde_json::Value {
    let mut value = value.clone();
    if let Some(conditions) = value.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for condition in conditions {
            if let Some(object) = condition.as_object_mut() {
                object.remove("lastTransitionTime");
            }
        }
    }
    value
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// Runs one pod until it is deleted (by its deletion timestamp, then by this worker), vanishes
/// from the API, or the node stops (the update channel closes).
pub(crate) async fn run(context: Arc<NodeContext>, mut updates: watch::Receiver<Option<Arc<Pod>>>) {
    let Some(pod) = updates.borrow().clone() else { return };
    // The pod's own address, kept in the pod this node runs: the downward API and the probes
    // read it there, the status reports it.
    let pod_ip = super::allocate_pod_ip(pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()));
    let pod = {
        let mut pod = (*pod).clone();
        pod.status.get_or_insert_with(Default::default).pod_ip = Some(pod_ip.clone());
        Arc::new(pod)
    };
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let dir = context.pods_dir().join(format!("{namespace}_{name}_{uid}"));
    let spec = pod.spec.clone().unwrap_or_default();
    let init: Vec<ContainerRun> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| ContainerRun::new(&c.name, c.image.as_deref().unwrap_or_default(), "PodInitializing"))
        .collect();
    let waiting = if init.is_empty() { "ContainerCreating" } else { "PodInitializing" };
    let containers: Vec<ContainerRun> = spec
        .containers
        .iter()
        .map(|c| ContainerRun::new(&c.name, c.image.as_deref().unwrap_or_default(), waiting))
        .collect();
    let start_time = pod.status.as_ref().and_then(|s| s.start_time.clone()).unwrap_or_else(now);
    let state = Arc::new(Mutex::new(PodState {
        start_time: Some(start_time.clone()),
        init,
        containers,
        pod_ip: Some(pod_ip),
        ..PodState::default()
    }));
    let (stop, _) = watch::channel(None);
    let runtime = Arc::new(PodRuntime {
        context: Arc::clone(&context),
        namespace: namespace.clone(),
        name: name.clone(),
        uid: uid.clone(),
        pod: Arc::clone(&pod),
        dir: dir.clone(),
        state: Arc::clone(&state),
        latest: updates.clone(),
        api: Api::namespaced(context.client.clone(), &namespace),
        written: tokio::sync::Mutex::new(None),
        conditions: Mutex::new(Vec::new()),
        stop,
        gone: AtomicBool::new(false),
        dirty: AtomicBool::new(false),
    });
    if let Ok(mut pods) = context.pods.lock() {
        pods.insert(
            (namespace.clone(), name.clone()),
            Arc::new(PodRecord { uid: uid.clone(), dir: dir.clone(), state: Arc::clone(&state) }),
        );
    }

    // A pod that ended before this node (re)started, or is already being deleted, runs nothing.
    let mut lifecycle_done = is_terminal(&pod) || pod.metadata.deletion_timestamp.is_some();
    let mut lifecycle = if lifecycle_done {
        None
    } else {
        runtime.sync().await;
        Some(tokio::spawn(lifecycle(Arc::clone(&runtime))))
    };
    let deadline = spec.active_deadline_seconds.map(|seconds| {
        let started = std::time::SystemTime::from(start_time.0);
        let elapsed = std::time::SystemTime::now().duration_since(started).unwrap_or_default();
        let limit = Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
        tokio::time::Instant::now() + limit.saturating_sub(elapsed)
    });
    let mut deadline_armed = deadline.is_some() && !lifecycle_done;
    let mut deleting = false;
    let mut resync = tokio::time::interval(Duration::from_secs(5));
    loop {
        let current = updates.borrow().clone();
        if current.is_none() {
            // Force-deleted: kill everything at once; nothing to report.
            runtime.gone.store(true, Ordering::SeqCst);
            runtime.stop.send_replace(Some(Duration::ZERO));
        } else if let Some(current) = &current
            && current.metadata.deletion_timestamp.is_some()
            && !deleting
        {
            deleting = true;
            let grace = current.metadata.deletion_grace_period_seconds.unwrap_or(30);
            let grace = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
            runtime.update_pod(|s| s.terminating = true);
            if !lifecycle_done {
                tracing::debug!(pod = %name, namespace = %namespace, ?grace, "stopping a deleted pod's containers");
                runtime.stop.send_replace(Some(grace));
            }
        }
        if lifecycle_done && (deleting || runtime.gone.load(Ordering::SeqCst)) {
            break;
        }
        tokio::select! {
            _ = async {
                match lifecycle.as_mut() {
                    Some(handle) => { let _ = handle.await; }
                    None => std::future::pending::<()>().await,
                }
            }, if lifecycle.is_some() => {
                lifecycle = None;
                lifecycle_done = true;
                deadline_armed = false;
                runtime.sync().await;
            }
            changed = updates.changed() => {
                if changed.is_err() {
                    // The node is stopping.
                    runtime.gone.store(true, Ordering::SeqCst);
                    runtime.stop.send_replace(Some(Duration::ZERO));
                    if let Some(handle) = lifecycle.take() {
                        let _ = handle.await;
                    }
                    cleanup(&runtime);
                    return;
                }
            }
            () = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            }, if deadline_armed => {
                // Reported with the containers' ends: each killed container writes the status.
                deadline_armed = false;
                runtime.update_pod(|s| {
                    s.failure = Some((
                        "DeadlineExceeded".into(),
                        "Pod was active on the node longer than the specified deadline".into(),
                    ));
                });
                runtime.stop.send_replace(Some(Duration::ZERO));
            }
            _ = resync.tick() => {
                if runtime.dirty.load(Ordering::SeqCst) {
                    runtime.sync().await;
                }
            }
        }
    }
    if deleting && !runtime.gone.load(Ordering::SeqCst) {
        runtime.sync().await;
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
            ..DeleteParams::default()
        };
        match runtime.api.delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(error) => tracing::warn!(%error, pod = %name, namespace = %namespace, "deleting the pod failed"),
        }
    }
    cleanup(&runtime);
}

/// Removes the pod's volumes (its logs stay with the bed) and forgets it.
fn cleanup(runtime: &PodRuntime) {
    let _ = std::fs::remove_dir_all(runtime.dir.join("volumes"));
    if let Ok(mut pods) = runtime.context.pods.lock() {
        let key = (runtime.namespace.clone(), runtime.name.clone());
        if pods.get(&key).is_some_and(|record| record.uid == runtime.uid) {
            pods.remove(&key);
        }
    }
}

async fn wait_or_stop(runtime: &PodRuntime, duration: Duration) -> bool {
    let mut stop = runtime.stop.subscribe();
    if stop.borrow().is_some() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(duration) => false,
        _ = stop.changed() => true,
    }
}

async fn lifecycle(runtime: Arc<PodRuntime>) {
    let volumes = loop {
        if runtime.stopping() {
            return;
        }
        let pod = &runtime.pod;
        let fs_group = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()).and_then(|s| s.fs_group);
        let ownership = Ownership { fs_group: fs_group.and_then(|g| u32::try_from(g).ok()) };
        match volumes::materialise(&runtime.context.client, pod, &runtime.dir.join("volumes"), ownership).await {
            Ok(volumes) => break volumes,
            Err(VolumeError::Retry(message)) => {
                tracing::debug!(pod = %runtime.name, %message, "volumes not ready (FailedMount); retrying");
                let message = format!("MountVolume.SetUp failed: {message}");
                let (kinds, count_init) =
                    runtime.state.lock().map(|s| (s.containers.len(), s.init.len())).unwrap_or_default();
                for index in 0..count_init {
                    runtime.update(Kind::Init, index, |c| set_waiting(c, "PodInitializing", Some(message.clone())));
                }
                for index in 0..kinds {
                    let reason = if count_init > 0 { "PodInitializing" } else { "ContainerCreating" };
                    runtime.update(Kind::Main, index, |c| set_waiting(c, reason, Some(message.clone())));
                }
                runtime.sync().await;
                if wait_or_stop(&runtime, CONFIG_RETRY).await {
                    return;
                }
            }
            Err(VolumeError::Fatal(message)) => {
                runtime.update_pod(|s| s.failure = Some(("UnsupportedVolume".into(), message)));
                runtime.sync().await;
                return;
            }
        }
    };
    runtime.update_pod(|s| s.sandbox_ready = true);
    runtime.sync().await;
    let volumes = Arc::new(volumes);
    let init_count = runtime.pod.spec.as_ref().and_then(|s| s.init_containers.as_ref()).map_or(0, Vec::len);
    for index in 0..init_count {
        if run_container(Arc::clone(&runtime), Kind::Init, index, Arc::clone(&volumes)).await != Outcome::Succeeded {
            return;
        }
    }
    let count = runtime.pod.spec.as_ref().map_or(0, |s| s.containers.len());
    let runs: Vec<_> = (0..count)
        .map(|index| tokio::spawn(run_container(Arc::clone(&runtime), Kind::Main, index, Arc::clone(&volumes))))
        .collect();
    for run in runs {
        let _ = run.await;
    }
}

fn set_waiting(run: &mut ContainerRun, reason: &str, message: Option<String>) {
    run.state = RunState::Waiting { reason: reason.to_owned(), message };
    run.ready = false;
}

/// The user, group and supplementary groups of a container (container over pod, default root).
fn identity(pod: Option<&PodSecurityContext>, container: Option<&SecurityContext>) -> (i64, i64, Vec<i64>) {
    let user = container.and_then(|c| c.run_as_user).or_else(|| pod.and_then(|p| p.run_as_user)).unwrap_or(0);
    let group = container.and_then(|c| c.run_as_group).or_else(|| pod.and_then(|p| p.run_as_group)).unwrap_or(0);
    let mut groups: Vec<i64> = pod.and_then(|p| p.fs_group).into_iter().collect();
    groups.extend(pod.and_then(|p| p.supplemental_groups.clone()).unwrap_or_default());
    groups.sort_unstable();
    groups.dedup();
    (user, group, groups)
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The wrapper that runs inside `unshare --mount`: the bind mounts, the working directory,
/// then `setpriv` to the container's user, exec'ing the program (`"$@"`).
pub(crate) fn wrapper_script(
    tools: &super::Tools,
    mounts: &[Mount],
    working_dir: &Path,
    user: i64,
    group: i64,
    groups: &[i64],
) -> String {
    let mkdir = quote(&tools.mkdir.display().to_string());
    let mount = quote(&tools.mount.display().to_string());
    let mut script = String::from("set -e\n");
    for m in mounts {
        let source = quote(&m.source.display().to_string());
        let target = quote(&m.target.display().to_string());
        if m.source.is_dir() {
            script.push_str(&format!("{mkdir} -p {target}\n"));
        } else {
            let parent = m.target.parent().unwrap_or(Path::new("/"));
            script.push_str(&format!(
                "{mkdir} -p {}\n[ -e {target} ] || : > {target}\n",
                quote(&parent.display().to_string())
            ));
        }
        script.push_str(&format!("{mount} --bind {source} {target}\n"));
        if m.read_only {
            script.push_str(&format!("{mount} -o remount,bind,ro {target}\n"));
        }
    }
    let working_dir = quote(&working_dir.display().to_string());
    script.push_str(&format!("{mkdir} -p {working_dir}\ncd {working_dir}\n"));
    let groups = if groups.is_empty() {
        "--clear-groups".to_owned()
    } else {
        format!("--groups={}", groups.iter().map(i64::to_string).collect::<Vec<_>>().join(","))
    };
    script.push_str(&format!(
        "exec {} --reuid={user} --regid={group} {groups} -- \"$@\"\n",
        quote(&tools.setpriv.display().to_string())
    ));
    script
}

/// What a container run needs, resolved from the spec.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub program: PathBuf,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub working_dir: PathBuf,
    pub user: i64,
    pub group: i64,
    pub groups: Vec<i64>,
}

impl Launch {
    /// The command that starts `self` (or another program with the same context, for exec
    /// probes and hooks) in a fresh private mount namespace.
    pub(crate) fn command(&self, tools: &super::Tools, program: &Path, argv: &[String]) -> tokio::process::Command {
        let script = wrapper_script(tools, &self.mounts, &self.working_dir, self.user, self.group, &self.groups);
        let mut command = tokio::process::Command::new(&tools.unshare);
        command
            .args(["--mount", "--propagation", "private", "--"])
            .arg(&tools.sh)
            .arg("-c")
            .arg(script)
            .arg("testnode-container")
            .arg(program)
            .args(argv)
            .env_clear()
            .env("PATH", &tools.path)
            .env("HOME", if self.user == 0 { "/root" } else { "/" });
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command.stdin(Stdio::null()).process_group(0).kill_on_drop(false);
        command
    }
}

/// Why a container cannot start now.
enum Prepare {
    /// Retried: `CreateContainerConfigError`.
    Config(String),
    /// The run fails like a runtime start error (exit code 128, `StartError`).
    Start(String),
    /// The pod fails (reason, message).
    Fatal(String, String),
}

async fn prepare(runtime: &PodRuntime, container: &Container, volumes: &Volumes) -> Result<Launch, Prepare> {
    let context = &runtime.context;
    let image = container.image.clone().unwrap_or_default();
    let Some(executable) = lookup_image(&context.images, &image) else {
        let known: Vec<&str> = context.images.keys().map(String::as_str).collect();
        return Err(Prepare::Fatal(
            "ErrImageNeverPull".into(),
            format!(
                "Container image \"{image}\" is not present with pull policy of Never (the test node's image table has: {})",
                known.join(", ")
            ),
        ));
    };
    let mut env = env::resolve(context.client.clone(), &runtime.pod, container, context.api_port)
        .await
        .map_err(|ConfigError(message)| Prepare::Config(message))?;
    if !env.iter().any(|(k, _)| k == "HOSTNAME") {
        env.insert(0, ("HOSTNAME".into(), runtime.name.clone()));
    }
    let lookup = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let command: Vec<String> = container.command.iter().flatten().map(|a| expand::expand(a, lookup)).collect();
    let args: Vec<String> = container.args.iter().flatten().map(|a| expand::expand(a, lookup)).collect();
    let (program, argv) =
        entrypoint(&image, executable, &command, &args).map_err(|StartError(message)| Prepare::Start(message))?;
    let tools = &context.tools;
    let mut protected =
        vec![program.clone(), tools.sh.clone(), tools.mount.clone(), tools.mkdir.clone(), tools.setpriv.clone()];
    if let Some(parent) = program.parent() {
        protected.push(parent.to_owned());
    }
    protected.push(context.pods_dir());
    let mounts = volumes::plan(container, volumes, &protected)
        .map_err(|message| Prepare::Fatal("CreateContainerError".into(), message))?;
    let pod_security = runtime.pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let (user, group, groups) = identity(pod_security, container.security_context.as_ref());
    let working_dir = container.working_dir.clone().filter(|d| !d.is_empty()).unwrap_or_else(|| "/".into());
    Ok(Launch { program, argv, env, mounts, working_dir: PathBuf::from(working_dir), user, group, groups })
}

fn exit_code(status: &ExitStatus) -> (i32, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(signal)) => (128 + signal, Some(signal)),
        (None, None) => (255, None),
    }
}

/// The end of a log, for a failed container's termination message.
fn log_tail(path: &Path) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let mut tail = lines[lines.len().saturating_sub(MESSAGE_LINES)..].join("\n");
    if tail.len() > MESSAGE_BYTES {
        let mut cut = tail.len() - MESSAGE_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = tail[cut..].to_owned();
    }
    (!tail.is_empty()).then_some(tail)
}

/// Sends `signal` to a container's process group.
pub(crate) fn signal_group(pid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(raw), signal);
    }
}

/// Why a running container was ended by the node.
enum Kill {
    /// The pod is stopping, with this grace.
    Stop(Duration),
    /// The liveness or startup probe failed.
    Probe(String, Duration),
}

async fn run_container(runtime: Arc<PodRuntime>, kind: Kind, index: usize, volumes: Arc<Volumes>) -> Outcome {
    let Some(container) = runtime.spec_container(kind, index) else { return Outcome::Fatal };
    let policy = match (kind, runtime.restart_policy().as_str()) {
        (Kind::Init, "Never") => "Never",
        (Kind::Init, _) => "OnFailure",
        (Kind::Main, "Never") => "Never",
        (Kind::Main, "OnFailure") => "OnFailure",
        (Kind::Main, _) => "Always",
    };
    let mut stop = runtime.stop.subscribe();
    let mut backoff: Option<Duration> = None;
    let pod_grace = runtime.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
    let pod_grace = Duration::from_secs(u64::try_from(pod_grace).unwrap_or(0));
    loop {
        if runtime.stopping() {
            return Outcome::Stopped;
        }
        let launch = match prepare(&runtime, &container, &volumes).await {
            Ok(launch) => Ok(launch),
            Err(Prepare::Config(message)) => {
                runtime.update(kind, index, |c| set_waiting(c, "CreateContainerConfigError", Some(message)));
                runtime.sync().await;
                if wait_or_stop(&runtime, CONFIG_RETRY).await {
                    return Outcome::Stopped;
                }
                continue;
            }
            Err(Prepare::Fatal(reason, message)) => {
                runtime.update(kind, index, |c| set_waiting(c, &reason, Some(message.clone())));
                runtime.update_pod(|s| s.failure = Some((reason, message)));
                runtime.sync().await;
                return Outcome::Fatal;
            }
            Err(Prepare::Start(message)) => Err(message),
        };
        let image = container.image.clone().unwrap_or_default();
        let executable = lookup_image(&runtime.context.images, &image).cloned().unwrap_or_default();
        runtime.update(kind, index, |c| c.image_id = format!("testnode://{}", executable.display()));
        let restart = runtime.state.lock().ok().map_or(0, |s| match kind {
            Kind::Init => s.init.get(index).map_or(0, |c| c.restart_count),
            Kind::Main => s.containers.get(index).map_or(0, |c| c.restart_count),
        });
        let log_dir = runtime.log_dir(&container.name);
        let log = log_dir.join(format!("{restart}.log"));
        let ran_since = Instant::now();
        let terminated = match launch {
            Err(message) => Terminated {
                exit_code: 128,
                signal: None,
                reason: "StartError".into(),
                message: Some(message),
                started_at: None,
                finished_at: now(),
                container_id: None,
            },
            Ok(launch) => run_process(&runtime, kind, index, &container, &launch, &log, &mut stop, pod_grace).await,
        };
        let stopped = runtime.stopping();
        let failed = terminated.exit_code != 0;
        let restart = !stopped
            && match policy {
                "Always" => true,
                "OnFailure" => failed,
                _ => false,
            };
        if !restart {
            runtime.update(kind, index, |c| {
                c.state = RunState::Terminated(terminated);
                c.ready = false;
            });
            runtime.sync().await;
            return if stopped {
                Outcome::Stopped
            } else if failed {
                Outcome::Failed
            } else {
                Outcome::Succeeded
            };
        }
        // The kubelet's back-off: the first restart is immediate, then 10 s doubling to 5 min;
        // a run longer than 10 min forgets it.
        if ran_since.elapsed() > BACKOFF_RESET {
            backoff = None;
        }
        let delay = backoff.unwrap_or(Duration::ZERO);
        backoff = Some(match backoff {
            None => BACKOFF_INITIAL,
            Some(previous) => (previous * 2).min(BACKOFF_MAX),
        });
        let name = container.name.clone();
        let pod_ref = format!("{}_{}({})", runtime.name, runtime.namespace, runtime.uid);
        let last = terminated.clone();
        runtime.update(kind, index, |c| {
            c.last_state = Some(terminated);
            c.restart_count += 1;
            c.ready = false;
            c.started = false;
            c.state = RunState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {}s restarting failed container={name} pod={pod_ref}",
                    delay.as_secs()
                )),
            };
        });
        if delay > Duration::ZERO {
            runtime.sync().await;
            if wait_or_stop(&runtime, delay).await {
                runtime.update(kind, index, |c| {
                    c.state = RunState::Terminated(last);
                    c.last_state = None;
                    c.restart_count -= 1;
                });
                runtime.sync().await;
                return Outcome::Stopped;
            }
        }
    }
}

/// Starts one run of a container and waits for its end, killing it when the pod stops or a
/// liveness/startup probe fails.
#[allow(clippy::too_many_arguments)]
async fn run_process(
    runtime: &Arc<PodRuntime>,
    kind: Kind,
    index: usize,
    container: &Container,
    launch: &Launch,
    log: &Path,
    stop: &mut watch::Receiver<Option<Duration>>,
    pod_grace: Duration,
) -> Terminated {
    let start_failure = |message: String| Terminated {
        exit_code: 128,
        signal: None,
        reason: "StartError".into(),
        message: Some(message),
        started_at: None,
        finished_at: now(),
        container_id: None,
    };
    let files = (|| -> std::io::Result<(std::fs::File, std::fs::File)> {
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        Ok((out, err))
    })();
    let (out, err) = match files {
        Ok(files) => files,
        Err(error) => return start_failure(format!("creating {}: {error}", log.display())),
    };
    let mut command = launch.command(&runtime.context.tools, &launch.program, &launch.argv);
    command.stdout(out).stderr(err);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return start_failure(format!("starting {}: {error}", launch.program.display())),
    };
    let Some(pid) = child.id() else { return start_failure("the process ended before it had a pid".into()) };
    runtime.context.process_started(pid);
    let started_at = now();
    let has_startup = container.startup_probe.is_some();
    let has_readiness = container.readiness_probe.is_some();
    runtime.update(kind, index, |c| {
        c.state = RunState::Running { started_at: started_at.clone(), pid };
        c.started = !has_startup;
        c.ready = !has_readiness && !has_startup;
    });
    runtime.sync().await;
    let (probe_failed, mut probe_failures) = tokio::sync::mpsc::channel::<String>(1);
    let probes = probe::start(Arc::clone(runtime), kind, index, container.clone(), launch, probe_failed);
    let kill = tokio::select! {
        status = child.wait() => {
            probes.abort();
            return finish(runtime, pid, status, started_at, log, None);
        }
        _ = async {
            loop {
                if stop.borrow().is_some() { break; }
                if stop.changed().await.is_err() { std::future::pending::<()>().await; }
            }
        } => Kill::Stop(stop.borrow().unwrap_or(Duration::ZERO)),
        Some(message) = probe_failures.recv() => {
            let grace = container.liveness_probe.as_ref().and_then(|p| p.termination_grace_period_seconds)
                .map_or(pod_grace, |s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
            Kill::Probe(message, grace)
        }
    };
    probes.abort();
    let (grace, reason) = match kill {
        Kill::Stop(grace) => (grace, None),
        Kill::Probe(message, grace) => {
            tracing::info!(pod = %runtime.name, container = %container.name, %message, "probe failed; killing the container");
            (grace, Some(message))
        }
    };
    if grace > Duration::ZERO {
        if let Some(hook) = container.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()).and_then(|h| h.exec.as_ref())
        {
            let argv: Vec<String> = hook.command.clone().unwrap_or_default();
            if let Some((program, rest)) = argv.split_first() {
                let mut hook_command = launch.command(&runtime.context.tools, Path::new(program), rest);
                hook_command.stdout(Stdio::null()).stderr(Stdio::null());
                if let Ok(mut hook_child) = hook_command.spawn() {
                    let _ = tokio::time::timeout(grace, hook_child.wait()).await;
                    let _ = hook_child.start_kill();
                }
            }
        }
        signal_group(pid, Signal::SIGTERM);
        if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
            return finish(runtime, pid, status, started_at, log, reason);
        }
    }
    signal_group(pid, Signal::SIGKILL);
    let status = child.wait().await;
    finish(runtime, pid, status, started_at, log, reason)
}

fn finish(
    runtime: &PodRuntime,
    pid: u32,
    status: std::io::Result<ExitStatus>,
    started_at: Time,
    log: &Path,
    kill_reason: Option<String>,
) -> Terminated {
    // A container ends with its main process: what it left running in its group goes too.
    signal_group(pid, Signal::SIGKILL);
    runtime.context.process_ended(pid);
    let (exit_code, signal) = match &status {
        Ok(status) => exit_code(status),
        Err(_) => (255, None),
    };
    let message = if exit_code == 0 {
        None
    } else {
        match kill_reason {
            Some(reason) => Some(reason),
            None => log_tail(log),
        }
    };
    Terminated {
        exit_code,
        signal,
        reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
        message,
        started_at: Some(started_at),
        finished_at: now(),
        container_id: Some(format!("testnode://{pid}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> super::super::Tools {
        super::super::Tools {
            sh: "/bin/sh".into(),
            unshare: "/usr/bin/unshare".into(),
            mount: "/usr/bin/mount".into(),
            mkdir: "/usr/bin/mkdir".into(),
            setpriv: "/usr/bin/setpriv".into(),
            path: "/usr/bin:/bin".into(),
        }
    }

    #[test]
    fn the_wrapper_mounts_then_drops_privileges() {
        let mounts = vec![Mount { source: "/tmp".into(), target: "/it's/data".into(), read_only: true }];
        let script = wrapper_script(&tools(), &mounts, Path::new("/work"), 1000, 1000, &[2000]);
        assert!(script.contains("'/usr/bin/mkdir' -p '/it'\\''s/data'\n"), "{script}");
        assert!(script.contains("'/usr/bin/mount' --bind '/tmp' '/it'\\''s/data'\n"), "{script}");
        assert!(script.contains("'/usr/bin/mount' -o remount,bind,ro '/it'\\''s/data'\n"), "{script}");
        assert!(script.contains("cd '/work'\n"), "{script}");
        assert!(
            script.ends_with("exec '/usr/bin/setpriv' --reuid=1000 --regid=1000 --groups=2000 -- \"$@\"\n"),
            "{script}"
        );
        let root = wrapper_script(&tools(), &[], Path::new("/"), 0, 0, &[]);
        assert!(root.contains("--clear-groups"), "{root}");
    }

    #[test]
    fn identities_prefer_the_container() {
        let pod = PodSecurityContext {
            run_as_user: Some(1),
            run_as_group: Some(2),
            fs_group: Some(3),
            supplemental_groups: Some(vec![4, 3]),
            ..PodSecurityContext::default()
        };
        let container = SecurityContext { run_as_user: Some(10), ..SecurityContext::default() };
        assert_eq!(identity(Some(&pod), Some(&container)), (10, 2, vec![3, 4]));
        assert_eq!(identity(None, None), (0, 0, vec![]));
    }
}
