//! `just bench-dag [N…]`: the per-task cost of the control plane and the worker process, end to
//! end, as a user meets it. For each size N (default 100 and 1,000; any size up to the 10,000
//! tasks a Job may hold) it writes a fan-out/fan-in Job of N tasks — `source`, N − 2 middle
//! tasks that depend on it, and `sink`, which depends on all of them (beyond 1,002 tasks through
//! join tasks of up to 1,000 middle tasks each, the most one task may depend on); each a trivial
//! `SELECT` appended to one dataset — with `maxParallel: 2`, and runs the real `duckmesh dev` binary on it
//! with a fresh state directory (its private PostgreSQL included) and `--max-parallel 2`.
//!
//! Measured:
//! - `wall_s`: from starting `duckmesh dev` to its exit (PostgreSQL start-up, applying the Job,
//!   every attempt, the summary);
//! - `per_task_ms` and `tasks_per_sec`: the job's own time — from the first lease to the last
//!   task's end, as the catalog recorded them — per task;
//! - `peak_rss_mb`: the largest sum, over samples every 200 ms, of the proportional set size
//!   (PSS, so PostgreSQL's shared memory counts once) of every process in `duckmesh dev`'s tree:
//!   itself, its watchdog, its workers and its PostgreSQL server processes;
//! - `max_cr_status_bytes`: the size of the largest Job status the operator would write for this
//!   job (`duckmesh_operator::decide::job_status` over the catalog's job summary,
//!   serialized as JSON), sampled every second while it runs and once at the end.
//!
//! `DUCKMESH_BENCH_DAG_BINARY` runs another `duckmesh` build instead of this one (to compare
//! two builds, alternating runs under the same machine load); `DUCKMESH_BENCH_DAG_KEEP=1` keeps
//! each run's directory (the Job's YAML, `duckmesh dev`'s output, the state directory with the
//! workers' logs) and prints where it is.
//!
//! Details go to stderr (start-up time before the first lease, the dev process's own resident
//! memory at the start and end of the job, for flat memory); the last line of each size is
//! `tasks=… wall_s=… per_task_ms=… tasks_per_sec=… peak_rss_mb=… max_cr_status_bytes=…`.

use chrono::{DateTime, Utc};
use duckmesh_catalog::{Catalog, CatalogConfig, ConnectOptions};
use duckmesh_dev::InstanceInfo;
use duckmesh_operator::decide::job_status;
use duckmesh_resources::JobStatus;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The sizes run when none is given.
const DEFAULT_SIZES: [usize; 2] = [100, 1_000];
/// The namespace and name `duckmesh dev` registers the Job under.
const NAMESPACE: &str = "default";
const JOB: &str = "dag";
/// How often the process tree's memory is sampled.
const MEMORY_EVERY: Duration = Duration::from_millis(200);
/// How often the Job's status is projected while it runs.
const STATUS_EVERY: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // `cargo bench` passes `--bench`; every other argument is a size.
    let mut sizes = Vec::new();
    for arg in std::env::args().skip(1).filter(|arg| !arg.starts_with("--")) {
        let size: usize = arg.parse().map_err(|_| format!("bench-dag: {arg:?} is not a task count"))?;
        if !(3..=duckmesh_resources::MAX_TASKS_PER_JOB).contains(&size) {
            return Err(format!(
                "bench-dag: a size is the Job's task count, from 3 (source, one middle task, sink) to {}",
                duckmesh_resources::MAX_TASKS_PER_JOB
            )
            .into());
        }
        sizes.push(size);
    }
    if sizes.is_empty() {
        sizes.extend(DEFAULT_SIZES);
    }
    for size in sizes {
        let result = run(size).await?;
        eprintln!(
            "bench-dag: tasks={} startup_s={:.2} (start to first lease) job_s={:.2} dev_rss_mb start={:.1} peak={:.1} \
             end={:.1}; {} status samples",
            result.tasks,
            result.startup_s,
            result.job_s,
            result.dev_rss_start_mb,
            result.dev_rss_peak_mb,
            result.dev_rss_end_mb,
            result.status_samples,
        );
        println!(
            "tasks={} wall_s={:.2} per_task_ms={:.1} tasks_per_sec={:.2} peak_rss_mb={:.1} max_cr_status_bytes={}",
            result.tasks,
            result.wall_s,
            result.job_s * 1000.0 / result.tasks as f64,
            result.tasks as f64 / result.job_s,
            result.peak_rss_mb,
            result.max_status_bytes,
        );
    }
    Ok(())
}

/// What one run measured.
struct RunResult {
    tasks: usize,
    wall_s: f64,
    startup_s: f64,
    job_s: f64,
    peak_rss_mb: f64,
    dev_rss_start_mb: f64,
    dev_rss_peak_mb: f64,
    dev_rss_end_mb: f64,
    max_status_bytes: usize,
    status_samples: usize,
}

