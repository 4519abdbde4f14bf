//! The conformance suite: the behaviour every [`ObjectStore`] backend promises.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::{Error, ObjectStore};

/// Knobs for [`run_all`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConformanceOptions {
    /// Size of the file [`put_file_single_and_multipart`] uploads; for S3 make it larger
    /// than two multipart parts.
    pub large_file_size: u64,
    /// Objects [`list_paginates`] creates; above 1000 it crosses S3's page size.
    pub list_objects: usize,
}

impl Default for ConformanceOptions {
    fn default() -> Self {
        Self { large_file_size: 13 * 1024 * 1024, list_objects: 1100 }
    }
}

/// Runs every check of the suite against `store`, one after the other.
pub async fn run_all(store: &dyn ObjectStore, options: ConformanceOptions) {
    put_get_round_trip(store).await;
    empty_objects(store).await;
    overwrite_replaces(store).await;
    get_range(store).await;
    head_reports_metadata(store).await;
    list_by_prefix(store).await;
    list_paginates(store, options.list_objects).await;
    delete_is_idempotent(store).await;
    not_found_is_typed(store).await;
    invalid_keys_rejected(store).await;
    put_file_single_and_multipart(store, options.large_file_size).await;
    get_to_file_round_trip(store).await;
    presigned_get_is_fetchable(store).await;
    keys_with_special_characters(store).await;
}

/// A fresh key namespace for one check, so checks never see each other's objects.
fn namespace(check: &str) -> String {
    format!("conformance/{check}-{}", hex::encode(rand::random::<[u8; 6]>()))
}

