//! `POST /v1/ingest/{dataset}` against a real PostgreSQL and S3: durable acks with dedupe,
//! all-or-nothing batches with errors naming record and field, the read-your-writes barrier,
//! read-only mode and backpressure.

mod common;

use common::*;
use duckmesh_catalog::{Catalog, ClaimOptions, Column, DatasetSpec, IngestCommit, NewFile};
use duckmesh_core::DatasetId;
use duckmesh_query::{IngestResponse, QueryConfig, QueryRequest};
use duckmesh_testkit::BoxError;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;

async fn ingest_dataset(catalog: &Catalog, name: &str, ingest: Value) -> Result<DatasetId, BoxError> {
    let schema = vec![
        Column { name: "id".into(), data_type: "BIGINT".into() },
        Column { name: "who".into(), data_type: "VARCHAR".into() },
    ];
    let record = catalog
        .upsert_dataset(&DatasetSpec {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            generation: 1,
            tenant: "default".into(),
            schema: Some(schema),
            spec: json!({"ingest": ingest}),
        })
        .await?;
    Ok(record.id)
}

async fn post_raw(url: &str, dataset: &str, body: &str) -> Result<reqwest::Response, BoxError> {
    Ok(reqwest::Client::new().post(format!("{url}/v1/ingest/{dataset}")).body(body.to_owned()).send().await?)
}

async fn stored(catalog: &Catalog, dataset: DatasetId) -> Result<Vec<(String, Value)>, BoxError> {
    Ok(sqlx::query_as::<_, (String, sqlx::types::Json<Value>)>(
        "SELECT dedupe_key, payload FROM ingest_events WHERE dataset_id = $1 ORDER BY seq",
    )
    .bind(dataset.0)
    .fetch_all(catalog.pool())
    .await?
    .into_iter()
    .map(|(key, payload)| (key, payload.0))
    .collect())
}

/// What a coordinator does, by hand: claim, write the payloads as Parquet, commit — until
/// nothing is pending.
async fn commit_pending(env: &Env) -> Result<(), BoxError> {
    let options = ClaimOptions { max_events: 1000, lease: Duration::from_secs(30), max_claims: 3 };
    let mut batches = 0;
    while let Some(batch) = env.catalog.claim_ingest(&options).await?.batch {
        commit_batch(env, batch).await?;
        batches += 1;
    }
    assert!(batches > 0, "something was pending");
    Ok(())
}

