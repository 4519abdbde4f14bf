//! The end-to-end harness: one real control plane and test node per test binary (started on
//! first use, on a runtime of its own so it outlives each test's runtime), and per test a
//! namespace, a catalog database, an S3 prefix, the operator's least-privilege RBAC and
//! `duckmesh operator` processes running under that ServiceAccount.

pub use crate::common::{free_port, s3_env};
use duckmesh_resources::{Condition, Dataset, Job, Task};
use duckmesh_storage::S3Config;
use duckmesh_storage::testing::MotoServer;
use duckmesh_testbed::{Bed, BedOptions};
use duckmesh_testkit::TestDatabase;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::wait::{Condition as WaitCondition, await_condition};
use kube::{Client, Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, SemaphorePermit};

/// The repository root.
pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
/// The image name worker pods use; the test node runs the `duckmesh` binary for it.
pub const IMAGE: &str = "duckmesh";
/// The field manager of the test's writes.
pub const MANAGER: &str = "duckmesh-e2e";
/// How long a pipeline may take on this 2-core machine under a loaded test run.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// End-to-end tests that may run at once (each runs an operator and worker pods; the machine
/// has two cores).
static SLOTS: Semaphore = Semaphore::const_new(3);

struct Shared {
    bed: Bed,
    _images: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// The shared bed (started by the first test that asks).
fn shared() -> &'static Shared {
    SHARED.get_or_init(|| {
        // Started on a thread of its own: a test's runtime cannot block on another runtime.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("testbed")
                .enable_all()
                .build()
                .expect("bed runtime");
            let images = image_dir();
            let bed = runtime.block_on(start_bed(images.path())).expect("the Kubernetes test bed starts");
            // Statics are never dropped: the bed's watchdog removes the image when this process ends.
            bed.control_plane().watchdog().remove_on_exit(images.path());
            Shared { bed, _images: images, _runtime: runtime }
        })
        .join()
        .expect("bed thread")
    })
}

/// The image table: `duckmesh` → a copy (or hard link) of the binary under test with DuckDB's
/// library next to it (the binary's rpath has `$ORIGIN`), in a directory no pod mounts over.
pub fn image_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("duckmesh-e2e-image-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir_in("/var/tmp")
        .expect("image dir");
    let place = |from: &Path, name: &str| {
        let to = dir.path().join(name);
        if std::fs::hard_link(from, &to).is_err() {
            std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copying {} into the image: {e}", from.display()));
        }
    };
    place(Path::new(env!("CARGO_BIN_EXE_duckmesh")), "duckmesh");
    let lib = Path::new(REPO).join(env!("DUCKDB_LIB_DIR")).join("libduckdb.so");
    let lib = if lib.exists() { lib } else { Path::new(env!("DUCKDB_LIB_DIR")).join("libduckdb.so") };
    place(&lib, "libduckdb.so");
    dir
}

/// Starts a bed whose test node runs the `duckmesh` image from `images`.
pub async fn start_bed(images: &Path) -> duckmesh_testbed::Result<Bed> {
    Bed::start(BedOptions {
        images: BTreeMap::from([(IMAGE.to_owned(), images.join("duckmesh"))]),
        ..BedOptions::default()
    })
    .await
}

/// The RBAC rules the operator ships with (deployments/kubernetes/operator-rbac.yaml): the
/// ClusterRole's rules and the leader-election Role's rules.
pub fn shipped_rules() -> (Vec<PolicyRule>, Vec<PolicyRule>) {
    let text = std::fs::read_to_string(Path::new(REPO).join("deployments/kubernetes/operator-rbac.yaml"))
        .expect("operator-rbac.yaml");
    let mut cluster = None;
    let mut election = None;
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let value: serde_json::Value = serde::Deserialize::deserialize(document).expect("YAML");
        let rules = || serde_json::from_value::<Vec<PolicyRule>>(value["rules"].clone()).expect("rules");
        match (value["kind"].as_str(), value["metadata"]["name"].as_str()) {
            (Some("ClusterRole"), Some("duckmesh-operator")) => cluster = Some(rules()),
            (Some("Role"), Some("duckmesh-operator-leader-election")) => election = Some(rules()),
            _ => {}
        }
    }
    (cluster.expect("the ClusterRole"), election.expect("the leader-election Role"))
}

