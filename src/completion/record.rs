//! Where a completion is recorded: `completionState` on the Run, and the RunConfiguration's
//! `latestRuns.succeeded`, which only moves forward in run end time. Both are written with a
//! field manager of their own, apart from the reconcilers'.

use std::sync::Arc;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::error::CompletionError;
use crate::api::{CompletionState, NamespacedName, Run, RunConfiguration};
use crate::controller::Context;

/// The field manager of completion states, apart from the reconciler's.
pub const COMPLETION_FIELD_MANAGER: &str = "kfp-operator-completion";

/// Records that a run finished, as reported by a completion event. Returns false when the Run
/// does not exist.
pub async fn record_completion(
    client: &kube::Client,
    run: &NamespacedName,
    state: CompletionState,
) -> Result<bool, kube::Error> {
    let api: Api<Run> = Api::namespaced(client.clone(), &run.namespace);
    let body = json!({
        "apiVersion": Run::api_version(&()),
        "kind": "Run",
        "status": { "completionState": state },
    });
    match api
        .patch_status(&run.name, &PatchParams::apply(COMPLETION_FIELD_MANAGER).force(), &Patch::Apply(body))
        .await
    {
        Ok(_) => Ok(true),
        Err(error) if is_not_found(&error) => Ok(false),
        Err(error) => Err(error),
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Records a successful run as a RunConfiguration's latest, unless a later-ending one is
/// recorded already. With the trigger engine, the Runs of the RunConfigurations it triggers are
/// created first ([`super::fan_out`]), so that a crash in between repeats the fan-out (which
/// then finds the Runs) rather than losing it; `engine` comes with when the completion
/// arrived. Returns false when the RunConfiguration does not exist.
pub async fn record_latest_succeeded(
    client: &kube::Client,
    rc: &NamespacedName,
    latest: crate::api::RunReference,
    engine: Option<(&Arc<Context>, std::time::Instant)>,
) -> Result<bool, CompletionError> {
    let api: Api<RunConfiguration> = Api::namespaced(client.clone(), &rc.namespace);
    for _ in 0..5 {
        let Some(current) = api.get_opt(&rc.name).await? else {
            return Ok(false);
        };
        let stored = current.status.as_ref().and_then(|s| s.latest_runs.succeeded.clone());
        if let Some(stored) = &stored {
            let older = match (&stored.run_end_time, &latest.run_end_time) {
                (Some(stored_end), Some(new_end)) => new_end.0 <= stored_end.0,
                _ => false,
            };
            if stored.provider_id == latest.provider_id || older {
                return Ok(true);
            }
        }
        if let Some((ctx, received)) = engine {
            super::fan_out::fan_out(ctx, &current, &latest, received).await?;
        }
        let body = json!({
            "apiVersion": RunConfiguration::api_version(&()),
            "kind": "RunConfiguration",
            "metadata": { "resourceVersion": current.resource_version() },
            "status": { "latestRuns": { "succeeded": latest } },
        });
        let params = PatchParams::apply(COMPLETION_FIELD_MANAGER).force();
        match api.patch_status(&rc.name, &params, &Patch::Apply(body)).await {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(CompletionError::KeptChanging(rc.clone()))
}
