//! Log lines of a failing task: every required field is there, span fields are flattened,
//! the trace id is the one propagated from the operator, and no secret survives — in the
//! log text nor in exported span attributes.

use std::io;
use std::sync::{Arc, Mutex};

use duckmesh_telemetry::traces::ScrubbingExporter;
use duckmesh_telemetry::{
    LogFormat, TelemetryConfig, context_from_traceparent, current_trace_env, current_trace_id, current_traceparent,
    inject_current_into_headers, link_to_traceparent, subscriber,
};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde_json::Value;
use tracing::{error, info, info_span, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::fmt::MakeWriter;

/// Collects everything written, as a test writer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8(bytes).expect("log output is UTF-8")
    }

    fn json_lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
            .collect()
    }
}

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().map_err(|_| io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The operator's trace, as a worker pod receives it in `TRACEPARENT`.
const OPERATOR_TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const OPERATOR_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// Every secret the failing task below tries to log. None may appear anywhere.
const SECRETS: &[&str] = &[
    "hunter2",
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
    "deadbeefcafe0123456789",
    "eyJhbGciOiJIUzI1NiJ9.payload.sig",
    "s3cr3t-token-value",
];

fn config(format: LogFormat) -> TelemetryConfig {
    TelemetryConfig {
        service: "duckmesh-worker".to_owned(),
        log_format: format,
        log_filter: "info".to_owned(),
        log_filter_source: "test",
        otlp_traces: false,
    }
}

/// What a worker does when its task fails: join the operator's trace, log inside the
/// attempt span, hit an error full of credentials.
fn run_failing_task() {
    let attempt = info_span!(
        "attempt",
        tenant_id = "acme",
        namespace = "analytics",
        job = "nightly",
        task = "nightly-load",
        attempt = 2_u64,
        fencing_token = 17_u64,
        db_password = "hunter2",
        error_code = tracing::field::Empty,
    );
    attempt
        .set_parent(context_from_traceparent(OPERATOR_TRACEPARENT, None))
        .expect("parent set before the span starts");
    let _entered = attempt.enter();

    info!(
        visibility_token = 42_u64,
        catalog_url = "postgres://duckmesh:hunter2@catalog:5432/duckmesh",
        "attempt started"
    );
    let commit = info_span!("commit", dataset = "events");
    commit.in_scope(|| {
        warn!(
            aws_access_key_id = "AKIAIOSFODNN7EXAMPLE",
            aws_secret_access_key = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
            "object store slow, retrying"
        );
        let export = "https://lake.s3.amazonaws.com/exports/q/part-0.parquet?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=deadbeefcafe0123456789";
        let failure = io::Error::other(format!(
            "PUT {export} failed: connection to postgres://duckmesh:hunter2@catalog/duckmesh refused (token=s3cr3t-token-value)"
        ));
        tracing::Span::current().record("error_code", "TASK_COMMIT_FAILED");
        attempt_failed(&failure);
    });
}

fn attempt_failed(failure: &io::Error) {
    error!(
        error_code = "TASK_COMMIT_FAILED",
        error = failure as &dyn std::error::Error,
        authorization = "Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
        "task attempt failed"
    );
}

#[test]
fn failing_task_lines_carry_required_fields_and_no_secret() {
    let capture = Capture::default();
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(ScrubbingExporter::new(exporter.clone())).build();
    let subscriber = subscriber(&config(LogFormat::Json), capture.clone(), &provider).expect("subscriber builds");
    tracing::subscriber::with_default(subscriber, run_failing_task);

    let text = capture.text();
    for secret in SECRETS {
        assert!(!text.contains(secret), "secret {secret:?} leaked into logs:\n{text}");
    }

    let lines = capture.json_lines();
    assert_eq!(lines.len(), 3, "{text}");
    for line in &lines {
        for field in [
            "timestamp",
            "level",
            "service",
            "tenant_id",
            "trace_id",
            "error_code",
            "job",
            "task",
            "attempt",
            "message",
        ] {
            assert!(line.get(field).is_some(), "field {field} missing from {line}");
        }
        assert_eq!(line["service"], "duckmesh-worker");
        assert_eq!(line["tenant_id"], "acme");
        assert_eq!(line["namespace"], "analytics");
        assert_eq!(line["job"], "nightly");
        assert_eq!(line["task"], "nightly-load");
        assert_eq!(line["attempt"], 2);
        // The worker's lines are in the operator's trace.
        assert_eq!(line["trace_id"], OPERATOR_TRACE_ID);
        // Fencing tokens are not secrets and must stay readable for debugging.
        assert_eq!(line["fencing_token"], 17);
        assert_eq!(line["db_password"], "[REDACTED]");
        let timestamp = line["timestamp"].as_str().expect("timestamp string");
        humantime::parse_rfc3339(timestamp).expect("RFC 3339 timestamp");
    }

    let started = &lines[0];
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["message"], "attempt started");
    assert_eq!(started["error_code"], Value::Null);
    assert_eq!(started["visibility_token"], 42);
    assert_eq!(started["catalog_url"], "postgres://duckmesh:[REDACTED]@catalog:5432/duckmesh");

    let retrying = &lines[1];
    assert_eq!(retrying["level"], "WARN");
    assert_eq!(retrying["dataset"], "events");
    assert_eq!(retrying["span"], "commit");
    assert_eq!(retrying["aws_access_key_id"], "[REDACTED]");

    let failed = &lines[2];
    assert_eq!(failed["level"], "ERROR");
    assert_eq!(failed["error_code"], "TASK_COMMIT_FAILED");
    assert_eq!(failed["authorization"], "[REDACTED]");
    let error_text = failed["error"].as_str().expect("error rendered as text");
    assert!(error_text.contains("part-0.parquet?[REDACTED]"), "{error_text}");
    assert!(error_text.contains("postgres://duckmesh:[REDACTED]@catalog"), "{error_text}");
    assert!(error_text.contains("token=[REDACTED]"), "{error_text}");

    // Span ids differ per span but share the trace.
    assert_ne!(lines[0]["span_id"], lines[1]["span_id"]);

    // Exported spans carry the same attributes, scrubbed the same way.
    provider.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("finished spans");
    assert_eq!(spans.len(), 2);
    let exported = format!("{spans:?}");
    for secret in SECRETS {
        assert!(!exported.contains(secret), "secret {secret:?} leaked into spans");
    }
    for span in &spans {
        assert_eq!(span.span_context.trace_id().to_string(), OPERATOR_TRACE_ID);
    }
    assert!(exported.contains("TASK_COMMIT_FAILED"));
}

