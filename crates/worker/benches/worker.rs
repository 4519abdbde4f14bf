//! `just bench-worker`: the worker's throughput on a ≥ 10 M-row transformation against raw
//! DuckDB running `COPY (same query) TO parquet` on the same machine in the same run.
//!
//! Set-up (not timed): a private PostgreSQL (testkit), a local-filesystem store, and an input
//! dataset of `DUCKMESH_BENCH_ROWS` rows (default 10,000,000) committed by the worker itself.
//! Then, `DUCKMESH_BENCH_ROUNDS` times (default 3), alternating:
//! - raw DuckDB: a fresh in-memory database, a view over the input's Parquet files, and
//!   `COPY (query) TO 'out.parquet' (FORMAT parquet, COMPRESSION zstd)`;
//! - the worker: a fresh task over the same query, leased and run end to end — confirm, pin,
//!   fetch the inputs into an empty cache (copy + SHA-256 check), DuckDB, hash, upload,
//!   manifest, fenced commit.
//!
//! Prints the medians as `rows_per_sec=<n> mb_per_sec=<m> ratio_vs_duckdb=<r>`, where the
//! rows and megabytes (10^6 bytes) are those of the worker's Parquet output, and the ratio is
//! raw DuckDB's time divided by the worker's (1.0 = as fast as DuckDB alone).

use duckmesh_catalog::{CatalogConfig, CommitMode, DatasetSpec, TaskOutput, TaskSpec};
use duckmesh_storage::{LocalStore, ObjectStore};
use duckmesh_testkit::TestDatabase;
use duckmesh_worker::{AttemptIdentity, Outcome, Worker, WorkerConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The transformation: a filter, arithmetic, string work and a timestamp per row.
const QUERY: &str = "SELECT id, id % 1000 AS bucket, amount * 1.08 AS gross, upper(category) AS category, \
     ts + INTERVAL 1 DAY AS due, amount > 500 AS large FROM bench_input WHERE amount >= 1";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let rows = env_number("DUCKMESH_BENCH_ROWS", 10_000_000);
    let rounds = env_number("DUCKMESH_BENCH_ROUNDS", 3).max(1);
    let db = TestDatabase::new().await?;
    let catalog = db.catalog_with(CatalogConfig::default(), 4).await?;
    let dir = tempfile::tempdir()?;
    let store_root = dir.path().join("objects");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(&store_root)?);
    let config = WorkerConfig {
        cache_dir: dir.path().join("cache-setup"),
        work_dir: dir.path().join("work"),
        default_timeout: Duration::from_secs(3600),
        ..WorkerConfig::default()
    };

    let dataset = |name: &str| DatasetSpec {
        namespace: "bench".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        generation: 1,
        tenant: "bench".into(),
        schema: None,
        spec: serde_json::json!({}),
    };
    let input = catalog.upsert_dataset(&dataset("bench_input")).await?;
    let output = catalog.upsert_dataset(&dataset("bench_output")).await?;
    let generate = format!(
        "SELECT i AS id, (i * 7919) % 1000 AS amount, 'category_' || (i % 17) AS category, \
         TIMESTAMP '2024-01-01' + to_seconds(i % 31536000) AS ts FROM range({rows}) t(i)"
    );
    let worker = Worker::new(catalog.clone(), store.clone(), config.clone());
    eprintln!("bench-worker: generating {rows} input rows");
    let setup = run_task(&catalog, &worker, "generate", input.id, CommitMode::Overwrite, &generate, &[]).await?;
    eprintln!("bench-worker: input is {} files, {} bytes", setup.files, setup.bytes);
    let input_snapshot = catalog.dataset(input.id).await?.current_snapshot.ok_or("no input snapshot")?;
    let input_files: Vec<std::path::PathBuf> = catalog
        .snapshot_files(input.id, input_snapshot)
        .await?
        .iter()
        .map(|file| store_root.join(&file.path))
        .collect();

    let mut raw_times = Vec::new();
    let mut worker_times = Vec::new();
    let mut out_rows = 0;
    let mut out_bytes = 0;
    for round in 0..rounds {
        let raw = raw_duckdb(&input_files, &dir.path().join(format!("raw-{round}.parquet")))?;
        raw_times.push(raw);

        let round_config = WorkerConfig { cache_dir: dir.path().join(format!("cache-{round}")), ..config.clone() };
        let worker = Worker::new(catalog.clone(), store.clone(), round_config);
        let started = Instant::now();
        let summary = run_task(
            &catalog,
            &worker,
            &format!("transform-{round}"),
            output.id,
            CommitMode::Overwrite,
            QUERY,
            &["bench_input"],
        )
        .await?;
        let elapsed = started.elapsed();
        worker_times.push(elapsed);
        out_rows = summary.rows;
        out_bytes = summary.bytes;
        eprintln!(
            "bench-worker: round {round}: raw DuckDB {:.2} s, worker {:.2} s ({} files, {} rows, {} bytes)",
            raw.as_secs_f64(),
            elapsed.as_secs_f64(),
            summary.files,
            summary.rows,
            summary.bytes
        );
    }
    let raw = median(&mut raw_times);
    let worker_time = median(&mut worker_times);
    let seconds = worker_time.as_secs_f64();
    println!(
        "rows_per_sec={:.0} mb_per_sec={:.1} ratio_vs_duckdb={:.2}",
        out_rows as f64 / seconds,
        out_bytes as f64 / 1e6 / seconds,
        raw.as_secs_f64() / seconds
    );
    Ok(())
}

/// Raw DuckDB: the same query over the same Parquet files, straight to one Parquet file.
fn raw_duckdb(files: &[std::path::PathBuf], out: &std::path::Path) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let connection = duckdb::Connection::open_in_memory()?;
    let list: Vec<String> = files.iter().map(|p| format!("'{}'", p.display())).collect();
    connection.execute_batch(&format!(
        "CREATE VIEW bench_input AS SELECT * FROM read_parquet([{}]);\n\
         COPY ({QUERY}) TO '{}' (FORMAT parquet, COMPRESSION zstd)",
        list.join(", "),
        out.display()
    ))?;
    Ok(started.elapsed())
}

/// Stores a standalone task, leases it and runs the worker on it.
async fn run_task(
    catalog: &duckmesh_catalog::Catalog,
    worker: &Worker,
    name: &str,
    output: duckmesh_core::DatasetId,
    mode: CommitMode,
    sql: &str,
    inputs: &[&str],
) -> Result<duckmesh_worker::CommitSummary, BoxError> {
    let inputs: Vec<serde_json::Value> = inputs.iter().map(|name| serde_json::json!({"dataset": name})).collect();
    let task = TaskSpec {
        name: name.into(),
        kind: "sql".into(),
        depends_on: vec![],
        max_attempts: Some(1),
        timeout_seconds: None,
        output: Some(TaskOutput { dataset: output, mode }),
        spec: serde_json::json!({"sql": sql, "inputs": inputs}),
    };
    let id = catalog.upsert_standalone_task("bench", "bench", &task).await?;
    let lease = catalog.lease_task(id, "bench", Duration::from_secs(600)).await?.ok_or("task not runnable")?;
    let identity = AttemptIdentity { task: lease.task, attempt: lease.attempt, fence: lease.fence, traceparent: None };
    match worker.run(&identity, CancellationToken::new()).await {
        Outcome::Committed(summary) => Ok(summary),
        other => Err(format!("task {name} did not commit: {other:?}").into()),
    }
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}