/// Deterministic pseudo-random content of `size` bytes (incompressible, position-dependent,
/// so misplaced ranges and parts are caught).
fn content(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..size)
        .map(|_| {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

fn keys(metas: &[crate::ObjectMeta]) -> Vec<String> {
    metas.iter().map(|meta| meta.key.clone()).collect()
}

async fn expect_not_found<T: std::fmt::Debug>(what: &str, result: impl std::future::Future<Output = crate::Result<T>>) {
    match result.await {
        Err(error @ Error::NotFound { .. }) => {
            assert_eq!(error.error_code(), "object_not_found");
            assert!(!error.is_retryable(), "{what}: not found must be permanent");
        }
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

/// `put` then `get` returns the same bytes, for small and medium objects.
pub async fn put_get_round_trip(store: &dyn ObjectStore) {
    let ns = namespace("round-trip");
    for (index, size) in [1usize, 1000, 256 * 1024].into_iter().enumerate() {
        let key = format!("{ns}/object-{index}.bin");
        let data = Bytes::from(content(size, index as u64));
        store.put(&key, data.clone()).await.expect("put");
        let read = store.get(&key).await.expect("get");
        assert_eq!(read.len(), size, "size of {key}");
        assert!(read == data, "content of {key} differs");
    }
}

/// Zero-byte objects exist, read back empty and report size 0.
pub async fn empty_objects(store: &dyn ObjectStore) {
    let key = format!("{}/empty", namespace("empty"));
    store.put(&key, Bytes::new()).await.expect("put empty");
    assert!(store.get(&key).await.expect("get empty").is_empty());
    assert_eq!(store.head(&key).await.expect("head empty").size, 0);
    assert!(store.get_range(&key, 0..0).await.expect("empty range of empty object").is_empty());
    assert_eq!(keys(&store.list(&key).await.expect("list")), [key]);
}

/// A second `put` replaces the object entirely (including when it is shorter).
pub async fn overwrite_replaces(store: &dyn ObjectStore) {
    let key = format!("{}/object", namespace("overwrite"));
    store.put(&key, Bytes::from_static(b"first version, rather long")).await.expect("put");
    let first = store.head(&key).await.expect("head");
    store.put(&key, Bytes::from_static(b"second")).await.expect("overwrite");
    assert_eq!(store.get(&key).await.expect("get"), "second");
    let second = store.head(&key).await.expect("head");
    assert_eq!(second.size, 6);
    if first.e_tag.is_some() && second.e_tag.is_some() {
        assert_ne!(first.e_tag, second.e_tag, "e_tag must change on rewrite");
    }
    assert_eq!(store.list(&key).await.expect("list").len(), 1);
}

/// Range reads return exactly the requested bytes; ranges outside the object fail with a
/// typed `InvalidRange`.
pub async fn get_range(store: &dyn ObjectStore) {
    let key = format!("{}/object", namespace("range"));
    let data = content(10_000, 7);
    store.put(&key, Bytes::from(data.clone())).await.expect("put");
    for range in [0..1u64, 0..10_000, 1234..5678, 9_999..10_000, 500..500, 10_000..10_000] {
        let read = store.get_range(&key, range.clone()).await.expect("range");
        let expected = &data[range.start as usize..range.end as usize];
        assert!(read == expected, "range {range:?} content differs");
    }
    for range in [9_000..10_001u64, 10_000..10_001, 20_000..20_010] {
        match store.get_range(&key, range.clone()).await {
            Err(error @ Error::InvalidRange { .. }) => {
                assert_eq!(error.error_code(), "invalid_object_range");
                assert!(!error.is_retryable());
            }
            other => panic!("range {range:?}: expected InvalidRange, got {other:?}"),
        }
    }
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = 10..5;
    assert!(matches!(store.get_range(&key, backwards).await, Err(Error::InvalidRange { .. })));
}

/// `head` reports the key, exact size, a recent modification time and an e_tag.
pub async fn head_reports_metadata(store: &dyn ObjectStore) {
    let key = format!("{}/object", namespace("head"));
    let before = SystemTime::now() - Duration::from_secs(300);
    store.put(&key, Bytes::from(content(4321, 1))).await.expect("put");
    let meta = store.head(&key).await.expect("head");
    assert_eq!(meta.key, key);
    assert_eq!(meta.size, 4321);
    assert!(meta.e_tag.is_some(), "e_tag missing");
    let modified = meta.last_modified.expect("last_modified missing");
    assert!(
        modified >= before && modified <= SystemTime::now() + Duration::from_secs(300),
        "last_modified {modified:?} is not recent"
    );
    let listed = store.list(&key).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, 4321);
}

/// `list` matches by plain string prefix, returns relative keys sorted, and sees nested
/// keys.
pub async fn list_by_prefix(store: &dyn ObjectStore) {
    let ns = namespace("list");
    let all = ["a/1.parquet", "a/2.parquet", "a/sub/3.parquet", "ab/4.parquet", "b/5.parquet", "manifest.json"];
    for key in all {
        store.put(&format!("{ns}/{key}"), Bytes::from_static(b"x")).await.expect("put");
    }
    let full = |names: &[&str]| -> Vec<String> { names.iter().map(|name| format!("{ns}/{name}")).collect() };
    assert_eq!(keys(&store.list(&format!("{ns}/")).await.expect("list")), full(&all));
    assert_eq!(keys(&store.list(&ns).await.expect("list")), full(&all));
    assert_eq!(
        keys(&store.list(&format!("{ns}/a/")).await.expect("list")),
        full(&["a/1.parquet", "a/2.parquet", "a/sub/3.parquet"])
    );
    assert_eq!(
        keys(&store.list(&format!("{ns}/a")).await.expect("list")),
        full(&["a/1.parquet", "a/2.parquet", "a/sub/3.parquet", "ab/4.parquet"])
    );
    assert_eq!(keys(&store.list(&format!("{ns}/a/sub/3")).await.expect("list")), full(&["a/sub/3.parquet"]));
    assert_eq!(keys(&store.list(&format!("{ns}/manifest.json")).await.expect("list")), full(&["manifest.json"]));
    assert!(store.list(&format!("{ns}/c/")).await.expect("list").is_empty());
    assert!(store.list(&format!("{ns}-missing/")).await.expect("list").is_empty());
    let everything = keys(&store.list("").await.expect("list everything"));
    for key in full(&all) {
        assert!(everything.contains(&key), "list(\"\") misses {key}");
    }
}

/// `list` returns all of `count` objects (crossing page boundaries when `count` exceeds
/// the backend's page size), each exactly once.
pub async fn list_paginates(store: &dyn ObjectStore, count: usize) {
    let ns = namespace("pages");
    let expected: BTreeSet<String> = (0..count).map(|i| format!("{ns}/k-{i:05}")).collect();
    futures::stream::iter(expected.iter())
        .map(|key| store.put(key, Bytes::from_static(b"p")))
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("put many");
    let listed = keys(&store.list(&format!("{ns}/")).await.expect("list many"));
    assert_eq!(listed.len(), count, "listed count");
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "not sorted or duplicated");
    assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), expected);
    futures::stream::iter(expected.iter())
        .map(|key| store.delete(key))
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("delete many");
    assert!(store.list(&format!("{ns}/")).await.expect("list").is_empty());
}

