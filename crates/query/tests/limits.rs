//! Caps and back-pressure through the HTTP API: over-sized results are exported as Parquet
//! behind a presigned URL, bursts over the concurrency cap get 429 with Retry-After (never
//! 5xx), and long queries are interrupted at their time limit.

mod common;

use common::*;
use duckmesh_catalog::CommitMode;
use duckmesh_query::{QueryConfig, QueryRequest};
use duckmesh_testkit::BoxError;
use serde_json::json;

#[tokio::test]
async fn large_results_are_exported_whole_behind_a_presigned_url() -> Result<(), BoxError> {
    let env = env().await?;
    let ds = dataset(&env.catalog, "default", "clicks").await?;
    commit_rows(
        &env,
        ds,
        "default",
        "SELECT i AS id, 'user-' || (i % 100) AS who FROM range(25000) t(i)",
        CommitMode::Append,
    )
    .await?;
    let server = start(&env, config(&env)).await?;
    let client = server.client(None);

    let answer = client.query(&QueryRequest::new("SELECT * FROM clicks")).await?;
    assert!(answer.exported && answer.rows.is_empty());
    assert_eq!(answer.row_count, 25_000);
    let export = answer.export.ok_or("export info")?;
    assert_eq!(export.key, format!("_query-exports/default/{}.parquet", answer.query_id));
    assert_eq!(export.row_count, 25_000);
    assert!(export.url.starts_with("http://"), "a presigned S3 URL");

    let bytes = duckmesh_storage::testing::fetch_url(&export.url).await?;
    assert_eq!(bytes.len() as u64, export.bytes);
    let local = env.dir.path().join("export.parquet");
    std::fs::write(&local, &bytes)?;
    let connection = duckdb::Connection::open_in_memory()?;
    let (rows, distinct, total): (i64, i64, i64) = connection.query_row(
        &format!("SELECT count(*), count(DISTINCT id), sum(id) FROM read_parquet('{}')", local.display()),
        [],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    assert_eq!((rows, distinct, total), (25_000, 25_000, 25_000 * 24_999 / 2));

    // At the cap: inline.
    let inline = client.query(&QueryRequest::new("SELECT * FROM clicks LIMIT 10000")).await?;
    assert!(!inline.exported);
    assert_eq!((inline.row_count, inline.rows.len()), (10_000, 10_000));
    server.stop().await
}

/// A query that keeps a core busy for a while whatever the machine.
const SLOW: &str = "SELECT count(*) FROM range(400000000) t(i) WHERE hash(i) % 7 = 3";

#[tokio::test]
async fn bursts_over_the_cap_get_429_and_the_service_recovers() -> Result<(), BoxError> {
    let env = env().await?;
    let config = QueryConfig { max_running: 1, max_queued: 1, threads: Some(1), ..config(&env) };
    let server = start(&env, config).await?;
    let burst = (0..8).map(|_| post(&server.url, "/v1/query", None, json!({"sql": SLOW, "timeout_ms": 3000})));
    let responses = futures::future::join_all(burst).await;
    let mut overloaded = 0;
    for response in responses {
        let response = response?;
        let status = response.status().as_u16();
        assert!(status < 500 || status == 504, "no 5xx other than a query timeout: {status}");
        if status == 429 {
            assert!(response.headers().contains_key("retry-after"));
            assert_eq!(status_and_code(response).await?.1, "overloaded");
            overloaded += 1;
        }
    }
    assert!(overloaded >= 6, "1 running + 1 queued of 8; {overloaded} refused");
    let after = server.client(None).query(&QueryRequest::new("SELECT 42 AS answer")).await?;
    assert_eq!(after.rows, vec![vec![json!(42)]]);
    server.stop().await
}

#[tokio::test]
async fn long_queries_are_interrupted_at_their_limit() -> Result<(), BoxError> {
    let env = env().await?;
    let server = start(&env, config(&env)).await?;
    let started = std::time::Instant::now();
    let response = post(&server.url, "/v1/query", None, json!({"sql": SLOW, "timeout_ms": 300})).await?;
    assert_eq!(status_and_code(response).await?, (504, "query_timeout".to_owned()));
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "interrupted, not run to the end");
    let metrics = reqwest::get(format!("{}/metrics", server.url)).await?.text().await?;
    assert!(metrics.contains("result=\"timeout\"} 1"), "{metrics}");
    server.stop().await
}
