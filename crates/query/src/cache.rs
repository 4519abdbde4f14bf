//! A local cache of committed Parquet files, keyed by content hash, with a size bound.
//!
//! Committed files are immutable and the catalog records each one's size and SHA-256, so the
//! hash names the content exactly: `<root>/sha256/<first two hex digits>/<hash>.parquet` (the
//! worker's layout). A download lands in `<root>/incoming/`, is checked against the recorded
//! size and hash, and only then renamed into place. Concurrent requests for one file share one
//! download. When the cache outgrows its bound, the least recently used files that no running
//! query holds are deleted; files a query holds are never deleted under it.

use crate::error::{Error, Result};
use duckmesh_catalog::FileRecord;
use duckmesh_storage::{Download, ObjectStore, cached_path, download_verified, incoming_dir, is_sha256, list_cached};
use futures::StreamExt;
use lru::LruCache;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The file cache. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FileCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    capacity: u64,
    state: Mutex<State>,
    /// One lock per file being fetched, so concurrent fetches of it wait for one download.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    downloads: AtomicU64,
    hits: AtomicU64,
    evictions: AtomicU64,
}

#[derive(Debug)]
struct State {
    files: LruCache<String, Entry>,
    bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    bytes: u64,
    pins: usize,
}

/// Counters of a cache, for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Files in the cache.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Downloads since start.
    pub downloads: u64,
    /// Fetches answered from the cache since start.
    pub hits: u64,
    /// Files evicted since start.
    pub evictions: u64,
}

/// Files held for one query: they stay on disk until this is dropped.
#[derive(Debug)]
pub struct HeldFiles {
    pins: Vec<Pin>,
    /// Local paths, in the order of the records asked for.
    pub paths: Vec<PathBuf>,
    /// How many of them were downloaded for this request.
    pub downloaded: u64,
}

