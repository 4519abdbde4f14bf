//! Tenant isolation when resources are applied, on a real PostgreSQL catalog: a Job or a
//! standalone Task that names another tenant's dataset as an input or its output is refused
//! with `cross_tenant_dataset`, naming the field, and nothing of it is stored.

use duckmesh_catalog::Catalog;
use duckmesh_resources::{Resource, parse_documents};
use duckmesh_scheduler::{ApplyError, ObjectRef, apply_dataset, apply_job, apply_task};
use duckmesh_testkit::{BoxError, TestDatabase};

const DATASETS: &str = "
apiVersion: duckmesh.io/v1alpha1
kind: Dataset
metadata: {name: payroll}
spec: {tenant: globex}
---
apiVersion: duckmesh.io/v1alpha1
kind: Dataset
metadata: {name: notes}
spec: {}
---
apiVersion: duckmesh.io/v1alpha1
kind: Dataset
metadata: {name: copy}
spec: {}
";

fn object(name: &str) -> ObjectRef {
    ObjectRef { namespace: "default".into(), name: name.into(), uid: format!("uid-{name}"), generation: 1 }
}

fn one(yaml: &str) -> Resource {
    let mut resources = parse_documents(yaml, "test.yaml").expect("valid YAML");
    assert_eq!(resources.len(), 1);
    resources.remove(0)
}

async fn apply(catalog: &Catalog, yaml: &str) -> Result<(), ApplyError> {
    match one(yaml) {
        Resource::Dataset(dataset) => {
            apply_dataset(catalog, &object(dataset.metadata.name.as_deref().unwrap_or("")), &dataset.spec).await?;
        }
        Resource::Job(job) => {
            apply_job(catalog, &object(job.metadata.name.as_deref().unwrap_or("")), &job.spec).await?;
        }
        Resource::Task(task) => {
            apply_task(catalog, &object(task.metadata.name.as_deref().unwrap_or("")), &task.spec).await?;
        }
    }
    Ok(())
}

async fn setup() -> Result<(TestDatabase, Catalog), BoxError> {
    let db = TestDatabase::new().await?;
    let catalog = db.catalog().await?;
    for document in DATASETS.split("---") {
        apply(&catalog, document).await?;
    }
    Ok((db, catalog))
}

async fn stored_tasks(catalog: &Catalog) -> Result<i64, BoxError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(catalog.pool()).await?)
}

fn job(name: &str, task: &str) -> String {
    format!("apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n  tasks:\n{task}")
}

#[tokio::test]
async fn a_job_cannot_read_or_overwrite_another_tenants_dataset() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let cases = [
        (
            job(
                "steal",
                "    - {name: own, output: {dataset: notes, mode: append}, sql: 'SELECT 1 AS x'}\n    \
                 - {name: take, inputs: [{dataset: notes}, {dataset: payroll}], output: {dataset: copy, mode: overwrite}, \
                 sql: 'SELECT * FROM payroll'}\n",
            ),
            "Job/steal",
            "spec.tasks[1].inputs[1].dataset",
            "take",
        ),
        (
            job(
                "clobber",
                "    - {name: wipe, output: {dataset: payroll, mode: overwrite}, sql: 'SELECT 0 AS salary'}\n",
            ),
            "Job/clobber",
            "spec.tasks[0].output.dataset",
            "wipe",
        ),
        (
            "apiVersion: duckmesh.io/v1alpha1\nkind: Task\nmetadata: {name: peek}\nspec:\n  template:\n    \
             name: peek\n    inputs: [{dataset: payroll}]\n    output: {dataset: copy, mode: overwrite}\n    \
             sql: SELECT * FROM payroll\n"
                .to_owned(),
            "Task/peek",
            "spec.template.inputs[0].dataset",
            "peek",
        ),
    ];
    for (yaml, resource, field, task) in cases {
        let error = apply(&catalog, &yaml).await.expect_err("another tenant's dataset");
        assert_eq!(error.error_code(), "cross_tenant_dataset", "{error}");
        assert!(!error.is_retryable(), "waiting does not help: the resource must change");
        let message = error.to_string();
        for part in [resource, field, "dataset \"payroll\"", "tenant \"globex\"", "tenant \"default\"", task] {
            assert!(message.contains(part), "{part:?} missing from: {message}");
        }
        let ApplyError::CrossTenant(reference) = &error else { panic!("expected CrossTenant, got {error:?}") };
        assert_eq!((reference.field.as_str(), reference.dataset_tenant.as_str()), (field, "globex"));
    }
    // Nothing of the refused resources was stored.
    assert_eq!(stored_tasks(&catalog).await?, 0);
    assert!(catalog.jobs().await?.is_empty());

    // The tenant's own datasets still work, and the refusal lifts when the Job runs as the
    // dataset's tenant.
    apply(
        &catalog,
        &job(
            "mine",
            "    - {name: c, inputs: [{dataset: notes}], output: {dataset: copy, mode: append}, sql: 'FROM notes'}\n",
        ),
    )
    .await?;
    let as_globex = "apiVersion: duckmesh.io/v1alpha1\nkind: Job\nmetadata: {name: payroll-report}\nspec:\n  tenant: globex\n  \
                     tasks:\n    - {name: r, inputs: [{dataset: payroll}], output: {dataset: payroll, mode: append}, sql: 'FROM payroll'}\n";
    apply(&catalog, as_globex).await?;
    assert_eq!(stored_tasks(&catalog).await?, 2);
    Ok(())
}
