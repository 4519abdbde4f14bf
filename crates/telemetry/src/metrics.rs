//! The one Prometheus registry of a DuckMesh process: every metric of SPEC §6 plus the
//! control-plane metrics, registered up front with the `duckmesh_` prefix so that every
//! binary's `/metrics` exports every name (a dashboard never shows "no data" because a
//! process has not yet hit a code path).
//!
//! Label sets are bounded by construction: label values are enums or `&'static str` error
//! codes, never object names. The only free-form label is `tenant`, on the ingest counters
//! where SPEC §2.9 asks for per-tenant attribution, and it is capped: past
//! [`Metrics::tenant_limit`] distinct tenants new ones are counted under [`OTHER_TENANT`].
//!
//! Counters are registered without `_total`; prometheus-client appends it, so the exported
//! names equal the spec's (`duckmesh_ingest_requests_total`). Histograms whose names end in
//! `_ms` use [`LATENCY_MS_BUCKETS`], which include the SLO thresholds 200, 2000 and 3000.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::{Error, Result};

/// Prefix of every exported metric name.
pub const METRIC_PREFIX: &str = "duckmesh";

/// Content type of the `/metrics` response.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets (milliseconds) of every `_ms` histogram. 200, 2000 and 3000 are the SLO
/// thresholds of SPEC §5; 60 000 and 300 000 are the user and task query time limits.
pub const LATENCY_MS_BUCKETS: [f64; 17] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 300.0, 500.0, 1_000.0, 2_000.0, 3_000.0, 5_000.0, 10_000.0, 30_000.0,
    60_000.0, 120_000.0, 300_000.0,
];

/// Buckets (seconds) of the reconcile duration histogram, as in controller-runtime.
pub const RECONCILE_SECONDS_BUCKETS: [f64; 13] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Buckets (seconds) of job and task durations: one second to one day.
pub const RUN_SECONDS_BUCKETS: [f64; 14] =
    [1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1_200.0, 1_800.0, 3_600.0, 7_200.0, 21_600.0, 86_400.0];

/// Tenant label value that absorbs tenants beyond the cardinality cap.
pub const OTHER_TENANT: &str = "_other";

/// Default cap on distinct `tenant` label values per process.
pub const DEFAULT_TENANT_LIMIT: usize = 100;

/// Defines a label-value enum with its exported spelling, the list of all values (used to
/// pre-create series) and its prometheus-client encoding.
macro_rules! label_values {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label value as exported.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    };
}

label_values! {
    /// HTTP route of the query/API deployment (SPEC §4).
    Route {
        /// `POST /v1/ingest/{dataset}`
        Ingest => "ingest",
        /// `POST /v1/query`
        Query => "query",
        /// `POST /v1/task/query`
        TaskQuery => "task_query",
        /// `GET /v1/datasets`
        Datasets => "datasets",
        /// `GET /v1/datasets/{name}/snapshots`
        Snapshots => "snapshots",
        /// `GET /v1/integrity`
        Integrity => "integrity",
        /// `GET /v1/health`
        Health => "health",
        /// `GET /v1/ready`
        Ready => "ready",
        /// `GET /metrics`
        Metrics => "metrics",
        /// Anything else (404s, unknown paths).
        Other => "other",
    }
}

label_values! {
    /// HTTP status class of a response.
    StatusClass {
        /// 1xx and 2xx
        Success => "2xx",
        /// 3xx
        Redirect => "3xx",
        /// 4xx (including 429 from rate limits)
        ClientError => "4xx",
        /// 5xx: what the availability SLO counts against us.
        ServerError => "5xx",
    }
}

