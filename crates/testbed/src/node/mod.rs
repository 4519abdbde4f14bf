//! The test node: a kubelet stand-in that registers a `Node`, keeps it Ready (status heartbeat
//! and a Lease), and runs the pods bound to it as local processes.
//!
//! How it maps Kubernetes onto one machine:
//!
//! - **Images** are a table from image reference to a local executable (the image's ENTRYPOINT);
//!   the full reference is looked up first, then the reference without digest, then without
//!   tag. `command`/`args` follow the Docker rules, see [`expand::entrypoint`].
//! - **Network**: pods share the host's network namespace, but each gets a loopback address of
//!   its own (`127.64.0.0/10`; all of `127.0.0.0/8` is local on Linux) as `status.podIP`, for
//!   the downward API and as the default host of its probes. A pod that binds its listeners to
//!   its pod IP (`$(POD_IP)` from a `fieldRef`) does not clash with another pod on the same port;
//!   one that binds `0.0.0.0` still does. The host IP is `127.0.0.1`. There is no Service
//!   routing: clients reach a pod at its pod IP. The `kubernetes` Service variables point at
//!   the API server's real port.
//! - **File system**: a container sees the host's file system, with its volumes bind-mounted at
//!   their `mountPath` in a private mount namespace (`unshare --mount`), so pods do not see each
//!   other's volumes. Mount points that do not exist are created on the host (as empty
//!   directories). A mount that would hide the container's executable, the runtime's tools or
//!   the node's directory is refused (the pod fails with `CreateContainerError`).
//! - **Users**: `runAsUser`/`runAsGroup` (container over pod, default root), `fsGroup` and
//!   `supplementalGroups` as supplementary groups, applied with `setpriv`.
//! - **Environment**: nothing leaks from the test process except `PATH`.
//! - **Logs**: `<dir>/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log`, served to
//!   `kubectl logs` over HTTPS like the kubelet's `/containerLogs`.

pub mod env;
pub mod expand;
mod logserver;
mod pod;
mod probe;
pub mod status;
pub mod volumes;

use crate::pki::CertFiles;
use crate::process::Watchdog;
use crate::{Error, KUBERNETES_VERSION, Result};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use status::PodState;

/// The address of the node (its `InternalIP` and every pod's `hostIP`).
pub const NODE_IP: &str = "127.0.0.1";
/// The first pod address: pods get addresses from `127.64.0.0/10`.
const POD_NETWORK: u32 = u32::from_be_bytes([127, 64, 0, 0]);
/// Addresses in the pod network.
const POD_NETWORK_SIZE: u32 = 1 << 22;

/// A loopback address for a new pod: the one it had (`previous`, a pod the node adopts again
/// after a restart), else the next free address of the pod network. Allocation starts at a
/// random place in the network, so that beds in different processes (a test run and CI on one
/// machine) do not hand out the same addresses, and goes on sequentially for the process's
/// lifetime (4 M addresses; a test run uses hundreds).
pub(crate) fn allocate_pod_ip(previous: Option<&str>) -> String {
    static NEXT: Mutex<Option<u32>> = Mutex::new(None);
    if let Some(previous) = previous.and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok()) {
        let value = u32::from(previous);
        if value & !(POD_NETWORK_SIZE - 1) == POD_NETWORK {
            return previous.to_string();
        }
    }
    let mut next = NEXT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut offset = next.unwrap_or_else(|| {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        (nanos ^ std::process::id().rotate_left(11)) % POD_NETWORK_SIZE
    });
    // Skip the network and broadcast-looking addresses (x.y.z.0, x.y.z.255).
    while matches!(offset & 0xff, 0 | 255) {
        offset = (offset + 1) % POD_NETWORK_SIZE;
    }
    *next = Some((offset + 1) % POD_NETWORK_SIZE);
    std::net::Ipv4Addr::from(POD_NETWORK + offset).to_string()
}
/// The field manager of the node's writes.
const FIELD_MANAGER: &str = "duckmesh-testnode";
/// Taints the node lifecycle controller removes from a Ready node.
const NOT_READY_TAINTS: [&str; 2] = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"];
/// The namespace of node Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// How to start a [`TestNode`].
#[derive(Debug, Clone)]
pub struct TestNodeOptions {
    /// The Node's name.
    pub name: String,
    /// Image reference → local executable (the image's entrypoint).
    pub images: BTreeMap<String, PathBuf>,
    /// Where pods' volumes and logs go (`<dir>/pods/…`).
    pub dir: PathBuf,
    /// The API server's port on `127.0.0.1` (the `kubernetes` Service variables of pods).
    pub api_server_port: u16,
    /// The log server's certificate (the bed's `kubelet` certificate).
    pub kubelet_cert: CertFiles,
    /// The CA that signs the clients the log server accepts (the API server's client certificate).
    pub ca: PathBuf,
    /// Registers every pod process, so they die with the test process.
    pub watchdog: Arc<Watchdog>,
    /// How often the Node's status and Lease are renewed (10 s like the kubelet).
    pub heartbeat_interval: Duration,
}

