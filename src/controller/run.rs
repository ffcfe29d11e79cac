//! The Run reconciler: completion bookkeeping and TTL deletion, the immutability check, the
//! dependency snapshot (pipeline version and referenced RunConfigurations' latest runs),
//! parameter resolution, and then the shared provider synchronisation.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::pipeline_version::{ObservedPipeline, observe_pipeline};
use super::sync::{Synced, reconcile_synced};
use super::{Context, Error};
use crate::api::conditions::{DEPENDENCIES_RESOLVED, READY, SYNCHRONIZED, new_condition, set_condition};
use crate::api::{
    NamespacedName, Pipeline, Provider, Run, RunConfiguration, RunReference, RunStatus, Status, hash,
};
use crate::provider::{ResourceKind, definitions};
use crate::triggers::dependencies::{dependency_map, resolve_parameters};

impl Synced for Run {
    const RESOURCE: ResourceKind = ResourceKind::Run;
    const STATUS_WRITTEN_BY_OTHERS: &'static [&'static str] = &["completionState"];
    fn provider_ref(&self) -> &NamespacedName {
        &self.spec.provider
    }
    fn sync_status(&self) -> Option<&Status> {
        self.status.as_ref().map(|s| &s.status)
    }
    fn version(&self) -> String {
        let observed = self.status.as_ref().map_or("", |s| s.dependencies.pipeline.version.as_str());
        hash::run_version(&self.spec, observed)
    }
    fn definition(&self, _: &Provider) -> Result<Value, definitions::DefinitionError> {
        definitions::run(self, &[])
    }
    fn status_body(&self, status: Status) -> Value {
        let current = self.status.clone().unwrap_or_default();
        owned_status(&RunStatus { status, ..current })
    }
    /// A Run is also reconciled when its completion is recorded (by the completion path).
    fn reconcile_trigger(&self) -> Option<u64> {
        super::lifecycle_hash(self, self.status.as_ref().map(|s| s.completion_state))
    }
}

/// The part of a Run's status the reconciler owns (everything but `completionState`).
fn owned_status(status: &RunStatus) -> Value {
    let mut body = json!(RunStatus { completion_state: None, ..status.clone() });
    if let Some(object) = body.as_object_mut() {
        object.remove("completionState");
    }
    body
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

fn condition(type_: &str, status: bool, reason: &str, message: &str, generation: Option<i64>) -> Condition {
    new_condition(type_, if status { "True" } else { "False" }, reason, message, generation)
}

async fn write_run_status(ctx: &Context, run: &Run, status: &RunStatus) -> Result<(), Error> {
    if run.status.as_ref() == Some(status) {
        return Ok(());
    }
    ctx.patch_status(run, &owned_status(status), Run::STATUS_WRITTEN_BY_OTHERS).await
}

/// The pipeline version a run should record: the pinned one, or the Pipeline's synchronised
/// version; otherwise why it waits.
async fn observed_pipeline_version(ctx: &Context, run: &Run) -> Result<Result<String, String>, Error> {
    let pipeline = &run.spec.pipeline;
    let namespace = run.namespace().unwrap_or_default();
    Ok(match observe_pipeline(ctx, &namespace, pipeline).await? {
        ObservedPipeline::Version(version) => Ok(version),
        ObservedPipeline::Missing => Err(format!("pipeline {namespace}/{} does not exist", pipeline.name)),
        ObservedPipeline::Waiting(state) => {
            Err(format!("pipeline {namespace}/{} is {state}, waiting for it to be Succeeded", pipeline.name))
        }
    })
}

async fn latest_succeeded_runs(
    ctx: &Context,
    run: &Run,
) -> Result<Vec<(NamespacedName, Option<RunReference>)>, Error> {
    let namespace = run.namespace().unwrap_or_default();
    let mut found = Vec::new();
    for reference in crate::triggers::dependencies::referenced_run_configurations(&run.spec.parameters, &[]) {
        let qualified = reference.qualified(&namespace);
        let api: Api<RunConfiguration> = Api::namespaced(ctx.client.clone(), &qualified.namespace);
        let latest = api.get_opt(&qualified.name).await?.and_then(|rc| rc.status?.latest_runs.succeeded);
        found.push((qualified, latest));
    }
    Ok(found)
}

pub async fn reconcile(run: Arc<Run>, ctx: Arc<Context>) -> Result<Action, Error> {
    let run = run.as_ref();
    if run.meta().deletion_timestamp.is_some() {
        return reconcile_synced(run, &ctx, None).await;
    }
    let generation = run.meta().generation;
    let mut status = run.status.clone().unwrap_or_default();

    if status.completion_state.is_some() && status.marked_completed_at.is_none() {
        status.marked_completed_at = Some(now());
        write_run_status(&ctx, run, &status).await?;
        return Ok(ctx.config.run_completion_ttl.map_or_else(Action::await_change, Action::requeue));
    }
    let mut requeue_for_ttl = None;
    if let (Some(ttl), Some(marked)) = (ctx.config.run_completion_ttl, &status.marked_completed_at) {
        let elapsed = jiff::Timestamp::now().duration_since(marked.0);
        let ttl_signed = jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::MAX);
        if elapsed >= ttl_signed {
            let api: Api<Run> = Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
            api.delete(&run.name_any(), &DeleteParams::default()).await?;
            ctx.event(
                run,
                false,
                "Expired",
                format!("completed run deleted after its TTL of {}s", ttl.as_secs()),
            )
            .await;
            return Ok(Action::await_change());
        }
        requeue_for_ttl = Some(Duration::try_from(ttl_signed - elapsed).unwrap_or(ttl));
    }

    if generation.is_some_and(|g| g > 1) {
        let message = format!(
            "the spec of a Run cannot change after creation (it is at generation {}); delete the Run and create a new one",
            generation.unwrap_or_default()
        );
        return refuse(&ctx, run, status, "SpecImmutable", message).await;
    }
    if let Some(message) = crate::api::filter::invalid_artifact_filter(&run.spec.artifacts) {
        return refuse(&ctx, run, status, "InvalidSpec", message).await;
    }

    let namespace = run.namespace().unwrap_or_default();
    if status.dependencies.pipeline.is_empty() {
        let latest = latest_succeeded_runs(&ctx, run).await?;
        status.dependencies.run_configurations =
            dependency_map(&run.spec.parameters, &[], &namespace, |reference| {
                latest.iter().find(|(name, _)| name == reference).and_then(|(_, latest)| latest.clone())
            });
        match observed_pipeline_version(&ctx, run).await? {
            Ok(version) => {
                status.dependencies.pipeline.version = version;
                set_condition(
                    &mut status.status.conditions,
                    condition(
                        DEPENDENCIES_RESOLVED,
                        true,
                        "Resolved",
                        "the pipeline version and dependencies are known",
                        generation,
                    ),
                );
            }
            Err(waiting) => {
                set_condition(
                    &mut status.status.conditions,
                    condition(DEPENDENCIES_RESOLVED, false, "WaitingForPipeline", &waiting, generation),
                );
                write_run_status(&ctx, run, &status).await?;
                return Ok(Action::requeue(ctx.config.retry_max_delay));
            }
        }
    }

    let resolved = match resolve_parameters(&run.spec.parameters, &status.dependencies.run_configurations) {
        Ok(resolved) => resolved,
        Err(message) => {
            set_condition(
                &mut status.status.conditions,
                condition(DEPENDENCIES_RESOLVED, false, "UnresolvedParameters", &message, generation),
            );
            write_run_status(&ctx, run, &status).await?;
            return Ok(Action::requeue(ctx.config.retry_max_delay));
        }
    };
    for name in &resolved.unresolved_optional {
        tracing::debug!(run = %run.name_any(), parameter = %name, "optional parameter left out");
    }
    // The dependency snapshot is written with the synchronisation's first status write.
    let mut observed = run.clone();
    observed.status = Some(status);
    let definition = definitions::run(&observed, &resolved.values)?;
    let action = reconcile_synced(&observed, &ctx, Some(definition)).await?;
    Ok(match requeue_for_ttl {
        Some(remaining) => Action::requeue(remaining),
        None => action,
    })
}