/// The Job's YAML: a Dataset everything appends to, and `source` → the middle tasks → `sink`.
/// A task depends on at most 1,000 others (the Job schema's limit), so beyond 1,002 tasks the
/// fan-in goes through join tasks (`j001`, …), each over up to 1,000 middle tasks, and `sink`
/// depends on the joins; the Job still holds exactly `tasks` tasks.
fn pipeline(tasks: usize) -> String {
    let joins = if tasks - 2 <= MAX_DEPENDENCIES { 0 } else { (tasks - 2).div_ceil(MAX_DEPENDENCIES + 1) };
    let middle: Vec<String> = (1..=tasks - 2 - joins).map(|i| format!("m{i:05}")).collect();
    let mut yaml = String::from(
        "apiVersion: duckmesh.io/v1alpha1\nkind: Dataset\nmetadata:\n  name: dag-out\nspec: {}\n---\n\
         apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata:\n  name: dag\nspec:\n  maxParallel: 2\n  tasks:\n\
         \x20   - name: source\n      output: {dataset: dag-out, mode: append}\n      sql: SELECT 0 AS n\n",
    );
    let mut n = 0;
    let mut task = |yaml: &mut String, name: &str, depends_on: &[String]| {
        n += 1;
        let _ = write!(
            yaml,
            "    - name: {name}\n      dependsOn: [{}]\n      output: {{dataset: dag-out, mode: append}}\n      \
             sql: SELECT {n} AS n\n",
            depends_on.join(", ")
        );
    };
    let source = ["source".to_owned()];
    for name in &middle {
        task(&mut yaml, name, &source);
    }
    let fan_in: Vec<String> = if joins == 0 {
        middle
    } else {
        let names: Vec<String> = (1..=joins).map(|j| format!("j{j:03}")).collect();
        for (name, group) in names.iter().zip(middle.chunks(MAX_DEPENDENCIES)) {
            task(&mut yaml, name, group);
        }
        names
    };
    task(&mut yaml, "sink", &fan_in);
    yaml
}

/// The most tasks one task may depend on (the Job schema's `dependsOn` limit).
const MAX_DEPENDENCIES: usize = 1000;

async fn run(tasks: usize) -> Result<RunResult, BoxError> {
    let dir = tempfile::tempdir()?;
    // Reachable by the PostgreSQL user, so the private cluster lives under it (and goes with it).
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let file = dir.path().join("dag.yaml");
    std::fs::write(&file, pipeline(tasks))?;
    let state = dir.path().join("state");
    let output = std::fs::File::create(dir.path().join("dev.out"))?;
    let errors = std::fs::File::create(dir.path().join("dev.err"))?;

    eprintln!("bench-dag: {tasks} tasks, duckmesh dev --max-parallel 2 on a fresh state directory");
    let launched_at = Utc::now();
    let started = Instant::now();
    let program = std::env::var_os("DUCKMESH_BENCH_DAG_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_duckmesh")));
    let mut child = Command::new(program)
        .arg("dev")
        .arg(&file)
        .arg("--state-dir")
        .arg(&state)
        .args(["--max-parallel", "2", "--listen", "127.0.0.1:0"])
        .env_remove("DUCKMESH_DATABASE_URL")
        .env_remove("DUCKMESH_STATE_DIR")
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(errors)
        .spawn()?;
    let pid = child.id();

    let done = Arc::new(AtomicBool::new(false));
    let memory = std::thread::spawn({
        let done = Arc::clone(&done);
        move || sample_memory(pid, &done)
    });
    let samples = Arc::new(AtomicUsize::new(0));
    let watcher = tokio::spawn(watch_status(state.clone(), Arc::clone(&done), Arc::clone(&samples)));

    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    let wall_s = started.elapsed().as_secs_f64();
    done.store(true, Ordering::SeqCst);
    let memory = memory.join().map_err(|_| "the memory sampler panicked")?;
    let mut max_status_bytes = watcher.await?;
    if !status.success() {
        let log = std::fs::read_to_string(dir.path().join("dev.err")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!("duckmesh dev exited with {status}:\n{}", tail.join("\n")).into());
    }

    // The catalog is read again once the run is over, from its own PostgreSQL.
    let cluster = duckmesh_dev::private_postgres(&state).await?;
    let catalog = Catalog::connect(&ConnectOptions::new(cluster.url("postgres")), CatalogConfig::default()).await?;
    let job = catalog.job_by_name(NAMESPACE, JOB).await?;
    let summary = catalog.job_summary(job.id).await?;
    if summary.total != tasks as u64 || summary.counts.get("Succeeded").copied() != Some(tasks as u64) {
        return Err(format!("the job did not run every task once: {:?}", summary.counts).into());
    }
    max_status_bytes = max_status_bytes.max(status_bytes(&job_status(&summary, None, Some(1), Utc::now()))?);
    let (first_lease, last_end): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT min(started_at), max(finished_at) FROM tasks WHERE job_id = $1")
            .bind(job.id.0)
            .fetch_one(catalog.pool())
            .await?;
    catalog.close().await;
    drop(cluster);
    let (first_lease, last_end) = first_lease.zip(last_end).ok_or("the job recorded no start or end")?;
    let seconds = |from: DateTime<Utc>, to: DateTime<Utc>| (to - from).num_milliseconds() as f64 / 1000.0;

    if std::env::var("DUCKMESH_BENCH_DAG_KEEP").is_ok_and(|keep| keep == "1") {
        eprintln!("bench-dag: kept {}", dir.keep().display());
    } else if let Ok(data) = duckmesh_localpg::resolve_state_dir(&state.join("postgres"))
        && !data.starts_with(dir.path())
    {
        // A stand-in data directory outside the state directory (root's private PostgreSQL).
        let _ = std::fs::remove_dir_all(data);
    }
    Ok(RunResult {
        tasks,
        wall_s,
        startup_s: seconds(launched_at, first_lease),
        job_s: seconds(first_lease, last_end).max(0.001),
        peak_rss_mb: memory.peak_tree_kb as f64 / 1024.0,
        dev_rss_start_mb: memory.dev_start_kb as f64 / 1024.0,
        dev_rss_peak_mb: memory.dev_peak_kb as f64 / 1024.0,
        dev_rss_end_mb: memory.dev_end_kb as f64 / 1024.0,
        max_status_bytes,
        status_samples: samples.load(Ordering::SeqCst),
    })
}

