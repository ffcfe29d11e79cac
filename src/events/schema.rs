//! JSON Schemas of the event payloads, generated from the Rust types and committed under
//! `schemas/` (a test fails when the files drift from the code).

use schemars::{JsonSchema, schema_for};
use serde_json::Value;

use super::completion::{RunCompletionEvent, RunCompletionEventData};

/// Default base of `dataschema`: the schema's file name in `schemas/` is appended. A URN,
/// because the schemas have no published location yet; deployments that serve `schemas/`
/// somewhere pass that URL (ending in `/`) to [`super::CloudEventOptions::new`].
pub const DEFAULT_SCHEMA_BASE: &str = "urn:kfp-operator:schemas:";
/// The schema of the `data` of `run-completion` and `model-ready` CloudEvents.
pub const RUN_COMPLETION_EVENT_SCHEMA: &str = "run-completion-event.json";
/// The schema of the body providers POST to `/events`.
pub const RUN_COMPLETION_EVENT_DATA_SCHEMA: &str = "run-completion-event-data.json";

/// Every schema as `(file name in schemas/, pretty-printed JSON with a trailing newline)`.
pub fn schemas() -> Vec<(&'static str, String)> {
    vec![
        (RUN_COMPLETION_EVENT_SCHEMA, render::<RunCompletionEvent>(RUN_COMPLETION_EVENT_SCHEMA)),
        (
            RUN_COMPLETION_EVENT_DATA_SCHEMA,
            render::<RunCompletionEventData>(RUN_COMPLETION_EVENT_DATA_SCHEMA),
        ),
    ]
}

fn render<T: JsonSchema>(file: &str) -> String {
    let mut schema = schema_for!(T);
    schema.insert("$id".to_owned(), Value::String(format!("{DEFAULT_SCHEMA_BASE}{file}")));
    let value = sorted(schema.to_value());
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

/// Object keys in lexical order at every level, whatever map type serde_json was built with.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(key, value)| (key, sorted(value))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_json_with_an_id_and_a_trailing_newline() {
        for (file, text) in schemas() {
            assert!(text.ends_with("}\n"), "{file}");
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(value["$id"], Value::String(format!("{DEFAULT_SCHEMA_BASE}{file}")));
            assert_eq!(value["type"], "object");
        }
    }
}
