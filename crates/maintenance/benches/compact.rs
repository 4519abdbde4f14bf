//! `just bench-compact`: compaction of many small files through the real code path against raw
//! DuckDB rewriting the same files, on the same machine in the same run.
//!
//! Set-up (not timed): a private PostgreSQL (testkit), a local-filesystem store, and
//! `DUCKMESH_BENCH_FILES` small ZSTD Parquet files (default 400) of `DUCKMESH_BENCH_FILE_ROWS`
//! rows each (default 25,000: id, amount, category, timestamp), written once by DuckDB. Each
//! round copies them under a fresh dataset and commits them as one snapshot, then runs,
//! alternating which goes first, `DUCKMESH_BENCH_ROUNDS` times (default 3):
//! - raw DuckDB: a fresh in-memory database and `COPY (SELECT * FROM read_parquet([files]))
//!   TO dir (FORMAT parquet, COMPRESSION zstd, FILE_SIZE_BYTES target)`;
//! - compaction: a `compact` task (minFiles 2, `targetFileSizeBytes` the same target, default
//!   `DUCKMESH_BENCH_TARGET_BYTES` = 16 MiB) leased and run by `Compactor` — confirm, select,
//!   download and verify every input (size and SHA-256), DuckDB rewrite, row-count check, hash,
//!   upload, manifest, fenced `compact` commit.
//!
//! The compactor's log line of each round (stderr) breaks its time into download, rewrite,
//! upload and commit. `DUCKMESH_BENCH_TRANSFER_CONCURRENCY` sets the compactor's transfers in
//! flight (default [`duckmesh_maintenance::DEFAULT_TRANSFER_CONCURRENCY`], the worker's). Prints the files and bytes before and after, each side's median throughput (input MB, 10^6
//! bytes, per second) and, last, one line of `key=value` pairs ending in `ratio_vs_duckdb`: raw
//! DuckDB's time over compaction's (1.0 = as fast as DuckDB alone).

