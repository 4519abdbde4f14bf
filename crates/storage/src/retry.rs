//! Retries of transient object-store failures with jittered exponential backoff, and the
//! cheap atomic counters that make them observable.
//!
//! The SDK's own retry layer is switched off so that every retry goes through
//! [`run_with_retries`]: one place decides what is transient, counts it, logs it and
//! sleeps.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::error::{BoxError, Error, Result};

/// How transient failures are retried.
///
/// The delay before retry `n` (counting from 0) is `c·(1 + U[0,1))` where
/// `c = min(max_delay / 2, base_delay · 2^n)`: exponential growth with up to 100 % added
/// jitter, never longer than `max_delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Delay scale of the first retry (`DUCKMESH_S3_RETRY_BASE_MS`, default 100 ms).
    pub base_delay: Duration,
    /// Upper bound of any single delay (`DUCKMESH_S3_RETRY_MAX_DELAY_MS`, default 5 s).
    pub max_delay: Duration,
    /// Attempts in total, the first one included (`DUCKMESH_S3_RETRY_MAX_ATTEMPTS`,
    /// default 8). `1` disables retries.
    pub max_attempts: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(5), max_attempts: 8 }
    }
}

impl RetryConfig {
    /// Reads the retry knobs from the environment, falling back to the defaults.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`RetryConfig::from_env`] with a custom variable lookup (for tests and for
    /// callers that keep configuration elsewhere); the knobs are [`StoreArgs`](crate::StoreArgs)'.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        crate::StoreArgs::from_lookup(lookup)?.retry_config()
    }

    /// Checks that the configuration makes sense.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::Config { message: "retry max_attempts must be at least 1".into() });
        }
        if self.max_delay < self.base_delay {
            return Err(Error::Config { message: "retry max_delay must not be below base_delay".into() });
        }
        Ok(())
    }

    /// The delays to sleep before each retry; yields `max_attempts - 1` values.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        // backon's jitter adds U[0,1)·c to a delay c that it caps at its own max, so capping
        // c at half our max keeps every jittered delay at or below `max_delay`.
        let half_max = self.max_delay / 2;
        ExponentialBuilder::new()
            .with_min_delay(self.base_delay.min(half_max))
            .with_max_delay(half_max)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .build()
    }
}

/// The store requests that are counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Single-request upload.
    PutObject,
    /// Start of a multipart upload.
    CreateMultipartUpload,
    /// Upload of one part.
    UploadPart,
    /// Completion of a multipart upload.
    CompleteMultipartUpload,
    /// Abort of a failed multipart upload.
    AbortMultipartUpload,
    /// Download (whole object, range, or to a file).
    GetObject,
    /// Metadata lookup.
    HeadObject,
    /// One page of a listing.
    ListObjects,
    /// Delete.
    DeleteObject,
}

impl Operation {
    /// Every operation, in a fixed order.
    pub const ALL: [Operation; 9] = [
        Operation::PutObject,
        Operation::CreateMultipartUpload,
        Operation::UploadPart,
        Operation::CompleteMultipartUpload,
        Operation::AbortMultipartUpload,
        Operation::GetObject,
        Operation::HeadObject,
        Operation::ListObjects,
        Operation::DeleteObject,
    ];

    /// A stable snake_case name, suitable as a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::PutObject => "put_object",
            Operation::CreateMultipartUpload => "create_multipart_upload",
            Operation::UploadPart => "upload_part",
            Operation::CompleteMultipartUpload => "complete_multipart_upload",
            Operation::AbortMultipartUpload => "abort_multipart_upload",
            Operation::GetObject => "get_object",
            Operation::HeadObject => "head_object",
            Operation::ListObjects => "list_objects",
            Operation::DeleteObject => "delete_object",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Default)]
struct OperationCounters {
    requests: AtomicU64,
    retries: AtomicU64,
    failures: AtomicU64,
}

