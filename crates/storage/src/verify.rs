//! Verified downloads: fetch an object into a scratch file, check its size and SHA-256 against
//! what the catalog recorded, and only then move it into place. Shared by the worker's input
//! cache and the query service's file cache, which differ in bookkeeping, not in trust.

use crate::{Error, ObjectStore, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// The outcome of [`download_verified`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Download {
    /// `target` now holds exactly the expected content.
    Verified,
    /// Two downloads in a row did not match; what the last one had instead. Nothing was kept.
    Mismatch(String),
}

/// Whether `text` is a lower-case hex SHA-256 (64 digits), safe to use as a file name.
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Size and lower-case hex SHA-256 of a local file, computed off the async threads.
pub async fn hash_file(path: &Path) -> Result<(u64, String)> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || hash_file_blocking(&owned)).await.map_err(|error| Error::Io {
        operation: "hashing",
        path: path.to_owned(),
        source: std::io::Error::other(error.to_string()),
    })?
}

fn hash_file_blocking(path: &Path) -> Result<(u64, String)> {
    let io = |operation: &'static str| move |source| Error::Io { operation, path: path.to_owned(), source };
    let mut file = std::fs::File::open(path).map_err(io("opening a file to hash"))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut total = 0u64;
    loop {
        let read = file.read(&mut buffer).map_err(io("reading a file to hash"))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        total += read as u64;
    }
    Ok((total, hex::encode(hasher.finalize())))
}

/// Downloads `key` into a fresh file under `incoming_dir`, checks that it has `expected_bytes`
/// bytes and SHA-256 `expected_sha256`, and renames it to `target` (creating its directory).
/// A mismatch is downloaded once more (a torn read), then reported as
/// [`Download::Mismatch`]; a failed download is an error. Scratch files never survive.
pub async fn download_verified(
    store: &dyn ObjectStore,
    key: &str,
    incoming_dir: &Path,
    target: &Path,
    expected_bytes: u64,
    expected_sha256: &str,
) -> Result<Download> {
    let io = |operation: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { operation, path, source }
    };
    let mut problem = String::new();
    for _ in 0..2 {
        let incoming = incoming_dir.join(format!("{}.part", uuid::Uuid::new_v4().simple()));
        let checked = match store.get_to_file(key, &incoming).await {
            Ok(_) => hash_file(&incoming).await,
            Err(error) => Err(error),
        };
        let (bytes, actual) = match checked {
            Ok(found) => found,
            Err(error) => {
                let _ = tokio::fs::remove_file(&incoming).await;
                return Err(error);
            }
        };
        if bytes == expected_bytes && actual == expected_sha256 {
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(io("creating a cache directory", parent))?;
            }
            tokio::fs::rename(&incoming, target).await.map_err(io("moving a verified download into place", target))?;
            return Ok(Download::Verified);
        }
        let _ = tokio::fs::remove_file(&incoming).await;
        problem = format!(
            "downloaded {bytes} bytes with sha256 {actual}; the catalog records {expected_bytes} bytes with sha256 \
             {expected_sha256}"
        );
        tracing::warn!(key, error_code = "input_corrupt", %problem, "a downloaded file did not verify");
    }
    Ok(Download::Mismatch(problem))
}

/// An object read into memory and checked against what the catalog recorded
/// ([`fetch_verified`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Exactly the expected content.
    Verified(bytes::Bytes),
    /// Two reads in a row did not match; what the last one had instead.
    Mismatch(String),
}

/// Reads `key` into memory and checks its size and SHA-256, once more on a mismatch (a torn
/// read is retried, a corrupt object is reported). Meant for small objects: the whole object
/// is held in memory.
pub async fn fetch_verified(
    store: &dyn ObjectStore,
    key: &str,
    expected_bytes: u64,
    expected_sha256: &str,
) -> Result<Fetched> {
    let mut problem = String::new();
    for _ in 0..2 {
        let data = store.get(key).await?;
        let (bytes, actual) = (data.len() as u64, hex::encode(Sha256::digest(&data)));
        if bytes == expected_bytes && actual == expected_sha256 {
            return Ok(Fetched::Verified(data));
        }
        problem = format!(
            "downloaded {bytes} bytes with sha256 {actual}; the catalog records {expected_bytes} bytes with sha256 \
             {expected_sha256}"
        );
        tracing::warn!(key, error_code = "input_corrupt", %problem, "a downloaded file did not verify");
    }
    Ok(Fetched::Mismatch(problem))
}

