//! The Run kind and the run specification shared with RunConfiguration: one execution of a
//! pipeline on a provider, with its parameters, exposed artifacts and completion state.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Artifact, NamespacedName, OutputArtifact, PROVIDER_REFERENCE_PATTERN, PipelineIdentifier, Status,
};

/// One execution of a pipeline. The spec is immutable once created.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pipelines.kubeflow.org",
    version = "v1beta1",
    kind = "Run",
    doc = "One execution of a pipeline on a provider; its spec is immutable.",
    plural = "runs",
    namespaced,
    status = "RunStatus",
    shortname = "mlr",
    category = "kfp",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".status.provider.name"}"#,
    printcolumn = r#"{"name":"Synchronized","type":"string","jsonPath":".status.conditions[?(@.type==\"Synchronized\")].reason"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.version"}"#,
    printcolumn = r#"{"name":"Completion","type":"string","jsonPath":".status.completionState"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RunSpec {
    /// The Provider (`namespace/name`) that executes the run.
    /// Absent only in objects converted from `v1alpha5` while no `defaultProvider` is configured.
    #[serde(default, skip_serializing_if = "NamespacedName::is_empty")]
    #[schemars(pattern(PROVIDER_REFERENCE_PATTERN))]
    pub provider: NamespacedName,
    /// The Pipeline to run, in the same namespace: `name`, or `name:version` to pin a version.
    #[serde(default, skip_serializing_if = "PipelineIdentifier::is_empty")]
    pub pipeline: PipelineIdentifier,
    /// The Experiment (in the same namespace) the run belongs to; empty means the provider's default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub experiment_name: String,
    /// Runtime parameters of the pipeline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
    /// Output artifacts to expose in run-completion events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<OutputArtifact>,
}

/// A runtime parameter: a literal `value`, or a value taken from another RunConfiguration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Parameter {
    /// The parameter's name in the pipeline.
    pub name: String,
    /// A literal value. Only one of `value` and `valueFrom` may be set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Where to take the value from instead of a literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ValueFrom>,
}

impl Parameter {
    pub fn literal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self { name: name.into(), value: value.into(), value_from: None }
    }

    pub fn from_run_configuration(name: impl Into<String>, reference: RunConfigurationRef) -> Self {
        Self {
            name: name.into(),
            value: String::new(),
            value_from: Some(ValueFrom { run_configuration_ref: reference }),
        }
    }
}

/// The source of a parameter value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueFrom {
    /// Take the location of an artifact of a RunConfiguration's latest successful run.
    pub run_configuration_ref: RunConfigurationRef,
}

/// An artifact of a RunConfiguration's latest successful run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunConfigurationRef {
    /// The RunConfiguration, `name` or `namespace/name`; the namespace defaults to this resource's.
    pub name: NamespacedName,
    /// The name of the artifact (from the RunConfiguration's `spec.run.artifacts`) whose location is used.
    pub output_artifact: String,
    /// When true, an unresolvable value omits the parameter instead of blocking the run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

impl RunConfigurationRef {
    pub fn new(name: NamespacedName, output_artifact: impl Into<String>) -> Self {
        Self { name, output_artifact: output_artifact.into(), optional: false }
    }

    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
}

/// The observed state of a Run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    #[serde(flatten)]
    pub status: Status,
    /// What the run depended on when it was submitted.
    #[serde(default, skip_serializing_if = "Dependencies::is_empty")]
    pub dependencies: Dependencies,
    /// `Succeeded` or `Failed` once the provider reported the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::optional::<CompletionState>")]
    pub completion_state: Option<CompletionState>,
    /// When the operator first saw the completion; the start of the completed-run TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marked_completed_at: Option<Time>,
}

/// How a run finished: `Succeeded` or `Failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CompletionState {
    Succeeded,
    Failed,
}

/// Snapshot of what a run or RunConfiguration depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dependencies {
    /// The pipeline version observed.
    #[serde(default, skip_serializing_if = "ObservedVersion::is_empty")]
    pub pipeline: ObservedVersion,
    /// Per referenced RunConfiguration (keyed as written in the spec): its latest successful
    /// run and the artifacts used from it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub run_configurations: BTreeMap<String, RunReference>,
}

impl Dependencies {
    pub fn is_empty(&self) -> bool {
        self.pipeline.is_empty() && self.run_configurations.is_empty()
    }
}

/// A version that was observed or acted upon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ObservedVersion {
    /// The version string.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
}

impl ObservedVersion {
    pub fn new(version: impl Into<String>) -> Self {
        Self { version: version.into() }
    }

    pub fn is_empty(&self) -> bool {
        self.version.is_empty()
    }
}

/// A run on the provider and the artifacts it produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunReference {
    /// The run's id on the provider.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider_id: String,
    /// The run's artifacts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// When the run ended (in `latestRuns`): a completion that ended earlier never replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_end_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}
