//! The manifests written next to committed data files (SPEC §2.8): an attempt's
//! ([`Manifest`], by the worker) and an ingest batch's ([`IngestManifest`], by the
//! coordinator). Each is enough to rebuild the catalog's file list for its commit from the
//! bucket alone, and to verify every file; [`AnyManifest`] reads either back.

use crate::Column;
use crate::commit::{CommitMode, NewFile};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The format tag of this manifest version.
pub const MANIFEST_FORMAT: &str = "duckmesh.manifest/v1";

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// The output dataset.
    pub dataset: ManifestDataset,
    /// `append` or `overwrite`.
    pub mode: CommitMode,
    /// The task that produced the files.
    pub task: ManifestTask,
    /// The attempt that produced them.
    pub attempt: ManifestAttempt,
    /// The output dataset's latest snapshot when the attempt started (the commit's actual
    /// parent is recorded in the catalog).
    pub parent_snapshot: Option<i64>,
    /// The input snapshots the SQL read.
    pub inputs: Vec<ManifestInput>,
    /// The result's columns (DuckDB type names).
    pub schema: Vec<Column>,
    /// The data files.
    pub files: Vec<ManifestFile>,
    /// For a compaction: the files the new ones replace (their rows, exactly). Empty for a
    /// task's output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<String>,
    /// Rows in all files.
    pub rows: i64,
    /// Bytes in all files.
    pub bytes: i64,
    /// When the manifest was written.
    pub created_at: DateTime<Utc>,
}

/// The output dataset in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestDataset {
    /// Catalog id.
    pub id: i64,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// The task in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTask {
    /// Catalog id.
    pub id: i64,
    /// Its job's catalog id, if any.
    pub job: Option<i64>,
    /// Namespace.
    pub namespace: String,
    /// Node name.
    pub name: String,
}

/// The attempt in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestAttempt {
    /// Catalog id.
    pub id: i64,
    /// 1-based number within the task.
    pub number: u32,
    /// Fencing token.
    pub fence: i64,
}

/// One input in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestInput {
    /// Dataset name.
    pub dataset: String,
    /// The snapshot read (`None`: the dataset had none; the SQL saw an empty relation).
    pub snapshot: Option<i64>,
    /// Files read.
    pub files: usize,
}

/// One data file in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Object key, relative to the store's root (the same path the catalog records).
    pub path: String,
    /// Size in bytes.
    pub bytes: i64,
    /// Rows.
    pub rows: i64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
    /// Partition values, for a partitioned dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<serde_json::Value>,
}

impl From<&NewFile> for ManifestFile {
    fn from(file: &NewFile) -> Self {
        Self {
            path: file.path.clone(),
            bytes: file.bytes,
            rows: file.rows,
            sha256: file.sha256.clone(),
            partition: file.partition.clone(),
        }
    }
}

// --- The manifest of an ingest batch, written by the coordinator. ---

/// The format tag of an ingest batch's manifest.
pub const INGEST_MANIFEST_FORMAT: &str = "duckmesh.ingest-manifest/v1";

/// `<dataset>/ingest/<fence>/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestManifest {
    /// Always [`INGEST_MANIFEST_FORMAT`].
    pub format: String,
    /// The dataset written.
    pub dataset: ManifestDataset,
    /// The claim's fencing token (also the batch's directory name).
    pub fence: i64,
    /// The coordinator replica that wrote the batch.
    pub coordinator: String,
    /// The events whose rows are in the files.
    pub events: ManifestEvents,
    /// The files' columns (the dataset's schema).
    pub schema: Vec<Column>,
    /// The data files.
    pub files: Vec<ManifestFile>,
    /// Rows in all files.
    pub rows: i64,
    /// Bytes in all files.
    pub bytes: i64,
    /// When the manifest was written.
    pub created_at: DateTime<Utc>,
}

/// The events of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEvents {
    /// Lowest buffer position (`seq`) of an event written.
    pub first_seq: i64,
    /// Highest buffer position of an event written.
    pub last_seq: i64,
    /// Events written (one row each).
    pub committed: u64,
    /// Events of the claim parked in the dead-letter table instead.
    pub dead_lettered: u64,
}

/// A manifest read back from the bucket, whichever component wrote it.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyManifest {
    /// An attempt's ([`MANIFEST_FORMAT`]).
    Attempt(Box<Manifest>),
    /// An ingest batch's ([`INGEST_MANIFEST_FORMAT`]).
    Ingest(Box<IngestManifest>),
}

/// A manifest that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable manifest: {message}")]
pub struct ManifestError {
    /// What is wrong.
    pub message: String,
}

