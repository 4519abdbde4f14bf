//! The history checker on real parts: a private PostgreSQL catalog, a prefix of the shared moto
//! bucket, the real worker for task commits and the real coordinator for ingest. A clean run
//! has no violation; then each property is broken on purpose, the way a defect would break it,
//! and the checker must name it.

use duckmesh_catalog::{
    Catalog, Column, CommitMode, DatasetRecord, DatasetSpec, IngestRecord, IngestRequest, TaskOutput, TaskSpec,
};
use duckmesh_coordinator::{Coordinator, CoordinatorConfig};
use duckmesh_core::SnapshotId;
use duckmesh_history::{AckedRecords, Expectations, HistoryReport, PinnedRead, Property, check};
use duckmesh_storage::testing::MotoServer;
use duckmesh_storage::{ObjectStore, S3Store};
use duckmesh_telemetry::Metrics;
use duckmesh_testkit::TestDatabase;
use duckmesh_worker::{AttemptIdentity, Outcome, Worker, WorkerConfig};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

struct Run {
    _db: TestDatabase,
    catalog: Catalog,
    store: Arc<dyn ObjectStore>,
    dir: tempfile::TempDir,
    worker: Worker,
    daily: DatasetRecord,
    events: DatasetRecord,
    acked: Vec<String>,
    pinned: PinnedRead,
}

async fn dataset(catalog: &Catalog, name: &str, schema: Option<Vec<Column>>) -> DatasetRecord {
    let spec = DatasetSpec {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        generation: 1,
        tenant: "default".into(),
        schema,
        spec: json!({}),
    };
    catalog.upsert_dataset(&spec).await.expect("dataset")
}

impl Run {
    /// Two task commits to `daily` (one pinned in between) and two ingest batches to `events`,
    /// everything finished.
    async fn clean() -> Self {
        let moto = MotoServer::shared().await.expect("S3 test server (moto_server on PATH)");
        let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(moto.scoped_config()).await.expect("S3 store"));
        let db = TestDatabase::new().await.expect("test database");
        let catalog = db.catalog().await.expect("catalog");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = WorkerConfig {
            cache_dir: dir.path().join("cache"),
            work_dir: dir.path().join("work"),
            runner: Some("history-test".into()),
            ..WorkerConfig::default()
        };
        let worker = Worker::new(catalog.clone(), store.clone(), config);
        let daily = dataset(&catalog, "daily", None).await;
        let columns = vec![
            Column { name: "id".into(), data_type: "VARCHAR".into() },
            Column { name: "amount".into(), data_type: "BIGINT".into() },
        ];
        let events = dataset(&catalog, "events", Some(columns)).await;
        let mut run = Self {
            _db: db,
            catalog,
            store,
            dir,
            worker,
            daily: daily.clone(),
            events,
            acked: Vec::new(),
            pinned: PinnedRead {
                namespace: String::new(),
                dataset: String::new(),
                snapshot: SnapshotId(0),
                rows: vec![],
            },
        };
        run.commit("first", "SELECT range AS n, range * 2 AS twice FROM range(100)").await;
        run.pinned = PinnedRead::take(&run.catalog, run.store.as_ref(), "default", "daily", None).await.expect("pin");
        run.commit("second", "SELECT range AS n, range * 3 AS twice FROM range(100, 150)").await;
        for batch in 0..2 {
            let keys: Vec<String> = (0..25).map(|i| format!("e-{batch}-{i}")).collect();
            run.ingest(&keys).await;
            // A retried post of the same records is acked again and changes nothing.
            run.ingest(&keys[..5]).await;
            let coordinator = Coordinator::new(
                run.catalog.clone(),
                run.store.clone(),
                Metrics::new(),
                CoordinatorConfig {
                    linger: Duration::from_millis(10),
                    work_dir: run.dir.path().join("coordinator"),
                    identity: "history-test".into(),
                    ..CoordinatorConfig::default()
                },
            );
            assert!(coordinator.run_once().await.expect("batch").is_some(), "a batch committed");
        }
        run
    }

    async fn commit(&self, name: &str, sql: &str) {
        let task = TaskSpec {
            name: name.into(),
            kind: "sql".into(),
            depends_on: vec![],
            max_attempts: Some(1),
            timeout_seconds: None,
            output: Some(TaskOutput { dataset: self.daily.id, mode: CommitMode::Append }),
            spec: json!({ "sql": sql }),
        };
        let task = self.catalog.upsert_standalone_task("default", "default", &task).await.expect("task");
        let lease =
            self.catalog.lease_task(task, "test", Duration::from_secs(60)).await.expect("lease").expect("runnable");
        let identity =
            AttemptIdentity { task: lease.task, attempt: lease.attempt, fence: lease.fence, traceparent: None };
        match self.worker.run(&identity, CancellationToken::new()).await {
            Outcome::Committed(_) => {}
            other => panic!("expected a commit, got {other:?}"),
        }
    }

    async fn ingest(&mut self, keys: &[String]) {
        let records: Vec<IngestRecord> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| IngestRecord { key: key.clone(), payload: json!({"id": key, "amount": i}) })
            .collect();
        let request = IngestRequest {
            dataset: self.events.id,
            tenant: "default",
            records: &records,
            traceparent: None,
            max_pending: None,
        };
        self.catalog.ingest(request).await.expect("ingest");
        self.acked.extend(keys.iter().cloned());
    }

    fn expectations(&self) -> Expectations {
        Expectations {
            acked: vec![AckedRecords {
                namespace: "default".into(),
                dataset: "events".into(),
                dedupe_keys: self.acked.clone(),
                poison: vec![],
                key_column: Some("id".into()),
            }],
            pinned: vec![self.pinned.clone()],
            quiescent: true,
            verify_hashes: true,
        }
    }

    async fn check(&self, expectations: &Expectations) -> HistoryReport {
        check(&self.catalog, self.store.as_ref(), expectations).await.expect("the checker runs")
    }

    async fn sql(&self, sql: &str) {
        sqlx::query(sql).execute(self.catalog.pool()).await.unwrap_or_else(|error| panic!("{sql}: {error}"));
    }
}

