//! The catalog's own records in the bucket, from which `duckmesh catalog rebuild` restores a
//! lost catalog (docs/maintenance.md, "Catalog rebuild"):
//!
//! - a [`CommitRecord`] per committed snapshot, written by the outbox dispatcher after the
//!   commit (`_catalog/<namespace>/<dataset>/snapshots/<id>.json`): the dataset's identity and
//!   the snapshot's catalog row — what a manifest, written before the commit, cannot know (the
//!   snapshot id, its parent, its visibility token);
//! - a [`Checkpoint`] per garbage collection that expired snapshots
//!   (`_catalog/<namespace>/<dataset>/checkpoints/<id>.json`): the full file list of the oldest
//!   retained snapshot, written before GC deletes anything, so that the commit records (and
//!   manifests) of older snapshots may go.
//!
//! A rebuild starts each dataset from its newest checkpoint and replays the commit records
//! after it, reading each commit's manifest for the files it added.

use crate::Column;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The format tag of a commit record.
pub const COMMIT_RECORD_FORMAT: &str = "duckmesh.commit-record/v1";

/// The format tag of a checkpoint.
pub const CHECKPOINT_FORMAT: &str = "duckmesh.checkpoint/v1";

/// A dataset's identity as the catalog held it when the record was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedDataset {
    /// Catalog id (manifests name it; a rebuild keeps it).
    pub id: i64,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The resource's uid (tells incarnations of one name apart).
    pub uid: String,
    /// Last applied generation.
    pub generation: i64,
    /// Owning tenant.
    pub tenant: String,
    /// The Dataset's spec.
    pub spec: serde_json::Value,
    /// The columns every committed file matches, when known.
    pub schema: Option<Vec<Column>>,
}

/// One snapshot's catalog row (task and attempt links are not kept: jobs are not restored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedSnapshot {
    /// Snapshot id (per dataset, from 1).
    pub id: i64,
    /// The previous snapshot.
    pub parent: Option<i64>,
    /// Visibility token.
    pub visibility_token: i64,
    /// `append`, `overwrite`, `ingest` or `compact`.
    pub kind: String,
    /// Fencing token of the attempt or ingest claim that committed it.
    pub fence: Option<i64>,
    /// Files in the snapshot.
    pub file_count: i64,
    /// Rows in the snapshot.
    pub row_count: i64,
    /// Bytes in the snapshot.
    pub byte_count: i64,
    /// Files the commit added.
    pub added_files: i64,
    /// Files the commit retired.
    pub removed_files: i64,
    /// The manifest written with it.
    pub manifest_path: Option<String>,
    /// Commit time.
    pub committed_at: DateTime<Utc>,
    /// When retention expired it (only in a checkpoint's anchors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<DateTime<Utc>>,
}

/// `_catalog/<namespace>/<dataset>/snapshots/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// Always [`COMMIT_RECORD_FORMAT`].
    pub format: String,
    /// The dataset committed to.
    pub dataset: RecordedDataset,
    /// The snapshot committed.
    pub snapshot: RecordedSnapshot,
}

/// One file live at a checkpoint's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedFile {
    /// Object key.
    pub path: String,
    /// Size in bytes.
    pub bytes: i64,
    /// Rows.
    pub rows: i64,
    /// Lower-case hex SHA-256.
    pub sha256: String,
    /// Partition values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<serde_json::Value>,
    /// The snapshot that added it.
    pub added_in: i64,
}

/// `_catalog/<namespace>/<dataset>/checkpoints/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Always [`CHECKPOINT_FORMAT`].
    pub format: String,
    /// The dataset.
    pub dataset: RecordedDataset,
    /// The oldest retained snapshot.
    pub snapshot: RecordedSnapshot,
    /// The older (expired) snapshots that added a file still live at [`Checkpoint::snapshot`]:
    /// the catalog keeps their rows while such files remain.
    pub anchors: Vec<RecordedSnapshot>,
    /// Every file live at [`Checkpoint::snapshot`], by path.
    pub files: Vec<RecordedFile>,
    /// When the checkpoint was written.
    pub created_at: DateTime<Utc>,
}

/// A record that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable catalog record: {message}")]
pub struct RecordError {
    /// What is wrong.
    pub message: String,
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], expected: &str) -> Result<T, RecordError> {
    #[derive(Deserialize)]
    struct Tag {
        format: String,
    }
    let failed = |error: serde_json::Error| RecordError { message: error.to_string() };
    let tag: Tag = serde_json::from_slice(bytes).map_err(failed)?;
    if tag.format != expected {
        return Err(RecordError { message: format!("format {:?}, expected {expected:?}", tag.format) });
    }
    serde_json::from_slice(bytes).map_err(failed)
}

impl CommitRecord {
    /// Parses a commit record, checking its format tag.
    pub fn parse(bytes: &[u8]) -> Result<Self, RecordError> {
        parse(bytes, COMMIT_RECORD_FORMAT)
    }
}

impl Checkpoint {
    /// Parses a checkpoint, checking its format tag.
    pub fn parse(bytes: &[u8]) -> Result<Self, RecordError> {
        parse(bytes, CHECKPOINT_FORMAT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset() -> RecordedDataset {
        RecordedDataset {
            id: 3,
            namespace: "default".into(),
            name: "orders".into(),
            uid: "u".into(),
            generation: 1,
            tenant: "default".into(),
            spec: serde_json::json!({}),
            schema: Some(vec![Column { name: "id".into(), data_type: "BIGINT".into() }]),
        }
    }

    fn snapshot() -> RecordedSnapshot {
        RecordedSnapshot {
            id: 2,
            parent: Some(1),
            visibility_token: 2,
            kind: "append".into(),
            fence: Some(9),
            file_count: 2,
            row_count: 10,
            byte_count: 100,
            added_files: 1,
            removed_files: 0,
            manifest_path: Some("orders/attempts/t/1/manifest.json".into()),
            committed_at: Utc::now(),
            expired_at: None,
        }
    }

    #[test]
    fn records_round_trip_and_check_their_format() {
        let record = CommitRecord { format: COMMIT_RECORD_FORMAT.into(), dataset: dataset(), snapshot: snapshot() };
        let bytes = serde_json::to_vec(&record).expect("serializes");
        assert_eq!(CommitRecord::parse(&bytes).expect("parses"), record);
        assert!(Checkpoint::parse(&bytes).expect_err("not a checkpoint").message.contains("expected"));
        let checkpoint = Checkpoint {
            format: CHECKPOINT_FORMAT.into(),
            dataset: dataset(),
            snapshot: snapshot(),
            anchors: vec![],
            files: vec![RecordedFile {
                path: "orders/a.parquet".into(),
                bytes: 100,
                rows: 10,
                sha256: "0".repeat(64),
                partition: None,
                added_in: 1,
            }],
            created_at: Utc::now(),
        };
        let bytes = serde_json::to_vec(&checkpoint).expect("serializes");
        assert_eq!(Checkpoint::parse(&bytes).expect("parses"), checkpoint);
        assert!(CommitRecord::parse(b"{").is_err());
        assert!(CommitRecord::parse(b"{\"format\": 1}").is_err());
    }
}
