//! Every generated file of the installation in one list: what `kfp-operator manifests
//! --write-files .` writes and a test holds the repository to.

use super::chart;
use super::deploy::{self, GENERATED};

/// Every generated file of the installation, by path relative to the repository: the kustomize
/// base `deploy/base/`, the overlays `deploy/overlays/{local,monitoring,network-policy}/` and the
/// Helm chart `charts/kfp-operator/`.
pub fn generated_files() -> anyhow::Result<Vec<(String, String)>> {
    let mut crds = String::new();
    for crd in crate::api::crd::all() {
        crds.push_str("---\n");
        crds.push_str(&crate::api::crd::to_yaml(&crd)?);
    }
    let mut files = vec![
        (
            "deploy/base/kustomization.yaml".to_owned(),
            format!(
                "{GENERATED}\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- crds.yaml\n- kfp-operator.yaml\n"
            ),
        ),
        ("deploy/base/crds.yaml".to_owned(), format!("{GENERATED}\n{crds}")),
        (
            "deploy/base/kfp-operator.yaml".to_owned(),
            format!("{GENERATED}\n{}", deploy::Installation::default().to_yaml(true)?),
        ),
    ];
    files.push((
        "deploy/overlays/local/kustomization.yaml".into(),
        deploy::LocalOverlay::default().kustomization()?,
    ));
    files.extend(deploy::monitoring_overlay()?);
    files.extend(deploy::network_policy_overlay()?);
    files.extend(chart::files(GENERATED)?);
    Ok(files)
}
