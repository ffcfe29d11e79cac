//! The Argo Events manifests in `events/` (an EventBus, NATS EventSources and Sensors for the
//! operator's three run-completion sinks: `jetstream`, `argo-eventbus` and `legacy-nats`).
//!
//! - Every YAML document is valid against the Argo Events JSON Schema
//!   (`tests/fixtures/argo-events/jsonschema.json`, Apache-2.0, see the LICENSE beside it; the
//!   `definitions` are keyed by Go type names). The definition is picked by the document's
//!   `apiVersion` and `kind` through its `x-kubernetes-group-version-kind`. The file names no
//!   draft (`http://json-schema.org/schema#`) and uses draft-07 vocabulary (`definitions`,
//!   `const`), so it is read as Draft 7 with format checks on; a test shows that Draft 2020-12
//!   would read it the same.
//! - One correction to the schema: `EventContext` (a Sensor's `filters.context`) lists all seven
//!   CloudEvent attributes as required, because the Go struct's JSON tags lack `omitempty`,
//!   but Argo compares only the fields that are set (`filterContext` in
//!   `pkg/sensors/dependencies/filter.go`; Argo's own `examples/sensors/filter-with-context.yaml`
//!   sets only `source`). A test pins that this is the only difference.
//! - A strict pass also closes every object definition (`additionalProperties: false`), as Go
//!   decoding is: the CRDs preserve unknown fields, so a misspelt field would be kept and
//!   silently ignored by Argo.
//! - Broken manifests (a wrong type, a missing field, an unknown field) fail, so the validation
//!   is real.
//! - Sensors depend on EventSource/event names that exist (or on the `argo-eventbus` sink's
//!   documented `kfp-operator`/`run-completion`), names contain no dots, and each dependency's
//!   filter paths and `dataKey`s have the documented prefix for its sink (`body.data.` on all
//!   three: the NATS EventSource's wrapper, or the Argo-bus sink's `{"body": <CloudEvent>}`).
//! - A simulation turns sample completions into what each sink publishes (using the operator's
//!   own CloudEvent and Argo-bus event code), routes the messages through the EventSources' subjects, wraps them as
//!   Argo does (eventing wire facts §2a, §2b.1) and evaluates each Sensor's filters and trigger
//!   parameters with Argo's semantics (gjson paths, unanchored regular expressions, context
//!   fields compared only when set, `dataKey` only for `application/json`): each Sensor fires
//!   exactly for the events it documents, once per run, with the expected parameter values.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{TimeZone, Utc};
use cloudevents::AttributesReader;
use kfp_operator::api::{Artifact, NamespacedName};
use kfp_operator::events::{
    self, CloudEventOptions, EventKind, RunCompletionEvent, RunCompletionStatus, sinks,
};
use regex::Regex;
use serde_json::{Map, Value, json};

/// The `argo-eventbus` sink's documented `eventSourceName` and `eventName`.
const ARGO_BUS_EVENT_SOURCE: &str = "kfp-operator";
const ARGO_BUS_EVENT_NAME: &str = "run-completion";
/// The `jetstream` sink's default subject prefix and the `legacy-nats` sink's default subject.
const JETSTREAM_SUBJECT_PREFIX: &str = "kfp";
const LEGACY_SUBJECT: &str = "events";
/// The documented status path of each run-completion Sensor.
const DOCUMENTED_STATUS_PATHS: [(&str, &str); 3] = [
    ("run-completion-jetstream", "body.data.status"),
    ("run-completion-argo-bus", "body.data.status"),
    ("run-completion-legacy", "body.data.status"),
];
/// The files `events/` must hold.
const EXPECTED_FILES: [&str; 7] = [
    "eventbus.yaml",
    "eventsource-jetstream.yaml",
    "eventsource-legacy.yaml",
    "sensor-model-ready-serving.yaml",
    "sensor-run-completion-argo-bus.yaml",
    "sensor-run-completion-jetstream.yaml",
    "sensor-run-completion-legacy.yaml",
];

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// The manifests

#[derive(Debug, Clone)]
struct Manifest {
    file: String,
    document: usize,
    value: Value,
}

impl Manifest {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }

    fn label(&self) -> String {
        format!("events/{} document {} ({} {})", self.file, self.document, self.kind(), self.name())
    }
}

fn yaml_files() -> Vec<PathBuf> {
    let dir = repo_root().join("events");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"))
        .collect();
    files.sort();
    files
}

fn manifests() -> &'static [Manifest] {
    static MANIFESTS: OnceLock<Vec<Manifest>> = OnceLock::new();
    MANIFESTS.get_or_init(|| {
        let mut all = Vec::new();
        for path in yaml_files() {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let documents: Vec<Value> = serde_saphyr::from_multiple(&text)
                .unwrap_or_else(|e| panic!("events/{file} is not valid YAML: {e}"));
            assert!(!documents.is_empty(), "events/{file} holds no document");
            for (document, value) in documents.into_iter().enumerate() {
                assert!(value.is_object(), "events/{file} document {document} is not a mapping: {value}");
                all.push(Manifest { file: file.clone(), document, value });
            }
        }
        all
    })
}

fn of_kind(kind: &str) -> Vec<&'static Manifest> {
    manifests().iter().filter(|m| m.kind() == kind).collect()
}

fn manifest(file: &str, kind: &str) -> &'static Manifest {
    manifests()
        .iter()
        .find(|m| m.file == file && m.kind() == kind)
        .unwrap_or_else(|| panic!("no {kind} in events/{file}"))
}

