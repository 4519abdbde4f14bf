//! The test node runs pods like a kubelet, against a real control plane: environment, volumes,
//! status, restarts, deadlines, deletion, probes, Deployments, `kubectl logs`, in-cluster
//! service-account access, pod addresses. The "images" are `/bin/sh`, `python3` and the bed's
//! `kubectl`.
//!
//! One bed per test (a few seconds each); each test groups related pods on its bed. The runtime
//! is multi-threaded: the node serves `kubectl logs` from the test's runtime while the test
//! blocks on `kubectl`.

use duckmesh_testbed::{Assets, Bed, BedOptions, ControlPlaneOptions};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

async fn bed() -> Bed {
    let assets = tokio::task::spawn_blocking(Assets::locate).await.expect("join").expect("assets");
    let mut images = BTreeMap::new();
    images.insert("sh".to_owned(), PathBuf::from("/bin/sh"));
    images.insert("python3".to_owned(), PathBuf::from("/usr/bin/python3"));
    images.insert("registry.example/tools/kubectl".to_owned(), assets.path("kubectl"));
    let options = BedOptions { images, control_plane: ControlPlaneOptions { assets: Some(assets), dir: None } };
    Bed::start(options).await.expect("bed starts")
}

fn pods(bed: &Bed) -> Api<Pod> {
    Api::namespaced(bed.client(), "default")
}

async fn create(bed: &Bed, pod: serde_json::Value) -> Pod {
    let pod: Pod = serde_json::from_value(pod).expect("pod json");
    pods(bed).create(&PostParams::default(), &pod).await.expect("create pod")
}

/// A pod of `sh -c script` on the test node (scheduled by the real scheduler).
fn sh_pod(name: &str, script: &str, restart_policy: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "main", "image": "sh", "command": ["sh", "-c", script]}],
        },
    })
}

async fn wait_for(bed: &Bed, name: &str, what: &str, condition: impl Fn(&Pod) -> bool) -> Pod {
    let api = pods(bed);
    let waited = tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), name, move |pod: Option<&Pod>| pod.is_some_and(&condition)),
    )
    .await;
    match waited {
        Ok(Ok(Some(pod))) => pod,
        other => {
            let now = api.get_opt(name).await.ok().flatten();
            panic!("pod {name}: {what} not reached ({other:?}); the pod now: {:#?}", now.and_then(|p| p.status));
        }
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

fn condition(pod: &Pod, type_: &str) -> Option<String> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_).map(|c| c.status.clone())
}

fn first_status(pod: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.first().cloned()
}

fn container_status(pod: &Pod) -> k8s_openapi::api::core::v1::ContainerStatus {
    first_status(pod).expect("a container status")
}

