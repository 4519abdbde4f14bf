//! A local cache of committed input files, keyed by content hash.
//!
//! Committed files are immutable and the catalog records each one's size and SHA-256, so a
//! file's hash names its content exactly: `<root>/sha256/<first two hex digits>/<hash>.parquet`.
//! A download goes to `<root>/incoming/` first, is checked against the recorded size and hash,
//! and only then renamed into place, so the cache never holds a partial or wrong file under a
//! hash name, even when several workers share the directory. A cached file is reused when its
//! size still matches; it is hashed once, when it enters the cache, and its modification time
//! is refreshed on every hit so that pruning (`duckmesh dev` trims its worker cache at start,
//! [`duckmesh_storage::prune_cached`]) deletes the least recently used files first.

use crate::error::{Error, Result};
use duckmesh_catalog::FileRecord;
use duckmesh_storage::{Download, ObjectStore, cached_path, download_verified, incoming_dir, is_sha256, mark_used};
use std::path::{Path, PathBuf};

/// The cache directory.
#[derive(Debug, Clone)]
pub struct FileCache {
    root: PathBuf,
}

/// Where a fetched file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// It was already cached.
    Hit,
    /// It was downloaded (and verified) now.
    Downloaded,
}

impl FileCache {
    /// Opens (creating if needed) a cache rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for dir in [root.join("sha256"), incoming_dir(&root)] {
            std::fs::create_dir_all(&dir).map_err(|error| Error::io("creating cache directory", &dir, error))?;
        }
        Ok(Self { root })
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the file with this content hash lives in the cache.
    pub fn path_for(&self, sha256: &str) -> PathBuf {
        cached_path(&self.root, sha256)
    }

    /// Returns a local path holding exactly the content of `file`, downloading it from `store`
    /// unless it is already cached. A download whose size or hash differs from the catalog's
    /// record is tried once more, then reported as `input_corrupt`.
    pub async fn fetch(&self, store: &dyn ObjectStore, file: &FileRecord) -> Result<(PathBuf, Fetched)> {
        let sha256 = file.sha256.as_str();
        if !is_sha256(sha256) {
            return Err(Error::InputCorrupt {
                path: file.path.clone(),
                message: format!("the catalog records an invalid sha256 {sha256:?}"),
            });
        }
        let expected_bytes = u64::try_from(file.bytes).unwrap_or(u64::MAX);
        let target = self.path_for(sha256);
        if let Ok(meta) = tokio::fs::metadata(&target).await
            && meta.len() == expected_bytes
        {
            mark_used(&target);
            return Ok((target, Fetched::Hit));
        }
        let incoming = incoming_dir(&self.root);
        match download_verified(store, &file.path, &incoming, &target, expected_bytes, sha256).await? {
            Download::Verified => Ok((target, Fetched::Downloaded)),
            Download::Mismatch(message) => Err(Error::InputCorrupt { path: file.path.clone(), message }),
        }
    }
}

/// Size and lower-case hex SHA-256 of a local file, computed off the async threads.
pub(crate) async fn hash_file(path: &Path) -> Result<(u64, String)> {
    Ok(duckmesh_storage::hash_file(path).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use duckmesh_core::SnapshotId;
    use duckmesh_storage::LocalStore;
    use sha2::{Digest, Sha256};

    fn record(path: &str, content: &[u8]) -> FileRecord {
        FileRecord {
            path: path.into(),
            bytes: content.len() as i64,
            rows: 1,
            sha256: hex::encode(Sha256::digest(content)),
            partition: None,
            added_in: SnapshotId(1),
        }
    }

    #[tokio::test]
    async fn downloads_once_then_hits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path().join("store")).expect("store");
        store.put("ds/a.parquet", Bytes::from_static(b"hello parquet")).await.expect("put");
        let cache = FileCache::open(dir.path().join("cache")).expect("cache");
        let file = record("ds/a.parquet", b"hello parquet");

        let (path, first) = cache.fetch(&store, &file).await.expect("fetch");
        assert_eq!(first, Fetched::Downloaded);
        assert_eq!(std::fs::read(&path).expect("read"), b"hello parquet");
        assert_eq!(path, cache.path_for(&file.sha256));

        // Gone from the store: the cache still answers, and the hit marks the file as used.
        store.delete("ds/a.parquet").await.expect("delete");
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options().write(true).open(&path).expect("open").set_modified(hour_ago).expect("age it");
        let (again, second) = cache.fetch(&store, &file).await.expect("fetch");
        let modified = std::fs::metadata(&again).expect("meta").modified().expect("mtime");
        assert!(modified > hour_ago + std::time::Duration::from_secs(3500), "a hit refreshes the file's time");
        assert_eq!((again, second), (path, Fetched::Hit));
        assert_eq!(std::fs::read_dir(cache.root().join("incoming")).expect("incoming").count(), 0);
    }

    #[tokio::test]
    async fn content_that_does_not_match_the_catalog_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path().join("store")).expect("store");
        store.put("ds/a.parquet", Bytes::from_static(b"tampered")).await.expect("put");
        let cache = FileCache::open(dir.path().join("cache")).expect("cache");
        let file = record("ds/a.parquet", b"original");

        let error = cache.fetch(&store, &file).await.expect_err("corrupt");
        assert_eq!(error.error_code(), "input_corrupt");
        assert!(error.to_string().contains("the catalog records 8 bytes"), "{error}");
        assert!(!cache.path_for(&file.sha256).exists());
        assert_eq!(std::fs::read_dir(cache.root().join("incoming")).expect("incoming").count(), 0);

        let mut bad_hash = file.clone();
        bad_hash.sha256 = "../../etc/passwd".into();
        assert_eq!(cache.fetch(&store, &bad_hash).await.expect_err("bad").error_code(), "input_corrupt");
    }

    #[tokio::test]
    async fn a_truncated_cached_file_is_fetched_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path().join("store")).expect("store");
        store.put("ds/a.parquet", Bytes::from_static(b"complete content")).await.expect("put");
        let cache = FileCache::open(dir.path().join("cache")).expect("cache");
        let file = record("ds/a.parquet", b"complete content");
        let target = cache.path_for(&file.sha256);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::write(&target, b"compl").expect("write");

        let (path, fetched) = cache.fetch(&store, &file).await.expect("fetch");
        assert_eq!(fetched, Fetched::Downloaded);
        assert_eq!(std::fs::read(path).expect("read"), b"complete content");
    }
}