use duckmesh_catalog::{Catalog, CatalogConfig, CommitMode, CommitRequest, DatasetSpec, NewFile, TaskOutput, TaskSpec};
use duckmesh_core::DatasetId;
use duckmesh_maintenance::{CompactionOutcome, Compactor, DEFAULT_TRANSFER_CONCURRENCY};
use duckmesh_storage::{LocalStore, ObjectStore};
use duckmesh_testkit::TestDatabase;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One small input file, as written once and copied into each round's dataset.
struct Seed {
    name: String,
    path: PathBuf,
    bytes: u64,
    sha256: String,
    rows: u64,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    // The compactor's own log line per round gives its phases (download, rewrite, upload,
    // commit) in milliseconds.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("duckmesh_maintenance=info"))
        .with_writer(std::io::stderr)
        .init();
    let files = env_number("DUCKMESH_BENCH_FILES", 400).max(2);
    let file_rows = env_number("DUCKMESH_BENCH_FILE_ROWS", 25_000).max(1);
    let rounds = env_number("DUCKMESH_BENCH_ROUNDS", 3).max(1);
    let target = env_number("DUCKMESH_BENCH_TARGET_BYTES", 16 << 20).max(1 << 20);
    let db = TestDatabase::new().await?;
    let catalog = db.catalog_with(CatalogConfig::default(), 4).await?;
    let dir = tempfile::tempdir()?;
    let store_root = dir.path().join("objects");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(&store_root)?);

    eprintln!("bench-compact: writing {files} files of {file_rows} rows");
    let seeds = write_seeds(&dir.path().join("seed"), files, file_rows).await?;
    let bytes_before: u64 = seeds.iter().map(|seed| seed.bytes).sum();
    let rows: u64 = seeds.iter().map(|seed| seed.rows).sum();
    eprintln!("bench-compact: {files} files, {rows} rows, {bytes_before} bytes; target file size {target} bytes");

    let mut raw_times = Vec::new();
    let mut compact_times = Vec::new();
    let (mut files_after, mut bytes_after, mut raw_files, mut raw_bytes) = (0, 0, 0, 0);
    for round in 0..rounds {
        let (dataset, inputs) = small_files(&catalog, &store_root, &seeds, round).await?;
        let raw_dir = dir.path().join(format!("raw-{round}"));
        let mut raw = None;
        if round % 2 == 0 {
            raw = Some(raw_duckdb(&inputs, &raw_dir, target)?);
        }
        let started = Instant::now();
        let (written, written_bytes) = compact(&catalog, &store, dir.path(), dataset, round, target).await?;
        let elapsed = started.elapsed();
        let raw = match raw {
            Some(raw) => raw,
            None => raw_duckdb(&inputs, &raw_dir, target)?,
        };
        (files_after, bytes_after) = (written, written_bytes);
        (raw_files, raw_bytes) = output_of(&raw_dir)?;
        eprintln!(
            "bench-compact: round {round}: raw DuckDB {:.2} s ({raw_files} files, {raw_bytes} bytes), compaction {:.2} s \
             ({written} files, {written_bytes} bytes)",
            raw.as_secs_f64(),
            elapsed.as_secs_f64(),
        );
        raw_times.push(raw);
        compact_times.push(elapsed);
        std::fs::remove_dir_all(&raw_dir)?;
    }
    let raw = median(&mut raw_times).as_secs_f64();
    let compacted = median(&mut compact_times).as_secs_f64();
    let mb = bytes_before as f64 / 1e6;
    println!("before: {files} files, {bytes_before} bytes, {rows} rows");
    println!("after:  {files_after} files, {bytes_after} bytes (raw DuckDB: {raw_files} files, {raw_bytes} bytes)");
    println!(
        "median: compaction {compacted:.2} s ({:.1} MB/s), raw DuckDB COPY {raw:.2} s ({:.1} MB/s)",
        mb / compacted,
        mb / raw
    );
    println!(
        "files_before={files} bytes_before={bytes_before} files_after={files_after} bytes_after={bytes_after} \
         rows={rows} compact_mb_per_sec={:.1} raw_mb_per_sec={:.1} ratio_vs_duckdb={:.2}",
        mb / compacted,
        mb / raw,
        raw / compacted
    );
    Ok(())
}

/// Writes the small files once with DuckDB.
async fn write_seeds(dir: &Path, files: u64, rows: u64) -> Result<Vec<Seed>, BoxError> {
    std::fs::create_dir_all(dir)?;
    let connection = duckdb::Connection::open_in_memory()?;
    let mut seeds = Vec::new();
    for index in 0..files {
        let name = format!("part-{index:05}.parquet");
        let path = dir.join(&name);
        let (start, end) = (index * rows, (index + 1) * rows);
        connection.execute_batch(&format!(
            "COPY (SELECT i AS id, (i * 7919) % 1000 AS amount, 'category_' || (i % 17) AS category, \
             TIMESTAMP '2024-01-01' + to_seconds(i % 31536000) AS ts FROM range({start}, {end}) t(i)) \
             TO '{}' (FORMAT parquet, COMPRESSION zstd)",
            path.display()
        ))?;
        let (bytes, sha256) = duckmesh_storage::hash_file(&path).await?;
        seeds.push(Seed { name, path, bytes, sha256, rows });
    }
    Ok(seeds)
}

