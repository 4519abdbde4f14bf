//! Transient S3 failures injected by the fault proxy between the store and a real
//! S3-compatible server: operations must still succeed, every retry must be counted, and
//! a server that never recovers must surface as a typed, retryable error.

use std::time::Duration;

use bytes::Bytes;
use duckmesh_storage::testing::{self, FaultConfig, FaultKind, FaultProxy, MotoServer};
use duckmesh_storage::{Error, ObjectStore, Operation, RetryConfig, S3Config, S3Store};

const PART_SIZE: u64 = 5 * 1024 * 1024;

async fn server() -> &'static MotoServer {
    MotoServer::shared().await.expect("S3 test server")
}

/// A store that talks to the server through a proxy with `faults`.
async fn faulty_store(faults: FaultConfig, adjust: impl FnOnce(&mut S3Config)) -> (FaultProxy, S3Store) {
    let server = server().await;
    let proxy = FaultProxy::start(server.endpoint(), faults).await.expect("fault proxy");
    let mut config = server.config_via(&proxy.endpoint());
    config.part_size = PART_SIZE;
    config.retry =
        RetryConfig { base_delay: Duration::from_millis(5), max_delay: Duration::from_millis(100), max_attempts: 12 };
    adjust(&mut config);
    let store = S3Store::new(config).await.expect("S3 store");
    (proxy, store)
}

/// The conformance checks whose every request goes through the store (so not the
/// presigned-URL fetch, which is a plain client without retries).
async fn exercise(store: &dyn ObjectStore) {
    testing::put_get_round_trip(store).await;
    testing::empty_objects(store).await;
    testing::overwrite_replaces(store).await;
    testing::get_range(store).await;
    testing::head_reports_metadata(store).await;
    testing::list_by_prefix(store).await;
    testing::list_paginates(store, 40).await;
    testing::delete_is_idempotent(store).await;
    testing::not_found_is_typed(store).await;
    testing::put_file_single_and_multipart(store, 11 * 1024 * 1024).await;
    testing::get_to_file_round_trip(store).await;
}

#[tokio::test]
async fn thirty_percent_slow_down_every_operation_still_succeeds() {
    let (proxy, s3) = faulty_store(FaultConfig::slow_down(0.3, 42), |_| {}).await;
    exercise(&s3).await;

    let stats = proxy.stats();
    let counters = s3.counters();
    assert!(stats.injected_failures > 10, "{stats:?}");
    assert!(counters.total_retries() > 0);
    // Every injected 503 was answered by exactly one counted retry, and nothing gave up.
    assert_eq!(counters.total_retries(), stats.injected_failures, "{:?}", counters.snapshot());
    assert_eq!(counters.total_failures(), count_expected_not_found(&counters));
    for operation in [Operation::PutObject, Operation::GetObject, Operation::ListObjects] {
        assert!(counters.counts(operation).retries > 0, "no {operation} retries");
    }
}

/// `not_found_is_typed` and friends end in permanent NotFound on purpose; those are the only
/// failures allowed. Counting them from the counters keeps the assertion exact.
fn count_expected_not_found(counters: &duckmesh_storage::StoreCounters) -> u64 {
    counters.counts(Operation::GetObject).failures + counters.counts(Operation::HeadObject).failures
}

#[tokio::test]
async fn lost_responses_are_retried_idempotently() {
    // The server acts on the request, but the client sees a 503: retries repeat work that
    // already happened (including completing a multipart upload).
    let faults = FaultConfig { forward_failed: true, ..FaultConfig::slow_down(0.3, 7) };
    let (proxy, s3) = faulty_store(faults, |_| {}).await;
    exercise(&s3).await;
    assert!(proxy.stats().injected_failures > 10);
    assert_eq!(s3.counters().total_retries(), proxy.stats().injected_failures);
}

#[tokio::test]
async fn connection_resets_and_internal_errors_are_retried() {
    for (kind, seed) in [(FaultKind::ConnectionReset, 3), (FaultKind::InternalError, 4)] {
        let faults = FaultConfig { failure: kind, ..FaultConfig::slow_down(0.25, seed) };
        let (proxy, s3) = faulty_store(faults, |_| {}).await;
        testing::put_get_round_trip(&s3).await;
        testing::list_by_prefix(&s3).await;
        testing::put_file_single_and_multipart(&s3, 11 * 1024 * 1024).await;
        let injected = proxy.stats().injected_failures;
        assert!(injected > 0, "{kind:?}: nothing injected");
        assert_eq!(s3.counters().total_retries(), injected, "{kind:?}");
    }
}

#[tokio::test]
async fn slow_responses_time_out_and_are_retried() {
    let faults =
        FaultConfig { latency_rate: 0.3, latency: Duration::from_millis(1000), seed: 11, ..FaultConfig::default() };
    let (proxy, s3) = faulty_store(faults, |config| {
        config.attempt_timeout = Duration::from_millis(400);
    })
    .await;
    // Each key is written once, so a delayed write that the server applies after the client
    // gave up on it can only rewrite identical data.
    for index in 0..12 {
        let key = format!("slow/object-{index}");
        let data = Bytes::from(format!("payload {index}"));
        s3.put(&key, data.clone()).await.expect("put");
        assert_eq!(s3.get(&key).await.expect("get"), data);
        assert_eq!(s3.head(&key).await.expect("head").size, data.len() as u64);
    }
    assert_eq!(s3.list("slow/").await.expect("list").len(), 12);
    assert!(proxy.stats().delayed > 0);
    assert!(s3.counters().total_retries() > 0, "{:?}", s3.counters().snapshot());
    assert_eq!(s3.counters().total_failures(), 0);
}

