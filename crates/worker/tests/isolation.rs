//! Hostile task SQL and tenant isolation, end to end through the worker (real PostgreSQL, moto
//! S3): a task reads only its own tenant's inputs, writes only its own tenant's output, never
//! sees the shared input cache, and runs exactly one read-only statement.

mod common;

use common::{Harness, NAMESPACE, committed, sql_task};
use duckmesh_catalog::{CommitMode, DatasetRecord, DatasetSpec};
use duckmesh_core::TaskPhase;
use duckmesh_engine::{Database, Limits, Relation};
use duckmesh_worker::{Outcome, exit};
use serde_json::json;

/// A dataset of tenant `globex` in the harness's namespace.
async fn globex_dataset(harness: &Harness, name: &str) -> DatasetRecord {
    harness
        .catalog
        .upsert_dataset(&DatasetSpec {
            namespace: NAMESPACE.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            generation: 1,
            tenant: "globex".into(),
            schema: None,
            spec: json!({}),
        })
        .await
        .expect("upsert dataset")
}

/// Fills globex's `payroll` with a secret row, through a globex task run by the same worker
/// (so its file also sits in the worker's shared input cache after `reader` reads it).
async fn payroll_with_a_secret(harness: &Harness) -> DatasetRecord {
    let payroll = globex_dataset(harness, "payroll").await;
    let load = harness
        .catalog
        .upsert_standalone_task(
            NAMESPACE,
            "globex",
            &sql_task(
                "load-payroll",
                &[],
                payroll.id,
                CommitMode::Overwrite,
                json!({"sql": "SELECT 'hunter2' AS secret"}),
            ),
        )
        .await
        .expect("globex task");
    committed(harness.run_task(load).await);
    let digest = globex_dataset(harness, "digest").await;
    let reader = harness
        .catalog
        .upsert_standalone_task(
            NAMESPACE,
            "globex",
            &sql_task(
                "read-payroll",
                &[],
                digest.id,
                CommitMode::Overwrite,
                json!({"sql": "SELECT count(*) AS n FROM payroll", "inputs": [{"dataset": "payroll"}]}),
            ),
        )
        .await
        .expect("globex reader");
    let summary = committed(harness.run_task(reader).await);
    assert_eq!(summary.downloads, 1, "payroll's file is now in the shared cache");
    harness.catalog.dataset(payroll.id).await.expect("payroll")
}

/// Asserts a permanent, reported failure with `code` and returns the task's status message.
async fn refused(harness: &Harness, task: duckmesh_core::TaskId, outcome: &Outcome, code: &str) -> String {
    assert_eq!(outcome.exit_code(), exit::FAILED_PERMANENT, "{outcome:?}");
    assert_eq!(outcome.error().expect("error").error_code(), code, "{outcome:?}");
    let record = harness.catalog.task(task).await.expect("task");
    assert_eq!(record.phase, TaskPhase::Failed, "a permanent refusal does not retry");
    assert_eq!(record.attempts, 1);
    assert_eq!(record.last_error_code.as_deref(), Some(code));
    let message = record.last_error_message.unwrap_or_default();
    assert!(!message.contains("hunter2"), "{message}");
    message
}

#[tokio::test]
async fn a_task_cannot_read_another_tenants_input() {
    let harness = Harness::s3().await;
    let payroll = payroll_with_a_secret(&harness).await;
    let out = harness.dataset("loot", json!({}), None).await;
    // Stored directly (as a catalog from before the apply-time check could hold it).
    let task = harness
        .task(
            "steal",
            out.id,
            CommitMode::Overwrite,
            json!({"sql": "SELECT * FROM payroll", "inputs": [{"dataset": "payroll"}]}),
        )
        .await;
    let outcome = harness.run_task(task).await;
    let message = refused(&harness, task, &outcome, "cross_tenant_dataset").await;
    assert!(message.contains("input dataset \"payroll\" belongs to tenant \"globex\""), "{message}");
    assert_eq!(harness.catalog.dataset(out.id).await.expect("out").current_snapshot, None, "nothing committed");
    assert!(harness.store.list("loot/").await.expect("list").is_empty(), "nothing staged");
    assert!(payroll.current_snapshot.is_some());
}

