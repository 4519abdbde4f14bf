//! The query API under hostile SQL (issue 20): oversized statements get 400 before DuckDB sees
//! them, the time limit holds while DuckDB binds, a client that leaves frees its slot, settings
//! and paths are not readable, deep but sane statements and PIVOT work, and a NUL character is
//! the caller's error. Slots are observed with one slot and no queue: a follow-up query is
//! answered only when no other query holds the slot.

mod common;

use common::*;
use duckmesh_catalog::CommitMode;
use duckmesh_query::{QueryConfig, QueryRequest};
use duckmesh_testkit::BoxError;
use serde_json::{Value, json};

/// One query slot and no queue: a query gets 429 while another holds the slot.
fn one_slot(env: &Env) -> QueryConfig {
    QueryConfig { max_running: 1, max_queued: 0, threads: Some(1), ..config(env) }
}

fn columns(n: usize) -> String {
    format!("SELECT {}", vec!["1"; n].join(","))
}

async fn answer(url: &str, body: Value) -> Result<(u16, Value), BoxError> {
    let response = post(url, "/v1/query", None, body).await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

/// `SELECT 1` answers: the one slot is free.
async fn slot_is_free(server: &Server) -> Result<(), BoxError> {
    let (status, body) = answer(&server.url, json!({"sql": "SELECT 1 AS one"})).await?;
    assert_eq!((status, &body["rows"]), (200, &json!([[1]])), "{body}");
    Ok(())
}

#[tokio::test]
async fn oversized_statements_get_400_before_duckdb_sees_them() -> Result<(), BoxError> {
    let env = env().await?;
    let server = start(&env, one_slot(&env)).await?;
    let mut nested = "SELECT 1 AS x".to_owned();
    for _ in 0..65 {
        nested = format!("SELECT x FROM ({nested})");
    }
    for (sql, says) in
        [(columns(60_000), "bytes long"), (columns(20_000), "20000 expressions"), (nested, "levels deep")]
    {
        let (status, body) = answer(&server.url, json!({"sql": sql, "timeout_ms": 2000})).await?;
        assert_eq!((status, body["error_code"].as_str()), (400, Some("query_too_complex")), "{body}");
        assert!(body["message"].as_str().unwrap_or_default().contains(says), "{body}");
        slot_is_free(&server).await?;
    }
    server.stop().await
}

#[tokio::test]
async fn the_time_limit_holds_while_duckdb_binds_and_frees_the_slot() -> Result<(), BoxError> {
    let env = env().await?;
    let mut config = one_slot(&env);
    config.sql_limits.max_sql_bytes = 1024 * 1024;
    config.sql_limits.max_select_expressions = 1_000_000;
    let server = start(&env, config).await?;
    // DuckDB binds 20,000 same-named columns in quadratic time and checks no interrupt while
    // binding; the limits above let it through to show the deadline holds anyway.
    let (status, body) = answer(&server.url, json!({"sql": columns(20_000), "timeout_ms": 2000})).await?;
    assert_eq!((status, body["error_code"].as_str()), (504, Some("query_timeout")), "{body}");
    slot_is_free(&server).await?;
    server.stop().await
}

/// When a request's future is dropped (what the server does with the request of a client that
/// is gone), its query is interrupted and its slot is free again without any deadline passing.
#[tokio::test]
async fn a_dropped_request_frees_its_slot() -> Result<(), BoxError> {
    let env = env().await?;
    let server = start(&env, one_slot(&env)).await?;
    let slow = "SELECT count(*) FROM range(40000000000) t(i) WHERE hash(i) % 7 = 3";
    let service = server.service.clone();
    let principal = duckmesh_query::Principal { tenant: "default".into(), user: "local".into() };
    let request = QueryRequest { timeout_ms: Some(3_600_000), ..QueryRequest::new(slow) };
    let running = tokio::spawn(async move {
        service.query(&principal, request, duckmesh_query::metrics::QueryKind::Interactive).await.map(|_| ())
    });
    // Drop the request once the slow query holds the slot (the follow-up is refused).
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!running.is_finished(), "the slow query answered");
        let (status, body) = answer(&server.url, json!({"sql": "SELECT 1"})).await?;
        if status == 429 {
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    running.abort();
    assert!(running.await.is_err_and(|error| error.is_cancelled()));
    slot_is_free(&server).await?;
    server.stop().await
}

/// A client that hangs up over HTTP/1.1 while its query runs: the server notices the closed
/// connection, interrupts the query and frees its slot long before the query's own deadline.
#[tokio::test]
async fn a_client_that_hangs_up_frees_its_slot() -> Result<(), BoxError> {
    use tokio::io::AsyncWriteExt;
    let env = env().await?;
    let server = start(&env, one_slot(&env)).await?;
    let body = json!({
        "sql": "SELECT count(*) FROM range(40000000000) t(i) WHERE hash(i) % 7 = 3",
        "timeout_ms": 3_600_000,
    })
    .to_string();
    let address = server.url.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut client = tokio::net::TcpStream::connect(&address).await?;
    let head = format!(
        "POST /v1/query HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await?;
    client.write_all(body.as_bytes()).await?;
    // The slow query holds the one slot: a follow-up is refused.
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (status, body) = answer(&server.url, json!({"sql": "SELECT 1"})).await?;
        if status == 429 {
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    drop(client);
    // The slot comes back once the server has seen the hang-up (the query itself would run
    // for an hour); 30 s bounds the wait so that a regression fails instead of hanging.
    let mut last = Value::Null;
    for _ in 0..300 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (status, body) = answer(&server.url, json!({"sql": "SELECT 1 AS one"})).await?;
        if status == 200 {
            assert_eq!(body["rows"], json!([[1]]), "{body}");
            return server.stop().await;
        }
        assert_eq!(status, 429, "{body}");
        last = body;
    }
    panic!("the slot is still held 30 s after the client hung up: {last}");
}

#[tokio::test]
async fn settings_and_server_paths_are_not_readable() -> Result<(), BoxError> {
    let env = env().await?;
    let server = start(&env, config(&env)).await?;
    for (sql, function) in [
        ("SELECT current_setting('temp_directory')", "current_setting()"),
        ("SELECT current_setting('allowed_directories')", "current_setting()"),
        ("SELECT current_setting('secret_directory')", "current_setting()"),
        ("SELECT getvariable('x')", "getvariable()"),
        ("SELECT path FROM duckdb_databases()", "duckdb_databases()"),
        ("SELECT * FROM duckdb_settings()", "duckdb_settings()"),
        ("SELECT * FROM pragma_database_list()", "pragma_database_list()"),
    ] {
        let (status, body) = answer(&server.url, json!({"sql": sql})).await?;
        assert_eq!((status, body["error_code"].as_str()), (400, Some("query_not_allowed")), "{sql}: {body}");
        assert!(body["message"].as_str().unwrap_or_default().contains(function), "{body}");
    }
    server.stop().await
}

#[tokio::test]
async fn deep_statements_pivot_and_nul_characters_are_answered_as_sql() -> Result<(), BoxError> {
    let env = env().await?;
    let ds = dataset(&env.catalog, "default", "sales").await?;
    commit_rows(
        &env,
        ds,
        "default",
        "SELECT i % 3 AS store, CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END AS product, i AS amount FROM range(12) t(i)",
        CommitMode::Append,
    )
    .await?;
    let server = start(&env, config(&env)).await?;
    let client = server.client(None);

    let chain = client.query(&QueryRequest::new(format!("SELECT {} AS n", vec!["1"; 63].join(" + ")))).await?;
    assert_eq!(chain.rows, vec![vec![json!(63)]]);
    let mut nested = "SELECT 7 AS x".to_owned();
    for _ in 0..60 {
        nested = format!("SELECT x FROM ({nested})");
    }
    assert_eq!(client.query(&QueryRequest::new(nested)).await?.rows, vec![vec![json!(7)]]);

    let pivot = client
        .query(&QueryRequest::new(
            "PIVOT sales ON product IN ('a', 'b') USING sum(amount) GROUP BY store ORDER BY store",
        ))
        .await?;
    assert_eq!(
        pivot.rows,
        vec![
            vec![json!(0), json!(6), json!(12)],
            vec![json!(1), json!(14), json!(8)],
            vec![json!(2), json!(10), json!(16)]
        ]
    );
    // Without an IN list the values come from the data, as DuckDB itself would pivot them:
    // columns in text order, NULL left out.
    let dynamic = client
        .query(&QueryRequest::new(
            "-- by store\nPIVOT sales ON store USING sum(amount) GROUP BY product ORDER BY product",
        ))
        .await?;
    let names: Vec<&str> = dynamic.columns.iter().map(|column| column.name.as_str()).collect();
    assert_eq!(names, ["product", "0", "1", "2"]);
    assert_eq!(
        dynamic.rows,
        vec![vec![json!("a"), json!(6), json!(14), json!(10)], vec![json!("b"), json!(12), json!(8), json!(16)]]
    );
    let both = client
        .query(&QueryRequest::new(
            "PIVOT (SELECT product, store % 2 AS parity FROM sales) ON product, parity USING count(*)",
        ))
        .await?;
    let names: Vec<&str> = both.columns.iter().map(|column| column.name.as_str()).collect();
    assert_eq!(names, ["a_0", "a_1", "b_0", "b_1"]);
    assert_eq!(both.rows, vec![vec![json!(4), json!(2), json!(4), json!(2)]]);
    // More distinct values than the select-list limit allows columns: a 400 naming the way out.
    let (status, body) =
        answer(&server.url, json!({"sql": "PIVOT (SELECT i FROM range(5000) t(i)) ON i USING count(*)"})).await?;
    assert_eq!((status, body["error_code"].as_str()), (400, Some("query_too_complex")), "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("IN ("), "{body}");
    let unpivot = client
        .query(&QueryRequest::new("SELECT count(*) FROM (UNPIVOT sales ON store, amount INTO NAME k VALUE v)"))
        .await?;
    assert_eq!(unpivot.rows, vec![vec![json!(24)]]);

    let (status, body) = answer(&server.url, json!({"sql": "SELECT 'a\u{0}b'"})).await?;
    assert_eq!((status, body["error_code"].as_str()), (400, Some("query_invalid")), "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("NUL"), "{body}");
    server.stop().await
}