impl StatusClass {
    /// Class of an HTTP status code.
    pub fn of(status: u16) -> Self {
        match status {
            0..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirect,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

label_values! {
    /// Outcome of one ingest request.
    IngestResult {
        /// Records durable and acknowledged.
        Accepted => "accepted",
        /// Malformed payload or schema mismatch (4xx).
        Rejected => "rejected",
        /// Over the per-user or per-tenant limit (429).
        RateLimited => "rate_limited",
        /// Refused because emergency read-only mode is on.
        ReadOnly => "read_only",
        /// Failed on our side (5xx).
        Error => "error",
    }
}

label_values! {
    /// Which query endpoint served a query.
    QueryKind {
        /// `POST /v1/query`, a person or a dashboard waiting: the latency SLO applies.
        Interactive => "interactive",
        /// `POST /v1/task/query`, from a task.
        Task => "task",
    }
}

label_values! {
    /// Whether a query asked for a strict visibility barrier.
    Barrier {
        /// No `min_visibility_token`.
        None => "none",
        /// `min_visibility_token` given: the strict-barrier SLO applies.
        Strict => "strict",
    }
}

label_values! {
    /// Outcome of one query.
    QueryResult {
        /// Rows returned (inline or exported).
        Ok => "ok",
        /// Invalid SQL or request (4xx).
        Rejected => "rejected",
        /// Refused by the concurrency limit or rate limit (429).
        Throttled => "throttled",
        /// Hit the runtime limit, or the strict barrier timed out.
        Timeout => "timeout",
        /// Failed on our side (5xx).
        Error => "error",
    }
}

label_values! {
    /// Outcome of a maintenance run (compaction, GC, integrity).
    RunResult {
        /// Completed and changed or verified something.
        Succeeded => "succeeded",
        /// Completed with nothing to do.
        Noop => "noop",
        /// Completed and found problems (integrity only).
        IssuesFound => "issues_found",
        /// Did not complete.
        Failed => "failed",
    }
}

label_values! {
    /// What a GC deletion removed.
    GcKind {
        /// Committed files no retained snapshot references, past retention.
        Unreferenced => "unreferenced",
        /// Uncommitted attempt staging files older than 7 days.
        Staging => "staging",
        /// Exported query results past retention.
        QueryExport => "query_export",
    }
}

label_values! {
    /// Object store operation, as counted by `duckmesh-storage`'s retry layer.
    ObjectStoreOperation {
        /// Single-request upload.
        PutObject => "put_object",
        /// Start of a multipart upload.
        CreateMultipartUpload => "create_multipart_upload",
        /// Upload of one part.
        UploadPart => "upload_part",
        /// Completion of a multipart upload.
        CompleteMultipartUpload => "complete_multipart_upload",
        /// Abort of a failed multipart upload.
        AbortMultipartUpload => "abort_multipart_upload",
        /// Download (whole object, range, or to a file).
        GetObject => "get_object",
        /// Metadata lookup.
        HeadObject => "head_object",
        /// One page of a listing.
        ListObjects => "list_objects",
        /// Delete.
        DeleteObject => "delete_object",
    }
}

label_values! {
    /// What became of one object store request.
    ObjectStoreResult {
        /// Succeeded.
        Ok => "ok",
        /// Failed transiently and was retried.
        Retried => "retried",
        /// Failed, and the operation gave up (permanent error or retry budget spent).
        Failed => "failed",
    }
}

label_values! {
    /// Controller (one per watched kind), as controller-runtime's `controller` label.
    Controller {
        /// Dataset reconciler
        Dataset => "dataset",
        /// Job reconciler
        Job => "job",
        /// Task reconciler
        Task => "task",
        /// Worker Pod watcher
        WorkerPod => "worker_pod",
    }
}

label_values! {
    /// Result of one reconcile, as controller-runtime's `result` label.
    ReconcileResult {
        /// Done, no requeue asked.
        Success => "success",
        /// Returned an error (the error policy decides the requeue).
        Error => "error",
        /// Asked to be requeued at once.
        Requeue => "requeue",
        /// Asked to be requeued after a delay.
        RequeueAfter => "requeue_after",
    }
}

label_values! {
    /// Task kinds (SPEC §1).
    TaskKind {
        /// DuckDB SQL
        Sql => "sql",
        /// Compaction
        Compact => "compact",
        /// Garbage collection
        Gc => "gc",
        /// Integrity check
        Integrity => "integrity",
        /// Export
        Export => "export",
    }
}

label_values! {
    /// Why a task attempt is retried.
    RetryReason {
        /// The attempt's lease expired (worker died or stalled).
        LeaseExpired => "lease_expired",
        /// The attempt failed with a retryable error.
        Failed => "failed",
        /// The attempt exceeded `timeoutSeconds`.
        Timeout => "timeout",
        /// The worker pod disappeared or could not start.
        PodLost => "pod_lost",
    }
}

label_values! {
    /// Terminal phase of a job or task.
    TerminalPhase {
        /// Completed.
        Succeeded => "succeeded",
        /// Failed after `maxAttempts` (task) or because a task failed (job).
        Failed => "failed",
        /// Deleted or cancelled before completion.
        Cancelled => "cancelled",
    }
}

label_values! {
    /// Why a coordinator claim was retried.
    ClaimRetryReason {
        /// `SKIP LOCKED` found the rows taken, or a serialization failure.
        Contention => "contention",
        /// The coordinator's claim lease was lost before commit.
        LeaseLost => "lease_lost",
        /// The catalog was unreachable or returned an error.
        CatalogError => "catalog_error",
    }
}

label_values! {
    /// Why a snapshot commit failed.
    PublishFailureReason {
        /// The attempt's fencing token was superseded: a stale attempt was stopped, as it must be.
        FenceRejected => "fence_rejected",
        /// The attempt's lease expired before the commit transaction.
        LeaseExpired => "lease_expired",
        /// A concurrent commit changed the dataset's head (optimistic check failed).
        Conflict => "conflict",
        /// The catalog transaction failed (connection, timeout, constraint).
        CatalogError => "catalog_error",
        /// Staged files or the manifest could not be written or verified.
        ObjectStoreError => "object_store_error",
        /// Refused because emergency read-only mode is on.
        ReadOnly => "read_only",
    }
}

/// `{route, status_class}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Route served.
    pub route: Route,
    /// Response status class.
    pub status_class: StatusClass,
}

/// `{tenant, result}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestRequestLabels {
    /// Capped tenant (see [`Metrics::tenant_label`]).
    pub tenant: String,
    /// Outcome.
    pub result: IngestResult,
}

/// `{tenant}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    /// Capped tenant (see [`Metrics::tenant_label`]).
    pub tenant: String,
}

/// `{kind, barrier, result}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryRequestLabels {
    /// Interactive or task query.
    pub kind: QueryKind,
    /// Strict barrier or not.
    pub barrier: Barrier,
    /// Outcome.
    pub result: QueryResult,
}

/// `{kind}` for query histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryKindLabels {
    /// Interactive or task query.
    pub kind: QueryKind,
}

/// `{reason}` for snapshot publish failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PublishFailureLabels {
    /// Why the commit failed.
    pub reason: PublishFailureReason,
}

/// `{reason}` for claim retries.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClaimRetryLabels {
    /// Why the claim was retried.
    pub reason: ClaimRetryReason,
}

/// `{result}` for maintenance runs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunResultLabels {
    /// Outcome.
    pub result: RunResult,
}

/// `{kind}` for GC deletions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GcKindLabels {
    /// What was deleted.
    pub kind: GcKind,
}

/// `{operation, result}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectStoreRequestLabels {
    /// Operation.
    pub operation: ObjectStoreOperation,
    /// Outcome.
    pub result: ObjectStoreResult,
}

/// `{operation}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectStoreOperationLabels {
    /// Operation.
    pub operation: ObjectStoreOperation,
}

