//! The conformance suite against the S3 backend on a real S3-compatible server:
//! `moto_server` started by the harness, or the server named by
//! `DUCKMESH_TEST_S3_ENDPOINT` (e.g. MinIO).

use std::time::Duration;

use bytes::Bytes;
use duckmesh_storage::testing::{self, MotoServer};
use duckmesh_storage::{Error, ObjectStore, Operation, S3Config, S3Store};

/// Multipart part size for the tests: S3's minimum, so a 13 MiB file takes 3 parts.
const PART_SIZE: u64 = 5 * 1024 * 1024;

async fn server() -> &'static MotoServer {
    MotoServer::shared().await.expect("S3 test server")
}

async fn store_with(adjust: impl FnOnce(&mut S3Config)) -> S3Store {
    let mut config = server().await.scoped_config();
    config.part_size = PART_SIZE;
    adjust(&mut config);
    S3Store::new(config).await.expect("S3 store")
}

async fn store() -> S3Store {
    store_with(|_| {}).await
}

macro_rules! conformance_tests {
    ($($name:ident => |$store:ident| $body:expr;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let s3 = store().await;
                let $store: &dyn ObjectStore = &s3;
                $body.await;
                assert_eq!(s3.counters().total_retries(), 0, "no faults, so no retries");
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
    delete_is_idempotent => |store| testing::delete_is_idempotent(store);
    not_found_is_typed => |store| testing::not_found_is_typed(store);
    invalid_keys_rejected => |store| testing::invalid_keys_rejected(store);
    get_to_file_round_trip => |store| testing::get_to_file_round_trip(store);
    presigned_get_is_fetchable => |store| testing::presigned_get_is_fetchable(store);
    keys_with_special_characters => |store| testing::keys_with_special_characters(store);
}

#[tokio::test]
async fn list_paginates_past_1000_keys() {
    let s3 = store().await;
    testing::list_paginates(&s3, 1100).await;
    let pages = s3.counters().counts(Operation::ListObjects).requests;
    // Two listings (before and after deleting), the first one needing two pages.
    assert!(pages >= 3, "expected a second page, saw {pages} list requests");
}

#[tokio::test]
async fn list_paginates_with_a_small_page_size() {
    let s3 = store_with(|config| config.list_page_size = 7).await;
    testing::list_paginates(&s3, 50).await;
    let pages = s3.counters().counts(Operation::ListObjects).requests;
    // 50 keys at 7 per page: 8 pages, then one for the empty listing.
    assert!(pages >= 9, "expected 8+ pages, saw {pages} list requests");
}

#[tokio::test]
async fn put_file_uses_multipart_for_large_files() {
    let s3 = store().await;
    testing::put_file_single_and_multipart(&s3, 13 * 1024 * 1024).await;
    let counters = s3.counters();
    assert_eq!(counters.counts(Operation::CreateMultipartUpload).requests, 1);
    assert_eq!(counters.counts(Operation::UploadPart).requests, 3);
    assert_eq!(counters.counts(Operation::CompleteMultipartUpload).requests, 1);
    assert_eq!(counters.counts(Operation::AbortMultipartUpload).requests, 0);
    assert_eq!(counters.total_retries(), 0);
}

#[tokio::test]
async fn whole_suite_through_the_trait_object() {
    let s3: std::sync::Arc<dyn ObjectStore> = std::sync::Arc::new(store().await);
    testing::run_all(s3.as_ref(), testing::ConformanceOptions { large_file_size: 11 * 1024 * 1024, list_objects: 60 })
        .await;
}

#[tokio::test]
async fn stores_are_scoped_by_prefix() {
    let server = server().await;
    let a = S3Store::new(server.scoped_config()).await.expect("store a");
    let b = S3Store::new(server.scoped_config()).await.expect("store b");
    a.put("shared/name", Bytes::from_static(b"from a")).await.expect("put a");
    assert!(b.get("shared/name").await.expect_err("isolated").is_not_found());
    assert!(b.list("").await.expect("list b").is_empty());
    let listed = a.list("").await.expect("list a");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, "shared/name");

    let whole = S3Store::new(server.config()).await.expect("whole bucket");
    let prefix = a.config().prefix.clone().expect("prefix");
    let full = format!("{prefix}/shared/name");
    assert_eq!(whole.get(&full).await.expect("get via full key"), "from a");
}

#[tokio::test]
async fn missing_bucket_is_a_typed_permanent_error() {
    let server = server().await;
    let mut config = server.scoped_config();
    config.bucket = format!("duckmesh-missing-{}", std::process::id());
    let s3 = S3Store::new(config).await.expect("store");
    let error = s3.get("anything").await.expect_err("no bucket");
    assert!(matches!(error, Error::BucketNotFound { .. }), "expected BucketNotFound, got {error:?}");
    assert_eq!(error.error_code(), "object_store_bucket_not_found");
    assert!(!error.is_retryable());
    assert_eq!(s3.counters().total_retries(), 0);
}

#[tokio::test]
async fn presign_rejects_out_of_range_ttls() {
    let s3 = store().await;
    for ttl in [Duration::ZERO, Duration::from_secs(8 * 24 * 3600)] {
        let error = s3.presign_get("k", ttl).await.expect_err("bad ttl");
        assert_eq!(error.error_code(), "object_store_presign_failed");
    }
}

#[tokio::test]
async fn unreachable_endpoint_is_retried_then_unavailable() {
    // A port nobody listens on: every attempt is a connection failure.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let mut config = server().await.config_via(&format!("http://127.0.0.1:{port}"));
    config.retry.max_attempts = 3;
    let s3 = S3Store::new(config).await.expect("store");
    let error = s3.head("k").await.expect_err("nothing listens");
    assert!(error.is_retryable(), "{error:?}");
    assert_eq!(error.error_code(), "object_store_unavailable");
    let counts = s3.counters().counts(Operation::HeadObject);
    assert_eq!((counts.requests, counts.retries, counts.failures), (3, 2, 1));
}

#[tokio::test]
async fn owned_moto_server_stops_on_drop() {
    if server().await.is_external() {
        return; // An external server is not ours to stop.
    }
    let owned = MotoServer::start().await.expect("second moto_server");
    let address = owned.endpoint().strip_prefix("http://").expect("http endpoint").to_owned();
    let s3 = S3Store::new(owned.scoped_config()).await.expect("store");
    s3.put("alive", Bytes::from_static(b"1")).await.expect("put");
    drop(s3);
    drop(owned);
    let refused = std::net::TcpStream::connect(&address).is_err();
    assert!(refused, "moto_server still listening on {address} after drop");
}