fn status_bytes(status: &JobStatus) -> Result<usize, BoxError> {
    Ok(serde_json::to_vec(status)?.len())
}

/// Projects the Job's status every [`STATUS_EVERY`] while `duckmesh dev` runs, as the operator
/// would on every reconcile (each projection from the previous one); returns the largest size.
async fn watch_status(state: PathBuf, done: Arc<AtomicBool>, samples: Arc<AtomicUsize>) -> usize {
    let mut largest = 0;
    let mut catalog = None;
    let mut previous: Option<JobStatus> = None;
    while !done.load(Ordering::SeqCst) {
        tokio::time::sleep(STATUS_EVERY).await;
        if catalog.is_none() {
            let Some(info) = InstanceInfo::running(&state) else { continue };
            let mut options = ConnectOptions::new(info.database_url);
            options.max_connections = 1;
            catalog = Catalog::connect(&options, CatalogConfig::default()).await.ok();
        }
        let Some(connected) = &catalog else { continue };
        let Ok(job) = connected.job_by_name(NAMESPACE, JOB).await else { continue };
        let Ok(summary) = connected.job_summary(job.id).await else { continue };
        let status = job_status(&summary, previous.as_ref(), Some(1), Utc::now());
        if let Ok(bytes) = status_bytes(&status) {
            largest = largest.max(bytes);
            samples.fetch_add(1, Ordering::SeqCst);
        }
        previous = Some(status);
    }
    if let Some(catalog) = catalog {
        catalog.close().await;
    }
    largest
}

/// Memory figures of one run, in kB.
#[derive(Default)]
struct Memory {
    peak_tree_kb: u64,
    dev_start_kb: u64,
    dev_peak_kb: u64,
    dev_end_kb: u64,
}

/// Samples until `done`: the PSS sum of `root`'s process tree, and `root`'s own RSS.
fn sample_memory(root: u32, done: &AtomicBool) -> Memory {
    let mut memory = Memory::default();
    let mut dev = Vec::new();
    while !done.load(Ordering::SeqCst) {
        let tree = process_tree(root);
        let total: u64 = tree.iter().filter_map(|pid| status_field(*pid, "smaps_rollup", "Pss:")).sum();
        memory.peak_tree_kb = memory.peak_tree_kb.max(total);
        if let Some(rss) = status_field(root, "status", "VmRSS:") {
            dev.push(rss);
        }
        std::thread::sleep(MEMORY_EVERY);
    }
    // The start of the job: the first tenth of the samples (after start-up, which is short).
    let tenth = (dev.len() / 10).max(1);
    memory.dev_start_kb = dev.iter().take(tenth).copied().max().unwrap_or_default();
    memory.dev_peak_kb = dev.iter().copied().max().unwrap_or_default();
    memory.dev_end_kb = dev.iter().rev().take(tenth).copied().max().unwrap_or_default();
    memory
}

/// `root` and every process descended from it, from `/proc/*/stat`.
fn process_tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // "pid (comm) state ppid …": the command may hold spaces and parentheses.
            let Some(ppid) = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)) else {
                continue;
            };
            if let Ok(ppid) = ppid.parse::<u32>() {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut tree = vec![root];
    let mut seen = HashSet::from([root]);
    let mut next = 0;
    while next < tree.len() {
        for child in children.get(&tree[next]).cloned().unwrap_or_default() {
            if seen.insert(child) {
                tree.push(child);
            }
        }
        next += 1;
    }
    tree
}

/// A `Name:   <n> kB` field of `/proc/<pid>/<file>`.
fn status_field(pid: u32, file: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join(file)).ok()?;
    text.lines().find_map(|line| line.strip_prefix(name)?.split_whitespace().next()?.parse().ok())
}
