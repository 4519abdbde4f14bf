//! `just bench-tpch [scale]`: the 22 TPC-H queries through the query API (`POST /v1/query`
//! over HTTP) against raw DuckDB on the same Parquet files.
//!
//! Set-up (not timed):
//! - the eight TPC-H tables at `scale` (default 1), generated with the `tpchgen` crate as CSV
//!   and written by DuckDB as one ZSTD Parquet file each, typed as the specification says
//!   (identifiers `BIGINT`, money and quantities `DECIMAL(15,2)`, dates `DATE`);
//! - a private PostgreSQL (testkit) and a local-filesystem store; each table a dataset,
//!   committed through the catalog (standalone task, lease, confirm, fenced commit);
//! - the query service on a loopback port with its default configuration (rate limits off);
//!   a raw in-memory DuckDB with one view per table over the same files in the store.
//!
//! Every query runs once on each side to warm up (the service's file cache and engines, the OS
//! page cache) and the two sides' row counts are compared (a difference fails the run); then
//! `DUCKMESH_BENCH_ROUNDS` rounds (default 3), alternating which side goes first. Prints one
//! line per query with the medians, then
//! `scale=<sf> queries=22 api_total_s=<a> duckdb_total_s=<d> ratio_vs_duckdb=<a/d> max_query_ms=<m> slowest=<q>`
//! (totals are sums of the per-query medians; the API's time runs from the client's send to the
//! parsed JSON answer).
//!
//! Options: the scale as the first argument or `DUCKMESH_BENCH_TPCH_SCALE`;
//! `DUCKMESH_BENCH_ROUNDS`; `DUCKMESH_BENCH_TPCH_DIR` keeps the generated Parquet files there
//! (`<dir>/sf<scale>/`) and reuses them on the next run.

mod queries;

use duckmesh_catalog::{Catalog, CatalogConfig, CommitMode, CommitRequest, DatasetSpec, NewFile, TaskOutput, TaskSpec};
use duckmesh_query::{QueryConfig, QueryRequest, QueryService, RateLimits, router, serve};
use duckmesh_storage::{LocalStore, ObjectStore};
use duckmesh_testkit::TestDatabase;
use sha2::{Digest, Sha256};
use std::fmt::Display;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tpchgen::csv::{CustomerCsv, LineItemCsv, NationCsv, OrderCsv, PartCsv, PartSuppCsv, RegionCsv, SupplierCsv};
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator, PartSuppGenerator,
    RegionGenerator, SupplierGenerator,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The eight tables and their columns' DuckDB types, in the generator's column order.
