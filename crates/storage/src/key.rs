//! Object keys: validation shared by every backend, and the bucket layout helpers that
//! the worker, the coordinator and GC agree on.
//!
//! A key is a `/`-separated relative path such as `orders/attempts/daily-clean/3/part-00000.parquet`.
//! Keys are validated the same way for every backend so that a key accepted by the local
//! store in dev mode is also accepted by S3, and can never escape the store's root.

use crate::error::{Error, Result};

/// The longest key accepted, in bytes (S3's own limit for a whole key).
pub const MAX_KEY_BYTES: usize = 1024;

/// Checks that `key` is a valid object key.
///
/// Rules: not empty, at most [`MAX_KEY_BYTES`] bytes, no leading or trailing `/`, no empty
/// segments (`a//b`), no `.` or `..` segments, and no NUL or other control characters.
pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(invalid(key, "key is empty"));
    }
    if key.ends_with('/') {
        return Err(invalid(key, "key ends with '/'"));
    }
    validate_path(key)
}

/// Checks that `prefix` is a valid listing prefix.
///
/// The empty prefix (everything) is valid. Otherwise the rules of [`validate_key`] apply,
/// except that a trailing `/` is allowed. A prefix matches keys by plain string prefix, as
/// in S3: `data/a` matches `data/a/x` and `data/ab`.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    validate_path(prefix.strip_suffix('/').unwrap_or(prefix)).map_err(|error| match error {
        Error::InvalidKey { reason, .. } => invalid(prefix, reason),
        other => other,
    })
}

fn validate_path(path: &str) -> Result<()> {
    if path.len() > MAX_KEY_BYTES {
        return Err(invalid(path, "key is longer than 1024 bytes"));
    }
    if path.starts_with('/') {
        return Err(invalid(path, "key starts with '/'"));
    }
    if path.contains('\0') {
        return Err(invalid(path, "key contains a NUL character"));
    }
    if path.chars().any(char::is_control) {
        return Err(invalid(path, "key contains a control character"));
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err(invalid(path, "key has an empty segment")),
            "." | ".." => return Err(invalid(path, "key has a '.' or '..' segment")),
            _ => {}
        }
    }
    Ok(())
}

fn invalid(key: &str, reason: &'static str) -> Error {
    Error::InvalidKey { key: key.to_owned(), reason }
}

/// Checks that `name` can be used as exactly one key segment (a dataset or task name).
fn validate_segment(name: &str) -> Result<()> {
    if name.contains('/') {
        return Err(invalid(name, "name must not contain '/'"));
    }
    validate_key(name)
}

/// The bucket layout: where a task attempt stages its Parquet files and manifest.
///
/// Keys are relative to the store's own prefix (`DUCKMESH_S3_PREFIX` for S3, the root
/// directory for the local store), so the full S3 key of a part file is
/// `<prefix>/<dataset>/attempts/<task>/<attempt>/part-00000.parquet`.
pub mod layout {
    use super::validate_segment;
    use crate::error::Result;

    /// File name of the manifest written next to an attempt's data files.
    pub const MANIFEST_FILE: &str = "manifest.json";

    /// The prefix (ending in `/`) under which all staged attempts of `dataset` live.
    pub fn attempts_prefix(dataset: &str) -> Result<String> {
        validate_segment(dataset)?;
        Ok(format!("{dataset}/attempts/"))
    }

    /// The prefix (ending in `/`) of one attempt's files:
    /// `<dataset>/attempts/<task>/<attempt>/`.
    pub fn attempt_prefix(dataset: &str, task: &str, attempt: u32) -> Result<String> {
        validate_segment(dataset)?;
        validate_segment(task)?;
        Ok(format!("{dataset}/attempts/{task}/{attempt}/"))
    }

    /// The key of data file number `index` of an attempt:
    /// `<dataset>/attempts/<task>/<attempt>/part-<index:05>.parquet`.
    pub fn part_key(dataset: &str, task: &str, attempt: u32, index: u32) -> Result<String> {
        Ok(format!("{}part-{index:05}.parquet", attempt_prefix(dataset, task, attempt)?))
    }

