//! Acks. [`Catalog::ingest`] stores a request's records in one transaction; when it returns,
//! they are durable. Each record is keyed by its dedupe key, unique per dataset, so a retried
//! request stores nothing twice. The ack carries a *promised* visibility token: the dataset's
//! token plus one. A strict-barrier read at token `T` waits until the dataset's token is at
//! least `T` **and** no pending event promised at or below `T` is left
//! ([`Catalog::visible_at`]), so it always sees the acked records, whichever coordinator
//! commits them and in whatever order.

use super::{INGEST_CHANNEL, IngestRecord, MAX_DEDUPE_KEY_BYTES};
use crate::{Catalog, Error, Result};
use duckmesh_core::DatasetId;
use serde::Serialize;
use sqlx::Row;
use std::collections::HashSet;

/// A request to buffer records durably.
#[derive(Debug, Clone, Copy)]
pub struct IngestRequest<'a> {
    /// The dataset.
    pub dataset: DatasetId,
    /// The posting tenant (recorded with each event).
    pub tenant: &'a str,
    /// The records, in request order.
    pub records: &'a [IngestRecord],
    /// W3C trace context of the request, kept so the commit can link to it.
    pub traceparent: Option<&'a str>,
    /// Pending (acked, uncommitted) events beyond which the request is refused.
    pub max_pending: Option<u64>,
}

/// A durable acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IngestAck {
    /// Records stored by this request.
    pub accepted: u64,
    /// Records whose key was already stored (by this request or an earlier one).
    pub duplicates: u64,
    /// Pass it as `min_visibility_token`: a read at this token sees every record of the
    /// request (the duplicates' first copies included).
    pub visibility_token: i64,
}

impl Catalog {
    /// Buffers `request.records` durably in one transaction and returns the ack. Records whose
    /// key is already stored are counted as duplicates and not stored again. Refused with
    /// `read_only` while read-only mode is on and with `ingest_buffer_full` when the dataset's
    /// pending events would exceed `max_pending`; nothing is stored then.
    pub async fn ingest(&self, request: IngestRequest<'_>) -> Result<IngestAck> {
        validate_records(request.records)?;
        let mut tx = self.pool.begin().await?;
        let limit = request.max_pending.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let head = sqlx::query(
            "SELECT d.visibility_token, duckmesh_read_only() AS read_only, \
                    (SELECT reason FROM catalog_switches WHERE name = 'read_only') AS read_only_reason, \
                    CASE WHEN $2::bigint IS NULL THEN 0 ELSE (SELECT count(*) FROM (SELECT 1 FROM ingest_events e \
                        WHERE e.dataset_id = d.id AND e.snapshot_id IS NULL AND e.dead_letter_id IS NULL \
                        LIMIT $2) p) END AS pending \
             FROM datasets d WHERE d.id = $1",
        )
        .bind(request.dataset.0)
        .bind(limit)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::NotFound { what: format!("dataset {}", request.dataset) })?;
        // The refusal's reason comes with the head row: looking it up on a second pooled
        // connection while this transaction holds one let a burst of refused posts as large as
        // the pool hold every connection and wait for one more, starving every other caller.
        if head.try_get::<bool, _>("read_only")? {
            return Err(Error::ReadOnly { reason: head.try_get("read_only_reason")? });
        }
        let pending: i64 = head.try_get("pending")?;
        let incoming = i64::try_from(request.records.len()).unwrap_or(i64::MAX);
        if let Some(limit) = limit
            && pending > 0
            && pending.saturating_add(incoming) > limit
        {
            return Err(Error::BufferFull { dataset: request.dataset, pending, limit });
        }
        let promised = head.try_get::<i64, _>("visibility_token")? + 1;

        let keys: Vec<&str> = request.records.iter().map(|r| r.key.as_str()).collect();
        let payloads: Vec<String> = request.records.iter().map(|r| r.payload.to_string()).collect();
        let inserted: Vec<String> = sqlx::query_scalar(
            "INSERT INTO ingest_events (dataset_id, tenant, dedupe_key, payload, traceparent, visibility_token) \
             SELECT $1, $2, u.key, u.payload::jsonb, $3, $4 \
               FROM unnest($5::text[], $6::text[]) WITH ORDINALITY AS u(key, payload, n) ORDER BY u.n \
             ON CONFLICT (dataset_id, dedupe_key) DO NOTHING RETURNING dedupe_key",
        )
        .bind(request.dataset.0)
        .bind(request.tenant)
        .bind(request.traceparent)
        .bind(promised)
        .bind(&keys)
        .bind(&payloads)
        .fetch_all(&mut *tx)
        .await?;

