//! The conformance suite against the local-filesystem backend, bare and behind the
//! prefix decorator.

use duckmesh_storage::testing::{self, ConformanceOptions};
use duckmesh_storage::{LocalStore, ObjectStore, PrefixStore};

fn local_store() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::new(dir.path().join("objects")).expect("local store");
    (dir, store)
}

macro_rules! conformance_tests {
    ($($name:ident => |$store:ident| $body:expr;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_dir, local) = local_store();
                let $store: &dyn ObjectStore = &local;
                $body.await;
            }
        )*
    };
}

conformance_tests! {
    put_get_round_trip => |store| testing::put_get_round_trip(store);
    empty_objects => |store| testing::empty_objects(store);
    overwrite_replaces => |store| testing::overwrite_replaces(store);
    get_range => |store| testing::get_range(store);
    head_reports_metadata => |store| testing::head_reports_metadata(store);
    list_by_prefix => |store| testing::list_by_prefix(store);
    list_paginates => |store| testing::list_paginates(store, 1100);
    delete_is_idempotent => |store| testing::delete_is_idempotent(store);
    not_found_is_typed => |store| testing::not_found_is_typed(store);
    invalid_keys_rejected => |store| testing::invalid_keys_rejected(store);
    put_file_single_and_multipart => |store| testing::put_file_single_and_multipart(store, 13 * 1024 * 1024);
    get_to_file_round_trip => |store| testing::get_to_file_round_trip(store);
    presigned_get_is_fetchable => |store| testing::presigned_get_is_fetchable(store);
    keys_with_special_characters => |store| testing::keys_with_special_characters(store);
}

#[tokio::test]
async fn whole_suite_behind_prefix_store() {
    let (_dir, local) = local_store();
    let root = local.root().to_owned();
    let scoped = PrefixStore::new(local, "tenant-a/lake").expect("prefix store");
    testing::run_all(&scoped, ConformanceOptions { large_file_size: 3 * 1024 * 1024, list_objects: 300 }).await;
    // Everything landed under the prefix.
    let top: Vec<_> =
        std::fs::read_dir(&root).expect("read root").map(|entry| entry.expect("entry").file_name()).collect();
    assert_eq!(top, ["tenant-a"]);
}

#[tokio::test]
async fn prefix_store_rejects_bad_prefixes_and_reports_relative_keys() {
    let (_dir, local) = local_store();
    for prefix in ["", "/abs", "a//b", "../up"] {
        let error = PrefixStore::new(local.clone(), prefix).expect_err(prefix);
        assert_eq!(error.error_code(), "invalid_object_key");
    }
    let scoped = PrefixStore::new(local.clone(), "scope/").expect("prefix store");
    assert_eq!(scoped.prefix(), "scope/");
    match scoped.get("missing").await {
        Err(duckmesh_storage::Error::NotFound { key }) => assert_eq!(key, "missing"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    scoped.put("x/y", bytes::Bytes::from_static(b"1")).await.expect("put");
    assert_eq!(scoped.head("x/y").await.expect("head").key, "x/y");
    assert_eq!(local.head("scope/x/y").await.expect("head").key, "scope/x/y");
}
