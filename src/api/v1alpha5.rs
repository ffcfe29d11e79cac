//! The `v1alpha5` kinds: served for the manifests the product documentation shows, never stored.
//! Field names follow the reference's `v1alpha5` schemas; where the documentation writes looser
//! forms (a Pipeline without `tfxComponents`, `runtimeParameters` as a map) the schema admits
//! them and the conversion to `v1beta1` gives them meaning.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::common::{NamedValue, OutputArtifact};
use super::run::RunReference;
use super::run_configuration::{OnChangeType, TriggeredRunReference};
use super::schema::json_value_map;

/// This version's name.
pub const VERSION: &str = "v1alpha5";

/// The status every kind of this version shares.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The resource's id on the provider.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider_id: String,
    /// The reason of the `Synchronized` condition.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub synchronization_state: String,
    /// The version (hash) of the spec last submitted to the provider.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// The `metadata.generation` last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions, as in `v1beta1`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::conditions")]
    pub conditions: Vec<Condition>,
}

/// A pipeline. Without `tfxComponents` it is compiled by the operator's default framework.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pipelines.kubeflow.org",
    version = "v1alpha5",
    kind = "Pipeline",
    doc = "A machine-learning pipeline (v1alpha5; stored as v1beta1).",
    plural = "pipelines",
    namespaced,
    status = "Status",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSpec {
    /// Container image holding the pipeline code.
    #[serde(default)]
    pub image: String,
    /// The TFX components (`module.function`); absent means the default framework.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tfx_components: String,
    /// Environment variables available when the pipeline is compiled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<NamedValue>,
    /// Beam arguments of a TFX pipeline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub beam_args: Vec<NamedValue>,
}

/// Where a parameter's value comes from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValueFrom {
    /// An artifact of a RunConfiguration's latest successful run.
    #[serde(default)]
    pub run_configuration_ref: RunConfigurationRef,
}

/// A RunConfiguration's output artifact (no `optional` in this version).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunConfigurationRef {
    /// The RunConfiguration, `namespace/name` or `name`.
    #[serde(default)]
    pub name: String,
    /// The artifact's name.
    #[serde(default)]
    pub output_artifact: String,
}

/// A runtime parameter in list form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Parameter {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ValueFrom>,
}

/// `runtimeParameters`: the reference's list of `{name, value | valueFrom}`, or the
/// documentation's map of name to value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RuntimeParameters {
    List(Vec<Parameter>),
    /// Values are strings; numbers and booleans are taken as written.
    Map(BTreeMap<String, serde_json::Value>),
}

impl Default for RuntimeParameters {
    fn default() -> Self {
        Self::List(Vec::new())
    }
}

impl RuntimeParameters {
    pub fn is_empty(&self) -> bool {
        match self {
            Self::List(list) => list.is_empty(),
            Self::Map(map) => map.is_empty(),
        }
    }
}

impl JsonSchema for RuntimeParameters {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RuntimeParameters".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A list of {name, value | valueFrom}, or a map of name to value.",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

/// The run specification of a Run and of a RunConfiguration's `run`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pipelines.kubeflow.org",
    version = "v1alpha5",
    kind = "Run",
    doc = "One execution of a pipeline (v1alpha5; stored as v1beta1).",
    plural = "runs",
    namespaced,
    status = "RunStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct RunSpec {
    /// The Pipeline, `name` or `name:version`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pipeline: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub experiment_name: String,
    #[serde(default, skip_serializing_if = "RuntimeParameters::is_empty")]
    pub runtime_parameters: RuntimeParameters,
    /// Only read during conversion; `runtimeParameters` is the field to write.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<OutputArtifact>,
}

/// The status of a Run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    #[serde(flatten)]
    pub status: Status,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub observed_pipeline_version: String,
    #[serde(default, skip_serializing_if = "RunDependencies::is_empty")]
    pub dependencies: RunDependencies,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::optional::<super::run::CompletionState>")]
    pub completion_state: Option<super::run::CompletionState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marked_completed_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// The RunConfigurations a run took parameters from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunDependencies {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub run_configurations: BTreeMap<String, RunReference>,
}

impl RunDependencies {
    pub fn is_empty(&self) -> bool {
        self.run_configurations.is_empty()
    }
}

/// A run specification with triggers.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pipelines.kubeflow.org",
    version = "v1alpha5",
    kind = "RunConfiguration",
    doc = "A run specification and what triggers it (v1alpha5; stored as v1beta1).",
    plural = "runconfigurations",
    namespaced,
    status = "RunConfigurationStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct RunConfigurationSpec {
    #[serde(default)]
    pub run: RunSpec,
    #[serde(default, skip_serializing_if = "Triggers::is_empty")]
    pub triggers: Triggers,
}

/// What starts a RunConfiguration's runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Triggers {
    /// Cron expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_change: Vec<OnChangeType>,
    /// RunConfigurations (`namespace/name` or `name`) whose success starts a run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub run_configurations: Vec<String>,
}

impl Triggers {
    pub fn is_empty(&self) -> bool {
        self.schedules.is_empty() && self.on_change.is_empty() && self.run_configurations.is_empty()
    }
}

/// The status of a RunConfiguration (shared by `v1alpha6`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunConfigurationStatus {
    /// The Provider's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub synchronization_state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::conditions")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "super::run_configuration::LatestRuns::is_empty")]
    pub latest_runs: super::run_configuration::LatestRuns,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub observed_pipeline_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub triggered_pipeline_version: String,
    #[serde(default, skip_serializing_if = "RunDependencies::is_empty")]
    pub dependencies: RunDependencies,
    #[serde(default, skip_serializing_if = "TriggersStatus::is_empty")]
    pub triggers: TriggersStatus,
}

/// What last triggered a RunConfiguration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggersStatus {
    #[serde(default, skip_serializing_if = "super::run::ObservedVersion::is_empty")]
    pub run_spec: super::run::ObservedVersion,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub run_configurations: BTreeMap<String, TriggeredRunReference>,
}

impl TriggersStatus {
    pub fn is_empty(&self) -> bool {
        self.run_spec.is_empty() && self.run_configurations.is_empty()
    }
}

/// A schedule of runs.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pipelines.kubeflow.org",
    version = "v1alpha5",
    kind = "RunSchedule",
    doc = "A schedule of runs (v1alpha5; stored as v1beta1).",
    plural = "runschedules",
    namespaced,
    status = "Status",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct RunScheduleSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pipeline: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub experiment_name: String,
    #[serde(default, skip_serializing_if = "RuntimeParameters::is_empty")]
    pub runtime_parameters: RuntimeParameters,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<NamedValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<OutputArtifact>,
    /// A cron expression.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub schedule: String,
}

/// An experiment.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pipelines.kubeflow.org",
    version = "v1alpha5",
    kind = "Experiment",
    doc = "An experiment (v1alpha5; stored as v1beta1).",
    plural = "experiments",
    namespaced,
    status = "Status",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// An ML platform.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pipelines.kubeflow.org",
    version = "v1alpha5",
    kind = "Provider",
    doc = "An ML platform (v1alpha5; stored as v1beta1).",
    plural = "providers",
    namespaced,
    status = "Status",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSpec {
    /// The provider's image; becomes the `v1beta1` `serviceImage`.
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub execution_mode: String,
    #[serde(default)]
    pub service_account: String,
    #[serde(default)]
    pub pipeline_root_storage: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_beam_args: Vec<NamedValue>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "json_value_map")]
    pub parameters: BTreeMap<String, serde_json::Value>,
}
