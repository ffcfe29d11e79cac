//! The CustomResourceDefinitions generated from the types, and their YAML rendering for
//! `kfp-operator crd` and the committed `crds/` directory.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use super::{Experiment, Pipeline, Provider, Run, RunConfiguration, RunSchedule};

/// Every CRD the operator serves, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        Experiment::crd(),
        Pipeline::crd(),
        Provider::crd(),
        RunConfiguration::crd(),
        Run::crd(),
        RunSchedule::crd(),
    ]
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
