//! Fenced commits, snapshots and time travel, LISTEN/NOTIFY and the outbox on a real PostgreSQL.

mod common;

use common::*;
use duckmesh_catalog::*;
use duckmesh_core::{SnapshotId, TaskPhase};
use duckmesh_testkit::BoxError;
use std::collections::HashSet;
use std::time::Duration;

async fn counts(catalog: &Catalog) -> Result<(i64, i64, i64), BoxError> {
    Ok(sqlx::query_as(
        "SELECT (SELECT count(*) FROM snapshots), (SELECT count(*) FROM files), (SELECT count(*) FROM outbox)",
    )
    .fetch_one(catalog.pool())
    .await?)
}

#[tokio::test]
async fn appends_and_overwrites_build_immutable_snapshots() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let ds = dataset(&catalog, "sales").await?;
    let mut tasks = Vec::new();
    for (name, mode) in [("a1", CommitMode::Append), ("a2", CommitMode::Append), ("ow", CommitMode::Overwrite)] {
        let mut spec = task(name, &[], Some(ds));
        spec.output = Some(TaskOutput { dataset: ds, mode });
        tasks.push(spec);
    }
    let ids = job(&catalog, &job_spec("loads", tasks)).await?;

    let l1 = lease(&catalog, id_of(&ids, "a1")).await?;
    let c1 =
        catalog.commit(l1.attempt_ref(), &append(ds, vec![file("s/1.parquet", 10), file("s/2.parquet", 20)])).await?;
    assert_eq!((c1.snapshot, c1.parent, c1.visibility_token), (SnapshotId(1), None, 1));

    let l2 = lease(&catalog, id_of(&ids, "a2")).await?;
    let c2 = catalog.commit(l2.attempt_ref(), &append(ds, vec![file("s/3.parquet", 5)])).await?;
    assert_eq!((c2.snapshot, c2.parent, c2.visibility_token), (SnapshotId(2), Some(SnapshotId(1)), 2));

    let l3 = lease(&catalog, id_of(&ids, "ow")).await?;
    let overwrite = CommitRequest { mode: CommitMode::Overwrite, ..append(ds, vec![file("s/4.parquet", 7)]) };
    let c3 = catalog.commit(l3.attempt_ref(), &overwrite).await?;
    assert_eq!((c3.snapshot, c3.visibility_token), (SnapshotId(3), 3));

    // Time travel: each snapshot keeps exactly its files.
    let paths = |files: Vec<FileRecord>| files.into_iter().map(|f| f.path).collect::<Vec<_>>();
    assert_eq!(paths(catalog.snapshot_files(ds, SnapshotId(1)).await?), ["s/1.parquet", "s/2.parquet"]);
    assert_eq!(paths(catalog.snapshot_files(ds, SnapshotId(2)).await?), ["s/1.parquet", "s/2.parquet", "s/3.parquet"]);
    assert_eq!(paths(catalog.snapshot_files(ds, SnapshotId(3)).await?), ["s/4.parquet"]);

    let record = catalog.dataset(ds).await?;
    assert_eq!(
        (record.current_snapshot, record.visibility_token, record.file_count, record.row_count, record.byte_count),
        (Some(SnapshotId(3)), 3, 1, 7, 70)
    );
    let snaps = catalog.snapshots(ds, None, 10).await?;
    assert_eq!(snaps.iter().map(|s| s.id.0).collect::<Vec<_>>(), [3, 2, 1]);
    assert_eq!(snaps.iter().map(|s| s.row_count).collect::<Vec<_>>(), [7, 35, 30]);
    assert_eq!(snaps[0].kind, "overwrite");
    assert_eq!(catalog.snapshots(ds, Some(SnapshotId(3)), 1).await?[0].id, SnapshotId(2));
    assert_eq!(catalog.latest_snapshot(ds).await?.map(|s| s.id), Some(SnapshotId(3)));
    assert_eq!(catalog.snapshot(ds, SnapshotId(2)).await?.attempt, Some(l2.attempt));
    assert_eq!(catalog.snapshot(ds, SnapshotId(9)).await.expect_err("absent").error_code(), "not_found");

    let task = catalog.task(l3.task).await?;
    assert_eq!((task.phase, task.output_snapshot), (TaskPhase::Succeeded, Some(SnapshotId(3))));
    Ok(())
}