/// `{controller}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// Controller.
    pub controller: Controller,
}

/// `{controller, result}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// Controller.
    pub controller: Controller,
    /// Reconcile result.
    pub result: ReconcileResult,
}

/// `{task_kind}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskKindLabels {
    /// Task kind.
    pub task_kind: TaskKind,
}

/// `{task_kind, reason}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskRetryLabels {
    /// Task kind.
    pub task_kind: TaskKind,
    /// Why it is retried.
    pub reason: RetryReason,
}

/// `{task_kind, phase}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskPhaseLabels {
    /// Task kind.
    pub task_kind: TaskKind,
    /// Terminal phase.
    pub phase: TerminalPhase,
}

/// `{phase}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Terminal phase.
    pub phase: TerminalPhase,
}

/// A gauge holding a float (ages, lags in seconds).
pub type FloatGauge = Gauge<f64, AtomicU64>;
/// A histogram family with a shared bucket layout.
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_ms_histogram() -> Histogram {
    Histogram::new(LATENCY_MS_BUCKETS)
}

fn reconcile_seconds_histogram() -> Histogram {
    Histogram::new(RECONCILE_SECONDS_BUCKETS)
}

fn run_seconds_histogram() -> Histogram {
    Histogram::new(RUN_SECONDS_BUCKETS)
}

/// API-level metrics (our addition; the availability SLI reads `http_requests_total`).
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    /// `duckmesh_http_requests_total{route, status_class}`: responses served.
    pub http_requests: Family<HttpLabels, Counter>,
    /// `duckmesh_read_only_mode`: 1 while emergency read-only mode is on.
    pub read_only_mode: Gauge,
}

/// SPEC §6 ingest metrics.
#[derive(Clone, Debug)]
pub struct IngestMetrics {
    /// `duckmesh_ingest_requests_total{tenant, result}`
    pub requests: Family<IngestRequestLabels, Counter>,
    /// `duckmesh_ingest_records_total{tenant}`: records made durable and acknowledged.
    pub records: Family<TenantLabels, Counter>,
    /// `duckmesh_ingest_duplicates_total{tenant}`: records dropped by the dedupe key.
    pub duplicates: Family<TenantLabels, Counter>,
    /// `duckmesh_ingest_ack_latency_ms`: request receipt to durable ack, accepted requests.
    pub ack_latency_ms: Histogram,
}

/// SPEC §6 freshness metrics.
#[derive(Clone, Debug)]
pub struct FreshnessMetrics {
    /// `duckmesh_visibility_lag_ms`: on each coordinator tick, age of the oldest acked
    /// event not yet visible (0 when caught up).
    pub visibility_lag_ms: Histogram,
    /// `duckmesh_latest_visibility_token`: highest visibility token this process published.
    pub latest_visibility_token: Gauge<i64, AtomicI64>,
    /// `duckmesh_consistency_timeout_total`: strict-barrier queries that timed out.
    pub consistency_timeouts: Counter,
    /// `duckmesh_write_to_visible_latency_ms`: per committed event, ack to visible.
    pub write_to_visible_latency_ms: Histogram,
    /// `duckmesh_ingest_lag_events`: acked events not yet in a committed snapshot.
    pub ingest_lag_events: Gauge<i64, AtomicI64>,
}

/// SPEC §6 coordinator metrics.
#[derive(Clone, Debug)]
pub struct CoordinatorMetrics {
    /// `duckmesh_claim_batch_size`: events per claimed ingest batch.
    pub claim_batch_size: Histogram,
    /// `duckmesh_claim_retries_total{reason}`
    pub claim_retries: Family<ClaimRetryLabels, Counter>,
    /// `duckmesh_commit_batch_latency_ms`: claim to committed snapshot, per batch.
    pub commit_batch_latency_ms: Histogram,
    /// `duckmesh_snapshot_publish_failures_total{reason}`
    pub snapshot_publish_failures: Family<PublishFailureLabels, Counter>,
}

/// SPEC §6 query metrics.
#[derive(Clone, Debug)]
pub struct QueryMetrics {
    /// `duckmesh_query_requests_total{kind, barrier, result}`
    pub requests: Family<QueryRequestLabels, Counter>,
    /// `duckmesh_query_latency_ms{kind}`: request receipt to last byte, all results.
    pub latency_ms: HistogramFamily<QueryKindLabels>,
    /// `duckmesh_query_scanned_files{kind}`: Parquet files opened per query.
    pub scanned_files: HistogramFamily<QueryKindLabels>,
    /// `duckmesh_query_scanned_bytes{kind}`: bytes of Parquet opened per query.
    pub scanned_bytes: HistogramFamily<QueryKindLabels>,
}

/// SPEC §6 storage and maintenance metrics, plus object store request accounting.
#[derive(Clone, Debug)]
pub struct StorageMetrics {
    /// `duckmesh_compaction_runs_total{result}`
    pub compaction_runs: Family<RunResultLabels, Counter>,
    /// `duckmesh_compaction_bytes_rewritten_total`
    pub compaction_bytes_rewritten: Counter,
    /// `duckmesh_gc_runs_total{result}` (our addition)
    pub gc_runs: Family<RunResultLabels, Counter>,
    /// `duckmesh_gc_files_deleted_total{kind}`
    pub gc_files_deleted: Family<GcKindLabels, Counter>,
    /// `duckmesh_integrity_runs_total{result}`
    pub integrity_runs: Family<RunResultLabels, Counter>,
    /// `duckmesh_integrity_files_checked_total`
    pub integrity_files_checked: Counter,
    /// `duckmesh_integrity_missing_files_total`
    pub integrity_missing_files: Counter,
    /// `duckmesh_integrity_size_mismatch_files_total`
    pub integrity_size_mismatch_files: Counter,
    /// `duckmesh_object_store_requests_total{operation, result}`: requests sent, each
    /// counted once as ok, retried or failed.
    pub object_store_requests: Family<ObjectStoreRequestLabels, Counter>,
    /// `duckmesh_object_store_retries_total{operation}`
    pub object_store_retries: Family<ObjectStoreOperationLabels, Counter>,
}

