//! The on-disk layout shared by the worker's input cache and the query service's file cache:
//! committed files named by content hash, `<root>/sha256/<first two hex digits>/<hash>.parquet`,
//! with downloads landing in `<root>/incoming/` until they verify ([`crate::download_verified`]).
//! A cache that outlives its processes (the worker cache of `duckmesh dev`) is kept in bounds
//! by [`prune_cached`], least recently used first, using the modification time that
//! [`mark_used`] refreshes on every hit.

use crate::is_sha256;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A file found in a cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    /// Its content hash (its name).
    pub sha256: String,
    /// Where it is.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// When it was last written or marked as used, when the filesystem reports it.
    pub modified: Option<SystemTime>,
}

/// Where the file with content hash `sha256` lives under a cache `root`.
pub fn cached_path(root: &Path, sha256: &str) -> PathBuf {
    let shard = sha256.get(..2).unwrap_or("xx");
    root.join("sha256").join(shard).join(format!("{sha256}.parquet"))
}

/// Where downloads into a cache `root` land until they verify.
pub fn incoming_dir(root: &Path) -> PathBuf {
    root.join("incoming")
}

/// Every file under `<root>/sha256/`, least recently modified first (ties by hash). Names
/// that are not a hash are skipped; a missing `sha256/` directory is an empty cache. Fails
/// only when the directory exists and cannot be listed.
pub fn list_cached(root: &Path) -> std::io::Result<Vec<CachedFile>> {
    let shards = match std::fs::read_dir(root.join("sha256")) {
        Ok(shards) => shards,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut found = Vec::new();
    for shard in shards.flatten() {
        let Ok(files) = std::fs::read_dir(shard.path()) else { continue };
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            let Some(hash) = name.strip_suffix(".parquet").filter(|hash| is_sha256(hash)) else { continue };
            let Ok(meta) = file.metadata() else { continue };
            if meta.is_file() {
                found.push(CachedFile {
                    sha256: hash.to_owned(),
                    path: file.path(),
                    bytes: meta.len(),
                    modified: meta.modified().ok(),
                });
            }
        }
    }
    found.sort_by(|a, b| a.modified.cmp(&b.modified).then_with(|| a.sha256.cmp(&b.sha256)));
    Ok(found)
}

