//! `just bench-ingest`: the ingest path end to end on loopback — HTTP acks from the real query
//! service, the real coordinator committing batches, a durable PostgreSQL catalog.
//!
//! Prints one line: `records_per_sec=<n> ack_p50_ms=<a> ack_p95_ms=<b> visible_p95_ms=<c>`.
//!
//! - **Load.** The offered load is fixed and open-loop: a request of `DUCKMESH_BENCH_BATCH`
//!   records (100) is sent every `batch / rate` seconds for `DUCKMESH_BENCH_SECONDS` (20 s), at
//!   `DUCKMESH_BENCH_RATE` records per second (5,000). Requests go out on schedule even when
//!   earlier ones are slow, so a slow service shows up as latency, not as a lower offered rate.
//! - **Ack latency.** Measured at the client, from the send of a request to its 200.
//! - **Visible latency** (`visible_p95_ms`). What a client sees: every
//!   `DUCKMESH_BENCH_PROBE_EVERY`-th request (10th), once acked, is followed by a strict-barrier
//!   query at its ack's visibility token for its last record, and the time is taken from the
//!   send of the ingest request until that query's answer. A probe that does not find its
//!   record is a read-your-writes violation and fails the benchmark. The catalog's own figure
//!   for every event, `received_at` (the ack's transaction) to `committed_at` (the commit),
//!   is printed on stderr as `commit_p95_ms`.
//! - **`records_per_sec`.** Accepted records divided by the time from the first send until
//!   the last record was visible.
//!
//! **Set-up.** The catalog is `DATABASE_URL` when set; otherwise a private cluster with
//! PostgreSQL's durability settings on (`fsync`, `synchronous_commit`). The store is a local
//! directory. `DUCKMESH_BENCH_COORDINATORS` (1) coordinators run with their default knobs
//! (`DUCKMESH_COORDINATOR_*` apply).

