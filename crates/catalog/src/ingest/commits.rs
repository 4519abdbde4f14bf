//! Commits. [`Catalog::commit_ingest`] (the server-side function `duckmesh_ingest_commit`)
//! re-checks in one transaction that every event of the batch is still claimed under the fence,
//! parks the batch's poison events, appends the files as an `ingest` snapshot, advances the
//! visibility token and marks the events committed — or changes nothing.

use crate::commit::validate_new_files;
use crate::model::{Column, NewFile};
use crate::{Catalog, Error, Result};
use chrono::{DateTime, Utc};
use duckmesh_core::{DatasetId, Fence, SnapshotId};
use sqlx::Row;
use sqlx::types::Json;

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

impl Catalog {
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
}