    /// The key of an attempt's manifest: `<dataset>/attempts/<task>/<attempt>/manifest.json`.
    pub fn manifest_key(dataset: &str, task: &str, attempt: u32) -> Result<String> {
        Ok(format!("{}{MANIFEST_FILE}", attempt_prefix(dataset, task, attempt)?))
    }

    /// The prefix (ending in `/`) under which all ingest batches of `dataset` live.
    pub fn ingests_prefix(dataset: &str) -> Result<String> {
        validate_segment(dataset)?;
        Ok(format!("{dataset}/ingest/"))
    }

    /// The prefix (ending in `/`) of one ingest batch, named by its claim's fencing token
    /// (unique across the installation): `<dataset>/ingest/<fence>/`.
    pub fn ingest_prefix(dataset: &str, fence: i64) -> Result<String> {
        validate_segment(dataset)?;
        Ok(format!("{dataset}/ingest/{fence}/"))
    }

    /// The key of data file number `index` of an ingest batch:
    /// `<dataset>/ingest/<fence>/part-<index:05>.parquet`.
    pub fn ingest_part_key(dataset: &str, fence: i64, index: u32) -> Result<String> {
        Ok(format!("{}part-{index:05}.parquet", ingest_prefix(dataset, fence)?))
    }

    /// The key of an ingest batch's manifest: `<dataset>/ingest/<fence>/manifest.json`.
    pub fn ingest_manifest_key(dataset: &str, fence: i64) -> Result<String> {
        Ok(format!("{}{MANIFEST_FILE}", ingest_prefix(dataset, fence)?))
    }

    /// The root (ending in `/`) of the catalog's own records: commit records and GC
    /// checkpoints, from which `duckmesh catalog rebuild` restores a lost catalog. No dataset
    /// can be named `_catalog` (names are DNS labels).
    pub const CATALOG_ROOT: &str = "_catalog/";

    /// The prefix (ending in `/`) of one dataset's records: `_catalog/<namespace>/<dataset>/`.
    pub fn catalog_dataset_prefix(namespace: &str, dataset: &str) -> Result<String> {
        validate_segment(namespace)?;
        validate_segment(dataset)?;
        Ok(format!("{CATALOG_ROOT}{namespace}/{dataset}/"))
    }

    /// The prefix (ending in `/`) of a dataset's commit records:
    /// `_catalog/<namespace>/<dataset>/snapshots/`.
    pub fn commit_records_prefix(namespace: &str, dataset: &str) -> Result<String> {
        Ok(format!("{}snapshots/", catalog_dataset_prefix(namespace, dataset)?))
    }

    /// The key of snapshot `snapshot`'s commit record, the id zero-padded to 20 digits so keys
    /// sort by id: `_catalog/<namespace>/<dataset>/snapshots/<id:020>.json`.
    pub fn commit_record_key(namespace: &str, dataset: &str, snapshot: i64) -> Result<String> {
        Ok(format!("{}{snapshot:020}.json", commit_records_prefix(namespace, dataset)?))
    }

    /// The prefix (ending in `/`) of a dataset's GC checkpoints:
    /// `_catalog/<namespace>/<dataset>/checkpoints/`.
    pub fn checkpoints_prefix(namespace: &str, dataset: &str) -> Result<String> {
        Ok(format!("{}checkpoints/", catalog_dataset_prefix(namespace, dataset)?))
    }

    /// The key of the checkpoint at snapshot `snapshot`:
    /// `_catalog/<namespace>/<dataset>/checkpoints/<id:020>.json`.
    pub fn checkpoint_key(namespace: &str, dataset: &str, snapshot: i64) -> Result<String> {
        Ok(format!("{}{snapshot:020}.json", checkpoints_prefix(namespace, dataset)?))
    }