impl AnyManifest {
    /// Parses a manifest by its `format` tag.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        #[derive(Deserialize)]
        struct Tag {
            format: String,
        }
        let failed = |error: serde_json::Error| ManifestError { message: error.to_string() };
        let tag: Tag = serde_json::from_slice(bytes).map_err(failed)?;
        match tag.format.as_str() {
            MANIFEST_FORMAT => Ok(Self::Attempt(Box::new(serde_json::from_slice(bytes).map_err(failed)?))),
            INGEST_MANIFEST_FORMAT => Ok(Self::Ingest(Box::new(serde_json::from_slice(bytes).map_err(failed)?))),
            other => Err(ManifestError { message: format!("unknown format {other:?}") }),
        }
    }

    /// The dataset the files were committed to.
    pub fn dataset(&self) -> &ManifestDataset {
        match self {
            Self::Attempt(manifest) => &manifest.dataset,
            Self::Ingest(manifest) => &manifest.dataset,
        }
    }

    /// The data files.
    pub fn files(&self) -> &[ManifestFile] {
        match self {
            Self::Attempt(manifest) => &manifest.files,
            Self::Ingest(manifest) => &manifest.files,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            dataset: ManifestDataset { id: 3, namespace: "default".into(), name: "trips".into() },
            mode: CommitMode::Append,
            task: ManifestTask { id: 7, job: Some(2), namespace: "default".into(), name: "clean".into() },
            attempt: ManifestAttempt { id: 9, number: 1, fence: 12 },
            parent_snapshot: Some(4),
            inputs: vec![ManifestInput { dataset: "raw".into(), snapshot: Some(3), files: 2 }],
            schema: vec![Column { name: "id".into(), data_type: "BIGINT".into() }],
            files: vec![ManifestFile {
                path: "trips/attempts/7/1/part-00000.parquet".into(),
                bytes: 10,
                rows: 2,
                sha256: "0".repeat(64),
                partition: Some(serde_json::json!({"day": "2024-01-01"})),
            }],
            replaces: vec![],
            rows: 2,
            bytes: 10,
            created_at: Utc::now(),
        };
        let text = serde_json::to_string(&manifest).expect("serialise");
        assert!(text.contains("\"mode\":\"append\"") && text.contains("\"type\":\"BIGINT\""), "{text}");
        assert!(!text.contains("replaces"), "a task's manifest names no replaced files: {text}");
        let back: Manifest = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, manifest);
    }

    #[test]
    fn ingest_manifests_round_trip_through_json() {
        let manifest = IngestManifest {
            format: INGEST_MANIFEST_FORMAT.into(),
            dataset: ManifestDataset { id: 3, namespace: "default".into(), name: "clicks".into() },
            fence: 41,
            coordinator: "coordinator-0".into(),
            events: ManifestEvents { first_seq: 10, last_seq: 19, committed: 9, dead_lettered: 1 },
            schema: vec![Column { name: "id".into(), data_type: "BIGINT".into() }],
            files: vec![ManifestFile {
                path: "clicks/ingest/41/part-00000.parquet".into(),
                bytes: 100,
                rows: 9,
                sha256: "0".repeat(64),
                partition: None,
            }],
            rows: 9,
            bytes: 100,
            created_at: Utc::now(),
        };
        let text = serde_json::to_string(&manifest).expect("serialise");
        assert!(text.contains("\"format\":\"duckmesh.ingest-manifest/v1\""), "{text}");
        assert!(text.contains("\"first_seq\":10") && text.contains("\"type\":\"BIGINT\""), "{text}");
        let back: IngestManifest = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, manifest);
    }

    #[test]
    fn either_manifest_is_read_back_by_its_format() {
        let file = ManifestFile {
            path: "t/ingest/1/part-00000.parquet".into(),
            bytes: 1,
            rows: 1,
            sha256: "0".repeat(64),
            partition: None,
        };
        let ingest = IngestManifest {
            format: INGEST_MANIFEST_FORMAT.into(),
            dataset: ManifestDataset { id: 1, namespace: "default".into(), name: "t".into() },
            fence: 1,
            coordinator: "c".into(),
            events: ManifestEvents { first_seq: 1, last_seq: 1, committed: 1, dead_lettered: 0 },
            schema: vec![],
            files: vec![file.clone()],
            rows: 1,
            bytes: 1,
            created_at: Utc::now(),
        };
        let read = AnyManifest::parse(&serde_json::to_vec(&ingest).expect("json")).expect("parse");
        assert_eq!((read.dataset().name.as_str(), read.files()), ("t", std::slice::from_ref(&file)));
        let error = AnyManifest::parse(br#"{"format": "duckmesh.manifest/v9"}"#).expect_err("unknown");
        assert!(error.to_string().contains("unknown format"), "{error}");
        assert!(AnyManifest::parse(b"not json").is_err());
    }
}
