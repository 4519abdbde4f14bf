//! The coordinator against real parts: a private migrated PostgreSQL per test (testkit), an
//! object store (a prefix of the shared moto S3 server, or a local directory), and DuckDB to
//! read the committed Parquet back.

use async_trait::async_trait;
use bytes::Bytes;
use duckmesh_catalog::{
    Catalog, ClaimOptions, Column, DatasetSpec, DeadLetterFilter, IngestAck, IngestCommit, IngestRecord, IngestRequest,
    NewFile,
};
use duckmesh_coordinator::{
    BatchReport, CONVERSION_FAILED, Coordinator, CoordinatorConfig, Error, INGEST_MANIFEST_FORMAT, IngestManifest,
    SCHEMA_MISSING,
};
use duckmesh_core::{DatasetId, SnapshotId};
use duckmesh_storage::testing::MotoServer;
use duckmesh_storage::{LocalStore, ObjectMeta, ObjectStore, S3Store, StoreCounters};
use duckmesh_telemetry::Metrics;
use duckmesh_testkit::TestDatabase;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

struct Harness {
    _db: TestDatabase,
    catalog: Catalog,
    store: Arc<dyn ObjectStore>,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn local() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path().join("objects")).expect("local store");
        Self::build(Arc::new(store), dir).await
    }

    async fn s3() -> Self {
        let moto = MotoServer::shared().await.expect("S3 test server (moto_server on PATH)");
        let store =
            S3Store::with_counters(moto.scoped_config(), Arc::new(StoreCounters::new())).await.expect("S3 store");
        Self::build(Arc::new(store), tempfile::tempdir().expect("tempdir")).await
    }

    async fn build(store: Arc<dyn ObjectStore>, dir: tempfile::TempDir) -> Self {
        let db = TestDatabase::new().await.expect("test database");
        let catalog = db.catalog_with(Default::default(), 12).await.expect("catalog");
        Self { _db: db, catalog, store, dir }
    }

    fn config(&self, identity: &str) -> CoordinatorConfig {
        CoordinatorConfig {
            linger: Duration::from_millis(10),
            poll_interval: Duration::from_millis(50),
            work_dir: self.dir.path().join("work"),
            identity: identity.into(),
            ..CoordinatorConfig::default()
        }
    }

    fn coordinator(&self, config: CoordinatorConfig) -> (Coordinator, Metrics) {
        let metrics = Metrics::new();
        (Coordinator::new(self.catalog.clone(), self.store.clone(), metrics.clone(), config), metrics)
    }

    async fn dataset(&self, name: &str, schema: Option<Vec<Column>>, spec: Value) -> DatasetId {
        let spec = DatasetSpec {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            generation: 1,
            tenant: "acme".into(),
            schema,
            spec,
        };
        self.catalog.upsert_dataset(&spec).await.expect("dataset").id
    }

    async fn post(&self, dataset: DatasetId, records: &[Value]) -> IngestAck {
        let records: Vec<IngestRecord> = records
            .iter()
            .map(|payload| IngestRecord { key: payload["id"].to_string(), payload: payload.clone() })
            .collect();
        let request =
            IngestRequest { dataset, tenant: "acme", records: &records, traceparent: None, max_pending: None };
        self.catalog.ingest(request).await.expect("ingest")
    }

    /// `(seq, snapshot, dead-lettered)` of every event of `dataset`, by seq.
    async fn events(&self, dataset: DatasetId) -> Vec<(i64, Option<i64>, bool)> {
        sqlx::query_as(
            "SELECT seq, snapshot_id, dead_letter_id IS NOT NULL FROM ingest_events WHERE dataset_id = $1 ORDER BY seq",
        )
        .bind(dataset.0)
        .fetch_all(self.catalog.pool())
        .await
        .expect("events")
    }

    /// Downloads the current snapshot's files (checking size and SHA-256 against the catalog)
    /// and returns `query` over them, each row as JSON text.
    async fn rows(&self, dataset: DatasetId, select: &str) -> Vec<Value> {
        let Some(snapshot) = self.catalog.latest_snapshot(dataset).await.expect("snapshot") else {
            return Vec::new();
        };
        let files = self.catalog.snapshot_files(dataset, snapshot.id).await.expect("files");
        let local = tempfile::tempdir().expect("tempdir");
        let mut paths = Vec::new();
        for (index, file) in files.iter().enumerate() {
            let path = local.path().join(format!("{index}.parquet"));
            self.store.get_to_file(&file.path, &path).await.expect("download");
            let bytes = std::fs::read(&path).expect("read");
            assert_eq!(bytes.len() as i64, file.bytes, "{}", file.path);
            assert_eq!(hex::encode(Sha256::digest(&bytes)), file.sha256, "{}", file.path);
            paths.push(format!("'{}'", path.display()));
        }
        let connection = duckdb::Connection::open_in_memory().expect("duckdb");
        let sql = format!(
            "SELECT to_json(t)::VARCHAR FROM ({select} FROM read_parquet([{}])) t ORDER BY t.id",
            paths.join(", ")
        );
        let mut statement = connection.prepare(&sql).expect("prepare");
        let rows = statement.query_map([], |row| row.get::<_, String>(0)).expect("query");
        rows.map(|row| serde_json::from_str(&row.expect("row")).expect("json")).collect()
    }
}

