//! Dead letters: events a coordinator parked (conversion failed, claims exhausted), listed
//! newest first and replayed — re-queued as pending, optionally with a corrected record.

use super::INGEST_CHANNEL;
use super::acks::{holds_nul, nul_refused};
use crate::{Catalog, Result};
use chrono::{DateTime, Utc};
use duckmesh_core::DatasetId;
use serde::Serialize;
use sqlx::Row;
use sqlx::types::Json;

/// A parked poison event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Dead-letter id (what `replay` takes).
    pub id: i64,
    /// The dataset's namespace.
    pub namespace: String,
    /// The dataset's name.
    pub dataset: String,
    /// The event's buffer position.
    pub seq: Option<i64>,
    /// The posting tenant.
    pub tenant: String,
    /// Dedupe key.
    pub key: Option<String>,
    /// The record as posted.
    pub payload: serde_json::Value,
    /// Why it was parked.
    pub error_code: String,
    /// Details, naming the field.
    pub error_message: String,
    /// When it was parked.
    pub created_at: DateTime<Utc>,
    /// When it was re-queued, if it was.
    pub replayed_at: Option<DateTime<Utc>>,
}

/// Which dead letters to list.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    /// Only this dataset.
    pub dataset: Option<DatasetId>,
    /// Also list replayed ones.
    pub include_replayed: bool,
    /// Most rows (newest first).
    pub limit: i64,
}

impl Catalog {
    /// Dead letters, newest first.
    pub async fn dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        let rows = sqlx::query(
            "SELECT l.id, d.namespace, d.name, l.seq, l.tenant, l.dedupe_key, l.payload, l.error_code, \
                    l.error_message, l.created_at, l.replayed_at \
               FROM dead_letters l JOIN datasets d ON d.id = l.dataset_id \
              WHERE ($1::bigint IS NULL OR l.dataset_id = $1) AND ($2 OR l.replayed_at IS NULL) \
              ORDER BY l.id DESC LIMIT $3",
        )
        .bind(filter.dataset.map(|d| d.0))
        .bind(filter.include_replayed)
        .bind(filter.limit.clamp(1, 100_000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetter {
                    id: row.try_get("id")?,
                    namespace: row.try_get("namespace")?,
                    dataset: row.try_get("name")?,
                    seq: row.try_get("seq")?,
                    tenant: row.try_get("tenant")?,
                    key: row.try_get("dedupe_key")?,
                    payload: row.try_get::<Json<serde_json::Value>, _>("payload")?.0,
                    error_code: row.try_get("error_code")?,
                    error_message: row.try_get("error_message")?,
                    created_at: row.try_get("created_at")?,
                    replayed_at: row.try_get("replayed_at")?,
                })
            })
            .collect()
    }

    /// Re-queues dead letters: their events become pending again (same dedupe key, a fresh
    /// claim count) with `payload` replacing the stored record when given, and the dead
    /// letters are marked replayed. Returns the ids replayed; ids that are unknown or already
    /// replayed are skipped.
    pub async fn replay_dead_letters(&self, ids: &[i64], payload: Option<&serde_json::Value>) -> Result<Vec<i64>> {
        if payload.is_some_and(holds_nul) {
            return Err(nul_refused("the replacement payload"));
        }
        let mut tx = self.pool.begin().await?;
        let replayed: Vec<i64> = sqlx::query_scalar(
            "WITH chosen AS ( \
                 UPDATE dead_letters SET replayed_at = clock_timestamp() \
                  WHERE id = ANY ($1) AND replayed_at IS NULL RETURNING id, dataset_id, seq), \
             requeued AS ( \
                 UPDATE ingest_events e \
                    SET dead_letter_id = NULL, claims = 0, claim_fence = NULL, claim_expires_at = NULL, \
                        payload = coalesce($2, e.payload), \
                        visibility_token = (SELECT visibility_token + 1 FROM datasets WHERE id = e.dataset_id) \
                   FROM chosen WHERE e.dataset_id = chosen.dataset_id AND e.seq = chosen.seq \
                    AND e.dead_letter_id = chosen.id \
                 RETURNING e.dataset_id) \
             SELECT id FROM chosen ORDER BY id",
        )
        .bind(ids)
        .bind(payload.map(Json))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        if !replayed.is_empty() {
            self.notify_relaxed(INGEST_CHANNEL, "replay").await;
        }
        Ok(replayed)
    }
}
