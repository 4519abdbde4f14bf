//! DuckMesh's ingest coordinator: turns acknowledged ingest events into committed, queryable
//! Parquet snapshots, exactly once (SPEC §2.7).
//!
//! The query API stores each posted record durably in the catalog's `ingest_events` before it
//! acks. A [`Coordinator`] claims the oldest pending events of one dataset as a leased, fenced
//! batch, converts their JSON payloads to the dataset's column types in DuckDB, parks records
//! that do not convert in the dead-letter table, writes the rest as ZSTD Parquet plus a
//! manifest under `<dataset>/ingest/<fence>/`, and commits everything in one fenced catalog
//! transaction that advances the dataset's visibility token. A batch whose claim ran out can
//! never commit; its events are claimed again by whichever coordinator comes next. Any number
//! of replicas may run against one catalog.
//!
//! `duckmesh coordinator` is a thin command-line adapter over [`Coordinator::run`];
//! docs/coordinator.md describes guarantees, knobs, metrics and failure behaviour.

mod config;
mod convert;
mod coordinator;
mod error;
mod health;
mod manifest;
pub mod metrics;
pub mod outbox;

pub use config::{CoordinatorArgs, CoordinatorConfig};
pub use convert::{CONVERSION_FAILED, INVALID_DATASET_SPEC, INVALID_SCHEMA, SCHEMA_MISSING};
pub use coordinator::{BatchReport, Coordinator};
pub use error::{ConfigError, Error, Result};
pub use health::{health_router, serve};
pub use manifest::{INGEST_MANIFEST_FORMAT, IngestManifest, ManifestEvents};
pub use outbox::{DispatchReport, OutboxDispatcher, OutboxOptions};
