//! A real control plane on loopback: etcd, kube-apiserver (TLS, client-certificate
//! authentication, RBAC authorization, service-account token signing), kube-controller-manager
//! (garbage collector, Deployments/ReplicaSets, service accounts and their tokens, namespace
//! deletion, the root CA ConfigMap) and kube-scheduler, each a child process with its log in the
//! bed's directory. The admin kubeconfig (`system:masters`) is written next to them.

use crate::assets::Assets;
use crate::pki::Pki;
use crate::process::{Process, Watchdog, tail};
use crate::{Error, Result};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a starting API server may take to answer `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long processes get between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Where temporary beds live: a directory pods can traverse that no pod mounts over.
const BED_PARENT: &str = "/var/tmp";
/// The Service ClusterIP range (its first address is the `kubernetes` Service).
const SERVICE_CIDR: &str = "10.0.0.0/24";

/// Where the bed keeps its files.
#[derive(Debug, Clone, Default)]
pub struct ControlPlaneOptions {
    /// A directory to keep (certificates, etcd data, logs, kubeconfig); a temporary one removed
    /// on drop when `None`.
    pub dir: Option<PathBuf>,
    /// The binaries; [`Assets::locate`] when `None`.
    pub assets: Option<Assets>,
}

#[derive(Debug, Clone, Copy)]
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
}

/// The running processes (behind a lock so that a shared bed can be restarted).
#[derive(Debug, Default)]
struct Processes {
    etcd: Option<Process>,
    apiserver: Option<Process>,
    controller_manager: Option<Process>,
    scheduler: Option<Process>,
}

impl Processes {
    fn check(&mut self) -> Result<()> {
        for process in [&mut self.etcd, &mut self.apiserver, &mut self.controller_manager, &mut self.scheduler]
            .into_iter()
            .flatten()
        {
            process.check_running()?;
        }
        Ok(())
    }
}

/// A running control plane. Dropping it stops every process.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    assets: Assets,
    pki: Pki,
    ports: Ports,
    kubeconfig: PathBuf,
    processes: Mutex<Processes>,
    watchdog: Arc<Watchdog>,
    _temp: Option<tempfile::TempDir>,
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(Error::io("finding a free port".to_owned()))?;
    listener.local_addr().map(|a| a.port()).map_err(Error::io("finding a free port".to_owned()))
}

impl ControlPlane {
    /// Creates the certificates and starts etcd, the API server, the controller manager and
    /// the scheduler; returns once the API server is ready and the controller manager has
    /// created the `default` ServiceAccount (so pods can be created).
    pub async fn start(options: ControlPlaneOptions) -> Result<Self> {
        let assets = match options.assets {
            Some(assets) => assets,
            None => tokio::task::spawn_blocking(Assets::locate)
                .await
                .map_err(|e| Error::Io { step: "locating the binaries".into(), source: std::io::Error::other(e) })??,
        };
        let (temp, dir) = match options.dir {
            Some(dir) => (None, dir),
            None => {
                // Not under /tmp: pods get their own /tmp mounted over it, which would hide the
                // bed's files (and the images' executables) from them.
                let temp = tempfile::Builder::new()
                    .prefix("duckmesh-testbed-")
                    .permissions(std::fs::Permissions::from_mode(0o755))
                    .tempdir_in(BED_PARENT)
                    .map_err(Error::io("creating the bed's directory".to_owned()))?;
                let dir = temp.path().to_owned();
                (Some(temp), dir)
            }
        };
        std::fs::create_dir_all(dir.join("logs")).map_err(Error::io(format!("creating {}", dir.display())))?;
        let pki = Pki::create(&dir.join("pki"))?;
        let watchdog = Arc::new(Watchdog::start(&dir.join("watchdog"))?);
        if temp.is_some() {
            // A bed in a `static` is never dropped: the watchdog removes its files instead.
            watchdog.remove_on_exit(&dir);
        }
        let ports = Ports { etcd_client: free_port()?, etcd_peer: free_port()?, apiserver: free_port()? };
        let kubeconfig = dir.join("admin.kubeconfig");
        let bed = Self {
            dir,
            assets,
            pki,
            ports,
            kubeconfig,
            processes: Mutex::new(Processes::default()),
            watchdog,
            _temp: temp,
        };
        bed.write_kubeconfigs()?;
        let started = Instant::now();
        bed.start_etcd()?;
        bed.start_apiserver()?;
        bed.wait_ready().await?;
        let controller_manager = bed.spawn("kube-controller-manager", bed.controller_manager_command())?;
        let scheduler = bed.spawn("kube-scheduler", bed.scheduler_command())?;
        {
            let mut processes = bed.lock();
            processes.controller_manager = Some(controller_manager);
            processes.scheduler = Some(scheduler);
        }
        bed.wait_for_default_service_account().await?;
        tracing::info!(elapsed = ?started.elapsed(), server = %bed.server(), "control plane ready");
        Ok(bed)
    }

    /// The API server's URL (`https://127.0.0.1:<port>`).
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.apiserver)
    }

    /// The API server's port.
    pub fn apiserver_port(&self) -> u16 {
        self.ports.apiserver
    }

    /// The admin kubeconfig's path.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The bed's directory (certificates, logs, etcd data).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The certificates.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The binaries.
    pub fn assets(&self) -> &Assets {
        &self.assets
    }

    /// The watchdog that stops the bed's processes if this process dies (the test node
    /// registers its pods' processes with it too).
    pub fn watchdog(&self) -> Arc<Watchdog> {
        Arc::clone(&self.watchdog)
    }

    /// An admin client.
    pub async fn client(&self) -> Result<Client> {
        client_from(&self.kubeconfig).await
    }

    /// The pinned `kubectl`, with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(self.assets.path("kubectl"));
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", self.dir.join("kubectl-cache"))
            .env_remove("KUBERNETES_SERVICE_HOST");
        command
    }

    /// Writes a kubeconfig authenticating as `namespace/service_account` with a fresh bound
    /// token (valid for `lifetime`), to `path`.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        service_account: &str,
        lifetime: Duration,
        path: &Path,
    ) -> Result<()> {
        let client = self.client().await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client, namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: i64::try_from(lifetime.as_secs()).ok(),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let issued = accounts.create_token_request(service_account, &PostParams::default(), &request).await?;
        let token = issued.status.map(|s| s.token).unwrap_or_default();
        let user = serde_json::json!({ "token": token });
        write_kubeconfig(path, &self.server(), &self.pki.ca, &format!("{namespace}/{service_account}"), user)
    }

    /// Stops the API server and etcd (SIGTERM), then starts both again on the same ports and
    /// data, and waits until the API server is ready: what a control-plane upgrade or an
    /// outage looks like to clients.
    pub async fn restart_apiserver_and_etcd(&self) -> Result<()> {
        let (apiserver, etcd) = {
            let mut processes = self.lock();
            (processes.apiserver.take(), processes.etcd.take())
        };
        let watchdog = Arc::clone(&self.watchdog);
        tokio::task::spawn_blocking(move || {
            for mut process in [apiserver, etcd].into_iter().flatten() {
                process.stop(STOP_GRACE, &watchdog);
            }
        })
        .await
        .map_err(|e| Error::Io { step: "stopping the API server".into(), source: std::io::Error::other(e) })?;
        self.start_etcd()?;
        self.start_apiserver()?;
        self.wait_ready().await
    }

    /// Stops every process (scheduler, controller manager, API server, etcd).
    pub fn stop(&self) {
        let mut processes = self.lock();
        for process in [
            processes.scheduler.take(),
            processes.controller_manager.take(),
            processes.apiserver.take(),
            processes.etcd.take(),
        ]
        .into_iter()
        .flatten()
        {
            let mut process = process;
            process.stop(STOP_GRACE, &self.watchdog);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Processes> {
        self.processes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn spawn(&self, name: &str, command: Command) -> Result<Process> {
        Process::spawn(name, command, &self.dir.join("logs").join(format!("{name}.log")), &self.watchdog)
    }

    fn start_etcd(&self) -> Result<()> {
        let client_url = format!("http://127.0.0.1:{}", self.ports.etcd_client);
        let peer_url = format!("http://127.0.0.1:{}", self.ports.etcd_peer);
        let mut command = Command::new(self.assets.path("etcd"));
        command
            .arg("--name=testbed")
            .arg(format!("--data-dir={}", self.dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=testbed={peer_url}"))
            // A test bed's state is thrown away: no fsync, far less disk load.
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn");
        let process = self.spawn("etcd", command)?;
        self.lock().etcd = Some(process);
        Ok(())
    }

    fn start_apiserver(&self) -> Result<()> {
        let pki = &self.pki;
        let path = |p: &Path| p.display().to_string();
        let mut command = Command::new(self.assets.path("kube-apiserver"));
        command
            .arg(format!("--etcd-servers=http://127.0.0.1:{}", self.ports.etcd_client))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={}", self.ports.apiserver))
            .arg(format!("--cert-dir={}", self.dir.join("apiserver-certs").display()))
            .arg(format!("--tls-cert-file={}", path(&pki.apiserver.cert)))
            .arg(format!("--tls-private-key-file={}", path(&pki.apiserver.key)))
            .arg(format!("--client-ca-file={}", path(&pki.ca)))
            .arg("--authorization-mode=RBAC")
            .arg("--anonymous-auth=false")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-account-key-file={}", path(&pki.service_account_public_key)))
            .arg(format!("--service-account-signing-key-file={}", path(&pki.service_account_key)))
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
            .arg(format!("--kubelet-client-certificate={}", path(&pki.admin.cert)))
            .arg(format!("--kubelet-client-key={}", path(&pki.admin.key)))
            .arg(format!("--kubelet-certificate-authority={}", path(&pki.ca)))
            .arg("--kubelet-preferred-address-types=InternalIP")
            .arg("--endpoint-reconciler-type=none")
            .arg("--allow-privileged=true")
            .arg("--profiling=false")
            .arg("--v=1");
        let process = self.spawn("kube-apiserver", command)?;
        self.lock().apiserver = Some(process);
        Ok(())
    }

    /// A controller-manager or scheduler command: its kubeconfig for API access and for
    /// delegated authentication and authorization, no leader election, no serving port.
    fn component_command(&self, binary: &str, kubeconfig: &str) -> Command {
        let kubeconfig = self.dir.join(kubeconfig);
        let mut command = Command::new(self.assets.path(binary));
        for flag in ["kubeconfig", "authentication-kubeconfig", "authorization-kubeconfig"] {
            command.arg(format!("--{flag}={}", kubeconfig.display()));
        }
        command.args(["--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0", "--v=1"]);
        command
    }

    fn controller_manager_command(&self) -> Command {
        let mut command = self.component_command("kube-controller-manager", "controller-manager.kubeconfig");
        command
            .arg(format!("--service-account-private-key-file={}", self.pki.service_account_key.display()))
            .arg(format!("--root-ca-file={}", self.pki.ca.display()))
            .arg("--use-service-account-credentials=true")
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
            // Every controller a cluster runs but those that need a cloud or pod CIDRs. The node
            // lifecycle controller stays: it lifts the not-ready taint once the test node
            // reports Ready (and would taint it again if the node stopped heartbeating).
            .arg("--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller")
            .arg("--concurrent-gc-syncs=5");
        command
    }

    fn scheduler_command(&self) -> Command {
        self.component_command("kube-scheduler", "scheduler.kubeconfig")
    }

    fn write_kubeconfigs(&self) -> Result<()> {
        let cert_user = |files: &crate::pki::CertFiles| {
            serde_json::json!({
                "client-certificate": files.cert.display().to_string(),
                "client-key": files.key.display().to_string(),
            })
        };
        write_kubeconfig(&self.kubeconfig, &self.server(), &self.pki.ca, "admin", cert_user(&self.pki.admin))?;
        write_kubeconfig(
            &self.dir.join("controller-manager.kubeconfig"),
            &self.server(),
            &self.pki.ca,
            "system:kube-controller-manager",
            cert_user(&self.pki.controller_manager),
        )?;
        write_kubeconfig(
            &self.dir.join("scheduler.kubeconfig"),
            &self.server(),
            &self.pki.ca,
            "system:kube-scheduler",
            cert_user(&self.pki.scheduler),
        )
    }

    fn check_processes(&self) -> Result<()> {
        self.lock().check()
    }

    async fn wait_ready(&self) -> Result<()> {
        let started = Instant::now();
        let mut last_error = String::from("no answer yet");
        while started.elapsed() < READY_TIMEOUT {
            self.check_processes()?;
            match self.readyz().await {
                Ok(()) => return Ok(()),
                Err(error) => last_error = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let log = self.lock().apiserver.as_ref().map(|p| tail(p.log(), 30)).unwrap_or_default();
        Err(Error::NotReady { what: "kube-apiserver /readyz".into(), waited: READY_TIMEOUT, last_error, log })
    }

    async fn readyz(&self) -> Result<()> {
        let client = self.client().await?;
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| Error::Pki { step: "building a request".into(), message: e.to_string() })?;
        client.request_text(request).await?;
        Ok(())
    }

    async fn wait_for_default_service_account(&self) -> Result<()> {
        let client = self.client().await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client, "default");
        let started = Instant::now();
        let mut last_error = String::from("not created yet");
        while started.elapsed() < READY_TIMEOUT {
            self.check_processes()?;
            match accounts.get_opt("default").await {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => {}
                Err(error) => last_error = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let log = self.lock().controller_manager.as_ref().map(|p| tail(p.log(), 30)).unwrap_or_default();
        Err(Error::NotReady {
            what: "the default ServiceAccount (kube-controller-manager)".into(),
            waited: READY_TIMEOUT,
            last_error,
            log,
        })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client from a kubeconfig file.
pub async fn client_from(path: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// Writes a one-context kubeconfig for `server`, trusting `ca`, with `user`'s credentials.
pub fn write_kubeconfig(path: &Path, server: &str, ca: &Path, user_name: &str, user: serde_json::Value) -> Result<()> {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testbed", "cluster": {"server": server, "certificate-authority": ca.display().to_string()}}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": user_name, "namespace": "default"}}],
        "current-context": "testbed",
    });
    let text = serde_yaml_ng::to_string(&config)
        .map_err(|e| Error::Io { step: "encoding a kubeconfig".into(), source: std::io::Error::other(e) })?;
    std::fs::write(path, text).map_err(Error::io(format!("writing {}", path.display())))
}
