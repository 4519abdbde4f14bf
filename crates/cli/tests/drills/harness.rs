//! The drill harness: DuckMesh's components as real `duckmesh` processes (`api`,
//! `coordinator`, `dev` with its scheduler and worker processes) on a real PostgreSQL catalog
//! and a prefix of the moto bucket, so that a drill can SIGKILL, SIGSTOP and restart each one;
//! an optional fault proxy in front of moto (503s, stalls, outages); open-loop ingest producers
//! that retry every post until it is acknowledged and record every acknowledged dedupe key for
//! the history checker; `/metrics` scrapes; and the one-line drill result.
//!
//! Shared by the drills (`tests/drills`) and the chaos run (`benches/chaos.rs`).
#![allow(dead_code)] // each includer uses part of it

use duckmesh_catalog::Catalog;
use duckmesh_history::{AckedRecords, Expectations, HistoryReport, PinnedRead};
use duckmesh_query::client::{ClientError, QueryClient};
use duckmesh_storage::testing::{FaultConfig, FaultProxy, MotoServer};
use duckmesh_storage::{ObjectStore, S3Config, S3Store};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The ingest dataset every drill loads: `id` is the dedupe key.
pub const EVENTS_YAML: &str = r#"apiVersion: duckmesh.io/v1alpha1
kind: Dataset
metadata:
  name: events
spec:
  schema:
    - {name: id, type: VARCHAR}
    - {name: n, type: BIGINT}
  ingest:
    dedupeKey: id
    rateLimitPerMinute: 100000000
    maxPendingRecords: 10000000
"#;

/// A Job of `round`: a task that computes for a while (so that a kill lands mid-task), one
/// that reads the ingested events, and one that depends on both. Each task may take 20
/// attempts: a chaos run kills workers often, and a task that ran out of attempts is correct
/// behaviour but ends the round early.
pub fn job_yaml(round: usize, work_rows: u64, read_events: bool) -> String {
    let count = if read_events {
        "      inputs: [{dataset: events}]\n      sql: SELECT count(*) AS n, count(DISTINCT id) AS distinct_ids FROM events\n"
    } else {
        "      sql: SELECT 1 AS n, 1 AS distinct_ids\n"
    };
    format!(
        r#"---
apiVersion: duckmesh.io/v1alpha1
kind: Dataset
metadata:
  name: work
spec: {{}}
---
apiVersion: duckmesh.io/v1alpha1
kind: Dataset
metadata:
  name: counts
spec: {{}}
---
apiVersion: duckmesh.io/v1alpha1
kind: Dataset
metadata:
  name: rounds
spec: {{}}
---
apiVersion: duckmesh.io/v1alpha1
kind: Job
metadata:
  name: round-{round}
spec:
  maxParallel: 2
  tasks:
    - name: work
      maxAttempts: 20
      output: {{dataset: work, mode: overwrite}}
      sql: SELECT {round} AS round, sum(i % 7) AS s, count(*) AS rows FROM range({work_rows}) AS t(i)
    - name: count
      maxAttempts: 20
      output: {{dataset: counts, mode: overwrite}}
{count}    - name: record
      maxAttempts: 20
      dependsOn: [work, count]
      output: {{dataset: rounds, mode: append}}
      sql: SELECT {round} AS round, now() AS at
"#
    )
}

/// The component a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `duckmesh api`.
    Api,
    /// `duckmesh coordinator`.
    Coordinator,
    /// `duckmesh dev` on the stack's catalog and bucket: scheduler, worker processes, and its
    /// own API and coordinator.
    Dev,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Coordinator => "coordinator",
            Role::Dev => "dev",
        }
    }
}

/// A running `duckmesh` process.
pub struct Proc {
    pub role: Role,
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs it and reaps it.
    pub fn kill9(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            self.kill9();
        }
    }
}

/// Where the catalog lives.
pub enum Database {
    /// A database on the shared test server.
    Shared(duckmesh_testkit::TestDatabase),
    /// A private server of its own, which a drill may pause or restart.
    Private(duckmesh_localpg::LocalCluster),
}