/// Deleting removes the object; deleting again (or a key that never existed) succeeds.
pub async fn delete_is_idempotent(store: &dyn ObjectStore) {
    let ns = namespace("delete");
    let key = format!("{ns}/object");
    let sibling = format!("{ns}/sibling");
    store.put(&key, Bytes::from_static(b"x")).await.expect("put");
    store.put(&sibling, Bytes::from_static(b"y")).await.expect("put");
    store.delete(&key).await.expect("delete");
    expect_not_found("get after delete", store.get(&key)).await;
    store.delete(&key).await.expect("second delete");
    store.delete(&format!("{ns}/never-existed")).await.expect("delete of missing key");
    store.delete(&format!("{ns}-missing-dir/object")).await.expect("delete under missing prefix");
    assert_eq!(keys(&store.list(&format!("{ns}/")).await.expect("list")), std::slice::from_ref(&sibling));
    assert_eq!(store.get(&sibling).await.expect("sibling intact"), "y");
}

/// Reading a missing object fails with the typed, permanent `NotFound`.
pub async fn not_found_is_typed(store: &dyn ObjectStore) {
    let ns = namespace("missing");
    let key = format!("{ns}/nothing-here");
    expect_not_found("get", store.get(&key)).await;
    expect_not_found("get_range", store.get_range(&key, 0..10)).await;
    expect_not_found("get_range empty", store.get_range(&key, 0..0)).await;
    expect_not_found("head", store.head(&key)).await;
    // A "directory" that only exists as a prefix of other keys is not an object either.
    store.put(&format!("{ns}/dir/child"), Bytes::from_static(b"x")).await.expect("put");
    expect_not_found("get of a prefix", store.get(&format!("{ns}/dir"))).await;
    expect_not_found("head of a prefix", store.head(&format!("{ns}/dir"))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let destination = dir.path().join("out.bin");
    expect_not_found("get_to_file", store.get_to_file(&key, &destination)).await;
    assert!(!destination.exists(), "failed download left a file behind");
    let leftovers = std::fs::read_dir(dir.path()).expect("read_dir").count();
    assert_eq!(leftovers, 0, "failed download left a temporary file behind");
}

/// Malformed keys fail every operation with `InvalidKey` before touching the store.
pub async fn invalid_keys_rejected(store: &dyn ObjectStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("source");
    std::fs::write(&file, b"data").expect("write source");
    let destination = dir.path().join("destination");
    for key in ["", "/leading", "trailing/", "a//b", "../escape", "a/../../b", "a/./b", "nul\0byte", "line\nbreak"] {
        let results: Vec<(&str, Result<(), Error>)> = vec![
            ("put", store.put(key, Bytes::from_static(b"x")).await),
            ("put_file", store.put_file(key, &file).await.map(drop)),
            ("get", store.get(key).await.map(drop)),
            ("get_range", store.get_range(key, 0..1).await.map(drop)),
            ("get_to_file", store.get_to_file(key, &destination).await.map(drop)),
            ("head", store.head(key).await.map(drop)),
            ("delete", store.delete(key).await),
            ("presign_get", store.presign_get(key, Duration::from_secs(60)).await.map(drop)),
        ];
        for (operation, result) in results {
            match result {
                Err(error @ Error::InvalidKey { .. }) => {
                    assert_eq!(error.error_code(), "invalid_object_key");
                    assert!(!error.is_retryable());
                }
                other => panic!("{operation}({key:?}): expected InvalidKey, got {other:?}"),
            }
        }
    }
    for prefix in ["/", "/a", "a//", "../"] {
        assert!(matches!(store.list(prefix).await, Err(Error::InvalidKey { .. })), "list({prefix:?}) must be rejected");
    }
    assert!(!destination.exists());
}

/// `put_file` uploads a small file and a large one (multipart on S3) intact; a missing
/// source file is a local I/O error.
pub async fn put_file_single_and_multipart(store: &dyn ObjectStore, large_size: u64) {
    let ns = namespace("put-file");
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, size) in [("small.bin", 1024u64), ("large.bin", large_size)] {
        let path = dir.path().join(name);
        let data = content(usize::try_from(size).expect("size fits memory"), size);
        std::fs::write(&path, &data).expect("write source");
        let key = format!("{ns}/{name}");
        let uploaded = store.put_file(&key, &path).await.expect("put_file");
        assert_eq!(uploaded, size);
        assert_eq!(store.head(&key).await.expect("head").size, size);
        let read = store.get(&key).await.expect("get");
        assert_eq!(hex::encode(Sha256::digest(&read)), hex::encode(Sha256::digest(&data)), "content of {key} differs");
        let tail = store.get_range(&key, size - 100..size).await.expect("tail range");
        assert!(tail == data[data.len() - 100..], "tail of {key} differs");
    }
    match store.put_file(&format!("{ns}/missing"), &dir.path().join("does-not-exist")).await {
        Err(error @ Error::Io { .. }) => assert!(!error.is_retryable()),
        other => panic!("put_file of a missing file: expected Io, got {other:?}"),
    }
    expect_not_found("object of a failed put_file", store.head(&format!("{ns}/missing"))).await;
}

