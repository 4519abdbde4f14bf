//! Maintenance of committed data (SPEC §1's maintenance task kinds, §2 invariants 6 and 8).
//!
//! - [`integrity`]: catalog against bucket — every file a retained snapshot references exists
//!   with its size (and, with [`IntegrityOptions::verify_hashes`], its SHA-256), every
//!   snapshot's manifest agrees with the files the catalog says it added, and objects under a
//!   dataset's prefix that nothing references are reported as orphans. Each run is recorded in
//!   the catalog, where `GET /v1/integrity` and the metrics read it.
//! - [`gc`]: reference-aware garbage collection — snapshots expired by retention, files no
//!   retained snapshot references deleted after a grace, uncommitted staging and query exports
//!   after 7 days; before deleting, a [`checkpoint`] of the oldest retained snapshot.
//! - [`restore`]: snapshot consistency of a catalog restored from backup — ids and tokens
//!   increasing, heads on their newest snapshot, counts matching files, the bucket checked, and
//!   objects committed after the restore point told apart from damage.
//! - [`rebuild`]: a lost catalog rebuilt from the bucket — GC checkpoints, the commit records
//!   the outbox dispatcher writes, and the manifests next to every commit.
//! - [`export`]: a dataset as of a snapshot, as Parquet or CSV under `_exports/<namespace>/`,
//!   with a manifest.
//! - [`compact`]: one leased attempt of a `compact` task rewrites a dataset's small files into
//!   target-size files and commits them as one fenced `compact` snapshot.

pub mod checkpoint;
pub mod compact;
pub mod export;
pub mod gc;
pub mod integrity;
pub mod rebuild;
pub mod restore;

mod attempt;
mod error;
mod fetch;
mod runs;

pub use compact::{COMPACT_KIND, CompactSpec, CompactionOutcome, Compactor};
pub use error::{Error, RebuildFailure, Result};
pub use export::{EXPORT_KIND, EXPORTS_ROOT, ExportFormat, ExportReport, ExportRunner, ExportSpec};
pub use fetch::DEFAULT_TRANSFER_CONCURRENCY;
pub use gc::{
    GC_KIND, GcOptions, GcReport, GcRunner, GcSpec, MAX_GC_GRACE_SECONDS, QUERY_EXPORTS_ROOT, Retention,
    collect_dataset, collect_exports,
};
pub use integrity::{INTEGRITY_KIND, IntegrityOptions, IntegrityReport, IntegrityRunner, IntegritySpec, check_dataset};
pub use rebuild::{DatasetRebuild, RebuildOptions, RebuildProgress, RebuildReport, Unconfirmed, rebuild_catalog};
pub use restore::{ConsistencyReport, DatasetConsistency, Violation, ViolationKind, validate_restored_catalog};
pub use runs::record_failure;