async fn commit_batch(env: &Env, batch: duckmesh_catalog::ClaimedBatch) -> Result<(), BoxError> {
    let lines: Vec<String> = batch.events.iter().map(|e| e.payload.to_string()).collect();
    let json_path = env.dir.path().join(format!("{}.ndjson", batch.fence));
    std::fs::write(&json_path, lines.join("\n"))?;
    let local = env.dir.path().join(format!("{}.parquet", batch.fence));
    let rows = write_parquet(
        &local,
        &format!(
            "SELECT * FROM read_json('{}', columns = {{id: 'BIGINT', who: 'VARCHAR'}})",
            json_path.to_string_lossy()
        ),
    )?;
    let content = std::fs::read(&local)?;
    let key = format!("ds{}/ingest/{}/part-00000.parquet", batch.dataset.0, batch.fence);
    env.store.put_file(&key, &local).await?;
    env.catalog
        .commit_ingest(&IngestCommit {
            dataset: batch.dataset,
            fence: batch.fence,
            committed: batch.events.iter().map(|e| e.seq).collect(),
            poison: Vec::new(),
            files: vec![NewFile {
                path: key,
                bytes: content.len() as i64,
                rows,
                sha256: hex::encode(Sha256::digest(&content)),
                partition: None,
            }],
            manifest_path: None,
            schema: None,
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn acks_are_durable_deduped_and_all_or_nothing() -> Result<(), BoxError> {
    let env = env().await?;
    let ds = ingest_dataset(&env.catalog, "clicks", json!({"dedupeKey": "id"})).await?;
    dataset(&env.catalog, "default", "no-schema").await?;
    dataset(&env.catalog, "globex", "theirs").await?;
    let server = start(&env, config(&env)).await?;
    let client = server.client(None);

    let ack =
        client.ingest("clicks", None, r#"[{"id": 1, "who": "ann"}, {"id": 2}, {"id": 1, "who": "again"}]"#).await?;
    assert_eq!(
        ack,
        IngestResponse {
            accepted: 2,
            duplicates: 1,
            visibility_token: 1,
            dataset: "clicks".into(),
            namespace: "default".into()
        }
    );
    let ndjson = "{\"id\": 2, \"who\": \"retry\"}\n{\"id\": 3, \"who\": \"cy\"}\n";
    let retry = client.ingest("clicks", Some("default"), ndjson).await?;
    assert_eq!((retry.accepted, retry.duplicates), (1, 1));
    let rows = stored(&env.catalog, ds).await?;
    assert_eq!(rows.iter().map(|(key, _)| key.as_str()).collect::<Vec<_>>(), ["1", "2", "3"]);
    assert_eq!(rows[0].1, json!({"id": 1, "who": "ann"}), "the first copy is kept");

    // One bad record rejects the whole request, naming record and field; nothing is stored.
    let response = post_raw(&server.url, "clicks", r#"[{"id": 10}, {"id": 11, "when": "x"}]"#).await?;
    let status = response.status().as_u16();
    let body: Value = response.json().await?;
    assert_eq!((status, body["error_code"].as_str()), (400, Some("invalid_record")));
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("record 1") && message.contains("\"when\""), "{message}");
    let response = post_raw(&server.url, "clicks", r#"[{"id": "twelve"}]"#).await?;
    assert_eq!(status_and_code(response).await?, (400, "invalid_record".to_owned()));
    assert_eq!(stored(&env.catalog, ds).await?.len(), 3, "rejected requests stored nothing");

    let cases: &[(&str, &str, u16, &str)] = &[
        ("clicks", "not json", 400, "invalid_request"),
        ("clicks", "[]", 400, "invalid_request"),
        ("nope", r#"[{"id": 1}]"#, 404, "dataset_not_found"),
        ("theirs", r#"[{"id": 1}]"#, 404, "dataset_not_found"),
        ("no-schema", r#"[{"id": 1}]"#, 409, "schema_required"),
    ];
    for (dataset, body, status, code) in cases {
        let response = post_raw(&server.url, dataset, body).await?;
        assert_eq!(status_and_code(response).await?, (*status, (*code).to_owned()), "{dataset} {body}");
    }
    let huge = format!("[{}]", vec![r#"{"id": 1, "who": "padding padding padding"}"#; 400_000].join(","));
    let response = post_raw(&server.url, "clicks", &huge).await?;
    assert_eq!(status_and_code(response).await?, (413, "payload_too_large".to_owned()));

    let metrics = reqwest::get(format!("{}/metrics", server.url)).await?.text().await?;
    assert!(metrics.contains("duckmesh_ingest_records_total{tenant=\"default\"} 3"), "{metrics}");
    assert!(metrics.contains("duckmesh_ingest_duplicates_total{tenant=\"default\"} 2"), "{metrics}");
    assert!(metrics.contains("duckmesh_ingest_requests_total{tenant=\"default\",result=\"rejected\"}"), "{metrics}");
    server.stop().await
}

#[tokio::test]
async fn the_ack_token_reads_your_writes() -> Result<(), BoxError> {
    let env = env().await?;
    ingest_dataset(&env.catalog, "clicks", json!({"dedupeKey": "id"})).await?;
    let server = start(&env, config(&env)).await?;
    let client = server.client(None);
    let ack = client.ingest("clicks", None, "{\"id\": 1, \"who\": \"ann\"}\n{\"id\": 2, \"who\": \"bob\"}").await?;

    let mut strict = QueryRequest::new("SELECT id, who FROM clicks ORDER BY id");
    strict.min_visibility_token = Some(ack.visibility_token);
    strict.timeout_ms = Some(300);
    let error = client.query(&strict).await.expect_err("not committed yet");
    assert_eq!(error.error_code(), "consistency_timeout");

    // A barrier query waits while the batch is committed, then sees the records.
    strict.timeout_ms = Some(20_000);
    let waiting = tokio::spawn({
        let client = client.clone();
        let strict = strict.clone();
        async move { client.query(&strict).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the barrier holds until the commit");
    commit_pending(&env).await?;
    let answer = waiting.await??;
    assert_eq!(answer.rows, vec![vec![json!(1), json!("ann")], vec![json!(2), json!("bob")]]);

    // A late record promised the same token as an earlier commit is still waited for.
    let late = client.ingest("clicks", None, "{\"id\": 3, \"who\": \"cy\"}").await?;
    assert_eq!(late.visibility_token, ack.visibility_token + 1);
    strict.min_visibility_token = Some(late.visibility_token);
    strict.timeout_ms = Some(300);
    assert_eq!(client.query(&strict).await.expect_err("pending").error_code(), "consistency_timeout");
    commit_pending(&env).await?;
    // Committed: the barrier passes at once; the query itself may take a while on a busy machine.
    strict.timeout_ms = Some(20_000);
    assert_eq!(client.query(&strict).await?.row_count, 3);
    server.stop().await
}

#[tokio::test]
async fn read_only_mode_refuses_ingest_while_queries_work() -> Result<(), BoxError> {
    let env = env().await?;
    ingest_dataset(&env.catalog, "clicks", json!({"dedupeKey": "id"})).await?;
    let server = start(&env, config(&env)).await?;
    ingest_ok(&server).await?;

    env.catalog.set_read_only(true, Some("restore drill"), "test").await?;
    let response = post_raw(&server.url, "clicks", r#"[{"id": 5}]"#).await?;
    let status = response.status().as_u16();
    let body: Value = response.json().await?;
    assert_eq!((status, body["error_code"].as_str()), (503, Some("read_only")));
    assert!(body["message"].as_str().unwrap_or_default().contains("restore drill"), "{body}");
    let answer = server.client(None).query(&QueryRequest::new("SELECT 1 AS one")).await?;
    assert_eq!(answer.rows, vec![vec![json!(1)]], "queries keep working");
    let metrics = reqwest::get(format!("{}/metrics", server.url)).await?.text().await?;
    assert!(metrics.contains("duckmesh_read_only_mode 1"), "{metrics}");
    env.catalog.set_read_only(false, None, "test").await?;
    ingest_ok(&server).await?;
    server.stop().await?;

    // The process-local switch needs no catalog change.
    let local = start(&env, QueryConfig { read_only: true, ..config(&env) }).await?;
    let response = post_raw(&local.url, "clicks", r#"[{"id": 6}]"#).await?;
    assert_eq!(status_and_code(response).await?, (503, "read_only".to_owned()));
    local.stop().await
}

/// One fresh record is accepted.
async fn ingest_ok(server: &Server) -> Result<(), BoxError> {
    let id = uuid::Uuid::new_v4().as_u128() as u32;
    let ack = server.client(None).ingest("clicks", None, format!("{{\"id\": {id}}}")).await?;
    assert_eq!(ack.accepted, 1);
    Ok(())
}

#[tokio::test]
async fn floods_get_429_and_lose_nothing() -> Result<(), BoxError> {
    let env = env().await?;
    let ds = ingest_dataset(&env.catalog, "clicks", json!({"dedupeKey": "id", "rateLimitPerMinute": 50})).await?;
    let buffered = ingest_dataset(&env.catalog, "buffered", json!({"dedupeKey": "id", "maxPendingRecords": 4})).await?;
    let server = start(&env, config(&env)).await?;

    // 40 requests of 5 records against 50 records a minute.
    let flood = (0..40).map(|n| {
        let url = server.url.clone();
        async move {
            let body: Vec<String> = (0..5).map(|i| format!("{{\"id\": {}}}", n * 5 + i)).collect();
            let response = post_raw(&url, "clicks", &body.join("\n")).await?;
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").is_some();
            let body: Value = response.json().await?;
            Ok::<_, BoxError>((n, status, retry_after, body))
        }
    });
    let mut acked = Vec::new();
    let mut limited = 0;
    for result in futures::future::join_all(flood).await {
        let (n, status, retry_after, body) = result?;
        match status {
            200 => {
                assert_eq!(body["accepted"], json!(5));
                acked.extend((0..5).map(|i| (n * 5 + i).to_string()));
            }
            429 => {
                assert!(retry_after, "429 carries Retry-After");
                assert_eq!(body["error_code"], json!("rate_limited"));
                limited += 1;
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(limited >= 25 && acked.len() <= 60, "{limited} limited, {} acked", acked.len());
    let mut keys: Vec<String> = stored(&env.catalog, ds).await?.into_iter().map(|(key, _)| key).collect();
    keys.sort();
    acked.sort();
    assert_eq!(keys, acked, "exactly the acked records are stored");

    // The pending buffer: full at 4 until a commit drains it.
    let client = server.client(None);
    client.ingest("buffered", None, "{\"id\": 1}\n{\"id\": 2}\n{\"id\": 3}").await?;
    let error = client.ingest("buffered", None, "{\"id\": 4}\n{\"id\": 5}").await.expect_err("full");
    assert_eq!(error.error_code(), "ingest_backpressure");
    assert!(matches!(error, duckmesh_query::client::ClientError::Api { status: 429, retry_after: Some(1), .. }));
    commit_pending(&env).await?;
    assert_eq!(client.ingest("buffered", None, "{\"id\": 4}\n{\"id\": 5}").await?.accepted, 2);
    assert_eq!(stored(&env.catalog, buffered).await?.len(), 5);
    server.stop().await
}

/// Issue 20: values that do not fit the declared type exactly, at any depth, are refused at
/// the API naming record and field path (they used to be stored and nulled or rounded by the
/// conversion); a NUL is a 400 before anything reaches PostgreSQL (it used to be a 503 with
/// PostgreSQL's text); a byte-order mark is accepted; `7` and `"7"` are one dedupe key; a
/// dataset without columns takes no ingest.
#[tokio::test]
async fn nested_values_nuls_boms_and_key_spellings() -> Result<(), BoxError> {
    let env = env().await?;
    let schema = vec![
        Column { name: "id".into(), data_type: "VARCHAR".into() },
        Column { name: "m".into(), data_type: "MAP(VARCHAR,INTEGER)".into() },
        Column { name: "s".into(), data_type: "STRUCT(x INTEGER)".into() },
        Column { name: "l".into(), data_type: "INTEGER[]".into() },
        Column { name: "d".into(), data_type: "DECIMAL(5,2)".into() },
        Column { name: "u".into(), data_type: "UNION(n INTEGER, t VARCHAR)".into() },
    ];
    let typed = env
        .catalog
        .upsert_dataset(&DatasetSpec {
            namespace: "default".into(),
            name: "typed".into(),
            uid: "uid-typed".into(),
            generation: 1,
            tenant: "default".into(),
            schema: Some(schema),
            spec: json!({"ingest": {"dedupeKey": "id"}}),
        })
        .await?
        .id;
    let keyed = ingest_dataset(&env.catalog, "keyed", json!({})).await?;
    env.catalog
        .upsert_dataset(&DatasetSpec {
            namespace: "default".into(),
            name: "no-columns".into(),
            uid: "uid-no-columns".into(),
            generation: 1,
            tenant: "default".into(),
            schema: Some(Vec::new()),
            spec: json!({}),
        })
        .await?;
    let server = start(&env, config(&env)).await?;

    let refused: &[(&str, &str, &str)] = &[
        (r#"[{"id": "a"}, {"id": "b", "m": {"k": "notint"}}]"#, "invalid_record", "record 1, field \"m.k\""),
        (r#"{"id": "a", "s": {"y": 1}}"#, "invalid_record", "record 0, field \"s\""),
        (r#"{"id": "a", "l": [1, "2", 3.7, 99999999999]}"#, "invalid_record", "record 0, field \"l[1]\""),
        (r#"{"id": "a", "l": [1, 2, 3.7]}"#, "invalid_record", "record 0, field \"l[2]\""),
        (r#"{"id": "a", "l": [99999999999]}"#, "invalid_record", "record 0, field \"l[0]\""),
        (r#"{"id": "a", "d": 1.234}"#, "invalid_record", "record 0, field \"d\""),
        (r#"{"id": "a", "d": 1000}"#, "invalid_record", "record 0, field \"d\""),
        (r#"{"id": "a", "u": 5}"#, "invalid_record", "record 0, field \"u\""),
        ("{\"id\": \"a\"}\n{\"id\": \"b\\u0000\"}", "nul_character", "record 1, field \"id\""),
        (r#"[{"id": "a", "m": {"k\u0000": 1}}]"#, "nul_character", "record 0, field \"m[\\\"k\\\\u0000\\\"]\""),
        (r#"[{"id": "a", "_dedupe_key": "x\u0000"}]"#, "nul_character", "record 0, field \"_dedupe_key\""),
    ];
    for (body, code, names) in refused {
        let response = post_raw(&server.url, "typed", body).await?;
        let status = response.status().as_u16();
        let answer: Value = response.json().await?;
        assert_eq!((status, answer["error_code"].as_str()), (400, Some(*code)), "{body}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(names), "{body}: {message}");
        assert!(!message.contains("catalog") && !message.contains("unsupported Unicode"), "{message}");
    }
    assert!(stored(&env.catalog, typed).await?.is_empty(), "refused requests store nothing");

    // Values that fit exactly are stored as sent; a byte-order mark before the body is skipped.
    let exact = json!({"id": "ok", "m": {"k": 1}, "s": {"x": 2}, "l": [1, null, 3], "d": 123.45, "u": {"t": "x"}});
    let ack = server.client(None).ingest("typed", None, format!("\u{feff}[{exact}]")).await?;
    assert_eq!(ack.accepted, 1);
    let ack = server.client(None).ingest("typed", None, "\u{feff}{\"id\": \"bom\"}\n{\"id\": \"ndjson\"}").await?;
    assert_eq!(ack.accepted, 2);
    let rows = stored(&env.catalog, typed).await?;
    assert_eq!(rows[0], ("ok".to_owned(), exact));
    assert_eq!(rows.len(), 3);

    // Keys compare by their text: the number 7 and the string "7" are one key.
    let client = server.client(None);
    let first = client.ingest("keyed", None, r#"{"_dedupe_key": 7, "id": 1}"#).await?;
    let second = client.ingest("keyed", None, r#"{"_dedupe_key": "7", "id": 2}"#).await?;
    assert_eq!((first.accepted, second.accepted, second.duplicates), (1, 0, 1));
    assert_eq!(stored(&env.catalog, keyed).await?, vec![("7".to_owned(), json!({"id": 1}))]);

    // A dataset without columns takes no ingest, as docs/ingest.md says.
    let response = post_raw(&server.url, "no-columns", r#"[{"_dedupe_key": "a"}]"#).await?;
    assert_eq!(status_and_code(response).await?, (409, "schema_required".to_owned()));
    server.stop().await
}
