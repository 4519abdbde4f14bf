//! The log layer: one line per event on stderr, JSON by default, with the fields every
//! DuckMesh process must carry (`timestamp`, `level`, `service`, `tenant_id`, `trace_id`,
//! `error_code`, and `job` / `task` / `attempt` when known).
//!
//! Fields of the enclosing spans are flattened into the line (outermost first, the event's
//! own fields last), so `info_span!("attempt", job, task, attempt)` once is enough for every
//! line logged inside it. Every value passes through [`crate::scrub`] before it is written.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use opentelemetry::trace::TraceContextExt as _;
use serde_json::Value;
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;
use crate::scrub::{REDACTED, is_sensitive_field, scrub_text};

/// Fields always present on a JSON line (`null` when unknown), in output order after
/// `timestamp`, `level`, `service`, `target` and `message`.
pub const ALWAYS_PRESENT_FIELDS: &[&str] = &["tenant_id", "trace_id", "span_id", "error_code"];

/// Work-attribution fields written right after the always-present ones when known.
pub const ATTRIBUTION_FIELDS: &[&str] = &["namespace", "dataset", "job", "task", "attempt"];

/// Field names the layer computes itself; a span or event field of the same name is ignored.
const RESERVED_FIELDS: &[&str] = &["timestamp", "level", "service", "target", "trace_id", "span_id"];

/// Scrubbed fields recorded on a span, kept in its extensions.
#[derive(Default)]
struct SpanFields {
    fields: Vec<(&'static str, Value)>,
}

impl SpanFields {
    fn set(&mut self, name: &'static str, value: Value) {
        match self.fields.iter_mut().find(|(existing, _)| *existing == name) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((name, value)),
        }
    }
}

/// Visitor that turns tracing fields into scrubbed JSON values.
struct FieldCollector<'a> {
    fields: &'a mut SpanFields,
}

impl FieldCollector<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        let value = if is_sensitive_field(name) { Value::String(REDACTED.to_owned()) } else { value };
        self.fields.set(name, value);
    }

    fn put_text(&mut self, field: &Field, text: &str) {
        let scrubbed = scrub_text(text).into_owned();
        self.put(field, Value::String(scrubbed));
    }
}

impl Visit for FieldCollector<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let number =
            serde_json::Number::from_f64(value).map(Value::Number).unwrap_or_else(|| Value::String(value.to_string()));
        self.put(field, number);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put_text(field, &value.to_string());
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put_text(field, &value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put_text(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole `source()` chain, so the root cause is in the line.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            let _ = write!(text, ": {cause}");
            source = cause.source();
        }
        self.put_text(field, &text);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put_text(field, &format!("{value:?}"));
    }
}

/// The DuckMesh log layer. Build it with [`LogLayer::new`]; `init()` does this for you.
pub struct LogLayer<W> {
    service: Arc<str>,
    format: LogFormat,
    make_writer: W,
    /// The dispatcher this layer is part of, to look up the OpenTelemetry context of a
    /// span from inside `on_event` (where the thread-local default is not reachable).
    dispatch: OnceLock<WeakDispatch>,
}

impl<W> LogLayer<W>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    /// A layer writing lines for `service` in `format` to `make_writer`.
    pub fn new(service: &str, format: LogFormat, make_writer: W) -> Self {
        LogLayer { service: Arc::from(service), format, make_writer, dispatch: OnceLock::new() }
    }

    fn trace_ids(&self, span: &Id) -> (Option<String>, Option<String>) {
        let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) else {
            return (None, None);
        };
        let Some(context) = tracing_opentelemetry::get_otel_context(span, &dispatch) else {
            return (None, None);
        };
        let span_ref = context.span();
        let span_context = span_ref.span_context();
        if span_context.is_valid() {
            (Some(span_context.trace_id().to_string()), Some(span_context.span_id().to_string()))
        } else {
            (None, None)
        }
    }
}

