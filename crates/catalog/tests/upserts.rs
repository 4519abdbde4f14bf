//! Applying declared resources again — what every reconcile does — must not take ids from the
//! sequences (an `INSERT … ON CONFLICT` takes one even when it conflicts, so ids used to jump
//! by the number of reconciles), and two appliers racing on the same new resource must both
//! succeed with one row.

mod common;

use common::*;
use duckmesh_catalog::*;
use duckmesh_testkit::BoxError;

/// The sequence's last value (`None` before its first use).
async fn last_value(catalog: &Catalog, sequence: &str) -> Result<Option<i64>, BoxError> {
    let (value, called): (i64, bool) =
        sqlx::query_as(&format!("SELECT last_value, is_called FROM {sequence}")).fetch_one(catalog.pool()).await?;
    Ok(called.then_some(value))
}

async fn sequences(catalog: &Catalog) -> Result<[Option<i64>; 3], BoxError> {
    Ok([
        last_value(catalog, "datasets_id_seq").await?,
        last_value(catalog, "jobs_id_seq").await?,
        last_value(catalog, "tasks_id_seq").await?,
    ])
}

fn dataset_spec(name: &str, generation: i64) -> DatasetSpec {
    DatasetSpec {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        generation,
        tenant: "acme".into(),
        schema: None,
        spec: serde_json::json!({"generation": generation}),
    }
}

#[tokio::test]
async fn applying_unchanged_resources_again_takes_no_ids() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let dataset = catalog.upsert_dataset(&dataset_spec("out", 1)).await?;
    let nightly = job_spec("nightly", vec![task("a", &[], Some(dataset.id)), task("b", &["a"], Some(dataset.id))]);
    let job = catalog.upsert_job(&nightly).await?;
    let adhoc = catalog.upsert_standalone_task("default", "acme", &task("adhoc", &[], Some(dataset.id))).await?;
    let before = sequences(&catalog).await?;
    assert_eq!(before, [Some(dataset.id.0), Some(job.job.id.0), Some(adhoc.0)]);

    for _ in 0..25 {
        assert_eq!(catalog.upsert_dataset(&dataset_spec("out", 1)).await?.id, dataset.id);
        let again = catalog.upsert_job(&nightly).await?;
        assert_eq!((again.job.id, again.created), (job.job.id, false));
        assert_eq!(
            catalog.upsert_standalone_task("default", "acme", &task("adhoc", &[], Some(dataset.id))).await?,
            adhoc
        );
    }
    assert_eq!(sequences(&catalog).await?, before, "25 re-applies took no ids");

    // Newer generations update in place: still no new ids.
    let newer = catalog.upsert_dataset(&dataset_spec("out", 2)).await?;
    assert_eq!((newer.id, newer.generation), (dataset.id, 2));
    assert_eq!(newer.spec, serde_json::json!({"generation": 2}));
    let older = catalog.upsert_dataset(&dataset_spec("out", 1)).await?;
    assert_eq!(older.generation, 2, "an older generation arriving late changes nothing");
    let mut edited = nightly.clone();
    edited.generation = 3;
    edited.max_parallel = Some(1);
    let updated = catalog.upsert_job(&edited).await?;
    assert_eq!((updated.job.id, updated.job.generation, updated.job.max_parallel), (job.job.id, 3, Some(1)));
    assert_eq!(catalog.upsert_job(&nightly).await?.job.generation, 3, "generations never go back");
    assert_eq!(sequences(&catalog).await?, before);

    // A new incarnation (new uid) of the dataset keeps its row; a new job takes exactly one id.
    let mut recreated = dataset_spec("out", 1);
    recreated.uid = "uid-out-2".into();
    let recreated = catalog.upsert_dataset(&recreated).await?;
    assert_eq!((recreated.id, recreated.uid.as_str(), recreated.generation), (dataset.id, "uid-out-2", 1));
    let other = catalog.upsert_job(&job_spec("other", vec![task("c", &[], Some(dataset.id))])).await?;
    assert!(other.created);
    assert_eq!(other.job.id.0, job.job.id.0 + 1, "ids are consecutive: none was burned");
    Ok(())
}

#[tokio::test]
async fn concurrent_appliers_of_a_new_resource_both_succeed_with_one_row() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let out = catalog.upsert_dataset(&dataset_spec("out", 1)).await?.id;
    for round in 0..10 {
        let name = format!("raced-{round}");
        let spec = dataset_spec(&name, 1);
        let (a, b) = tokio::join!(catalog.upsert_dataset(&spec), catalog.upsert_dataset(&spec));
        assert_eq!(a?.id, b?.id, "{name}");

        let job = job_spec(&format!("job-{round}"), vec![task("a", &[], Some(out)), task("b", &["a"], Some(out))]);
        let (a, b) = tokio::join!(catalog.upsert_job(&job), catalog.upsert_job(&job));
        let (a, b) = (a?, b?);
        assert_eq!(a.job.id, b.job.id);
        assert!(a.created != b.created, "exactly one of them created it");
        assert_eq!(catalog.tasks_of_job(a.job.id).await?.len(), 2, "its tasks exist once");

        let adhoc = task(&format!("adhoc-{round}"), &[], Some(out));
        let (a, b) = tokio::join!(
            catalog.upsert_standalone_task("default", "acme", &adhoc),
            catalog.upsert_standalone_task("default", "acme", &adhoc)
        );
        assert_eq!(a?, b?);
    }
    let [datasets, jobs, tasks] = sequences(&catalog).await?;
    assert_eq!(datasets, Some(11), "one id per dataset");
    assert_eq!(jobs, Some(10), "one id per job");
    assert_eq!(tasks, Some(30), "one id per task");
    Ok(())
}
