//! The remainder annotation: what a version cannot hold, kept so that the way back restores it.
//! Each entry records a field's path, the value the plain mapping produces there (`from`) and
//! the value it must have (`to`); an entry is applied only while the field still has its `from`
//! value, so an edit made in the other version is never overwritten. Entries are grouped by the
//! version whose data they are.

use serde_json::{Map, Value};

/// The annotation that carries the remainder.
pub const ANNOTATION: &str = "pipelines.kubeflow.org/conversion-remainder";

/// One field's difference between the plain mapping and the original.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// JSON pointer from the object's root.
    pub path: String,
    /// `None` when the field is absent.
    pub from: Option<Value>,
    pub to: Option<Value>,
}

/// The remainder's entries, by version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Remainder {
    pub versions: Map<String, Value>,
}

impl Remainder {
    /// Reads the annotation's JSON; `Err` says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        match serde_json::from_str(text) {
            Ok(Value::Object(versions)) => {
                for (version, entries) in &versions {
                    decode(entries).map_err(|e| format!("{version}: {e}"))?;
                }
                Ok(Self { versions })
            }
            Ok(_) => Err("not a JSON object".into()),
            Err(error) => Err(error.to_string()),
        }
    }

    /// The entries of `version`, removed from the remainder.
    pub fn take(&mut self, version: &str) -> Vec<Entry> {
        self.versions.remove(version).and_then(|entries| decode(&entries).ok()).unwrap_or_default()
    }

    pub fn put(&mut self, version: &str, entries: &[Entry]) {
        if entries.is_empty() {
            self.versions.remove(version);
        } else {
            self.versions.insert(version.to_owned(), Value::Array(entries.iter().map(encode).collect()));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    pub fn render(&self) -> String {
        Value::Object(self.versions.clone()).to_string()
    }
}

fn encode(entry: &Entry) -> Value {
    let mut object = Map::new();
    object.insert("path".into(), Value::String(entry.path.clone()));
    if let Some(from) = &entry.from {
        object.insert("from".into(), from.clone());
    }
    if let Some(to) = &entry.to {
        object.insert("to".into(), to.clone());
    }
    Value::Object(object)
}

fn decode(entries: &Value) -> Result<Vec<Entry>, String> {
    let Value::Array(entries) = entries else { return Err("not a list of entries".into()) };
    entries
        .iter()
        .map(|entry| {
            let path = entry.get("path").and_then(Value::as_str).ok_or("an entry without a path")?;
            if !path.starts_with('/') {
                return Err(format!("path {path:?} is not a JSON pointer"));
            }
            Ok(Entry {
                path: path.to_owned(),
                from: entry.get("from").cloned(),
                to: entry.get("to").cloned(),
            })
        })
        .collect()
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// The entries that turn `from` into `to`, below the top-level keys not in `skip`.
pub fn diff(from: &Map<String, Value>, to: &Map<String, Value>, skip: &[&str]) -> Vec<Entry> {
    let mut entries = Vec::new();
    diff_objects(from, to, "", skip, &mut entries);
    entries
}

fn diff_objects(
    from: &Map<String, Value>,
    to: &Map<String, Value>,
    path: &str,
    skip: &[&str],
    out: &mut Vec<Entry>,
) {
    let keys: std::collections::BTreeSet<&String> = from.keys().chain(to.keys()).collect();
    for key in keys {
        if skip.contains(&key.as_str()) {
            continue;
        }
        let child = format!("{path}/{}", escape(key));
        match (from.get(key), to.get(key)) {
            (Some(Value::Object(a)), Some(Value::Object(b))) => diff_objects(a, b, &child, &[], out),
            (a, b) if a == b => {}
            (a, b) => out.push(Entry { path: child, from: a.cloned(), to: b.cloned() }),
        }
    }
}

fn get<'a>(root: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut tokens = path.split('/').skip(1).map(unescape);
    let first = tokens.next()?;
    let mut current = root.get(&first)?;
    for token in tokens {
        current = current.as_object()?.get(&token)?;
    }
    Some(current)
}

fn set(root: &mut Map<String, Value>, path: &str, value: Option<Value>) {
    let tokens: Vec<String> = path.split('/').skip(1).map(unescape).collect();
    let Some((last, parents)) = tokens.split_last() else { return };
    let mut current = root;
    for token in parents {
        let next = current.entry(token.clone()).or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(next) = next else { return };
        current = next;
    }
    match value {
        Some(value) => {
            current.insert(last.clone(), value);
        }
        None => {
            current.remove(last);
        }
    }
}

/// Applies each entry whose field still holds its `from` value.
pub fn apply(root: &mut Map<String, Value>, entries: &[Entry]) {
    for entry in entries {
        if get(root, &entry.path) == entry.from.as_ref() {
            set(root, &entry.path, entry.to.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn obj(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn diff_then_apply_restores_the_original() {
        let from = obj(json!({"spec": {"a": 1, "b": {"c": [1]}, "gone": true}}));
        let to = obj(json!({"spec": {"a": 2, "b": {"c": [1, 2], "d/e~": null}}, "status": {"x": "y"}}));
        let entries = diff(&from, &to, &[]);
        let mut patched = from.clone();
        apply(&mut patched, &entries);
        assert_eq!(patched, to);
    }

    #[test]
    fn an_edited_field_is_not_overwritten() {
        let entries = vec![Entry { path: "/spec/a".into(), from: Some(json!(1)), to: Some(json!(2)) }];
        let mut edited = obj(json!({"spec": {"a": 5}}));
        apply(&mut edited, &entries);
        assert_eq!(edited, obj(json!({"spec": {"a": 5}})));
    }

    #[test]
    fn the_annotation_round_trips_and_bad_ones_say_why() {
        let mut remainder = Remainder::default();
        let entries = vec![Entry { path: "/spec/a".into(), from: None, to: Some(Value::Null) }];
        remainder.put("v1beta1", &entries);
        let mut parsed = Remainder::parse(&remainder.render()).unwrap();
        assert_eq!(parsed.take("v1beta1"), entries);
        assert!(Remainder::parse("[1]").unwrap_err().contains("not a JSON object"));
        assert!(Remainder::parse(r#"{"v1beta1": [{"from": 1}]}"#).unwrap_err().contains("without a path"));
    }
}