fn properties(report: &HistoryReport) -> Vec<Property> {
    let mut seen: Vec<Property> = report.violations.iter().map(|violation| violation.property).collect();
    seen.dedup();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_breaks_no_property() -> TestResult {
    let run = Run::clean().await;
    let report = run.check(&run.expectations()).await;
    assert!(report.is_clean(), "{report}");
    let checked = report.checked;
    assert_eq!(checked.datasets, 2, "{report}");
    assert_eq!(checked.snapshots, 4, "two task commits and two ingest batches: {report}");
    assert_eq!(checked.acked_records, 50, "duplicates counted once: {report}");
    assert_eq!((checked.tasks, checked.attempts, checked.pinned_reads), (2, 2, 1), "{report}");
    assert!(checked.files >= 4, "{report}");
    assert!(report.summary().ends_with("violations=0"), "{}", report.summary());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_broken_property_is_named_with_its_rows() -> TestResult {
    let mut run = Run::clean().await;
    let mut expectations = run.expectations();

    // An ack the buffer does not hold (lost), and one never committed.
    expectations.acked[0].dedupe_keys.push("never-posted".into());
    run.ingest(&["still-pending".to_owned()]).await;
    expectations.acked[0].dedupe_keys.push("still-pending".into());
    // The first task's recorded output differs from its commit; the second task's commit
    // carries a fence its attempt never held.
    let first = run.catalog.task_by_name_for_tests("default", "first").await;
    let second = run.catalog.task_by_name_for_tests("default", "second").await;
    run.sql(&format!("UPDATE tasks SET output_snapshot_id = NULL WHERE id = {first}")).await;
    run.sql(&format!("UPDATE snapshots SET fence = fence - 1 WHERE task_id = {second}")).await;
    // A leased task whose lease ran out with nobody to reap it.
    let stuck = TaskSpec {
        name: "stuck".into(),
        kind: "sql".into(),
        depends_on: vec![],
        max_attempts: Some(3),
        timeout_seconds: None,
        output: Some(TaskOutput { dataset: run.daily.id, mode: CommitMode::Append }),
        spec: json!({ "sql": "SELECT 1 AS n" }),
    };
    let stuck = run.catalog.upsert_standalone_task("default", "default", &stuck).await?;
    run.catalog.lease_task(stuck, "test", Duration::from_secs(60)).await?.expect("runnable");
    run.sql(&format!("UPDATE attempts SET lease_expires_at = now() - interval '1 minute' WHERE task_id = {}", stuck.0))
        .await;
    // A dataset head ahead of its newest snapshot.
    run.sql(&format!("UPDATE datasets SET visibility_token = visibility_token + 5 WHERE id = {}", run.daily.id.0))
        .await;
    // A committed file gone from the bucket.
    let files = run.catalog.snapshot_files(run.events.id, run.events_head().await).await?;
    run.store.delete(&files[0].path).await?;
    // The pinned read remembered other rows than the snapshot holds.
    expectations.pinned[0].rows.push(vec![Some("9999".into()), None]);

    let report = run.check(&expectations).await;
    assert_eq!(properties(&report), Property::ALL.to_vec(), "{report}");
    let text = report.to_string();
    for needle in [
        "\"never-posted\"",
        "\"still-pending\"",
        &format!("task {first} (default/first): output_snapshot_id NULL"),
        &format!("task {second} fence"),
        "(default/stuck) is Leased with no live lease",
        "default/daily: head_mismatch",
        &files[0].path,
        "default/daily@1 returned 100 rows, 101 when pinned",
    ] {
        assert!(text.contains(needle), "the report names {needle:?}:\n{text}");
    }
    Ok(())
}

impl Run {
    async fn events_head(&self) -> SnapshotId {
        self.catalog.dataset(self.events.id).await.expect("events").current_snapshot.expect("committed")
    }
}

/// Finding a standalone task's id by name, for tampering with its rows.
trait TaskByName {
    async fn task_by_name_for_tests(&self, namespace: &str, name: &str) -> i64;
}

impl TaskByName for Catalog {
    async fn task_by_name_for_tests(&self, namespace: &str, name: &str) -> i64 {
        sqlx::query_scalar("SELECT id FROM tasks WHERE namespace = $1 AND name = $2 AND job_id IS NULL")
            .bind(namespace)
            .bind(name)
            .fetch_one(self.pool())
            .await
            .expect("task id")
    }
}