/// Records that a cached file was just used, so [`prune_cached`] deletes it last. Best
/// effort: a file that cannot be touched is merely pruned earlier.
pub fn mark_used(path: &Path) {
    if let Ok(file) = std::fs::File::options().write(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// What [`prune_cached`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Cached files deleted.
    pub removed_files: usize,
    /// Their bytes, plus those of deleted partial downloads.
    pub removed_bytes: u64,
    /// Cached files kept.
    pub kept_files: usize,
    /// Their bytes.
    pub kept_bytes: u64,
}

/// Trims the cache under `root` to at most `budget_bytes`, deleting the least recently used
/// files first, and deletes partial downloads left in `incoming/` by processes that died.
/// Nothing used or written within `keep_recent` is deleted, since a process may be about to
/// open it, so the cache can stay above the budget while everything in it is recent. Files
/// that vanish meanwhile are skipped; fails only when a directory cannot be listed or a
/// file cannot be deleted.
pub fn prune_cached(root: &Path, budget_bytes: u64, keep_recent: Duration) -> std::io::Result<Pruned> {
    let cutoff = SystemTime::now().checked_sub(keep_recent);
    // A file whose time is unknown or in the future counts as recent.
    let deletable =
        |modified: Option<SystemTime>| matches!((modified, cutoff), (Some(at), Some(cutoff)) if at < cutoff);
    let mut pruned = Pruned::default();
    match std::fs::read_dir(incoming_dir(root)) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_file() && deletable(meta.modified().ok()) {
                    remove_if_present(&entry.path())?;
                    pruned.removed_bytes += meta.len();
                }
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let files = list_cached(root)?;
    let mut total: u64 = files.iter().map(|file| file.bytes).sum();
    for file in files {
        if total > budget_bytes && deletable(file.modified) {
            remove_if_present(&file.path)?;
            total -= file.bytes;
            pruned.removed_files += 1;
            pruned.removed_bytes += file.bytes;
        } else {
            pruned.kept_files += 1;
            pruned.kept_bytes += file.bytes;
        }
    }
    Ok(pruned)
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, hash: &str, content: &[u8], age_secs: u64) -> PathBuf {
        let path = cached_path(root, hash);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("shard");
        std::fs::write(&path, content).expect("write");
        set_age(&path, age_secs);
        path
    }

    fn set_age(path: &Path, age_secs: u64) {
        let file = std::fs::File::options().write(true).open(path).expect("open");
        file.set_modified(SystemTime::now() - Duration::from_secs(age_secs)).expect("set mtime");
    }

    #[test]
    fn lists_hash_named_files_oldest_first_and_skips_the_rest() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path();
        assert_eq!(list_cached(root).expect("empty"), Vec::new(), "no sha256/ yet is an empty cache");

        let (old, new) = ("a".repeat(64), format!("b{}", "0".repeat(63)));
        let path = put(root, &new, b"new!", 10);
        assert!(path.ends_with(format!("sha256/b0/{new}.parquet")));
        put(root, &old, b"old", 600);
        std::fs::write(root.join("sha256/aa/notes.txt"), b"x").expect("stray file");
        std::fs::write(root.join("sha256/aa/ABC.parquet"), b"x").expect("not a hash");

        let listed = list_cached(root).expect("list");
        let names: Vec<_> = listed.iter().map(|file| (file.sha256.as_str(), file.bytes)).collect();
        assert_eq!(names, [(old.as_str(), 3), (new.as_str(), 4)]);
        assert_eq!(listed[0].path, cached_path(root, &old));
        assert_eq!(incoming_dir(root), root.join("incoming"));
    }

    #[test]
    fn pruning_deletes_least_recently_used_files_down_to_the_budget_but_nothing_recent() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path();
        let hashes: Vec<String> = (0..5).map(|i| format!("{i}").repeat(64)).collect();
        // Ages in seconds: 0 and 1 are old, 2 was old but is used now, 3 and 4 are recent.
        for (hash, age) in hashes.iter().zip([5000, 4000, 3000, 30, 20]) {
            put(root, hash, &[0u8; 100], age);
        }
        mark_used(&cached_path(root, &hashes[2]));
        std::fs::create_dir_all(incoming_dir(root)).expect("incoming");
        let (stale, fresh) = (incoming_dir(root).join("dead.part"), incoming_dir(root).join("live.part"));
        std::fs::write(&stale, [0u8; 7]).expect("stale part");
        set_age(&stale, 7200);
        std::fs::write(&fresh, [0u8; 9]).expect("fresh part");

        let keep_recent = Duration::from_secs(600);
        let pruned = prune_cached(root, 250, keep_recent).expect("prune");
        // 500 bytes over a 250 budget: the two least recently used go, which leaves 300 bytes
        // of which none may be deleted (all recent), so the cache stays over budget.
        assert_eq!(pruned, Pruned { removed_files: 2, removed_bytes: 207, kept_files: 3, kept_bytes: 300 });
        let left: Vec<_> = list_cached(root).expect("list").into_iter().map(|file| file.sha256).collect();
        assert_eq!(left, [hashes[3].clone(), hashes[4].clone(), hashes[2].clone()], "least recently used first");
        assert!(!stale.exists() && fresh.exists(), "only the dead process's partial download goes");

        // Within budget nothing goes, however old.
        let pruned = prune_cached(root, 300, Duration::ZERO).expect("prune");
        assert_eq!((pruned.removed_files, pruned.kept_bytes), (0, 300));
        // A zero budget with nothing recent empties the cache (the live download is now stale too).
        let pruned = prune_cached(root, 0, Duration::ZERO).expect("prune");
        assert_eq!((pruned.removed_files, pruned.kept_files), (3, 0));
        assert!(list_cached(root).expect("list").is_empty() && !fresh.exists());
        // A missing cache is an empty one.
        assert_eq!(prune_cached(&root.join("none"), 0, keep_recent).expect("missing"), Pruned::default());
    }
}
