//! The query and ingest API's metrics (SPEC §6 ingest and query, the strict-barrier
//! timeouts, and the HTTP responses the availability SLI counts), registered in a
//! sub-registry of the process registry (`duckmesh_telemetry::Metrics`).

use duckmesh_telemetry::metrics::{HistogramFamily, OTHER_TENANT, TenantCap, latency_ms_histogram};
use duckmesh_telemetry::{ComponentMetrics, Metrics};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

duckmesh_telemetry::label_values! {
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

duckmesh_telemetry::label_values! {
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

duckmesh_telemetry::label_values! {
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

duckmesh_telemetry::label_values! {
    /// Which query endpoint served a query.
    QueryKind {
        /// `POST /v1/query`, a person or a dashboard waiting: the latency SLO applies.
        Interactive => "interactive",
        /// `POST /v1/task/query`, from a task.
        Task => "task",
    }
}

duckmesh_telemetry::label_values! {
    /// Whether a query asked for a strict visibility barrier.
    Barrier {
        /// No `min_visibility_token`.
        None => "none",
        /// `min_visibility_token` given: the strict-barrier SLO applies.
        Strict => "strict",
    }
}

duckmesh_telemetry::label_values! {
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
    /// Capped tenant (see [`ApiMetrics::tenant_label`]).
    pub tenant: String,
    /// Outcome.
    pub result: IngestResult,
}

/// `{tenant}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    /// Capped tenant (see [`ApiMetrics::tenant_label`]).
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

/// SPEC §6 query metrics, with the strict-barrier timeouts of the freshness group.
#[derive(Clone, Debug)]
pub struct QueryMetrics {
    /// `duckmesh_consistency_timeout_total`: strict-barrier queries that timed out.
    pub consistency_timeouts: Counter,
    /// `duckmesh_query_requests_total{kind, barrier, result}`
    pub requests: Family<QueryRequestLabels, Counter>,
    /// `duckmesh_query_latency_ms{kind}`: request receipt to last byte, all results.
    pub latency_ms: HistogramFamily<QueryKindLabels>,
    /// `duckmesh_query_scanned_files{kind}`: Parquet files opened per query.
    pub scanned_files: HistogramFamily<QueryKindLabels>,
    /// `duckmesh_query_scanned_bytes{kind}`: bytes of Parquet opened per query.
    pub scanned_bytes: HistogramFamily<QueryKindLabels>,
}

/// Everything the query and ingest API records. Cheap to clone: all handles share the
/// same underlying series.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    tenants: TenantCap,
    /// `duckmesh_http_requests_total{route, status_class}`: responses served (our addition;
    /// the availability SLI reads it).
    pub http_requests: Family<HttpLabels, Counter>,
    /// `duckmesh_read_only_mode`, the process-wide gauge the coordinator sets too.
    pub read_only_mode: Gauge,
    /// Ingest metrics.
    pub ingest: IngestMetrics,
    /// Query metrics.
    pub query: QueryMetrics,
}

impl ComponentMetrics for ApiMetrics {
    fn register(registry: &mut Registry, process: &Metrics) -> Self {
        let metrics = ApiMetrics {
            tenants: process.tenants().clone(),
            http_requests: Family::default(),
            read_only_mode: process.read_only_mode().clone(),
            ingest: IngestMetrics {
                requests: Family::default(),
                records: Family::default(),
                duplicates: Family::default(),
                ack_latency_ms: latency_ms_histogram(),
            },
            query: QueryMetrics {
                consistency_timeouts: Counter::default(),
                requests: Family::default(),
                latency_ms: Family::new_with_constructor(latency_ms_histogram),
                scanned_files: Family::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 4.0, 9))),
                scanned_bytes: Family::new_with_constructor(|| Histogram::new(exponential_buckets(1024.0, 8.0, 10))),
            },
        };
        registry.register(
            "http_requests",
            "HTTP responses served by the API, by route and status class",
            metrics.http_requests.clone(),
        );

        let ingest = &metrics.ingest;
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

        let query = &metrics.query;
        registry.register(
            "consistency_timeout",
            "Strict-barrier queries that timed out waiting for their visibility token",
            query.consistency_timeouts.clone(),
        );
        registry.register("query_requests", "Queries by kind, strict barrier use and result", query.requests.clone());
        registry.register(
            "query_latency_ms",
            "Milliseconds from query receipt to the last byte of the response",
            query.latency_ms.clone(),
        );
        registry.register("query_scanned_files", "Parquet files opened per query", query.scanned_files.clone());
        registry.register("query_scanned_bytes", "Parquet bytes opened per query", query.scanned_bytes.clone());

        metrics.create_known_series();
        metrics
    }
}

impl ApiMetrics {
    /// The API's metrics in `metrics`' registry (registered on first use).
    pub fn new(metrics: &Metrics) -> Self {
        metrics.component()
    }

    /// Creates every series whose labels are all enums, at zero.
    fn create_known_series(&self) {
        for &route in Route::ALL {
            for &status_class in StatusClass::ALL {
                let _ = self.http_requests.get_or_create(&HttpLabels { route, status_class });
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
    }

    /// The `tenant` label value to use for `tenant`, under the process's tenant cap.
    pub fn tenant_label(&self, tenant: &str) -> String {
        self.tenants.label(tenant)
    }

    /// Counts one HTTP response.
    pub fn observe_http(&self, route: Route, status: u16) {
        self.http_requests.get_or_create(&HttpLabels { route, status_class: StatusClass::of(status) }).inc();
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
            self.query.consistency_timeouts.inc();
        }
    }
}

/// One finished query, for [`ApiMetrics::observe_query`].
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_exported_with_total_suffix_and_prefix() {
        let metrics = Metrics::new();
        ApiMetrics::new(&metrics).observe_ingest("acme", IngestResult::Accepted, 10, 2, 12.0);
        let text = metrics.encode();
        assert!(text.contains("duckmesh_ingest_requests_total{tenant=\"acme\",result=\"accepted\"} 1"), "{text}");
        assert!(text.contains("duckmesh_ingest_records_total{tenant=\"acme\"} 10"));
        assert!(text.contains("duckmesh_ingest_duplicates_total{tenant=\"acme\"} 2"));
        assert!(text.contains("duckmesh_ingest_ack_latency_ms_count 1"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn latency_histograms_have_the_slo_buckets() {
        let metrics = Metrics::new();
        let _ = ApiMetrics::new(&metrics);
        let text = metrics.encode();
        for line in [
            "duckmesh_ingest_ack_latency_ms_bucket{le=\"200.0\"} 0",
            "duckmesh_query_latency_ms_bucket{le=\"2000.0\",kind=\"interactive\"} 0",
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
        ApiMetrics::new(&metrics).observe_query(QueryObservation {
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
}
