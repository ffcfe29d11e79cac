//! The run-completion payloads: [`RunCompletionEventData`], the body a provider POSTs to
//! `/events` (reference §8.2), and [`RunCompletionEvent`], the filtered event the operator
//! publishes (reference §8.5), with the artifact selection between them (reference §8.4 step 5).

use std::fmt;

use chrono::{DateTime, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::api::filter::{self, Filter, FilterError};
use crate::api::{Artifact, NamespacedName, OutputArtifact};

/// How a run finished. Serialised in lower case, as the reference does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunCompletionStatus {
    Succeeded,
    Failed,
}

impl RunCompletionStatus {
    /// `succeeded` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for RunCompletionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body a provider POSTs to the operator's `/events` when a run finishes.
///
/// Parsing is lenient where the reference's Go producers are loose: `null` lists and maps
/// read as empty, and an empty `runConfigurationName`/`runName` reads as absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "RunCompletionEventData")]
pub struct RunCompletionEventData {
    /// How the run finished.
    pub status: RunCompletionStatus,
    /// The Pipeline that ran (`namespace/name`).
    pub pipeline_name: NamespacedName,
    /// The RunConfiguration that owns the run (`namespace/name`); absent for one-off Runs.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "empty_name_as_none")]
    #[schemars(with = "NamespacedName")]
    pub run_configuration_name: Option<NamespacedName>,
    /// The Run (`namespace/name`); absent for runs started by a provider schedule.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "empty_name_as_none")]
    #[schemars(with = "NamespacedName")]
    pub run_name: Option<NamespacedName>,
    /// The run's id on the provider.
    pub run_id: String,
    /// When the run started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp")]
    pub run_start_time: Option<DateTime<Utc>>,
    /// When the run finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp")]
    pub run_end_time: Option<DateTime<Utc>>,
    /// Every output artifact of the run, per component.
    #[serde(default, deserialize_with = "null_as_default")]
    #[schemars(with = "Option<Vec<PipelineComponent>>")]
    pub pipeline_components: Vec<PipelineComponent>,
    /// The Provider that ran it (`namespace/name`).
    pub provider: NamespacedName,
}

/// The outputs of one pipeline component (one execution).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineComponent {
    /// The component's name (its display name on the provider).
    pub name: String,
    /// The component's outputs, by output name.
    #[serde(default, deserialize_with = "null_as_default")]
    #[schemars(with = "Option<Vec<ComponentArtifact>>")]
    pub component_artifacts: Vec<ComponentArtifact>,
}

/// The instances of one named output of a component.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentArtifact {
    /// The output's name.
    pub name: String,
    /// Its instances; an artifact path's index selects one.
    #[serde(default, deserialize_with = "null_as_default")]
    #[schemars(with = "Option<Vec<ComponentArtifactInstance>>")]
    pub artifacts: Vec<ComponentArtifactInstance>,
}

/// One stored artifact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentArtifactInstance {
    /// Where it was stored; an empty URI is never selected.
    #[serde(default)]
    pub uri: String,
    /// Its metadata, which artifact path filters are evaluated against.
    #[serde(default, deserialize_with = "null_as_default")]
    #[schemars(with = "Option<Map<String, Value>>")]
    pub metadata: Map<String, Value>,
}

/// The run-completion event the operator publishes, the `data` of its `run-completion` and
/// `model-ready` CloudEvents: the provider's data without the components, plus the artifacts
/// the run declared and produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "RunCompletionEvent")]
pub struct RunCompletionEvent {
    /// How the run finished.
    pub status: RunCompletionStatus,
    /// The Pipeline that ran (`namespace/name`).
    pub pipeline_name: NamespacedName,
    /// The RunConfiguration that owns the run (`namespace/name`); omitted for one-off Runs.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "empty_name_as_none")]
    #[schemars(with = "NamespacedName")]
    pub run_configuration_name: Option<NamespacedName>,
    /// The Run (`namespace/name`); omitted for runs started by a provider schedule.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "empty_name_as_none")]
    #[schemars(with = "NamespacedName")]
    pub run_name: Option<NamespacedName>,
    /// The run's id on the provider.
    pub run_id: String,
    /// When the run started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp")]
    pub run_start_time: Option<DateTime<Utc>>,
    /// When the run finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp")]
    pub run_end_time: Option<DateTime<Utc>>,
    /// The declared artifacts the run produced, in declaration order; always present, `[]`
    /// when none.
    #[serde(deserialize_with = "null_as_default")]
    pub artifacts: Vec<Artifact>,
    /// The Provider that ran it (`namespace/name`).
    pub provider: NamespacedName,
}