#[tokio::test]
async fn a_task_cannot_overwrite_another_tenants_dataset() {
    let harness = Harness::s3().await;
    let payroll = payroll_with_a_secret(&harness).await;
    let task =
        harness.task("clobber", payroll.id, CommitMode::Overwrite, json!({"sql": "SELECT 'owned' AS secret"})).await;
    let outcome = harness.run_task(task).await;
    let message = refused(&harness, task, &outcome, "cross_tenant_dataset").await;
    assert!(message.contains("output dataset \"payroll\" belongs to tenant \"globex\""), "{message}");
    let after = harness.catalog.dataset(payroll.id).await.expect("payroll");
    assert_eq!(after.current_snapshot, payroll.current_snapshot, "globex's data is untouched");
    let rows = harness.query(payroll.id, "SELECT secret FROM t", |row| row.get::<_, String>(0)).await;
    assert_eq!(rows, ["hunter2"]);
}

#[tokio::test]
async fn a_task_cannot_read_the_shared_input_cache() {
    let harness = Harness::s3().await;
    payroll_with_a_secret(&harness).await;
    let out = harness.dataset("loot", json!({}), None).await;
    let cache = harness.config.cache_dir.display().to_string();
    let attacks = [
        format!("SELECT * FROM read_parquet('{cache}/sha256/*/*.parquet')"),
        format!("SELECT * FROM '{cache}/sha256/*/*.parquet'"),
        format!("SELECT (SELECT count(*) FROM glob('{cache}/**')) AS n"),
    ];
    for (index, sql) in attacks.iter().enumerate() {
        let task = harness.task(&format!("cache-{index}"), out.id, CommitMode::Overwrite, json!({"sql": sql})).await;
        let outcome = harness.run_task(task).await;
        refused(&harness, task, &outcome, "sql_not_allowed").await;
    }
    assert_eq!(harness.catalog.dataset(out.id).await.expect("out").current_snapshot, None, "nothing committed");
}

/// The worker cache's copies of a dataset's current files.
async fn cached_files(harness: &Harness, dataset: &DatasetRecord) -> Vec<std::path::PathBuf> {
    let cache = duckmesh_worker::FileCache::open(&harness.config.cache_dir).expect("cache");
    let snapshot = dataset.current_snapshot.expect("committed");
    let records = harness.catalog.snapshot_files(dataset.id, snapshot).await.expect("files");
    let mut paths = Vec::new();
    for record in &records {
        paths.push(cache.fetch(harness.store.as_ref(), record).await.expect("fetch").0);
    }
    paths
}