#[tokio::test]
async fn stale_expired_and_duplicate_commits_change_nothing() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let ds = dataset(&catalog, "events").await?;
    let ids = job(&catalog, &job_spec("j", vec![task("t", &[], Some(ds))])).await?;
    let t = id_of(&ids, "t");

    // Attempt 1 stalls past its lease; a reaper retires it; attempt 2 takes over.
    let stale = catalog.lease_task(t, "s", Duration::from_millis(150)).await?.expect("lease");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let before = counts(&catalog).await?;
    let expired = catalog.commit(stale.attempt_ref(), &append(ds, vec![file("e/stale.parquet", 1)])).await;
    assert_eq!(expired.expect_err("expired lease").error_code(), "lease_expired");
    assert_eq!(counts(&catalog).await?, before, "an expired attempt wrote nothing");

    catalog.reap_expired_leases(10).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let current = lease(&catalog, t).await?;
    let superseded = catalog.commit(stale.attempt_ref(), &append(ds, vec![file("e/stale.parquet", 1)])).await;
    assert!(superseded.expect_err("superseded").is_fencing());

    let committed = catalog.commit(current.attempt_ref(), &append(ds, vec![file("e/good.parquet", 3)])).await?;
    let after = counts(&catalog).await?;
    // The same commit replayed (a worker retrying after a lost response) is refused.
    let replay = catalog.commit(current.attempt_ref(), &append(ds, vec![file("e/good2.parquet", 3)])).await;
    assert_eq!(replay.expect_err("already committed").error_code(), "attempt_not_active");
    assert_eq!(counts(&catalog).await?, after);
    assert_eq!(catalog.dataset(ds).await?.current_snapshot, Some(committed.snapshot));
    assert_eq!(catalog.snapshot_files(ds, committed.snapshot).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn invalid_commits_are_refused_with_clear_errors() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let ds = dataset(&catalog, "typed").await?;
    let other = dataset(&catalog, "other").await?;
    let ids =
        job(&catalog, &job_spec("j", vec![task("first", &[], Some(ds)), task("second", &["first"], Some(ds))])).await?;
    let columns = |spec: &[(&str, &str)]| {
        Some(spec.iter().map(|(n, t)| Column { name: (*n).into(), data_type: (*t).into() }).collect::<Vec<_>>())
    };

    let first = lease(&catalog, id_of(&ids, "first")).await?;
    let wrong_target = catalog.commit(first.attempt_ref(), &append(other, vec![file("o/1.parquet", 1)])).await;
    assert!(wrong_target.expect_err("wrong dataset").to_string().contains("declares output dataset"));
    let mut bad_hash = file("t/1.parquet", 1);
    bad_hash.sha256 = "XYZ".into();
    assert_eq!(
        catalog.commit(first.attempt_ref(), &append(ds, vec![bad_hash])).await.expect_err("hash").error_code(),
        "invalid_spec"
    );
    let escape = catalog.commit(first.attempt_ref(), &append(ds, vec![file("../etc/passwd", 1)])).await;
    assert!(escape.expect_err("path").to_string().contains("relative object key"));

    let typed = CommitRequest {
        schema: columns(&[("id", "BIGINT"), ("name", "VARCHAR")]),
        ..append(ds, vec![file("t/1.parquet", 2)])
    };
    catalog.commit(first.attempt_ref(), &typed).await?;
    assert_eq!(catalog.dataset(ds).await?.schema, columns(&[("id", "BIGINT"), ("name", "VARCHAR")]), "learned");

    let second = lease(&catalog, id_of(&ids, "second")).await?;
    let drifted = CommitRequest {
        schema: columns(&[("id", "VARCHAR"), ("email", "VARCHAR")]),
        ..append(ds, vec![file("t/2.parquet", 2)])
    };
    let error = catalog.commit(second.attempt_ref(), &drifted).await.expect_err("schema mismatch");
    assert_eq!(error.error_code(), "schema_mismatch");
    let message = error.to_string();
    for expected in ["missing columns name", "unexpected columns email", "id (BIGINT → VARCHAR)"] {
        assert!(message.contains(expected), "{message}");
    }
    assert_eq!(catalog.dataset(ds).await?.current_snapshot, Some(SnapshotId(1)), "nothing committed");
    Ok(())
}