impl RunCompletionEvent {
    /// The event for `data` with the artifacts selected from it (see [`select_artifacts`]).
    pub fn from_data(data: RunCompletionEventData, artifacts: Vec<Artifact>) -> Self {
        Self {
            status: data.status,
            pipeline_name: data.pipeline_name,
            run_configuration_name: data.run_configuration_name,
            run_name: data.run_name,
            run_id: data.run_id,
            run_start_time: data.run_start_time,
            run_end_time: data.run_end_time,
            artifacts,
            provider: data.provider,
        }
    }

    /// The RunConfiguration if there is one, else the Run: what the event is about.
    pub fn resource_name(&self) -> Option<&NamespacedName> {
        self.run_configuration_name.as_ref().or(self.run_name.as_ref()).filter(|name| !name.name.is_empty())
    }
}

/// Selects the declared artifacts from a run's outputs, as the reference does (§8.4 step 5):
/// for each declared artifact in order, for every component named `Component`, for every
/// output named `Artifact`, take instance `index`; skip it if the index is out of range, the
/// URI is empty, or the filter evaluates to false or fails (a missing field, for example);
/// otherwise append `{name, location: uri, metadata}` (the reference leaves the metadata out;
/// conditions on results read it). Several matches give several entries with the same name.
///
/// Unlike the reference, which silently skips a declared artifact whose filter does not
/// parse, a filter that does not parse is an error: it is a mistake in the Run or
/// RunConfiguration spec, not a property of this run.
pub fn select_artifacts(
    declared: &[OutputArtifact],
    components: &[PipelineComponent],
) -> Result<Vec<Artifact>, FilterError> {
    let filters = declared
        .iter()
        .map(|artifact| match artifact.path.filter.as_str() {
            "" => Ok(None),
            expression => filter::parse(expression).map(Some),
        })
        .collect::<Result<Vec<Option<Filter>>, FilterError>>()?;

    let mut selected = Vec::new();
    for (artifact, filter) in declared.iter().zip(&filters) {
        let Ok(index) = usize::try_from(artifact.path.index) else { continue };
        let outputs = components
            .iter()
            .filter(|component| component.name == artifact.path.component)
            .flat_map(|component| &component.component_artifacts)
            .filter(|output| output.name == artifact.path.artifact);
        for output in outputs {
            let Some(instance) = output.artifacts.get(index) else { continue };
            if instance.uri.is_empty() {
                continue;
            }
            if let Some(filter) = filter
                && filter.evaluate_map(&instance.metadata) != Ok(true)
            {
                continue;
            }
            selected.push(
                Artifact::new(artifact.name.clone(), instance.uri.clone())
                    .with_metadata(instance.metadata.clone()),
            );
        }
    }
    Ok(selected)
}

/// Reads `null` as the type's default (the reference's Go producers send nil slices and maps
/// as `null`).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Reads `null`, `""` and a name without a name part as absent (after the reference's gRPC
/// hop, absent names arrive as `""`).
fn empty_name_as_none<'de, D>(deserializer: D) -> Result<Option<NamespacedName>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Option::<NamespacedName>::deserialize(deserializer)?.filter(|name| !name.name.is_empty()))
}

