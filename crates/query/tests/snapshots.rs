//! Snapshot consistency on a real PostgreSQL catalog and a real S3 (moto_server): pinned
//! snapshots repeat, the latest moves, the strict barrier waits for a commit or times out,
//! and results come back in every format and from the cache.

mod common;

use common::*;
use duckmesh_catalog::CommitMode;
use duckmesh_query::{Format, QueryRequest};
use duckmesh_testkit::BoxError;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test]
async fn pinned_snapshots_repeat_after_later_commits() -> Result<(), BoxError> {
    let env = env().await?;
    let trips = dataset(&env.catalog, "default", "trips-clean").await?;
    let first =
        commit_rows(&env, trips, "default", "SELECT i AS id, i % 7 AS zone FROM range(100) t(i)", CommitMode::Append)
            .await?;
    let server = start(&env, config(&env)).await?;
    let client = server.client(None);

    let sql = "SELECT count(*) AS n, sum(id) AS total FROM trips_clean";
    let at_first = client.query(&QueryRequest::new(sql)).await?;
    assert_eq!(at_first.rows, vec![vec![json!(100), json!(4950)]]);
    assert_eq!(at_first.snapshots, BTreeMap::from([("trips-clean".to_owned(), first.snapshot.0)]));
    assert_eq!((at_first.files_scanned, at_first.files_downloaded), (1, 1));
    assert!(at_first.bytes_scanned > 0);

    let second = commit_rows(
        &env,
        trips,
        "default",
        "SELECT i AS id, i % 7 AS zone FROM range(100, 250) t(i)",
        CommitMode::Append,
    )
    .await?;
    let third = commit_rows(&env, trips, "default", "SELECT 1 AS id, 1 AS zone", CommitMode::Overwrite).await?;
    assert!(third.snapshot > second.snapshot && second.snapshot > first.snapshot);

    // Pinned (by either spelling of the name): the same answer as before, every time.
    for key in ["trips-clean", "trips_clean"] {
        let mut pinned = QueryRequest::new(sql);
        pinned.snapshots.insert(key.into(), first.snapshot.0);
        let answer = client.query(&pinned).await?;
        assert_eq!(answer.rows, at_first.rows, "pinned via {key}");
        assert_eq!(answer.snapshots["trips-clean"], first.snapshot.0);
        assert_eq!(answer.files_downloaded, 0, "served from the cache");
    }
    let mut middle = QueryRequest::new(format!("{sql} WHERE id >= 0"));
    middle.snapshots.insert("trips-clean".into(), second.snapshot.0);
    assert_eq!(client.query(&middle).await?.rows, vec![vec![json!(250), json!(31125)]]);

    // Latest follows the overwrite.
    let latest = client.query(&QueryRequest::new(sql)).await?;
    assert_eq!(latest.rows, vec![vec![json!(1), json!(1)]]);
    assert_eq!(latest.visibility_tokens["trips-clean"], third.visibility_token);

    // Ordered results keep their order; quoted names work too.
    let ordered = client
        .query(&QueryRequest {
            snapshots: BTreeMap::from([("trips-clean".to_owned(), second.snapshot.0)]),
            ..QueryRequest::new("SELECT zone, count(*) AS n FROM \"trips-clean\" GROUP BY zone ORDER BY zone DESC")
        })
        .await?;
    let zones: Vec<i64> = ordered.rows.iter().filter_map(|row| row[0].as_i64()).collect();
    assert_eq!(zones, vec![6, 5, 4, 3, 2, 1, 0]);

    // An unknown pin is a clear error.
    let mut missing = QueryRequest::new(sql);
    missing.snapshots.insert("trips-clean".into(), 999);
    let error = client.query(&missing).await.expect_err("no such snapshot");
    assert_eq!(error.error_code(), "snapshot_not_found");
    let mut stray = QueryRequest::new(sql);
    stray.snapshots.insert("zones".into(), 1);
    assert_eq!(client.query(&stray).await.expect_err("pin of an unread dataset").error_code(), "invalid_request");
    server.stop().await
}

#[tokio::test]
async fn csv_and_arrow_formats() -> Result<(), BoxError> {
    let env = env().await?;
    let ds = dataset(&env.catalog, "default", "events").await?;
    commit_rows(&env, ds, "default", "SELECT i AS id, 'e,' || i AS label FROM range(3) t(i)", CommitMode::Append)
        .await?;
    let server = start(&env, config(&env)).await?;
    let client = server.client(None);
    let sql = "SELECT id, label FROM events ORDER BY id";

    let csv =
        client.query_raw("/v1/query", &QueryRequest { format: Some(Format::Csv), ..QueryRequest::new(sql) }).await?;
    assert!(csv.content_type.starts_with("text/csv"));
    assert_eq!(std::str::from_utf8(&csv.body)?, "id,label\r\n0,\"e,0\"\r\n1,\"e,1\"\r\n2,\"e,2\"\r\n");

    let arrow = client
        .query_raw("/v1/task/query", &QueryRequest { format: Some(Format::Arrow), ..QueryRequest::new(sql) })
        .await?;
    assert_eq!(arrow.content_type, "application/vnd.apache.arrow.stream");
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow.body.to_vec()), None)?;
    let mut rows = 0;
    for batch in reader {
        rows += batch?.num_rows();
    }
    assert_eq!(rows, 3);
    server.stop().await
}

#[tokio::test]
async fn the_strict_barrier_waits_for_a_commit() -> Result<(), BoxError> {
    let env = env().await?;
    let ds = dataset(&env.catalog, "default", "orders").await?;
    let first = commit_rows(&env, ds, "default", "SELECT 1 AS id", CommitMode::Append).await?;
    let server = start(&env, config(&env)).await?;
    let client = server.client(None);

    // Already visible: answers at once.
    let now = QueryRequest {
        min_visibility_token: Some(first.visibility_token),
        ..QueryRequest::new("SELECT count(*) FROM orders")
    };
    assert_eq!(client.query(&now).await?.rows, vec![vec![json!(1)]]);

    // One token ahead: waits until another task commits.
    let ahead = QueryRequest {
        min_visibility_token: Some(first.visibility_token + 1),
        timeout_ms: Some(20_000),
        ..QueryRequest::new("SELECT count(*) FROM orders")
    };
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.query(&ahead).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "the query must wait for the commit");
    let second = commit_rows(&env, ds, "default", "SELECT 2 AS id", CommitMode::Append).await?;
    let answer = waiting.await??;
    assert_eq!(answer.rows, vec![vec![json!(2)]]);
    assert_eq!(answer.snapshots["orders"], second.snapshot.0);
    assert!(answer.visibility_tokens["orders"] > first.visibility_token);

    // Never reached: 504 consistency_timeout, counted.
    let never = json!({"sql": "SELECT count(*) FROM orders", "min_visibility_token": 1000, "timeout_ms": 400});
    let started = std::time::Instant::now();
    let response = post(&server.url, "/v1/query", None, never).await?;
    assert_eq!(status_and_code(response).await?, (504, "consistency_timeout".to_owned()));
    assert!(started.elapsed() >= Duration::from_millis(400));
    let metrics = reqwest::get(format!("{}/metrics", server.url)).await?.text().await?;
    assert!(metrics.contains("duckmesh_consistency_timeout_total 1"), "{metrics}");
    assert!(
        metrics.contains("duckmesh_query_requests_total{kind=\"interactive\",barrier=\"strict\",result=\"timeout\"} 1"),
        "{metrics}"
    );
    server.stop().await
}