impl TestNodeOptions {
    /// Options for a node named `name` on `control_plane`, with its files in the bed's directory.
    pub fn for_control_plane(
        control_plane: &crate::ControlPlane,
        name: &str,
        images: BTreeMap<String, PathBuf>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            images,
            dir: control_plane.dir().to_owned(),
            api_server_port: control_plane.apiserver_port(),
            kubelet_cert: control_plane.pki().kubelet.clone(),
            ca: control_plane.pki().ca.clone(),
            watchdog: control_plane.watchdog(),
            heartbeat_interval: Duration::from_secs(10),
        }
    }
}

/// Absolute paths of the programs the container wrapper runs (a container's `PATH` may differ).
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    pub sh: PathBuf,
    pub unshare: PathBuf,
    pub mount: PathBuf,
    pub mkdir: PathBuf,
    pub setpriv: PathBuf,
    /// The node's `PATH`, the default of every container's.
    pub path: String,
}

impl Tools {
    fn find() -> Result<Self> {
        let path = std::env::var("PATH")
            .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        let find = |name: &str| -> Result<PathBuf> {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
                .ok_or_else(|| Error::ToolMissing { tool: name.to_owned() })
        };
        Ok(Self {
            sh: find("sh")?,
            unshare: find("unshare")?,
            mount: find("mount")?,
            mkdir: find("mkdir")?,
            setpriv: find("setpriv")?,
            path,
        })
    }
}

/// A pod as the log server and [`TestNode::logs`] see it.
#[derive(Debug)]
pub(crate) struct PodRecord {
    pub uid: String,
    pub dir: PathBuf,
    pub state: Arc<Mutex<PodState>>,
}

/// What the node's tasks share.
pub(crate) struct NodeContext {
    pub name: String,
    pub client: Client,
    pub images: BTreeMap<String, PathBuf>,
    pub dir: PathBuf,
    pub api_port: u16,
    pub watchdog: Arc<Watchdog>,
    pub tools: Tools,
    /// Process groups of running containers (killed when the node is dropped).
    pub processes: Mutex<BTreeSet<u32>>,
    /// (namespace, name) → the newest pod of that name.
    pub pods: Mutex<BTreeMap<(String, String), Arc<PodRecord>>>,
    /// Every pod worker, awaited by [`TestNode::stop`].
    pub workers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContext").field("name", &self.name).field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl NodeContext {
    pub fn pods_dir(&self) -> PathBuf {
        self.dir.join("pods")
    }

    pub fn process_started(&self, pid: u32) {
        self.watchdog.watch(pid);
        if let Ok(mut processes) = self.processes.lock() {
            processes.insert(pid);
        }
    }

    pub fn process_ended(&self, pid: u32) {
        self.watchdog.unwatch(pid);
        if let Ok(mut processes) = self.processes.lock() {
            processes.remove(&pid);
        }
    }

    fn kill_all(&self) {
        let pids: Vec<u32> = self.processes.lock().map(|p| p.iter().copied().collect()).unwrap_or_default();
        for pid in pids {
            if let Ok(raw) = i32::try_from(pid) {
                let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
            }
            self.process_ended(pid);
        }
    }

    pub fn record(&self, namespace: &str, name: &str) -> Option<Arc<PodRecord>> {
        self.pods.lock().ok()?.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }
}