/// Control-plane metrics at controller-runtime parity, plus scheduler and outbox state.
#[derive(Clone, Debug)]
pub struct ControlPlaneMetrics {
    /// `duckmesh_reconcile_total{controller, result}`
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// `duckmesh_reconcile_errors_total{controller}`
    pub reconcile_errors: Family<ControllerLabels, Counter>,
    /// `duckmesh_reconcile_duration_seconds{controller}`
    pub reconcile_duration_seconds: HistogramFamily<ControllerLabels>,
    /// `duckmesh_workqueue_depth{controller}`
    pub workqueue_depth: Family<ControllerLabels, Gauge>,
    /// `duckmesh_workqueue_retries_total{controller}`
    pub workqueue_retries: Family<ControllerLabels, Counter>,
    /// `duckmesh_task_backlog_depth{task_kind}`: runnable tasks without a live lease.
    pub task_backlog_depth: Family<TaskKindLabels, Gauge>,
    /// `duckmesh_task_backlog_oldest_age_seconds{task_kind}`: how long the oldest has waited.
    pub task_backlog_oldest_age_seconds: Family<TaskKindLabels, FloatGauge>,
    /// `duckmesh_lease_lag_seconds`: how far past expiry the oldest un-reaped lease is.
    pub lease_lag_seconds: FloatGauge,
    /// `duckmesh_leases_expired_total{task_kind}`: leases reaped after expiry.
    pub leases_expired: Family<TaskKindLabels, Counter>,
    /// `duckmesh_task_retries_total{task_kind, reason}`
    pub task_retries: Family<TaskRetryLabels, Counter>,
    /// `duckmesh_tasks_finished_total{task_kind, phase}`
    pub tasks_finished: Family<TaskPhaseLabels, Counter>,
    /// `duckmesh_task_duration_seconds{task_kind}`: first lease to terminal phase.
    pub task_duration_seconds: HistogramFamily<TaskKindLabels>,
    /// `duckmesh_jobs_finished_total{phase}`: jobs by terminal phase.
    pub jobs_finished: Family<PhaseLabels, Counter>,
    /// `duckmesh_job_duration_seconds{phase}`: creation to terminal phase.
    pub job_duration_seconds: HistogramFamily<PhaseLabels>,
    /// `duckmesh_outbox_depth`: rows pending dispatch.
    pub outbox_depth: Gauge,
    /// `duckmesh_outbox_oldest_age_seconds`: age of the oldest pending row.
    pub outbox_oldest_age_seconds: FloatGauge,
    /// `duckmesh_outbox_failed_rows`: rows in `Failed` after exhausting retries.
    pub outbox_failed_rows: Gauge,
}

/// Caps the number of distinct tenant label values.
#[derive(Clone, Debug)]
struct TenantCap {
    limit: usize,
    seen: Arc<Mutex<HashSet<String>>>,
}

impl TenantCap {
    fn label(&self, tenant: &str) -> String {
        let mut seen = match self.seen.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if seen.contains(tenant) {
            return tenant.to_owned();
        }
        if seen.len() < self.limit && !tenant.is_empty() && tenant != OTHER_TENANT {
            seen.insert(tenant.to_owned());
            return tenant.to_owned();
        }
        OTHER_TENANT.to_owned()
    }
}

