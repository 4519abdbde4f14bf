//! DuckMesh's worker: runs exactly one leased attempt of a `sql` task.
//!
//! The attempt confirms its lease, heartbeats in the background, pins every input dataset to a
//! committed snapshot and fetches its files into a content-addressed local cache, runs the
//! task's SQL in a fresh in-process DuckDB, writes the result as ZSTD Parquet (split by target
//! file size and by the output dataset's partition columns) plus a `manifest.json` under the
//! attempt's staging prefix, and commits once through the catalog's fenced commit. A stale
//! fence stops the work at once and commits nothing. Failures are classified (permanent user
//! errors versus retryable infrastructure trouble) and reported to the catalog.
//!
//! DuckDB itself (the sandbox, views, export) is `duckmesh_engine`'s; the manifest format is
//! `duckmesh_contracts::manifest`. `duckmesh worker` is a thin command-line adapter over [`Worker::run`]; docs/worker.md
//! describes the task spec, environment, exit codes, cache and manifest.

mod cache;
mod config;
mod error;
mod run;

pub use cache::{Fetched, FileCache};
pub use config::{WorkerArgs, WorkerConfig};
pub use duckmesh_contracts::task::{
    DEFAULT_TARGET_FILE_SIZE_BYTES, DatasetOptions, EngineLimits, InputSpec, MIN_TARGET_FILE_SIZE_BYTES, Quantity,
    Resources, SpecError, SqlTaskSpec, parse_cpu, parse_memory,
};
pub use error::{Error, Result};
pub use run::{AttemptIdentity, CommitSummary, Outcome, Worker, exit, report_failure};
