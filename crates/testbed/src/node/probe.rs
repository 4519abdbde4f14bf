//! Startup, readiness and liveness probes of a running container: `httpGet` (HTTP; `HTTPS`
//! without certificate verification is not supported and fails), `tcpSocket`, and `exec` (run
//! in the container's context: same environment, user and mounts). Readiness drives the
//! container's `ready` flag; a failed liveness or startup probe asks the container's runner to
//! kill it (which then restarts per `restartPolicy`).

use super::pod::{Kind, Launch, PodRuntime};
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

fn seconds(value: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(u64::try_from(value.unwrap_or(default).max(0)).unwrap_or(0))
}

/// Starts the container's probes; abort the handle when the run ends.
pub(crate) fn start(
    runtime: Arc<PodRuntime>,
    kind: Kind,
    index: usize,
    container: Container,
    launch: &Launch,
    failed: mpsc::Sender<String>,
) -> JoinHandle<()> {
    let launch = launch.clone();
    tokio::spawn(async move {
        if let Some(probe) = &container.startup_probe {
            match run_until(&runtime, &container, &launch, probe, Goal::Success).await {
                true => {
                    runtime.update(kind, index, |c| {
                        c.started = true;
                        if container.readiness_probe.is_none() {
                            c.ready = true;
                        }
                    });
                    runtime.sync().await;
                }
                false => {
                    let _ = failed
                        .send(format!("Container {} failed startup probe, will be restarted", container.name))
                        .await;
                    return;
                }
            }
        }
        let readiness = container.readiness_probe.clone().map(|probe| {
            let runtime = Arc::clone(&runtime);
            let container = container.clone();
            let launch = launch.clone();
            tokio::spawn(async move { readiness_loop(runtime, kind, index, container, launch, probe).await })
        });
        if let Some(probe) = &container.liveness_probe
            && !run_until(&runtime, &container, &launch, probe, Goal::Failure).await
        {
            let _ = failed.send(format!("Container {} failed liveness probe, will be restarted", container.name)).await;
        }
        if let Some(readiness) = readiness {
            // Readiness keeps running while the container runs; this task is aborted then.
            let _ = readiness.await;
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Goal {
    /// Until `successThreshold` successes (true) or `failureThreshold` failures (false).
    Success,
    /// Forever, unless `failureThreshold` failures in a row (false).
    Failure,
}

async fn run_until(runtime: &PodRuntime, container: &Container, launch: &Launch, probe: &Probe, goal: Goal) -> bool {
    tokio::time::sleep(seconds(probe.initial_delay_seconds, 0)).await;
    let period = seconds(probe.period_seconds, 10).max(Duration::from_secs(1));
    let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
    let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
    let (mut successes, mut failures) = (0, 0);
    loop {
        if check(runtime, container, launch, probe).await.is_ok() {
            successes += 1;
            failures = 0;
            if goal == Goal::Success && successes >= success_threshold {
                return true;
            }
        } else {
            failures += 1;
            successes = 0;
            if failures >= failure_threshold {
                return false;
            }
        }
        tokio::time::sleep(period).await;
    }
}

async fn readiness_loop(
    runtime: Arc<PodRuntime>,
    kind: Kind,
    index: usize,
    container: Container,
    launch: Launch,
    probe: Probe,
) {
    // Readiness starts once the startup probe (if any) passed.
    while container.startup_probe.is_some() {
        let started = runtime.state.lock().ok().is_some_and(|s| {
            let list = if kind == Kind::Init { &s.init } else { &s.containers };
            list.get(index).is_some_and(|c| c.started)
        });
        if started {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(seconds(probe.initial_delay_seconds, 0)).await;
    let period = seconds(probe.period_seconds, 10).max(Duration::from_secs(1));
    let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
    let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
    let (mut successes, mut failures, mut ready) = (0, 0, false);
    loop {
        match check(&runtime, &container, &launch, &probe).await {
            Ok(()) => {
                successes += 1;
                failures = 0;
                if !ready && successes >= success_threshold {
                    ready = true;
                    runtime.update(kind, index, |c| c.ready = true);
                    runtime.sync().await;
                }
            }
            Err(error) => {
                failures += 1;
                successes = 0;
                if ready && failures >= failure_threshold {
                    tracing::debug!(pod = %runtime.name, container = %container.name, %error, "readiness probe failed");
                    ready = false;
                    runtime.update(kind, index, |c| c.ready = false);
                    runtime.sync().await;
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

fn port(container: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(number) => u16::try_from(*number).map_err(|_| format!("invalid port {number}")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .or_else(|| name.parse().ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

/// One probe attempt.
/// The default host of a probe: the pod's own address, like the kubelet's.
fn pod_ip(runtime: &PodRuntime) -> String {
    runtime.pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_else(|| super::NODE_IP.to_owned())
}

async fn check(runtime: &PodRuntime, container: &Container, launch: &Launch, probe: &Probe) -> Result<(), String> {
    let timeout = seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1));
    let attempt = async {
        if let Some(http) = &probe.http_get {
            if http.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")) {
                return Err("HTTPS probes are not supported by the test node".to_owned());
            }
            let host = http.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip(runtime));
            let port = port(container, &http.port)?;
            let path = http.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
            let mut stream =
                tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| format!("connect: {e}"))?;
            let mut request = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.36\r\nAccept: */*\r\nConnection: close\r\n"
            );
            for header in http.http_headers.iter().flatten() {
                request.push_str(&format!("{}: {}\r\n", header.name, header.value));
            }
            request.push_str("\r\n");
            stream.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
            let mut head = [0u8; 64];
            let mut read = 0;
            while read < 12 {
                let n = stream.read(&mut head[read..]).await.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    break;
                }
                read += n;
            }
            let line = String::from_utf8_lossy(&head[..read]);
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("not an HTTP response: {line:?}"))?;
            if (200..400).contains(&code) { Ok(()) } else { Err(format!("HTTP probe failed with statuscode: {code}")) }
        } else if let Some(tcp) = &probe.tcp_socket {
            let host = tcp.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip(runtime));
            let port = port(container, &tcp.port)?;
            tokio::net::TcpStream::connect((host.as_str(), port)).await.map(|_| ()).map_err(|e| format!("connect: {e}"))
        } else if let Some(exec) = &probe.exec {
            let argv = exec.command.clone().unwrap_or_default();
            let Some((program, rest)) = argv.split_first() else { return Err("empty exec probe command".into()) };
            let mut command = launch.command(&runtime.context.tools, std::path::Path::new(program), rest);
            command.stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
            let status = command.status().await.map_err(|e| format!("exec: {e}"))?;
            if status.success() { Ok(()) } else { Err(format!("exec probe exited with {status}")) }
        } else {
            Err("probe without a handler".into())
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("probe timed out after {timeout:?}")),
    }
}