/// `get_to_file` streams the object into place (creating parent directories, replacing an
/// existing file) and reports its metadata.
pub async fn get_to_file_round_trip(store: &dyn ObjectStore) {
    let key = format!("{}/object", namespace("to-file"));
    let data = content(300_000, 3);
    store.put(&key, Bytes::from(data.clone())).await.expect("put");
    let dir = tempfile::tempdir().expect("tempdir");
    let destination = dir.path().join("nested/cache/object.parquet");
    let meta = store.get_to_file(&key, &destination).await.expect("get_to_file");
    assert_eq!(meta.key, key);
    assert_eq!(meta.size, data.len() as u64);
    assert!(std::fs::read(&destination).expect("read back") == data);

    store.put(&key, Bytes::from_static(b"short")).await.expect("overwrite");
    let meta = store.get_to_file(&key, &destination).await.expect("get_to_file over existing file");
    assert_eq!(meta.size, 5);
    assert_eq!(std::fs::read(&destination).expect("read back"), b"short");
    let names: Vec<_> = std::fs::read_dir(destination.parent().expect("parent"))
        .expect("read_dir")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["object.parquet"], "temporary files left behind");
}

/// The presigned URL serves the object to a client without credentials.
pub async fn presigned_get_is_fetchable(store: &dyn ObjectStore) {
    let key = format!("{}/export result.parquet", namespace("presign"));
    let data = Bytes::from(content(70_000, 9));
    store.put(&key, data.clone()).await.expect("put");
    let url = store.presign_get(&key, Duration::from_secs(3600)).await.expect("presign");
    let fetched = super::fetch_url(&url).await.unwrap_or_else(|e| panic!("fetching the presigned URL failed: {e}"));
    assert!(fetched == data, "presigned content differs");
}

/// Keys with spaces, `=` (Hive partitions), `+`, `:`, `%`, other punctuation and
/// non-ASCII letters work for every operation, listing and presigning included.
pub async fn keys_with_special_characters(store: &dyn ObjectStore) {
    let ns = namespace("special");
    let names = [
        "date=2024-01-01/part 0.parquet",
        "region=eu-west/ü ñ 日本.parquet",
        "odd/(1)[2]{3};,@$!'~.json",
        "ts=2024-01-01T00:00:00+00:00/a+b c%20d.parquet",
    ];
    for (index, name) in names.iter().enumerate() {
        let key = format!("{ns}/{name}");
        let data = Bytes::from(format!("payload {index}"));
        store.put(&key, data.clone()).await.expect("put");
        assert_eq!(store.get(&key).await.expect("get"), data, "{key}");
        assert_eq!(store.head(&key).await.expect("head").key, key);
        let url = store.presign_get(&key, Duration::from_secs(60)).await.expect("presign");
        let fetched = super::fetch_url(&url).await.unwrap_or_else(|e| panic!("fetching presigned {key:?} failed: {e}"));
        assert_eq!(fetched, data, "{key}");
    }
    let mut expected: Vec<String> = names.iter().map(|name| format!("{ns}/{name}")).collect();
    expected.sort();
    assert_eq!(keys(&store.list(&format!("{ns}/")).await.expect("list")), expected);
    assert_eq!(
        keys(&store.list(&format!("{ns}/date=2024-01-01/")).await.expect("list")),
        [format!("{ns}/date=2024-01-01/part 0.parquet")]
    );
}