/// The second layer, below the statement check: the locked-down engine reads the files of its
/// own inputs and nothing else in the cache — not another file by path or glob, not by
/// climbing out of the scratch directory — and its settings cannot be changed back.
#[tokio::test]
async fn the_engine_reads_only_its_inputs_files_even_without_the_statement_check() {
    let harness = Harness::s3().await;
    let payroll = payroll_with_a_secret(&harness).await;
    let notes = harness.dataset("notes", json!({}), None).await;
    let load =
        harness.task("load-notes", notes.id, CommitMode::Overwrite, json!({"sql": "SELECT 'hello' AS note"})).await;
    committed(harness.run_task(load).await);
    let theirs = cached_files(&harness, &payroll).await;
    let mine = cached_files(&harness, &harness.catalog.dataset(notes.id).await.expect("notes")).await;

    let scratch = tempfile::tempdir_in(harness.dir.path()).expect("scratch");
    let limits = Limits { memory_limit_bytes: None, threads: Some(1), spill_dir: scratch.path().join("spill") };
    let engine = Database::open(&limits).expect("engine");
    engine.register(&Relation { name: "notes".into(), files: mine, schema: None }).expect("register");
    engine.lock_down(&[scratch.path().to_owned()]).expect("lock down");

    let read = |sql: &str| engine.query_text(sql);
    assert_eq!(read("SELECT note FROM notes").expect("own input"), vec![vec![Some("hello".to_owned())]]);
    let cache_root = harness.config.cache_dir.display().to_string();
    let theirs = theirs[0].display().to_string();
    let climb = format!("{}/../{}", scratch.path().display(), theirs.trim_start_matches('/'));
    let attacks = [
        format!("SELECT secret FROM read_parquet('{theirs}')"),
        format!("SELECT secret FROM read_parquet('{cache_root}/sha256/*/*.parquet', union_by_name = true)"),
        format!("SELECT * FROM read_parquet('{climb}')"),
        format!("SELECT count(*)::VARCHAR FROM glob('{cache_root}/**')"),
        "SET allowed_directories = ['/']".to_owned(),
        "SET enable_external_access = true".to_owned(),
    ];
    for sql in &attacks {
        match read(sql) {
            Err(error) => assert!(!error.to_string().contains("hunter2"), "{sql}: {error}"),
            Ok(rows) => {
                let text = format!("{rows:?}");
                assert!(!text.contains("hunter2"), "{sql} read another tenant's file: {text}");
                panic!("{sql} was not refused: {text}");
            }
        }
    }
}

#[tokio::test]
async fn a_task_runs_exactly_one_read_only_statement() {
    let harness = Harness::s3().await;
    let out = harness.dataset("out", json!({}), None).await;
    let swap =
        "SELECT 1 AS x; DROP VIEW __duckmesh_result; CREATE TEMP VIEW __duckmesh_result AS SELECT 'swapped' AS x";
    let task = harness.task("swap", out.id, CommitMode::Overwrite, json!({"sql": swap})).await;
    let outcome = harness.run_task(task).await;
    let message = refused(&harness, task, &outcome, "sql_not_allowed").await;
    assert!(message.contains("only read-only queries"), "{message}");
    assert!(!message.contains("__duckmesh_result") && !message.contains("TEMP VIEW"), "{message}");
    assert_eq!(harness.catalog.dataset(out.id).await.expect("out").current_snapshot, None, "nothing committed");
    assert!(harness.store.list("out/").await.expect("list").is_empty(), "nothing staged");

    let refusals = [
        ("SELECT 1 AS x; SELECT 2 AS x", "exactly one statement"),
        ("CREATE TABLE t AS SELECT 1 AS x", "only read-only queries"),
        ("COPY (SELECT 1) TO '/tmp/x.csv'", "only read-only queries"),
        ("SET threads = 1", "only read-only queries"),
        ("SELECT * FROM duckdb_settings()", "table function duckdb_settings()"),
        ("SELECT * FROM main.out", "qualified table names"),
    ];
    for (index, (sql, expected)) in refusals.into_iter().enumerate() {
        let task = harness.task(&format!("refused-{index}"), out.id, CommitMode::Overwrite, json!({"sql": sql})).await;
        let outcome = harness.run_task(task).await;
        let message = refused(&harness, task, &outcome, "sql_not_allowed").await;
        assert!(message.contains(expected), "{sql}: {message}");
    }

    // Every read-only form still runs: WITH, VALUES, FROM-first, a trailing semicolon.
    let accepted = [
        "WITH t AS (SELECT 1 AS x) SELECT x FROM t",
        "VALUES (2)",
        "FROM range(3, 4) r(x) SELECT x;",
        "SELECT 4 AS x; -- done",
    ];
    for (index, sql) in accepted.into_iter().enumerate() {
        let task = harness.task(&format!("accepted-{index}"), out.id, CommitMode::Overwrite, json!({"sql": sql})).await;
        committed(harness.run_task(task).await);
        let values = harness.query(out.id, "SELECT * FROM t", |row| row.get::<_, i64>(0)).await;
        assert_eq!(values, [index as i64 + 1], "{sql}");
    }
}
