//! Pure checks of the generated CRDs: `crds/` matches the code, our v1beta1 schemas accept every
//! field the reference declares (same name, type, pattern and enum), and the reference's example
//! manifests survive a round trip through our types without loss.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use kfp_operator::api::{self, Experiment, Pipeline, Provider, Run, RunConfiguration, RunSchedule};
use serde_json::Value;

mod support;

fn read_yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

#[test]
fn crds_directory_matches_the_code() {
    let dir = support::repo_root().join("crds");
    let mut expected_files = Vec::new();
    for crd in api::crd::all() {
        let file = api::crd::file_name(&crd);
        let committed = std::fs::read_to_string(dir.join(&file)).unwrap_or_default();
        let generated = api::crd::to_yaml(&crd).unwrap();
        assert!(
            committed == generated,
            "crds/{file} is out of date; regenerate with `cargo run -- crd --output-dir crds`"
        );
        expected_files.push(file);
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(present, expected_files, "crds/ holds files the code does not generate");
}

/// One schema node, flattened to what matters for compatibility.
#[derive(Debug, PartialEq)]
struct Node {
    type_: Option<String>,
    pattern: Option<String>,
    enum_: Option<Value>,
    format: Option<String>,
    preserves_unknown: bool,
}

fn flatten_schema(schema: &Value, path: String, out: &mut BTreeMap<String, (Node, Vec<String>)>) {
    let node = Node {
        type_: schema.get("type").and_then(Value::as_str).map(str::to_owned),
        pattern: schema.get("pattern").and_then(Value::as_str).map(str::to_owned),
        enum_: schema.get("enum").cloned(),
        format: schema.get("format").and_then(Value::as_str).map(str::to_owned),
        preserves_unknown: schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)),
    };
    let required = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    out.insert(path.clone(), (node, required));
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            flatten_schema(property, format!("{path}.{name}"), out);
        }
    }
    if let Some(items) = schema.get("items") {
        flatten_schema(items, format!("{path}[]"), out);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        flatten_schema(values, format!("{path}{{}}"), out);
    }
}

fn v1beta1_schema(crd: &Value) -> Value {
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1beta1")
        .map(|v| v["schema"]["openAPIV3Schema"].clone())
        .expect("a v1beta1 version")
}

/// Differences that are deliberate: (kind, path suffix, reason).
const ACCEPTED_DIFFERENCES: &[(&str, &str, &str)] = &[
    (
        "*",
        ".spec required",
        "an object without a spec names no provider; we reject it instead of failing later",
    ),
    (
        "runs",
        ".status.completionState",
        "a status field only the operator writes; we declare its two values as an enum",
    ),
    (
        "providers",
        ":root",
        "the reference preserves unknown fields at the root of Provider; we prune them like every other kind",
    ),
    (
        "providers",
        ".name required",
        "Kubernetes marks a LocalObjectReference's name required; an empty reference points nowhere",
    ),
];

fn accepted(plural: &str, what: &str) -> bool {
    ACCEPTED_DIFFERENCES
        .iter()
        .any(|(kind, suffix, _)| (*kind == "*" || *kind == plural) && what.ends_with(suffix))
}

/// Whether `ours` accepts at least what `reference` accepts and means the same.
fn compatible(ours: &Node, reference: &Node) -> bool {
    ours.type_ == reference.type_
        && (ours.pattern.is_none() || ours.pattern == reference.pattern)
        && (ours.enum_.is_none() || ours.enum_ == reference.enum_)
        && ours.format == reference.format
        && ours.preserves_unknown == reference.preserves_unknown
}

#[test]
fn our_schemas_accept_every_reference_field() {
    let reference_dir = support::repo_root().join("tests/fixtures/reference/crds");
    let mut differences = Vec::new();
    for crd in api::crd::all() {
        let plural = crd.spec.names.plural.clone();
        let ours = serde_json::to_value(&crd).unwrap();
        let reference = read_yaml_documents(&reference_dir.join(api::crd::file_name(&crd))).remove(0);
        let mut our_nodes = BTreeMap::new();
        flatten_schema(&v1beta1_schema(&ours), String::new(), &mut our_nodes);
        let mut reference_nodes = BTreeMap::new();
        flatten_schema(&v1beta1_schema(&reference), String::new(), &mut reference_nodes);

        for (path, (reference_node, reference_required)) in &reference_nodes {
            if path.starts_with(".metadata") || path.starts_with(".apiVersion") || path.starts_with(".kind") {
                continue;
            }
            let Some((our_node, our_required)) = our_nodes.get(path) else {
                differences.push(format!("{plural}: field {path:?} is missing"));
                continue;
            };
            let shown_path = if path.is_empty() { ":root" } else { path };
            if !compatible(our_node, reference_node) && !accepted(&plural, shown_path) {
                differences.push(format!(
                    "{plural}: {path:?} is {our_node:?}, the reference has {reference_node:?}"
                ));
            } else if our_node != reference_node {
                println!("{plural}: {shown_path} accepts more than the reference: {our_node:?}");
            }
            for field in our_required.iter().filter(|f| !reference_required.contains(f)) {
                let what = format!("{path}.{field} required");
                if !accepted(&plural, &what) {
                    differences.push(format!("{plural}: {what}, the reference makes it optional"));
                }
            }
        }
        for path in our_nodes.keys().filter(|p| !reference_nodes.contains_key(*p)) {
            println!("{plural}: additional field {path}");
        }
    }
    assert!(differences.is_empty(), "schema differences from the reference:\n{}", differences.join("\n"));
}

fn round_trip<K>(document: &Value) -> Value
where
    K: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: K = serde_json::from_value(document.clone())
        .unwrap_or_else(|e| panic!("{} does not deserialise: {e}", document["metadata"]["name"]));
    serde_json::to_value(&typed).unwrap()
}

#[test]
fn reference_examples_round_trip_without_loss() {
    let examples = support::repo_root().join("tests/fixtures/reference/examples");
    let mut seen = 0;
    for file in ["quickstart", "kfpsdk-quickstart"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(examples.join(dir)).unwrap().map(|entry| entry.unwrap().path()))
    {
        for document in read_yaml_documents(&file) {
            if !document["apiVersion"].as_str().is_some_and(|v| v.starts_with("pipelines.kubeflow.org/")) {
                continue;
            }
            let back = match document["kind"].as_str().unwrap() {
                "Pipeline" => round_trip::<Pipeline>(&document),
                "Run" => round_trip::<Run>(&document),
                "RunConfiguration" => round_trip::<RunConfiguration>(&document),
                "RunSchedule" => round_trip::<RunSchedule>(&document),
                "Experiment" => round_trip::<Experiment>(&document),
                "Provider" => round_trip::<Provider>(&document),
                other => panic!("unexpected kind {other} in {}", file.display()),
            };
            assert_eq!(back, document, "{} changed in a round trip", file.display());
            seen += 1;
        }
    }
    assert!(seen >= 5, "expected the reference examples, found {seen}");
}