fn waiting_reason(pod: &Pod) -> Option<String> {
    first_status(pod)?.state?.waiting?.reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_with_their_environment_volumes_and_exit_codes() {
    let bed = bed().await;
    let client = bed.client();
    let node: Node = Api::all(client.clone()).get("testnode").await.expect("node");
    let node_status = node.status.expect("node status");
    assert_eq!(node_status.node_info.expect("node info").kubelet_version, duckmesh_testbed::KUBERNETES_VERSION);
    assert_eq!(node_status.allocatable.expect("allocatable")["cpu"].0, "32");

    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "creds"},
        "stringData": {"password": "hunter2", "user": "duck"},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), "default").create(&PostParams::default(), &secret).await.expect("secret");
    let map: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "settings"},
        "data": {"color": "blue", "size": "L"},
    }))
    .expect("configmap");
    Api::<ConfigMap>::namespaced(client.clone(), "default").create(&PostParams::default(), &map).await.expect("cm");

    let script = r#"
        env | sort
        echo "ARGS=$*"
        echo "SECRET_FILE=$(cat /etc/creds/password)"
        echo "CONFIG_FILE=$(cat /etc/settings/color)"
        echo "LABEL_FILE=$(cat /etc/podinfo/app)"
        echo "SA_NAMESPACE=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)"
        test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo TOKEN_PRESENT
        echo written > /scratch/file && echo "SCRATCH=$(cat /scratch/file)"
        echo "WHOAMI=$(id -u):$(id -g)"
        echo "PWD=$(pwd)"
    "#;
    create(
        &bed,
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "env", "labels": {"app": "envtest"}, "annotations": {"note": "quack"}},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000},
                "containers": [{
                    "name": "main",
                    "image": "sh:1.0",
                    "command": ["sh", "-c", script, "--"],
                    "args": ["$(POD_NAME)-arg", "$$(POD_NAME)"],
                    "workingDir": "/scratch",
                    "resources": {"limits": {"memory": "128Mi", "cpu": "500m"}, "requests": {"cpu": "250m", "memory": "64Mi"}},
                    "envFrom": [
                        {"configMapRef": {"name": "settings"}, "prefix": "CM_"},
                        {"secretRef": {"name": "creds"}},
                        {"configMapRef": {"name": "absent", "optional": true}, "prefix": "X_"},
                    ],
                    "env": [
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                        {"name": "POD_LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                        {"name": "POD_NOTE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}}},
                        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "ACCOUNT", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                        {"name": "MAYBE", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}},
                        {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}},
                        {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                        {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                        {"name": "CPU_REQUEST_M", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
                        {"name": "COMBINED", "value": "$(POD_NAME)/$(COLOR)/$(UNDEFINED)"},
                    ],
                    "volumeMounts": [
                        {"name": "creds", "mountPath": "/etc/creds", "readOnly": true},
                        {"name": "settings", "mountPath": "/etc/settings"},
                        {"name": "podinfo", "mountPath": "/etc/podinfo"},
                        {"name": "scratch", "mountPath": "/scratch"},
                    ],
                }],
                "volumes": [
                    {"name": "creds", "secret": {"secretName": "creds"}},
                    {"name": "settings", "configMap": {"name": "settings"}},
                    {"name": "podinfo", "downwardAPI": {"items": [{"path": "app", "fieldRef": {"fieldPath": "metadata.labels['app']"}}]}},
                    {"name": "scratch", "emptyDir": {}},
                ],
            },
        }),
    )
    .await;
    create(&bed, sh_pod("fails", "echo about to fail; echo the reason >&2; exit 3", "Never")).await;
    let mut unknown = sh_pod("unknown-image", "true", "Never");
    unknown["spec"]["containers"][0]["image"] = serde_json::json!("ghcr.io/nobody/missing:1");
    create(&bed, unknown).await;

    let done = wait_for(&bed, "env", "Succeeded", |p| matches!(phase(p), "Succeeded" | "Failed")).await;
    let log = bed.node().logs("default", "env", "main", false).expect("log");
    assert_eq!(phase(&done), "Succeeded", "{log}");
    let status = container_status(&done);
    let terminated = status.state.and_then(|s| s.terminated).expect("terminated");
    assert_eq!((terminated.exit_code, terminated.reason.as_deref()), (0, Some("Completed")));
    assert!(status.container_id.is_some_and(|id| id.starts_with("testnode://")));
    let uid = done.metadata.uid.clone().expect("uid");
    let pod_ip = done.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("a pod IP");
    assert!(pod_ip.starts_with("127.") && pod_ip != "127.0.0.1", "{pod_ip}");
    for line in [
        "POD_NAME=env".to_owned(),
        "POD_NAMESPACE=default".to_owned(),
        format!("POD_UID={uid}"),
        "POD_LABEL=envtest".to_owned(),
        "POD_NOTE=quack".to_owned(),
        "NODE=testnode".to_owned(),
        "ACCOUNT=default".to_owned(),
        format!("POD_IP={pod_ip}"),
        "HOST_IP=127.0.0.1".to_owned(),
        "PASSWORD=hunter2".to_owned(),
        "password=hunter2".to_owned(),
        "user=duck".to_owned(),
        "CM_color=blue".to_owned(),
        "CM_size=L".to_owned(),
        "COLOR=blue".to_owned(),
        "MEM_MI=128".to_owned(),
        "CPU_LIMIT=1".to_owned(),
        "CPU_REQUEST_M=250".to_owned(),
        "COMBINED=env/blue/$(UNDEFINED)".to_owned(),
        "KUBERNETES_SERVICE_HOST=127.0.0.1".to_owned(),
        format!("KUBERNETES_SERVICE_PORT={}", bed.control_plane().apiserver_port()),
        "HOSTNAME=env".to_owned(),
        "ARGS=env-arg $(POD_NAME)".to_owned(),
        "SECRET_FILE=hunter2".to_owned(),
        "CONFIG_FILE=blue".to_owned(),
        "LABEL_FILE=envtest".to_owned(),
        "SA_NAMESPACE=default".to_owned(),
        "TOKEN_PRESENT".to_owned(),
        "SCRATCH=written".to_owned(),
        "WHOAMI=1000:1000".to_owned(),
        "PWD=/scratch".to_owned(),
    ] {
        assert!(log.lines().any(|l| l == line), "missing {line:?} in:\n{log}");
    }
    assert!(!log.contains("MAYBE=") && !log.contains("CARGO"), "unexpected variables in:\n{log}");
    assert!(log.lines().any(|l| l.starts_with("PATH=")), "{log}");

    let failed = wait_for(&bed, "fails", "Failed", |p| phase(p) == "Failed").await;
    let terminated = container_status(&failed).state.and_then(|s| s.terminated).expect("terminated");
    assert_eq!((terminated.exit_code, terminated.reason.as_deref()), (3, Some("Error")));
    assert!(terminated.message.is_some_and(|m| m.contains("the reason")));

    let unknown = wait_for(&bed, "unknown-image", "Failed", |p| phase(p) == "Failed").await;
    assert_eq!(waiting_reason(&unknown).as_deref(), Some("ErrImageNeverPull"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_secrets_init_containers_deadlines_bad_mounts_and_crash_loops() {
    let bed = bed().await;
    let mut pod = sh_pod("needs-secret", "echo token=$TOKEN", "Never");
    pod["spec"]["containers"][0]["env"] =
        serde_json::json!([{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}]);
    create(&bed, pod).await;
    let mut deadline = sh_pod("deadline", "sleep 600", "Never");
    deadline["spec"]["activeDeadlineSeconds"] = serde_json::json!(2);
    create(&bed, deadline).await;

    let mut init = sh_pod("init", "cat /work/from-init", "Never");
    init["spec"]["initContainers"] = serde_json::json!([
        {"name": "first", "image": "sh", "command": ["sh", "-c", "echo one > /work/from-init"],
         "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
        {"name": "second", "image": "sh", "command": ["sh", "-c", "echo two >> /work/from-init"],
         "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
    ]);
    init["spec"]["containers"][0]["volumeMounts"] = serde_json::json!([{"name": "work", "mountPath": "/work"}]);
    init["spec"]["volumes"] = serde_json::json!([{"name": "work", "emptyDir": {}}]);
    create(&bed, init).await;
    let mut hides = sh_pod("hides", "true", "Never");
    hides["spec"]["containers"][0]["volumeMounts"] = serde_json::json!([{"name": "empty", "mountPath": "/bin"}]);
    hides["spec"]["volumes"] = serde_json::json!([{"name": "empty", "emptyDir": {}}]);
    create(&bed, hides).await;
    create(&bed, sh_pod("crashloop", "echo crashing; exit 2", "Always")).await;

    let waiting = wait_for(&bed, "needs-secret", "CreateContainerConfigError", |p| {
        waiting_reason(p).as_deref() == Some("CreateContainerConfigError")
    })
    .await;
    let message = container_status(&waiting).state.and_then(|s| s.waiting).and_then(|w| w.message);
    assert_eq!(message.as_deref(), Some("secret \"later\" not found"));
    assert_eq!(phase(&waiting), "Pending");
    let secret: Secret =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "later"}, "stringData": {"token": "t0k"}}))
            .expect("secret");
    Api::<Secret>::namespaced(bed.client(), "default").create(&PostParams::default(), &secret).await.expect("secret");
    wait_for(&bed, "needs-secret", "Succeeded", |p| phase(p) == "Succeeded").await;
    assert_eq!(bed.node().logs("default", "needs-secret", "main", false).expect("log"), "token=t0k\n");

    let failed = wait_for(&bed, "deadline", "Failed with its container ended", |p| {
        phase(p) == "Failed" && first_status(p).and_then(|s| s.state).is_some_and(|s| s.terminated.is_some())
    })
    .await;
    let status = failed.status.clone().expect("status");
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(status.message.as_deref(), Some("Pod was active on the node longer than the specified deadline"));
    let terminated = container_status(&failed).state.and_then(|s| s.terminated).expect("terminated");
    assert_eq!((terminated.exit_code, terminated.signal), (137, Some(9)));

    let init = wait_for(&bed, "init", "Succeeded", |p| matches!(phase(p), "Succeeded" | "Failed")).await;
    assert_eq!(bed.node().logs("default", "init", "main", false).expect("log"), "one\ntwo\n");
    let init_statuses = init.status.and_then(|s| s.init_container_statuses).expect("init statuses");
    assert_eq!(init_statuses.len(), 2);
    for status in init_statuses {
        let terminated = status.state.and_then(|s| s.terminated).expect("init terminated");
        assert_eq!(terminated.reason.as_deref(), Some("Completed"));
    }

    let hides = wait_for(&bed, "hides", "Failed", |p| phase(p) == "Failed").await;
    assert_eq!(hides.status.as_ref().and_then(|s| s.reason.as_deref()), Some("CreateContainerError"));
    assert!(hides.status.and_then(|s| s.message).is_some_and(|m| m.contains("would hide")));

    let looping =
        wait_for(&bed, "crashloop", "CrashLoopBackOff", |p| waiting_reason(p).as_deref() == Some("CrashLoopBackOff"))
            .await;
    let status = container_status(&looping);
    assert!(status.restart_count >= 1, "{status:?}");
    assert_eq!(status.last_state.and_then(|s| s.terminated).map(|t| t.exit_code), Some(2));
    assert_eq!(phase(&looping), "Running");
}