const TABLES: &[(&str, &[(&str, &str)])] = &[
    (
        "nation",
        &[("n_nationkey", "BIGINT"), ("n_name", "VARCHAR"), ("n_regionkey", "BIGINT"), ("n_comment", "VARCHAR")],
    ),
    ("region", &[("r_regionkey", "BIGINT"), ("r_name", "VARCHAR"), ("r_comment", "VARCHAR")]),
    (
        "part",
        &[
            ("p_partkey", "BIGINT"),
            ("p_name", "VARCHAR"),
            ("p_mfgr", "VARCHAR"),
            ("p_brand", "VARCHAR"),
            ("p_type", "VARCHAR"),
            ("p_size", "INTEGER"),
            ("p_container", "VARCHAR"),
            ("p_retailprice", "DECIMAL(15,2)"),
            ("p_comment", "VARCHAR"),
        ],
    ),
    (
        "supplier",
        &[
            ("s_suppkey", "BIGINT"),
            ("s_name", "VARCHAR"),
            ("s_address", "VARCHAR"),
            ("s_nationkey", "BIGINT"),
            ("s_phone", "VARCHAR"),
            ("s_acctbal", "DECIMAL(15,2)"),
            ("s_comment", "VARCHAR"),
        ],
    ),
    (
        "customer",
        &[
            ("c_custkey", "BIGINT"),
            ("c_name", "VARCHAR"),
            ("c_address", "VARCHAR"),
            ("c_nationkey", "BIGINT"),
            ("c_phone", "VARCHAR"),
            ("c_acctbal", "DECIMAL(15,2)"),
            ("c_mktsegment", "VARCHAR"),
            ("c_comment", "VARCHAR"),
        ],
    ),
    (
        "partsupp",
        &[
            ("ps_partkey", "BIGINT"),
            ("ps_suppkey", "BIGINT"),
            ("ps_availqty", "INTEGER"),
            ("ps_supplycost", "DECIMAL(15,2)"),
            ("ps_comment", "VARCHAR"),
        ],
    ),
    (
        "orders",
        &[
            ("o_orderkey", "BIGINT"),
            ("o_custkey", "BIGINT"),
            ("o_orderstatus", "VARCHAR"),
            ("o_totalprice", "DECIMAL(15,2)"),
            ("o_orderdate", "DATE"),
            ("o_orderpriority", "VARCHAR"),
            ("o_clerk", "VARCHAR"),
            ("o_shippriority", "INTEGER"),
            ("o_comment", "VARCHAR"),
        ],
    ),
    (
        "lineitem",
        &[
            ("l_orderkey", "BIGINT"),
            ("l_partkey", "BIGINT"),
            ("l_suppkey", "BIGINT"),
            ("l_linenumber", "INTEGER"),
            ("l_quantity", "DECIMAL(15,2)"),
            ("l_extendedprice", "DECIMAL(15,2)"),
            ("l_discount", "DECIMAL(15,2)"),
            ("l_tax", "DECIMAL(15,2)"),
            ("l_returnflag", "VARCHAR"),
            ("l_linestatus", "VARCHAR"),
            ("l_shipdate", "DATE"),
            ("l_commitdate", "DATE"),
            ("l_receiptdate", "DATE"),
            ("l_shipinstruct", "VARCHAR"),
            ("l_shipmode", "VARCHAR"),
            ("l_comment", "VARCHAR"),
        ],
    ),
];

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The scale factor: the first argument that is not a flag (cargo passes `--bench`), else
/// `DUCKMESH_BENCH_TPCH_SCALE`, else 1.
fn scale() -> Result<f64, BoxError> {
    let text = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .or_else(|| std::env::var("DUCKMESH_BENCH_TPCH_SCALE").ok())
        .unwrap_or_else(|| "1".to_owned());
    match text.parse::<f64>() {
        Ok(scale) if scale > 0.0 && scale <= 100.0 => Ok(scale),
        _ => Err(format!("the scale factor must be a number in (0, 100], not {text:?}").into()),
    }
}

/// Writes `rows` as CSV with `header` to `path`.
fn write_csv<T: Display>(path: &Path, header: &str, rows: impl Iterator<Item = T>) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(out, "{header}")?;
    for row in rows {
        writeln!(out, "{row}")?;
    }
    out.flush()
}