use duckmesh_catalog::{Catalog, CatalogConfig, Column, ConnectOptions, DatasetSpec};
use duckmesh_coordinator::{Coordinator, CoordinatorConfig};
use duckmesh_localpg::{ClusterOptions, LocalCluster};
use duckmesh_query::client::QueryClient;
use duckmesh_query::{QueryConfig, QueryRequest, QueryService, RateLimits};
use duckmesh_storage::{LocalStore, ObjectStore};
use duckmesh_telemetry::Metrics;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Whether a `SELECT count(*)` answer says 1 (a BIGINT may come as a number or a string).
fn found_one(rows: &[Vec<serde_json::Value>]) -> bool {
    match rows {
        [row] => matches!(row.as_slice(), [value] if value.as_i64() == Some(1) || value.as_str() == Some("1")),
        _ => false,
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let rate = env("DUCKMESH_BENCH_RATE", 5_000).max(1);
    let batch = env("DUCKMESH_BENCH_BATCH", 100).clamp(1, 10_000);
    let seconds = env("DUCKMESH_BENCH_SECONDS", 20).clamp(1, 3_600);
    let coordinators = env("DUCKMESH_BENCH_COORDINATORS", 1).max(1);
    let probe_every = env("DUCKMESH_BENCH_PROBE_EVERY", 10).max(1);

    let (_cluster, url) = match std::env::var("DATABASE_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let options = ClusterOptions { durable: true, ..ClusterOptions::ephemeral() };
            let cluster = tokio::task::spawn_blocking(move || LocalCluster::start(&options)).await??;
            let url = cluster.url("postgres");
            (Some(cluster), url)
        }
    };
    let mut connect = ConnectOptions::new(url);
    connect.max_connections = 32;
    let catalog = Catalog::connect(&connect, CatalogConfig::default()).await?;
    catalog.migrate().await?;
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("objects"))?);
    let name = format!("bench-{}", std::process::id());
    let column = |name: &str, data_type: &str| Column { name: name.into(), data_type: data_type.into() };
    let dataset = catalog
        .upsert_dataset(&DatasetSpec {
            namespace: "default".into(),
            name: name.clone(),
            uid: name.clone(),
            generation: 1,
            tenant: "default".into(),
            schema: Some(vec![
                column("id", "VARCHAR"),
                column("n", "BIGINT"),
                column("amount", "DOUBLE"),
                column("at", "TIMESTAMP"),
            ]),
            spec: serde_json::json!({"ingest": {"dedupeKey": "id", "maxPendingRecords": 10_000_000}}),
        })
        .await?;

    let metrics = Metrics::new();
    let mut config = QueryConfig { rate_limits: RateLimits::OFF, ..QueryConfig::local(dir.path()) };
    config.ingest.records_per_minute = None;
    let service = QueryService::new(catalog.clone(), Arc::clone(&store), metrics.clone(), config)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let server = tokio::spawn(duckmesh_query::serve(listener, duckmesh_query::router(service), {
        let stop = stop.clone();
        async move { stop.cancelled().await }
    }));
    let mut running = Vec::new();
    for index in 0..coordinators {
        let mut config = CoordinatorConfig::from_env()?;
        config.work_dir = dir.path().join(format!("coordinator-{index}"));
        config.identity = format!("bench-{index}");
        let coordinator = Coordinator::new(catalog.clone(), Arc::clone(&store), metrics.clone(), config);
        let stop = stop.clone();
        running.push(tokio::spawn(async move { coordinator.run(stop).await }));
    }

    let client = QueryClient::new(&api, None)?;
    let interval = Duration::from_secs_f64(batch as f64 / rate as f64);
    let requests = (rate * seconds).div_ceil(batch);
    let started = Instant::now();
    let mut sends = Vec::with_capacity(requests as usize);
    for request in 0..requests {
        tokio::time::sleep_until((started + interval * request as u32).into()).await;
        let client = client.clone();
        let name = name.clone();
        let body: String = (0..batch)
            .map(|i| {
                let n = request * batch + i;
                format!(
                    "{{\"id\":\"ev-{n}\",\"n\":{n},\"amount\":{}.25,\"at\":\"2026-11-23 12:{:02}:{:02}\"}}\n",
                    n % 1000,
                    (n / 60) % 60,
                    n % 60
                )
            })
            .collect();
        let probe = (request % probe_every == 0).then(|| {
            let last = request * batch + batch - 1;
            QueryRequest {
                min_visibility_token: None,
                timeout_ms: Some(30_000),
                ..QueryRequest::new(format!(
                    "SELECT count(*) AS n FROM {} WHERE id = 'ev-{last}'",
                    name.replace('-', "_")
                ))
            }
        });
        sends.push(tokio::spawn(async move {
            let sent = Instant::now();
            let ack = client.ingest(&name, None, body).await;
            let elapsed = sent.elapsed().as_secs_f64() * 1000.0;
            // Read-your-writes, as a client does it: the ack's token as the barrier.
            let visible = match (&ack, probe) {
                (Ok(ack), Some(probe)) => {
                    let probe = QueryRequest { min_visibility_token: Some(ack.visibility_token), ..probe };
                    Some(client.query(&probe).await.map(|answer| (answer.rows, sent.elapsed().as_secs_f64() * 1000.0)))
                }
                _ => None,
            };
            (ack, elapsed, visible)
        }));
    }
    let mut accepted = 0u64;
    let mut failed = 0u64;
    let mut violations = 0u64;
    let mut latencies = Vec::with_capacity(sends.len());
    let mut visible = Vec::new();
    for send in sends {
        let (ack, elapsed, probe) = send.await?;
        match ack {
            Ok(ack) => {
                accepted += ack.accepted;
                latencies.push(elapsed);
            }
            Err(error) => {
                failed += 1;
                eprintln!("request failed: {error}");
            }
        }
        match probe {
            Some(Ok((rows, elapsed))) if found_one(&rows) => visible.push(elapsed),
            Some(Ok((rows, _))) => {
                violations += 1;
                eprintln!("read-your-writes violation: a barrier query at the ack's token found {rows:?}");
            }
            Some(Err(error)) => {
                failed += 1;
                eprintln!("probe query failed: {error}");
            }
            None => {}
        }
    }
    // Wait for the last record to become visible.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let backlog = catalog.ingest_backlog().await?;
        if backlog.pending == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{} events still pending after 2 minutes", backlog.pending).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (first_ack, last_commit): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT min(received_at), max(committed_at) FROM ingest_events WHERE dataset_id = $1")
            .bind(dataset.id.0)
            .fetch_one(catalog.pool())
            .await?;
    let total_seconds = started
        .elapsed()
        .as_secs_f64()
        .min((last_commit - first_ack).num_milliseconds() as f64 / 1000.0 + interval.as_secs_f64() + 0.001);
    let mut committed: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM committed_at - received_at)::float8 * 1000 FROM ingest_events WHERE dataset_id = $1",
    )
    .bind(dataset.id.0)
    .fetch_all(catalog.pool())
    .await?;
    let (snapshots, files): (i64, i64) =
        sqlx::query_as("SELECT count(*), coalesce(sum(added_files), 0)::bigint FROM snapshots WHERE dataset_id = $1")
            .bind(dataset.id.0)
            .fetch_one(catalog.pool())
            .await?;
    stop.cancel();
    for coordinator in running {
        coordinator.await??;
    }
    server.await??;

    latencies.sort_by(f64::total_cmp);
    visible.sort_by(f64::total_cmp);
    committed.sort_by(f64::total_cmp);
    eprintln!(
        "offered {rate} records/s in requests of {batch} for {seconds} s; {accepted} accepted, {failed} requests \
         failed; {snapshots} snapshots, {files} files, {coordinators} coordinator(s); {} visibility probes \
         (visible_p50_ms={:.1}); commit_p50_ms={:.1} commit_p95_ms={:.1} over every event",
        visible.len(),
        percentile(&visible, 0.50),
        percentile(&committed, 0.50),
        percentile(&committed, 0.95),
    );
    println!(
        "records_per_sec={:.0} ack_p50_ms={:.1} ack_p95_ms={:.1} visible_p95_ms={:.1}",
        accepted as f64 / total_seconds,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.95),
        percentile(&visible, 0.95),
    );
    if violations > 0 {
        return Err(format!("{violations} read-your-writes violation(s)").into());
    }
    Ok(())
}
