//! DuckMesh object storage: one narrow async trait, [`ObjectStore`], with an S3 backend
//! ([`S3Store`], AWS or any S3-compatible endpoint) and a local-filesystem backend
//! ([`LocalStore`], the embedded `duckmesh dev` mode), plus a [`PrefixStore`] decorator.
//!
//! Every backend validates keys the same way ([`validate_key`]), reports failures as the
//! typed [`Error`] with a stable `error_code()`, and the S3 backend retries transient
//! failures itself with jittered exponential backoff, counting every retry in
//! [`StoreCounters`].
//!
//! With the `testing` feature, [`testing`] holds a store-agnostic conformance suite, a
//! `moto_server` harness and a fault-injecting HTTP proxy.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

mod cache_dir;
mod config;
mod error;
mod key;
mod local;
mod prefix;
mod retry;
mod s3;
mod verify;

#[cfg(feature = "testing")]
pub mod testing;

pub use cache_dir::{CachedFile, Pruned, cached_path, incoming_dir, list_cached, mark_used, prune_cached};
pub use config::{StoreArgs, StoreConfig};
pub use error::{BoxError, Error, Result};
pub use key::{MAX_KEY_BYTES, layout, validate_key, validate_prefix};
pub use local::LocalStore;
pub use prefix::PrefixStore;
pub use retry::{Operation, OperationCounts, RetryConfig, StoreCounters};
pub use s3::{MIN_PART_SIZE, S3Config, S3Credentials, S3Store};
pub use verify::{Download, Fetched, download_verified, fetch_verified, fetch_verified_scratch, hash_file, is_sha256};

/// What a store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectMeta {
    /// The object's key, relative to the store (without the store's own prefix).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written, when the store reports it.
    pub last_modified: Option<SystemTime>,
    /// An opaque version tag that changes when the object is rewritten (the S3 ETag; for
    /// the local store a tag derived from modification time and size).
    pub e_tag: Option<String>,
}

/// A flat key → bytes object store.
///
/// Keys are `/`-separated relative paths checked by [`validate_key`]; an invalid key fails
/// every operation with [`Error::InvalidKey`] before anything is sent. Writes replace
/// existing objects atomically: a reader sees the old object or the new one, never a mix.
/// Implementations are cheap to share as `Arc<dyn ObjectStore>`.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Writes `data` under `key`, replacing any existing object.
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;

    /// Uploads the local file at `path` under `key`, replacing any existing object.
    ///
    /// Large files go up as a multipart upload (S3) that is aborted if any part fails;
    /// small ones as a single request. Returns the number of bytes uploaded.
    async fn put_file(&self, key: &str, path: &Path) -> Result<u64>;

    /// Reads the whole object.
    async fn get(&self, key: &str) -> Result<Bytes>;

    /// Reads bytes `range.start..range.end` of the object.
    ///
    /// The range must lie within the object (`start <= end <= size`), otherwise the call
    /// fails with [`Error::InvalidRange`]; an empty range of an existing object returns
    /// empty bytes.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;

    /// Streams the object into the local file at `path` (written to a temporary file next
    /// to it and renamed into place, so `path` never holds a partial object). Returns the
    /// object's metadata.
    async fn get_to_file(&self, key: &str, path: &Path) -> Result<ObjectMeta>;

    /// Reads the object's metadata.
    async fn head(&self, key: &str) -> Result<ObjectMeta>;

    /// Lists every object whose key starts with `prefix` (plain string prefix, as in S3),
    /// sorted by key. Paginates internally.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Deletes the object. Deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Returns a URL from which the object can be fetched with a plain HTTP GET for `ttl`
    /// without further credentials (S3). The local store returns a `file://` URL that is
    /// only meaningful on the same machine.
    ///
    /// The URL is a bearer credential: never log it.
    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String>;
}

#[async_trait]
impl<T: ObjectStore + ?Sized> ObjectStore for Arc<T> {
    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        (**self).put(key, data).await
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<u64> {
        (**self).put_file(key, path).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        (**self).get(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        (**self).get_range(key, range).await
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<ObjectMeta> {
        (**self).get_to_file(key, path).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        (**self).head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        (**self).list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        (**self).delete(key).await
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String> {
        (**self).presign_get(key, ttl).await
    }
}