impl<S, W> Layer<S> for LogLayer<W>
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
        attrs.record(&mut FieldCollector { fields: &mut fields });
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut FieldCollector { fields });
        } else {
            let mut fields = SpanFields::default();
            values.record(&mut FieldCollector { fields: &mut fields });
            extensions.insert(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // Span fields, outermost first, then the event's own fields: inner values win.
        let mut merged = SpanFields::default();
        let leaf = ctx.event_span(event);
        let mut innermost_id = None;
        if let Some(leaf) = &leaf {
            innermost_id = Some(leaf.id());
            for span in leaf.scope().from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<SpanFields>() {
                    for (name, value) in &fields.fields {
                        merged.set(name, value.clone());
                    }
                }
            }
        }
        event.record(&mut FieldCollector { fields: &mut merged });

        let (trace_id, span_id) = match &innermost_id {
            Some(id) => self.trace_ids(id),
            None => (None, None),
        };
        let metadata = event.metadata();
        let line = LogLine {
            timestamp: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            level: metadata.level().as_str(),
            service: &self.service,
            target: metadata.target(),
            span: leaf.as_ref().map(|span| span.name()),
            trace_id,
            span_id,
            fields: merged.fields,
        };
        let mut text = match self.format {
            LogFormat::Json => line.to_json(),
            LogFormat::Pretty => line.to_pretty(),
        };
        text.push('\n');
        let mut writer = self.make_writer.make_writer_for(metadata);
        let _ = writer.write_all(text.as_bytes());
    }
}

/// One rendered event before formatting.
struct LogLine<'a> {
    timestamp: String,
    level: &'static str,
    service: &'a str,
    target: &'a str,
    span: Option<&'static str>,
    trace_id: Option<String>,
    span_id: Option<String>,
    fields: Vec<(&'static str, Value)>,
}

impl LogLine<'_> {
    /// Ordered key/value pairs shared by both renderings.
    fn ordered(&self) -> Vec<(&str, Value)> {
        let mut by_name: HashMap<&str, &Value> = HashMap::new();
        for (name, value) in &self.fields {
            by_name.insert(name, value);
        }
        let take = |name: &str| by_name.get(name).map(|value| (*value).clone());

        let mut out: Vec<(&str, Value)> = vec![
            ("timestamp", Value::String(self.timestamp.clone())),
            ("level", Value::String(self.level.to_owned())),
            ("service", Value::String(self.service.to_owned())),
            ("target", Value::String(self.target.to_owned())),
            ("message", take("message").unwrap_or(Value::String(String::new()))),
            ("tenant_id", take("tenant_id").unwrap_or(Value::Null)),
            ("trace_id", self.trace_id.clone().map(Value::String).unwrap_or(Value::Null)),
            ("span_id", self.span_id.clone().map(Value::String).unwrap_or(Value::Null)),
            ("error_code", take("error_code").unwrap_or(Value::Null)),
        ];
        for name in ATTRIBUTION_FIELDS {
            if let Some(value) = take(name) {
                out.push((name, value));
            }
        }
        if let Some(span) = self.span {
            out.push(("span", Value::String(span.to_owned())));
        }
        for (name, value) in &self.fields {
            let placed = *name == "message"
                || *name == "tenant_id"
                || *name == "error_code"
                || ATTRIBUTION_FIELDS.contains(name)
                || RESERVED_FIELDS.contains(name);
            if !placed {
                out.push((name, value.clone()));
            }
        }
        out
    }

    fn to_json(&self) -> String {
        let mut text = String::with_capacity(256);
        text.push('{');
        for (index, (name, value)) in self.ordered().into_iter().enumerate() {
            if index > 0 {
                text.push(',');
            }
            text.push_str(&Value::String(name.to_owned()).to_string());
            text.push(':');
            text.push_str(&value.to_string());
        }
        text.push('}');
        text
    }

    fn to_pretty(&self) -> String {
        let pairs = self.ordered();
        let lookup = |key: &str| pairs.iter().find(|(name, _)| *name == key).map(|(_, value)| value);
        let plain = |value: &Value| match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let mut text = format!(
            "{} {:>5} {} {}: {}",
            self.timestamp,
            self.level,
            self.service,
            self.target,
            lookup("message").map(plain).unwrap_or_default()
        );
        for (name, value) in &pairs {
            let header = matches!(*name, "timestamp" | "level" | "service" | "target" | "message");
            if header || value.is_null() {
                continue;
            }
            let _ = write!(text, " {name}={}", plain(value));
        }
        text
    }
}
