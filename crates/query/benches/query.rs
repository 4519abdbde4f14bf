//! `just bench-query`: interactive query latency through the HTTP API against raw DuckDB on
//! the same local Parquet files, warm.
//!
//! Set-up (not timed): a private PostgreSQL (testkit), a local-filesystem store, and a dataset
//! of `DUCKMESH_BENCH_ROWS` rows (default 10,000,000) written with DuckDB as Parquet and
//! committed through the catalog (standalone task, lease, confirm, fenced commit). A query
//! server on a loopback port; a raw DuckDB connection with a view over the same files.
//! Every query of the fixed set runs once on each side to warm up (the service's file cache,
//! the OS page cache), then `DUCKMESH_BENCH_ROUNDS` times (default 5), alternating sides.
//!
//! Prints `p50_ms=<x> p95_ms=<y> ratio_vs_duckdb=<r>`: percentiles of the API's latencies
//! (client send to last byte parsed) over every query and round, and the API's total time over
//! raw DuckDB's total time for the same queries (1.0 = no overhead; the target is ≤ 1.3).

use duckmesh_catalog::{CatalogConfig, CommitMode, CommitRequest, DatasetSpec, NewFile, TaskOutput, TaskSpec};
use duckmesh_query::{QueryConfig, QueryRequest, QueryService, RateLimits, router, serve};
use duckmesh_storage::{LocalStore, ObjectStore};
use duckmesh_testkit::TestDatabase;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The fixed query set: a filter count, a small group-by, a wide group-by, a selective
/// aggregate and a point lookup.
const QUERIES: &[&str] = &[
    "SELECT count(*) AS n FROM bench_trips WHERE amount > 500",
    "SELECT category, count(*) AS n, avg(amount) AS mean FROM bench_trips GROUP BY category ORDER BY category",
    "SELECT id % 1000 AS bucket, sum(amount) AS total FROM bench_trips GROUP BY bucket ORDER BY total DESC LIMIT 10",
    "SELECT min(ts) AS first, max(ts) AS last, count(*) AS n FROM bench_trips WHERE category = 'category_3'",
    "SELECT * FROM bench_trips WHERE id = 4242424",
];

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let rows = env_number("DUCKMESH_BENCH_ROWS", 10_000_000);
    let rounds = env_number("DUCKMESH_BENCH_ROUNDS", 5).max(1);
    let db = TestDatabase::new().await?;
    let catalog = db.catalog_with(CatalogConfig::default(), 8).await?;
    let dir = tempfile::tempdir()?;
    let store_root = dir.path().join("objects");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(&store_root)?);

    eprintln!("bench-query: generating {rows} rows");
    let record = catalog
        .upsert_dataset(&DatasetSpec {
            namespace: "default".into(),
            name: "bench-trips".into(),
            uid: "uid-bench-trips".into(),
            generation: 1,
            tenant: "default".into(),
            schema: None,
            spec: serde_json::json!({}),
        })
        .await?;
    let local = dir.path().join("generated.parquet");
    let generator = duckdb::Connection::open_in_memory()?;
    generator.execute_batch(&format!(
        "COPY (SELECT i AS id, (i * 7919) % 1000 AS amount, 'category_' || (i % 17) AS category, \
         TIMESTAMP '2024-01-01' + to_seconds(i % 31536000) AS ts FROM range({rows}) t(i)) \
         TO '{}' (FORMAT parquet, COMPRESSION zstd)",
        local.display()
    ))?;
    drop(generator);
    let content = std::fs::read(&local)?;
    let key = "bench-trips/attempts/generate/part-0.parquet";
    store.put_file(key, &local).await?;
    let task = TaskSpec {
        name: "generate".into(),
        kind: "sql".into(),
        depends_on: vec![],
        max_attempts: Some(1),
        timeout_seconds: None,
        output: Some(TaskOutput { dataset: record.id, mode: CommitMode::Overwrite }),
        spec: serde_json::json!({"sql": "generated"}),
    };
    let task = catalog.upsert_standalone_task("default", "default", &task).await?;
    let lease = catalog.lease_task(task, "bench", Duration::from_secs(600)).await?.ok_or("task not leasable")?;
    catalog.confirm_attempt(lease.attempt_ref(), Some("bench")).await?;
    let file = NewFile {
        path: key.into(),
        bytes: content.len() as i64,
        rows: rows as i64,
        sha256: hex::encode(Sha256::digest(&content)),
        partition: None,
    };
    catalog
        .commit(
            lease.attempt_ref(),
            &CommitRequest {
                dataset: record.id,
                mode: CommitMode::Overwrite,
                files: vec![file],
                manifest_path: None,
                schema: None,
            },
        )
        .await?;
    eprintln!("bench-query: committed one {} byte Parquet file", content.len());
    drop(content);

    let config = QueryConfig { rate_limits: RateLimits::OFF, ..QueryConfig::local(dir.path()) };
    let service = QueryService::new(catalog.clone(), store.clone(), duckmesh_telemetry::Metrics::new(), config)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, router(service), async move {
        let _ = stopped.await;
    }));
    let client = duckmesh_query::client::QueryClient::new(&url, None)?;

    let raw = duckdb::Connection::open_in_memory()?;
    raw.execute_batch(&format!(
        "CREATE VIEW bench_trips AS SELECT * FROM read_parquet('{}')",
        store_root.join(key).display()
    ))?;
    let run_raw = |sql: &str| -> Result<Duration, BoxError> {
        let started = Instant::now();
        let mut statement = raw.prepare(sql)?;
        let batches: Vec<_> = statement.query_arrow([])?.collect();
        std::hint::black_box(batches);
        Ok(started.elapsed())
    };
    let run_api = |sql: &'static str| {
        let client = client.clone();
        async move {
            let started = Instant::now();
            let answer = client.query(&QueryRequest::new(sql)).await?;
            std::hint::black_box(answer);
            Ok::<_, BoxError>(started.elapsed())
        }
    };

    for sql in QUERIES {
        run_raw(sql)?;
        run_api(sql).await?;
    }
    let mut api_times = Vec::new();
    let (mut api_total, mut raw_total) = (Duration::ZERO, Duration::ZERO);
    for round in 0..rounds {
        for sql in QUERIES {
            let (raw_time, api_time) = if round % 2 == 0 {
                let raw_time = run_raw(sql)?;
                (raw_time, run_api(sql).await?)
            } else {
                let api_time = run_api(sql).await?;
                (run_raw(sql)?, api_time)
            };
            raw_total += raw_time;
            api_total += api_time;
            api_times.push(api_time);
        }
        eprintln!(
            "bench-query: round {round}: API {:.1} ms, raw DuckDB {:.1} ms (cumulative)",
            api_total.as_secs_f64() * 1000.0,
            raw_total.as_secs_f64() * 1000.0
        );
    }
    api_times.sort();
    let percentile = |p: f64| {
        let index = ((api_times.len() as f64 - 1.0) * p).round() as usize;
        api_times[index.min(api_times.len() - 1)].as_secs_f64() * 1000.0
    };
    println!(
        "p50_ms={:.1} p95_ms={:.1} ratio_vs_duckdb={:.2}",
        percentile(0.5),
        percentile(0.95),
        api_total.as_secs_f64() / raw_total.as_secs_f64()
    );
    let _ = stop.send(());
    server.await??;
    Ok(())
}