#[test]
fn pretty_format_is_scrubbed_too() {
    let capture = Capture::default();
    let provider = SdkTracerProvider::builder().build();
    let subscriber = subscriber(&config(LogFormat::Pretty), capture.clone(), &provider).expect("subscriber builds");
    tracing::subscriber::with_default(subscriber, run_failing_task);
    let text = capture.text();
    assert_eq!(text.lines().count(), 3, "{text}");
    for secret in SECRETS {
        assert!(!text.contains(secret), "secret {secret:?} leaked:\n{text}");
    }
    let failed = text.lines().nth(2).unwrap_or_default();
    assert!(failed.contains("ERROR duckmesh-worker"), "{failed}");
    assert!(failed.contains("task attempt failed"), "{failed}");
    assert!(failed.contains(&format!("trace_id={OPERATOR_TRACE_ID}")), "{failed}");
    assert!(failed.contains("error_code=TASK_COMMIT_FAILED"), "{failed}");
    assert!(failed.contains("job=nightly task=nightly-load attempt=2"), "{failed}");
}

#[test]
fn lines_outside_spans_have_null_context_fields() {
    let capture = Capture::default();
    let provider = SdkTracerProvider::builder().build();
    let subscriber = subscriber(&config(LogFormat::Json), capture.clone(), &provider).expect("subscriber builds");
    tracing::subscriber::with_default(subscriber, || info!("listening"));
    let lines = capture.json_lines();
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(line["message"], "listening");
    assert_eq!(line["tenant_id"], Value::Null);
    assert_eq!(line["trace_id"], Value::Null);
    assert_eq!(line["error_code"], Value::Null);
    assert!(line.get("job").is_none());
}

#[test]
fn filter_drops_lines_below_the_level() {
    let capture = Capture::default();
    let provider = SdkTracerProvider::builder().build();
    let mut config = config(LogFormat::Json);
    config.log_filter = "warn".to_owned();
    let subscriber = subscriber(&config, capture.clone(), &provider).expect("subscriber builds");
    tracing::subscriber::with_default(subscriber, || {
        info!("hidden");
        warn!("shown");
    });
    let lines = capture.json_lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["message"], "shown");

    let mut bad = self::config(LogFormat::Json);
    bad.log_filter = "=[".to_owned();
    let error = duckmesh_telemetry::subscriber(&bad, Capture::default(), &provider).err().expect("rejected");
    assert_eq!(error.error_code(), "TELEMETRY_LOG_FILTER_INVALID");
}

#[test]
fn trace_context_flows_to_headers_env_and_logs() {
    let capture = Capture::default();
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber = subscriber(&config(LogFormat::Json), capture.clone(), &provider).expect("subscriber builds");
    tracing::subscriber::with_default(subscriber, || {
        let ingest = info_span!("ingest", tenant_id = "acme");
        let stored_traceparent = ingest.in_scope(|| {
            let trace_id = current_trace_id().expect("a trace id inside a span");
            assert_eq!(trace_id.len(), 32);
            let mut headers = http::HeaderMap::new();
            inject_current_into_headers(&mut headers);
            let header = headers["traceparent"].to_str().expect("ascii").to_owned();
            assert!(header.contains(&trace_id), "{header}");
            let env = current_trace_env();
            assert_eq!(env[0].0, "TRACEPARENT");
            assert_eq!(env[0].1, header);
            info!("acked");
            current_traceparent().expect("traceparent to store with the ingest event")
        });
        drop(ingest);

        // The coordinator's commit, later, in its own trace, links back to the ingest.
        let commit = info_span!("commit");
        link_to_traceparent(&commit, &stored_traceparent);
        commit.in_scope(|| info!("committed"));
        drop(commit);

        let lines = capture.json_lines();
        assert_eq!(lines.len(), 2);
        assert!(stored_traceparent.contains(lines[0]["trace_id"].as_str().expect("trace id")));
        assert_ne!(lines[0]["trace_id"], lines[1]["trace_id"]);
    });
    provider.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("spans");
    let ingest = spans.iter().find(|s| s.name == "ingest").expect("ingest span");
    let commit = spans.iter().find(|s| s.name == "commit").expect("commit span");
    assert_eq!(commit.links.links.len(), 1);
    let linked = &commit.links.links[0].span_context;
    assert_eq!(linked.trace_id(), ingest.span_context.trace_id());
    assert_eq!(linked.span_id(), ingest.span_context.span_id());
    assert_ne!(commit.span_context.trace_id(), ingest.span_context.trace_id());
}
