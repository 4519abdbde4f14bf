//! The read-only sandbox and tenant isolation through the HTTP API: every way of touching the
//! filesystem, the network, extensions, configuration or another tenant's data is refused with
//! a 4xx and a stable code, and nothing is written.

mod common;

use common::*;
use duckmesh_catalog::CommitMode;
use duckmesh_query::{ApiKeyEntry, ApiKeys, QueryConfig, QueryRequest, RateLimits};
use duckmesh_testkit::BoxError;
use serde_json::json;
use std::num::NonZeroU32;

#[tokio::test]
async fn only_read_only_queries_over_own_datasets_run() -> Result<(), BoxError> {
    let env = env().await?;
    let mine = dataset(&env.catalog, "default", "sales").await?;
    commit_rows(&env, mine, "default", "SELECT 10 AS amount", CommitMode::Append).await?;
    let theirs = dataset(&env.catalog, "globex", "payroll").await?;
    commit_rows(&env, theirs, "globex", "SELECT 99999 AS salary", CommitMode::Append).await?;
    let server = start(&env, config(&env)).await?;

    let target = env.dir.path().join("escaped.csv");
    let target_text = target.to_string_lossy().into_owned();
    let attached = env.dir.path().join("attached.db");
    let cases: Vec<(String, u16, &str)> = vec![
        ("SELECT * FROM read_csv('/etc/passwd')".into(), 400, "query_not_allowed"),
        ("SELECT * FROM read_parquet('/var/tmp/anything.parquet')".into(), 400, "query_not_allowed"),
        ("SELECT * FROM glob('/etc/*')".into(), 400, "query_not_allowed"),
        ("SELECT * FROM '/etc/passwd'".into(), 400, "query_not_allowed"),
        ("SELECT * FROM read_parquet('https://example.com/x.parquet')".into(), 400, "query_not_allowed"),
        (format!("ATTACH '{}' AS other", attached.display()), 400, "query_not_allowed"),
        ("INSTALL httpfs".into(), 400, "query_not_allowed"),
        ("LOAD httpfs".into(), 400, "query_not_allowed"),
        (format!("COPY (SELECT * FROM sales) TO '{target_text}'"), 400, "query_not_allowed"),
        ("SET enable_external_access = true".into(), 400, "query_not_allowed"),
        ("PRAGMA enable_profiling".into(), 400, "query_not_allowed"),
        ("CREATE TABLE t AS SELECT 1".into(), 400, "query_not_allowed"),
        (format!("SELECT 1; COPY (SELECT 1) TO '{target_text}'"), 400, "query_not_allowed"),
        ("SELECT * FROM sales; SELECT 2".into(), 400, "query_not_allowed"),
        ("SELECT * FROM payroll".into(), 404, "dataset_not_found"),
        ("SELECT * FROM sales, payroll".into(), 404, "dataset_not_found"),
        ("SELECT * FROM nope".into(), 404, "dataset_not_found"),
        ("SELECT amount FROM sales WHERE".into(), 400, "query_invalid"),
        ("SELECT missing_column FROM sales".into(), 400, "query_invalid"),
    ];
    for (sql, status, code) in &cases {
        let response = post(&server.url, "/v1/query", None, json!({"sql": sql})).await?;
        assert_eq!(status_and_code(response).await?, (*status, (*code).to_owned()), "{sql}");
    }
    assert!(!target.exists(), "COPY wrote a file");
    assert!(!attached.exists(), "ATTACH created a database");

    // Malformed requests are 400s too, never 5xx.
    for body in [json!({"sql": 1}), json!({"sql": "SELECT 1", "format": "xml"}), json!({"query": "SELECT 1"})] {
        let response = post(&server.url, "/v1/query", None, body.clone()).await?;
        assert_eq!(status_and_code(response).await?, (400, "invalid_request".to_owned()), "{body}");
    }
    // What is allowed still works.
    let ok = server.client(None).query(&QueryRequest::new("SELECT sum(amount) FROM sales, range(3)")).await?;
    assert_eq!(ok.rows, vec![vec![json!(30)]]);
    server.stop().await
}

