//! The manifest an ingest batch writes next to its Parquet files (SPEC §2.8): which dataset,
//! which claim (fence) and which events, the columns, and every file with its size, row count
//! and SHA-256 — enough to rebuild the catalog's file list of the batch's snapshot from the
//! bucket alone, and to verify every file.

use chrono::{DateTime, Utc};
use duckmesh_catalog::Column;
use duckmesh_contracts::manifest::{ManifestDataset, ManifestFile};
use serde::{Deserialize, Serialize};

/// The format tag of this manifest version.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
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
}