/// A running test node. [`TestNode::stop`] (or dropping it) kills its pods' processes.
#[derive(Debug)]
pub struct TestNode {
    context: Arc<NodeContext>,
    log_port: u16,
    tasks: Vec<JoinHandle<()>>,
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

impl TestNode {
    /// Registers the Node, starts its heartbeat, its log server and its pod watch.
    pub async fn start(client: Client, options: TestNodeOptions) -> Result<Self> {
        let tools = Tools::find()?;
        std::fs::create_dir_all(options.dir.join("pods"))
            .map_err(Error::io(format!("creating {}", options.dir.join("pods").display())))?;
        let context = Arc::new(NodeContext {
            name: options.name.clone(),
            client: client.clone(),
            images: options.images.clone(),
            dir: options.dir.clone(),
            api_port: options.api_server_port,
            watchdog: options.watchdog.clone(),
            tools,
            processes: Mutex::new(BTreeSet::new()),
            pods: Mutex::new(BTreeMap::new()),
            workers: Mutex::new(Vec::new()),
        });
        let (log_port, log_server) = logserver::start(Arc::clone(&context), &options.kubelet_cert, &options.ca).await?;
        let mut node = Self { context: Arc::clone(&context), log_port, tasks: vec![log_server] };
        node.register().await?;
        let heartbeat_context = Arc::clone(&context);
        let interval = options.heartbeat_interval;
        node.tasks.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                if let Err(error) = heartbeat(&heartbeat_context, log_port).await {
                    tracing::warn!(%error, node = %heartbeat_context.name, "test node heartbeat failed");
                }
            }
        }));
        node.tasks.push(tokio::spawn(watch_pods(Arc::clone(&context))));
        tracing::info!(node = %options.name, log_port, "test node started");
        Ok(node)
    }

    /// The Node's name.
    pub fn name(&self) -> &str {
        &self.context.name
    }

    /// The port of the log server (the Node's `daemonEndpoints.kubeletEndpoint.port`).
    pub fn log_port(&self) -> u16 {
        self.log_port
    }

    /// Where pods' files go.
    pub fn dir(&self) -> &Path {
        &self.context.dir
    }

    /// The log of a container of a pod (the current run, or the previous one).
    pub fn logs(&self, namespace: &str, pod: &str, container: &str, previous: bool) -> Result<String> {
        let path = log_path(&self.context, namespace, pod, container, previous)?;
        std::fs::read(&path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .map_err(Error::io(format!("reading {}", path.display())))
    }

    /// The node's view of a pod (its containers' states), when the node runs it.
    pub fn pod_state(&self, namespace: &str, pod: &str) -> Option<PodState> {
        let record = self.context.record(namespace, pod)?;
        record.state.lock().ok().map(|s| s.clone())
    }

    /// Stops the pod watch and the heartbeat, kills every pod's processes and waits for the pod
    /// workers to end. The Node object stays (as after a kubelet stops).
    pub async fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        // The pod watch is gone, so every worker's update channel is closed: each kills its
        // containers at once and ends.
        let workers: Vec<JoinHandle<()>> =
            self.context.workers.lock().map(|mut w| w.drain(..).collect()).unwrap_or_default();
        for worker in workers {
            if tokio::time::timeout(Duration::from_secs(15), worker).await.is_err() {
                tracing::warn!(node = %self.context.name, "a pod worker did not stop in time");
            }
        }
        self.context.kill_all();
    }

    async fn register(&self) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.context.client.clone());
        let node: Node = serde_json::from_value(node_object(&self.context.name, self.log_port))
            .map_err(|e| Error::Invalid { what: "the Node object".into(), message: e.to_string() })?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
        heartbeat(&self.context, self.log_port).await
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Ok(workers) = self.context.workers.lock() {
            for worker in workers.iter() {
                worker.abort();
            }
        }
        self.context.kill_all();
    }
}

/// The log file of a container's current (or previous) run.
pub(crate) fn log_path(
    context: &NodeContext,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<PathBuf> {
    let not_found = |what: String| Error::NotFound { what };
    let record = context
        .record(namespace, pod)
        .ok_or_else(|| not_found(format!("pod \"{pod}\" in namespace \"{namespace}\" on node {}", context.name)))?;
    let dir = record.dir.join(container);
    let mut runs: Vec<u32> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    runs.sort_unstable();
    let run = if previous { runs.iter().rev().nth(1) } else { runs.last() };
    match run {
        Some(run) => Ok(dir.join(format!("{run}.log"))),
        None if previous => Err(not_found(format!("previous terminated container \"{container}\" in pod \"{pod}\""))),
        None => Err(not_found(format!("container \"{container}\" in pod \"{pod}\" is waiting to start"))),
    }
}

fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn node_object(name: &str, log_port: u16) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": architecture(),
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": architecture(),
                "duckmesh.io/test-node": "true",
            },
        },
        "spec": {},
        "status": node_status(name, log_port),
    })
}

fn node_status(name: &str, log_port: u16) -> serde_json::Value {
    let now = now().0.to_string();
    let resources = serde_json::json!({
        "cpu": env::ALLOCATABLE_CPU,
        "memory": env::ALLOCATABLE_MEMORY,
        "pods": env::ALLOCATABLE_PODS,
        "ephemeral-storage": env::ALLOCATABLE_EPHEMERAL_STORAGE,
    });
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        serde_json::json!({
            "type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        })
    };
    serde_json::json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": NODE_IP},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": log_port}},
        "nodeInfo": {
            "machineID": "duckmesh-testnode",
            "systemUUID": "duckmesh-testnode",
            "bootID": "duckmesh-testnode",
            "kernelVersion": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "osImage": "DuckMesh test node",
            "containerRuntimeVersion": "testnode://0.1.0",
            "kubeletVersion": KUBERNETES_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": architecture(),
        },
    })
}