#[tokio::test]
async fn api_keys_decide_the_tenant() -> Result<(), BoxError> {
    let env = env().await?;
    let acme = dataset(&env.catalog, "acme", "sales").await?;
    commit_rows(&env, acme, "acme", "SELECT 1 AS amount", CommitMode::Append).await?;
    let globex = dataset(&env.catalog, "globex", "ledger").await?;
    commit_rows(&env, globex, "globex", "SELECT 2 AS amount", CommitMode::Append).await?;
    let keys = ApiKeys::from_entries(vec![
        ApiKeyEntry { key: Some("acme-key".into()), key_sha256: None, tenant: "acme".into(), user: "ann".into() },
        ApiKeyEntry {
            key: None,
            key_sha256: Some(duckmesh_query::auth::digest("globex-key")),
            tenant: "globex".into(),
            user: "gil".into(),
        },
    ])?;
    let config = QueryConfig { auth: Some(keys), ..config(&env) };
    let server = start(&env, config).await?;

    let body = json!({"sql": "SELECT * FROM sales"});
    for key in [None, Some("wrong-key")] {
        let response = post(&server.url, "/v1/query", key, body.clone()).await?;
        assert_eq!(status_and_code(response).await?, (401, "unauthorized".to_owned()));
    }
    let anonymous = reqwest::get(format!("{}/v1/datasets", server.url)).await?;
    assert_eq!(anonymous.status().as_u16(), 401);
    // Health and metrics need no key.
    assert_eq!(reqwest::get(format!("{}/v1/health", server.url)).await?.status().as_u16(), 200);

    let ann = server.client(Some("acme-key"));
    assert_eq!(ann.query(&QueryRequest::new("SELECT * FROM sales")).await?.rows, vec![vec![json!(1)]]);
    assert_eq!(
        ann.query(&QueryRequest::new("SELECT * FROM ledger")).await.expect_err("other tenant").error_code(),
        "dataset_not_found"
    );
    let gil = server.client(Some("globex-key"));
    assert_eq!(gil.query(&QueryRequest::new("SELECT * FROM ledger")).await?.rows, vec![vec![json!(2)]]);
    assert_eq!(
        gil.query(&QueryRequest::new("SELECT * FROM sales")).await.expect_err("other tenant").error_code(),
        "dataset_not_found"
    );

    let listed: Vec<String> = ann.datasets().await?.datasets.into_iter().map(|d| d.name).collect();
    assert_eq!(listed, ["sales"]);
    let foreign = reqwest::Client::new()
        .get(format!("{}/v1/datasets/ledger/snapshots", server.url))
        .bearer_auth("acme-key")
        .send()
        .await?;
    assert_eq!(status_and_code(foreign).await?, (404, "dataset_not_found".to_owned()));
    server.stop().await
}

#[tokio::test]
async fn query_rate_limit_per_user() -> Result<(), BoxError> {
    let env = env().await?;
    let config = QueryConfig {
        rate_limits: RateLimits { query_per_user: NonZeroU32::new(2), ..RateLimits::SPEC },
        ..config(&env)
    };
    let server = start(&env, config).await?;
    let body = json!({"sql": "SELECT 1"});
    for _ in 0..2 {
        assert_eq!(post(&server.url, "/v1/query", None, body.clone()).await?.status().as_u16(), 200);
    }
    let limited = post(&server.url, "/v1/query", None, body.clone()).await?;
    let retry_after: u64 = limited.headers().get("retry-after").ok_or("Retry-After")?.to_str()?.parse()?;
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(status_and_code(limited).await?, (429, "rate_limited".to_owned()));
    // Task queries and listings are not under the interactive query limit.
    assert_eq!(post(&server.url, "/v1/task/query", None, body).await?.status().as_u16(), 200);
    server.stop().await
}
