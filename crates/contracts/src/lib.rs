//! The data contracts DuckMesh's components exchange, in one place and without I/O, so that
//! the side that writes a document and the side that reads it cannot drift apart, and so that
//! every parser of hostile input here can be fuzzed on its own (`fuzz/`):
//!
//! - [`types`]: dataset columns and DuckDB type names in the one spelling DuckDB reports;
//! - [`values`]: is a JSON value a value of a column type, exactly (ingest);
//! - [`ingest`]: the `POST /v1/ingest` body and the record check, shared by the API and the
//!   coordinator;
//! - [`task`]: the task and dataset spec documents a worker reads from the catalog;
//! - [`quantity`]: Kubernetes resource quantities (memory, CPU);
//! - [`maintenance`]: a Dataset's maintenance policy (which kinds run on which cron schedule);
//! - [`catalog_record`]: the commit records and checkpoints a catalog rebuild reads back.

pub mod catalog_record;
pub mod commit;
pub mod ingest;
pub mod maintenance;
pub mod manifest;
pub mod quantity;
pub mod task;
pub mod types;
pub mod values;

pub use types::{Column, canonical_type};