#[tokio::test]
async fn a_server_that_never_recovers_surfaces_a_retryable_error() {
    let (proxy, s3) = faulty_store(FaultConfig::slow_down(1.0, 1), |config| {
        config.retry.max_attempts = 4;
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let destination = dir.path().join("out");
    let results: Vec<(&str, Operation, Result<(), Error>)> = vec![
        ("put", Operation::PutObject, s3.put("k", Bytes::from_static(b"x")).await),
        ("get", Operation::GetObject, s3.get("k").await.map(drop)),
        ("head", Operation::HeadObject, s3.head("k").await.map(drop)),
        ("list", Operation::ListObjects, s3.list("").await.map(drop)),
        ("delete", Operation::DeleteObject, s3.delete("k").await),
    ];
    for (name, operation, result) in results {
        match result {
            Err(error @ Error::Unavailable { attempts: 4, .. }) => {
                assert!(error.is_retryable(), "{name}");
                assert_eq!(error.error_code(), "object_store_unavailable");
                assert!(error.to_string().contains("HTTP 503"), "{name}: {error}");
            }
            other => panic!("{name}: expected Unavailable after 4 attempts, got {other:?}"),
        }
        let counts = s3.counters().counts(operation);
        assert_eq!((counts.requests, counts.retries, counts.failures), (4, 3, 1), "{name}");
    }
    assert!(s3.get_to_file("k", &destination).await.expect_err("down").is_retryable());
    assert!(!destination.exists());
    assert_eq!(proxy.stats().requests, 6 * 4);
}

#[tokio::test]
async fn failed_multipart_upload_is_aborted() {
    // Only part uploads (PUT) fail; creating and aborting the upload work.
    let faults = FaultConfig { only_method: Some(http::Method::PUT), ..FaultConfig::slow_down(1.0, 5) };
    let (_proxy, s3) = faulty_store(faults, |config| config.retry.max_attempts = 3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("large.bin");
    std::fs::write(&path, vec![7u8; 11 * 1024 * 1024]).expect("write");
    let error = s3.put_file("big/large.bin", &path).await.expect_err("parts fail");
    assert!(error.is_retryable(), "{error:?}");
    let counters = s3.counters();
    assert_eq!(counters.counts(Operation::CreateMultipartUpload).requests, 1);
    assert_eq!(counters.counts(Operation::AbortMultipartUpload).requests, 1);
    assert_eq!(counters.counts(Operation::AbortMultipartUpload).failures, 0);
    assert_eq!(counters.counts(Operation::CompleteMultipartUpload).requests, 0);

    let prefix = s3.config().prefix.clone().expect("scoped prefix");
    let uploads = s3
        .client()
        .list_multipart_uploads()
        .bucket(&s3.config().bucket)
        .prefix(prefix)
        .send()
        .await
        .expect("list uploads");
    assert!(uploads.uploads().is_empty(), "upload not aborted: {uploads:?}");
    assert!(s3.head("big/large.bin").await.expect_err("nothing").is_not_found());
}

#[tokio::test]
async fn access_denied_is_permanent_and_not_retried() {
    let faults = FaultConfig { failure: FaultKind::AccessDenied, ..FaultConfig::slow_down(1.0, 9) };
    let (proxy, s3) = faulty_store(faults, |_| {}).await;
    for (name, result) in [
        ("get", s3.get("k").await.map(drop)),
        ("head", s3.head("k").await.map(drop)),
        ("put", s3.put("k", Bytes::from_static(b"x")).await),
    ] {
        match result {
            Err(error @ Error::PermissionDenied { .. }) => {
                assert_eq!(error.error_code(), "object_store_permission_denied");
                assert!(!error.is_retryable());
            }
            other => panic!("{name}: expected PermissionDenied, got {other:?}"),
        }
    }
    assert_eq!(s3.counters().total_retries(), 0);
    assert_eq!(proxy.stats().requests, 3);
}

#[tokio::test]
async fn transparent_proxy_passes_the_whole_suite() {
    let (proxy, s3) = faulty_store(FaultConfig::default(), |_| {}).await;
    testing::run_all(&s3, testing::ConformanceOptions { large_file_size: 11 * 1024 * 1024, list_objects: 30 }).await;
    assert_eq!(proxy.stats().injected_failures, 0);
    assert_eq!(s3.counters().total_retries(), 0);
}

#[tokio::test]
async fn a_path_filter_fails_only_the_keys_under_it() {
    let faults = FaultConfig {
        failure: FaultKind::AccessDenied,
        only_path_containing: Some("/_catalog/".into()),
        ..FaultConfig::slow_down(1.0, 11)
    };
    let (proxy, s3) = faulty_store(faults, |_| {}).await;
    s3.put("data/part-0.parquet", Bytes::from_static(b"x")).await.expect("a key outside the filter");
    match s3.put("_catalog/default/events/snapshots/1.json", Bytes::from_static(b"{}")).await {
        Err(error @ Error::PermissionDenied { .. }) => assert!(!error.is_retryable()),
        other => panic!("expected PermissionDenied under the filter, got {other:?}"),
    }
    assert_eq!(proxy.stats().injected_failures, 1);
}
