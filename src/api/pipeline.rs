//! The Pipeline kind: a containerised pipeline definition compiled by a framework and
//! uploaded to a provider.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{NamedValue, NamespacedName, PROVIDER_REFERENCE_PATTERN, Status};
use super::schema::json_value_map;

/// A machine-learning pipeline: the image holding its code, how to compile it, and the
/// provider it is uploaded to.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pipelines.kubeflow.org",
    version = "v1beta1",
    kind = "Pipeline",
    doc = "A machine-learning pipeline uploaded to a provider.",
    plural = "pipelines",
    namespaced,
    status = "Status",
    shortname = "mlp",
    category = "kfp",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".status.provider.name"}"#,
    printcolumn = r#"{"name":"Synchronized","type":"string","jsonPath":".status.conditions[?(@.type==\"Synchronized\")].reason"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.version"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSpec {
    /// The Provider (`namespace/name`) the pipeline is uploaded to.
    /// Absent only in objects converted from `v1alpha5` while no `defaultProvider` is configured.
    #[serde(default, skip_serializing_if = "NamespacedName::is_empty")]
    #[schemars(pattern(PROVIDER_REFERENCE_PATTERN))]
    pub provider: NamespacedName,
    /// Container image holding the pipeline code; its tag becomes part of the pipeline version.
    pub image: String,
    /// Environment variables available when the pipeline is compiled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<NamedValue>,
    /// The framework that compiles the pipeline and its parameters.
    pub framework: PipelineFramework,
}

/// A pipeline framework (for example `tfx` or `kfpsdk`) and its settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PipelineFramework {
    /// Must name one of the Provider's `spec.frameworks`.
    pub name: String,
    /// Framework-specific settings: tfx reads `components` and `beamArgs`, kfpsdk reads `pipeline`.
    #[schemars(schema_with = "json_value_map")]
    pub parameters: BTreeMap<String, serde_json::Value>,
}

impl PipelineFramework {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), parameters: BTreeMap::new() }
    }

    pub fn with_parameter(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.parameters.insert(key.into(), value);
        self
    }
}
