//! The RunSchedule kind: a recurring run on the provider, normally owned by a RunConfiguration.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    NamedValue, NamespacedName, OutputArtifact, PROVIDER_REFERENCE_PATTERN, PipelineIdentifier, Status,
};
use super::run_configuration::Schedule;

/// A recurring run on the provider.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pipelines.kubeflow.org",
    version = "v1beta1",
    kind = "RunSchedule",
    doc = "A recurring run on a provider, normally owned by a RunConfiguration.",
    plural = "runschedules",
    namespaced,
    status = "Status",
    shortname = "mlrs",
    category = "kfp",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".status.provider.name"}"#,
    printcolumn = r#"{"name":"Synchronized","type":"string","jsonPath":".status.conditions[?(@.type==\"Synchronized\")].reason"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.version"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RunScheduleSpec {
    /// The Provider (`namespace/name`) that runs the schedule.
    /// Absent only in objects converted from `v1alpha5` while no `defaultProvider` is configured.
    #[serde(default, skip_serializing_if = "NamespacedName::is_empty")]
    #[schemars(pattern(PROVIDER_REFERENCE_PATTERN))]
    pub provider: NamespacedName,
    /// The Pipeline to run, `name:version`.
    #[serde(default, skip_serializing_if = "PipelineIdentifier::is_empty")]
    pub pipeline: PipelineIdentifier,
    /// The Experiment the runs belong to; empty means the provider's default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub experiment_name: String,
    /// Resolved runtime parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<NamedValue>,
    /// Output artifacts to expose in run-completion events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<OutputArtifact>,
    /// When runs start.
    #[serde(default)]
    pub schedule: Schedule,
}
