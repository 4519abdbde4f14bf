//! The ingest buffer on a real PostgreSQL: durable acks with dedupe, promised visibility
//! tokens, leased and fenced claims, batch commits, dead letters and the read-only switch.

mod common;

use common::*;
use duckmesh_catalog::*;
use duckmesh_core::{DatasetId, SnapshotId, TaskPhase};
use duckmesh_testkit::BoxError;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

fn records(keys: &[&str]) -> Vec<IngestRecord> {
    keys.iter().map(|key| IngestRecord { key: (*key).into(), payload: json!({"id": key}) }).collect()
}

async fn ingest(catalog: &Catalog, dataset: DatasetId, keys: &[&str]) -> Result<IngestAck, Error> {
    let records = records(keys);
    catalog
        .ingest(IngestRequest { dataset, tenant: "acme", records: &records, traceparent: None, max_pending: None })
        .await
}

fn claim_options(lease: Duration) -> ClaimOptions {
    ClaimOptions { max_events: 100, lease, max_claims: 3 }
}

/// Commits a claimed batch as one file.
fn commit_of(batch: &ClaimedBatch, path: &str) -> IngestCommit {
    IngestCommit {
        dataset: batch.dataset,
        fence: batch.fence,
        committed: batch.events.iter().map(|e| e.seq).collect(),
        poison: Vec::new(),
        files: vec![file(path, batch.events.len() as i64)],
        manifest_path: None,
        schema: None,
    }
}

async fn event_states(catalog: &Catalog, dataset: DatasetId) -> Result<Vec<(String, Option<i64>, bool)>, BoxError> {
    Ok(sqlx::query_as(
        "SELECT dedupe_key, snapshot_id, dead_letter_id IS NOT NULL FROM ingest_events WHERE dataset_id = $1 ORDER BY seq",
    )
    .bind(dataset.0)
    .fetch_all(catalog.pool())
    .await?)
}

#[tokio::test]
async fn acks_dedupe_and_promise_the_token_that_makes_records_visible() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let ds = dataset(&catalog, "events").await?;

    let first = ingest(&catalog, ds, &["a", "b", "a"]).await?;
    assert_eq!((first.accepted, first.duplicates, first.visibility_token), (2, 1, 1));
    assert!(!catalog.visible_at(ds, 1).await?, "nothing committed yet");
    assert!(catalog.visible_at(ds, 0).await?);

    let batch = catalog.claim_ingest(&claim_options(Duration::from_secs(30))).await?.batch.ok_or("a batch")?;
    assert_eq!(batch.events.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(batch.reclaimed(), 0);

    // Acked while the batch is in flight: promised token 1 as well, but not in that batch, so
    // the commit of the batch (token 1) must not make token 1 visible yet.
    let late = ingest(&catalog, ds, &["c"]).await?;
    assert_eq!(late.visibility_token, 1);
    let committed = catalog.commit_ingest(&commit_of(&batch, "events/ingest/1/part-0.parquet")).await?;
    assert_eq!((committed.snapshot, committed.visibility_token), (Some(SnapshotId(1)), Some(1)));
    assert!(!catalog.visible_at(ds, 1).await?, "record c is promised at token 1 and still pending");

    let next = catalog.claim_ingest(&claim_options(Duration::from_secs(30))).await?.batch.ok_or("c's batch")?;
    catalog.commit_ingest(&commit_of(&next, "events/ingest/2/part-0.parquet")).await?;
    assert!(catalog.visible_at(ds, 1).await? && catalog.visible_at(ds, 2).await?);
    assert!(!catalog.visible_at(ds, 3).await?, "no token 3 yet");

    // A retry of the whole first request stores nothing and points at the committed copies.
    let retry = ingest(&catalog, ds, &["a", "b"]).await?;
    assert_eq!((retry.accepted, retry.duplicates, retry.visibility_token), (0, 2, 1));
    let states = event_states(&catalog, ds).await?;
    assert_eq!(states, [("a".into(), Some(1), false), ("b".into(), Some(1), false), ("c".into(), Some(2), false)]);
    let snapshot = catalog.latest_snapshot(ds).await?.ok_or("snapshot")?;
    assert_eq!((snapshot.id, snapshot.row_count), (SnapshotId(2), 3));
    assert!(catalog.claim_ingest(&claim_options(Duration::from_secs(30))).await?.batch.is_none());
    Ok(())
}

