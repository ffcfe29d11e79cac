//! The Experiment kind: a provider-side grouping of runs.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{NamespacedName, PROVIDER_REFERENCE_PATTERN, Status};

/// An experiment on the provider, used to group runs.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pipelines.kubeflow.org",
    version = "v1beta1",
    kind = "Experiment",
    doc = "An experiment on a provider, grouping runs.",
    plural = "experiments",
    namespaced,
    status = "Status",
    shortname = "mlexp",
    category = "kfp",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".status.provider.name"}"#,
    printcolumn = r#"{"name":"Synchronized","type":"string","jsonPath":".status.conditions[?(@.type==\"Synchronized\")].reason"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.version"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentSpec {
    /// The Provider (`namespace/name`) the experiment is created on.
    /// Absent only in objects converted from `v1alpha5` while no `defaultProvider` is configured.
    #[serde(default, skip_serializing_if = "NamespacedName::is_empty")]
    #[schemars(pattern(PROVIDER_REFERENCE_PATTERN))]
    pub provider: NamespacedName,
    /// A human-readable description shown by the provider.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}
