//! The manifest an attempt writes next to its data files (SPEC §2.8): enough to rebuild the
//! catalog's file list for the commit from the bucket alone, and to verify every file.

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
            rows: 2,
            bytes: 10,
            created_at: Utc::now(),
        };
        let text = serde_json::to_string(&manifest).expect("serialise");
        assert!(text.contains("\"mode\":\"append\"") && text.contains("\"type\":\"BIGINT\""), "{text}");
        let back: Manifest = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, manifest);
    }
}
