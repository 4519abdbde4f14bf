//! End to end on real parts: a three-task job (generate rows with DuckDB's `range()` → clean →
//! aggregate) scheduled through the Postgres catalog and run by the worker against moto S3.
//! The final numbers are checked against values computed here in plain Rust.

mod common;

use common::{Harness, committed, sql_task};
use duckmesh_catalog::{CommitMode, ScheduleOptions};
use duckmesh_contracts::manifest::Manifest;
use duckmesh_core::{JobPhase, TaskPhase};
use serde_json::json;
use std::collections::BTreeMap;

const ROWS: u64 = 1_000_000;

/// What the generate task's SQL computes for row `i`, written again in Rust.
fn generated(i: u64) -> (u64, u64, Option<String>) {
    let day = i % 7;
    let amount = (i * 7919) % 100_003;
    let user = (!i.is_multiple_of(10)).then(|| format!("user_{}", i % 13));
    (day, amount, user)
}

#[tokio::test]
async fn a_three_task_dag_runs_through_the_catalog_and_its_numbers_are_right() {
    let harness = Harness::s3().await;
    let events = harness.dataset("events", json!({}), None).await;
    let clean = harness.dataset("events_clean", json!({}), None).await;
    let totals = harness.dataset("daily_totals", json!({}), None).await;

    let tasks = vec![
        sql_task(
            "generate",
            &[],
            events.id,
            CommitMode::Overwrite,
            json!({
                "sql": format!(
                    "SELECT i AS id, i % 7 AS day, (i * 7919) % 100003 AS amount, \
                     CASE WHEN i % 10 = 0 THEN NULL ELSE 'user_' || (i % 13) END AS user_name \
                     FROM range(0, {ROWS}) t(i)"
                ),
                "targetFileSizeBytes": 1048576,
                "resources": {"memory": "512Mi", "cpu": "2"}
            }),
        ),
        sql_task(
            "clean",
            &["generate"],
            clean.id,
            CommitMode::Append,
            json!({
                "sql": "SELECT id, day, amount, upper(user_name) AS user_name FROM events \
                        WHERE user_name IS NOT NULL AND amount >= 1000",
                "inputs": [{"dataset": "events"}]
            }),
        ),
        sql_task(
            "aggregate",
            &["clean"],
            totals.id,
            CommitMode::Overwrite,
            json!({
                "sql": "SELECT day, count(*) AS n, sum(amount) AS total, max(amount) AS max_amount, \
                        count(DISTINCT user_name) AS users FROM events_clean GROUP BY day ORDER BY day;",
                "inputs": [{"dataset": "events_clean"}]
            }),
        ),
    ];
    let job = harness.job("daily", tasks).await;

    // Schedule as the operator would: lease whatever is runnable, run it, repeat.
    let mut order = Vec::new();
    let mut generate_files = 0;
    for _ in 0..10 {
        let scheduled = harness.catalog.schedule(&ScheduleOptions::new("test-scheduler")).await.expect("schedule");
        if scheduled.leased.is_empty() {
            break;
        }
        assert_eq!(scheduled.leased.len(), 1, "a chain runs one task at a time");
        for lease in scheduled.leased {
            let task = harness.catalog.task(lease.task).await.expect("task");
            let summary = committed(harness.run(&lease).await);
            if task.name == "generate" {
                generate_files = summary.files;
            }
            order.push(task.name);
        }
    }
    assert_eq!(order, ["generate", "clean", "aggregate"]);
    assert!(generate_files >= 2, "1 MiB target size should split {ROWS} rows, got {generate_files} file(s)");
    harness.catalog.refresh_jobs().await.expect("refresh");
    assert_eq!(harness.catalog.job(job).await.expect("job").phase, JobPhase::Succeeded);
    for task in harness.catalog.tasks_of_job(job).await.expect("tasks") {
        assert_eq!(task.phase, TaskPhase::Succeeded, "{}", task.name);
        assert!(task.output_snapshot.is_some(), "{}", task.name);
        assert_eq!(task.attempts, 1);
    }

    // Independently computed expectations.
    let mut expected: BTreeMap<u64, (i64, u64, u64, std::collections::BTreeSet<String>)> = BTreeMap::new();
    let mut generated_rows = 0i64;
    for i in 0..ROWS {
        let (day, amount, user) = generated(i);
        generated_rows += 1;
        if let Some(user) = user
            && amount >= 1000
        {
            let entry = expected.entry(day).or_default();
            entry.0 += 1;
            entry.1 += amount;
            entry.2 = entry.2.max(amount);
            entry.3.insert(user.to_uppercase());
        }
    }
    let clean_rows: i64 = expected.values().map(|e| e.0).sum();

    let events_record = harness.catalog.dataset(events.id).await.expect("events");
    assert_eq!(events_record.row_count, generated_rows);
    let clean_record = harness.catalog.dataset(clean.id).await.expect("clean");
    assert_eq!(clean_record.row_count, clean_rows);
    let schema = clean_record.schema.expect("schema learned from the first commit");
    let names: Vec<&str> = schema.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "day", "amount", "user_name"]);
    assert_eq!(schema[3].data_type, "VARCHAR");

    let rows = harness
        .query(totals.id, "SELECT day, n, total, max_amount, users FROM t ORDER BY day", |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i128>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })
        .await;
    assert_eq!(rows.len(), 7);
    for (day, n, total, max_amount, users) in rows {
        let (e_n, e_total, e_max, e_users) = &expected[&(day as u64)];
        assert_eq!(n, *e_n, "day {day}: count");
        assert_eq!(total, i128::from(*e_total), "day {day}: sum");
        assert_eq!(max_amount as u64, *e_max, "day {day}: max");
        assert_eq!(users as usize, e_users.len(), "day {day}: distinct users");
    }

    // Each commit's manifest sits next to its files and lists exactly what the catalog holds.
    for dataset in [events.id, clean.id, totals.id] {
        let record = harness.catalog.dataset(dataset).await.expect("dataset");
        let snapshot = harness.catalog.snapshot(dataset, record.current_snapshot.expect("snapshot")).await.expect("s");
        let manifest_path = snapshot.manifest_path.expect("manifest path");
        let manifest: Manifest =
            serde_json::from_slice(&harness.store.get(&manifest_path).await.expect("manifest")).expect("manifest json");
        let files = harness.catalog.snapshot_files(dataset, snapshot.id).await.expect("files");
        let mut listed: Vec<(String, i64, i64, String)> =
            manifest.files.iter().map(|f| (f.path.clone(), f.bytes, f.rows, f.sha256.clone())).collect();
        let mut recorded: Vec<(String, i64, i64, String)> =
            files.iter().map(|f| (f.path.clone(), f.bytes, f.rows, f.sha256.clone())).collect();
        listed.sort();
        recorded.sort();
        assert_eq!(listed, recorded, "manifest of dataset {dataset}");
        assert_eq!(manifest.rows, record.row_count);
        assert_eq!(manifest.dataset.name, record.name);
        let prefix = manifest_path.trim_end_matches("manifest.json");
        assert!(files.iter().all(|f| f.path.starts_with(prefix)), "files outside {prefix}");
    }
}