// ---------------------------------------------------------------------------------------------
// The Argo Events JSON Schema

fn argo_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let path = repo_root().join("tests/fixtures/argo-events/jsonschema.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    })
}

fn definitions() -> &'static Map<String, Value> {
    argo_schema()["definitions"].as_object().expect("the schema has definitions")
}

const EVENT_CONTEXT: &str = "io.argoproj.events.v1alpha1.EventContext";

/// The definition describing `apiVersion`/`kind`, found by its `x-kubernetes-group-version-kind`.
fn definition_for(api_version: &str, kind: &str) -> Option<&'static str> {
    let (group, version) = api_version.split_once('/')?;
    definitions()
        .iter()
        .find(|(_, definition)| {
            definition["x-kubernetes-group-version-kind"].as_array().is_some_and(|gvks| {
                gvks.iter()
                    .any(|gvk| gvk["group"] == group && gvk["version"] == version && gvk["kind"] == kind)
            })
        })
        .map(|(name, _)| name.as_str())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// The definitions as published.
    Published,
    /// With the `EventContext` correction (see the module documentation).
    Corrected,
    /// Corrected, and every object definition closed to unknown fields.
    Strict,
}

fn definitions_for(variant: Variant) -> Map<String, Value> {
    let mut definitions = definitions().clone();
    if variant == Variant::Published {
        return definitions;
    }
    definitions
        .get_mut(EVENT_CONTEXT)
        .and_then(Value::as_object_mut)
        .expect("EventContext is defined")
        .remove("required");
    if variant == Variant::Strict {
        for definition in definitions.values_mut().filter_map(Value::as_object_mut) {
            if definition.contains_key("properties")
                && !definition.contains_key("additionalProperties")
                && !definition.contains_key("patternProperties")
            {
                definition.insert("additionalProperties".into(), Value::Bool(false));
            }
        }
    }
    definitions
}

fn validator(definition: &str, variant: Variant, draft: jsonschema::Draft) -> jsonschema::Validator {
    let root = json!({
        "$ref": format!("#/definitions/{definition}"),
        "definitions": definitions_for(variant),
    });
    jsonschema::options()
        .with_draft(draft)
        .offline()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("the schema of {definition} does not compile: {e}"))
}

/// The validation errors of `instance` as `(instance path, keyword, message)`.
fn errors_with(
    instance: &Value,
    variant: Variant,
    draft: jsonschema::Draft,
) -> Vec<(String, String, String)> {
    let api_version = instance["apiVersion"].as_str().unwrap_or_default();
    let kind = instance["kind"].as_str().unwrap_or_default();
    let definition = definition_for(api_version, kind)
        .unwrap_or_else(|| panic!("the Argo Events schema has no definition for {api_version} {kind}"));
    let validator = validator(definition, variant, draft);
    validator
        .iter_errors(instance)
        .map(|e| (e.instance_path().to_string(), e.kind().keyword().to_owned(), e.to_string()))
        .collect()
}

fn errors(instance: &Value, variant: Variant) -> Vec<(String, String, String)> {
    errors_with(instance, variant, jsonschema::Draft::Draft7)
}

#[test]
fn events_directory_holds_the_documented_files() {
    let present: Vec<String> =
        yaml_files().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(present, EXPECTED_FILES.map(str::to_owned).to_vec());
    let readme = std::fs::read_to_string(repo_root().join("events/README.md")).unwrap();
    for file in EXPECTED_FILES {
        assert!(
            readme.contains(&format!("events/{file}")),
            "events/README.md has no `kubectl apply` for {file}"
        );
    }
    for kind in ["EventBus", "EventSource", "Sensor"] {
        assert!(!of_kind(kind).is_empty(), "no {kind} in events/");
    }
}

#[test]
fn every_file_starts_with_a_comment_naming_its_sink() {
    for path in yaml_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let header: Vec<&str> = text.lines().take_while(|line| line.starts_with('#')).collect();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(header.len() >= 5, "events/{name} must start with a comment block saying what it is for");
        let header = header.join("\n");
        assert!(
            header.contains("Pairs with:"),
            "events/{name}: the header must say which sink it pairs with"
        );
        assert!(
            ["`jetstream`", "`argo-eventbus`", "`legacy-nats`"].iter().any(|sink| header.contains(sink)),
            "events/{name}: the header names no sink"
        );
        assert!(header.contains("Adapting it:"), "events/{name}: the header must say how to adapt it");
    }
}

#[test]
fn every_manifest_is_valid_against_the_argo_events_schema() {
    for manifest in manifests() {
        assert_eq!(manifest.value["apiVersion"], "argoproj.io/v1alpha1", "{}", manifest.label());
        assert!(
            ["EventBus", "EventSource", "Sensor"].contains(&manifest.kind()),
            "{}: not an Argo Events kind",
            manifest.label()
        );
        assert!(!manifest.name().is_empty(), "{} has no name", manifest.label());
        for variant in [Variant::Corrected, Variant::Strict] {
            let errors = errors(&manifest.value, variant);
            assert!(errors.is_empty(), "{} is invalid ({variant:?}): {errors:#?}", manifest.label());
        }
    }
}

#[test]
fn the_published_schema_differs_only_in_event_context_required() {
    let published = &definitions()[EVENT_CONTEXT];
    assert!(
        published["required"].as_array().is_some_and(|r| r.len() == 7),
        "EventContext no longer requires every attribute; drop the correction in this test"
    );
    let mut context_filters = 0;
    for manifest in manifests() {
        for (path, keyword, message) in errors(&manifest.value, Variant::Published) {
            assert!(
                keyword == "required" && path.ends_with("/filters/context"),
                "{}: unexpected error against the published schema at {path}: {message}",
                manifest.label()
            );
            context_filters += 1;
        }
    }
    assert!(context_filters > 0, "no manifest uses a context filter; the correction is unused");
}