/// Generates `table` at `scale` as `parts` CSV files in `dir` (one thread each).
fn generate_csv(table: &str, scale: f64, parts: i32, dir: &Path) -> Result<Vec<PathBuf>, BoxError> {
    // The fixed tables have one part only.
    let parts = if matches!(table, "nation" | "region") { 1 } else { parts };
    let paths: Vec<PathBuf> = (1..=parts).map(|part| dir.join(format!("{table}-{part}.csv"))).collect();
    std::thread::scope(|scope| -> Result<(), BoxError> {
        let handles: Vec<_> = paths
            .iter()
            .enumerate()
            .map(|(index, path)| {
                let part = index as i32 + 1;
                scope.spawn(move || -> std::io::Result<()> {
                    match table {
                        "nation" => write_csv(
                            path,
                            NationCsv::header(),
                            NationGenerator::new(scale, part, parts).iter().map(NationCsv::new),
                        ),
                        "region" => write_csv(
                            path,
                            RegionCsv::header(),
                            RegionGenerator::new(scale, part, parts).iter().map(RegionCsv::new),
                        ),
                        "part" => write_csv(
                            path,
                            PartCsv::header(),
                            PartGenerator::new(scale, part, parts).iter().map(PartCsv::new),
                        ),
                        "supplier" => write_csv(
                            path,
                            SupplierCsv::header(),
                            SupplierGenerator::new(scale, part, parts).iter().map(SupplierCsv::new),
                        ),
                        "customer" => write_csv(
                            path,
                            CustomerCsv::header(),
                            CustomerGenerator::new(scale, part, parts).iter().map(CustomerCsv::new),
                        ),
                        "partsupp" => write_csv(
                            path,
                            PartSuppCsv::header(),
                            PartSuppGenerator::new(scale, part, parts).iter().map(PartSuppCsv::new),
                        ),
                        "orders" => write_csv(
                            path,
                            OrderCsv::header(),
                            OrderGenerator::new(scale, part, parts).iter().map(OrderCsv::new),
                        ),
                        "lineitem" => write_csv(
                            path,
                            LineItemCsv::header(),
                            LineItemGenerator::new(scale, part, parts).iter().map(LineItemCsv::new),
                        ),
                        other => Err(std::io::Error::other(format!("no generator for {other}"))),
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().map_err(|_| "a generator thread panicked")??;
        }
        Ok(())
    })?;
    Ok(paths)
}

/// The eight tables as Parquet files in `dir` (generated unless a previous run left them).
fn tables(scale: f64, dir: &Path) -> Result<Vec<(&'static str, PathBuf)>, BoxError> {
    std::fs::create_dir_all(dir)?;
    let files: Vec<(&str, PathBuf)> =
        TABLES.iter().map(|(table, _)| (*table, dir.join(format!("{table}.parquet")))).collect();
    let done = dir.join("complete");
    if done.is_file() {
        eprintln!("bench-tpch: reusing the scale {scale} tables in {}", dir.display());
        return Ok(files);
    }
    let parts = std::thread::available_parallelism().map_or(2, |n| n.get()) as i32;
    let duckdb = duckdb::Connection::open_in_memory()?;
    for ((table, columns), (_, parquet)) in TABLES.iter().zip(&files) {
        let started = Instant::now();
        let csv = generate_csv(table, scale, parts, dir)?;
        let list = csv.iter().map(|path| format!("'{}'", path.display())).collect::<Vec<_>>().join(", ");
        let types = columns.iter().map(|(name, kind)| format!("'{name}': '{kind}'")).collect::<Vec<_>>().join(", ");
        duckdb.execute_batch(&format!(
            "COPY (SELECT * FROM read_csv([{list}], header = true, delim = ',', quote = '\"', escape = '\"', \
             columns = {{{types}}})) TO '{}' (FORMAT parquet, COMPRESSION zstd)",
            parquet.display()
        ))?;
        for path in csv {
            std::fs::remove_file(path)?;
        }
        eprintln!("bench-tpch: {table} generated in {:.1} s", started.elapsed().as_secs_f64());
    }
    std::fs::write(done, format!("{scale}\n"))?;
    Ok(files)
}

/// SHA-256 of a file, streamed.
fn sha256_file(path: &Path) -> Result<String, BoxError> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Commits `local` as the only file of dataset `table` (overwrite), as a task would.
async fn commit_table(
    catalog: &Catalog,
    store: &dyn ObjectStore,
    table: &str,
    local: &Path,
) -> Result<String, BoxError> {
    let record = catalog
        .upsert_dataset(&DatasetSpec {
            namespace: "default".into(),
            name: table.into(),
            uid: format!("uid-tpch-{table}"),
            generation: 1,
            tenant: "default".into(),
            schema: None,
            spec: serde_json::json!({}),
        })
        .await?;
    let key = format!("{table}/attempts/load/part-0.parquet");
    store.put_file(&key, local).await?;
    let rows: i64 = duckdb::Connection::open_in_memory()?.query_row(
        &format!("SELECT count(*) FROM read_parquet('{}')", local.display()),
        [],
        |row| row.get(0),
    )?;
    let task = TaskSpec {
        name: format!("load-{table}"),
        kind: "sql".into(),
        depends_on: vec![],
        max_attempts: Some(1),
        timeout_seconds: None,
        output: Some(TaskOutput { dataset: record.id, mode: CommitMode::Overwrite }),
        spec: serde_json::json!({"sql": "tpchgen"}),
    };
    let task = catalog.upsert_standalone_task("default", "default", &task).await?;
    let lease = catalog.lease_task(task, "bench", Duration::from_secs(600)).await?.ok_or("task not leasable")?;
    catalog.confirm_attempt(lease.attempt_ref(), Some("bench")).await?;
    let file = NewFile {
        path: key.clone(),
        bytes: i64::try_from(std::fs::metadata(local)?.len())?,
        rows,
        sha256: sha256_file(local)?,
        partition: None,
    };
    let request = CommitRequest {
        dataset: record.id,
        mode: CommitMode::Overwrite,
        files: vec![file],
        manifest_path: None,
        schema: None,
    };
    catalog.commit(lease.attempt_ref(), &request).await?;
    Ok(key)
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let scale = scale()?;
    let rounds = env_number("DUCKMESH_BENCH_ROUNDS", 3).max(1) as usize;
    let work = tempfile::tempdir()?;
    let data_dir = match std::env::var("DUCKMESH_BENCH_TPCH_DIR") {
        Ok(dir) if !dir.is_empty() => PathBuf::from(dir).join(format!("sf{scale}")),
        _ => work.path().join("generated"),
    };
    let generation_started = Instant::now();
    let scale_for_generation = scale;
    let files = tokio::task::spawn_blocking(move || tables(scale_for_generation, &data_dir)).await??;
    eprintln!("bench-tpch: tables ready in {:.1} s", generation_started.elapsed().as_secs_f64());

    let db = TestDatabase::new().await?;
    let catalog = db.catalog_with(CatalogConfig::default(), 8).await?;
    let store_root = work.path().join("objects");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(&store_root)?);
    let raw = duckdb::Connection::open_in_memory()?;
    for (table, local) in &files {
        let key = commit_table(&catalog, store.as_ref(), table, local).await?;
        raw.execute_batch(&format!(
            "CREATE VIEW {table} AS SELECT * FROM read_parquet('{}')",
            store_root.join(&key).display()
        ))?;
    }
    eprintln!("bench-tpch: eight datasets committed");

    let config = QueryConfig { rate_limits: RateLimits::OFF, ..QueryConfig::local(work.path()) };
    let service = QueryService::new(catalog.clone(), store.clone(), duckmesh_telemetry::Metrics::new(), config)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, router(service), async move {
        let _ = stopped.await;
    }));
    let client = duckmesh_query::client::QueryClient::new(&url, None)?;

    let run_raw = |sql: &str| -> Result<(Duration, u64), BoxError> {
        let started = Instant::now();
        let mut statement = raw.prepare(sql)?;
        let batches: Vec<_> = statement.query_arrow([])?.collect();
        let elapsed = started.elapsed();
        Ok((elapsed, batches.iter().map(|batch| batch.num_rows() as u64).sum()))
    };
    let run_api = |sql: String| {
        let client = client.clone();
        async move {
            let started = Instant::now();
            let answer = client.query(&QueryRequest::new(sql)).await?;
            Ok::<_, BoxError>((started.elapsed(), answer.row_count, answer.exported))
        }
    };

    let queries = queries::queries(scale);
    for (name, sql) in &queries {
        let (_, raw_rows) = run_raw(sql)?;
        let (_, api_rows, _) = run_api(sql.clone()).await.map_err(|error| format!("{name}: {error}"))?;
        if raw_rows != api_rows {
            return Err(format!("{name}: the API answered {api_rows} rows, DuckDB {raw_rows}").into());
        }
    }
    let mut api_times = vec![Vec::with_capacity(rounds); queries.len()];
    let mut raw_times = vec![Vec::with_capacity(rounds); queries.len()];
    let mut exported = vec![false; queries.len()];
    let mut row_counts = vec![0; queries.len()];
    for round in 0..rounds {
        for (index, (_, sql)) in queries.iter().enumerate() {
            let (raw_time, api_time) = if (round + index) % 2 == 0 {
                let (raw_time, rows) = run_raw(sql)?;
                row_counts[index] = rows;
                let (api_time, _, was_exported) = run_api(sql.clone()).await?;
                exported[index] = was_exported;
                (raw_time, api_time)
            } else {
                let (api_time, _, was_exported) = run_api(sql.clone()).await?;
                exported[index] = was_exported;
                let (raw_time, rows) = run_raw(sql)?;
                row_counts[index] = rows;
                (raw_time, api_time)
            };
            raw_times[index].push(raw_time);
            api_times[index].push(api_time);
        }
        eprintln!("bench-tpch: round {} of {rounds} done", round + 1);
    }

    let (mut api_total, mut raw_total) = (Duration::ZERO, Duration::ZERO);
    let mut slowest = ("", Duration::ZERO);
    println!("query  api_ms  duckdb_ms  ratio  rows");
    for (index, (name, _)) in queries.iter().enumerate() {
        let api = median(&mut api_times[index]);
        let raw = median(&mut raw_times[index]);
        api_total += api;
        raw_total += raw;
        if api > slowest.1 {
            slowest = (name, api);
        }
        println!(
            "{name}  {:>8.1}  {:>9.1}  {:>5.2}  {}{}",
            millis(api),
            millis(raw),
            api.as_secs_f64() / raw.as_secs_f64(),
            row_counts[index],
            if exported[index] { " (exported: over the inline row cap)" } else { "" }
        );
    }
    println!(
        "scale={scale} queries={} api_total_s={:.3} duckdb_total_s={:.3} ratio_vs_duckdb={:.2} max_query_ms={:.1} slowest={}",
        queries.len(),
        api_total.as_secs_f64(),
        raw_total.as_secs_f64(),
        api_total.as_secs_f64() / raw_total.as_secs_f64(),
        millis(slowest.1),
        slowest.0
    );
    let _ = stop.send(());
    server.await??;
    Ok(())
}