#[tokio::test]
async fn concurrent_claims_are_disjoint_and_every_event_commits_once() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let ds = dataset(&catalog, "events").await?;
    let keys: Vec<String> = (0..400).map(|n| format!("k{n}")).collect();
    for chunk in keys.chunks(40) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        ingest(&catalog, ds, &refs).await?;
    }
    let mut workers = Vec::new();
    for worker in 0..4 {
        let catalog = catalog.clone();
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let options = ClaimOptions { max_events: 25, lease: Duration::from_secs(30), max_claims: 3 };
            while let Some(batch) = catalog.claim_ingest(&options).await?.batch {
                seen.extend(batch.events.iter().map(|e| e.key.clone()));
                let path = format!("events/ingest/{}/w{worker}.parquet", batch.fence);
                catalog.commit_ingest(&commit_of(&batch, &path)).await?;
            }
            Ok::<_, Error>(seen)
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await??);
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (400, 400), "every event claimed exactly once");
    let states = event_states(&catalog, ds).await?;
    assert!(states.iter().all(|(_, snapshot, dead)| snapshot.is_some() && !dead));
    let head = catalog.dataset(ds).await?;
    assert_eq!(head.row_count, 400);
    assert!(catalog.visible_at(ds, head.visibility_token).await?);
    Ok(())
}

#[tokio::test]
async fn a_lost_claim_cannot_commit_and_its_events_are_reclaimed() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let ds = dataset(&catalog, "events").await?;
    ingest(&catalog, ds, &["a", "b"]).await?;
    // A coordinator claims and "crashes": its claim runs out.
    let crashed = catalog.claim_ingest(&claim_options(Duration::from_millis(200))).await?.batch.ok_or("batch")?;
    assert!(catalog.claim_ingest(&claim_options(Duration::from_secs(30))).await?.batch.is_none(), "still claimed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rescuer = catalog.claim_ingest(&claim_options(Duration::from_secs(30))).await?.batch.ok_or("reclaimed")?;
    assert_eq!((rescuer.events.len(), rescuer.reclaimed()), (2, 2));
    assert!(rescuer.fence > crashed.fence);

    let error = catalog.commit_ingest(&commit_of(&crashed, "events/ingest/old.parquet")).await.expect_err("fenced");
    assert_eq!(error.error_code(), "claim_lost");
    catalog.commit_ingest(&commit_of(&rescuer, "events/ingest/new.parquet")).await?;
    let files: Vec<String> = catalog.snapshot_files(ds, SnapshotId(1)).await?.into_iter().map(|f| f.path).collect();
    assert_eq!(files, ["events/ingest/new.parquet"], "the stale claim's file never became visible");

    // Released claims are offered again at once, without counting as a failed claim.
    ingest(&catalog, ds, &["c"]).await?;
    let batch = catalog.claim_ingest(&claim_options(Duration::from_secs(30))).await?.batch.ok_or("c")?;
    assert_eq!(catalog.release_ingest_claim(ds, batch.fence).await?, 1);
    let again = catalog.claim_ingest(&claim_options(Duration::from_secs(30))).await?.batch.ok_or("c again")?;
    assert_eq!((again.events[0].key.as_str(), again.events[0].claims), ("c", 1));
    Ok(())
}

