//! OpenTelemetry traces: the tracer provider (OTLP export only when an `OTEL_*` endpoint is
//! set), a span exporter decorator that scrubs secrets from attributes, and W3C trace-context
//! helpers for HTTP headers and for the `TRACEPARENT` variable handed to worker processes.
//!
//! The provider exists even when export is off, so trace ids still appear on log lines and
//! are still passed on to workers and callers; spans are then simply not shipped anywhere.

use std::collections::HashMap;
use std::time::Duration;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::config::TelemetryConfig;
use crate::error::{Error, Result};
use crate::scrub::{REDACTED, is_sensitive_field, scrub_text};

/// Environment variable carrying the W3C `traceparent` into worker processes and pods.
pub const TRACEPARENT_ENV: &str = "TRACEPARENT";
/// Environment variable carrying the W3C `tracestate` next to [`TRACEPARENT_ENV`].
pub const TRACESTATE_ENV: &str = "TRACESTATE";
/// The W3C header (and propagation field) name.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The W3C `tracestate` header name.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// Builds the tracer provider for `config`: OTLP/HTTP export through a scrubbing decorator
/// when enabled, otherwise a provider that records ids but exports nothing.
pub fn tracer_provider(config: &TelemetryConfig) -> Result<SdkTracerProvider> {
    let builder = SdkTracerProvider::builder().with_resource(resource(&config.service));
    if !config.otlp_traces {
        return Ok(builder.build());
    }
    // The builder reads OTEL_EXPORTER_OTLP_{TRACES_,}ENDPOINT, _HEADERS, _TIMEOUT,
    // _COMPRESSION and _PROTOCOL itself; only http/protobuf is compiled in.
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build().map_err(Error::OtlpExporter)?;
    Ok(builder.with_batch_exporter(ScrubbingExporter::new(exporter)).build())
}

/// `service.name` comes from `OTEL_SERVICE_NAME` when set (the standard precedence),
/// otherwise from the service passed to `init()`; `OTEL_RESOURCE_ATTRIBUTES` is honoured.
fn resource(service: &str) -> Resource {
    let builder = Resource::builder();
    let from_env = std::env::var("OTEL_SERVICE_NAME").ok().filter(|name| !name.trim().is_empty());
    match from_env {
        Some(_) => builder.build(),
        None => builder.with_service_name(service.to_owned()).build(),
    }
}

/// A [`SpanExporter`] decorator that redacts secrets from span, event and link attributes
/// (by key name and by value) and from span and event names before export.
#[derive(Debug)]
pub struct ScrubbingExporter<E> {
    inner: E,
}

impl<E: SpanExporter> ScrubbingExporter<E> {
    /// Wraps `inner`.
    pub fn new(inner: E) -> Self {
        ScrubbingExporter { inner }
    }
}

impl<E: SpanExporter> SpanExporter for ScrubbingExporter<E> {
    fn export(&self, mut batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        for span in &mut batch {
            scrub_span(span);
        }
        self.inner.export(batch)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Redacts one span in place.
pub fn scrub_span(span: &mut SpanData) {
    if let std::borrow::Cow::Owned(name) = scrub_text(&span.name) {
        span.name = name.into();
    }
    scrub_attributes(&mut span.attributes);
    for event in span.events.events.iter_mut() {
        if let std::borrow::Cow::Owned(name) = scrub_text(&event.name) {
            event.name = name.into();
        }
        scrub_attributes(&mut event.attributes);
    }
    for link in span.links.links.iter_mut() {
        scrub_attributes(&mut link.attributes);
    }
}

fn scrub_attributes(attributes: &mut [KeyValue]) {
    for attribute in attributes.iter_mut() {
        if is_sensitive_field(attribute.key.as_str()) {
            attribute.value = Value::from(REDACTED);
            continue;
        }
        let replacement = match &attribute.value {
            Value::String(text) => match scrub_text(text.as_str()) {
                std::borrow::Cow::Owned(clean) => Some(Value::from(clean)),
                std::borrow::Cow::Borrowed(_) => None,
            },
            Value::Array(opentelemetry::Array::String(items)) => {
                let cleaned: Vec<opentelemetry::StringValue> =
                    items.iter().map(|item| scrub_text(item.as_str()).into_owned().into()).collect();
                Some(Value::Array(opentelemetry::Array::String(cleaned)))
            }
            _ => None,
        };
        if let Some(value) = replacement {
            attribute.value = value;
        }
    }
}

/// Adapts an [`http::HeaderMap`] for injection.
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_str(&value)) {
            self.0.insert(name, value);
        }
    }
}

/// Adapts an [`http::HeaderMap`] for extraction.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Context of the current tracing span (empty when there is none).
pub fn current_context() -> Context {
    tracing::Span::current().context()
}

/// Writes `traceparent` (and `tracestate`) for `context` into `headers`.
pub fn inject_context_into_headers(context: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(context, &mut HeaderInjector(headers));
}

/// Writes the current span's `traceparent` into outgoing request `headers`.
pub fn inject_current_into_headers(headers: &mut HeaderMap) {
    inject_context_into_headers(&current_context(), headers);
}

