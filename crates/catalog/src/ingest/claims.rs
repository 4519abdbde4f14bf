//! Claims. A coordinator claims the oldest pending events of one dataset with
//! `FOR UPDATE SKIP LOCKED`, stamping them with a fresh fencing token and a lease. A crashed
//! coordinator's events become claimable again when the lease runs out; an event claimed too
//! many times is parked in the dead-letter table so it cannot stall its dataset.

use crate::{Catalog, Result, seconds};
use chrono::{DateTime, Utc};
use duckmesh_core::{DatasetId, Fence};
use sqlx::Row;
use sqlx::types::Json;
use std::time::Duration;

/// How a coordinator claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimOptions {
    /// Most events in one batch.
    pub max_events: u32,
    /// How long the claim holds before other coordinators may take the events.
    pub lease: Duration,
    /// Claims after which an event whose claim expired again is dead-lettered
    /// (`claim_attempts_exhausted`) instead of being claimed once more.
    pub max_claims: u32,
}

/// One claimed event.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedEvent {
    /// Position in the buffer (global order of acks).
    pub seq: i64,
    /// The posting tenant.
    pub tenant: String,
    /// Dedupe key.
    pub key: String,
    /// The record.
    pub payload: serde_json::Value,
    /// Trace context of the ingest request.
    pub traceparent: Option<String>,
    /// When it was acknowledged (catalog clock).
    pub received_at: DateTime<Utc>,
    /// How many times it has been claimed, this claim included.
    pub claims: u32,
}

/// A batch of one dataset's events, claimed under a fence.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedBatch {
    /// The dataset.
    pub dataset: DatasetId,
    /// The claim's fencing token; the commit must present it.
    pub fence: Fence,
    /// When the claim runs out (catalog clock).
    pub expires_at: DateTime<Utc>,
    /// The events, in `seq` order.
    pub events: Vec<ClaimedEvent>,
}

/// What one [`Catalog::claim_ingest`] call did.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestClaim {
    /// The batch it claimed; `None` when no event was claimable.
    pub batch: Option<ClaimedBatch>,
    /// Events of earlier, abandoned claims that ran out of claims and were dead-lettered
    /// (`claim_attempts_exhausted`) by this call, whether or not it then claimed a batch: when
    /// they were the last pending events there is no batch, but they were parked all the same.
    pub exhausted: u64,
}

impl ClaimedBatch {
    /// Events that an earlier claim had taken and lost (a crashed or stalled coordinator).
    pub fn reclaimed(&self) -> usize {
        self.events.iter().filter(|event| event.claims > 1).count()
    }
}

impl Catalog {
    /// Claims up to `options.max_events` of the oldest claimable events of one dataset (the one
    /// whose oldest claimable event is oldest); the claim's batch is `None` when there are none.
    /// Concurrent coordinators never claim the same event: rows are taken with
    /// `FOR UPDATE SKIP LOCKED` and stamped with a fresh fence and an expiry. In the same
    /// transaction, events whose claim ran out after `options.max_claims` claims are
    /// dead-lettered first; the claim counts them.
    pub async fn claim_ingest(&self, options: &ClaimOptions) -> Result<IngestClaim> {
        let mut tx = self.pool.begin().await?;
        let exhausted = sqlx::query(
            "WITH spent AS ( \
                 SELECT dataset_id, seq FROM ingest_events \
                  WHERE snapshot_id IS NULL AND dead_letter_id IS NULL AND claims >= $1 \
                    AND claim_expires_at <= clock_timestamp() \
                  ORDER BY seq LIMIT 1000 FOR UPDATE SKIP LOCKED), \
             parked AS ( \
                 INSERT INTO dead_letters (dataset_id, seq, tenant, dedupe_key, payload, error_code, error_message) \
                 SELECT e.dataset_id, e.seq, e.tenant, e.dedupe_key, e.payload, 'claim_attempts_exhausted', \
                        'claimed ' || e.claims || ' times without a commit (a coordinator crashed or stalled on it each time)' \
                   FROM ingest_events e JOIN spent USING (dataset_id, seq) \
                 RETURNING id, dataset_id, seq) \
             UPDATE ingest_events e SET dead_letter_id = parked.id, claim_fence = NULL, claim_expires_at = NULL \
               FROM parked WHERE e.dataset_id = parked.dataset_id AND e.seq = parked.seq",
        )
        .bind(i32::try_from(options.max_claims).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?
        .rows_affected();

        let fence: i64 = sqlx::query_scalar("SELECT nextval('fence_seq')").fetch_one(&mut *tx).await?;
        let rows = sqlx::query(
            "WITH pick AS ( \
                 SELECT dataset_id FROM ingest_events \
                  WHERE snapshot_id IS NULL AND dead_letter_id IS NULL \
                    AND (claim_expires_at IS NULL OR claim_expires_at <= clock_timestamp()) \
                  ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED), \
             batch AS ( \
                 SELECT e.dataset_id, e.seq FROM ingest_events e JOIN pick USING (dataset_id) \
                  WHERE e.snapshot_id IS NULL AND e.dead_letter_id IS NULL \
                    AND (e.claim_expires_at IS NULL OR e.claim_expires_at <= clock_timestamp()) \
                  ORDER BY e.seq LIMIT $1 FOR UPDATE OF e SKIP LOCKED) \
             UPDATE ingest_events e \
                SET claim_fence = $2, claim_expires_at = clock_timestamp() + make_interval(secs => $3), \
                    claims = e.claims + 1 \
               FROM batch WHERE e.dataset_id = batch.dataset_id AND e.seq = batch.seq \
             RETURNING e.dataset_id, e.seq, e.tenant, e.dedupe_key, e.payload, e.traceparent, e.received_at, \
                       e.claims, e.claim_expires_at",
        )
        .bind(i64::from(options.max_events.max(1)))
        .bind(fence)
        .bind(seconds(options.lease))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(first) = rows.first() else {
            return Ok(IngestClaim { batch: None, exhausted });
        };
        let dataset = DatasetId(first.try_get("dataset_id")?);
        let expires_at = first.try_get("claim_expires_at")?;
        let mut events = rows
            .iter()
            .map(|row| {
                Ok(ClaimedEvent {
                    seq: row.try_get("seq")?,
                    tenant: row.try_get("tenant")?,
                    key: row.try_get("dedupe_key")?,
                    payload: row.try_get::<Json<serde_json::Value>, _>("payload")?.0,
                    traceparent: row.try_get("traceparent")?,
                    received_at: row.try_get("received_at")?,
                    claims: u32::try_from(row.try_get::<i32, _>("claims")?).unwrap_or(0),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        events.sort_by_key(|event| event.seq);
        Ok(IngestClaim { batch: Some(ClaimedBatch { dataset, fence: Fence(fence), expires_at, events }), exhausted })
    }

    /// Gives a claimed batch back at once (its conversion failed for a reason outside the
    /// records), so the next claim need not wait for the lease. Fenced: a claim that was
    /// already lost is left alone.
    pub async fn release_ingest_claim(&self, dataset: DatasetId, fence: Fence) -> Result<u64> {
        let released = sqlx::query(
            "UPDATE ingest_events SET claim_expires_at = clock_timestamp(), claims = greatest(claims - 1, 0) \
             WHERE dataset_id = $1 AND claim_fence = $2 AND snapshot_id IS NULL AND dead_letter_id IS NULL",
        )
        .bind(dataset.0)
        .bind(fence.0)
        .execute(&self.pool)
        .await?;
        Ok(released.rows_affected())
    }
}