fn pid_of(pod: &Pod) -> u32 {
    container_status(pod)
        .container_id
        .and_then(|id| id.strip_prefix("testnode://").and_then(|pid| pid.parse().ok()))
        .expect("a testnode:// container id")
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_pods_get_sigterm_and_force_deleted_pods_are_killed() {
    let bed = bed().await;
    let markers = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let mut graceful = sh_pod(
        "graceful",
        "trap 'echo terminated > /markers/term; exit 0' TERM; echo started; while true; do sleep 0.1; done",
        "Always",
    );
    graceful["spec"]["containers"][0]["volumeMounts"] =
        serde_json::json!([{"name": "markers", "mountPath": "/markers"}]);
    graceful["spec"]["volumes"] =
        serde_json::json!([{"name": "markers", "hostPath": {"path": markers.path().display().to_string()}}]);
    create(&bed, graceful).await;
    create(&bed, sh_pod("forced", "sleep 600", "Always")).await;

    let running = wait_for(&bed, "graceful", "Running", |p| phase(p) == "Running").await;
    let forced = wait_for(&bed, "forced", "Running", |p| phase(p) == "Running").await;
    assert_eq!(condition(&running, "Ready").as_deref(), Some("True"));
    let uid = running.metadata.uid.clone().expect("uid");
    // The trap is set once the script says so.
    let started = std::time::Instant::now();
    while !bed.node().logs("default", "graceful", "main", false).unwrap_or_default().contains("started") {
        assert!(started.elapsed() < WAIT, "the graceful pod never started its loop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let api = pods(&bed);
    api.delete("graceful", &DeleteParams::default()).await.expect("delete");
    tokio::time::timeout(WAIT, await_condition(api.clone(), "graceful", conditions::is_deleted(&uid)))
        .await
        .expect("deleted in time")
        .expect("watch");
    assert_eq!(std::fs::read_to_string(markers.path().join("term")).expect("marker"), "terminated\n");

    let pid = pid_of(&forced);
    assert!(alive(pid));
    api.delete("forced", &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() })
        .await
        .expect("force delete");
    let started = std::time::Instant::now();
    while alive(pid) {
        assert!(started.elapsed() < WAIT, "process {pid} of a force-deleted pod still runs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_restart_and_probes_drive_readiness_and_liveness() {
    let bed = bed().await;
    // Fails once, then succeeds: restarted at once (the kubelet's first restart has no back-off).
    let mut flaky = sh_pod(
        "flaky",
        "if [ -e /data/ran ]; then echo second run; exit 0; fi; touch /data/ran; echo first run; exit 1",
        "OnFailure",
    );
    flaky["spec"]["containers"][0]["volumeMounts"] = serde_json::json!([{"name": "data", "mountPath": "/data"}]);
    flaky["spec"]["volumes"] = serde_json::json!([{"name": "data", "emptyDir": {}}]);
    create(&bed, flaky).await;

    // Ready once the test's HTTP endpoint answers 200.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answer = std::sync::Arc::clone(&healthy);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer).await;
            let status = if answer.load(std::sync::atomic::Ordering::SeqCst) { "200 OK" } else { "503 Unavailable" };
            let _ = stream.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await;
        }
    });
    let mut ready = sh_pod("probed", "sleep 600", "Always");
    ready["spec"]["containers"][0]["ports"] = serde_json::json!([{"name": "http", "containerPort": port}]);
    ready["spec"]["containers"][0]["readinessProbe"] = serde_json::json!({"httpGet": {"host": "127.0.0.1", "path": "/ready", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1});
    create(&bed, ready).await;

    // Killed by its liveness probe once it marks itself dead; restarted (Always).
    let mut live = sh_pod(
        "liveness",
        "if [ -e /data/died ]; then touch /data/restarted; exec sleep 600; fi; sleep 1; touch /data/died; exec sleep 600",
        "Always",
    );
    live["spec"]["containers"][0]["volumeMounts"] = serde_json::json!([{"name": "data", "mountPath": "/data"}]);
    live["spec"]["volumes"] = serde_json::json!([{"name": "data", "emptyDir": {}}]);
    live["spec"]["terminationGracePeriodSeconds"] = serde_json::json!(1);
    live["spec"]["containers"][0]["livenessProbe"] = serde_json::json!({
        "exec": {"command": ["sh", "-c", "test ! -e /data/died || test -e /data/restarted"]},
        "periodSeconds": 1, "failureThreshold": 1,
    });
    create(&bed, live).await;

    let flaky = wait_for(&bed, "flaky", "Succeeded", |p| phase(p) == "Succeeded").await;
    let status = container_status(&flaky);
    assert_eq!(status.restart_count, 1);
    let last = status.last_state.and_then(|s| s.terminated).expect("last state");
    assert_eq!(last.exit_code, 1);
    assert_eq!(bed.node().logs("default", "flaky", "main", false).expect("log"), "second run\n");
    assert_eq!(bed.node().logs("default", "flaky", "main", true).expect("previous log"), "first run\n");

    let probed = wait_for(&bed, "probed", "Running", |p| phase(p) == "Running").await;
    assert_eq!(condition(&probed, "Ready").as_deref(), Some("False"));
    assert!(!container_status(&probed).ready);
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for(&bed, "probed", "Ready", |p| condition(p, "Ready").as_deref() == Some("True")).await;
    healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    let unready = wait_for(&bed, "probed", "not Ready", |p| condition(p, "Ready").as_deref() == Some("False")).await;
    assert_eq!(condition(&unready, "ContainersReady").as_deref(), Some("False"));

    let restarted = wait_for(&bed, "liveness", "restarted", |p| {
        first_status(p).is_some_and(|s| s.restart_count >= 1) && phase(p) == "Running"
    })
    .await;
    let last = container_status(&restarted).last_state.and_then(|s| s.terminated).expect("last state");
    assert_eq!(last.exit_code, 143, "{last:?}");
    assert!(last.message.is_some_and(|m| m.contains("liveness")));
}

/// Each pod has a loopback address of its own: two pods listening on one port at their
/// `$(POD_IP)` both run, their probes (no host: the pod IP) find them, and each answers at its
/// address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_have_addresses_of_their_own() {
    let bed = bed().await;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr").port()
    };
    // A tiny HTTP server (the `python3` "image") that answers with its pod's name.
    let server = format!(
        "import http.server, os\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   def do_GET(self):\n\
         \x20       body = os.environ['POD_NAME'].encode()\n\
         \x20       self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)\n\
         http.server.HTTPServer((os.environ['POD_IP'], {port}), H).serve_forever()\n"
    );
    for name in ["addr-a", "addr-b"] {
        let mut pod = sh_pod(name, "", "Always");
        pod["spec"]["containers"][0] = serde_json::json!({
            "name": "main", "image": "python3", "command": ["python3", "-c", server],
            "env": [
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ],
            "ports": [{"name": "http", "containerPort": port}],
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        });
        create(&bed, pod).await;
    }
    let mut addresses = Vec::new();
    for name in ["addr-a", "addr-b"] {
        let pod = wait_for(&bed, name, "Ready", |p| condition(p, "Ready").as_deref() == Some("True")).await;
        let status = pod.status.expect("status");
        let ip = status.pod_ip.expect("pod IP");
        assert_eq!(status.pod_ips.expect("pod IPs")[0].ip, ip);
        assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
        let mut stream = std::net::TcpStream::connect((ip.as_str(), port)).expect("the pod answers at its IP");
        use std::io::{Read, Write};
        write!(stream, "GET / HTTP/1.0\r\n\r\n").expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        assert!(answer.ends_with(name), "{answer}");
        addresses.push(ip);
    }
    assert_ne!(addresses[0], addresses[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_run_and_kubectl_logs_reads_through_the_api_server() {
    let bed = bed().await;
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "web",
                        "image": "sh",
                        "command": ["sh", "-c", "echo hello from $(POD_NAME); echo line two; exec sleep 600"],
                        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    }],
                },
            },
        },
    }))
    .expect("deployment");
    let deployments: Api<Deployment> = Api::namespaced(bed.client(), "default");
    deployments.create(&PostParams::default(), &deployment).await.expect("create deployment");
    create(&bed, sh_pod("ticker", "for i in 1 2 3; do echo tick $i; sleep 1; done", "Never")).await;
    let available = |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref()).and_then(|s| s.available_replicas).unwrap_or_default() == 2
    };
    tokio::time::timeout(WAIT, await_condition(deployments.clone(), "web", available))
        .await
        .expect("deployment available in time")
        .expect("watch");
    let list = pods(&bed).list(&kube::api::ListParams::default().labels("app=web")).await.expect("list");
    assert_eq!(list.items.len(), 2);
    let name = list.items[0].metadata.name.clone().expect("name");
    let output = bed.kubectl().args(["logs", &name]).output().expect("kubectl logs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(text, format!("hello from {name}\nline two\n"));
    let output = bed.kubectl().args(["logs", &name, "--tail=1"]).output().expect("kubectl logs --tail");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "line two\n");
    let output = bed.kubectl().args(["logs", &name, "--previous"]).output().expect("kubectl logs --previous");
    assert!(!output.status.success());

    // `kubectl logs -f` streams until the container ends.
    wait_for(&bed, "ticker", "Running", |p| phase(p) == "Running").await;
    let output = bed.kubectl().args(["logs", "-f", "ticker"]).output().expect("kubectl logs -f");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "tick 1\ntick 2\ntick 3\n");

    // Scaling down deletes pods gracefully through the node.
    let scale = serde_json::json!({"spec": {"replicas": 0}});
    deployments
        .patch("web", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&scale))
        .await
        .expect("scale");
    let started = std::time::Instant::now();
    loop {
        let left = pods(&bed).list(&kube::api::ListParams::default().labels("app=web")).await.expect("list");
        if left.items.is_empty() {
            break;
        }
        assert!(started.elapsed() < WAIT, "pods left after scaling down: {}", left.items.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_the_api_server_with_in_cluster_service_account_config() {
    let bed = bed().await;
    // kubectl's own in-cluster config: KUBERNETES_SERVICE_HOST/PORT plus the token and CA at
    // /var/run/secrets/kubernetes.io/serviceaccount, mounted from the projected volume the
    // ServiceAccount admission plugin added.
    create(
        &bed,
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "incluster"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "kubectl",
                    "image": "registry.example/tools/kubectl:v1.36.3",
                    "args": ["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
                    "env": [{"name": "HOME", "value": "/nonexistent"}],
                }],
            },
        }),
    )
    .await;
    let done = wait_for(&bed, "incluster", "finished", |p| matches!(phase(p), "Succeeded" | "Failed")).await;
    let log = bed.node().logs("default", "incluster", "kubectl", false).expect("log");
    assert_eq!(phase(&done), "Succeeded", "{log}");
    assert_eq!(log, "system:serviceaccount:default:default");
}
