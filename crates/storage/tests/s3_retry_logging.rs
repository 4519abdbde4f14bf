//! Retry log events: emitted once per counted retry with the documented fields, and never
//! carrying credentials or presigned-URL signatures.
//!
//! This is a test binary of its own: `tracing` caches per-callsite interest process-wide,
//! so a thread-scoped subscriber only sees every event when no concurrently running test
//! (without a subscriber) hits the same callsites first.

use std::time::Duration;

use bytes::Bytes;
use duckmesh_storage::testing::{FaultConfig, FaultProxy, MotoServer};
use duckmesh_storage::{ObjectStore, RetryConfig, S3Store};

/// A minimal subscriber that records every event as text.
mod capture {
    use std::fmt::Write as _;
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    #[derive(Clone, Default)]
    pub struct Captured(pub Arc<Mutex<Vec<(tracing::Level, String, String)>>>);

    struct Line(String);

    impl Visit for Line {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, " {}={:?}", field.name(), value);
        }
    }

    impl Subscriber for Captured {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut line = Line(String::new());
            event.record(&mut line);
            if let Ok(mut events) = self.0.lock() {
                events.push((*event.metadata().level(), event.metadata().target().to_owned(), line.0));
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}

#[tokio::test]
async fn retries_are_logged_without_secrets() {
    let captured = capture::Captured::default();
    let _guard = tracing::subscriber::set_default(captured.clone());
    let server = MotoServer::start().await.expect("S3 test server");
    let proxy = FaultProxy::start(server.endpoint(), FaultConfig::slow_down(0.5, 21)).await.expect("fault proxy");
    let mut config = server.config_via(&proxy.endpoint());
    config.retry =
        RetryConfig { base_delay: Duration::from_millis(5), max_delay: Duration::from_millis(100), max_attempts: 12 };
    let s3 = S3Store::new(config).await.expect("S3 store");
    for index in 0..10 {
        s3.put(&format!("logged/{index}"), Bytes::from_static(b"x")).await.expect("put");
    }
    let url = s3.presign_get("logged/0", Duration::from_secs(60)).await.expect("presign");
    let signature =
        url.split(['?', '&']).find(|part| part.starts_with("X-Amz-Signature=")).expect("signed URL").to_owned();
    let secret = server.config().credentials.expect("static").secret_access_key;

    let events = captured.0.lock().expect("events").clone();
    let retries: Vec<_> = events
        .iter()
        .filter(|(_, target, line)| target.starts_with("duckmesh_storage") && line.contains("retrying"))
        .collect();
    assert_eq!(retries.len() as u64, s3.counters().total_retries());
    assert!(!retries.is_empty());
    for (level, _, line) in &retries {
        assert_eq!(*level, tracing::Level::WARN);
        for field in [
            "operation=\"put_object\"",
            "attempt=",
            "delay_ms=",
            "error_code=\"object_store_unavailable\"",
            "HTTP 503 SlowDown",
        ] {
            assert!(line.contains(field), "{field} missing in {line}");
        }
    }
    for (_, target, line) in &events {
        assert!(!line.contains(&secret), "secret logged by {target}: {line}");
        assert!(!line.contains(&signature), "presigned URL logged by {target}: {line}");
    }
}
