//! A decorator that scopes any store to a key prefix, e.g. one tenant's or one test's
//! corner of a bucket. Keys seen by callers are relative to the prefix.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::key::{validate_key, validate_prefix};
use crate::{ObjectMeta, ObjectStore};

/// Wraps a store so that every key is stored under `prefix/`.
#[derive(Debug, Clone)]
pub struct PrefixStore<S> {
    inner: S,
    /// The prefix including its trailing `/`.
    prefix: String,
}

impl<S: ObjectStore> PrefixStore<S> {
    /// Scopes `inner` to `prefix` (a valid key; a trailing `/` is optional).
    pub fn new(inner: S, prefix: &str) -> Result<Self> {
        let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
        validate_key(trimmed).map_err(|error| match error {
            Error::InvalidKey { reason, .. } => Error::InvalidKey { key: prefix.to_owned(), reason },
            other => other,
        })?;
        Ok(Self { inner, prefix: format!("{trimmed}/") })
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The prefix, with its trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn full_key(&self, key: &str) -> Result<String> {
        // Validate the caller's key on its own so errors name the key the caller passed.
        validate_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    fn strip(&self, mut meta: ObjectMeta) -> ObjectMeta {
        if let Some(relative) = meta.key.strip_prefix(&self.prefix) {
            meta.key = relative.to_owned();
        }
        meta
    }

    /// Rewrites errors that name a full key so that they name the caller's key.
    fn relative_error(&self, error: Error) -> Error {
        let strip = |key: String| match key.strip_prefix(&self.prefix) {
            Some(relative) => relative.to_owned(),
            None => key,
        };
        match error {
            Error::NotFound { key } => Error::NotFound { key: strip(key) },
            Error::InvalidRange { key, start, end, size } => Error::InvalidRange { key: strip(key), start, end, size },
            other => other,
        }
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for PrefixStore<S> {
    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let full = self.full_key(key)?;
        self.inner.put(&full, data).await.map_err(|e| self.relative_error(e))
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<u64> {
        let full = self.full_key(key)?;
        self.inner.put_file(&full, path).await.map_err(|e| self.relative_error(e))
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let full = self.full_key(key)?;
        self.inner.get(&full).await.map_err(|e| self.relative_error(e))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let full = self.full_key(key)?;
        self.inner.get_range(&full, range).await.map_err(|e| self.relative_error(e))
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<ObjectMeta> {
        let full = self.full_key(key)?;
        self.inner.get_to_file(&full, path).await.map(|meta| self.strip(meta)).map_err(|e| self.relative_error(e))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let full = self.full_key(key)?;
        self.inner.head(&full).await.map(|meta| self.strip(meta)).map_err(|e| self.relative_error(e))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        validate_prefix(prefix)?;
        let full = format!("{}{prefix}", self.prefix);
        Ok(self.inner.list(&full).await?.into_iter().map(|meta| self.strip(meta)).collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full = self.full_key(key)?;
        self.inner.delete(&full).await.map_err(|e| self.relative_error(e))
    }

    async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String> {
        let full = self.full_key(key)?;
        self.inner.presign_get(&full, ttl).await.map_err(|e| self.relative_error(e))
    }
}
