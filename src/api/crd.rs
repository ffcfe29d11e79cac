//! The CustomResourceDefinitions generated from the types, and their YAML rendering for
//! `kfp-operator crd` and the committed `crds/` directory.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceConversion, CustomResourceDefinition, JSON, JSONSchemaProps, JSONSchemaPropsOrArray,
    JSONSchemaPropsOrBool, ServiceReference, WebhookClientConfig, WebhookConversion,
};
use kube::CustomResourceExt;

use super::{Experiment, Pipeline, Provider, Run, RunConfiguration, RunSchedule, v1alpha5, v1alpha6};

/// Where the installed operator serves conversions: its Service's webhook port.
pub const CONVERSION_SERVICE: (&str, &str, i32) = ("kfp-operator-system", "kfp-operator", 9443);
/// The conversion webhook's path.
pub const CONVERSION_PATH: &str = "/convert";

/// `hub` serving also the versions of `spokes`, converted by the webhook. The spokes show the
/// hub's columns, but v1alpha5, which names no provider, shows the provider's id instead.
fn with_spokes(
    mut hub: CustomResourceDefinition,
    spokes: [CustomResourceDefinition; 2],
) -> CustomResourceDefinition {
    for spoke in spokes {
        for mut version in spoke.spec.versions {
            version.storage = false;
            let mut columns = hub.spec.versions.first().and_then(|v| v.additional_printer_columns.clone());
            if version.name == v1alpha5::VERSION {
                for column in columns.iter_mut().flatten() {
                    if column.json_path == ".status.provider.name" {
                        column.name = "ProviderId".into();
                        column.json_path = ".status.providerId".into();
                    }
                }
            }
            version.additional_printer_columns = columns;
            hub.spec.versions.push(version);
        }
    }
    let (namespace, name, port) = CONVERSION_SERVICE;
    hub.spec.conversion = Some(CustomResourceConversion {
        strategy: "Webhook".into(),
        webhook: Some(WebhookConversion {
            conversion_review_versions: vec!["v1".into()],
            client_config: Some(WebhookClientConfig {
                service: Some(ServiceReference {
                    namespace: namespace.into(),
                    name: name.into(),
                    path: Some(CONVERSION_PATH.into()),
                    port: Some(port),
                }),
                ..WebhookClientConfig::default()
            }),
        }),
    });
    hub
}

/// Points every CRD's conversion webhook at `url`, trusting `ca_bundle` (PEM).
pub fn with_conversion_url(crds: &mut [CustomResourceDefinition], url: &str, ca_bundle: &[u8]) {
    for crd in crds {
        if let Some(webhook) = crd.spec.conversion.as_mut().and_then(|c| c.webhook.as_mut()) {
            webhook.client_config = Some(WebhookClientConfig {
                url: Some(url.to_owned()),
                ca_bundle: Some(k8s_openapi::ByteString(ca_bundle.to_vec())),
                service: None,
            });
        }
    }
}

/// Every CRD the operator serves, in a stable order: `v1beta1` (stored) and the served
/// `v1alpha6` and `v1alpha5`.
pub fn all() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        with_spokes(Experiment::crd(), [v1alpha6::Experiment::crd(), v1alpha5::Experiment::crd()]),
        with_spokes(Pipeline::crd(), [v1alpha6::Pipeline::crd(), v1alpha5::Pipeline::crd()]),
        with_spokes(Provider::crd(), [v1alpha6::Provider::crd(), v1alpha5::Provider::crd()]),
        with_spokes(
            RunConfiguration::crd(),
            [v1alpha6::RunConfiguration::crd(), v1alpha5::RunConfiguration::crd()],
        ),
        with_spokes(Run::crd(), [v1alpha6::Run::crd(), v1alpha5::Run::crd()]),
        with_spokes(RunSchedule::crd(), [v1alpha6::RunSchedule::crd(), v1alpha5::RunSchedule::crd()]),
    ];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
                drop_structural_defaults(schema);
            }
        }
    }
    crds
}

/// Removes the `default`s the derive adds for `#[serde(default)]` objects, lists and empty
/// strings. The API server would apply them to stored objects (and rejects some of them as
/// invalid against the field's own schema); the types already default absent fields when read.
/// Meaningful scalar defaults (such as a Provider's `type: http`) stay.
fn drop_structural_defaults(schema: &mut JSONSchemaProps) {
    let trivial = schema.default.as_ref().is_some_and(|JSON(value)| match value {
        serde_json::Value::String(s) => s.is_empty(),
        serde_json::Value::Object(_) | serde_json::Value::Array(_) | serde_json::Value::Null => true,
        serde_json::Value::Bool(_) | serde_json::Value::Number(_) => false,
    });
    if trivial {
        schema.default = None;
    }
    for property in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        drop_structural_defaults(property);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        drop_structural_defaults(items);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = schema.additional_properties.as_mut() {
        drop_structural_defaults(values);
    }
}

/// The file name of a CRD in `crds/`: `<group>_<plural>.yaml`, as the reference names them.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// One CRD as a YAML document.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string(crd)
}

/// All CRDs as one multi-document YAML stream.
pub fn all_to_yaml() -> Result<String, serde_saphyr::ser::Error> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&to_yaml(&crd)?);
    }
    Ok(out)
}
