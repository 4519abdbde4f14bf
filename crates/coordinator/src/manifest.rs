//! The manifest an ingest batch writes next to its Parquet files (SPEC §2.8): which dataset,
//! which claim (fence) and which events, the columns, and every file with its size, row count
//! and SHA-256 — enough to rebuild the catalog's file list of the batch's snapshot from the
//! bucket alone, and to verify every file.

pub use duckmesh_contracts::manifest::{INGEST_MANIFEST_FORMAT, IngestManifest, ManifestEvents};
