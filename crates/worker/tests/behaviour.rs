//! What one attempt does with its inputs, SQL and output dataset: failure classification,
//! partitioned output, schema checks, empty and pinned inputs, the input cache, and the
//! file-access lock. Real Postgres; moto S3 where the store matters, a local store elsewhere.

mod common;

use common::{Harness, column, committed};
use duckmesh_catalog::CommitMode;
use duckmesh_core::TaskPhase;
use duckmesh_worker::{Outcome, exit};
use serde_json::json;
use std::collections::BTreeSet;

/// Asserts a permanent, reported failure and returns the task's status message.
async fn failed_permanently(harness: &Harness, task: duckmesh_core::TaskId, outcome: &Outcome, code: &str) -> String {
    assert_eq!(outcome.exit_code(), exit::FAILED_PERMANENT, "{outcome:?}");
    assert_eq!(outcome.error().expect("error").error_code(), code, "{outcome:?}");
    let record = harness.catalog.task(task).await.expect("task");
    assert_eq!(record.phase, TaskPhase::Failed, "a permanent error does not retry");
    assert_eq!(record.attempts, 1);
    assert_eq!(record.max_attempts, 3);
    assert_eq!(record.last_error_code.as_deref(), Some(code));
    record.last_error_message.unwrap_or_default()
}

#[tokio::test]
async fn an_sql_error_fails_the_task_permanently_with_the_message_in_its_status() {
    let harness = Harness::s3().await;
    let out = harness.dataset("out", json!({}), None).await;
    let task = harness
        .task("broken", out.id, CommitMode::Append, json!({"sql": "SELECT id FROM no_such_table WHERE id > 1"}))
        .await;
    let outcome = harness.run_task(task).await;
    let message = failed_permanently(&harness, task, &outcome, "sql_error").await;
    assert!(message.contains("no_such_table"), "{message}");
    assert!(message.contains("Catalog Error"), "{message}");
    assert!(harness.store.list("out/").await.expect("list").is_empty(), "nothing staged before the SQL binds");

    let syntax = harness.task("typo", out.id, CommitMode::Append, json!({"sql": "SELEC 1"})).await;
    let outcome = harness.run_task(syntax).await;
    let message = failed_permanently(&harness, syntax, &outcome, "sql_error").await;
    assert!(message.contains("Parser Error"), "{message}");

    let runtime = harness
        .task(
            "cast",
            out.id,
            CommitMode::Append,
            json!({"sql": "SELECT CAST('x' || range AS INTEGER) AS v FROM range(3)"}),
        )
        .await;
    let outcome = harness.run_task(runtime).await;
    let message = failed_permanently(&harness, runtime, &outcome, "sql_error").await;
    assert!(message.contains("Conversion Error"), "{message}");
}

#[tokio::test]
async fn an_invalid_spec_is_a_permanent_error_that_says_what_to_fix() {
    let harness = Harness::local().await;
    let out = harness.dataset("out", json!({}), None).await;
    let cases = [
        (json!({"query": "SELECT 1"}), "unknown field `query`"),
        (json!({"sql": "SELECT 1", "resources": {"memory": "lots"}}), "resources.memory"),
        (json!({"sql": "SELECT 1", "inputs": [{"dataset": "missing"}]}), "no dataset of that name"),
    ];
    for (index, (spec, expected)) in cases.into_iter().enumerate() {
        let task = harness.task(&format!("bad-{index}"), out.id, CommitMode::Append, spec).await;
        let outcome = harness.run_task(task).await;
        let code = outcome.error().expect("error").error_code();
        assert!(code == "invalid_task_spec" || code == "invalid_input", "{outcome:?}");
        let message = failed_permanently(&harness, task, &outcome, code).await;
        assert!(message.contains(expected), "{message}");
    }
}