fn columns(spec: &[(&str, &str)]) -> Vec<Column> {
    spec.iter().map(|(name, data_type)| Column { name: (*name).into(), data_type: (*data_type).into() }).collect()
}

/// The value of the first sample line starting with `series` in the metrics text.
fn metric(metrics: &Metrics, series: &str) -> f64 {
    let text = metrics.encode();
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

async fn wait_until_no_pending(catalog: &Catalog) {
    for _ in 0..600 {
        if catalog.ingest_backlog().await.expect("backlog").pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("events still pending after 30 s");
}

#[tokio::test]
async fn events_commit_exactly_once_and_the_parquet_equals_the_posted_records() -> TestResult {
    let harness = Harness::s3().await;
    // Types as a user may spell them: compared as declared by the commit.
    let schema = columns(&[("id", "bigint"), ("name", "VARCHAR"), ("amount", "DOUBLE"), ("day", "DATE")]);
    let dataset = harness.dataset("orders", Some(schema), json!({})).await;
    let records: Vec<Value> = (1..=40)
        .map(|i| match i % 3 {
            0 => json!({"id": i, "name": format!("n{i}"), "amount": f64::from(i) + 0.5, "day": "2024-03-01"}),
            1 => json!({"id": i, "name": null, "amount": 1.25}),
            _ => json!({"id": i, "day": "2024-03-02"}),
        })
        .collect();
    harness.post(dataset, &records[..25]).await;
    let ack = harness.post(dataset, &records[25..]).await;
    let (coordinator, metrics) = harness.coordinator(harness.config("c-1"));

    let report = coordinator.run_once().await?.expect("a batch");
    assert_eq!((report.dataset, report.committed, report.dead_lettered), (dataset, 40, 0));
    let snapshot = report.snapshot.expect("a snapshot");
    assert_eq!(report.visibility_token, Some(1));
    assert!(harness.catalog.visible_at(dataset, ack.visibility_token).await?);
    assert!(coordinator.run_once().await?.is_none(), "nothing left");
    // A retried request stores nothing twice, so nothing is committed twice either.
    let again = harness.post(dataset, &records[..10]).await;
    assert_eq!((again.accepted, again.duplicates), (0, 10));
    assert!(coordinator.run_once().await?.is_none());
    let events = harness.events(dataset).await;
    assert_eq!(events.len(), 40);
    assert!(events.iter().all(|(_, committed, parked)| *committed == Some(snapshot.0) && !parked));

    let expected: Vec<Value> = records
        .iter()
        .map(|record| {
            json!({"id": record["id"], "name": record.get("name").cloned().unwrap_or(Value::Null),
                   "amount": record.get("amount").cloned().unwrap_or(Value::Null),
                   "day": record.get("day").cloned().unwrap_or(Value::Null)})
        })
        .collect();
    assert_eq!(harness.rows(dataset, "SELECT id, name, amount, day::VARCHAR AS day").await, expected);

    // The manifest next to the data lists exactly the catalog's files.
    let manifest_path = report.manifest_path.clone().expect("manifest");
    assert_eq!(manifest_path, format!("orders/ingest/{}/manifest.json", report.fence.0));
    let manifest: IngestManifest = serde_json::from_slice(&harness.store.get(&manifest_path).await?)?;
    assert_eq!(manifest.format, INGEST_MANIFEST_FORMAT);
    assert_eq!((manifest.fence, manifest.events.committed, manifest.rows), (report.fence.0, 40, 40));
    assert_eq!(manifest.coordinator, "c-1");
    let files = harness.catalog.snapshot_files(dataset, snapshot).await?;
    let listed: Vec<(String, i64, String)> =
        manifest.files.iter().map(|f| (f.path.clone(), f.bytes, f.sha256.clone())).collect();
    let catalogued: Vec<(String, i64, String)> =
        files.iter().map(|f| (f.path.clone(), f.bytes, f.sha256.clone())).collect();
    assert_eq!(listed, catalogued);
    let stored = harness.catalog.snapshot(dataset, snapshot).await?;
    assert_eq!((stored.kind.as_str(), stored.manifest_path.as_deref()), ("ingest", Some(manifest_path.as_str())));

    assert_eq!(metric(&metrics, "duckmesh_claim_batch_size_count"), 1.0);
    assert_eq!(metric(&metrics, "duckmesh_write_to_visible_latency_ms_count"), 40.0);
    assert_eq!(metric(&metrics, "duckmesh_commit_batch_latency_ms_count"), 1.0);
    assert_eq!(metric(&metrics, "duckmesh_latest_visibility_token"), 1.0);
    assert_eq!(metric(&metrics, "duckmesh_read_only_mode"), 0.0);
    Ok(())
}

#[tokio::test]
async fn poison_records_are_dead_lettered_while_the_rest_commit() -> TestResult {
    let harness = Harness::local().await;
    let dataset = harness.dataset("clicks", Some(columns(&[("id", "BIGINT"), ("day", "DATE")])), json!({})).await;
    let records = vec![
        json!({"id": 1, "day": "2024-01-01"}),
        json!({"id": 2, "day": "2024-13-45"}),
        json!({"id": 3}),
        json!({"id": 4, "day": "yesterday"}),
        json!({"id": 5, "day": "2024-01-05"}),
    ];
    harness.post(dataset, &records).await;
    let (coordinator, _metrics) = harness.coordinator(harness.config("c-1"));
    let report = coordinator.run_once().await?.expect("a batch");
    assert_eq!((report.committed, report.dead_lettered), (3, 2));
    assert!(report.snapshot.is_some());
    assert_eq!(
        harness.rows(dataset, "SELECT id, day::VARCHAR AS day").await,
        vec![
            json!({"id": 1, "day": "2024-01-01"}),
            json!({"id": 3, "day": null}),
            json!({"id": 5, "day": "2024-01-05"})
        ]
    );
    let letters = harness
        .catalog
        .dead_letters(&DeadLetterFilter { dataset: Some(dataset), include_replayed: false, limit: 10 })
        .await?;
    let mut keys: Vec<&str> = letters.iter().map(|l| l.key.as_deref().unwrap_or("")).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["2", "4"]);
    for letter in &letters {
        assert_eq!(letter.error_code, CONVERSION_FAILED);
        assert!(letter.error_message.contains("\"day\"") && letter.error_message.contains("DATE"), "{letter:?}");
        assert_eq!(letter.tenant, "acme");
    }
    assert!(letters.iter().any(|l| l.error_message.contains("2024-13-45")));

    // A replayed, corrected record commits in the next batch; nothing else is written twice.
    let poisoned = letters.iter().find(|l| l.key.as_deref() == Some("2")).expect("letter of id 2");
    harness.catalog.replay_dead_letters(&[poisoned.id], Some(&json!({"id": 2, "day": "2024-01-02"}))).await?;
    let replay = coordinator.run_once().await?.expect("the replay");
    assert_eq!((replay.committed, replay.dead_lettered), (1, 0));
    let ids: Vec<Value> = harness.rows(dataset, "SELECT id").await.into_iter().map(|row| row["id"].clone()).collect();
    assert_eq!(ids, [json!(1), json!(2), json!(3), json!(5)]);
    Ok(())
}

#[tokio::test]
async fn a_dataset_without_a_schema_dead_letters_its_events() -> TestResult {
    let harness = Harness::local().await;
    let dataset = harness.dataset("untyped", None, json!({})).await;
    harness.post(dataset, &[json!({"id": 1}), json!({"id": 2})]).await;
    let (coordinator, _metrics) = harness.coordinator(harness.config("c-1"));
    let report = coordinator.run_once().await?.expect("a batch");
    assert_eq!((report.committed, report.dead_lettered, report.snapshot), (0, 2, None));
    let letters = harness
        .catalog
        .dead_letters(&DeadLetterFilter { dataset: Some(dataset), include_replayed: false, limit: 10 })
        .await?;
    assert_eq!(letters.len(), 2);
    assert!(letters.iter().all(|l| l.error_code == SCHEMA_MISSING && l.error_message.contains("default/untyped")));
    assert_eq!(harness.catalog.ingest_backlog().await?.pending, 0);
    assert!(harness.catalog.latest_snapshot(dataset).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn two_coordinators_commit_a_backlog_exactly_once_in_disjoint_batches() -> TestResult {
    let harness = Harness::local().await;
    let schema = columns(&[("id", "BIGINT"), ("payload", "VARCHAR")]);
    let first = harness.dataset("left", Some(schema.clone()), json!({})).await;
    let second = harness.dataset("right", Some(schema), json!({})).await;
    let total = 1200;
    for chunk in (0..total).collect::<Vec<i64>>().chunks(200) {
        let records: Vec<Value> = chunk.iter().map(|i| json!({"id": i, "payload": format!("p{i}")})).collect();
        harness.post(if chunk[0] % 400 == 0 { first } else { second }, &records).await;
    }
    let stop = CancellationToken::new();
    let mut runs = Vec::new();
    let mut all_metrics = Vec::new();
    for name in ["c-a", "c-b"] {
        let config = CoordinatorConfig { batch_max_events: 50, ..harness.config(name) };
        let (coordinator, metrics) = harness.coordinator(config);
        all_metrics.push(metrics);
        let stop = stop.clone();
        runs.push(tokio::spawn(async move { coordinator.run(stop).await }));
    }
    wait_until_no_pending(&harness.catalog).await;
    stop.cancel();
    for run in runs {
        run.await??;
    }

    let mut seen = BTreeSet::new();
    for dataset in [first, second] {
        let events = harness.events(dataset).await;
        assert!(events.iter().all(|(_, snapshot, parked)| snapshot.is_some() && !parked));
        // Every snapshot holds exactly the rows of the events committed in it, and each
        // snapshot is a different claim.
        let mut per_snapshot: BTreeMap<i64, i64> = BTreeMap::new();
        for (_, snapshot, _) in &events {
            *per_snapshot.entry(snapshot.unwrap_or_default()).or_default() += 1;
        }
        let mut fences = BTreeSet::new();
        let mut previous_rows = 0;
        for (snapshot, count) in &per_snapshot {
            let stored = harness.catalog.snapshot(dataset, SnapshotId(*snapshot)).await?;
            assert_eq!(stored.row_count - previous_rows, *count, "snapshot {snapshot}");
            previous_rows = stored.row_count;
            let fence: Option<i64> =
                sqlx::query_scalar("SELECT fence FROM snapshots WHERE dataset_id = $1 AND id = $2")
                    .bind(dataset.0)
                    .bind(snapshot)
                    .fetch_one(harness.catalog.pool())
                    .await?;
            assert!(fences.insert(fence.expect("an ingest snapshot records its fence")));
        }
        assert!(per_snapshot.len() >= 6, "batches of at most 50 events: {per_snapshot:?}");
        for row in harness.rows(dataset, "SELECT id, payload").await {
            let id = row["id"].as_i64().expect("id");
            assert_eq!(row["payload"], json!(format!("p{id}")));
            assert!(seen.insert(id), "id {id} committed twice");
        }
    }
    assert_eq!(seen, (0..total).collect::<BTreeSet<i64>>());
    let batches: f64 = all_metrics.iter().map(|m| metric(m, "duckmesh_claim_batch_size_count")).sum();
    assert!(batches >= 24.0, "{batches} batches");
    let visible: f64 = all_metrics.iter().map(|m| metric(m, "duckmesh_write_to_visible_latency_ms_count")).sum();
    assert_eq!(visible, total as f64);
    Ok(())
}

#[tokio::test]
async fn a_crashed_claim_cannot_commit_and_its_events_are_taken_over_after_the_lease() -> TestResult {
    let harness = Harness::local().await;
    let dataset = harness.dataset("crashy", Some(columns(&[("id", "BIGINT")])), json!({})).await;
    let records: Vec<Value> = (1..=10).map(|i| json!({"id": i})).collect();
    harness.post(dataset, &records).await;
    // A coordinator that claims and then dies.
    let options = ClaimOptions { max_events: 100, lease: Duration::from_secs(1), max_claims: 5 };
    let crashed = harness.catalog.claim_ingest(&options).await?.batch.expect("claimed");
    assert_eq!(crashed.events.len(), 10);
    let (coordinator, metrics) = harness.coordinator(harness.config("survivor"));
    assert!(coordinator.run_once().await?.is_none(), "the events are claimed until the lease runs out");

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let stale = IngestCommit {
        dataset,
        fence: crashed.fence,
        committed: crashed.events.iter().map(|e| e.seq).collect(),
        poison: vec![],
        files: vec![NewFile {
            path: format!("crashy/ingest/{}/part-00000.parquet", crashed.fence.0),
            bytes: 1,
            rows: 10,
            sha256: "0".repeat(64),
            partition: None,
        }],
        manifest_path: None,
        schema: None,
    };
    let refused = harness.catalog.commit_ingest(&stale).await.expect_err("the lease ran out");
    assert_eq!(refused.error_code(), "claim_lost");

    let report = coordinator.run_once().await?.expect("the events again");
    assert_eq!(report.committed, 10);
    assert_ne!(report.fence, crashed.fence);
    assert_eq!(metric(&metrics, "duckmesh_claim_retries_total{reason=\"lease_lost\"}"), 1.0);
    // Still refused after the takeover, and nothing is committed twice.
    assert_eq!(harness.catalog.commit_ingest(&stale).await.expect_err("stale").error_code(), "claim_lost");
    let ids: Vec<i64> =
        harness.rows(dataset, "SELECT id").await.into_iter().map(|row| row["id"].as_i64().expect("id")).collect();
    assert_eq!(ids, (1..=10).collect::<Vec<i64>>());
    Ok(())
}

#[tokio::test]
async fn events_parked_for_running_out_of_claims_are_counted_when_nothing_else_is_pending() -> TestResult {
    let harness = Harness::local().await;
    let dataset = harness.dataset("doomed", Some(columns(&[("id", "BIGINT")])), json!({})).await;
    harness.post(dataset, &[json!({"id": 1}), json!({"id": 2})]).await;
    // Two coordinators claim the batch and die before committing it.
    let options = ClaimOptions { max_events: 100, lease: Duration::from_millis(100), max_claims: 2 };
    for _ in 0..2 {
        let claim = harness.catalog.claim_ingest(&options).await?;
        assert_eq!(claim.batch.map(|batch| batch.events.len()), Some(2));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (coordinator, metrics) = harness.coordinator(CoordinatorConfig { max_claims: 2, ..harness.config("last") });
    assert!(coordinator.run_once().await?.is_none(), "both events are parked, none is left to claim");
    // They were the last pending events, so no batch follows; the alert's counter moves anyway.
    assert_eq!(metric(&metrics, "duckmesh_ingest_dead_letters_total{reason=\"claim_attempts_exhausted\"}"), 2.0);
    let letters = harness
        .catalog
        .dead_letters(&DeadLetterFilter { dataset: Some(dataset), include_replayed: false, limit: 10 })
        .await?;
    assert_eq!(letters.iter().filter(|letter| letter.error_code == "claim_attempts_exhausted").count(), 2);
    assert_eq!(harness.catalog.ingest_backlog().await?.pending, 0);
    Ok(())
}

/// A store that misbehaves on demand: manifest writes stall (to let a claim run out in the
/// middle of a batch), or writes of keys ending in a given suffix fail as an outage would.
#[derive(Debug)]
struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    manifest_delay: Duration,
    failing_suffix: std::sync::Mutex<Option<&'static str>>,
}

impl FaultyStore {
    fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner, manifest_delay: Duration::ZERO, failing_suffix: std::sync::Mutex::new(None) }
    }

    /// Makes writes of keys ending in `suffix` fail from now on (`None`: the outage is over).
    fn fail_writes_ending_in(&self, suffix: Option<&'static str>) {
        *self.failing_suffix.lock().expect("faults") = suffix;
    }

    async fn before_write(&self, key: &str) -> duckmesh_storage::Result<()> {
        if key.ends_with("manifest.json") {
            tokio::time::sleep(self.manifest_delay).await;
        }
        let failing = *self.failing_suffix.lock().expect("faults");
        match failing {
            Some(suffix) if key.ends_with(suffix) => Err(duckmesh_storage::Error::Unavailable {
                operation: "put",
                key: key.to_owned(),
                attempts: 3,
                message: "503 Slow Down (injected outage)".into(),
                source: None,
            }),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put(&self, key: &str, data: Bytes) -> duckmesh_storage::Result<()> {
        self.before_write(key).await?;
        self.inner.put(key, data).await
    }
    async fn put_file(&self, key: &str, path: &Path) -> duckmesh_storage::Result<u64> {
        self.before_write(key).await?;
        self.inner.put_file(key, path).await
    }
    async fn get(&self, key: &str) -> duckmesh_storage::Result<Bytes> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> duckmesh_storage::Result<Bytes> {
        self.inner.get_range(key, range).await
    }
    async fn get_to_file(&self, key: &str, path: &Path) -> duckmesh_storage::Result<ObjectMeta> {
        self.inner.get_to_file(key, path).await
    }
    async fn head(&self, key: &str) -> duckmesh_storage::Result<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> duckmesh_storage::Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> duckmesh_storage::Result<()> {
        self.inner.delete(key).await
    }
    async fn presign_get(&self, key: &str, ttl: Duration) -> duckmesh_storage::Result<String> {
        self.inner.presign_get(key, ttl).await
    }
}

#[tokio::test]
async fn an_object_store_outage_gives_batches_back_and_loses_nothing() -> TestResult {
    let harness = Harness::local().await;
    let dataset = harness.dataset("outage", Some(columns(&[("id", "BIGINT")])), json!({})).await;
    harness.post(dataset, &(1..=5).map(|i| json!({"id": i})).collect::<Vec<_>>()).await;
    let faulty = Arc::new(FaultyStore::new(harness.store.clone()));
    let metrics = Metrics::new();
    let store: Arc<dyn ObjectStore> = faulty.clone();
    let coordinator = Coordinator::new(harness.catalog.clone(), store, metrics.clone(), harness.config("outage"));

    // The Parquet upload fails; then the Parquet lands but its manifest does not.
    for (round, suffix) in [".parquet", "manifest.json"].into_iter().enumerate() {
        faulty.fail_writes_ending_in(Some(suffix));
        let error = coordinator.run_once().await.expect_err("the store is down");
        assert!(matches!(error, Error::Storage { .. }), "{error}");
        let failures = metric(&metrics, "duckmesh_snapshot_publish_failures_total{reason=\"object_store_error\"}");
        assert_eq!(failures, (round + 1) as f64);
        assert!(harness.catalog.latest_snapshot(dataset).await?.is_none(), "nothing committed");
        let claims: Vec<(i32, Option<i64>)> =
            sqlx::query_as("SELECT claims, snapshot_id FROM ingest_events WHERE dataset_id = $1 ORDER BY seq")
                .bind(dataset.0)
                .fetch_all(harness.catalog.pool())
                .await?;
        assert_eq!(claims, vec![(0, None); 5], "given back at once, and not held against the events");
    }

    faulty.fail_writes_ending_in(None);
    let report = coordinator.run_once().await?.expect("the same events");
    assert_eq!((report.committed, report.dead_lettered), (5, 0));
    let files = harness.catalog.snapshot_files(dataset, report.snapshot.expect("snapshot")).await?;
    assert!(files.iter().all(|f| f.path.starts_with(&format!("outage/ingest/{}/", report.fence.0))));
    let ids: Vec<i64> =
        harness.rows(dataset, "SELECT id").await.into_iter().map(|row| row["id"].as_i64().expect("id")).collect();
    assert_eq!(ids, (1..=5).collect::<Vec<i64>>(), "each record exactly once");
    Ok(())
}

#[tokio::test]
async fn a_coordinator_whose_claim_runs_out_mid_batch_commits_nothing() -> TestResult {
    let harness = Harness::local().await;
    let dataset = harness.dataset("slow", Some(columns(&[("id", "BIGINT")])), json!({})).await;
    harness.post(dataset, &(1..=5).map(|i| json!({"id": i})).collect::<Vec<_>>()).await;
    let slow: Arc<dyn ObjectStore> = Arc::new(FaultyStore {
        manifest_delay: Duration::from_millis(1_500),
        ..FaultyStore::new(harness.store.clone())
    });
    let metrics = Metrics::new();
    let config = CoordinatorConfig { claim_lease: Duration::from_secs(1), ..harness.config("stalled") };
    let stalled = Coordinator::new(harness.catalog.clone(), slow, metrics.clone(), config);
    let error = stalled.run_once().await.expect_err("the claim ran out");
    assert!(matches!(error, Error::ClaimLost { .. }), "{error}");
    assert_eq!(metric(&metrics, "duckmesh_snapshot_publish_failures_total{reason=\"fence_rejected\"}"), 1.0);
    assert_eq!(metric(&metrics, "duckmesh_claim_retries_total{reason=\"lease_lost\"}"), 1.0);
    assert!(harness.catalog.latest_snapshot(dataset).await?.is_none());
    assert!(harness.events(dataset).await.iter().all(|(_, snapshot, _)| snapshot.is_none()));

    let (healthy, _metrics) = harness.coordinator(harness.config("healthy"));
    let report: BatchReport = healthy.run_once().await?.expect("the events again");
    assert_eq!(report.committed, 5);
    // Only the healthy batch's files are referenced; the stalled one's stay for GC.
    let files = harness.catalog.snapshot_files(dataset, report.snapshot.expect("snapshot")).await?;
    assert!(files.iter().all(|f| f.path.starts_with(&format!("slow/ingest/{}/", report.fence.0))));
    assert_eq!(harness.rows(dataset, "SELECT id").await.len(), 5);
    Ok(())
}

/// A catalog that cannot answer shows in `claim_retries_total{reason="catalog_error"}`
/// (docs/coordinator.md): the read-only check that starts every claim failed uncounted, so a
/// catalog down or restarting moved no coordinator metric at all.
#[tokio::test]
async fn an_unreachable_catalog_counts_as_a_claim_retry() -> TestResult {
    let harness = Harness::local().await;
    let (coordinator, metrics) = harness.coordinator(harness.config("c-1"));
    assert!(coordinator.run_once().await?.is_none());
    let series = "duckmesh_claim_retries_total{reason=\"catalog_error\"}";
    assert_eq!(metric(&metrics, series), 0.0);
    harness.catalog.close().await;
    let error = coordinator.run_once().await.expect_err("the catalog is closed");
    assert_eq!(error.error_code(), "catalog_unavailable", "{error}");
    assert_eq!(metric(&metrics, series), 1.0);
    Ok(())
}

#[tokio::test]
async fn read_only_mode_commits_nothing_until_it_is_turned_off() -> TestResult {
    let harness = Harness::local().await;
    let dataset = harness.dataset("frozen", Some(columns(&[("id", "BIGINT")])), json!({})).await;
    harness.post(dataset, &(1..=20).map(|i| json!({"id": i})).collect::<Vec<_>>()).await;
    harness.catalog.set_read_only(true, Some("restore drill"), "test").await?;

    let (coordinator, metrics) = harness.coordinator(harness.config("c-1"));
    assert!(coordinator.run_once().await?.is_none());
    let stop = CancellationToken::new();
    let run = tokio::spawn({
        let coordinator = coordinator.clone();
        let stop = stop.clone();
        async move { coordinator.run(stop).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(metric(&metrics, "duckmesh_read_only_mode"), 1.0);
    assert_eq!(metric(&metrics, "duckmesh_ingest_lag_events"), 20.0);
    assert!(harness.catalog.latest_snapshot(dataset).await?.is_none());
    assert!(harness.events(dataset).await.iter().all(|(_, snapshot, parked)| snapshot.is_none() && !parked));

    // The process-local override alone also keeps a coordinator from claiming.
    let (overridden, _) = harness.coordinator(CoordinatorConfig { read_only: true, ..harness.config("c-2") });
    harness.catalog.set_read_only(false, None, "test").await?;
    assert!(overridden.run_once().await?.is_none());

    wait_until_no_pending(&harness.catalog).await;
    stop.cancel();
    run.await??;
    assert_eq!(metric(&metrics, "duckmesh_read_only_mode"), 0.0);
    assert_eq!(metric(&metrics, "duckmesh_ingest_lag_events"), 0.0);
    assert_eq!(harness.rows(dataset, "SELECT id").await.len(), 20);
    assert!(harness.events(dataset).await.iter().all(|(_, snapshot, _)| snapshot.is_some()));
    Ok(())
}

#[tokio::test]
async fn a_partitioned_dataset_gets_one_directory_per_value() -> TestResult {
    let harness = Harness::local().await;
    let schema = columns(&[("id", "BIGINT"), ("day", "DATE"), ("region", "VARCHAR")]);
    let dataset = harness.dataset("visits", Some(schema), json!({"partitionBy": ["day"]})).await;
    let records: Vec<Value> = (1..=30)
        .map(|i| json!({"id": i, "day": format!("2024-05-0{}", 1 + i % 3), "region": if i % 2 == 0 { "eu" } else { "us" }}))
        .collect();
    harness.post(dataset, &records).await;
    let (coordinator, _metrics) = harness.coordinator(harness.config("c-1"));
    let report = coordinator.run_once().await?.expect("a batch");
    assert_eq!((report.committed, report.files), (30, 3));
    let files = harness.catalog.snapshot_files(dataset, report.snapshot.expect("snapshot")).await?;
    let mut days = BTreeSet::new();
    for file in &files {
        let day = file.partition.as_ref().and_then(|p| p["day"].as_str()).expect("partition value").to_owned();
        assert!(file.path.starts_with(&format!("visits/ingest/{}/day={day}/", report.fence.0)), "{}", file.path);
        assert_eq!(file.rows, 10);
        days.insert(day);
    }
    assert_eq!(days, ["2024-05-01", "2024-05-02", "2024-05-03"].map(String::from).into_iter().collect());
    let expected: Vec<Value> =
        records.iter().map(|r| json!({"id": r["id"], "day": r["day"], "region": r["region"]})).collect();
    assert_eq!(harness.rows(dataset, "SELECT id, day::VARCHAR AS day, region").await, expected);
    Ok(())
}

/// Issue 20, defence in depth: events that reach the coordinator with values that do not fit
/// their column exactly (acknowledged under older rules, or replayed with a new payload) are
/// dead-lettered naming the field, never stored with NULLs or rounded values in their place.
#[tokio::test]
async fn values_that_do_not_convert_exactly_are_dead_lettered_never_nulled() -> TestResult {
    let harness = Harness::local().await;
    let schema = columns(&[
        ("id", "BIGINT"),
        ("m", "MAP(VARCHAR,INTEGER)"),
        ("s", "STRUCT(x INTEGER)"),
        ("l", "INTEGER[]"),
        ("days", "DATE[]"),
    ]);
    let dataset = harness.dataset("nested", Some(schema), json!({})).await;
    harness
        .post(
            dataset,
            &[
                json!({"id": 1, "m": {"k": 1}, "s": {"x": 1}, "l": [1, 2], "days": ["2024-01-01"]}),
                json!({"id": 2, "m": {"k": "notint"}}),
                json!({"id": 3, "s": {"y": 1}}),
                json!({"id": 4, "l": [1, "2", 3.7, 99999999999_i64]}),
                json!({"id": 5, "days": ["2024-01-01", "2024-13-45"]}),
                json!({"id": 6, "s": {"x": null}}),
            ],
        )
        .await;
    let (coordinator, _metrics) = harness.coordinator(harness.config("c-1"));
    let report = coordinator.run_once().await?.expect("a batch");
    assert_eq!((report.committed, report.dead_lettered), (2, 4));
    assert_eq!(
        harness.rows(dataset, "SELECT id, m, s, l, days::VARCHAR[] AS days").await,
        vec![
            json!({"id": 1, "m": {"k": 1}, "s": {"x": 1}, "l": [1, 2], "days": ["2024-01-01"]}),
            json!({"id": 6, "m": null, "s": {"x": null}, "l": null, "days": null}),
        ]
    );
    let letters = harness
        .catalog
        .dead_letters(&DeadLetterFilter { dataset: Some(dataset), include_replayed: false, limit: 10 })
        .await?;
    let mut parked: Vec<(String, String)> =
        letters.iter().map(|letter| (letter.key.clone().unwrap_or_default(), letter.error_message.clone())).collect();
    parked.sort();
    let keys: Vec<&str> = parked.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["2", "3", "4", "5"]);
    assert!(letters.iter().all(|letter| letter.error_code == CONVERSION_FAILED));
    assert!(parked[0].1.starts_with("field \"m.k\""), "{}", parked[0].1);
    assert!(parked[1].1.contains("no field \"y\""), "{}", parked[1].1);
    assert!(parked[2].1.starts_with("field \"l[1]\""), "{}", parked[2].1);
    assert!(parked[3].1.contains("\"days\"") && parked[3].1.contains("2024-13-45"), "{}", parked[3].1);

    // A replayed payload gets the same checks: a wrong one is parked again, a right one commits.
    let three = letters.iter().find(|l| l.key.as_deref() == Some("3")).expect("letter of id 3");
    harness.catalog.replay_dead_letters(&[three.id], Some(&json!({"id": 3, "l": [1.5]}))).await?;
    let replay = coordinator.run_once().await?.expect("the replay");
    assert_eq!((replay.committed, replay.dead_lettered), (0, 1));
    let again = harness
        .catalog
        .dead_letters(&DeadLetterFilter { dataset: Some(dataset), include_replayed: false, limit: 10 })
        .await?;
    let latest = again.iter().find(|l| l.key.as_deref() == Some("3")).expect("parked again");
    harness.catalog.replay_dead_letters(&[latest.id], Some(&json!({"id": 3, "l": [1]}))).await?;
    let replay = coordinator.run_once().await?.expect("the second replay");
    assert_eq!((replay.committed, replay.dead_lettered), (1, 0));
    // A replacement payload with a NUL is refused before PostgreSQL sees it.
    let error =
        harness.catalog.replay_dead_letters(&[latest.id], Some(&json!({"id": "\u{0}"}))).await.expect_err("NUL");
    assert!(error.to_string().contains("NUL"), "{error}");
    Ok(())
}