/// One test's world.
pub struct Env<'a> {
    /// The test's namespace.
    pub ns: String,
    /// An admin client.
    pub client: Client,
    /// The catalog database.
    pub db: TestDatabase,
    /// The object store (a fresh prefix of the shared moto bucket).
    pub s3: S3Config,
    /// Operator logs and kubeconfigs.
    pub dir: tempfile::TempDir,
    /// The operator's ServiceAccount kubeconfig.
    pub operator_kubeconfig: PathBuf,
    /// Operator processes started by [`Env::start_operator`], by identity.
    pub operators: BTreeMap<String, Child>,
    /// The metrics port of each operator replica.
    pub metrics_ports: BTreeMap<String, u16>,
    bed: &'a Bed,
    _slot: SemaphorePermit<'static>,
}

impl Env<'static> {
    /// A namespace `e2e-<name>` with the catalog Secret, the store Secret and the operator's
    /// RBAC, on the shared bed.
    pub async fn new(name: &str) -> Self {
        let shared = tokio::task::spawn_blocking(shared).await.expect("bed");
        Env::on(&shared.bed, name).await
    }
}

impl<'a> Env<'a> {
    /// Like [`Env::new`] on a bed of the test's own (for tests that disrupt the control plane).
    pub async fn on(bed: &'a Bed, name: &str) -> Self {
        let slot = SLOTS.acquire().await.expect("slot");
        let client = duckmesh_testbed::client_from(bed.control_plane().kubeconfig()).await.expect("admin client");
        let ns = format!("e2e-{name}");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).expect("ns");
        namespaces.create(&PostParams::default(), &namespace).await.expect("create namespace");
        install_crds(bed);