/// Reads the caller's trace context from incoming request `headers` (empty when absent or
/// malformed).
pub fn extract_from_headers(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Makes `span` a child of the trace described by incoming `headers`. Call before the span
/// is first entered.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &HeaderMap) {
    let parent = extract_from_headers(headers);
    if parent.span().span_context().is_valid() {
        // Only fails when the span was already started or is disabled; the span then
        // keeps its own trace, which is the best that can be done.
        let _ = span.set_parent(parent);
    }
}

/// The `traceparent` string of `context`, if it has a valid span context.
pub fn traceparent_of(context: &Context) -> Option<String> {
    let mut fields: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(context, &mut fields);
    fields.remove(TRACEPARENT_HEADER)
}

/// The current span's `traceparent`, to hand to a worker process or pod as the
/// [`TRACEPARENT_ENV`] variable, or to store next to an ingest event.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&current_context())
}

/// Environment variables (`TRACEPARENT`, and `TRACESTATE` when non-empty) that carry the
/// current trace into a child process or pod.
pub fn current_trace_env() -> Vec<(&'static str, String)> {
    let mut fields: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&current_context(), &mut fields);
    let mut env = Vec::new();
    if let Some(parent) = fields.remove(TRACEPARENT_HEADER) {
        env.push((TRACEPARENT_ENV, parent));
        if let Some(state) = fields.remove(TRACESTATE_HEADER).filter(|s| !s.is_empty()) {
            env.push((TRACESTATE_ENV, state));
        }
    }
    env
}

/// Parses a `traceparent` (and optional `tracestate`) string into a remote parent context
/// (empty when malformed).
pub fn context_from_traceparent(traceparent: &str, tracestate: Option<&str>) -> Context {
    let mut fields: HashMap<String, String> = HashMap::new();
    fields.insert(TRACEPARENT_HEADER.to_owned(), traceparent.trim().to_owned());
    if let Some(state) = tracestate {
        fields.insert(TRACESTATE_HEADER.to_owned(), state.trim().to_owned());
    }
    TraceContextPropagator::new().extract(&fields)
}

/// The parent context a worker was started with, from `TRACEPARENT` / `TRACESTATE`.
pub fn context_from_env() -> Option<Context> {
    let parent = std::env::var(TRACEPARENT_ENV).ok()?;
    let state = std::env::var(TRACESTATE_ENV).ok();
    let context = context_from_traceparent(&parent, state.as_deref());
    context.span().span_context().is_valid().then_some(context)
}

/// Makes `span` a child of the trace in `TRACEPARENT`, if any. Returns whether it did.
pub fn set_parent_from_env(span: &tracing::Span) -> bool {
    match context_from_env() {
        Some(parent) => span.set_parent(parent).is_ok(),
        None => false,
    }
}

/// Adds a link from `span` to the span that `traceparent` names: how a commit span points
/// back at the ingest requests whose events it made visible. Malformed values are ignored.
pub fn link_to_traceparent(span: &tracing::Span, traceparent: &str) {
    let context = context_from_traceparent(traceparent, None);
    let remote: SpanContext = context.span().span_context().clone();
    if remote.is_valid() {
        span.add_link(remote);
    }
}

/// The current trace id as 32 lower-case hex digits, for log lines and API error bodies.
pub fn current_trace_id() -> Option<String> {
    let context = current_context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_round_trips_through_headers() {
        let context = context_from_traceparent(PARENT, Some("vendor=1"));
        let mut headers = HeaderMap::new();
        inject_context_into_headers(&context, &mut headers);
        assert_eq!(headers.get("traceparent").and_then(|v| v.to_str().ok()), Some(PARENT));
        assert_eq!(headers.get("tracestate").and_then(|v| v.to_str().ok()), Some("vendor=1"));
        let back = extract_from_headers(&headers);
        assert_eq!(back.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(back.span().span_context().is_remote());
        assert_eq!(traceparent_of(&back).as_deref(), Some(PARENT));
    }

    #[test]
    fn malformed_traceparent_gives_an_empty_context() {
        for bad in
            ["", "garbage", "00-zz-00f067aa0ba902b7-01", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"]
        {
            let context = context_from_traceparent(bad, None);
            assert!(!context.span().span_context().is_valid(), "{bad:?}");
            assert_eq!(traceparent_of(&context), None);
        }
        assert!(!extract_from_headers(&HeaderMap::new()).span().span_context().is_valid());
    }

    #[test]
    fn no_span_means_no_trace_id() {
        assert_eq!(current_trace_id(), None);
        assert_eq!(current_traceparent(), None);
        assert!(current_trace_env().is_empty());
    }

    #[test]
    fn attributes_are_scrubbed_by_key_and_value() {
        let mut attributes = vec![
            KeyValue::new("db.password", "hunter2"),
            KeyValue::new("url", "postgres://duck:hunter2@db/catalog"),
            KeyValue::new("fencing_token", 42_i64),
            KeyValue::new("visibility_token", "17"),
            KeyValue::new(
                "urls",
                Value::Array(opentelemetry::Array::String(vec!["https://b.s3/x?X-Amz-Signature=abc".into()])),
            ),
        ];
        scrub_attributes(&mut attributes);
        let text = format!("{attributes:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("abc"), "{text}");
        assert_eq!(attributes[2].value, Value::I64(42));
        assert_eq!(attributes[3].value, Value::from("17"));
    }
}