#[tokio::test]
async fn partitioned_output_writes_one_directory_per_partition_value() {
    let harness = Harness::s3().await;
    let out = harness.dataset("trips", json!({"partitionBy": ["day"]}), None).await;
    let task = harness
        .task(
            "by-day",
            out.id,
            CommitMode::Overwrite,
            json!({"sql": "SELECT i AS id, '2024-01-0' || (1 + i % 3) AS day, i * 2 AS fare FROM range(30000) t(i)"}),
        )
        .await;
    let summary = committed(harness.run_task(task).await);
    assert_eq!(summary.rows, 30_000);

    let snapshot = harness.catalog.dataset(out.id).await.expect("dataset").current_snapshot.expect("snapshot");
    let files = harness.catalog.snapshot_files(out.id, snapshot).await.expect("files");
    let mut directories = BTreeSet::new();
    for file in &files {
        let directory = file.path.rsplit_once('/').expect("directory").0;
        let value = directory.rsplit_once("/day=").expect("a day=… directory").1;
        assert_eq!(file.partition, Some(json!({"day": value})), "{}", file.path);
        assert_eq!(file.rows, 10_000, "{}", file.path);
        directories.insert(directory.to_owned());
    }
    let values: Vec<&str> = directories.iter().map(|d| d.rsplit_once("day=").expect("day").1).collect();
    assert_eq!(values, ["2024-01-01", "2024-01-02", "2024-01-03"]);
    // The partition column stays inside the files: inputs are read by content hash, not path.
    let rows = harness
        .query(out.id, "SELECT day, count(*), sum(fare) FROM t GROUP BY day ORDER BY day", |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, i128>(2)?))
        })
        .await;
    let expected: Vec<(String, i64, i128)> = (1..=3)
        .map(|d| {
            let sum: i128 = (0..30_000i128).filter(|i| 1 + i % 3 == d).map(|i| i * 2).sum();
            (format!("2024-01-0{d}"), 10_000, sum)
        })
        .collect();
    assert_eq!(rows, expected);

    // A partition larger than the target size is split into several files in its directory.
    let big = harness.dataset("readings", json!({"partitionBy": ["kind"], "targetFileSizeBytes": 1048576}), None).await;
    let task = harness
        .task(
            "big",
            big.id,
            CommitMode::Overwrite,
            json!({"sql": "SELECT i AS id, hash(i) AS h, CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END AS kind \
                          FROM range(1200000) t(i)"}),
        )
        .await;
    let summary = committed(harness.run_task(task).await);
    assert_eq!(summary.rows, 1_200_000);
    let snapshot = harness.catalog.dataset(big.id).await.expect("dataset").current_snapshot.expect("snapshot");
    let files = harness.catalog.snapshot_files(big.id, snapshot).await.expect("files");
    for kind in ["even", "odd"] {
        let in_partition: Vec<_> = files.iter().filter(|f| f.path.contains(&format!("/kind={kind}/"))).collect();
        assert!(in_partition.len() >= 2, "partition {kind} was not split: {in_partition:?}");
        assert_eq!(in_partition.iter().map(|f| f.rows).sum::<i64>(), 600_000);
        assert!(in_partition.iter().all(|f| f.partition == Some(json!({"kind": kind}))));
        assert!(in_partition.iter().all(|f| f.bytes < 3 * 1048576), "{in_partition:?}");
    }

    // A result without the partition column cannot go to this dataset.
    let wrong = harness.task("no-day", out.id, CommitMode::Overwrite, json!({"sql": "SELECT 1 AS id"})).await;
    let outcome = harness.run_task(wrong).await;
    let message = failed_permanently(&harness, wrong, &outcome, "schema_mismatch").await;
    assert!(message.contains("partitioned by day"), "{message}");
}

#[tokio::test]
async fn an_incompatible_append_is_a_permanent_error_naming_the_columns() {
    let harness = Harness::local().await;
    let out = harness.dataset("people", json!({}), Some(vec![column("id", "BIGINT"), column("name", "VARCHAR")])).await;
    let good =
        harness.task("good", out.id, CommitMode::Append, json!({"sql": "SELECT 1::BIGINT AS id, 'ada' AS name"})).await;
    committed(harness.run_task(good).await);
    let bad =
        harness.task("bad", out.id, CommitMode::Append, json!({"sql": "SELECT 2::INTEGER AS id, 3 AS age"})).await;
    let outcome = harness.run_task(bad).await;
    let message = failed_permanently(&harness, bad, &outcome, "schema_mismatch").await;
    assert!(message.contains("missing columns name"), "{message}");
    assert!(message.contains("unexpected columns age"), "{message}");
    assert!(message.contains("id (BIGINT → INTEGER)"), "{message}");
    assert_eq!(harness.catalog.snapshots(out.id, None, 10).await.expect("snapshots").len(), 1);
}