/// Every metric a DuckMesh process exports, registered in one registry. Cheap to clone:
/// all handles share the same underlying series.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Registry>,
    tenants: TenantCap,
    /// API metrics.
    pub api: ApiMetrics,
    /// Ingest metrics.
    pub ingest: IngestMetrics,
    /// Freshness metrics.
    pub freshness: FreshnessMetrics,
    /// Coordinator metrics.
    pub coordinator: CoordinatorMetrics,
    /// Query metrics.
    pub query: QueryMetrics,
    /// Storage and maintenance metrics.
    pub storage: StorageMetrics,
    /// Control-plane metrics.
    pub control_plane: ControlPlaneMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All metrics, with the default tenant cap.
    pub fn new() -> Self {
        Self::with_tenant_limit(DEFAULT_TENANT_LIMIT)
    }

    /// All metrics, with at most `limit` distinct `tenant` label values.
    pub fn with_tenant_limit(limit: usize) -> Self {
        let mut registry = Registry::with_prefix(METRIC_PREFIX);

        let api = ApiMetrics { http_requests: Family::default(), read_only_mode: Gauge::default() };
        registry.register(
            "http_requests",
            "HTTP responses served by the API, by route and status class",
            api.http_requests.clone(),
        );
        registry.register(
            "read_only_mode",
            "1 while emergency read-only mode rejects ingest and task commits",
            api.read_only_mode.clone(),
        );

        let ingest = IngestMetrics {
            requests: Family::default(),
            records: Family::default(),
            duplicates: Family::default(),
            ack_latency_ms: latency_ms_histogram(),
        };
        registry.register("ingest_requests", "Ingest requests by tenant and result", ingest.requests.clone());
        registry.register("ingest_records", "Ingest records made durable and acknowledged", ingest.records.clone());
        registry.register(
            "ingest_duplicates",
            "Ingest records dropped because their dedupe key was already present",
            ingest.duplicates.clone(),
        );
        registry.register(
            "ingest_ack_latency_ms",
            "Milliseconds from ingest request receipt to durable acknowledgement",
            ingest.ack_latency_ms.clone(),
        );

        let freshness = FreshnessMetrics {
            visibility_lag_ms: latency_ms_histogram(),
            latest_visibility_token: Gauge::default(),
            consistency_timeouts: Counter::default(),
            write_to_visible_latency_ms: latency_ms_histogram(),
            ingest_lag_events: Gauge::default(),
        };
        registry.register(
            "visibility_lag_ms",
            "Milliseconds the oldest acknowledged but not yet visible event has waited, sampled per coordinator tick",
            freshness.visibility_lag_ms.clone(),
        );
        registry.register(
            "latest_visibility_token",
            "Highest visibility token published by this process",
            freshness.latest_visibility_token.clone(),
        );
        registry.register(
            "consistency_timeout",
            "Strict-barrier queries that timed out waiting for their visibility token",
            freshness.consistency_timeouts.clone(),
        );
        registry.register(
            "write_to_visible_latency_ms",
            "Milliseconds from ingest acknowledgement to the event being visible in a committed snapshot",
            freshness.write_to_visible_latency_ms.clone(),
        );
        registry.register(
            "ingest_lag_events",
            "Acknowledged ingest events not yet in a committed snapshot",
            freshness.ingest_lag_events.clone(),
        );

        let coordinator = CoordinatorMetrics {
            claim_batch_size: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            claim_retries: Family::default(),
            commit_batch_latency_ms: latency_ms_histogram(),
            snapshot_publish_failures: Family::default(),
        };
        registry.register(
            "claim_batch_size",
            "Ingest events per batch claimed by a coordinator",
            coordinator.claim_batch_size.clone(),
        );
        registry.register(
            "claim_retries",
            "Coordinator batch claims retried, by reason",
            coordinator.claim_retries.clone(),
        );
        registry.register(
            "commit_batch_latency_ms",
            "Milliseconds from batch claim to committed snapshot",
            coordinator.commit_batch_latency_ms.clone(),
        );
        registry.register(
            "snapshot_publish_failures",
            "Snapshot commits that failed, by reason",
            coordinator.snapshot_publish_failures.clone(),
        );

        let query = QueryMetrics {
            requests: Family::default(),
            latency_ms: Family::new_with_constructor(latency_ms_histogram),
            scanned_files: Family::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 4.0, 9))),
            scanned_bytes: Family::new_with_constructor(|| Histogram::new(exponential_buckets(1024.0, 8.0, 10))),
        };
        registry.register("query_requests", "Queries by kind, strict barrier use and result", query.requests.clone());
        registry.register(
            "query_latency_ms",
            "Milliseconds from query receipt to the last byte of the response",
            query.latency_ms.clone(),
        );
        registry.register("query_scanned_files", "Parquet files opened per query", query.scanned_files.clone());
        registry.register("query_scanned_bytes", "Parquet bytes opened per query", query.scanned_bytes.clone());

        let storage = StorageMetrics {
            compaction_runs: Family::default(),
            compaction_bytes_rewritten: Counter::default(),
            gc_runs: Family::default(),
            gc_files_deleted: Family::default(),
            integrity_runs: Family::default(),
            integrity_files_checked: Counter::default(),
            integrity_missing_files: Counter::default(),
            integrity_size_mismatch_files: Counter::default(),
            object_store_requests: Family::default(),
            object_store_retries: Family::default(),
        };
        registry.register("compaction_runs", "Compaction runs by result", storage.compaction_runs.clone());
        registry.register(
            "compaction_bytes_rewritten",
            "Bytes rewritten by compaction",
            storage.compaction_bytes_rewritten.clone(),
        );
        registry.register("gc_runs", "GC runs by result", storage.gc_runs.clone());
        registry.register("gc_files_deleted", "Files deleted by GC, by kind", storage.gc_files_deleted.clone());
        registry.register("integrity_runs", "Integrity check runs by result", storage.integrity_runs.clone());
        registry.register(
            "integrity_files_checked",
            "Committed files verified by integrity checks",
            storage.integrity_files_checked.clone(),
        );
        registry.register(
            "integrity_missing_files",
            "Committed files found missing from object storage",
            storage.integrity_missing_files.clone(),
        );
        registry.register(
            "integrity_size_mismatch_files",
            "Committed files whose object size differs from the catalog",
            storage.integrity_size_mismatch_files.clone(),
        );
        registry.register(
            "object_store_requests",
            "Object store requests by operation and result",
            storage.object_store_requests.clone(),
        );
        registry.register(
            "object_store_retries",
            "Object store requests retried, by operation",
            storage.object_store_retries.clone(),
        );

        let control_plane = ControlPlaneMetrics {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration_seconds: Family::new_with_constructor(reconcile_seconds_histogram),
            workqueue_depth: Family::default(),
            workqueue_retries: Family::default(),
            task_backlog_depth: Family::default(),
            task_backlog_oldest_age_seconds: Family::default(),
            lease_lag_seconds: FloatGauge::default(),
            leases_expired: Family::default(),
            task_retries: Family::default(),
            tasks_finished: Family::default(),
            task_duration_seconds: Family::new_with_constructor(run_seconds_histogram),
            jobs_finished: Family::default(),
            job_duration_seconds: Family::new_with_constructor(run_seconds_histogram),
            outbox_depth: Gauge::default(),
            outbox_oldest_age_seconds: FloatGauge::default(),
            outbox_failed_rows: Gauge::default(),
        };
        registry.register("reconcile", "Reconciles by controller and result", control_plane.reconciles.clone());
        registry.register("reconcile_errors", "Reconcile errors by controller", control_plane.reconcile_errors.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Seconds spent in one reconcile, by controller",
            control_plane.reconcile_duration_seconds.clone(),
        );
        registry.register(
            "workqueue_depth",
            "Objects waiting in a controller's queue",
            control_plane.workqueue_depth.clone(),
        );
        registry.register(
            "workqueue_retries",
            "Objects requeued after an error, by controller",
            control_plane.workqueue_retries.clone(),
        );
        registry.register(
            "task_backlog_depth",
            "Runnable tasks waiting for a lease, by task kind",
            control_plane.task_backlog_depth.clone(),
        );
        registry.register(
            "task_backlog_oldest_age_seconds",
            "Seconds the oldest runnable task has waited for a lease, by task kind",
            control_plane.task_backlog_oldest_age_seconds.clone(),
        );
        registry.register(
            "lease_lag_seconds",
            "Seconds the oldest expired but not yet reaped lease is past its expiry",
            control_plane.lease_lag_seconds.clone(),
        );
        registry.register(
            "leases_expired",
            "Task attempt leases reaped after expiry, by task kind",
            control_plane.leases_expired.clone(),
        );
        registry.register(
            "task_retries",
            "Task attempts scheduled for retry, by task kind and reason",
            control_plane.task_retries.clone(),
        );
        registry.register(
            "tasks_finished",
            "Tasks reaching a terminal phase, by task kind and phase",
            control_plane.tasks_finished.clone(),
        );
        registry.register(
            "task_duration_seconds",
            "Seconds from a task's first lease to its terminal phase, by task kind",
            control_plane.task_duration_seconds.clone(),
        );
        registry.register(
            "jobs_finished",
            "Jobs reaching a terminal phase, by phase",
            control_plane.jobs_finished.clone(),
        );
        registry.register(
            "job_duration_seconds",
            "Seconds from job creation to its terminal phase, by phase",
            control_plane.job_duration_seconds.clone(),
        );
        registry.register("outbox_depth", "Outbox rows pending dispatch", control_plane.outbox_depth.clone());
        registry.register(
            "outbox_oldest_age_seconds",
            "Seconds the oldest pending outbox row has waited",
            control_plane.outbox_oldest_age_seconds.clone(),
        );
        registry.register(
            "outbox_failed_rows",
            "Outbox rows in Failed after exhausting their retries",
            control_plane.outbox_failed_rows.clone(),
        );

        let metrics = Metrics {
            registry: Arc::new(registry),
            tenants: TenantCap { limit: limit.max(1), seen: Arc::new(Mutex::new(HashSet::new())) },
            api,
            ingest,
            freshness,
            coordinator,
            query,
            storage,
            control_plane,
        };
        metrics.create_known_series();
        metrics
    }

    /// Creates every series whose labels are all enums, at zero, so rates start from a
    /// real baseline and absent-metric alerts can tell "quiet" from "missing".
    fn create_known_series(&self) {
        for &route in Route::ALL {
            for &status_class in StatusClass::ALL {
                let _ = self.api.http_requests.get_or_create(&HttpLabels { route, status_class });
            }
        }
        for &kind in QueryKind::ALL {
            for &barrier in Barrier::ALL {
                for &result in QueryResult::ALL {
                    let _ = self.query.requests.get_or_create(&QueryRequestLabels { kind, barrier, result });
                }
            }
            let labels = QueryKindLabels { kind };
            let _ = self.query.latency_ms.get_or_create(&labels);
            let _ = self.query.scanned_files.get_or_create(&labels);
            let _ = self.query.scanned_bytes.get_or_create(&labels);
        }
        // The overflow tenant exists from the start so the ingest counters are exported
        // (and rate() has a baseline) before the first request.
        for &result in IngestResult::ALL {
            let _ =
                self.ingest.requests.get_or_create(&IngestRequestLabels { tenant: OTHER_TENANT.to_owned(), result });
        }
        let other = TenantLabels { tenant: OTHER_TENANT.to_owned() };
        let _ = self.ingest.records.get_or_create(&other);
        let _ = self.ingest.duplicates.get_or_create(&other);
        for &reason in PublishFailureReason::ALL {
            let _ = self.coordinator.snapshot_publish_failures.get_or_create(&PublishFailureLabels { reason });
        }
        for &reason in ClaimRetryReason::ALL {
            let _ = self.coordinator.claim_retries.get_or_create(&ClaimRetryLabels { reason });
        }
        for &result in RunResult::ALL {
            let labels = RunResultLabels { result };
            let _ = self.storage.compaction_runs.get_or_create(&labels);
            let _ = self.storage.gc_runs.get_or_create(&labels);
            let _ = self.storage.integrity_runs.get_or_create(&labels);
        }
        for &kind in GcKind::ALL {
            let _ = self.storage.gc_files_deleted.get_or_create(&GcKindLabels { kind });
        }
        for &operation in ObjectStoreOperation::ALL {
            for &result in ObjectStoreResult::ALL {
                let _ =
                    self.storage.object_store_requests.get_or_create(&ObjectStoreRequestLabels { operation, result });
            }
            let _ = self.storage.object_store_retries.get_or_create(&ObjectStoreOperationLabels { operation });
        }
        for &controller in Controller::ALL {
            for &result in ReconcileResult::ALL {
                let _ = self.control_plane.reconciles.get_or_create(&ReconcileLabels { controller, result });
            }
            let labels = ControllerLabels { controller };
            let _ = self.control_plane.reconcile_duration_seconds.get_or_create(&labels);
            let _ = self.control_plane.workqueue_depth.get_or_create(&labels);
            let _ = self.control_plane.reconcile_errors.get_or_create(&labels);
            let _ = self.control_plane.workqueue_retries.get_or_create(&labels);
        }
        for &task_kind in TaskKind::ALL {
            let labels = TaskKindLabels { task_kind };
            let _ = self.control_plane.task_backlog_depth.get_or_create(&labels);
            let _ = self.control_plane.task_backlog_oldest_age_seconds.get_or_create(&labels);
            let _ = self.control_plane.leases_expired.get_or_create(&labels);
            let _ = self.control_plane.task_duration_seconds.get_or_create(&labels);
            for &reason in RetryReason::ALL {
                let _ = self.control_plane.task_retries.get_or_create(&TaskRetryLabels { task_kind, reason });
            }
            for &phase in TerminalPhase::ALL {
                let _ = self.control_plane.tasks_finished.get_or_create(&TaskPhaseLabels { task_kind, phase });
            }
        }
        for &phase in TerminalPhase::ALL {
            let labels = PhaseLabels { phase };
            let _ = self.control_plane.jobs_finished.get_or_create(&labels);
            let _ = self.control_plane.job_duration_seconds.get_or_create(&labels);
        }
    }

    /// The registry, for encoding or for adding a component's own sub-registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Most distinct tenants that get their own `tenant` label value.
    pub fn tenant_limit(&self) -> usize {
        self.tenants.limit
    }

    /// The `tenant` label value to use for `tenant`: itself while under the cap (or
    /// already seen), [`OTHER_TENANT`] otherwise.
    pub fn tenant_label(&self, tenant: &str) -> String {
        self.tenants.label(tenant)
    }

    /// Counts one HTTP response.
    pub fn observe_http(&self, route: Route, status: u16) {
        self.api.http_requests.get_or_create(&HttpLabels { route, status_class: StatusClass::of(status) }).inc();
    }

    /// Counts one ingest request; for accepted ones also its records, duplicates and
    /// acknowledgement latency.
    pub fn observe_ingest(
        &self,
        tenant: &str,
        result: IngestResult,
        records: u64,
        duplicates: u64,
        ack_latency_ms: f64,
    ) {
        let tenant = self.tenant_label(tenant);
        self.ingest.requests.get_or_create(&IngestRequestLabels { tenant: tenant.clone(), result }).inc();
        if result == IngestResult::Accepted {
            let labels = TenantLabels { tenant };
            self.ingest.records.get_or_create(&labels).inc_by(records);
            self.ingest.duplicates.get_or_create(&labels).inc_by(duplicates);
            self.ingest.ack_latency_ms.observe(ack_latency_ms);
        }
    }

    /// Counts one query with its latency and scan size; a strict-barrier timeout also
    /// increments `duckmesh_consistency_timeout_total`.
    pub fn observe_query(&self, observation: QueryObservation) {
        self.query
            .requests
            .get_or_create(&QueryRequestLabels {
                kind: observation.kind,
                barrier: observation.barrier,
                result: observation.result,
            })
            .inc();
        let labels = QueryKindLabels { kind: observation.kind };
        self.query.latency_ms.get_or_create(&labels).observe(observation.latency_ms);
        self.query.scanned_files.get_or_create(&labels).observe(observation.scanned_files as f64);
        self.query.scanned_bytes.get_or_create(&labels).observe(observation.scanned_bytes as f64);
        if observation.barrier_timed_out {
            self.freshness.consistency_timeouts.inc();
        }
    }

    /// Counts one reconcile: result, duration and, for [`ReconcileResult::Error`], an error.
    /// (The error's code goes to the log line, not to a label.)
    pub fn observe_reconcile(&self, controller: Controller, result: ReconcileResult, duration_seconds: f64) {
        self.control_plane.reconciles.get_or_create(&ReconcileLabels { controller, result }).inc();
        self.control_plane
            .reconcile_duration_seconds
            .get_or_create(&ControllerLabels { controller })
            .observe(duration_seconds);
        if result == ReconcileResult::Error {
            self.control_plane.reconcile_errors.get_or_create(&ControllerLabels { controller }).inc();
        }
    }

    /// Advances the object store counters of `operation` to cumulative totals read from the
    /// storage layer (requests sent including retries, requests retried, operations that
    /// gave up). Call it periodically or before a scrape; totals that went backwards (a
    /// restarted counter source) are ignored.
    pub fn observe_object_store_totals(
        &self,
        operation: ObjectStoreOperation,
        requests: u64,
        retries: u64,
        failures: u64,
    ) {
        let ok = requests.saturating_sub(retries).saturating_sub(failures);
        for (result, total) in
            [(ObjectStoreResult::Ok, ok), (ObjectStoreResult::Retried, retries), (ObjectStoreResult::Failed, failures)]
        {
            let counter =
                self.storage.object_store_requests.get_or_create(&ObjectStoreRequestLabels { operation, result });
            advance_to(&counter, total);
        }
        let retried = self.storage.object_store_retries.get_or_create(&ObjectStoreOperationLabels { operation });
        advance_to(&retried, retries);
    }

    /// Renders every metric as OpenMetrics text.
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