        let accepted = inserted.len() as u64;
        let mut token = if accepted > 0 { promised } else { 0 };
        if accepted < request.records.len() as u64 {
            // The duplicates' first copies: visible at their snapshot's token once committed,
            // at their own promise while pending.
            let stored: HashSet<&str> = inserted.iter().map(String::as_str).collect();
            let duplicates: Vec<&str> = keys.iter().copied().filter(|key| !stored.contains(key)).collect();
            let earlier: Option<i64> = sqlx::query_scalar(
                "SELECT max(coalesce(s.visibility_token, e.visibility_token)) FROM ingest_events e \
                 LEFT JOIN snapshots s ON s.dataset_id = e.dataset_id AND s.id = e.snapshot_id \
                 WHERE e.dataset_id = $1 AND e.dedupe_key = ANY ($2)",
            )
            .bind(request.dataset.0)
            .bind(&duplicates)
            .fetch_one(&mut *tx)
            .await?;
            token = token.max(earlier.unwrap_or(promised));
        }
        tx.commit().await?;
        if accepted > 0 {
            self.notify_relaxed(INGEST_CHANNEL, &request.dataset.0.to_string()).await;
        }
        Ok(IngestAck { accepted, duplicates: request.records.len() as u64 - accepted, visibility_token: token })
    }

    /// Whether a strict-barrier read of `dataset` at `token` may proceed: the dataset's token
    /// reached it and no acked event promised at or below it is still pending.
    pub async fn visible_at(&self, dataset: DatasetId, token: i64) -> Result<bool> {
        let visible: Option<bool> = sqlx::query_scalar("SELECT duckmesh_visible_at($1, $2)")
            .bind(dataset.0)
            .bind(token)
            .fetch_one(&self.pool)
            .await?;
        visible.ok_or_else(|| Error::NotFound { what: format!("dataset {dataset}") })
    }
}

fn validate_records(records: &[IngestRecord]) -> Result<()> {
    for (index, record) in records.iter().enumerate() {
        if record.key.is_empty() || record.key.len() > MAX_DEDUPE_KEY_BYTES {
            return Err(Error::Invalid {
                what: "ingest record",
                message: format!("record {index}: the dedupe key must be 1 to {MAX_DEDUPE_KEY_BYTES} bytes"),
            });
        }
        if !record.payload.is_object() {
            return Err(Error::Invalid {
                what: "ingest record",
                message: format!("record {index}: a record must be a JSON object"),
            });
        }
        if record.key.contains('\0') || holds_nul(&record.payload) {
            return Err(nul_refused(&format!("record {index}")));
        }
    }
    Ok(())
}

/// Whether a string or object key anywhere in `value` holds a NUL character, which
/// PostgreSQL's `text` and `jsonb` cannot store.
pub(super) fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(map) => map.iter().any(|(key, item)| key.contains('\0') || holds_nul(item)),
        _ => false,
    }
}

/// The refusal of a record (or replacement payload) that holds a NUL character.
pub(super) fn nul_refused(what: &str) -> Error {
    Error::Invalid {
        what: "ingest record",
        message: format!("{what} holds a NUL character (\\u0000), which the catalog cannot store"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_with_a_nul_are_refused_before_postgresql_sees_them() {
        let record = |key: &str, payload| IngestRecord { key: key.into(), payload };
        validate_records(&[record("a", json!({"v": "fine", "w": ["\\u0000 is text here"]}))]).expect("valid");
        for bad in
            [record("a\0", json!({})), record("a", json!({"v": "x\u{0}"})), record("a", json!({"v": [{"k\u{0}": 1}]}))]
        {
            let error = validate_records(&[record("ok", json!({})), bad]).expect_err("NUL");
            assert!(error.to_string().contains("record 1") && error.to_string().contains("NUL"), "{error}");
        }
    }
}