/// Renews the Node's status (conditions' heartbeat times) and its Lease.
async fn heartbeat(context: &NodeContext, log_port: u16) -> Result<()> {
    let nodes: Api<Node> = Api::all(context.client.clone());
    let mut status = node_status(&context.name, log_port);
    // Keep the conditions' transition times: they did not transition.
    if let Some(existing) = nodes.get_opt(&context.name).await? {
        // The API server's TaintNodesByCondition admission taints new nodes not-ready; the node
        // lifecycle controller (off in the bed) would lift it once the node reports Ready.
        let taints = existing.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        if taints.iter().any(|t| NOT_READY_TAINTS.contains(&t.key.as_str())) {
            let kept: Vec<_> = taints.into_iter().filter(|t| !NOT_READY_TAINTS.contains(&t.key.as_str())).collect();
            let patch = serde_json::json!({ "spec": { "taints": kept } });
            nodes.patch(&context.name, &PatchParams::default(), &Patch::Merge(patch)).await?;
        }
        let conditions = existing.status.and_then(|s| s.conditions).unwrap_or_default();
        if let Some(list) = status.get_mut("conditions").and_then(|c| c.as_array_mut()) {
            for condition in list.iter_mut() {
                let type_ = condition.get("type").and_then(|t| t.as_str()).unwrap_or_default().to_owned();
                let status_value = condition.get("status").and_then(|t| t.as_str()).unwrap_or_default().to_owned();
                if let Some(previous) = conditions.iter().find(|c| c.type_ == type_ && c.status == status_value)
                    && let Some(time) = &previous.last_transition_time
                {
                    condition["lastTransitionTime"] = serde_json::json!(time.0.to_string());
                }
            }
        }
    }
    let node = nodes
        .patch_status(&context.name, &PatchParams::default(), &Patch::Merge(serde_json::json!({ "status": status })))
        .await?;
    let leases: Api<Lease> = Api::namespaced(context.client.clone(), LEASE_NAMESPACE);
    let lease = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": context.name,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Node", "name": context.name, "uid": node.uid().unwrap_or_default(),
            }],
        },
        "spec": {
            "holderIdentity": context.name,
            "leaseDurationSeconds": 40,
            "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now()),
        },
    });
    leases.patch(&context.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(lease)).await?;
    Ok(())
}

/// Watches the pods bound to the node and hands each to its worker (one per pod UID).
async fn watch_pods(context: Arc<NodeContext>) {
    let pods: Api<Pod> = Api::all(context.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", context.name));
    let mut stream = watcher::watcher(pods, config).default_backoff().boxed();
    let mut workers: HashMap<String, watch::Sender<Option<Arc<Pod>>>> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(pod)) => dispatch(&context, &mut workers, pod),
            Ok(Event::InitApply(pod)) => {
                listed.insert(pod.uid().unwrap_or_default());
                dispatch(&context, &mut workers, pod);
            }
            Ok(Event::Delete(pod)) => {
                if let Some(worker) = workers.remove(&pod.uid().unwrap_or_default()) {
                    worker.send_replace(None);
                }
            }
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitDone) => {
                // Pods that vanished while the watch was down were force-deleted.
                let gone: Vec<String> = workers.keys().filter(|uid| !listed.contains(*uid)).cloned().collect();
                for uid in gone {
                    if let Some(worker) = workers.remove(&uid) {
                        worker.send_replace(None);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, node = %context.name, "pod watch failed; retrying"),
        }
    }
}

fn dispatch(context: &Arc<NodeContext>, workers: &mut HashMap<String, watch::Sender<Option<Arc<Pod>>>>, pod: Pod) {
    let Some(uid) = pod.metadata.uid.clone() else { return };
    if let Some(worker) = workers.get(&uid) {
        // A finished worker (its pod deleted by it) is not restarted for late events.
        if !worker.is_closed() {
            worker.send_replace(Some(Arc::new(pod)));
        }
        return;
    }
    let (sender, receiver) = watch::channel(Some(Arc::new(pod)));
    workers.insert(uid, sender);
    let handle = tokio::spawn(pod::run(Arc::clone(context), receiver));
    if let Ok(mut all) = context.workers.lock() {
        all.retain(|w| !w.is_finished());
        all.push(handle);
    }
}