#[tokio::test]
async fn poison_and_exhausted_events_are_dead_lettered_and_can_be_replayed() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let ds = dataset(&catalog, "events").await?;
    let ack = ingest(&catalog, ds, &["good", "bad"]).await?;
    let batch = catalog.claim_ingest(&claim_options(Duration::from_secs(30))).await?.batch.ok_or("batch")?;
    let bad = batch.events.iter().find(|e| e.key == "bad").ok_or("bad")?.seq;
    let good = batch.events.iter().find(|e| e.key == "good").ok_or("good")?.seq;
    let commit = IngestCommit {
        committed: vec![good],
        poison: vec![PoisonEvent { seq: bad, error_code: "conversion_failed".into(), message: "field day".into() }],
        ..commit_of(&batch, "events/ingest/1.parquet")
    };
    catalog.commit_ingest(&IngestCommit { files: vec![file("events/ingest/1.parquet", 1)], ..commit }).await?;
    assert!(catalog.visible_at(ds, ack.visibility_token).await?, "a parked event does not hold the barrier");

    let letters =
        catalog.dead_letters(&DeadLetterFilter { dataset: Some(ds), limit: 10, ..Default::default() }).await?;
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].key.as_deref(), letters[0].error_code.as_str()), (Some("bad"), "conversion_failed"));
    assert_eq!(ingest(&catalog, ds, &["bad"]).await?.duplicates, 1, "a parked key still dedupes");

    // Replay with a corrected record: pending again, then committed.
    let fixed = json!({"id": "bad", "fixed": true});
    assert_eq!(catalog.replay_dead_letters(&[letters[0].id, 999], Some(&fixed)).await?, [letters[0].id]);
    assert!(catalog.replay_dead_letters(&[letters[0].id], None).await?.is_empty(), "replayed once");
    let replayed = catalog.claim_ingest(&claim_options(Duration::from_secs(30))).await?.batch.ok_or("replayed")?;
    assert_eq!((replayed.events.len(), &replayed.events[0].payload), (1, &fixed));
    catalog.commit_ingest(&commit_of(&replayed, "events/ingest/2.parquet")).await?;
    assert!(
        catalog
            .dead_letters(&DeadLetterFilter { dataset: Some(ds), limit: 10, ..Default::default() })
            .await?
            .is_empty()
    );

    // An event whose claims keep expiring is parked instead of claimed forever.
    ingest(&catalog, ds, &["crashy"]).await?;
    let options = ClaimOptions { max_events: 10, lease: Duration::from_millis(50), max_claims: 2 };
    for _ in 0..2 {
        let claim = catalog.claim_ingest(&options).await?;
        assert_eq!((claim.batch.map(|b| b.events.len()), claim.exhausted), (Some(1), 0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = catalog.claim_ingest(&options).await?;
    assert!(last.batch.is_none(), "the event was parked, not claimed a third time");
    assert_eq!(last.exhausted, 1, "the claim that parked it counts it, though it claimed nothing");
    let letters =
        catalog.dead_letters(&DeadLetterFilter { dataset: Some(ds), limit: 10, ..Default::default() }).await?;
    assert_eq!(letters[0].error_code, "claim_attempts_exhausted");
    Ok(())
}

#[tokio::test]
async fn read_only_mode_refuses_ingest_and_every_commit_until_turned_off() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let ds = dataset(&catalog, "events").await?;
    ingest(&catalog, ds, &["a"]).await?;
    let batch = catalog.claim_ingest(&claim_options(Duration::from_secs(30))).await?.batch.ok_or("batch")?;
    let ids = job(&catalog, &job_spec("load", vec![task("t", &[], Some(ds))])).await?;
    let leased = lease(&catalog, id_of(&ids, "t")).await?;

    let state = catalog.set_read_only(true, Some("restore in progress"), "test").await?;
    assert!(state.enabled);
    let refused = ingest(&catalog, ds, &["b"]).await.expect_err("read-only");
    assert_eq!(refused.error_code(), "read_only");
    assert!(refused.to_string().contains("restore in progress"), "{refused}");
    let error = catalog.commit_ingest(&commit_of(&batch, "events/ingest/1.parquet")).await.expect_err("read-only");
    assert_eq!(error.error_code(), "read_only");
    let error = catalog.commit(leased.attempt_ref(), &append(ds, vec![file("events/t.parquet", 1)])).await;
    assert_eq!(error.expect_err("read-only").error_code(), "read_only");
    assert_eq!(catalog.dataset(ds).await?.current_snapshot, None, "nothing was written");

    catalog.set_read_only(false, None, "test").await?;
    catalog.commit_ingest(&commit_of(&batch, "events/ingest/1.parquet")).await?;
    catalog.commit(leased.attempt_ref(), &append(ds, vec![file("events/t.parquet", 1)])).await?;
    assert_eq!(ingest(&catalog, ds, &["b"]).await?.accepted, 1);
    Ok(())
}

/// A refused ingest gives its connection back before anything else: it once looked up the
/// switch's reason on a second pooled connection while its transaction still held the first,
/// so a burst of refused posts as large as the pool held every connection and waited for one
/// more (the drill's queries during read-only then failed with `catalog_unavailable`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_ingest_bursts_do_not_hold_the_pool_and_reads_go_on() -> Result<(), BoxError> {
    let (db, setup_catalog) = setup().await?;
    let ds = dataset(&setup_catalog, "events").await?;
    let mut options = ConnectOptions::new(db.url());
    options.max_connections = 2;
    options.acquire_timeout = Duration::from_secs(3);
    let catalog = Catalog::connect(&options, fast_config()).await?;
    catalog.set_read_only(true, Some("drill"), "test").await?;

    let burst: Vec<_> = (0..64)
        .map(|n| {
            let catalog = catalog.clone();
            tokio::spawn(async move { ingest(&catalog, ds, &[&format!("k{n}")]).await })
        })
        .collect();
    tokio::task::yield_now().await;
    let read = catalog.dataset(ds).await.map_err(|error| format!("a read during the burst: {error}"))?;
    assert_eq!(read.current_snapshot, None);
    for refused in burst {
        let error = refused.await?.expect_err("read-only");
        assert_eq!(error.error_code(), "read_only", "{error}");
        assert!(error.to_string().contains("drill"), "the refusal names the reason: {error}");
    }
    assert!(event_states(&catalog, ds).await?.is_empty(), "nothing was stored");
    Ok(())
}

