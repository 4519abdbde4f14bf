//! Start-up migration rules on a real PostgreSQL.

mod common;

use common::*;
use duckmesh_testkit::BoxError;

#[tokio::test]
async fn a_catalog_migrated_by_a_newer_build_is_refused_before_any_change() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    catalog.migrate().await?;
    catalog.ensure_not_newer().await?;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990001, 'from the future', true, '\\x00'::bytea, 1)",
    )
    .execute(catalog.pool())
    .await?;
    let error = catalog.migrate().await.expect_err("newer schema");
    assert_eq!(error.error_code(), "catalog_schema_too_new");
    let message = error.to_string();
    assert!(message.contains("99990001") && message.contains("from the future"), "{message}");
    assert_eq!(catalog.ensure_not_newer().await.expect_err("newer").error_code(), "catalog_schema_too_new");
    Ok(())
}

/// Without the probe connection (a worker's start-up), the pool's first connection is the check:
/// a reachable catalog answers through it, and an unreachable one is still a retryable
/// `catalog_unavailable` that names the server and the real cause, not "pool timed out".
#[tokio::test]
async fn connecting_without_a_probe_still_names_why_the_catalog_is_unreachable() -> Result<(), BoxError> {
    use duckmesh_catalog::{Catalog, CatalogConfig, ConnectOptions};
    use std::time::Duration;
    let db = duckmesh_testkit::TestDatabase::new().await?;
    let mut options = ConnectOptions::new(db.url());
    options.probe = false;
    let catalog = Catalog::connect(&options, CatalogConfig::default()).await?;
    catalog.ping().await?;
    catalog.close().await;

    // Port 9 (discard) on loopback: nothing listens there.
    let mut options = ConnectOptions::new("postgres://postgres@127.0.0.1:9/none");
    options.acquire_timeout = Duration::from_secs(1);
    options.probe = false;
    let error = Catalog::connect(&options, CatalogConfig::default()).await.expect_err("must fail");
    assert_eq!(error.error_code(), "catalog_unavailable");
    assert!(error.is_retryable(), "{error}");
    let message = error.to_string();
    assert!(message.contains("127.0.0.1:9/none") && message.contains("refused"), "{message}");
    Ok(())
}