/// A fresh dataset whose current snapshot is the seed files (copied into the store), committed
/// as one append; returns it and the inputs' paths in the store.
async fn small_files(
    catalog: &Catalog,
    store_root: &Path,
    seeds: &[Seed],
    round: u64,
) -> Result<(DatasetId, Vec<PathBuf>), BoxError> {
    let name = format!("events-{round}");
    let dataset = catalog
        .upsert_dataset(&DatasetSpec {
            namespace: "bench".into(),
            name: name.clone(),
            uid: format!("uid-{name}"),
            generation: 1,
            tenant: "bench".into(),
            schema: None,
            spec: serde_json::json!({}),
        })
        .await?;
    let mut files = Vec::with_capacity(seeds.len());
    let mut paths = Vec::with_capacity(seeds.len());
    for seed in seeds {
        let key = format!("{name}/seed/{}", seed.name);
        let path = store_root.join(&key);
        std::fs::create_dir_all(path.parent().ok_or("a key has a directory")?)?;
        std::fs::copy(&seed.path, &path)?;
        files.push(NewFile {
            path: key,
            bytes: i64::try_from(seed.bytes)?,
            rows: i64::try_from(seed.rows)?,
            sha256: seed.sha256.clone(),
            partition: None,
        });
        paths.push(path);
    }
    let lease =
        lease(catalog, dataset.id, "sql", &format!("load-{round}"), serde_json::json!({"sql": "SELECT 1"})).await?;
    catalog.confirm_attempt(lease.attempt_ref(), None).await?;
    let request =
        CommitRequest { dataset: dataset.id, mode: CommitMode::Append, files, manifest_path: None, schema: None };
    catalog.commit(lease.attempt_ref(), &request).await?;
    Ok((dataset.id, paths))
}

/// Leases a fresh standalone task of `kind` on `dataset`.
async fn lease(
    catalog: &Catalog,
    dataset: DatasetId,
    kind: &str,
    name: &str,
    spec: serde_json::Value,
) -> Result<duckmesh_catalog::Lease, BoxError> {
    let task = TaskSpec {
        name: name.into(),
        kind: kind.into(),
        depends_on: vec![],
        max_attempts: Some(1),
        timeout_seconds: None,
        output: Some(TaskOutput { dataset, mode: CommitMode::Append }),
        spec,
    };
    let id = catalog.upsert_standalone_task("bench", "bench", &task).await?;
    Ok(catalog.lease_task(id, "bench", Duration::from_secs(600)).await?.ok_or("task not runnable")?)
}

/// One compaction through the real code path; the files and bytes it wrote.
async fn compact(
    catalog: &Catalog,
    store: &Arc<dyn ObjectStore>,
    dir: &Path,
    dataset: DatasetId,
    round: u64,
    target: u64,
) -> Result<(usize, i64), BoxError> {
    let spec = serde_json::json!({"minFiles": 2, "targetFileSizeBytes": target});
    let lease = lease(catalog, dataset, "compact", &format!("compact-{round}"), spec).await?;
    let work_dir = dir.join("work");
    std::fs::create_dir_all(&work_dir)?;
    let concurrency = env_number("DUCKMESH_BENCH_TRANSFER_CONCURRENCY", DEFAULT_TRANSFER_CONCURRENCY as u64).max(1);
    let compactor = Compactor::new(catalog.clone(), store.clone(), work_dir, Duration::from_secs(10), None)
        .with_transfer_concurrency(usize::try_from(concurrency).unwrap_or(usize::MAX));
    match compactor.run(lease.attempt_ref()).await? {
        CompactionOutcome::Committed { written, bytes_written, .. } => Ok((written, bytes_written)),
        other => Err(format!("round {round}: nothing was compacted: {other:?}").into()),
    }
}

/// Raw DuckDB: every small file read and written again as target-size ZSTD Parquet.
fn raw_duckdb(files: &[PathBuf], out: &Path, target: u64) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let connection = duckdb::Connection::open_in_memory()?;
    let list: Vec<String> = files.iter().map(|p| format!("'{}'", p.display())).collect();
    connection.execute_batch(&format!(
        "COPY (SELECT * FROM read_parquet([{}])) TO '{}' \
         (FORMAT parquet, COMPRESSION zstd, FILENAME_PATTERN 'part-{{i}}', FILE_SIZE_BYTES {target})",
        list.join(", "),
        out.display()
    ))?;
    Ok(started.elapsed())
}

/// Files and bytes under `dir`.
fn output_of(dir: &Path) -> Result<(usize, u64), BoxError> {
    let (mut files, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        files += 1;
        bytes += entry.metadata()?.len();
    }
    Ok((files, bytes))
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}