/// One drill's (or chaos run's) world.
pub struct Stack {
    pub database: Database,
    pub url: String,
    pub catalog: Catalog,
    pub s3: S3Config,
    pub store: Arc<dyn ObjectStore>,
    pub proxy: Option<FaultProxy>,
    pub dir: tempfile::TempDir,
    pub api_port: u16,
    pub coordinator_port: u16,
    pub dev_port: u16,
    pub runs: AtomicU64,
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Options of a stack.
#[derive(Default)]
pub struct StackOptions {
    /// A private PostgreSQL (to pause or restart) instead of the shared test server.
    pub private_postgres: bool,
    /// Processes reach the bucket through a fault proxy.
    pub fault_proxy: bool,
}

impl Stack {
    pub async fn new(options: StackOptions) -> Self {
        let (database, url) = if options.private_postgres {
            let cluster = tokio::task::spawn_blocking(|| {
                duckmesh_localpg::LocalCluster::start(&duckmesh_localpg::ClusterOptions::ephemeral())
            })
            .await
            .expect("join")
            .expect("private PostgreSQL");
            let url = cluster.url("postgres");
            (Database::Private(cluster), url)
        } else {
            let db = duckmesh_testkit::TestDatabase::new().await.expect("test database");
            let url = db.url().to_owned();
            (Database::Shared(db), url)
        };
        let catalog = Catalog::connect(
            &duckmesh_catalog::ConnectOptions::new(url.clone()),
            duckmesh_catalog::CatalogConfig::default(),
        )
        .await
        .expect("catalog");
        catalog.migrate().await.expect("migrate");
        let moto = MotoServer::shared().await.expect("S3 test server (moto_server on PATH)");
        let direct = moto.scoped_config();
        let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(direct.clone()).await.expect("S3 store"));
        let (s3, proxy) = if options.fault_proxy {
            let proxy = FaultProxy::start(moto.endpoint(), FaultConfig::default()).await.expect("fault proxy");
            let mut via = direct.clone();
            via.endpoint = Some(proxy.endpoint());
            (via, Some(proxy))
        } else {
            (direct, None)
        };
        let dir = tempfile::tempdir().expect("drill dir");
        std::fs::create_dir_all(dir.path().join("logs")).expect("logs dir");
        let events = dir.path().join("events.yaml");
        std::fs::write(&events, EVENTS_YAML).expect("events.yaml");
        let resources = duckmesh_dev::source::load(&[events]).expect("yaml");
        duckmesh_dev::source::apply(&catalog, &resources).await.expect("apply");
        Self {
            database,
            url,
            catalog,
            s3,
            store,
            proxy,
            dir,
            api_port: free_port(),
            coordinator_port: free_port(),
            dev_port: free_port(),
            runs: AtomicU64::new(0),
        }
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    fn command(&self, role: Role) -> Command {
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        let mut command = Command::new(duckmesh_binary());
        command
            .arg(role.as_str())
            .env("DUCKMESH_LOG", "info")
            .env("DUCKMESH_DATABASE_URL", &self.url)
            .env("DUCKMESH_QUERY_AUTH", "none")
            .env("DUCKMESH_API_LISTEN", format!("127.0.0.1:{}", self.api_port))
            .env("DUCKMESH_API_RATE_LIMIT_PER_USER", "0")
            .env("DUCKMESH_API_RATE_LIMIT_PER_TENANT", "0")
            .env("DUCKMESH_QUERY_RATE_LIMIT_PER_USER", "0")
            .env("DUCKMESH_QUERY_CACHE_DIR", self.dir.path().join("cache"))
            .env("DUCKMESH_COORDINATOR_LISTEN", format!("127.0.0.1:{}", self.coordinator_port))
            .env("DUCKMESH_COORDINATOR_CLAIM_LEASE_SECONDS", "3")
            .env("DUCKMESH_COORDINATOR_LINGER_MS", "20")
            .env("DUCKMESH_COORDINATOR_POLL_INTERVAL_MS", "200")
            .env("DUCKMESH_COORDINATOR_BATCH_MAX_EVENTS", "500")
            .env("DUCKMESH_COORDINATOR_MAX_CLAIMS", "1000")
            .env("DUCKMESH_COORDINATOR_WORK_DIR", self.dir.path().join("work"))
            .env("DUCKMESH_TASK_LEASE_SECONDS", "4")
            .env("DUCKMESH_HEARTBEAT_SECONDS", "1")
            .env("DUCKMESH_TASK_RETRY_BASE_SECONDS", "0.2")
            .env("DUCKMESH_TASK_RETRY_MAX_SECONDS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.logs().join(format!("{}-{run}.log", role.as_str()))).expect("log"));
        let credentials = self.s3.credentials.clone().expect("static test credentials");
        command
            .env("DUCKMESH_S3_BUCKET", &self.s3.bucket)
            .env("DUCKMESH_S3_PREFIX", self.s3.prefix.as_deref().unwrap_or_default())
            .env("DUCKMESH_S3_ENDPOINT", self.s3.endpoint.as_deref().unwrap_or_default())
            .env("DUCKMESH_S3_REGION", &self.s3.region)
            .env("AWS_ACCESS_KEY_ID", credentials.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", credentials.secret_access_key);
        command
    }

    /// Runs a `duckmesh` command on the stack's catalog to its end; its stdout (panics when
    /// it fails).
    pub fn cli(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.cli_status(args);
        assert_eq!(code, Some(0), "duckmesh {args:?}: {stdout}{stderr}");
        stdout
    }

    /// Starts `duckmesh api` or `duckmesh coordinator`.
    pub fn spawn(&self, role: Role) -> Proc {
        assert!(role != Role::Dev, "use spawn_dev");
        let child = self.command(role).spawn().unwrap_or_else(|error| panic!("start duckmesh {role:?}: {error}"));
        Proc { role, child }
    }

    /// Starts `duckmesh dev <file>` on this stack's catalog and bucket (its API on `dev_port`).
    pub fn spawn_dev(&self, file: &Path) -> Proc {
        self.spawn_dev_in(file, "dev", self.dev_port)
    }

    /// Starts another `duckmesh dev <file>` with its own state directory `state` (under the
    /// stack's) and API port: a second scheduler on the same catalog.
    pub fn spawn_dev_in(&self, file: &Path, state: &str, port: u16) -> Proc {
        let mut command = self.command(Role::Dev);
        command
            .arg(file)
            .arg("--state-dir")
            .arg(self.dir.path().join(state))
            .arg("--database-url")
            .arg(&self.url)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--max-parallel", "2"]);
        let child = command.spawn().expect("start duckmesh dev");
        Proc { role: Role::Dev, child }
    }

    /// Writes a job file for `round` and returns its path.
    pub fn job_file(&self, round: usize, work_rows: u64, read_events: bool) -> PathBuf {
        let path = self.dir.path().join(format!("round-{round}.yaml"));
        std::fs::write(&path, job_yaml(round, work_rows, read_events)).expect("job yaml");
        path
    }

    pub fn client(&self) -> QueryClient {
        QueryClient::new(format!("http://127.0.0.1:{}", self.api_port), None).expect("client")
    }

    /// Waits until the API answers.
    pub async fn api_ready(&self, timeout: Duration) {
        let client = self.client();
        let started = Instant::now();
        while client.datasets().await.is_err() {
            assert!(started.elapsed() < timeout, "the API did not come up\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts `duckmesh api` and `duckmesh coordinator` and waits (up to a minute) until the
    /// API answers: the ingest path most drills load. Both run until the returned handles drop.
    pub async fn start_ingest(&self) -> (Proc, Proc) {
        let api = self.spawn(Role::Api);
        let coordinator = self.spawn(Role::Coordinator);
        self.api_ready(Duration::from_secs(60)).await;
        (api, coordinator)
    }

    /// Acknowledged events of `events` not yet committed nor dead-lettered, from the catalog.
    pub async fn pending_events(&self) -> Option<i64> {
        sqlx::query_scalar("SELECT count(*) FROM ingest_events WHERE snapshot_id IS NULL AND dead_letter_id IS NULL")
            .fetch_one(self.catalog.pool())
            .await
            .ok()
    }

    /// Events claimed by a coordinator and not committed.
    pub async fn claimed_events(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM ingest_events WHERE snapshot_id IS NULL AND claim_expires_at > clock_timestamp()",
        )
        .fetch_one(self.catalog.pool())
        .await
        .unwrap_or(0)
    }

    /// Waits until no acknowledged event is pending; how long it took.
    pub async fn drained(&self, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.pending_events().await == Some(0) {
                return started.elapsed();
            }
            assert!(started.elapsed() < timeout, "ingest backlog did not drain\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs the history checker over everything the stack holds.
    pub async fn check(&self, acked: Vec<String>, pinned: Vec<PinnedRead>, quiescent: bool) -> HistoryReport {
        self.check_with_poison(acked, Vec::new(), pinned, quiescent).await
    }

    /// Runs the history checker; `poison` keys must be dead-lettered and never visible.
    pub async fn check_with_poison(
        &self,
        acked: Vec<String>,
        poison: Vec<String>,
        pinned: Vec<PinnedRead>,
        quiescent: bool,
    ) -> HistoryReport {
        let expectations = Expectations {
            acked: vec![AckedRecords {
                namespace: "default".into(),
                dataset: "events".into(),
                dedupe_keys: acked,
                poison,
                key_column: Some("id".into()),
            }],
            pinned,
            quiescent,
            verify_hashes: false,
        };
        duckmesh_history::check(&self.catalog, self.store.as_ref(), &expectations).await.expect("history check")
    }

    /// The last lines of every process log, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(self.logs()) else { return out };
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            out.push_str(&format!(
                "== {}\n{}\n",
                entry.path().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        out
    }
}

/// The sum of every sample of `name` (any labels) on `port`'s `/metrics`; `None` when the
/// scrape fails or the family has no sample.
pub async fn metric(port: u16, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.ok()?.text().await.ok()?;
    let mut total = None;
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        *total.get_or_insert(0.0) += value;
    }
    total
}

/// Every worker process a `duckmesh dev` started (its children running `duckmesh worker`).
pub fn workers_of(dev: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid …: comm may hold spaces, so split after the last ')'.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let is_worker = cmdline.split(|b| *b == 0).any(|arg| arg == b"worker");
        if ppid == Some(dev) && is_worker {
            found.push(pid);
        }
    }
    found
}

/// A process's state letter from `/proc/<pid>/stat` (`T` when stopped).
pub fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().next()?.chars().next()
}

/// SIGKILLs one process.
pub fn kill9(pid: u32) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

/// What the producers were told.
#[derive(Default)]
pub struct Acked {
    /// Every acknowledged dedupe key (a retried post acks its keys again).
    pub keys: Vec<String>,
    /// Posts acknowledged.
    pub posts: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// When the last ack arrived.
    pub last_ack: Option<Instant>,
}

/// Open-loop ingest: each producer starts a post of `batch` fresh records every `every`,
/// whatever happened to the previous ones, and retries each post (connection errors, 5xx,
/// 429) until it is acknowledged. A refusal below 429 is recorded as a failure.
///
/// [`Load::start_bounded`] caps the posts each producer has in flight, as a real client's
/// bounded send queue does: at the cap, the producer skips ticks until a post finishes. A long
/// run needs it: unbounded, every outage leaves more retrying posts behind than the API
/// answers, and the retries alone keep it saturated (a chaos run of 1,000 kills ended with
/// about 160,000 posts in flight and an API that no longer answered).
pub struct Load {
    stop: Arc<AtomicBool>,
    pub acked: Arc<Mutex<Acked>>,
    pub refused: Arc<AtomicU64>,
    producers: Vec<tokio::task::JoinHandle<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Load {
    pub fn start(client: QueryClient, producers: usize, batch: usize, every: Duration) -> Self {
        Self::start_bounded(client, producers, batch, every, usize::MAX)
    }

    /// [`Load::start`] with at most `max_in_flight` posts in flight per producer.
    pub fn start_bounded(
        client: QueryClient,
        producers: usize,
        batch: usize,
        every: Duration,
        max_in_flight: usize,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Acked::default()));
        let refused = Arc::new(AtomicU64::new(0));
        let producers = (0..producers)
            .map(|producer| {
                let (client, stop, acked, refused) =
                    (client.clone(), Arc::clone(&stop), Arc::clone(&acked), Arc::clone(&refused));
                tokio::spawn(async move {
                    let mut posts: Vec<tokio::task::JoinHandle<()>> = Vec::new();
                    let mut ticker = tokio::time::interval(every);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut sequence = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        ticker.tick().await;
                        posts.retain(|post| !post.is_finished());
                        if posts.len() >= max_in_flight {
                            continue;
                        }
                        let keys: Vec<String> =
                            (0..batch).map(|i| format!("p{producer}-{sequence:07}-{i:03}")).collect();
                        sequence += 1;
                        posts.push(tokio::spawn(post(
                            client.clone(),
                            keys,
                            Arc::clone(&acked),
                            Arc::clone(&refused),
                            // Every fifth post is sent twice, as by a client that lost its ack.
                            sequence.is_multiple_of(5),
                        )));
                    }
                    posts
                })
            })
            .collect();
        Self { stop, acked, refused, producers }
    }

    /// Acknowledged posts so far.
    pub fn posts(&self) -> u64 {
        self.acked.lock().expect("acks").posts
    }

    /// Retries so far.
    pub fn retries(&self) -> u64 {
        self.acked.lock().expect("acks").retries
    }

    pub fn last_ack(&self) -> Option<Instant> {
        self.acked.lock().expect("acks").last_ack
    }

    /// Waits until `more` posts past `from` were acknowledged; when the first came.
    pub async fn acks_after(&self, from: u64, more: u64, timeout: Duration) -> Instant {
        let started = Instant::now();
        loop {
            if self.posts() >= from + more {
                return Instant::now();
            }
            assert!(started.elapsed() < timeout, "ingest did not resume");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops starting posts, waits for every started one to be acknowledged, and returns
    /// what the producers were told.
    pub async fn stop(self, timeout: Duration) -> Acked {
        self.stop.store(true, Ordering::Relaxed);
        let finished = async {
            for producer in self.producers {
                for post in producer.await.expect("producer") {
                    post.await.expect("post");
                }
            }
        };
        tokio::time::timeout(timeout, finished).await.expect("every started post acknowledged in time");
        let refused = self.refused.load(Ordering::Relaxed);
        assert_eq!(refused, 0, "posts refused with a 4xx other than 429");
        std::mem::take(&mut *self.acked.lock().expect("acks"))
    }
}

fn body(keys: &[String]) -> String {
    keys.iter().enumerate().map(|(n, key)| format!("{{\"id\": \"{key}\", \"n\": {n}}}")).collect::<Vec<_>>().join("\n")
}

async fn post(client: QueryClient, keys: Vec<String>, acked: Arc<Mutex<Acked>>, refused: Arc<AtomicU64>, twice: bool) {
    for _ in 0..(if twice { 2 } else { 1 }) {
        let mut backoff = Duration::from_millis(50);
        loop {
            match client.ingest("events", None, body(&keys)).await {
                Ok(_) => {
                    let mut acked = acked.lock().expect("acks");
                    acked.keys.extend(keys.iter().cloned());
                    acked.posts += 1;
                    acked.last_ack = Some(Instant::now());
                    break;
                }
                Err(ClientError::Api { status, .. }) if status < 429 => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(_) => {
                    acked.lock().expect("acks").retries += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// One drill's outcome: printed as one line, and appended to `$DUCKMESH_DRILLS_RESULTS` (one
/// tab-separated row per drill) for `just drills`' table.
pub struct DrillResult {
    pub scenario: &'static str,
    pub injected: String,
    pub recovered: Duration,
    pub records: usize,
    pub tasks: usize,
    pub metric: String,
    pub report: HistoryReport,
}

impl DrillResult {
    pub fn finish(self) {
        let line = format!(
            "drill {}: injected {}; recovered in {:.1} s; records={} tasks={} {}; violations={}",
            self.scenario,
            self.injected,
            self.recovered.as_secs_f64(),
            self.records,
            self.tasks,
            self.metric,
            self.report.violations.len()
        );
        println!("{line}");
        if let Ok(path) = std::env::var("DUCKMESH_DRILLS_RESULTS") {
            let row = format!(
                "{}\t{}\t{:.1}\t{}\t{}\t{}\t{}\n",
                self.scenario,
                self.injected,
                self.recovered.as_secs_f64(),
                self.records,
                self.tasks,
                self.metric,
                self.report.violations.len()
            );
            let mut file =
                std::fs::OpenOptions::new().create(true).append(true).open(path).expect("drill results file");
            std::io::Write::write_all(&mut file, row.as_bytes()).expect("write drill result");
        }
        assert!(self.report.is_clean(), "{line}\n{}", self.report);
    }
}

/// The `duckmesh` binary the stack runs: `DUCKMESH_DRILLS_BINARY` when set (a copy that a
/// rebuild of the work tree cannot replace half-way through a long chaos run), else the one
/// cargo built for this test.
fn duckmesh_binary() -> PathBuf {
    std::env::var_os("DUCKMESH_DRILLS_BINARY")
        .filter(|path| !path.is_empty())
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_duckmesh")), PathBuf::from)
}

impl Stack {
    /// Starts `duckmesh dev <file> --keep-serving` on this stack's catalog and bucket (its API
    /// and `/metrics` on `dev_port`), with `env` added to its environment (knobs a drill turns
    /// down); it serves until killed, so its metrics can be scraped after its Jobs finished.
    pub fn spawn_dev_serving(&self, file: &Path, env: &[(&str, &str)]) -> Proc {
        let mut command = self.command(Role::Dev);
        command
            .arg(file)
            .arg("--state-dir")
            .arg(self.dir.path().join("dev"))
            .arg("--database-url")
            .arg(&self.url)
            .args(["--listen", &format!("127.0.0.1:{}", self.dev_port), "--max-parallel", "2", "--keep-serving"]);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("start duckmesh dev");
        Proc { role: Role::Dev, child }
    }

    /// A client of the API `duckmesh dev` serves.
    pub fn dev_client(&self) -> QueryClient {
        QueryClient::new(format!("http://127.0.0.1:{}", self.dev_port), None).expect("client")
    }

    /// Applies the resources of `yaml` (written as `name` in the stack's directory) to the catalog.
    pub async fn apply_yaml(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).expect("resource yaml");
        let resources = duckmesh_dev::source::load(std::slice::from_ref(&path)).expect("yaml");
        duckmesh_dev::source::apply(&self.catalog, &resources).await.expect("apply");
        path
    }

    /// Runs `duckmesh <args>` on the stack's catalog to its end, whatever its exit code:
    /// (exit code, stdout, stderr).
    pub fn cli_status(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let output = Command::new(duckmesh_binary())
            .args(args)
            .env("DUCKMESH_DATABASE_URL", &self.url)
            .env("DUCKMESH_LOG", "warn")
            .output()
            .expect("run duckmesh");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// The sum of the samples of `name` on `port`'s `/metrics` whose label set holds `label`
/// (e.g. `task_kind="compact"`); `None` when the scrape fails or no sample matches.
pub async fn metric_with(port: u16, name: &str, label: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.ok()?.text().await.ok()?;
    let mut total = None;
    for line in text.lines() {
        let Some((labels, value)) = line.strip_prefix(name).and_then(|rest| rest.strip_prefix('{')?.split_once("} "))
        else {
            continue;
        };
        if labels.split(',').any(|pair| pair == label)
            && let Ok(value) = value.trim().parse::<f64>()
        {
            *total.get_or_insert(0.0) += value;
        }
    }
    total
}

/// The private PostgreSQL's postmaster and every process it forked (backends, background
/// workers). Each backend calls `setsid()` when it starts, so it is in a process group of its
/// own: a signal to the postmaster's group reaches none of them.
pub fn postgres_processes(postmaster: u32) -> Vec<u32> {
    let mut found = vec![postmaster];
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(postmaster) {
            found.push(pid);
        }
    }
    found
}

/// SIGSTOPs the postmaster (so that it forks no new backend), then every process it forked,
/// scanning again until a scan finds every one of them stopped; how many were stopped.
pub fn stop_postgres(postmaster: u32) -> usize {
    let _ = kill(Pid::from_raw(postmaster as i32), Signal::SIGSTOP);
    let started = Instant::now();
    loop {
        let processes = postgres_processes(postmaster);
        let running: Vec<u32> =
            processes.iter().copied().filter(|pid| !matches!(process_state(*pid as i32), Some('T') | None)).collect();
        if running.is_empty() {
            return processes.len();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "PostgreSQL processes {running:?} did not stop");
        for pid in running {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGCONTs every process of the private PostgreSQL, its forked processes first.
pub fn continue_postgres(postmaster: u32) {
    for pid in postgres_processes(postmaster).into_iter().rev() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
    }
}

impl Stack {
    /// The private PostgreSQL's postmaster pid (panics on the shared server).
    pub fn postmaster(&self) -> u32 {
        let Database::Private(cluster) = &self.database else { panic!("the drill needs a private PostgreSQL") };
        cluster.pid()
    }

    /// Restarts the private PostgreSQL in place (fast shutdown, same data directory and port)
    /// and returns when it accepts connections again.
    pub fn restart_postgres(&mut self) {
        let Database::Private(cluster) = &mut self.database else { panic!("the drill needs a private PostgreSQL") };
        tokio::task::block_in_place(|| cluster.restart_fast()).expect("PostgreSQL restarted");
    }
}
