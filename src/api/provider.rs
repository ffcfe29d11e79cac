//! The Provider kind: an ML platform (Kubeflow Pipelines, Vertex AI, …) reached through a
//! provider implementation, and who may use it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, Volume, VolumeMount};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Status;
use super::schema::json_value_map;

/// An ML platform that pipelines, runs, schedules and experiments are synchronised with.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pipelines.kubeflow.org",
    version = "v1beta1",
    kind = "Provider",
    doc = "An ML platform that pipelines, runs, schedules and experiments are synchronised with.",
    plural = "providers",
    namespaced,
    status = "Status",
    shortname = "mlprv",
    category = "kfp",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Synchronized","type":"string","jsonPath":".status.conditions[?(@.type==\"Synchronized\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSpec {
    /// How the operator talks to the platform: `http` (a provider service, the default) or `stub`
    /// (built in, deterministic, for tests and trials).
    #[serde(default, rename = "type")]
    pub provider_type: ProviderType,
    /// For `http`: the provider service's base URL. When empty, the operator runs `serviceImage`
    /// as a Deployment and Service and uses that.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_url: String,
    /// Image of the provider service.
    pub service_image: String,
    /// Deprecated and ignored.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub execution_mode: String,
    /// Service account of the provider service's pods.
    #[schemars(pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub service_account: String,
    /// Root storage for pipeline outputs (e.g. `gs://bucket`).
    pub pipeline_root_storage: String,
    /// Provider-specific settings, passed to the provider service as `PARAMETERS_<KEY>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "json_value_map")]
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// Pipeline frameworks this provider compiles, with their compiler images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frameworks: Vec<Framework>,
    /// When non-empty, only resources in these namespaces may use this provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_namespaces: Vec<String>,
    /// Environment merged over the provider service container's defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_template_env: Vec<EnvVar>,
    /// Volumes merged over the provider service pod's defaults, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_template_volumes: Vec<Volume>,
    /// Volume mounts merged over the provider service container's defaults, by mount path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_template_volume_mounts: Vec<VolumeMount>,
}

/// How the operator reaches a provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderType {
    /// A provider service speaking the provider HTTP API.
    #[default]
    Http,
    /// The built-in deterministic stub.
    Stub,
}

/// A pipeline framework a provider supports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Framework {
    /// The framework name that Pipelines refer to in `spec.framework.name`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The compiler image for this framework.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// Patches applied to the compiled pipeline definition before it is submitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<Patch>,
}

impl ProviderSpec {
    /// The framework that a Pipeline's `spec.framework.name` names: the same name, or its
    /// lowercase form.
    pub fn framework(&self, name: &str) -> Option<&Framework> {
        self.frameworks.iter().find(|f| f.name == name || f.name == name.to_lowercase())
    }
}

/// A patch of a compiled pipeline definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Patch {
    /// `json` (RFC 6902) or `merge` (RFC 7386).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::optional::<PatchType>")]
    pub patch_type: Option<PatchType>,
    /// The patch document, as a JSON string.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub payload: String,
}

/// The kind of a patch document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PatchType {
    Json,
    Merge,
}
