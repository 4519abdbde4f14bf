//! The engine pool: locked-down databases kept for reuse between queries that read exactly
//! the same files, so a repeated query neither downloads nor opens anything again.

use crate::cache::HeldFiles;
use crate::engine::Sandbox;
use std::sync::{Arc, Mutex};

/// Locked-down databases kept for reuse, keyed by tenant and the exact files of their views
/// (snapshots are immutable, so an entry never goes stale). Each holds its files in the cache
/// and its scratch directory; a query takes a fresh connection on it.
#[derive(Debug)]
pub(super) struct EnginePool {
    capacity: usize,
    entries: Mutex<lru::LruCache<String, Arc<PooledEngine>>>,
}

/// One pooled database with what it reads.
#[derive(Debug)]
pub(super) struct PooledEngine {
    pub(super) sandbox: Mutex<Sandbox>,
    // Dropped after the sandbox: the database closes, then its files and directory go.
    pub(super) _files: HeldFiles,
    pub(super) work: tempfile::TempDir,
}

impl EnginePool {
    /// A pool of at most `capacity` databases (0: none is kept).
    pub(super) fn new(capacity: usize) -> Self {
        Self { capacity, entries: Mutex::new(lru::LruCache::unbounded()) }
    }

    /// The database for `key`, if one is kept.
    pub(super) fn get(&self, key: &str) -> Option<Arc<PooledEngine>> {
        if self.capacity == 0 {
            return None;
        }
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(key).cloned()
    }

    /// Keeps `engine` under `key`, dropping the least recently used beyond the capacity.
    pub(super) fn put(&self, key: String, engine: Arc<PooledEngine>) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.put(key, engine);
        while entries.len() > self.capacity {
            entries.pop_lru();
        }
    }
}