        let db = TestDatabase::new().await.expect("test database");
        let moto = MotoServer::shared().await.expect("moto");
        let s3 = moto.scoped_config();
        let credentials = s3.credentials.clone().expect("moto credentials");
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        for (name, data) in [
            ("duckmesh-catalog", serde_json::json!({"url": db.url()})),
            (
                "duckmesh-store",
                serde_json::json!({
                    "AWS_ACCESS_KEY_ID": credentials.access_key_id,
                    "AWS_SECRET_ACCESS_KEY": credentials.secret_access_key,
                }),
            ),
        ] {
            let secret: Secret =
                serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "stringData": data}))
                    .expect("secret");
            secrets.create(&PostParams::default(), &secret).await.expect("create secret");
        }

        // The operator's ServiceAccount with exactly the shipped rules, as a Role in the namespace
        // it watches, and the worker pods' account with none.
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        for account in ["duckmesh-operator", "duckmesh-worker"] {
            let sa: ServiceAccount =
                serde_json::from_value(serde_json::json!({"metadata": {"name": account}})).expect("sa");
            accounts.create(&PostParams::default(), &sa).await.expect("create service account");
        }
        let (rules, election) = shipped_rules();
        let roles: Api<Role> = Api::namespaced(client.clone(), &ns);
        let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
        for (role, rules) in [("duckmesh-operator", rules), ("duckmesh-operator-leader-election", election)] {
            let mut object = Role::default();
            object.metadata.name = Some(role.to_owned());
            object.rules = Some(rules);
            roles.create(&PostParams::default(), &object).await.expect("create role");
            let mut binding = RoleBinding {
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: role.into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: "duckmesh-operator".into(),
                    namespace: Some(ns.clone()),
                    ..Subject::default()
                }]),
                ..RoleBinding::default()
            };
            binding.metadata.name = Some(role.to_owned());
            bindings.create(&PostParams::default(), &binding).await.expect("create role binding");
        }
        let dir = tempfile::Builder::new().prefix(&format!("duckmesh-e2e-{name}-")).tempdir().expect("dir");
        let operator_kubeconfig = dir.path().join("operator.kubeconfig");
        bed.control_plane()
            .service_account_kubeconfig(&ns, "duckmesh-operator", Duration::from_secs(3600), &operator_kubeconfig)
            .await
            .expect("operator kubeconfig");
        Self {
            ns,
            client,
            db,
            s3,
            dir,
            operator_kubeconfig,
            operators: BTreeMap::new(),
            metrics_ports: BTreeMap::new(),
            bed,
            _slot: slot,
        }
    }

    /// `kubectl` (the pinned release's own) as the admin, in the test's namespace.
    pub fn kubectl(&self) -> Command {
        let mut command = self.bed.kubectl();
        command.args(["--namespace", &self.ns]);
        command
    }

    /// Runs kubectl with `args`; its stdout, or a panic with its stderr.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl().args(args).output().expect("kubectl runs");
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `duckmesh operator` watching the test's namespace as the operator's ServiceAccount.
    pub fn operator_command(&self, identity: &str, metrics_port: u16) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_duckmesh"));
        command
            .arg("operator")
            .args(["--namespace", &self.ns, "--lease-namespace", &self.ns])
            .args(["--worker-image", IMAGE, "--service-account", "duckmesh-worker"])
            .args(["--worker-env-secret", "duckmesh-store", "--identity", identity])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", &self.operator_kubeconfig)
            .env("DUCKMESH_DATABASE_URL", self.db.url())
            .env("DUCKMESH_S3_BUCKET", &self.s3.bucket)
            .env("DUCKMESH_S3_PREFIX", self.s3.prefix.as_deref().unwrap_or_default())
            .env("DUCKMESH_S3_ENDPOINT", self.s3.endpoint.as_deref().unwrap_or_default())
            .env("DUCKMESH_S3_REGION", &self.s3.region)
            .env("DUCKMESH_LOG", "info");
        command
    }

    /// Starts an operator replica named `identity`; its log goes to the test's directory.
    pub fn start_operator(&mut self, identity: &str) -> u32 {
        let log = self.log_path(identity);
        let out = std::fs::File::options().create(true).append(true).open(&log).expect("log");
        let err = out.try_clone().expect("log");
        let port = free_port();
        self.metrics_ports.insert(identity.to_owned(), port);
        let child = self
            .operator_command(identity, port)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("duckmesh operator starts");
        let pid = child.id();
        if let Some(mut old) = self.operators.insert(identity.to_owned(), child) {
            let _ = old.kill();
            let _ = old.wait();
        }
        pid
    }

    /// The sum of `duckmesh_reconcile_total` over every controller and result, as operator
    /// `identity` exports it.
    pub fn reconciles(&self, identity: &str) -> f64 {
        let port = self.metrics_ports[identity];
        let text = http_get(port, "/metrics").expect("the operator serves /metrics");
        text.lines()
            .filter(|line| line.starts_with("duckmesh_reconcile_total"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The log file of operator `identity`.
    pub fn log_path(&self, identity: &str) -> PathBuf {
        self.dir.path().join(format!("operator-{identity}.log"))
    }

    /// The operator's log so far.
    pub fn operator_log(&self, identity: &str) -> String {
        std::fs::read_to_string(self.log_path(identity)).unwrap_or_default()
    }

    /// Sends `signal` to operator `identity`.
    pub fn signal_operator(&self, identity: &str, signal: nix::sys::signal::Signal) {
        let child = self.operators.get(identity).expect("operator started");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).expect("signal");
    }

    /// Waits for operator `identity` to exit, up to `timeout`; its exit status, or `None`.
    pub async fn wait_operator_exit(&mut self, identity: &str, timeout: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        loop {
            let child = self.operators.get_mut(identity).expect("operator started");
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if started.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kubectl apply --server-side` of a file in the test's namespace.
    pub fn apply_file(&self, path: &str) -> String {
        let path = Path::new(REPO).join(path);
        self.kubectl_ok(&["apply", "--server-side", "--field-manager", MANAGER, "-f", &path.display().to_string()])
    }

    /// `kubectl apply --server-side` of YAML text in the test's namespace.
    pub fn apply_yaml(&self, yaml: &str) -> String {
        let file = self.dir.path().join(format!("apply-{}.yaml", rand_suffix()));
        std::fs::write(&file, yaml).expect("write");
        self.kubectl_ok(&["apply", "--server-side", "--field-manager", MANAGER, "-f", &file.display().to_string()])
    }

    /// An API handle in the test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Waits until `condition` holds for the object `name`, up to `timeout`; the object.
    pub async fn wait_for<K>(&self, name: &str, what: &str, timeout: Duration, condition: impl WaitCondition<K>) -> K
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + 'static,
        <K as Resource>::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let wait = await_condition(self.api::<K>(), name, condition);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(Some(object))) => object,
            Ok(Ok(None)) => panic!("{name} was deleted while waiting for {what}"),
            Ok(Err(error)) => panic!("watching {name} for {what}: {error}"),
            Err(_) => panic!("timed out after {timeout:?} waiting for {name}: {what}\n{}", self.diagnostics()),
        }
    }

    /// Waits for a Job's condition `type_` to be `True`.
    pub async fn wait_job(&self, name: &str, type_: &'static str, timeout: Duration) -> Job {
        self.wait_for::<Job>(name, &format!("condition {type_}=True"), timeout, job_condition(type_, "True")).await
    }

    /// What the cluster and the operators say, for a failure message.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for args in [
            vec!["get", "jobs.duckmesh.io,tasks.duckmesh.io,datasets.duckmesh.io,pods", "-o", "wide"],
            vec!["get", "events", "--sort-by=.lastTimestamp"],
        ] {
            if let Ok(output) = self.kubectl().args(&args).output() {
                out.push_str(&format!(
                    "$ kubectl {}\n{}{}\n",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
        }
        for identity in self.operators.keys() {
            let log = self.operator_log(identity);
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!(
                "--- operator {identity} (last 40 lines)\n{}\n",
                lines[lines.len().saturating_sub(40)..].join("\n")
            ));
        }
        out
    }

    /// Every catalog task: name → (phase, committed snapshots, succeeded attempts).
    pub async fn task_commits(&self) -> BTreeMap<String, (String, i64, i64)> {
        let pool = sqlx::PgPool::connect(self.db.url()).await.expect("pool");
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT t.name, t.phase,
                    (SELECT count(*) FROM snapshots s WHERE s.task_id = t.id),
                    (SELECT count(*) FROM attempts a WHERE a.task_id = t.id AND a.state = 'Succeeded')
               FROM tasks t",
        )
        .fetch_all(&pool)
        .await
        .expect("task commits");
        pool.close().await;
        rows.into_iter().map(|(name, phase, snapshots, succeeded)| (name, (phase, snapshots, succeeded))).collect()
    }

    /// Asserts every catalog task succeeded with exactly one committed output and one
    /// succeeded attempt (SPEC §2: at most one commit per task, no task lost).
    pub async fn assert_each_task_committed_once(&self, expected_tasks: usize) {
        let commits = self.task_commits().await;
        assert_eq!(commits.len(), expected_tasks, "{commits:?}");
        for (name, (phase, snapshots, succeeded)) in &commits {
            assert_eq!((phase.as_str(), *snapshots, *succeeded), ("Succeeded", 1, 1), "task {name}: {commits:?}");
        }
    }
}

impl Drop for Env<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
        for child in self.operators.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Applies the CRDs the way users do (`kubectl apply --server-side`) and waits until they are
/// Established; idempotent, so every test may call it.
pub fn install_crds(bed: &Bed) {
    static DONE: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
    let mut done = DONE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if done.insert(bed.control_plane().server()) {
        let crds = Path::new(REPO).join("crds/duckmesh.io.yaml");
        let output = bed
            .kubectl()
            .args(["apply", "--server-side", "--field-manager", MANAGER, "-f"])
            .arg(&crds)
            .output()
            .expect("kubectl");
        assert!(output.status.success(), "installing the CRDs: {output:?}");
        let output = bed
            .kubectl()
            .args(["wait", "--for=condition=Established", "--timeout=60s", "-f"])
            .arg(&crds)
            .output()
            .expect("kubectl");
        assert!(output.status.success(), "CRDs established: {output:?}");
    }
}

/// A job condition `type_` with `status`.
pub fn job_condition(type_: &'static str, status: &'static str) -> impl WaitCondition<Job> {
    move |job: Option<&Job>| job.and_then(|j| j.status.as_ref()).is_some_and(|s| has(&s.conditions, type_, status))
}

/// Whether `conditions` has `type_` with `status`.
pub fn has(conditions: &[Condition], type_: &str, status: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && serde_json::to_value(c.status).ok() == Some(status.into()))
}

/// The Dataset `name`'s current snapshot, if any.
pub fn snapshot_of(dataset: &Dataset) -> Option<i64> {
    dataset.status.as_ref().and_then(|s| s.current_snapshot)
}

/// The Task resources of Job `job`.
pub async fn tasks_of(env: &Env<'_>, job: &str) -> Vec<Task> {
    env.api::<Task>().list(&ListParams::default().labels(&format!("duckmesh.io/job={job}"))).await.expect("tasks").items
}

/// `GET path` on 127.0.0.1:`port`; the body of a 200 answer.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_owned()))
}

fn rand_suffix() -> String {
    format!("{:x}", Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id()) ^ rand_nanos())
}

fn rand_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// Rows each task of [`chain_job`] hashes: enough work for a worker to be caught running
/// (a few seconds on this machine), little enough to keep the suite quick.
pub const CHAIN_ROWS: u64 = 150_000_000;

/// A Job `name` of `length` tasks in a chain (`t1 → t2 → …`), each hashing [`CHAIN_ROWS`]
/// rows into its own Dataset `<name>-tK`, with the Datasets in the same file.
pub fn chain_job(name: &str, length: usize) -> String {
    let mut yaml = String::new();
    for k in 1..=length {
        yaml.push_str(&format!(
            "apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata: {{name: {name}-t{k}}}\nspec: {{}}\n---\n"
        ));
    }
    yaml.push_str(&format!(
        "apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n  tasks:\n"
    ));
    for k in 1..=length {
        let depends = if k == 1 { String::new() } else { format!(", dependsOn: [t{}]", k - 1) };
        yaml.push_str(&format!(
            "    - {{name: t{k}{depends}, maxAttempts: 4, output: {{dataset: {name}-t{k}}}, sql: \"SELECT {k} AS step, sum(hash(i)) AS h FROM range({CHAIN_ROWS}) t(i)\"}}\n"
        ));
    }
    yaml
}

/// Waits for a worker pod of Job `job` to be Running; its name.
pub async fn running_worker(env: &Env<'_>, job: &str, timeout: Duration) -> String {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = env.api();
    let selector = format!("app.kubernetes.io/component=worker,duckmesh.io/job={job}");
    let started = Instant::now();
    loop {
        let list = pods.list(&ListParams::default().labels(&selector)).await.expect("pods");
        if let Some(pod) = list.items.iter().find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        }) {
            return pod.name_any();
        }
        assert!(started.elapsed() < timeout, "no running worker pod of {job}:\n{}", env.diagnostics());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Catalog tasks with a live (Leased or Running) attempt right now.
pub async fn live_attempts(env: &Env<'_>) -> i64 {
    let pool = sqlx::PgPool::connect(env.db.url()).await.expect("pool");
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM attempts WHERE state IN ('Leased', 'Running')")
        .fetch_one(&pool)
        .await
        .expect("live attempts");
    pool.close().await;
    count
}

/// The holder of the operator's Lease in the test's namespace.
pub async fn lease_holder(env: &Env<'_>) -> Option<String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = env.api();
    leases
        .get_opt("duckmesh-operator")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Waits until the Lease is held by `identity`; how long that took.
pub async fn wait_for_holder(env: &Env<'_>, identity: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if lease_holder(env).await.as_deref() == Some(identity) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "{identity} did not take the Lease within {timeout:?} (holder {:?})\n{}",
            lease_holder(env).await,
            env.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