/// Marks the run Failed with `message` and a Warning Event, without submitting it.
async fn refuse(
    ctx: &Context,
    run: &Run,
    mut status: RunStatus,
    reason: &str,
    message: String,
) -> Result<Action, Error> {
    let generation = run.meta().generation;
    set_condition(
        &mut status.status.conditions,
        condition(SYNCHRONIZED, false, "Failed", &message, generation),
    );
    set_condition(&mut status.status.conditions, condition(READY, false, "Failed", &message, generation));
    if run.status.as_ref() != Some(&status) {
        ctx.event(run, true, reason, message).await;
    }
    write_run_status(ctx, run, &status).await?;
    Ok(Action::await_change())
}

/// Runs the Run controller over the objects of `feed`. Pipelines and RunConfigurations
/// changing wake the runs still waiting on them.
pub async fn run_controller(
    ctx: Arc<Context>,
    feed: super::Feed<Run>,
    pipelines: super::Feed<Pipeline>,
    run_configurations: super::Feed<RunConfiguration>,
    shutdown: crate::shutdown::Shutdown,
) {
    let controller = super::lean_controller(&ctx, feed, |run: &Run| run.reconcile_trigger());
    let store = controller.store();
    let waiting_runs = move |matches: Box<dyn Fn(&Run) -> bool + Send>| {
        store
            .state()
            .into_iter()
            .filter(|run| run.status.as_ref().is_none_or(|s| s.dependencies.pipeline.is_empty()))
            .filter(|run| matches(run))
            .map(|run| ObjectRef::from_obj(run.as_ref()))
            .collect::<Vec<_>>()
    };
    let waiting_for_rc = waiting_runs.clone();
    let controller = controller
        .watches_stream(super::changed(pipelines), move |pipeline: Pipeline| {
            let namespace = pipeline.namespace();
            let name = pipeline.name_any();
            waiting_runs(Box::new(move |run: &Run| {
                run.namespace() == namespace && run.spec.pipeline.name == name
            }))
        })
        .watches_stream(super::changed(run_configurations), move |rc: RunConfiguration| {
            let target = NamespacedName::new(rc.namespace().unwrap_or_default(), rc.name_any());
            waiting_for_rc(Box::new(move |run: &Run| {
                let namespace = run.namespace().unwrap_or_default();
                crate::triggers::dependencies::referenced_run_configurations(&run.spec.parameters, &[])
                    .iter()
                    .any(|reference| reference.qualified(&namespace) == target)
            }))
        })
        .graceful_shutdown_on(shutdown);
    super::drain(
        controller.run(reconcile, super::sync::error_policy::<Run>, ctx.clone()),
        "run",
        ctx.metrics.clone(),
    )
    .await;
}
