//! The `v1alpha6` kinds, as the reference operator served them: `spec.provider` is a bare
//! Provider name, Pipelines carry `tfxComponents` and `beamArgs`, Providers an `image` and
//! `defaultBeamArgs`. Served for manifests written against the reference, never stored.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{NamedValue, OutputArtifact};
use super::run::CompletionState;
use super::run_configuration::{OnChangeType, Schedule};
use super::schema::json_value_map;
pub use super::v1alpha5::{
    Parameter, RunConfigurationRef, RunConfigurationStatus, RunDependencies, ValueFrom,
};

/// This version's name.
pub const VERSION: &str = "v1alpha6";

/// The provider that synchronised a resource, by name only, and the resource's id there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProviderAndId {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
}

/// The status every kind of this version shares.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderAndId>,
    /// The reason of the `Synchronized` condition.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub synchronization_state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::conditions")]
    pub conditions: Vec<Condition>,
}

/// A TFX pipeline.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pipelines.kubeflow.org",
    version = "v1alpha6",
    kind = "Pipeline",
    doc = "A machine-learning pipeline (v1alpha6; stored as v1beta1).",
    plural = "pipelines",
    namespaced,
    status = "Status",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSpec {
    /// The Provider's name.
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub image: String,
    /// The TFX components (`module.function`).
    #[serde(default)]
    pub tfx_components: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<NamedValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub beam_args: Vec<NamedValue>,
}

/// One execution of a pipeline.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pipelines.kubeflow.org",
    version = "v1alpha6",
    kind = "Run",
    doc = "One execution of a pipeline (v1alpha6; stored as v1beta1).",
    plural = "runs",
    namespaced,
    status = "RunStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct RunSpec {
    /// The Provider's name.
    #[serde(default)]
    pub provider: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pipeline: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub experiment_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_parameters: Vec<Parameter>,
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
    #[schemars(schema_with = "super::schema::optional::<CompletionState>")]
    pub completion_state: Option<CompletionState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marked_completed_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// A run specification with triggers.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pipelines.kubeflow.org",
    version = "v1alpha6",
    kind = "RunConfiguration",
    doc = "A run specification and what triggers it (v1alpha6; stored as v1beta1).",
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<Schedule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_change: Vec<OnChangeType>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub run_configurations: Vec<String>,
}

impl Triggers {
    pub fn is_empty(&self) -> bool {
        self.schedules.is_empty() && self.on_change.is_empty() && self.run_configurations.is_empty()
    }
}

/// A schedule of runs.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pipelines.kubeflow.org",
    version = "v1alpha6",
    kind = "RunSchedule",
    doc = "A schedule of runs (v1alpha6; stored as v1beta1).",
    plural = "runschedules",
    namespaced,
    status = "Status",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct RunScheduleSpec {
    #[serde(default)]
    pub provider: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pipeline: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub experiment_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_parameters: Vec<NamedValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<NamedValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<OutputArtifact>,
    #[serde(default)]
    pub schedule: Schedule,
}

/// An experiment.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pipelines.kubeflow.org",
    version = "v1alpha6",
    kind = "Experiment",
    doc = "An experiment (v1alpha6; stored as v1beta1).",
    plural = "experiments",
    namespaced,
    status = "Status",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentSpec {
    #[serde(default)]
    pub provider: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// An ML platform.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pipelines.kubeflow.org",
    version = "v1alpha6",
    kind = "Provider",
    doc = "An ML platform (v1alpha6; stored as v1beta1).",
    plural = "providers",
    namespaced,
    status = "Status",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSpec {
    /// The TFX compiler image.
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub service_image: String,
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
