//! `duckmesh catalog rebuild` through the real binary: commits made by `duckmesh worker` on a
//! real PostgreSQL catalog and a real S3 server (moto), their commit records written by the
//! outbox dispatcher, then the catalog rebuilt into a fresh database — a dry run first, then
//! the restore, which `duckmesh integrity` finds clean; a second rebuild is refused.

use duckmesh_catalog::{CommitMode, DatasetSpec, TaskOutput, TaskSpec};
use duckmesh_coordinator::{OutboxDispatcher, OutboxOptions};
use duckmesh_storage::testing::MotoServer;
use duckmesh_storage::{ObjectStore, S3Config, S3Store};
use duckmesh_testkit::TestDatabase;
use serde_json::json;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

/// `duckmesh <args>` against the catalog at `url` and S3 at `s3`, and nothing else.
fn duckmesh(args: &[&str], url: &str, s3: &S3Config, dir: &std::path::Path) -> Output {
    let credentials = s3.credentials.clone().expect("static test credentials");
    Command::new(env!("CARGO_BIN_EXE_duckmesh"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DUCKMESH_DATABASE_URL", url)
        .env("DUCKMESH_S3_BUCKET", &s3.bucket)
        .env("DUCKMESH_S3_PREFIX", s3.prefix.as_deref().unwrap_or_default())
        .env("DUCKMESH_S3_ENDPOINT", s3.endpoint.as_deref().unwrap_or_default())
        .env("DUCKMESH_S3_REGION", &s3.region)
        .env("AWS_ACCESS_KEY_ID", credentials.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", credentials.secret_access_key)
        .env("DUCKMESH_HEARTBEAT_SECONDS", "1")
        .env("DUCKMESH_CACHE_DIR", dir.join("cache"))
        .env("DUCKMESH_WORK_DIR", dir.join("work"))
        .output()
        .expect("run duckmesh")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test]
async fn the_binary_rebuilds_a_lost_catalog_from_the_bucket() {
    let server = MotoServer::shared().await.expect("S3 test server (moto_server on PATH)");
    let s3 = server.scoped_config();
    let dir = tempfile::tempdir().expect("tempdir");
    let original = TestDatabase::new().await.expect("test database");
    let catalog = original.catalog().await.expect("catalog");
    let dataset = catalog
        .upsert_dataset(&DatasetSpec {
            namespace: "default".into(),
            name: "out".into(),
            uid: "uid-out".into(),
            generation: 1,
            tenant: "default".into(),
            schema: None,
            spec: json!({}),
        })
        .await
        .expect("dataset");
    for index in 0..2 {
        let task = TaskSpec {
            name: format!("load-{index}"),
            kind: "sql".into(),
            depends_on: vec![],
            max_attempts: Some(1),
            timeout_seconds: None,
            output: Some(TaskOutput { dataset: dataset.id, mode: CommitMode::Append }),
            spec: json!({"sql": format!("SELECT {index} AS id")}),
        };
        let task = catalog.upsert_standalone_task("default", "default", &task).await.expect("task");
        let lease = catalog.lease_task(task, "test", Duration::from_secs(60)).await.expect("lease").expect("runnable");
        let mut worker = Command::new(env!("CARGO_BIN_EXE_duckmesh"));
        let output = worker
            .arg("worker")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DUCKMESH_DATABASE_URL", original.url())
            .env("DUCKMESH_S3_BUCKET", &s3.bucket)
            .env("DUCKMESH_S3_PREFIX", s3.prefix.as_deref().unwrap_or_default())
            .env("DUCKMESH_S3_ENDPOINT", s3.endpoint.as_deref().unwrap_or_default())
            .env("DUCKMESH_S3_REGION", &s3.region)
            .env("AWS_ACCESS_KEY_ID", s3.credentials.clone().expect("credentials").access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", s3.credentials.clone().expect("credentials").secret_access_key)
            .env("DUCKMESH_CACHE_DIR", dir.path().join("cache"))
            .env("DUCKMESH_WORK_DIR", dir.path().join("work"))
            .env("DUCKMESH_TASK_ID", lease.task.to_string())
            .env("DUCKMESH_ATTEMPT_ID", lease.attempt.to_string())
            .env("DUCKMESH_FENCE", lease.fence.to_string())
            .output()
            .expect("run the worker");
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    }
    let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(s3.clone()).await.expect("store"));
    let dispatcher = OutboxDispatcher::new(catalog.clone(), store, OutboxOptions::default());
    while dispatcher.dispatch_once().await.expect("dispatch").claimed > 0 {}

    let help = duckmesh(&["catalog", "rebuild", "--help"], original.url(), &s3, dir.path());
    assert_eq!(help.status.code(), Some(0), "{}", text(&help));
    assert!(text(&help).contains("Rebuild a lost catalog from the bucket") && text(&help).contains("--dry-run"));

    let rebuilt = TestDatabase::new().await.expect("test database");
    let output = duckmesh(&["catalog", "rebuild", "--dry-run"], rebuilt.url(), &s3, dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("dry run: would restore 1 dataset(s), 2 snapshot(s), 2 file(s)"),
        "{}",
        text(&output)
    );

    let output = duckmesh(&["catalog", "rebuild"], rebuilt.url(), &s3, dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("restored 1 dataset(s), 2 snapshot(s), 2 file(s); fence_seq is at"),
        "{}",
        text(&output)
    );
    assert!(text(&output).contains("default/out"), "{}", text(&output));

    let output = duckmesh(&["integrity", "--all", "--verify-hashes"], rebuilt.url(), &s3, dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("clean"), "{}", text(&output));
    let restored = rebuilt.catalog().await.expect("catalog").dataset_by_name("default", "out").await.expect("out");
    let before = catalog.dataset(dataset.id).await.expect("out");
    assert_eq!(
        (restored.id, restored.current_snapshot, restored.visibility_token, restored.row_count),
        (before.id, before.current_snapshot, before.visibility_token, before.row_count)
    );

    let output = duckmesh(&["catalog", "rebuild"], rebuilt.url(), &s3, dir.path());
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("not empty"), "{}", text(&output));
}
