//! DuckMesh's query service (SPEC §4): snapshot-consistent, read-only SQL over committed
//! Parquet, served over HTTP by the query deployment.
//!
//! A query names datasets as tables. Each is resolved, for the caller's tenant, to a committed
//! snapshot (pinned by the request, or the latest, optionally behind a strict visibility
//! barrier); the snapshot's files are fetched into a local cache keyed by content hash and
//! checked against their recorded SHA-256; and a fresh DuckDB answers over views of exactly
//! those files, with file access, extensions and configuration locked down by DuckDB itself.
//! Results over the inline caps are exported as Parquet behind a presigned URL.
//!
//! ```no_run
//! # async fn example(catalog: duckmesh_catalog::Catalog, store: std::sync::Arc<dyn duckmesh_storage::ObjectStore>)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use duckmesh_query::{QueryConfig, QueryService, router, serve};
//! let service = QueryService::new(catalog, store, duckmesh_telemetry::Metrics::new(), QueryConfig::from_env()?)?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! serve(listener, router(service), async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod cache;
pub mod client;
pub mod config;
pub mod engine;
mod error;
pub mod format;
mod http;
pub mod ingest;
mod integrity;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod openapi;
mod service;
pub mod sql;

pub use auth::{ApiKeyEntry, ApiKeys, Principal};
pub use config::{IngestLimits, QueryArgs, QueryConfig, RateLimits};
pub use error::{ConfigError, Error, Result};
pub use http::{router, serve};
pub use ingest::{IngestResponse, IngestService};
pub use model::{
    ColumnInfo, DatasetInfo, DatasetList, ErrorBody, ExportInfo, Format, Health, IntegrityCountsInfo, IntegrityInfo,
    IntegrityList, IntegrityProblemInfo, QueryRequest, QueryResponse, SnapshotInfo, SnapshotPage,
};
pub use service::{Check, QueryAnswer, QueryService, RawBody, Readiness};