#[tokio::test]
async fn read_only_refusals_do_not_use_up_attempts_and_no_task_starts_meanwhile() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let ds = dataset(&catalog, "events").await?;
    let mut only_once = task("t", &[], Some(ds));
    only_once.max_attempts = Some(1);
    let t = id_of(&job(&catalog, &job_spec("load", vec![only_once])).await?, "t");
    let first = lease(&catalog, t).await?;

    catalog.set_read_only(true, Some("restore in progress"), "test").await?;
    let refused = catalog.commit(first.attempt_ref(), &append(ds, vec![file("events/1.parquet", 1)])).await;
    let refused = refused.expect_err("read-only");
    let failure =
        Failure { code: refused.error_code().into(), message: refused.to_string(), retryable: refused.is_retryable() };
    assert!(failure.is_read_only_refusal());
    let outcome = catalog.fail_attempt(first.attempt_ref(), &failure).await?;
    assert!(matches!(outcome, FailOutcome::Retrying { .. }), "the only attempt was given back: {outcome:?}");
    let waiting = catalog.task(t).await?;
    assert_eq!((waiting.phase, waiting.attempts), (TaskPhase::Retrying, 0));
    assert_eq!(waiting.last_error_code.as_deref(), Some("read_only"));
    // past the retry time (20-150 ms in the test config) the task still does not start
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(catalog.lease_task(t, "test", Duration::from_secs(30)).await?.is_none(), "no lease while read-only");

    catalog.set_read_only(false, None, "test").await?;
    let second = lease(&catalog, t).await?;
    assert_eq!(second.number, 2, "attempt numbers still count every try");
    catalog.commit(second.attempt_ref(), &append(ds, vec![file("events/2.parquet", 1)])).await?;
    let done = catalog.task(t).await?;
    assert_eq!((done.phase, done.attempts), (TaskPhase::Succeeded, 1));
    let history = catalog.attempts_of_task(t).await?;
    let codes: Vec<_> = history.iter().map(|a| (a.number, a.error_code.as_deref())).collect();
    assert_eq!(codes, [(1, Some("read_only")), (2, None)]);
    Ok(())
}

#[tokio::test]
async fn a_full_buffer_refuses_new_records_and_stores_nothing() -> Result<(), BoxError> {
    let (_db, catalog) = setup().await?;
    let ds = dataset(&catalog, "events").await?;
    let bounded = |keys: &'static [&'static str]| {
        let catalog = catalog.clone();
        async move {
            let records = records(keys);
            catalog
                .ingest(IngestRequest {
                    dataset: ds,
                    tenant: "acme",
                    records: &records,
                    traceparent: None,
                    max_pending: Some(3),
                })
                .await
        }
    };
    assert_eq!(bounded(&["a", "b"]).await?.accepted, 2);
    let error = bounded(&["c", "d"]).await.expect_err("2 pending + 2 > 3");
    assert_eq!(error.error_code(), "ingest_buffer_full");
    assert_eq!(bounded(&["c"]).await?.accepted, 1);
    assert_eq!(event_states(&catalog, ds).await?.len(), 3, "the refused request stored nothing");
    let backlog = catalog.ingest_backlog().await?;
    assert_eq!(backlog.pending, 3);
    assert!(backlog.oldest_pending_ms >= 0);
    // Malformed records are refused before anything is stored.
    let bad = [IngestRecord { key: String::new(), payload: json!({}) }];
    let error = catalog
        .ingest(IngestRequest { dataset: ds, tenant: "acme", records: &bad, traceparent: None, max_pending: None })
        .await
        .expect_err("empty key");
    assert_eq!(error.error_code(), "invalid_spec");
    Ok(())
}
