//! The transactional outbox: side effects (events, status projections, notifications to other
//! systems) recorded in the same transaction as the state change that causes them, then
//! delivered at least once by a dispatcher that claims rows with `FOR UPDATE SKIP LOCKED`.
//!
//! Delivery retries back off 1 s → 5 min with jitter; after 20 failed deliveries a row becomes
//! `Failed`, is counted in metrics, and alerts (runbook `outbox-failed-rows.md`).

use crate::{Catalog, Result, seconds};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Postgres, Row, Transaction};
use std::time::Duration;

/// One claimed outbox row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxMessage {
    /// Row id.
    pub id: i64,
    /// What happened, e.g. `snapshot_committed`.
    pub kind: String,
    /// Event details.
    pub payload: serde_json::Value,
    /// Deliveries tried so far, including this one.
    pub attempts: u32,
    /// When the event was recorded.
    pub created_at: DateTime<Utc>,
}

/// Outbox figures for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Rows waiting for delivery.
    pub pending: i64,
    /// Age in seconds of the oldest pending row.
    pub oldest_pending_age_seconds: i64,
    /// Rows that exhausted their deliveries.
    pub failed: i64,
}

/// Records an event inside the caller's transaction.
pub(crate) async fn enqueue_in(
    tx: &mut Transaction<'_, Postgres>,
    kind: &str,
    payload: &serde_json::Value,
) -> Result<()> {
    sqlx::query("INSERT INTO outbox (kind, payload) VALUES ($1, $2)")
        .bind(kind)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Catalog {
    /// Records an event on its own.
    pub async fn enqueue_outbox(&self, kind: &str, payload: &serde_json::Value) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        enqueue_in(&mut tx, kind, payload).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims up to `limit` due rows for `visibility` (during which no other dispatcher sees
    /// them). A dispatcher that dies mid-delivery simply lets the claim run out.
    pub async fn claim_outbox(&self, limit: i64, visibility: Duration) -> Result<Vec<OutboxMessage>> {
        let rows = sqlx::query(
            "UPDATE outbox o SET attempts = o.attempts + 1, \
                 available_at = clock_timestamp() + make_interval(secs => $2) \
             FROM (SELECT id FROM outbox WHERE status = 'Pending' AND available_at <= clock_timestamp() \
                   ORDER BY available_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) due \
             WHERE o.id = due.id \
             RETURNING o.id, o.kind, o.payload, o.attempts, o.created_at",
        )
        .bind(limit.max(1))
        .bind(seconds(visibility))
        .fetch_all(&self.pool)
        .await?;
        let mut messages: Vec<OutboxMessage> = rows
            .iter()
            .map(|row| {
                let attempts: i32 = row.try_get("attempts")?;
                Ok(OutboxMessage {
                    id: row.try_get("id")?,
                    kind: row.try_get("kind")?,
                    payload: row.try_get("payload")?,
                    attempts: attempts as u32,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect::<Result<_>>()?;
        messages.sort_by_key(|m| m.id);
        Ok(messages)
    }

    /// Marks a delivered row done.
    pub async fn complete_outbox(&self, id: i64) -> Result<()> {
        sqlx::query(
            "UPDATE outbox SET status = 'Done', done_at = clock_timestamp() WHERE id = $1 AND status = 'Pending'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks delivered rows done, in one statement.
    pub async fn complete_outbox_batch(&self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE outbox SET status = 'Done', done_at = clock_timestamp() WHERE id = ANY ($1) AND status = 'Pending'",
        )
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed delivery: the row is offered again after a jittered backoff, or marked
    /// `Failed` once it has used all its deliveries. Returns whether it is now `Failed`.
    pub async fn fail_outbox(&self, id: i64, error: &str) -> Result<bool> {
        let attempts: Option<i32> =
            sqlx::query_scalar("SELECT attempts FROM outbox WHERE id = $1 AND status = 'Pending'")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let Some(attempts) = attempts else {
            return Ok(false);
        };
        let exhausted = attempts as u32 >= self.config.outbox_max_attempts;
        let delay = self.config.outbox_backoff.sample((attempts as u32).saturating_sub(1), &mut rand::rng());
        sqlx::query(
            "UPDATE outbox SET last_error = $2, \
                 status = CASE WHEN $3 THEN 'Failed' ELSE 'Pending' END, \
                 available_at = clock_timestamp() + make_interval(secs => $4) \
             WHERE id = $1 AND status = 'Pending'",
        )
        .bind(id)
        .bind(crate::truncate(error, 4_000))
        .bind(exhausted)
        .bind(seconds(delay))
        .execute(&self.pool)
        .await?;
        if exhausted {
            tracing::error!(outbox_id = id, error_code = "outbox_failed", attempts, "outbox row failed permanently");
        }
        Ok(exhausted)
    }

    /// Sends `Failed` rows back to `Pending` with a fresh delivery budget (after the cause is
    /// fixed; see the outbox runbook). Returns how many were requeued.
    pub async fn requeue_failed_outbox(&self) -> Result<u64> {
        let result = sqlx::query(
            "UPDATE outbox SET status = 'Pending', attempts = 0, available_at = clock_timestamp() WHERE status = 'Failed'",
        )
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// Depth, age and failures for metrics.
    pub async fn outbox_stats(&self) -> Result<OutboxStats> {
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE status = 'Pending') AS pending, \
                    coalesce(extract(epoch FROM clock_timestamp() - min(created_at) FILTER (WHERE status = 'Pending')), 0)::bigint AS oldest, \
                    count(*) FILTER (WHERE status = 'Failed') AS failed \
             FROM outbox WHERE status <> 'Done'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(OutboxStats {
            pending: row.try_get("pending")?,
            oldest_pending_age_seconds: row.try_get("oldest")?,
            failed: row.try_get("failed")?,
        })
    }
}