/// [`download_verified`] for a scratch file that lives no longer than the work reading it
/// (compaction, export): the object is read into memory, checked there ([`fetch_verified`]),
/// and written to `target` once, without the temporary file, second read and fsyncs a cache
/// entry needs (a crash loses the scratch directory with the attempt). Meant for small
/// objects: the whole object is held in memory while it is checked and written.
pub async fn fetch_verified_scratch(
    store: &dyn ObjectStore,
    key: &str,
    target: &Path,
    expected_bytes: u64,
    expected_sha256: &str,
) -> Result<Download> {
    match fetch_verified(store, key, expected_bytes, expected_sha256).await? {
        Fetched::Verified(data) => {
            let owned = target.to_owned();
            tokio::task::spawn_blocking(move || std::fs::write(&owned, &data))
                .await
                .map_err(|error| std::io::Error::other(error.to_string()))
                .and_then(|written| written)
                .map_err(|source| Error::Io { operation: "writing a scratch file", path: target.to_owned(), source })?;
            Ok(Download::Verified)
        }
        Fetched::Mismatch(problem) => Ok(Download::Mismatch(problem)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalStore;
    use bytes::Bytes;

    #[tokio::test]
    async fn keeps_only_content_that_verifies() {
        let dir = tempfile::tempdir().expect("dir");
        let store = LocalStore::new(dir.path().join("store")).expect("store");
        store.put("a/file.parquet", Bytes::from_static(b"hello")).await.expect("put");
        let sha = hex::encode(Sha256::digest(b"hello"));
        assert!(is_sha256(&sha) && !is_sha256("../etc") && !is_sha256(&sha.to_uppercase()));
        let incoming = dir.path().join("incoming");
        std::fs::create_dir_all(&incoming).expect("incoming");
        let target = dir.path().join("cache/ab/file.parquet");

        let wrong = download_verified(&store, "a/file.parquet", &incoming, &target, 5, &"0".repeat(64)).await;
        assert!(matches!(wrong.expect("downloaded"), Download::Mismatch(problem) if problem.contains("5 bytes")));
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(&incoming).expect("list").count(), 0, "no scratch file left");

        let missing = download_verified(&store, "a/none.parquet", &incoming, &target, 5, &sha).await;
        assert_eq!(missing.expect_err("missing").error_code(), "object_not_found");

        let good = download_verified(&store, "a/file.parquet", &incoming, &target, 5, &sha).await.expect("ok");
        assert_eq!(good, Download::Verified);
        assert_eq!(std::fs::read(&target).expect("read"), b"hello");
        assert_eq!(hash_file(&target).await.expect("hash"), (5, sha));
    }

    #[tokio::test]
    async fn scratch_fetches_write_only_content_that_verifies() {
        let dir = tempfile::tempdir().expect("dir");
        let store = LocalStore::new(dir.path().join("store")).expect("store");
        store.put("a/file.parquet", Bytes::from_static(b"hello")).await.expect("put");
        let sha = hex::encode(Sha256::digest(b"hello"));
        let target = dir.path().join("scratch.parquet");

        let wrong = fetch_verified_scratch(&store, "a/file.parquet", &target, 5, &"0".repeat(64)).await;
        assert!(matches!(wrong.expect("fetched"), Download::Mismatch(problem) if problem.contains("5 bytes")));
        assert!(!target.exists(), "nothing written for content that does not verify");
        let short = fetch_verified_scratch(&store, "a/file.parquet", &target, 6, &sha).await.expect("fetched");
        assert!(matches!(short, Download::Mismatch(_)) && !target.exists());

        let missing = fetch_verified_scratch(&store, "a/none.parquet", &target, 5, &sha).await;
        assert_eq!(missing.expect_err("missing").error_code(), "object_not_found");

        let good = fetch_verified_scratch(&store, "a/file.parquet", &target, 5, &sha).await.expect("ok");
        assert_eq!(good, Download::Verified);
        assert_eq!(std::fs::read(&target).expect("read"), b"hello");
    }
}