#[tokio::test]
async fn declared_type_aliases_match_the_names_duckdb_reports() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let columns = |spec: &[(&str, &str)]| {
        spec.iter().map(|(n, t)| Column { name: (*n).into(), data_type: (*t).into() }).collect::<Vec<_>>()
    };
    let declared = columns(&[("id", "int8"), ("name", "text"), ("amount", "numeric(10, 2)"), ("tags", "string[]")]);
    let described =
        columns(&[("id", "BIGINT"), ("name", "VARCHAR"), ("amount", "DECIMAL(10,2)"), ("tags", "VARCHAR[]")]);
    let record = catalog
        .upsert_dataset(&DatasetSpec {
            namespace: "default".into(),
            name: "orders".into(),
            uid: "uid-orders".into(),
            generation: 1,
            tenant: "acme".into(),
            schema: Some(declared.clone()),
            spec: serde_json::json!({}),
        })
        .await?;
    assert_eq!(record.schema.as_ref(), Some(&described), "stored in DuckDB's spelling");
    let ds = record.id;
    let ids = job(&catalog, &job_spec("load", vec![task("t", &[], Some(ds))])).await?;
    let attempt = lease(&catalog, id_of(&ids, "t")).await?;
    let commit = CommitRequest { schema: Some(described.clone()), ..append(ds, vec![file("o/1.parquet", 2)]) };
    catalog.commit(attempt.attempt_ref(), &commit).await?;

    // A catalog written before names were canonical is repaired by the next migrate.
    sqlx::query("UPDATE datasets SET schema = $2 WHERE id = $1")
        .bind(ds.0)
        .bind(sqlx::types::Json(&declared))
        .execute(catalog.pool())
        .await?;
    assert_eq!(catalog.dataset(ds).await?.schema.as_ref(), Some(&declared));
    catalog.migrate().await?;
    assert_eq!(catalog.dataset(ds).await?.schema.as_ref(), Some(&described));
    catalog.migrate().await?;
    assert_eq!(catalog.dataset(ds).await?.schema.as_ref(), Some(&described), "idempotent");
    Ok(())
}

#[tokio::test]
async fn commits_wake_listeners() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let ds = dataset(&catalog, "live").await?;
    let ids = job(&catalog, &job_spec("j", vec![task("t", &[], Some(ds))])).await?;
    let mut listener = catalog.listen_commits().await?;
    let l = lease(&catalog, id_of(&ids, "t")).await?;
    let committed = catalog.commit(l.attempt_ref(), &append(ds, vec![file("l/1.parquet", 1)])).await?;
    let event = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await??;
    assert_eq!(
        event,
        CommitEvent { dataset: ds, snapshot: committed.snapshot, visibility_token: committed.visibility_token }
    );
    Ok(())
}