/// Raises a counter to `total` if it is below it.
fn advance_to(counter: &Counter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

/// One finished query, for [`Metrics::observe_query`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QueryObservation {
    /// Interactive or task query.
    pub kind: QueryKind,
    /// Whether a strict barrier was requested.
    pub barrier: Barrier,
    /// Outcome.
    pub result: QueryResult,
    /// Whether the strict barrier timed out.
    pub barrier_timed_out: bool,
    /// Receipt to last byte, milliseconds.
    pub latency_ms: f64,
    /// Parquet files opened.
    pub scanned_files: u64,
    /// Parquet bytes opened.
    pub scanned_bytes: u64,
}

/// Renders `registry` as OpenMetrics text (ending in `# EOF`), or says why it could not.
pub fn try_encode(registry: &Registry) -> Result<String> {
    let mut text = String::with_capacity(64 * 1024);
    prometheus_client::encoding::text::encode(&mut text, registry).map_err(Error::MetricsEncode)?;
    Ok(text)
}

/// Renders `registry` as OpenMetrics text (ending in `# EOF`).
///
/// Writing into a `String` only fails if a label value refuses to encode, which none of
/// ours does; should it happen, the error is logged and the text is returned without its
/// `# EOF` terminator, so the scrape fails visibly instead of exporting partial data.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::with_capacity(64 * 1024);
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, registry) {
        let error = Error::MetricsEncode(error);
        tracing::error!(error_code = error.error_code(), %error, "metrics encoding failed");
        if let Some(end) = text.rfind("# EOF") {
            text.truncate(end);
        }
    }
    text
}

