//! `just bench-catalog`: lease + fenced-commit throughput on a real PostgreSQL.
//!
//! Prints one line:
//! `lease_commit_per_sec=<n> commit_p50_ms=<x> commit_p95_ms=<y> runners=<k> batch=<b>`.
//!
//! Uses `DATABASE_URL` when set (the database is created if missing and migrated); otherwise
//! starts a private cluster with PostgreSQL's durability settings left on (`fsync`,
//! `synchronous_commit`) and the group-commit settings `duckmesh-localpg` gives every durable
//! cluster, so the figure is what a production catalog would sustain on this machine's disk.
//! Each runner works through its own share of independent tasks: it leases up to `batch` of
//! them in one statement with the confirm folded in (`Catalog::lease_batch`), then commits two
//! files for each as an append to one of the datasets. `DUCKMESH_BENCH_BATCH=1` with
//! `DUCKMESH_BENCH_SEPARATE_CONFIRM=1` is the old cycle: one lease, one confirm, one commit.
//!
//! Options (env): `DUCKMESH_BENCH_RUNNERS` (32), `DUCKMESH_BENCH_TASKS` (16000),
//! `DUCKMESH_BENCH_DATASETS` (16), `DUCKMESH_BENCH_BATCH` (8),
//! `DUCKMESH_BENCH_SEPARATE_CONFIRM=1`, `DUCKMESH_BENCH_DURABLE=0` (fsync off, to tell
//! CPU-bound from fsync-bound), `DUCKMESH_BENCH_PG_SETTINGS` (`name=value,…` passed to the
//! private server after the defaults, e.g. `commit_delay=0` to compare).

use duckmesh_catalog::*;
use duckmesh_core::TaskId;
use duckmesh_localpg::{ClusterOptions, LocalCluster};
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let runners = env("DUCKMESH_BENCH_RUNNERS", 32).max(1);
    let tasks = env("DUCKMESH_BENCH_TASKS", 16_000).max(runners);
    let dataset_count = env("DUCKMESH_BENCH_DATASETS", 16).max(1);
    let batch = env("DUCKMESH_BENCH_BATCH", 8).max(1);
    let separate_confirm = std::env::var("DUCKMESH_BENCH_SEPARATE_CONFIRM").is_ok_and(|v| v == "1");

    let (_cluster, url) = match std::env::var("DATABASE_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let mut options = ClusterOptions::ephemeral();
            // Durable unless explicitly asked otherwise (to separate CPU from fsync costs).
            options.durable = std::env::var("DUCKMESH_BENCH_DURABLE").map_or(true, |v| v != "0");
            if let Ok(settings) = std::env::var("DUCKMESH_BENCH_PG_SETTINGS") {
                for setting in settings.split(',').filter(|s| !s.trim().is_empty()) {
                    let (name, value) = setting.split_once('=').ok_or("DUCKMESH_BENCH_PG_SETTINGS: name=value,…")?;
                    options.settings.push((name.trim().to_owned(), value.trim().to_owned()));
                }
            }
            let cluster = tokio::task::spawn_blocking(move || LocalCluster::start(&options)).await??;
            let url = cluster.url("postgres");
            (Some(cluster), url)
        }
    };
    let mut options = ConnectOptions::new(url);
    options.max_connections = runners as u32 + 2;
    let catalog = Catalog::connect(&options, CatalogConfig::default()).await?;
    catalog.migrate().await?;
    let run = uuid_like();

    let mut datasets = Vec::new();
    for i in 0..dataset_count {
        let record = catalog
            .upsert_dataset(&DatasetSpec {
                namespace: "bench".into(),
                name: format!("ds{i}-{run}"),
                uid: format!("ds{i}-{run}"),
                generation: 1,
                tenant: "bench".into(),
                schema: None,
                spec: serde_json::json!({}),
            })
            .await?;
        datasets.push(record.id);
    }
    // Independent tasks in jobs of 1,000.
    let mut task_ids: Vec<(TaskId, usize)> = Vec::with_capacity(tasks);
    for (chunk, start) in (0..tasks).step_by(1_000).enumerate() {
        let end = (start + 1_000).min(tasks);
        let specs = (start..end)
            .map(|i| TaskSpec {
                name: format!("t{i}"),
                kind: "sql".into(),
                depends_on: vec![],
                max_attempts: None,
                timeout_seconds: None,
                output: Some(TaskOutput { dataset: datasets[i % dataset_count], mode: CommitMode::Append }),
                spec: serde_json::json!({"sql": "SELECT 1"}),
            })
            .collect();
        let upsert = catalog
            .upsert_job(&JobSpec {
                namespace: "bench".into(),
                name: format!("job{chunk}-{run}"),
                uid: format!("job{chunk}-{run}"),
                generation: 1,
                tenant: "bench".into(),
                max_parallel: None,
                spec: serde_json::json!({}),
                tasks: specs,
            })
            .await?;
        for task in catalog.tasks_of_job(upsert.job.id).await? {
            let index: usize = task.name[1..].parse()?;
            task_ids.push((task.id, index % dataset_count));
        }
    }

    let started = Instant::now();
    let workers: Vec<_> = (0..runners)
        .map(|runner| {
            let catalog = catalog.clone();
            let mine: Vec<(TaskId, usize)> = task_ids.iter().copied().skip(runner).step_by(runners).collect();
            let datasets = datasets.clone();
            tokio::spawn(async move {
                let mut commit_latencies = Vec::with_capacity(mine.len());
                let dataset_of: std::collections::HashMap<TaskId, usize> = mine.iter().copied().collect();
                for window in mine.chunks(batch) {
                    let candidates: Vec<TaskId> = window.iter().map(|(task, _)| *task).collect();
                    let leases = catalog
                        .lease_batch(&BatchLease {
                            candidates: &candidates,
                            limit: batch,
                            runner: "bench-runner",
                            lease: Duration::from_secs(120),
                            confirm: !separate_confirm,
                        })
                        .await?;
                    if leases.len() != candidates.len() {
                        return Err(format!("leased {} of {} runnable tasks", leases.len(), candidates.len()).into());
                    }
                    for lease in leases {
                        if separate_confirm {
                            catalog.confirm_attempt(lease.attempt_ref(), Some("bench-runner")).await?;
                        }
                        let (task, dataset) = (lease.task, dataset_of[&lease.task]);
                        let files = (0..2)
                            .map(|n| NewFile {
                                path: format!(
                                    "bench/{}/attempts/{}/{}/part-{n}.parquet",
                                    datasets[dataset], task, lease.number
                                ),
                                bytes: 1 << 20,
                                rows: 10_000,
                                sha256: format!("{:064x}", task.0 * 2 + n),
                                partition: None,
                            })
                            .collect();
                        let request = CommitRequest {
                            dataset: datasets[dataset],
                            mode: CommitMode::Append,
                            files,
                            manifest_path: None,
                            schema: None,
                        };
                        let commit_started = Instant::now();
                        catalog.commit(lease.attempt_ref(), &request).await?;
                        commit_latencies.push(commit_started.elapsed());
                    }
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(commit_latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(tasks);
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1).min(latencies.len() - 1);
        latencies[index].as_secs_f64() * 1_000.0
    };
    println!(
        "lease_commit_per_sec={:.0} commit_p50_ms={:.2} commit_p95_ms={:.2} runners={runners} batch={batch}",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(0.50),
        percentile(0.95),
    );
    catalog.close().await;
    Ok(())
}

/// A short unique suffix so repeated runs against one `DATABASE_URL` never collide.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}", nanos & 0xffff_ffff_ffff)
}