#[test]
fn the_schema_reads_the_same_in_draft_7_and_2020_12() {
    let schema = argo_schema();
    assert_eq!(schema["$schema"], "http://json-schema.org/schema#", "the fixture now names a draft");
    let mut refs = 0;
    let mut stack: Vec<&Value> = definitions().values().collect();
    while let Some(node) = stack.pop() {
        match node {
            Value::Object(object) => {
                if object.get("$ref").is_some_and(Value::is_string) {
                    refs += 1;
                    // Draft 7 ignores `$ref` siblings, 2020-12 applies them: only annotations may sit there.
                    for key in object.keys() {
                        assert!(
                            key == "$ref" || key == "description" || key.starts_with("x-kubernetes-"),
                            "a $ref has the sibling {key:?}, which the drafts treat differently"
                        );
                    }
                }
                for key in
                    ["$defs", "unevaluatedProperties", "unevaluatedItems", "prefixItems", "$dynamicRef"]
                {
                    assert!(!object.contains_key(key), "keyword {key} is not draft 7");
                }
                stack.extend(object.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    assert!(refs > 1000);
    for manifest in manifests() {
        assert!(
            errors_with(&manifest.value, Variant::Corrected, jsonschema::Draft::Draft202012).is_empty(),
            "{} is invalid read as Draft 2020-12",
            manifest.label()
        );
    }
}

#[test]
fn broken_manifests_fail_validation() {
    let has_error_at = |instance: &Value, variant: Variant, path: &str, keyword: &str| {
        let errors = errors(instance, variant);
        assert!(
            errors.iter().any(|(p, k, _)| p == path && k == keyword),
            "expected a {keyword} error at {path}, got {errors:#?}"
        );
    };

    let event_source = &manifest("eventsource-jetstream.yaml", "EventSource").value;
    let mut broken = event_source.clone();
    broken["spec"]["nats"]["run-completion"]["jsonBody"] = json!("yes");
    has_error_at(&broken, Variant::Corrected, "/spec/nats/run-completion/jsonBody", "type");
    let mut broken = event_source.clone();
    broken["spec"]["nats"]["model-ready"]["connectionBackoff"]["factor"] = json!("2");
    has_error_at(&broken, Variant::Corrected, "/spec/nats/model-ready/connectionBackoff/factor", "type");
    let mut broken = event_source.clone();
    broken["spec"]["nats"]["run-completion"].as_object_mut().unwrap().remove("subject");
    has_error_at(&broken, Variant::Corrected, "/spec/nats/run-completion", "required");

    let sensor = &manifest("sensor-run-completion-argo-bus.yaml", "Sensor").value;
    let mut broken = sensor.clone();
    broken["spec"]["dependencies"][0]["filters"]["data"][0]["value"] = json!("^succeeded$");
    has_error_at(&broken, Variant::Corrected, "/spec/dependencies/0/filters/data/0/value", "type");
    let mut broken = sensor.clone();
    broken["spec"]["dependencies"][0].as_object_mut().unwrap().remove("eventName");
    has_error_at(&broken, Variant::Corrected, "/spec/dependencies/0", "required");
    let mut broken = sensor.clone();
    broken["spec"]["triggers"][0]["atLeastOnce"] = json!("true");
    has_error_at(&broken, Variant::Corrected, "/spec/triggers/0/atLeastOnce", "type");
    let mut broken = sensor.clone();
    broken["kind"] = json!("EventSource");
    // EventSourceSpec has no required fields and is open, so only the strict pass notices.
    has_error_at(&broken, Variant::Strict, "/spec", "additionalProperties");

    let serving = &manifest("sensor-model-ready-serving.yaml", "Sensor").value;
    let mut broken = serving.clone();
    broken["spec"]["triggers"][0]["template"]["k8s"]["parameters"][0]["src"]["dataKey"] = json!(5);
    has_error_at(
        &broken,
        Variant::Corrected,
        "/spec/triggers/0/template/k8s/parameters/0/src/dataKey",
        "type",
    );
    let mut broken = serving.clone();
    broken["spec"]["triggers"][0]["retryStrategy"]["duration"] = json!(2.5);
    has_error_at(&broken, Variant::Corrected, "/spec/triggers/0/retryStrategy/duration", "type");

    let bus = &manifest("eventbus.yaml", "EventBus").value;
    let mut broken = bus.clone();
    broken["spec"]["jetstream"]["replicas"] = json!("three");
    has_error_at(&broken, Variant::Corrected, "/spec/jetstream/replicas", "type");

    assert_eq!(definition_for("argoproj.io/v1beta1", "Sensor"), None);
    assert_eq!(definition_for("argoproj.io/v1alpha1", "Sensors"), None);
}

#[test]
fn strict_validation_rejects_unknown_fields() {
    let event_source = &manifest("eventsource-jetstream.yaml", "EventSource").value;
    let mut misspelt = event_source.clone();
    let event = misspelt["spec"]["nats"]["run-completion"].as_object_mut().unwrap();
    let json_body = event.remove("jsonBody").unwrap();
    event.insert("jsonbody".into(), json_body);
    // The published schema leaves objects open, as the CRDs do: the typo would go unnoticed.
    assert!(errors(&misspelt, Variant::Corrected).is_empty());
    let strict = errors(&misspelt, Variant::Strict);
    assert!(
        strict.iter().any(|(p, k, m)| p == "/spec/nats/run-completion"
            && k == "additionalProperties"
            && m.contains("jsonbody")),
        "{strict:#?}"
    );

    let sensor = &manifest("sensor-model-ready-serving.yaml", "Sensor").value;
    let mut misplaced = sensor.clone();
    // `atLeastOnce` belongs to the trigger, not its template (wire facts §2c.4).
    misplaced["spec"]["triggers"][0]["template"]["atLeastOnce"] = json!(true);
    let strict = errors(&misplaced, Variant::Strict);
    assert!(
        strict.iter().any(|(p, k, _)| p == "/spec/triggers/0/template" && k == "additionalProperties"),
        "{strict:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Names

/// One event of a NATS EventSource: `spec.nats.<event>`.
#[derive(Debug, Clone)]
struct NatsEvent {
    event_source: String,
    event_name: String,
    subject: String,
    json_body: bool,
}

fn nats_events() -> Vec<NatsEvent> {
    let mut all = Vec::new();
    for manifest in of_kind("EventSource") {
        let spec = manifest.value["spec"].as_object().unwrap();
        for (key, value) in spec {
            assert_eq!(key, "nats", "{}: only NATS EventSources are simulated", manifest.label());
            for (event_name, event) in value.as_object().unwrap() {
                all.push(NatsEvent {
                    event_source: manifest.name().to_owned(),
                    event_name: event_name.clone(),
                    subject: event["subject"].as_str().unwrap().to_owned(),
                    json_body: event["jsonBody"].as_bool().unwrap_or(false),
                });
            }
        }
    }
    all
}

/// `(eventSourceName, eventName)` pairs a Sensor may depend on.
fn known_event_names() -> BTreeSet<(String, String)> {
    let mut known: BTreeSet<(String, String)> =
        nats_events().into_iter().map(|e| (e.event_source, e.event_name)).collect();
    known.insert((ARGO_BUS_EVENT_SOURCE.to_owned(), ARGO_BUS_EVENT_NAME.to_owned()));
    known
}

fn dependencies(sensor: &Manifest) -> &Vec<Value> {
    sensor.value["spec"]["dependencies"].as_array().unwrap()
}

fn triggers(sensor: &Manifest) -> &Vec<Value> {
    sensor.value["spec"]["triggers"].as_array().unwrap()
}

/// The resource-level parameters of a trigger (`k8s`, `argoWorkflow`) and its resource.
fn trigger_parts(trigger: &Value) -> (&'static str, Option<&Value>, Vec<&Value>) {
    let template = &trigger["template"];
    for kind in ["k8s", "argoWorkflow"] {
        if template.get(kind).is_some() {
            let resource = template[kind]["source"].get("resource");
            let parameters =
                template[kind]["parameters"].as_array().map(|p| p.iter().collect()).unwrap_or_default();
            return (kind, resource, parameters);
        }
    }
    assert!(template.get("log").is_some(), "trigger kind not covered by this test: {template}");
    ("log", None, Vec::new())
}

#[test]
fn sensors_depend_on_existing_event_names_without_dots() {
    let known = known_event_names();
    for (source, event) in &known {
        assert!(!source.contains('.') && !event.contains('.'), "{source}/{event}: no dots on the Argo bus");
    }
    let event_sources: Vec<&str> = of_kind("EventSource").iter().map(|m| m.name()).collect();
    assert!(
        !event_sources.contains(&ARGO_BUS_EVENT_SOURCE),
        "an EventSource named {ARGO_BUS_EVENT_SOURCE} would mix its events with the argo-eventbus sink's"
    );
    for sensor in of_kind("Sensor") {
        let mut names = BTreeSet::new();
        for dependency in dependencies(sensor) {
            let pair = (
                dependency["eventSourceName"].as_str().unwrap().to_owned(),
                dependency["eventName"].as_str().unwrap().to_owned(),
            );
            assert!(
                known.contains(&pair),
                "{}: {pair:?} is no EventSource event; known: {known:?}",
                sensor.label()
            );
            assert!(
                names.insert(dependency["name"].as_str().unwrap().to_owned()),
                "duplicate dependency name"
            );
        }
        for trigger in triggers(sensor) {
            assert!(trigger.get("parameters").is_none(), "trigger-level parameters are not simulated");
            for parameter in trigger_parts(trigger).2 {
                let dependency = parameter["src"]["dependencyName"].as_str().unwrap();
                assert!(
                    names.contains(dependency),
                    "{}: parameter names dependency {dependency:?}",
                    sensor.label()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Simulated events

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Sink {
    JetStream,
    ArgoEventBus,
    LegacyNats,
}

impl Sink {
    /// Where the RunCompletionEvent sits in the `data` a Sensor sees: under `body` (the NATS
    /// EventSource's wrapper, or the Argo-bus sink's) and then `data` (of the operator's
    /// CloudEvent, or of the legacy `{"data": …}` body).
    fn documented_prefix(self) -> &'static str {
        match self {
            Self::JetStream | Self::ArgoEventBus | Self::LegacyNats => "body.data.",
        }
    }
}

/// An event as a Sensor sees it.
#[derive(Debug, Clone)]
struct ArgoEvent {
    sink: Sink,
    /// Index into [`sample_completions`].
    completion: usize,
    /// The operator's CloudEvent kind; `None` for the legacy body, which has none.
    kind: Option<EventKind>,
    event_source: String,
    event_name: String,
    /// Argo's event context (the attributes filters and parameters can use).
    context: Value,
    data: Value,
}

/// Sink, completion index and CloudEvent kind (`run-completion`, `model-ready`; `None` for the
/// legacy body).
type Origin = (Sink, usize, Option<&'static str>);

impl ArgoEvent {
    fn origin(&self) -> Origin {
        (self.sink, self.completion, self.kind.map(EventKind::subject_token))
    }
}

fn completion(pipeline: &str, status: RunCompletionStatus, artifacts: Vec<Artifact>) -> RunCompletionEvent {
    RunCompletionEvent {
        status,
        pipeline_name: NamespacedName::new("ml-training", pipeline),
        run_configuration_name: Some(NamespacedName::new("ml-training", format!("{pipeline}-rc"))),
        run_name: None,
        run_id: format!("{pipeline}-{status}-{}", artifacts.len()),
        run_start_time: Some(Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap()),
        run_end_time: Some(Utc.with_ymd_and_hms(2024, 5, 1, 10, 21, 7).unwrap()),
        artifacts,
        provider: NamespacedName::new("provider-namespace", "kfp"),
    }
}

fn sample_completions() -> Vec<RunCompletionEvent> {
    use RunCompletionStatus::{Failed, Succeeded};
    let model = || {
        vec![
            Artifact::new("serving-model", "gs://bucket/penguin/serving-model/1"),
            Artifact::new("examples", "gs://bucket/penguin/examples/1"),
        ]
    };
    let mut one_off = completion("penguin-pipeline", Succeeded, vec![]);
    one_off.run_configuration_name = None;
    one_off.run_name = Some(NamespacedName::new("ml-training", "one-off"));
    one_off.run_id = "one-off".into();
    vec![
        completion("penguin-pipeline", Succeeded, model()),
        completion("penguin-pipeline", Failed, model()),
        completion("penguin-pipeline", Failed, vec![]),
        one_off,
        // An unanchored `succeeded` or `penguin-pipeline` would match these.
        completion("other-penguin-pipeline", Succeeded, vec![Artifact::new("m", "gs://bucket/other/1")]),
        completion("penguin-pipeline-v2", Succeeded, vec![Artifact::new("m", "gs://bucket/v2/1")]),
    ]
}

/// NATS subject matching: `*` is one token, a final `>` one or more.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut pattern = pattern.split('.');
    let mut subject = subject.split('.');
    loop {
        match (pattern.next(), subject.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A message published on the operator's NATS server, as a NATS EventSource receives it.
struct NatsMessage {
    sink: Sink,
    completion: usize,
    kind: Option<EventKind>,
    subject: String,
    body: Value,
    header: Map<String, Value>,
}

/// What the three sinks publish for the sample completions, as Sensors see it.
fn simulated_events() -> Vec<ArgoEvent> {
    let options = CloudEventOptions::default();
    let now = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let mut messages = Vec::new();
    let mut events = Vec::new();
    for (index, completion) in sample_completions().iter().enumerate() {
        for cloud_event in events::cloud_events_for(completion, &options, now) {
            let kind = EventKind::from_cloud_event_type(cloud_event.ty()).unwrap();
            let structured = events::to_structured_json(&cloud_event);
            // jetstream: the structured CloudEvent on the operator's stream subject.
            let mut header = Map::new();
            header.insert("Content-Type".into(), json!([sinks::STRUCTURED_CONTENT_TYPE]));
            header.insert("Nats-Msg-Id".into(), json!([cloud_event.id()]));
            messages.push(NatsMessage {
                sink: Sink::JetStream,
                completion: index,
                kind: Some(kind),
                subject: events::nats_subject_for(JETSTREAM_SUBJECT_PREFIX, &cloud_event, completion)
                    .unwrap(),
                body: structured.clone(),
                header,
            });
            // argo-eventbus: the sink's own bus event, as a Sensor reads it (wire facts §2a.6): routed
            // by `source`/`subject`, the core attributes as context, filters and parameters on `data`.
            let bus_subject = sinks::argo_bus_subject("default", ARGO_BUS_EVENT_SOURCE, ARGO_BUS_EVENT_NAME);
            assert!(subject_matches("default.*.*", &bus_subject), "{bus_subject} is outside Argo's stream");
            let bus_event =
                sinks::argo_bus_event(&cloud_event, ARGO_BUS_EVENT_SOURCE, ARGO_BUS_EVENT_NAME).unwrap();
            let bus_json = events::to_structured_json(&bus_event);
            assert_eq!(bus_json["id"], structured["id"], "the bus event keeps the id (Argo dedups on it)");
            events.push(ArgoEvent {
                sink: Sink::ArgoEventBus,
                completion: index,
                kind: Some(kind),
                event_source: bus_json["source"].as_str().unwrap().to_owned(),
                event_name: bus_json["subject"].as_str().unwrap().to_owned(),
                context: json!({
                    "type": bus_json["type"],
                    "source": bus_json["source"],
                    "subject": bus_json["subject"],
                    "datacontenttype": bus_json["datacontenttype"],
                }),
                data: bus_json["data"].clone(),
            });
        }
        // legacy-nats: `{"data": …}` on core NATS `events`, once per completion.
        messages.push(NatsMessage {
            sink: Sink::LegacyNats,
            completion: index,
            kind: None,
            subject: LEGACY_SUBJECT.to_owned(),
            body: events::legacy_body(completion),
            header: Map::new(),
        });
    }
    // Route the NATS messages through the EventSources' subscriptions (core NATS: every matching
    // subscription gets the message) and wrap them as Argo's NATS EventSource does.
    let subscriptions = nats_events();
    for message in messages {
        for subscription in subscriptions.iter().filter(|s| subject_matches(&s.subject, &message.subject)) {
            assert!(
                subscription.json_body,
                "{}: without jsonBody the body is base64",
                subscription.event_name
            );
            let mut data = Map::new();
            data.insert("subject".into(), json!(message.subject));
            data.insert("body".into(), message.body.clone());
            if !message.header.is_empty() {
                data.insert("header".into(), Value::Object(message.header.clone()));
            }
            events.push(ArgoEvent {
                sink: message.sink,
                completion: message.completion,
                kind: message.kind,
                event_source: subscription.event_source.clone(),
                event_name: subscription.event_name.clone(),
                context: json!({
                    "type": "nats",
                    "source": subscription.event_source,
                    "subject": subscription.event_name,
                    "datacontenttype": "application/json",
                }),
                data: Value::Object(data),
            });
        }
    }
    events
}

// ---------------------------------------------------------------------------------------------
// Argo's filter and parameter semantics (the subset the manifests use)

/// A gjson path without modifiers, wildcards or queries: dot-separated keys, array indices.
fn path_get<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    assert!(
        !path.contains(['*', '?', '#', '@', '|', '\\', '!', '=']),
        "gjson path {path:?} uses syntax this test does not evaluate"
    );
    path.split('.').try_fold(value, |node, segment| match node {
        Value::Object(object) => object.get(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// gjson's `String()` of a value.
fn gjson_string(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn data_filter_passes(filter: &Value, data: &Value) -> bool {
    let path = filter["path"].as_str().unwrap();
    let Some(found) = path_get(data, path) else {
        return false; // Argo: "path does not exist" is an error, i.e. not passed.
    };
    let comparator = filter["comparator"].as_str().unwrap_or("");
    assert!(filter.get("template").is_none(), "data filter templates are not simulated");
    let values: Vec<&str> = filter["value"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(!values.is_empty(), "a data filter without values is an error in Argo");
    values.iter().any(|value| match filter["type"].as_str().unwrap() {
        "string" => {
            let matched = Regex::new(value).unwrap().is_match(&gjson_string(found));
            match comparator {
                "" | "=" => matched,
                "!=" => !matched,
                other => panic!("comparator {other:?} does not apply to strings"),
            }
        }
        "number" => {
            let (event, wanted) = (found.as_f64().unwrap_or_default(), value.parse::<f64>().unwrap());
            match comparator {
                "" | "=" => event == wanted,
                "!=" => event != wanted,
                ">" => event > wanted,
                ">=" => event >= wanted,
                "<" => event < wanted,
                "<=" => event <= wanted,
                other => panic!("unknown comparator {other:?}"),
            }
        }
        "bool" => found.as_bool() == Some(value.parse::<bool>().unwrap()),
        other => panic!("unsupported data filter type {other:?}"),
    })
}

fn context_filter_passes(filter: &Value, context: &Value) -> bool {
    let filter = filter.as_object().unwrap();
    for key in filter.keys() {
        assert!(
            ["type", "subject", "source", "datacontenttype"].contains(&key.as_str()),
            "Argo does not compare context field {key}"
        );
    }
    filter
        .iter()
        .all(|(key, wanted)| wanted.as_str().unwrap_or_default().is_empty() || context[key] == *wanted)
}

fn dependency_accepts(dependency: &Value, event: &ArgoEvent) -> bool {
    if dependency["eventSourceName"] != event.event_source.as_str()
        || dependency["eventName"] != event.event_name.as_str()
    {
        return false;
    }
    let Some(filters) = dependency.get("filters") else {
        return true;
    };
    assert!(
        dependency.get("filtersLogicalOperator").is_none_or(|op| op == "and"),
        "only `and` between filter kinds is simulated"
    );
    for key in filters.as_object().unwrap().keys() {
        assert!(
            ["data", "context", "dataLogicalOperator"].contains(&key.as_str()),
            "filter {key} is not simulated"
        );
    }
    let data_ok = match filters.get("data").and_then(Value::as_array) {
        None => true,
        Some(list) => match filters["dataLogicalOperator"].as_str().unwrap_or("and") {
            "and" => list.iter().all(|f| data_filter_passes(f, &event.data)),
            "or" => list.iter().any(|f| data_filter_passes(f, &event.data)),
            other => panic!("unknown dataLogicalOperator {other:?}"),
        },
    };
    let context_ok = filters.get("context").is_none_or(|c| context_filter_passes(c, &event.context));
    data_ok && context_ok
}

/// A parameter's value as Argo resolves it (`ResolveParamValue`): `dataKey` needs the event's
/// `datacontenttype` to be exactly `application/json`; otherwise, or when the key is missing,
/// the default `value` is used; with neither, the trigger fails (`None`).
fn resolve_parameter(source: &Value, event: &ArgoEvent) -> Option<String> {
    let default = source["value"].as_str().map(str::to_owned);
    assert!(
        ["contextKey", "contextTemplate", "dataTemplate", "useRawData"]
            .iter()
            .all(|k| source.get(k).is_none()),
        "parameter source not simulated: {source}"
    );
    let Some(key) = source["dataKey"].as_str() else {
        return default;
    };
    if event.context["datacontenttype"] != "application/json" {
        return default;
    }
    path_get(&event.data, key).map(gjson_string).or(default)
}

/// Sets an existing (sjson) path in `resource`.
fn set_existing_path(resource: &mut Value, path: &str, value: Value) {
    let mut node = resource;
    for segment in path.split('.') {
        node = match node {
            Value::Object(object) => object.get_mut(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        }
        .unwrap_or_else(|| panic!("parameter dest {path:?} does not exist in the trigger resource"));
    }
    *node = value;
}

/// What the Sensor's triggers would do for `event`: each trigger's kind and its resource after
/// the parameters are applied.
fn fire(sensor: &Manifest, dependency_name: &str, event: &ArgoEvent) -> Vec<(&'static str, Option<Value>)> {
    triggers(sensor)
        .iter()
        .map(|trigger| {
            let (kind, resource, parameters) = trigger_parts(trigger);
            let mut resource = resource.cloned();
            for parameter in parameters {
                assert_eq!(parameter["src"]["dependencyName"], dependency_name);
                assert!(parameter.get("operation").is_none_or(|op| op == "overwrite"));
                let value = resolve_parameter(&parameter["src"], event)
                    .unwrap_or_else(|| panic!("{}: parameter {parameter} does not resolve", sensor.label()));
                let dest = parameter["dest"].as_str().unwrap();
                set_existing_path(resource.as_mut().expect("parameters need a resource"), dest, json!(value));
            }
            (kind, resource)
        })
        .collect()
}

fn run_completion_fields() -> BTreeSet<String> {
    let path = repo_root().join("schemas/run-completion-event.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    schema["properties"].as_object().unwrap().keys().cloned().collect()
}

#[test]
fn filter_paths_and_data_keys_are_the_documented_ones_for_each_sink() {
    let events = simulated_events();
    let fields = run_completion_fields();
    for sensor in of_kind("Sensor") {
        for dependency in dependencies(sensor) {
            let sinks: BTreeSet<Sink> = events
                .iter()
                .filter(|e| {
                    dependency["eventSourceName"] == e.event_source.as_str()
                        && dependency["eventName"] == e.event_name.as_str()
                })
                .map(|e| e.sink)
                .collect();
            assert_eq!(sinks.len(), 1, "{}: the dependency receives events of {sinks:?}", sensor.label());
            let sink = *sinks.first().unwrap();
            let prefix = sink.documented_prefix();
            let mut paths: Vec<String> = dependency["filters"]["data"]
                .as_array()
                .map(|list| list.iter().map(|f| f["path"].as_str().unwrap().to_owned()).collect())
                .unwrap_or_default();
            for trigger in triggers(sensor) {
                for parameter in trigger_parts(trigger).2 {
                    if let Some(key) = parameter["src"]["dataKey"].as_str() {
                        paths.push(key.to_owned());
                    }
                }
            }
            for path in paths {
                let rest = path.strip_prefix(prefix).unwrap_or_else(|| {
                    panic!("{}: path {path:?} must start with {prefix:?} for {sink:?}", sensor.label())
                });
                let field = rest.split('.').next().unwrap();
                assert!(
                    fields.contains(field),
                    "{}: path {path:?} names no RunCompletionEvent field for {sink:?}",
                    sensor.label()
                );
            }
        }
    }
    for (name, status_path) in DOCUMENTED_STATUS_PATHS {
        let sensor = of_kind("Sensor").into_iter().find(|s| s.name() == name).unwrap();
        let filters = dependencies(sensor)[0]["filters"]["data"].as_array().unwrap();
        assert!(
            filters.iter().any(|f| f["path"] == status_path && f["value"] == json!(["^succeeded$"])),
            "{name} must filter {status_path} on ^succeeded$"
        );
    }
}

#[test]
fn sensors_fire_exactly_for_the_documented_events() {
    let completions = sample_completions();
    let events = simulated_events();
    let succeeded = |i: &usize| completions[*i].status == RunCompletionStatus::Succeeded;
    let all = || 0..completions.len();
    // What each Sensor must react to, and the check of what its triggers produce.
    type Check = fn(&RunCompletionEvent, &[(&'static str, Option<Value>)]);
    let expectations: Vec<(&str, BTreeSet<Origin>, Check)> = vec![
        (
            "run-completion-jetstream",
            all().filter(succeeded).map(|i| (Sink::JetStream, i, Some("run-completion"))).collect(),
            |_, fired| assert_eq!(fired, [("log", None)]),
        ),
        (
            "run-completion-legacy",
            all().filter(succeeded).map(|i| (Sink::LegacyNats, i, None)).collect(),
            |_, fired| assert_eq!(fired, [("log", None)]),
        ),
        (
            "run-completion-argo-bus",
            all().filter(succeeded).map(|i| (Sink::ArgoEventBus, i, Some("run-completion"))).collect(),
            |completion, fired| {
                let [("argoWorkflow", Some(workflow))] = fired else { panic!("{fired:?}") };
                let first_artifact =
                    completion.artifacts.first().map_or("none".to_owned(), |a| a.location.clone());
                assert_eq!(
                    workflow["spec"]["arguments"]["parameters"],
                    json!([
                        {"name": "pipeline", "value": completion.pipeline_name.to_string()},
                        {"name": "run-id", "value": completion.run_id},
                        {"name": "first-artifact", "value": first_artifact},
                    ])
                );
            },
        ),
        (
            "model-ready-serving",
            all()
                .filter(|i| {
                    succeeded(i)
                        && !completions[*i].artifacts.is_empty()
                        && completions[*i].pipeline_name
                            == NamespacedName::new("ml-training", "penguin-pipeline")
                })
                .map(|i| (Sink::JetStream, i, Some("model-ready")))
                .collect(),
            |completion, fired| {
                let [("k8s", Some(config_map))] = fired else { panic!("{fired:?}") };
                assert_eq!(config_map["kind"], "ConfigMap");
                assert_eq!(config_map["metadata"]["name"], "serving-config");
                assert_eq!(
                    config_map["data"],
                    json!({"servingModel": completion.artifacts[0].location, "runId": completion.run_id})
                );
            },
        ),
    ];

    let sensors = of_kind("Sensor");
    let names: BTreeSet<&str> = sensors.iter().map(|s| s.name()).collect();
    let expected_names: BTreeSet<&str> = expectations.iter().map(|(name, _, _)| *name).collect();
    assert_eq!(names, expected_names, "every Sensor needs an expectation here");

    for (name, expected, check) in &expectations {
        assert!(!expected.is_empty(), "{name}: the samples exercise nothing");
        let sensor = sensors.iter().find(|s| s.name() == *name).unwrap();
        let mut fired = Vec::new();
        for event in &events {
            for dependency in dependencies(sensor) {
                if dependency_accepts(dependency, event) {
                    fired.push(event.origin());
                    let produced = fire(sensor, dependency["name"].as_str().unwrap(), event);
                    check(&completions[event.completion], &produced);
                }
            }
        }
        let fired_set: BTreeSet<Origin> = fired.iter().copied().collect();
        assert_eq!(fired.len(), fired_set.len(), "{name} fires more than once for one event");
        assert_eq!(&fired_set, expected, "{name} fires for the wrong events");
    }
}

#[test]
fn every_sink_reaches_the_event_sources_it_is_documented_with() {
    let events = simulated_events();
    let routes: BTreeSet<(Sink, Option<&str>, String, String)> = events
        .iter()
        .map(|e| (e.sink, e.kind.map(EventKind::subject_token), e.event_source.clone(), e.event_name.clone()))
        .collect();
    let route = |sink, kind, source: &str, name: &str| (sink, kind, source.to_owned(), name.to_owned());
    let expected: BTreeSet<_> = [
        route(Sink::JetStream, Some("run-completion"), "kfp-operator-jetstream", "run-completion"),
        route(Sink::JetStream, Some("model-ready"), "kfp-operator-jetstream", "model-ready"),
        route(Sink::LegacyNats, None, "run-completion", "run-completion"),
        route(Sink::ArgoEventBus, Some("run-completion"), ARGO_BUS_EVENT_SOURCE, ARGO_BUS_EVENT_NAME),
        route(Sink::ArgoEventBus, Some("model-ready"), ARGO_BUS_EVENT_SOURCE, ARGO_BUS_EVENT_NAME),
    ]
    .into_iter()
    .collect();
    assert_eq!(routes, expected);
    // Every published message reaches exactly one EventSource event (none is lost or doubled).
    let completions = sample_completions();
    let jetstream_messages: usize =
        completions.iter().map(|c| EventKind::ALL.iter().filter(|k| k.applies_to(c)).count()).sum();
    assert_eq!(events.iter().filter(|e| e.sink == Sink::JetStream).count(), jetstream_messages);
    assert_eq!(events.iter().filter(|e| e.sink == Sink::LegacyNats).count(), completions.len());
}

#[test]
fn subject_matching_follows_nats() {
    assert!(subject_matches("kfp.run-completion.>", "kfp.run-completion.ns.p.succeeded"));
    assert!(!subject_matches("kfp.run-completion.>", "kfp.run-completion"));
    assert!(!subject_matches("kfp.run-completion.>", "kfp.model-ready.ns.p"));
    assert!(subject_matches("default.*.*", "default.kfp-operator.run-completion"));
    assert!(!subject_matches("default.*.*", "default.kfp.operator.run-completion"));
    assert!(subject_matches("events", "events"));
    assert!(!subject_matches("events", "events.x"));
}

#[test]
fn the_documented_argo_bus_names_are_the_configuration_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("operator.yaml");
    std::fs::write(&path, "events:\n  argoEventBus:\n    nats:\n      url: nats://127.0.0.1:4222\n").unwrap();
    let config = kfp_operator::config::OperatorConfig::from_file(&path).unwrap();
    let argo = config.events.argo_event_bus.unwrap();
    assert_eq!(argo.event_source_name, ARGO_BUS_EVENT_SOURCE);
    assert_eq!(argo.event_name, ARGO_BUS_EVENT_NAME);
}

/// The serving Sensor reacts to the quickstart's model: the Pipeline of the RunConfiguration in
/// `examples/quickstart/` that exposes `serving-model`.
#[test]
fn the_serving_sensor_follows_the_quickstart_model() {
    let file = repo_root().join("examples/quickstart/30-runconfigurations.yaml");
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let training = documents
        .iter()
        .find(|rc| {
            rc["spec"]["run"]["artifacts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["name"] == "serving-model")
        })
        .expect("a quickstart RunConfiguration exposes serving-model");
    let pipeline = format!(
        "{}/{}",
        training["metadata"]["namespace"].as_str().unwrap(),
        training["spec"]["run"]["pipeline"].as_str().unwrap()
    );
    let sensor = manifest("sensor-model-ready-serving.yaml", "Sensor");
    let filter = &sensor.value["spec"]["dependencies"][0]["filters"]["data"][0];
    assert_eq!(filter["path"], "body.data.pipelineName");
    assert_eq!(filter["value"], json!([format!("^{pipeline}$")]));
}