/// An axum router serving `GET /metrics` from `metrics`' registry.
pub fn metrics_router(metrics: &Metrics) -> Router {
    let registry = Arc::clone(&metrics.registry);
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = Arc::clone(&registry);
            async move { metrics_response(&registry) }
        }),
    )
}

fn metrics_response(registry: &Registry) -> Response {
    match try_encode(registry) {
        Ok(body) => ([(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE))], body).into_response(),
        Err(error) => {
            let mut body = String::new();
            let _ = write!(body, "{}: {error}", error.error_code());
            (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_exported_with_total_suffix_and_prefix() {
        let metrics = Metrics::new();
        metrics.observe_ingest("acme", IngestResult::Accepted, 10, 2, 12.0);
        let text = metrics.encode();
        assert!(text.contains("duckmesh_ingest_requests_total{tenant=\"acme\",result=\"accepted\"} 1"), "{text}");
        assert!(text.contains("duckmesh_ingest_records_total{tenant=\"acme\"} 10"));
        assert!(text.contains("duckmesh_ingest_duplicates_total{tenant=\"acme\"} 2"));
        assert!(text.contains("duckmesh_ingest_ack_latency_ms_count 1"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn latency_buckets_include_the_slo_thresholds() {
        for threshold in [200.0, 2000.0, 3000.0] {
            assert!(LATENCY_MS_BUCKETS.contains(&threshold));
        }
        let text = Metrics::new().encode();
        for line in [
            "duckmesh_ingest_ack_latency_ms_bucket{le=\"200.0\"} 0",
            "duckmesh_write_to_visible_latency_ms_bucket{le=\"3000.0\"} 0",
            "duckmesh_query_latency_ms_bucket{le=\"2000.0\",kind=\"interactive\"} 0",
        ] {
            assert!(text.contains(line), "missing {line}");
        }
    }

    #[test]
    fn tenant_labels_are_capped() {
        let metrics = Metrics::with_tenant_limit(2);
        assert_eq!(metrics.tenant_label("a"), "a");
        assert_eq!(metrics.tenant_label("b"), "b");
        assert_eq!(metrics.tenant_label("c"), OTHER_TENANT);
        assert_eq!(metrics.tenant_label("a"), "a");
        // Clones share the cap.
        let clone = metrics.clone();
        assert_eq!(clone.tenant_label("d"), OTHER_TENANT);
        assert_eq!(metrics.tenant_label(""), OTHER_TENANT);
    }

    #[test]
    fn object_store_totals_advance_monotonically() {
        let metrics = Metrics::new();
        metrics.observe_object_store_totals(ObjectStoreOperation::PutObject, 10, 2, 1);
        metrics.observe_object_store_totals(ObjectStoreOperation::PutObject, 12, 3, 1);
        // A counter source that restarted is ignored rather than making counters go down.
        metrics.observe_object_store_totals(ObjectStoreOperation::PutObject, 1, 0, 0);
        let text = metrics.encode();
        for line in [
            "duckmesh_object_store_requests_total{operation=\"put_object\",result=\"ok\"} 8",
            "duckmesh_object_store_requests_total{operation=\"put_object\",result=\"retried\"} 3",
            "duckmesh_object_store_requests_total{operation=\"put_object\",result=\"failed\"} 1",
            "duckmesh_object_store_retries_total{operation=\"put_object\"} 3",
        ] {
            assert!(text.contains(line), "missing {line}");
        }
    }

    #[test]
    fn status_classes() {
        assert_eq!(StatusClass::of(200), StatusClass::Success);
        assert_eq!(StatusClass::of(304), StatusClass::Redirect);
        assert_eq!(StatusClass::of(429), StatusClass::ClientError);
        assert_eq!(StatusClass::of(503), StatusClass::ServerError);
    }

    #[test]
    fn query_observation_counts_barrier_timeouts() {
        let metrics = Metrics::new();
        metrics.observe_query(QueryObservation {
            kind: QueryKind::Interactive,
            barrier: Barrier::Strict,
            result: QueryResult::Timeout,
            barrier_timed_out: true,
            latency_ms: 5000.0,
            scanned_files: 3,
            scanned_bytes: 4096,
        });
        let text = metrics.encode();
        assert!(text.contains("duckmesh_consistency_timeout_total 1"));
        assert!(
            text.contains(
                "duckmesh_query_requests_total{kind=\"interactive\",barrier=\"strict\",result=\"timeout\"} 1"
            )
        );
    }

    #[test]
    fn reconcile_errors_are_counted_per_controller() {
        let metrics = Metrics::new();
        metrics.observe_reconcile(Controller::Job, ReconcileResult::Error, 0.2);
        metrics.observe_reconcile(Controller::Job, ReconcileResult::Success, 0.1);
        let text = metrics.encode();
        assert!(text.contains("duckmesh_reconcile_errors_total{controller=\"job\"} 1"));
        assert!(text.contains("duckmesh_reconcile_total{controller=\"job\",result=\"success\"} 1"));
        assert!(text.contains("duckmesh_reconcile_total{controller=\"job\",result=\"error\"} 1"));
    }
}