impl FileCache {
    /// Opens (creating if needed) a cache under `root` bounded to `capacity` bytes. Files left
    /// by an earlier process are adopted (oldest first in eviction order); partial downloads
    /// are removed.
    pub fn open(root: impl Into<PathBuf>, capacity: u64) -> Result<Self> {
        let root = root.into();
        let incoming = incoming_dir(&root);
        let _ = std::fs::remove_dir_all(&incoming);
        for dir in [root.join("sha256"), incoming] {
            std::fs::create_dir_all(&dir).map_err(|error| Error::io("creating the cache directory", &dir, error))?;
        }
        let found = list_cached(&root).map_err(|error| Error::io("listing the cache", root.join("sha256"), error))?;
        let mut files = LruCache::unbounded();
        let mut bytes = 0;
        for file in found {
            bytes += file.bytes;
            files.put(file.sha256, Entry { bytes: file.bytes, pins: 0 });
        }
        let inner = Inner {
            root,
            capacity,
            state: Mutex::new(State { files, bytes }),
            fetching: Mutex::new(HashMap::new()),
            downloads: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        };
        {
            let mut state = inner.lock_state();
            inner.evict(&mut state);
        }
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where the file with this content hash lives.
    pub fn path_for(&self, sha256: &str) -> PathBuf {
        self.inner.path_for(sha256)
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        let state = self.inner.lock_state();
        CacheStats {
            files: state.files.len(),
            bytes: state.bytes,
            downloads: self.inner.downloads.load(Ordering::Relaxed),
            hits: self.inner.hits.load(Ordering::Relaxed),
            evictions: self.inner.evictions.load(Ordering::Relaxed),
        }
    }

    /// Makes every file of `records` available locally (at most `concurrency` downloads at
    /// once) and holds them until the returned value is dropped.
    pub async fn fetch_all(
        &self,
        store: &dyn ObjectStore,
        records: &[FileRecord],
        concurrency: usize,
    ) -> Result<HeldFiles> {
        let fetches: Vec<_> = records.iter().map(|record| self.fetch_one(store, record)).collect();
        let results: Vec<Result<(Pin, PathBuf, bool)>> =
            futures::stream::iter(fetches).buffered(concurrency.max(1)).collect().await;
        let mut held = HeldFiles { pins: Vec::new(), paths: Vec::new(), downloaded: 0 };
        let mut first_error = None;
        for result in results {
            match result {
                Ok((pin, path, downloaded)) => {
                    held.pins.push(pin);
                    held.paths.push(path);
                    held.downloaded += u64::from(downloaded);
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            // Dropping `held` releases the files that were fetched.
            Some(error) => Err(error),
            None => Ok(held),
        }
    }

    /// Fetches one file and pins it; returns the pin, the path and whether it was downloaded.
    async fn fetch_one(&self, store: &dyn ObjectStore, record: &FileRecord) -> Result<(Pin, PathBuf, bool)> {
        let hash = record.sha256.to_ascii_lowercase();
        if !is_sha256(&hash) {
            return Err(Error::InputCorrupt {
                path: record.path.clone(),
                message: format!("the catalog records an invalid sha256 {:?}", record.sha256),
            });
        }
        let expected = u64::try_from(record.bytes).unwrap_or(u64::MAX);
        let path = self.path_for(&hash);
        if let Some(pin) = Inner::pin_if_present(&self.inner, &hash, &path, expected).await {
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((pin, path, false));
        }
        let lock = {
            let mut fetching = self.inner.fetching.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(fetching.entry(hash.clone()).or_default())
        };
        let guard = lock.lock().await;
        // Whoever held the lock before may have fetched it meanwhile.
        let result = if let Some(pin) = Inner::pin_if_present(&self.inner, &hash, &path, expected).await {
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
            Ok((pin, path, false))
        } else {
            match self.inner.download(store, record, &hash, expected, &path).await {
                Ok(()) => {
                    self.inner.downloads.fetch_add(1, Ordering::Relaxed);
                    let mut state = self.inner.lock_state();
                    if let Some(old) = state.files.put(hash.clone(), Entry { bytes: expected, pins: 1 }) {
                        state.bytes -= old.bytes;
                    }
                    state.bytes += expected;
                    let pin = Pin { inner: Arc::clone(&self.inner), hash: hash.clone() };
                    self.inner.evict(&mut state);
                    Ok((pin, path, true))
                }
                Err(error) => Err(error),
            }
        };
        drop(guard);
        let mut fetching = self.inner.fetching.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if fetching.get(&hash).is_some_and(|current| Arc::ptr_eq(current, &lock) && Arc::strong_count(&lock) <= 2) {
            fetching.remove(&hash);
        }
        result
    }
}

/// One held file; dropping it lets the file be evicted again.
#[derive(Debug)]
struct Pin {
    inner: Arc<Inner>,
    hash: String,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut state = self.inner.lock_state();
        if let Some(entry) = state.files.peek_mut(&self.hash) {
            entry.pins = entry.pins.saturating_sub(1);
        }
        self.inner.evict(&mut state);
    }
}

impl Inner {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn path_for(&self, sha256: &str) -> PathBuf {
        cached_path(&self.root, sha256)
    }

    /// Pins the cached file if the index has it and it is still on disk with the right size.
    async fn pin_if_present(inner: &Arc<Inner>, hash: &str, path: &Path, expected: u64) -> Option<Pin> {
        let pin = {
            let mut state = inner.lock_state();
            match state.files.get_mut(hash) {
                Some(entry) if entry.bytes == expected => entry.pins += 1,
                Some(_) => {
                    if let Some(stale) = state.files.pop(hash) {
                        state.bytes -= stale.bytes;
                    }
                    return None;
                }
                None => return None,
            }
            Pin { inner: Arc::clone(inner), hash: hash.to_owned() }
        };
        // Someone may have removed it behind our back; then fetch it again.
        if tokio::fs::metadata(path).await.is_ok_and(|meta| meta.len() == expected) {
            return Some(pin);
        }
        drop(pin);
        let mut state = inner.lock_state();
        if let Some(entry) = state.files.pop(hash) {
            state.bytes -= entry.bytes;
        }
        None
    }

    /// Downloads into `incoming/`, verifies size and hash, and renames into place; one retry
    /// on a mismatch.
    async fn download(
        &self,
        store: &dyn ObjectStore,
        record: &FileRecord,
        hash: &str,
        expected: u64,
        target: &Path,
    ) -> Result<()> {
        let incoming = incoming_dir(&self.root);
        match download_verified(store, &record.path, &incoming, target, expected, hash).await? {
            Download::Verified => Ok(()),
            Download::Mismatch(message) => Err(Error::InputCorrupt { path: record.path.clone(), message }),
        }
    }

    /// Deletes least recently used, unheld files until the cache fits its bound.
    fn evict(&self, state: &mut State) {
        while state.bytes > self.capacity {
            let victim = state.files.iter().rev().find(|(_, entry)| entry.pins == 0).map(|(hash, _)| hash.clone());
            let Some(hash) = victim else { break };
            if let Some(entry) = state.files.pop(&hash) {
                state.bytes -= entry.bytes;
                let path = self.path_for(&hash);
                if let Err(error) = std::fs::remove_file(&path)
                    && error.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %path.display(), %error, "cannot remove an evicted cache file");
                }
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
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
    async fn downloads_once_coalesces_and_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path().join("store")).expect("store");
        store.put("ds/a.parquet", Bytes::from_static(b"hello parquet")).await.expect("put");
        let cache = FileCache::open(dir.path().join("cache"), 1 << 20).expect("cache");
        let file = record("ds/a.parquet", b"hello parquet");

        // Eight concurrent fetches of one file: one download.
        let fetches = (0..8).map(|_| cache.fetch_all(&store, std::slice::from_ref(&file), 4));
        let held = futures::future::try_join_all(fetches).await.expect("fetch");
        assert_eq!(cache.stats().downloads, 1);
        assert_eq!(held.iter().map(|h| h.downloaded).sum::<u64>(), 1);
        assert_eq!(std::fs::read(&held[0].paths[0]).expect("read"), b"hello parquet");
        drop(held);

        // Gone from the store: the cache still answers.
        store.delete("ds/a.parquet").await.expect("delete");
        let again = cache.fetch_all(&store, std::slice::from_ref(&file), 4).await.expect("hit");
        assert_eq!((again.downloaded, cache.stats().downloads), (0, 1));

        store.put("ds/b.parquet", Bytes::from_static(b"tampered")).await.expect("put");
        let mut corrupt = record("ds/b.parquet", b"original");
        let error = cache.fetch_all(&store, std::slice::from_ref(&corrupt), 1).await.expect_err("corrupt");
        assert_eq!(error.error_code(), "input_corrupt");
        corrupt.sha256 = "../../etc/passwd".into();
        assert_eq!(cache.fetch_all(&store, &[corrupt], 1).await.expect_err("bad hash").error_code(), "input_corrupt");
        assert_eq!(std::fs::read_dir(cache.root().join("incoming")).expect("incoming").count(), 0);
    }

    #[tokio::test]
    async fn least_recently_used_unheld_files_are_evicted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path().join("store")).expect("store");
        let contents: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 100]).collect();
        let mut records = Vec::new();
        for (i, content) in contents.iter().enumerate() {
            let key = format!("ds/{i}.parquet");
            store.put(&key, Bytes::from(content.clone())).await.expect("put");
            records.push(record(&key, content));
        }
        let cache = FileCache::open(dir.path().join("cache"), 250).expect("cache");
        let held0 = cache.fetch_all(&store, &records[0..1], 1).await.expect("0");
        drop(cache.fetch_all(&store, &records[1..2], 1).await.expect("1"));
        // Over the bound while 0 is held: 1 (unheld, least recent) goes, 0 stays.
        let held2 = cache.fetch_all(&store, &records[2..3], 1).await.expect("2");
        assert!(held0.paths[0].exists());
        assert!(!cache.path_for(&records[1].sha256).exists());
        assert_eq!(cache.stats().evictions, 1);
        // Everything held: the bound is exceeded rather than a file deleted under a query.
        let held3 = cache.fetch_all(&store, &records[3..4], 1).await.expect("3");
        assert_eq!(cache.stats().bytes, 300);
        drop((held0, held2, held3));
        assert_eq!(cache.stats().bytes, 200);

        // A new process adopts what is on disk.
        let reopened = FileCache::open(dir.path().join("cache"), 250).expect("reopen");
        assert_eq!(reopened.stats().files, 2);
    }
}