    /// The snapshot id a commit record's or checkpoint's key names (`None` for another key).
    pub fn record_snapshot_id(key: &str) -> Option<i64> {
        let name = key.rsplit('/').next()?.strip_suffix(".json")?;
        if name.len() != 20 || !name.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        name.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for key in [
            "a",
            "a/b/c.parquet",
            "orders/attempts/daily/1/part-00000.parquet",
            "date=2024-01-01/part 0 ü.parquet",
            "a/.hidden",
            "a/..b",
        ] {
            validate_key(key).unwrap_or_else(|e| panic!("{key:?} rejected: {e}"));
        }
    }

    #[test]
    fn rejects_bad_keys_with_a_typed_error() {
        let long = "x".repeat(MAX_KEY_BYTES + 1);
        for key in ["", "/a", "a/", "a//b", "../a", "a/../b", "a/./b", ".", "a\0b", "a\nb", long.as_str()] {
            let error = validate_key(key).expect_err(key);
            assert_eq!(error.error_code(), "invalid_object_key", "{key:?}");
            assert!(!error.is_retryable());
        }
    }

    #[test]
    fn prefixes_allow_empty_and_trailing_slash() {
        for prefix in ["", "a", "a/", "a/b/", "a/b"] {
            validate_prefix(prefix).unwrap_or_else(|e| panic!("{prefix:?} rejected: {e}"));
        }
        for prefix in ["/", "/a", "a//", "a//b/", "../", "a/\0"] {
            let error = validate_prefix(prefix).expect_err(prefix);
            assert!(matches!(&error, Error::InvalidKey { key, .. } if key == prefix), "{error}");
        }
    }

    #[test]
    fn layout_builds_attempt_scoped_keys() {
        assert_eq!(
            layout::part_key("orders", "daily-clean", 3, 7).expect("valid"),
            "orders/attempts/daily-clean/3/part-00007.parquet"
        );
        assert_eq!(
            layout::manifest_key("orders", "daily-clean", 3).expect("valid"),
            "orders/attempts/daily-clean/3/manifest.json"
        );
        assert_eq!(layout::attempts_prefix("orders").expect("valid"), "orders/attempts/");
        assert!(layout::attempt_prefix("a/b", "t", 1).is_err());
        assert!(layout::attempt_prefix("orders", "..", 1).is_err());
        assert!(layout::attempt_prefix("", "t", 1).is_err());
    }

    #[test]
    fn layout_builds_catalog_record_keys() {
        let key = layout::commit_record_key("default", "orders", 42).expect("valid");
        assert_eq!(key, "_catalog/default/orders/snapshots/00000000000000000042.json");
        validate_key(&key).expect("a valid object key");
        assert_eq!(layout::record_snapshot_id(&key), Some(42));
        let key = layout::checkpoint_key("default", "orders", 7).expect("valid");
        assert_eq!(key, "_catalog/default/orders/checkpoints/00000000000000000007.json");
        assert_eq!(layout::record_snapshot_id(&key), Some(7));
        assert_eq!(layout::record_snapshot_id("_catalog/default/orders/snapshots/42.json"), None);
        assert_eq!(layout::record_snapshot_id("_catalog/default/orders/snapshots/x"), None);
        assert!(layout::commit_records_prefix("a/b", "orders").is_err());
        assert!(layout::checkpoints_prefix("default", "..").is_err());
    }

    #[test]
    fn layout_builds_ingest_batch_keys() {
        assert_eq!(layout::ingests_prefix("orders").expect("valid"), "orders/ingest/");
        assert_eq!(layout::ingest_prefix("orders", 42).expect("valid"), "orders/ingest/42/");
        assert_eq!(layout::ingest_part_key("orders", 42, 0).expect("valid"), "orders/ingest/42/part-00000.parquet");
        assert_eq!(layout::ingest_manifest_key("orders", 42).expect("valid"), "orders/ingest/42/manifest.json");
        for key in [layout::ingest_part_key("orders", 7, 3), layout::ingest_manifest_key("orders", 7)] {
            validate_key(&key.expect("valid")).expect("a valid object key");
        }
        assert!(layout::ingest_prefix("a/b", 1).is_err());
        assert!(layout::ingest_prefix("..", 1).is_err());
        assert!(layout::ingests_prefix("").is_err());
    }
}
