//! `duckmesh dev` stores the resources of its files in one catalog transaction (issue 20): a
//! catalog failure part-way through, a lost connection included, stores none of them.

use duckmesh_dev::source::{SourceError, apply, load};
use duckmesh_testkit::{BoxError, TestDatabase};
use sqlx::Connection;
use std::time::Duration;

/// The advisory lock every upsert of Job default/nightly takes.
const JOB_LOCK: &str = "hashtextextended('duckmesh:job:default/nightly', 0)";

const FILE: &str = "\
apiVersion: duckmesh.io/v1alpha1
kind: Dataset
metadata: {name: out}
spec: {tenant: default}
---
apiVersion: duckmesh.io/v1alpha1
kind: Job
metadata: {name: nightly}
spec:
  tasks:
    - {name: a, sql: 'SELECT 1 AS x', output: {dataset: out}}
";

/// The connection applying the set is killed while it waits for the Job's name lock, after it
/// stored the Dataset: the apply fails with a catalog error and the Dataset is not there.
/// Applying again afterwards stores both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_part_way_through_stores_nothing() -> Result<(), BoxError> {
    let db = TestDatabase::new().await?;
    let catalog = db.catalog().await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("pipeline.yaml");
    std::fs::write(&path, FILE)?;
    let declared = load(std::slice::from_ref(&path))?;

    // Another session holds the lock every upsert of Job default/nightly takes. It is a
    // connection of its own, not a pool's: it is closed explicitly below, and only that
    // releases the lock (a pool closed while the connection is on its way back can leave it
    // open, and the lock held).
    let blocker = sqlx::PgPool::connect(db.url()).await?;
    let mut holder = sqlx::PgConnection::connect(db.url()).await?;
    sqlx::query(&format!("SELECT pg_advisory_lock({JOB_LOCK})")).execute(&mut holder).await?;
    let applying = tokio::spawn({
        let catalog = catalog.clone();
        async move { apply(&catalog, &declared).await }
    });
    // Kill the applier's connection once it waits on that lock (in this test's database: other
    // tests share the PostgreSQL server) (the Dataset is stored by then,
    // inside its transaction).
    let mut killed = false;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let waiting: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid <> pg_backend_pid() \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1",
        )
        .fetch_optional(&blocker)
        .await?;
        if let Some(pid) = waiting {
            killed = sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(&blocker).await?;
            break;
        }
    }
    assert!(killed, "the apply never waited on the Job's lock");
    let error = tokio::time::timeout(Duration::from_secs(60), applying)
        .await
        .expect("the apply ends once its connection is gone")?
        .expect_err("the apply lost its connection");
    assert!(matches!(error, SourceError::Apply { .. }), "{error}");
    assert!(error.to_string().contains("Job/nightly"), "the failing document is named: {error}");
    // The lock is the session's: unlocking it and closing the session releases it.
    let unlocked: bool =
        sqlx::query_scalar(&format!("SELECT pg_advisory_unlock({JOB_LOCK})")).fetch_one(&mut holder).await?;
    assert!(unlocked, "the holder still held the Job's lock");
    holder.close().await?;
    blocker.close().await;

    let datasets = catalog.datasets(None).await?;
    assert!(datasets.is_empty(), "part of the set was stored: {datasets:?}");
    assert!(catalog.job_by_name("default", "nightly").await.is_err(), "no job stored");

    let declared = load(std::slice::from_ref(&path))?;
    let applied = tokio::time::timeout(Duration::from_secs(60), apply(&catalog, &declared))
        .await
        .expect("the second apply finds the Job's lock free")?;
    assert_eq!(applied.datasets, ["out"]);
    assert_eq!(
        applied.jobs.iter().map(|(_, name, created)| (name.as_str(), *created)).collect::<Vec<_>>(),
        [("nightly", true)]
    );
    assert_eq!(catalog.datasets(None).await?.len(), 1);
    Ok(())
}
