//! The CustomResourceDefinitions generated from the types, and their YAML rendering for
//! `kfp-operator crd` and the committed `crds/` directory.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSON, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use super::{Experiment, Pipeline, Provider, Run, RunConfiguration, RunSchedule};

/// Every CRD the operator serves, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        Experiment::crd(),
        Pipeline::crd(),
        Provider::crd(),
        RunConfiguration::crd(),
        Run::crd(),
        RunSchedule::crd(),
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
