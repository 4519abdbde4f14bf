//! The engine pool: locked-down databases kept for reuse between queries, so a repeated query
//! neither downloads nor opens anything again.
//!
//! A database serves a query when it holds a view of every dataset the query names with exactly
//! the files of the snapshot the query reads (snapshots are immutable, so an entry never goes
//! stale), for the same tenant and namespace. A database opened for a query also takes over the
//! views of the tenant's most recently used one (up to [`MAX_POOLED_VIEWS`]), so queries that
//! join different subsets of the same datasets (a BI dashboard, TPC-H) share one warm database
//! instead of each opening its own. The extra views are datasets of the same tenant and
//! namespace that an earlier query of the tenant was allowed to read; a query can only read the
//! views it names, which the statement check lists and `resolve` authorizes.

use crate::cache::HeldFiles;
use crate::engine::{DatasetView, Sandbox};
use duckmesh_catalog::FileRecord;
use std::sync::{Arc, Mutex};

/// Most views one pooled database takes on (its own and those it takes over).
pub(super) const MAX_POOLED_VIEWS: usize = 64;

/// One view of a pooled database.
#[derive(Debug, Clone)]
pub(super) struct PooledView {
    /// The view (its `files` are filled in when the database is opened).
    pub(super) view: DatasetView,
    /// The snapshot's files.
    pub(super) files: Vec<FileRecord>,
    /// What makes two views the same: the files' hashes, or the schema of an empty dataset.
    pub(super) signature: String,
}

impl PooledView {
    /// The names the view answers to (the dataset's, and the one with `_` for `-`).
    fn names(&self) -> [String; 2] {
        [self.view.name.clone(), self.view.name.replace('-', "_")]
    }

    fn collides(&self, other: &PooledView) -> bool {
        let mine = self.names();
        other.names().iter().any(|name| mine.contains(name))
    }
}

/// Locked-down databases kept for reuse (see the module). Each holds its files in the cache and
/// its scratch directory; a query takes a fresh connection on it.
#[derive(Debug)]
pub(super) struct EnginePool {
    capacity: usize,
    entries: Mutex<lru::LruCache<String, Arc<PooledEngine>>>,
}

/// One pooled database with what it reads.
#[derive(Debug)]
pub(super) struct PooledEngine {
    pub(super) sandbox: Mutex<Sandbox>,
    /// Tenant and namespace.
    pub(super) scope: String,
    /// Its views, in the order of its files.
    pub(super) views: Vec<PooledView>,
    // Dropped after the sandbox: the database closes, then its files and directory go.
    pub(super) _files: HeldFiles,
    pub(super) work: tempfile::TempDir,
}

impl EnginePool {
    /// A pool of at most `capacity` databases (0: none is kept).
    pub(super) fn new(capacity: usize) -> Self {
        Self { capacity, entries: Mutex::new(lru::LruCache::unbounded()) }
    }

    /// A kept database of `scope` that holds every one of `wanted`, promoted to most recently
    /// used.
    pub(super) fn find(&self, scope: &str, wanted: &[PooledView]) -> Option<Arc<PooledEngine>> {
        if self.capacity == 0 {
            return None;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = entries.iter().find(|(_, engine)| engine.serves(scope, wanted)).map(|(key, _)| key.clone())?;
        entries.get(&key).cloned()
    }

    /// The views of the most recently used database of `scope` that a new database for
    /// `wanted` takes over: every one whose names `wanted` does not use, up to
    /// [`MAX_POOLED_VIEWS`] in all.
    pub(super) fn companions(&self, scope: &str, wanted: &[PooledView]) -> Vec<PooledView> {
        if self.capacity == 0 {
            return Vec::new();
        }
        let entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some((_, recent)) = entries.iter().find(|(_, engine)| engine.scope == scope) else {
            return Vec::new();
        };
        recent
            .views
            .iter()
            .filter(|view| !wanted.iter().any(|own| own.collides(view)))
            .take(MAX_POOLED_VIEWS.saturating_sub(wanted.len()))
            .cloned()
            .collect()
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

impl PooledEngine {
    /// Whether this database answers a query of `scope` reading exactly `wanted`.
    fn serves(&self, scope: &str, wanted: &[PooledView]) -> bool {
        self.scope == scope
            && wanted.iter().all(|own| {
                self.views.iter().any(|view| view.view.name == own.view.name && view.signature == own.signature)
            })
    }
}