/// Concurrent commits of one process share notification transactions; every commit still
/// wakes the listener, and each commit call returns only once its own wake-up was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_each_wake_listeners() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let datasets = [dataset(&catalog, "a").await?, dataset(&catalog, "b").await?];
    let tasks: Vec<TaskSpec> = (0..24).map(|i| task(&format!("t{i}"), &[], Some(datasets[i % 2]))).collect();
    let ids = job(&catalog, &job_spec("many", tasks)).await?;
    let mut listener = catalog.listen_commits().await?;
    let commits: Vec<_> = (0..24)
        .map(|i| {
            let catalog = catalog.clone();
            let (task, ds) = (id_of(&ids, &format!("t{i}")), datasets[i % 2]);
            tokio::spawn(async move {
                let l = lease(&catalog, task).await.expect("lease");
                catalog.commit(l.attempt_ref(), &append(ds, vec![file(&format!("c/{i}.parquet"), 1)])).await
            })
        })
        .collect();
    let mut expected = HashSet::new();
    for commit in commits {
        let committed = commit.await??;
        expected.insert((committed.dataset, committed.snapshot, committed.visibility_token));
    }
    // Every call has returned, so every wake-up was sent: all of them are waiting already.
    let mut seen = HashSet::new();
    while seen.len() < expected.len() {
        let event = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await??;
        seen.insert((event.dataset, event.snapshot, event.visibility_token));
    }
    assert_eq!(seen, expected);
    Ok(())
}

#[tokio::test]
async fn outbox_rows_are_claimed_once_retried_with_backoff_then_failed() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    for i in 0..40 {
        catalog.enqueue_outbox("test_event", &serde_json::json!({"i": i})).await?;
    }
    // Four dispatchers claim concurrently: every row goes to exactly one of them.
    let claims: Vec<_> = (0..4)
        .map(|_| {
            let catalog = catalog.clone();
            tokio::spawn(async move { catalog.claim_outbox(15, Duration::from_secs(60)).await })
        })
        .collect();
    let mut seen = HashSet::new();
    for claim in claims {
        for message in claim.await?? {
            assert!(seen.insert(message.id), "row {} claimed twice", message.id);
            assert_eq!(message.attempts, 1);
        }
    }
    assert_eq!(seen.len(), 40);
    assert!(catalog.claim_outbox(100, Duration::from_secs(60)).await?.is_empty(), "all claimed");
    let stats = catalog.outbox_stats().await?;
    assert_eq!((stats.pending, stats.failed), (40, 0));

    let ids: Vec<i64> = seen.into_iter().collect();
    for id in &ids[1..] {
        catalog.complete_outbox(*id).await?;
    }
    // The remaining row fails every delivery until it is marked Failed after 20.
    let poison = ids[0];
    let mut deliveries = 1; // the claim above
    assert!(!catalog.fail_outbox(poison, "downstream said no").await?);
    loop {
        let claimed = catalog.claim_outbox(10, Duration::from_secs(60)).await?;
        if claimed.is_empty() {
            // wait out the (test-sized) backoff
            if catalog.outbox_stats().await?.failed == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        assert_eq!(claimed.len(), 1);
        deliveries += 1;
        assert_eq!(claimed[0].attempts, deliveries);
        let failed = catalog.fail_outbox(poison, "downstream said no").await?;
        assert_eq!(failed, deliveries == 20, "delivery {deliveries}");
    }
    assert_eq!(deliveries, 20);
    let stats = catalog.outbox_stats().await?;
    assert_eq!((stats.pending, stats.failed), (0, 1));
    assert_eq!(catalog.requeue_failed_outbox().await?, 1);
    assert_eq!(catalog.claim_outbox(10, Duration::from_secs(60)).await?.len(), 1, "requeued row delivered again");
    Ok(())
}

#[tokio::test]
async fn backlog_stats_show_runnable_and_expired_work() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let ids = job(&catalog, &job_spec("b", vec![task("a", &[], None), task("b", &[], None), task("c", &["a"], None)]))
        .await?;
    let stats = catalog.backlog_stats().await?;
    assert_eq!((stats.runnable, stats.active, stats.expired_unreaped), (2, 0, 0));
    catalog.lease_task(id_of(&ids, "a"), "s", Duration::from_millis(100)).await?.expect("lease");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let stats = catalog.backlog_stats().await?;
    assert_eq!((stats.runnable, stats.active, stats.expired_unreaped), (1, 1, 1));
    assert!(stats.max_lease_lag_seconds >= 1, "{stats:?}");
    assert!(stats.oldest_runnable_age_seconds >= 1, "{stats:?}");
    Ok(())
}
