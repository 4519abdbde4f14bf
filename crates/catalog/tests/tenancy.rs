//! Tenant isolation in the fenced commit (migration 0006) on a real PostgreSQL: a task commits
//! only into a dataset of its own tenant and namespace, even when it was stored without the
//! apply-time check or the dataset changed hands after it was stored.

mod common;

use common::*;
use duckmesh_catalog::*;
use duckmesh_core::TaskPhase;
use duckmesh_testkit::BoxError;

async fn foreign_dataset(
    catalog: &Catalog,
    namespace: &str,
    tenant: &str,
    name: &str,
) -> Result<DatasetRecord, BoxError> {
    Ok(catalog
        .upsert_dataset(&DatasetSpec {
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("uid-{namespace}-{name}"),
            generation: 1,
            tenant: tenant.into(),
            schema: None,
            spec: serde_json::json!({}),
        })
        .await?)
}

async fn snapshot_count(catalog: &Catalog) -> Result<i64, BoxError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM snapshots").fetch_one(catalog.pool()).await?)
}

#[tokio::test]
async fn a_task_cannot_commit_into_another_tenants_or_namespaces_dataset() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    // The job runs as tenant acme in namespace default (common fixtures).
    let payroll = foreign_dataset(&catalog, "default", "globex", "payroll").await?;
    let elsewhere = foreign_dataset(&catalog, "finance", "acme", "ledger").await?;
    let ids = job(
        &catalog,
        &job_spec("clobber", vec![task("tenant", &[], Some(payroll.id)), task("namespace", &[], Some(elsewhere.id))]),
    )
    .await?;

    for (name, dataset) in [("tenant", &payroll), ("namespace", &elsewhere)] {
        let lease = lease(&catalog, id_of(&ids, name)).await?;
        let error = catalog
            .commit(lease.attempt_ref(), &append(dataset.id, vec![file(&format!("{name}/x.parquet"), 3)]))
            .await
            .expect_err("a commit across tenants or namespaces");
        assert_eq!(error.error_code(), "cross_tenant_dataset", "{error}");
        assert!(!error.is_retryable() && !error.is_fencing());
        let message = error.to_string();
        assert!(
            message.contains(&format!("tenant {:?} in namespace {:?}", dataset.tenant, dataset.namespace)),
            "{message}"
        );
        assert!(message.contains("task's tenant \"acme\" in namespace \"default\""), "{message}");
        // Nothing changed: the dataset has no snapshot, the attempt is still live.
        assert_eq!(catalog.dataset(dataset.id).await?.current_snapshot, None);
        assert_eq!(catalog.task(lease.task).await?.phase, TaskPhase::Leased);
    }
    assert_eq!(snapshot_count(&catalog).await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_dataset_handed_to_another_tenant_after_the_task_was_stored_is_refused() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let shared = dataset(&catalog, "shared").await?;
    let ids =
        job(&catalog, &job_spec("loads", vec![task("first", &[], Some(shared)), task("second", &[], Some(shared))]))
            .await?;
    let first = lease(&catalog, id_of(&ids, "first")).await?;
    catalog.commit(first.attempt_ref(), &append(shared, vec![file("shared/1.parquet", 1)])).await?;

    // A newer generation of the Dataset names another tenant.
    let mut record = catalog.dataset(shared).await?;
    record.tenant = "globex".into();
    catalog
        .upsert_dataset(&DatasetSpec {
            namespace: record.namespace.clone(),
            name: record.name.clone(),
            uid: record.uid.clone(),
            generation: record.generation + 1,
            tenant: record.tenant.clone(),
            schema: None,
            spec: serde_json::json!({}),
        })
        .await?;
    assert_eq!(catalog.dataset(shared).await?.tenant, "globex");

    let second = lease(&catalog, id_of(&ids, "second")).await?;
    let error = catalog
        .commit(second.attempt_ref(), &append(shared, vec![file("shared/2.parquet", 1)]))
        .await
        .expect_err("the dataset now belongs to globex");
    assert_eq!(error.error_code(), "cross_tenant_dataset", "{error}");
    assert_eq!(catalog.dataset(shared).await?.row_count, 1, "only the first commit landed");
    assert_eq!(snapshot_count(&catalog).await?, 1);
    Ok(())
}
