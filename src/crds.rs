//! Installing the operator's CRDs on a cluster and checking that they are served.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::api;

/// The field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "kfp-operator";

/// Why the CRDs are not usable.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("could not apply CRD {name}: {source}")]
    Apply { name: String, source: kube::Error },
    #[error("could not read CRD {name}: {source}")]
    Read { name: String, source: kube::Error },
    #[error(
        "CRD {name} is not installed; install it with `kfp-operator crd | kubectl apply -f -` or start with --install-crds"
    )]
    Missing { name: String },
    #[error("CRD {name} was not established within {seconds}s")]
    NotEstablished { name: String, seconds: u64 },
}

fn name_of(crd: &CustomResourceDefinition) -> String {
    crd.metadata.name.clone().unwrap_or_default()
}

fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Established" && c.status == "True"))
}

/// Server-side applies every CRD, then waits until all are established. With `conversion`
/// (a URL and a PEM CA bundle) the CRDs' conversion webhook is that URL, else the installed
/// operator's Service.
pub async fn install(
    client: &kube::Client,
    timeout: Duration,
    conversion: Option<(&str, &[u8])>,
) -> Result<(), CrdError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut all = api::crd::all();
    if let Some((url, ca)) = conversion {
        api::crd::with_conversion_url(&mut all, url, ca);
    }
    for crd in all {
        let name = name_of(&crd);
        crds.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(|source| CrdError::Apply { name: name.clone(), source })?;
    }
    wait_established(client, timeout).await
}

/// Waits until every CRD exists and is established.
pub async fn wait_established(client: &kube::Client, timeout: Duration) -> Result<(), CrdError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + timeout;
    for expected in api::crd::all() {
        let name = name_of(&expected);
        loop {
            let found = crds
                .get_opt(&name)
                .await
                .map_err(|source| CrdError::Read { name: name.clone(), source })?
                .ok_or_else(|| CrdError::Missing { name: name.clone() })?;
            if is_established(&found) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CrdError::NotEstablished { name, seconds: timeout.as_secs() });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
