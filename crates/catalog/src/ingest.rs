//! The ingest buffer: durable acks, leased and fenced batch claims, the batch commit, dead
//! letters, the read-your-writes check and the emergency read-only switch.
//!
//! **Acks.** [`Catalog::ingest`] stores a request's records in one transaction; when it
//! returns, they are durable. Each record is keyed by its dedupe key, unique per dataset, so a
//! retried request stores nothing twice. The ack carries a *promised* visibility token: the
//! dataset's token plus one. A strict-barrier read at token `T` waits until the dataset's token
//! is at least `T` **and** no pending event promised at or below `T` is left
//! ([`Catalog::visible_at`]), so it always sees the acked records, whichever coordinator
//! commits them and in whatever order.
//!
//! **Claims.** A coordinator claims the oldest pending events of one dataset with
//! `FOR UPDATE SKIP LOCKED`, stamping them with a fresh fencing token and a lease. A crashed
//! coordinator's events become claimable again when the lease runs out; an event claimed too
//! many times is parked in the dead-letter table so it cannot stall its dataset.
//!
//! **Commits.** [`Catalog::commit_ingest`] (the server-side function `duckmesh_ingest_commit`)
//! re-checks in one transaction that every event of the batch is still claimed under the fence,
//! parks the batch's poison events, appends the files as an `ingest` snapshot, advances the
//! visibility token and marks the events committed — or changes nothing.

use crate::commit::validate_new_files;
use crate::model::{Column, NewFile};
use crate::{Catalog, Error, Result, seconds};
use chrono::{DateTime, Utc};
use duckmesh_core::{DatasetId, Fence, SnapshotId};
use serde::Serialize;
use sqlx::Row;
use sqlx::postgres::PgListener;
use sqlx::types::Json;
use std::collections::HashSet;
use std::time::Duration;

/// Channel notified after every ingest ack (payload: the dataset id), to wake coordinators.
pub const INGEST_CHANNEL: &str = "duckmesh_ingest";

pub use duckmesh_contracts::ingest::{IngestRecord, MAX_DEDUPE_KEY_BYTES};

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
    /// Events of other claims that ran out of claims and were dead-lettered by this call.
    pub exhausted: u64,
}

impl ClaimedBatch {
    /// Events that an earlier claim had taken and lost (a crashed or stalled coordinator).
    pub fn reclaimed(&self) -> usize {
        self.events.iter().filter(|event| event.claims > 1).count()
    }
}

/// An event that failed conversion, to be parked in the dead-letter table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoisonEvent {
    /// The event.
    pub seq: i64,
    /// Stable code of the failure.
    pub error_code: String,
    /// What failed, naming the field.
    pub message: String,
}

/// The commit of a claimed batch.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestCommit {
    /// The dataset.
    pub dataset: DatasetId,
    /// The claim's fence.
    pub fence: Fence,
    /// Events whose rows are in `files`.
    pub committed: Vec<i64>,
    /// Events to dead-letter.
    pub poison: Vec<PoisonEvent>,
    /// The Parquet files (empty only when every event is poison).
    pub files: Vec<NewFile>,
    /// Where the batch's manifest was written.
    pub manifest_path: Option<String>,
    /// The files' columns, spelled as the dataset stores them (compared verbatim).
    pub schema: Option<Vec<Column>>,
}

/// The outcome of a batch commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestCommitted {
    /// The new snapshot (`None` when every event was dead-lettered).
    pub snapshot: Option<SnapshotId>,
    /// The dataset's new visibility token.
    pub visibility_token: Option<i64>,
    /// When it committed (catalog clock).
    pub committed_at: DateTime<Utc>,
}

/// Buffer figures for metrics and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IngestBacklog {
    /// Acked events not yet committed nor dead-lettered.
    pub pending: i64,
    /// Milliseconds since the oldest of them was acked.
    pub oldest_pending_ms: i64,
}

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

