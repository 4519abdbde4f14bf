//! Shared fixtures: a real PostgreSQL catalog (testkit), a real S3 (moto_server), committed
//! Parquet snapshots made the way a worker makes them, and a query server on a free port.
#![allow(dead_code)]

use duckmesh_catalog::{Catalog, CommitMode, CommitRequest, Committed, DatasetSpec, NewFile, TaskOutput, TaskSpec};
use duckmesh_core::DatasetId;
use duckmesh_query::client::QueryClient;
use duckmesh_query::{QueryConfig, QueryService, router, serve};
use duckmesh_storage::testing::MotoServer;
use duckmesh_storage::{ObjectStore, S3Store};
use duckmesh_telemetry::Metrics;
use duckmesh_testkit::{BoxError, TestDatabase};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Everything a test talks to.
pub struct Env {
    pub db: TestDatabase,
    pub catalog: Catalog,
    pub store: Arc<dyn ObjectStore>,
    pub dir: tempfile::TempDir,
}

/// A fresh catalog database and an S3 prefix of its own on the shared moto_server.
pub async fn env() -> Result<Env, BoxError> {
    let db = TestDatabase::new().await?;
    let catalog = db.catalog_with(duckmesh_catalog::CatalogConfig::default(), 10).await?;
    let moto = MotoServer::shared().await?;
    let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(moto.scoped_config()).await?);
    Ok(Env { db, catalog, store, dir: tempfile::tempdir()? })
}

/// Registers a dataset.
pub async fn dataset(catalog: &Catalog, tenant: &str, name: &str) -> Result<DatasetId, BoxError> {
    let record = catalog
        .upsert_dataset(&DatasetSpec {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{tenant}-{name}"),
            generation: 1,
            tenant: tenant.into(),
            schema: None,
            spec: serde_json::json!({}),
        })
        .await?;
    Ok(record.id)
}

/// Writes the rows of `sql` as a Parquet file with DuckDB, uploads it under the dataset's
/// staging prefix, and commits it as one snapshot through a leased, confirmed attempt.
pub async fn commit_rows(
    env: &Env,
    dataset: DatasetId,
    tenant: &str,
    sql: &str,
    mode: CommitMode,
) -> Result<Committed, BoxError> {
    let name = format!("t{}", uuid::Uuid::new_v4().simple());
    let local = env.dir.path().join(format!("{name}.parquet"));
    let rows = write_parquet(&local, sql)?;
    let content = std::fs::read(&local)?;
    let key = format!("ds{}/attempts/{name}/part-0.parquet", dataset.0);
    env.store.put_file(&key, &local).await?;
    let spec = TaskSpec {
        name: name.clone(),
        kind: "sql".into(),
        depends_on: vec![],
        max_attempts: None,
        timeout_seconds: Some(60),
        output: Some(TaskOutput { dataset, mode }),
        spec: serde_json::json!({"sql": sql}),
    };
    let task = env.catalog.upsert_standalone_task("default", tenant, &spec).await?;
    let lease = env.catalog.lease_task(task, "test", Duration::from_secs(30)).await?.ok_or("task not leasable")?;
    env.catalog.confirm_attempt(lease.attempt_ref(), Some("test")).await?;
    let file = NewFile {
        path: key,
        bytes: content.len() as i64,
        rows,
        sha256: hex::encode(Sha256::digest(&content)),
        partition: None,
    };
    let request = CommitRequest { dataset, mode, files: vec![file], manifest_path: None, schema: None };
    Ok(env.catalog.commit(lease.attempt_ref(), &request).await?)
}

/// `COPY (sql) TO path` as Parquet; returns the row count.
pub fn write_parquet(path: &Path, sql: &str) -> Result<i64, BoxError> {
    let connection = duckdb::Connection::open_in_memory()?;
    let target = path.to_string_lossy().replace('\'', "''");
    connection.execute_batch(&format!("COPY ({sql}) TO '{target}' (FORMAT parquet)"))?;
    let rows: i64 =
        connection.query_row(&format!("SELECT count(*) FROM read_parquet('{target}')"), [], |row| row.get(0))?;
    Ok(rows)
}

/// A running server.
pub struct Server {
    pub url: String,
    pub service: QueryService,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub fn client(&self, key: Option<&str>) -> QueryClient {
        QueryClient::new(&self.url, key.map(str::to_owned)).expect("client")
    }

    pub async fn stop(mut self) -> Result<(), BoxError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

/// Test defaults: no rate limits (tests of limits set their own), no auth.
pub fn config(env: &Env) -> QueryConfig {
    QueryConfig { rate_limits: duckmesh_query::RateLimits::OFF, ..QueryConfig::local(env.dir.path()) }
}

/// Starts a server with `config` on a free loopback port.
pub async fn start(env: &Env, config: QueryConfig) -> Result<Server, BoxError> {
    let service = QueryService::new(env.catalog.clone(), env.store.clone(), Metrics::new(), config)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, router(service.clone()), async move {
        let _ = rx.await;
    }));
    Ok(Server { url, service, shutdown: Some(tx), task: Some(task) })
}

/// A raw POST with reqwest, for status and header checks.
pub async fn post(
    url: &str,
    path: &str,
    key: Option<&str>,
    body: serde_json::Value,
) -> Result<reqwest::Response, BoxError> {
    let client = reqwest::Client::new();
    let mut request = client.post(format!("{url}{path}")).json(&body);
    if let Some(key) = key {
        request = request.header("X-API-Key", key);
    }
    Ok(request.send().await?)
}

/// Status and `error_code` of an answer.
pub async fn status_and_code(response: reqwest::Response) -> Result<(u16, String), BoxError> {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await?;
    Ok((status, body["error_code"].as_str().unwrap_or_default().to_owned()))
}