/// Per-operation request, retry and failure counts of one store. Lock-free; share it as
/// an `Arc` and read it with [`StoreCounters::snapshot`] (e.g. from a Prometheus collector).
#[derive(Debug, Default)]
pub struct StoreCounters {
    operations: [OperationCounters; Operation::ALL.len()],
}

/// Counts of one operation at the time of a [`StoreCounters::snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationCounts {
    /// Which operation.
    pub operation: Operation,
    /// Requests sent, retries included.
    pub requests: u64,
    /// Requests that were retried after a transient failure.
    pub retries: u64,
    /// Operations that gave up: a permanent error, or transient errors until the retry
    /// budget was spent.
    pub failures: u64,
}

impl StoreCounters {
    /// Fresh counters, all zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Current counts of every operation, in [`Operation::ALL`] order.
    pub fn snapshot(&self) -> Vec<OperationCounts> {
        Operation::ALL.iter().map(|&operation| self.counts(operation)).collect()
    }

    /// Current counts of one operation.
    pub fn counts(&self, operation: Operation) -> OperationCounts {
        let counters = &self.operations[operation.index()];
        OperationCounts {
            operation,
            requests: counters.requests.load(Ordering::Relaxed),
            retries: counters.retries.load(Ordering::Relaxed),
            failures: counters.failures.load(Ordering::Relaxed),
        }
    }

    /// Retries summed over all operations.
    pub fn total_retries(&self) -> u64 {
        self.snapshot().iter().map(|c| c.retries).sum()
    }

    /// Requests summed over all operations.
    pub fn total_requests(&self) -> u64 {
        self.snapshot().iter().map(|c| c.requests).sum()
    }

    /// Failures summed over all operations.
    pub fn total_failures(&self) -> u64 {
        self.snapshot().iter().map(|c| c.failures).sum()
    }

    fn record_request(&self, operation: Operation) {
        self.operations[operation.index()].requests.fetch_add(1, Ordering::Relaxed);
    }

    fn record_retry(&self, operation: Operation) {
        self.operations[operation.index()].retries.fetch_add(1, Ordering::Relaxed);
    }

    fn record_failure(&self, operation: Operation) {
        self.operations[operation.index()].failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// The outcome of one failed attempt, as classified by the backend.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth retrying: throttling, 5xx, timeouts, connection trouble.
    Transient {
        /// What went wrong, for logs and the final error.
        message: String,
        /// The underlying error.
        source: Option<BoxError>,
    },
    /// Not worth retrying; returned as is.
    Permanent(Error),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Permanent(error)
    }
}