/// The emergency read-only switch as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadOnlyState {
    /// Whether ingest and commits are refused.
    pub enabled: bool,
    /// Why it was last changed.
    pub reason: Option<String>,
    /// Who last changed it.
    pub changed_by: Option<String>,
    /// When it was last changed (`None`: never).
    pub changed_at: Option<DateTime<Utc>>,
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
        if head.try_get::<bool, _>("read_only")? {
            return Err(self.read_only_error().await);
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

    /// Claims up to `options.max_events` of the oldest claimable events of one dataset (the one
    /// whose oldest claimable event is oldest), or returns `None` when there are none.
    /// Concurrent coordinators never claim the same event: rows are taken with
    /// `FOR UPDATE SKIP LOCKED` and stamped with a fresh fence and an expiry.
    pub async fn claim_ingest(&self, options: &ClaimOptions) -> Result<Option<ClaimedBatch>> {
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
            return Ok(None);
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
        Ok(Some(ClaimedBatch { dataset, fence: Fence(fence), expires_at, events, exhausted }))
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

    /// Whether the commit of `commit` landed after all, when its outcome was lost with the
    /// connection: its events carry a snapshot committed under its fence, or, for a batch of
    /// poison only, they are dead-lettered. `None`: it did not land (or cannot be told), and
    /// the events are still pending or claimed.
    pub async fn ingest_commit_landed(&self, commit: &IngestCommit) -> Result<Option<IngestCommitted>> {
        let Some(seq) = commit.committed.first().or(commit.poison.first().map(|p| &p.seq)) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT e.snapshot_id, e.committed_at, e.dead_letter_id IS NOT NULL AS parked, s.fence, \
                    s.visibility_token, clock_timestamp() AS now \
               FROM ingest_events e \
               LEFT JOIN snapshots s ON s.dataset_id = e.dataset_id AND s.id = e.snapshot_id \
              WHERE e.dataset_id = $1 AND e.seq = $2",
        )
        .bind(commit.dataset.0)
        .bind(*seq)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let now: DateTime<Utc> = row.try_get("now")?;
        if commit.committed.is_empty() {
            let parked: bool = row.try_get("parked")?;
            return Ok(parked.then_some(IngestCommitted { snapshot: None, visibility_token: None, committed_at: now }));
        }
        let fence: Option<i64> = row.try_get("fence")?;
        if fence != Some(commit.fence.0) {
            return Ok(None);
        }
        let snapshot: Option<i64> = row.try_get("snapshot_id")?;
        let committed_at: Option<DateTime<Utc>> = row.try_get("committed_at")?;
        Ok(Some(IngestCommitted {
            snapshot: snapshot.map(SnapshotId),
            visibility_token: row.try_get("visibility_token")?,
            committed_at: committed_at.unwrap_or(now),
        }))
    }

    /// Commits a claimed batch (one transaction, see the module docs). Fails with
    /// `claim_lost` when any event is no longer claimed under the fence (its claim expired and
    /// another coordinator may have it), `read_only`, or `schema_mismatch` (`commit.schema`
    /// differs from the dataset's stored columns, compared as written); nothing changes then.
    pub async fn commit_ingest(&self, commit: &IngestCommit) -> Result<IngestCommitted> {
        validate_new_files(&commit.files)?;
        if commit.files.is_empty() != commit.committed.is_empty() {
            return Err(Error::Invalid {
                what: "ingest commit",
                message: "committed events need files and files need committed events".into(),
            });
        }
        // Stored schemas are canonical (declared or committed), so this one is made so too.
        let schema = commit.schema.as_deref().map(crate::commit::normalized);
        let paths: Vec<&str> = commit.files.iter().map(|f| f.path.as_str()).collect();
        let sizes: Vec<i64> = commit.files.iter().map(|f| f.bytes).collect();
        let counts: Vec<i64> = commit.files.iter().map(|f| f.rows).collect();
        let hashes: Vec<&str> = commit.files.iter().map(|f| f.sha256.as_str()).collect();
        let partitions: Vec<Option<String>> =
            commit.files.iter().map(|f| f.partition.as_ref().map(|p| p.to_string())).collect();
        let dead_seqs: Vec<i64> = commit.poison.iter().map(|p| p.seq).collect();
        let dead_codes: Vec<&str> = commit.poison.iter().map(|p| p.error_code.as_str()).collect();
        let dead_messages: Vec<&str> = commit.poison.iter().map(|p| p.message.as_str()).collect();
        let row = sqlx::query(
            "SELECT status, snapshot_id, token, committed_at, existing_schema \
             FROM duckmesh_ingest_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(commit.dataset.0)
        .bind(commit.fence.0)
        .bind(&commit.committed)
        .bind(&dead_seqs)
        .bind(&dead_codes)
        .bind(&dead_messages)
        .bind(&paths)
        .bind(&sizes)
        .bind(&counts)
        .bind(&hashes)
        .bind(&partitions)
        .bind(&commit.manifest_path)
        .bind(schema.as_ref().map(Json))
        .fetch_one(&self.pool)
        .await
        .map_err(|error| match error {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => Error::Invalid {
                what: "ingest commit",
                message: "a file path of this batch is already part of the dataset".into(),
            },
            other => other.into(),
        })?;
        let status: String = row.try_get("status")?;
        match status.as_str() {
            "ok" => {
                let committed = IngestCommitted {
                    snapshot: row.try_get::<Option<i64>, _>("snapshot_id")?.map(SnapshotId),
                    visibility_token: row.try_get("token")?,
                    committed_at: row.try_get("committed_at")?,
                };
                if let (Some(snapshot), Some(token)) = (committed.snapshot, committed.visibility_token) {
                    self.notify_commit(&crate::Committed {
                        dataset: commit.dataset,
                        snapshot,
                        parent: None,
                        visibility_token: token,
                    })
                    .await;
                }
                Ok(committed)
            }
            "fenced" => Err(Error::ClaimLost { dataset: commit.dataset, fence: commit.fence }),
            "read_only" => Err(self.read_only_error().await),
            "no_dataset" => Err(Error::NotFound { what: format!("dataset {}", commit.dataset) }),
            "schema_mismatch" => {
                let existing: Option<Json<Vec<Column>>> = row.try_get("existing_schema")?;
                let existing = existing.map(|json| json.0).unwrap_or_default();
                let message = crate::schema_difference(&existing, schema.as_deref().unwrap_or_default())
                    .unwrap_or_else(|| "columns differ".to_owned());
                Err(Error::SchemaMismatch { dataset: commit.dataset, message })
            }
            other => Err(Error::Corrupt(format!("duckmesh_ingest_commit returned status {other:?}"))),
        }
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

    /// Pending events and the age of the oldest, over every dataset.
    pub async fn ingest_backlog(&self) -> Result<IngestBacklog> {
        let (pending, oldest): (i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*), extract(epoch FROM clock_timestamp() - min(received_at))::float8 * 1000 \
             FROM ingest_events WHERE snapshot_id IS NULL AND dead_letter_id IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(IngestBacklog { pending, oldest_pending_ms: oldest.map_or(0, |ms| ms.max(0.0) as i64) })
    }

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

    /// The read-only switch.
    pub async fn read_only(&self) -> Result<ReadOnlyState> {
        let row = sqlx::query(
            "SELECT enabled, reason, changed_by, changed_at FROM catalog_switches WHERE name = 'read_only'",
        )
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Ok(ReadOnlyState { enabled: false, reason: None, changed_by: None, changed_at: None }),
            Some(row) => Ok(ReadOnlyState {
                enabled: row.try_get("enabled")?,
                reason: row.try_get("reason")?,
                changed_by: row.try_get("changed_by")?,
                changed_at: row.try_get("changed_at")?,
            }),
        }
    }

    /// Turns read-only mode on or off for every process using this catalog, at once.
    pub async fn set_read_only(&self, enabled: bool, reason: Option<&str>, changed_by: &str) -> Result<ReadOnlyState> {
        sqlx::query(
            "INSERT INTO catalog_switches (name, enabled, reason, changed_by, changed_at) \
             VALUES ('read_only', $1, $2, $3, clock_timestamp()) \
             ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled, reason = excluded.reason, \
                 changed_by = excluded.changed_by, changed_at = excluded.changed_at",
        )
        .bind(enabled)
        .bind(reason)
        .bind(changed_by)
        .execute(&self.pool)
        .await?;
        self.read_only().await
    }

    /// Starts listening for ingest acks and replays (before reading state, so nothing falls in
    /// between).
    pub async fn listen_ingest(&self) -> Result<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(INGEST_CHANNEL).await?;
        Ok(listener)
    }

    pub(crate) async fn read_only_error(&self) -> Error {
        let reason = self.read_only().await.ok().and_then(|state| state.reason);
        Error::ReadOnly { reason }
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
fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(map) => map.iter().any(|(key, item)| key.contains('\0') || holds_nul(item)),
        _ => false,
    }
}

fn nul_refused(what: &str) -> Error {
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