#[tokio::test]
async fn inputs_without_files_are_empty_relations_when_their_schema_is_known() {
    let harness = Harness::local().await;
    harness.dataset("declared", json!({}), Some(vec![column("id", "BIGINT"), column("label", "VARCHAR")])).await;
    harness.dataset("unknown", json!({}), None).await;
    let out = harness.dataset("out", json!({}), None).await;

    let task = harness
        .task(
            "count-empty",
            out.id,
            CommitMode::Append,
            json!({"sql": "SELECT count(*) AS n, count(label) AS labels FROM declared", "inputs": [{"dataset": "declared"}]}),
        )
        .await;
    committed(harness.run_task(task).await);
    let rows = harness
        .query(out.id, "SELECT n, labels FROM t", |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))
        .await;
    assert_eq!(rows, vec![(0, 0)]);

    let task = harness
        .task(
            "read-unknown",
            out.id,
            CommitMode::Append,
            json!({"sql": "SELECT * FROM unknown", "inputs": [{"dataset": "unknown"}]}),
        )
        .await;
    let outcome = harness.run_task(task).await;
    let message = failed_permanently(&harness, task, &outcome, "invalid_input").await;
    assert!(message.contains("no committed files and no known schema"), "{message}");
}

#[tokio::test]
async fn inputs_are_pinned_to_snapshots_and_served_from_the_cache() {
    let harness = Harness::s3().await;
    let source = harness.dataset("source", json!({}), None).await;
    let out = harness.dataset("out", json!({}), None).await;
    for (index, range) in ["range(0, 100)", "range(100, 250)"].iter().enumerate() {
        let task = harness
            .task(
                &format!("load-{index}"),
                source.id,
                CommitMode::Append,
                json!({"sql": format!("SELECT range AS v FROM {range}")}),
            )
            .await;
        committed(harness.run_task(task).await);
    }

    let pinned = harness
        .task(
            "pinned",
            out.id,
            CommitMode::Append,
            json!({"sql": "SELECT 'pinned' AS k, count(*) AS n, sum(v) AS s FROM source", "inputs": [{"dataset": "source", "snapshot": 1}]}),
        )
        .await;
    let first = committed(harness.run_task(pinned).await);
    assert_eq!((first.downloads, first.cache_hits), (1, 0));
    let latest = harness
        .task(
            "latest",
            out.id,
            CommitMode::Append,
            json!({"sql": "SELECT 'latest' AS k, count(*) AS n, sum(v) AS s FROM source", "inputs": [{"dataset": "source"}]}),
        )
        .await;
    let second = committed(harness.run_task(latest).await);
    assert_eq!((second.downloads, second.cache_hits), (1, 1), "snapshot 1's file comes from the cache");

    let rows = harness
        .query(out.id, "SELECT k, n, s FROM t ORDER BY k", |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, i128>(2)?))
        })
        .await;
    let sum = |range: std::ops::Range<i128>| range.sum::<i128>();
    assert_eq!(rows, vec![("latest".into(), 250, sum(0..250)), ("pinned".into(), 100, sum(0..100))]);

    let missing = harness
        .task(
            "missing-snapshot",
            out.id,
            CommitMode::Append,
            json!({"sql": "SELECT * FROM source", "inputs": [{"dataset": "source", "snapshot": 99}]}),
        )
        .await;
    let outcome = harness.run_task(missing).await;
    let message = failed_permanently(&harness, missing, &outcome, "invalid_input").await;
    assert!(message.contains("snapshot 99 does not exist"), "{message}");
}

#[tokio::test]
async fn the_sql_cannot_read_or_write_files_outside_the_attempt() {
    let harness = Harness::local().await;
    let out = harness.dataset("out", json!({}), None).await;
    let secret = harness.dir.path().join("secret.csv");
    std::fs::write(&secret, "password\nhunter2\n").expect("write");
    let cases = [
        format!("SELECT * FROM read_csv('{}')", secret.display()),
        "SELECT * FROM read_text('/etc/hostname')".to_owned(),
        "SELECT 1 AS x; SET enable_external_access = true".to_owned(),
    ];
    for (index, sql) in cases.into_iter().enumerate() {
        let task = harness.task(&format!("escape-{index}"), out.id, CommitMode::Append, json!({"sql": sql})).await;
        let outcome = harness.run_task(task).await;
        // Refused by the statement check before DuckDB's sandbox (which refuses them too).
        let message = failed_permanently(&harness, task, &outcome, "sql_not_allowed").await;
        assert!(!message.contains("hunter2"), "{message}");
    }
}