/// Runs `attempt` (given the 1-based attempt number) until it succeeds, fails permanently,
/// or has failed transiently `config.max_attempts` times, counting and logging as it goes.
pub(crate) async fn run_with_retries<T, F, Fut>(
    config: &RetryConfig,
    counters: &StoreCounters,
    operation: Operation,
    key: &str,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = std::result::Result<T, Failure>>,
{
    let mut delays = config.delays();
    let mut number = 1u32;
    loop {
        counters.record_request(operation);
        match attempt(number).await {
            Ok(value) => return Ok(value),
            Err(Failure::Permanent(error)) => {
                counters.record_failure(operation);
                return Err(error);
            }
            Err(Failure::Transient { message, source }) => match delays.next() {
                Some(delay) => {
                    counters.record_retry(operation);
                    tracing::warn!(
                        operation = operation.as_str(),
                        key,
                        attempt = number,
                        max_attempts = config.max_attempts,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error_code = "object_store_unavailable",
                        error = %message,
                        "transient object store failure, retrying"
                    );
                    tokio::time::sleep(delay).await;
                    number += 1;
                }
                None => {
                    counters.record_failure(operation);
                    tracing::warn!(
                        operation = operation.as_str(),
                        key,
                        attempts = number,
                        error_code = "object_store_unavailable",
                        error = %message,
                        "object store request failed after all retries"
                    );
                    return Err(Error::Unavailable {
                        operation: operation.as_str(),
                        key: key.to_owned(),
                        attempts: number,
                        message,
                        source,
                    });
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn delays_grow_stay_jittered_and_bounded() {
        let config = RetryConfig::default();
        for _ in 0..200 {
            let delays: Vec<Duration> = config.delays().collect();
            assert_eq!(delays.len(), 7);
            let first = delays[0];
            assert!(first >= Duration::from_millis(100) && first < Duration::from_millis(200));
            for (n, delay) in delays.iter().enumerate() {
                let scale = (config.base_delay * 2u32.pow(n as u32)).min(config.max_delay / 2);
                // backon computes in f32 seconds: allow for rounding.
                assert!(*delay + Duration::from_millis(1) >= scale, "retry {n}: {delay:?} < {scale:?}");
                assert!(*delay <= config.max_delay + Duration::from_millis(1), "retry {n}: {delay:?}");
            }
        }
        let single = RetryConfig { max_attempts: 1, ..RetryConfig::default() };
        assert_eq!(single.delays().count(), 0);
    }

    #[test]
    fn reads_env_with_defaults_and_rejects_nonsense() {
        let vars: HashMap<&str, &str> =
            [("DUCKMESH_S3_RETRY_BASE_MS", "10"), ("DUCKMESH_S3_RETRY_MAX_ATTEMPTS", "3")].into();
        let lookup = |name: &str| vars.get(name).map(|v| (*v).to_owned());
        let config = RetryConfig::from_lookup(lookup).expect("valid");
        assert_eq!(config.base_delay, Duration::from_millis(10));
        assert_eq!(config.max_delay, Duration::from_secs(5));
        assert_eq!(config.max_attempts, 3);

        let zero = |name: &str| (name == "DUCKMESH_S3_RETRY_MAX_ATTEMPTS").then(|| "0".to_owned());
        assert_eq!(
            RetryConfig::from_lookup(zero).expect_err("zero attempts").error_code(),
            "object_store_config_invalid"
        );
        let garbage = |name: &str| (name == "DUCKMESH_S3_RETRY_BASE_MS").then(|| "soon".to_owned());
        assert!(RetryConfig::from_lookup(garbage).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_and_counts_them() {
        let config = RetryConfig::default();
        let counters = StoreCounters::new();
        let value = run_with_retries(&config, &counters, Operation::GetObject, "k", |n| async move {
            if n < 3 { Err(Failure::Transient { message: "503 SlowDown".into(), source: None }) } else { Ok(n) }
        })
        .await
        .expect("third attempt succeeds");
        assert_eq!(value, 3);
        let counts = counters.counts(Operation::GetObject);
        assert_eq!((counts.requests, counts.retries, counts.failures), (3, 2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_with_a_retryable_error() {
        let config = RetryConfig { max_attempts: 4, ..RetryConfig::default() };
        let counters = StoreCounters::new();
        let error = run_with_retries(&config, &counters, Operation::PutObject, "k", |_| async {
            Err::<(), _>(Failure::Transient { message: "503 SlowDown".into(), source: None })
        })
        .await
        .expect_err("always failing");
        assert!(error.is_retryable());
        assert!(matches!(error, Error::Unavailable { attempts: 4, .. }));
        let counts = counters.counts(Operation::PutObject);
        assert_eq!((counts.requests, counts.retries, counts.failures), (4, 3, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_are_not_retried() {
        let counters = StoreCounters::new();
        let error = run_with_retries(&RetryConfig::default(), &counters, Operation::HeadObject, "k", |_| async {
            Err::<(), _>(Failure::Permanent(Error::NotFound { key: "k".into() }))
        })
        .await
        .expect_err("not found");
        assert!(error.is_not_found());
        assert_eq!(counters.total_requests(), 1);
        assert_eq!(counters.total_retries(), 0);
        assert_eq!(counters.total_failures(), 1);
    }
}