/// An RFC 3339 timestamp.
fn timestamp(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "format": "date-time" })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::api::ArtifactPath;

    fn instance(uri: &str, metadata: Value) -> ComponentArtifactInstance {
        let Value::Object(metadata) = metadata else { panic!("metadata must be an object") };
        ComponentArtifactInstance { uri: uri.into(), metadata }
    }

    fn component(name: &str, outputs: Vec<(&str, Vec<ComponentArtifactInstance>)>) -> PipelineComponent {
        PipelineComponent {
            name: name.into(),
            component_artifacts: outputs
                .into_iter()
                .map(|(name, artifacts)| ComponentArtifact { name: name.into(), artifacts })
                .collect(),
        }
    }

    fn declared(name: &str, path: &str) -> OutputArtifact {
        OutputArtifact::new(name, path.parse::<ArtifactPath>().unwrap())
    }

    fn components() -> Vec<PipelineComponent> {
        vec![
            component(
                "Pusher",
                vec![(
                    "pushed_model",
                    vec![
                        instance("gs://b/pushed/0", json!({"pushed": 1})),
                        instance("gs://b/pushed/1", json!({"pushed": 0})),
                    ],
                )],
            ),
            component(
                "Trainer",
                vec![
                    ("model", vec![instance("gs://b/model", json!({}))]),
                    ("empty", vec![instance("", json!({}))]),
                ],
            ),
            // A second component of the same name: both are searched.
            component(
                "Pusher",
                vec![("pushed_model", vec![instance("gs://b/pushed/again", json!({"pushed": 1}))])],
            ),
        ]
    }

    #[test]
    fn selects_by_component_artifact_and_index() {
        let selected = select_artifacts(
            &[
                declared("model", "Trainer:model"),
                declared("second", "Pusher:pushed_model:1"),
                declared("missing-index", "Trainer:model:5"),
                declared("missing-component", "Evaluator:blessing"),
                declared("empty-uri", "Trainer:empty"),
            ],
            &components(),
        )
        .unwrap();
        assert_eq!(
            selected,
            vec![
                Artifact::new("model", "gs://b/model"),
                Artifact::new("second", "gs://b/pushed/1").with_metadata(pushed(0)),
            ]
        );
    }

    #[test]
    fn filters_and_multiple_matches_keep_declaration_order() {
        let selected = select_artifacts(
            &[
                declared("pushed", "Pusher:pushed_model[pushed == 1]"),
                declared("model", "Trainer:model"),
                declared("not-pushed", "Pusher:pushed_model:1[pushed == 1]"),
                declared("no-field", "Pusher:pushed_model[blessed == 1]"),
            ],
            &components(),
        )
        .unwrap();
        assert_eq!(
            selected,
            vec![
                Artifact::new("pushed", "gs://b/pushed/0").with_metadata(pushed(1)),
                Artifact::new("pushed", "gs://b/pushed/again").with_metadata(pushed(1)),
                Artifact::new("model", "gs://b/model"),
            ]
        );
    }

    fn pushed(value: u8) -> Map<String, Value> {
        Map::from_iter([("pushed".to_owned(), Value::from(value))])
    }

    #[test]
    fn a_filter_that_does_not_parse_is_an_error() {
        let error = select_artifacts(
            &[declared("ok", "Trainer:model"), declared("bad", "Pusher:pushed_model[pushed =]")],
            &[],
        )
        .unwrap_err();
        assert_eq!(error.category(), "filter_syntax");
        assert!(error.to_string().contains("pushed ="), "{error}");
    }

    #[test]
    fn nothing_declared_or_produced_gives_an_empty_list() {
        assert_eq!(select_artifacts(&[], &components()).unwrap(), vec![]);
        assert_eq!(select_artifacts(&[declared("m", "Trainer:model")], &[]).unwrap(), vec![]);
    }

    #[test]
    fn data_parses_the_reference_example() {
        let body = json!({
            "status": "succeeded",
            "pipelineName": "base-namespace/penguin-pipeline-examples",
            "runConfigurationName": "base-namespace/penguin-pipeline-examples-rc",
            "runId": "3f2c",
            "runStartTime": "2024-05-01T10:00:00Z",
            "runEndTime": "2024-05-01T10:21:07Z",
            "pipelineComponents": [{"name": "CsvExampleGen", "componentArtifacts": [{"name": "examples",
                "artifacts": [{"uri": "gs://bucket/root/examples/1", "metadata": {"span": 0}}]}]}],
            "provider": "provider-namespace/kfp",
            "servingModelArtifacts": null
        });
        let data: RunCompletionEventData = serde_json::from_value(body).unwrap();
        assert_eq!(data.status, RunCompletionStatus::Succeeded);
        assert_eq!(data.run_name, None);
        assert_eq!(
            data.pipeline_components[0].component_artifacts[0].artifacts[0].metadata["span"],
            json!(0)
        );
        let rendered = serde_json::to_value(&data).unwrap();
        assert!(rendered.get("runName").is_none());
        assert_eq!(rendered["runEndTime"], json!("2024-05-01T10:21:07Z"));
        assert_eq!(serde_json::from_value::<RunCompletionEventData>(rendered).unwrap(), data);
    }

    #[test]
    fn data_reads_nulls_and_empty_names_as_absent() {
        let body = json!({
            "status": "failed", "pipelineName": "ns/p", "runConfigurationName": "", "runName": "ns/r",
            "runId": "1", "pipelineComponents": null, "provider": "ns/kfp"
        });
        let data: RunCompletionEventData = serde_json::from_value(body).unwrap();
        assert_eq!(data.run_configuration_name, None);
        assert_eq!(data.run_name, Some(NamespacedName::new("ns", "r")));
        assert!(data.pipeline_components.is_empty());
        let nested = json!({"name": "c", "componentArtifacts": [{"name": "a", "artifacts": [{"uri": "u", "metadata": null}]}]});
        let component: PipelineComponent = serde_json::from_value(nested).unwrap();
        assert!(component.component_artifacts[0].artifacts[0].metadata.is_empty());
        assert!(serde_json::from_value::<RunCompletionEventData>(json!({"status": "running"})).is_err());
    }

    #[test]
    fn event_always_carries_artifacts_and_omits_absent_names() {
        let data: RunCompletionEventData = serde_json::from_value(json!({
            "status": "succeeded", "pipelineName": "ns/p", "runName": "ns/r", "runId": "1", "provider": "ns/kfp"
        }))
        .unwrap();
        let event = RunCompletionEvent::from_data(data, vec![]);
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"status": "succeeded", "pipelineName": "ns/p", "runName": "ns/r", "runId": "1",
                   "artifacts": [], "provider": "ns/kfp"})
        );
        assert_eq!(event.resource_name(), Some(&NamespacedName::new("ns", "r")));
        let legacy = json!({"status": "succeeded", "pipelineName": "ns/p", "runConfigurationName": "ns/rc",
            "runName": "", "runId": "1", "artifacts": null, "provider": "ns/kfp"});
        let parsed: RunCompletionEvent = serde_json::from_value(legacy).unwrap();
        assert_eq!(parsed.run_name, None);
        assert_eq!(parsed.resource_name(), Some(&NamespacedName::new("ns", "rc")));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(data) = serde_json::from_slice::<RunCompletionEventData>(&bytes) {
                // Floats need not survive a text round trip bit for bit; decoding must succeed.
                let rendered = serde_json::to_vec(&data).unwrap();
                prop_assert!(serde_json::from_slice::<RunCompletionEventData>(&rendered).is_ok());
            }
            let _ = serde_json::from_slice::<RunCompletionEvent>(&bytes);
        }

        #[test]
        fn decoding_arbitrary_field_values_never_panics(
            status in "[a-z]{0,10}|succeeded|failed",
            name in "[a-z/]{0,6}",
            time in "[0-9TZ:.+-]{0,25}|2024-05-01T10:00:00Z",
            uri in ".{0,8}",
        ) {
            let body = json!({
                "status": status, "pipelineName": name, "runConfigurationName": name, "runName": name,
                "runId": name, "runStartTime": time, "runEndTime": time, "provider": name,
                "pipelineComponents": [{"name": name, "componentArtifacts": [{"name": name,
                    "artifacts": [{"uri": uri, "metadata": {"k": [1, {"x": null}]}}]}]}]
            });
            let text = serde_json::to_string(&body).unwrap();
            if let Ok(data) = serde_json::from_str::<RunCompletionEventData>(&text) {
                let rendered = serde_json::to_string(&data).unwrap();
                let again = serde_json::from_str::<RunCompletionEventData>(&rendered).unwrap();
                prop_assert_eq!(again, data);
            }
        }
    }
}
