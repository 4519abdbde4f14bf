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
