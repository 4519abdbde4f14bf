//! The S3 backend on `aws-sdk-s3`: AWS itself or any S3-compatible endpoint (MinIO,
//! Ceph, moto, ...).
//!
//! The SDK's retry layer is disabled; every request goes through
//! [`run_with_retries`](crate::retry::run_with_retries), which retries transient failures
//! (throttling, 5xx, timeouts, connection trouble) with jittered backoff, counts them in
//! [`StoreCounters`](crate::StoreCounters), and surfaces everything else as a typed
//! [`Error`](crate::Error).
//!
//! [`config`] holds what a store is built from, [`store`] the [`ObjectStore`](crate::ObjectStore)
//! implementation, and [`classify`] which failures are worth another attempt.

mod classify;
mod config;
mod store;

pub(crate) use config::MAX_PART_SIZE;
pub use config::{MIN_PART_SIZE, S3Config, S3Credentials};
pub use store::S3Store;
