//! The JSON log line (`--log-json`): one object per line with `timestamp` (RFC 3339, UTC),
//! `level`, `logger`, `message`, then the fields of every span the event is in (outermost
//! first) and the event's own fields, all flattened to the top level. `logger` is the
//! innermost span's `logger` field (a reconcile's `pipeline-controller`), else the component
//! the line comes from (`kfp_operator::events::ingest` logs as `events-ingest`).
//!
//! Spans carry what groups lines: a reconcile's `reconciliation_id`, kind and namespace; a
//! completion's `trace_id`. Their fields must be formatted by [`JsonFields`], which the
//! subscriber of [`json_subscriber`] does.

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// The fields every line starts with, never overwritten by span or event fields.
const RESERVED: [&str; 4] = ["timestamp", "level", "logger", "message"];
/// The span field naming the logger.
pub const LOGGER_FIELD: &str = "logger";

/// Formats events as the JSON log line of the module header.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

/// A subscriber writing JSON log lines to `writer`, filtered by `filter`.
pub fn json_subscriber<W>(filter: tracing_subscriber::EnvFilter, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(JsonFields::new())
        .event_format(JsonLines)
        .with_writer(writer)
        .finish()
}

/// The logger of lines outside any span naming one: the module path below the crate, `-`
/// joined (`kfp_operator::completion::fan_out` → `completion-fan-out`); other crates' targets
/// the same way (`kube_runtime::controller` → `kube-runtime-controller`).
pub fn component_of(target: &str) -> String {
    let path = target.strip_prefix("kfp_operator::").unwrap_or(target);
    path.replace("::", "-").replace('_', "-")
}

/// One line: the reserved fields, then `spans` (outermost first) and `event`'s fields, later
/// ones winning, with the innermost span's logger if any.
pub fn render(
    timestamp: &str,
    level: &str,
    target: &str,
    spans: Vec<Map<String, Value>>,
    event: Map<String, Value>,
) -> String {
    let mut fields = Map::new();
    for span in spans {
        fields.extend(span);
    }
    let logger = match fields.remove(LOGGER_FIELD) {
        Some(Value::String(logger)) => logger,
        _ => component_of(target),
    };
    fields.extend(event);
    let message = fields.remove("message").unwrap_or_else(|| "".into());
    let mut line = String::from("{");
    let mut push = |key: &str, value: &Value| {
        if line.len() > 1 {
            line.push(',');
        }
        line.push_str(&Value::from(key).to_string());
        line.push(':');
        line.push_str(&value.to_string());
    };
    push("timestamp", &timestamp.into());
    push("level", &level.into());
    push("logger", &logger.into());
    push("message", &message);
    for (key, value) in &fields {
        if !RESERVED.contains(&key.as_str()) {
            push(key, value);
        }
    }
    line.push('}');
    line
}

/// Collects an event's fields as JSON values.
#[derive(Default)]
struct FieldsAsJson(Map<String, Value>);

impl Visit for FieldsAsJson {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let fields = extensions
                    .get::<FormattedFields<N>>()
                    .and_then(|formatted| serde_json::from_str::<Map<String, Value>>(&formatted.fields).ok());
                spans.push(fields.unwrap_or_default());
            }
        }
        let mut fields = FieldsAsJson::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let timestamp = format!("{:.3}", jiff::Timestamp::now());
        let line = render(&timestamp, metadata.level().as_str(), metadata.target(), spans, fields.0);
        writeln!(writer, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    fn lines_of(log: impl FnOnce()) -> Vec<Value> {
        let buffer = Buffer::default();
        let subscriber = json_subscriber(tracing_subscriber::EnvFilter::new("debug"), buffer.clone());
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                assert!(line.starts_with(r#"{"timestamp":"#), "the reserved fields first: {line}");
                serde_json::from_str(line).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_line_inside_a_reconcile_has_the_documented_shape() {
        let lines = lines_of(|| {
            let span = tracing::info_span!(
                "reconcile",
                logger = "pipeline-controller",
                pipeline = "training-pipeline",
                namespace = "ml-team",
                reconciliation_id = "abc-123-def",
            );
            let _entered = span.enter();
            tracing::info!(duration_ms = 150u64, "Pipeline reconciliation completed");
        });
        let line = lines[0].as_object().unwrap();
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["logger"], "pipeline-controller");
        assert_eq!(line["message"], "Pipeline reconciliation completed");
        assert_eq!(line["pipeline"], "training-pipeline");
        assert_eq!(line["namespace"], "ml-team");
        assert_eq!(line["reconciliation_id"], "abc-123-def");
        assert_eq!(line["duration_ms"], 150);
        let timestamp = line["timestamp"].as_str().unwrap();
        assert!(timestamp.ends_with('Z'), "{timestamp}");
        assert!(timestamp.parse::<jiff::Timestamp>().is_ok(), "{timestamp}");
    }

    #[test]
    fn fields_of_nested_spans_are_flattened_and_the_event_wins() {
        let lines = lines_of(|| {
            let outer = tracing::info_span!("completion", trace_id = "t-1", run = "outer");
            let _outer = outer.enter();
            let inner = tracing::debug_span!("fan_out", dependants = 2u64, run = "inner");
            let _inner = inner.enter();
            tracing::warn!(run = "event", error = %"boom", "dependant Run created");
        });
        let line = &lines[0];
        assert_eq!(line["trace_id"], "t-1");
        assert_eq!(line["dependants"], 2);
        assert_eq!(line["run"], "event");
        assert_eq!(line["error"], "boom");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["logger"], "logging-tests", "the module the line comes from");
    }

    #[test]
    fn lines_outside_spans_name_their_component() {
        assert_eq!(component_of("kfp_operator::events::ingest"), "events-ingest");
        assert_eq!(component_of("kfp_operator::completion::fan_out"), "completion-fan-out");
        assert_eq!(component_of("kube_runtime::controller"), "kube-runtime-controller");
        let line: Value = serde_json::from_str(&render(
            "2024-01-15T10:30:00.000Z",
            "ERROR",
            "kfp_operator::operator",
            vec![],
            [("message".to_owned(), "stopping".into()), ("level".to_owned(), "shadowed".into())]
                .into_iter()
                .collect(),
        ))
        .unwrap();
        assert_eq!(
            line,
            serde_json::json!({"timestamp": "2024-01-15T10:30:00.000Z", "level": "ERROR", "logger": "operator",
                "message": "stopping"})
        );
    }
}
