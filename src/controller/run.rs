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
use super::{Context, Error, ErrorClass, Failure};
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

fn condition(type_: &str, status: bool, reason: &str, message: &str, generation: Option<i64>) -> Condition {
    new_condition(type_, if status { "True" } else { "False" }, reason, message, generation)
}

/// What a Run's reconcile read besides the Run. The dependencies are looked up only while the
/// Run has none recorded ([`needs_dependencies`]).
#[derive(Debug, Clone, Default)]
pub struct RunObservation {
    /// The pipeline version to record, or why there is none.
    pub pipeline: Option<Result<String, String>>,
    /// The referenced RunConfigurations' latest successful runs.
    pub latest: Vec<(NamespacedName, Option<RunReference>)>,
}

/// The one next step of a Run's reconcile (deletion aside, which is the shared synchronisation's).
#[derive(Debug, Clone, PartialEq)]
pub enum RunStep {
    /// Record when the completion was seen (the TTL counts from then); look again after `requeue`.
    MarkCompleted { status: RunStatus, requeue: Option<Duration> },
    /// The TTL since completion has passed: delete the Run.
    Expire { ttl: Duration },
    /// Write `status` and stop with `failure`: a refused spec (stalled) or unresolved
    /// dependencies (waiting).
    Stop { status: RunStatus, failure: Failure },
    /// Synchronise with the provider: the Run with its dependency snapshot in its status, the
    /// definition with the resolved parameters; with a TTL running, look again after `requeue`.
    Synchronize { run: Box<Run>, definition: Value, requeue: Option<Duration> },
}

/// Whether the reconcile has to look up the pipeline version and the referenced
/// RunConfigurations: only until they are recorded.
pub fn needs_dependencies(run: &Run) -> bool {
    run.status.as_ref().is_none_or(|s| s.dependencies.pipeline.is_empty())
}

/// Decides a Run's next step at `now` from the Run, what was observed, and the completed
/// Runs' TTL. Pure.
pub fn plan(run: &Run, observed: &RunObservation, ttl: Option<Duration>, now: jiff::Timestamp) -> RunStep {
    let generation = run.meta().generation;
    let mut status = run.status.clone().unwrap_or_default();

    if status.completion_state.is_some() && status.marked_completed_at.is_none() {
        status.marked_completed_at = Some(Time(now));
        return RunStep::MarkCompleted { status, requeue: ttl };
    }
    let mut requeue = None;
    if let (Some(ttl), Some(marked)) = (ttl, &status.marked_completed_at) {
        let elapsed = now.duration_since(marked.0);
        let ttl_signed = jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::MAX);
        if elapsed >= ttl_signed {
            return RunStep::Expire { ttl };
        }
        requeue = Some(Duration::try_from(ttl_signed - elapsed).unwrap_or(ttl));
    }

    let refuse = |mut status: RunStatus, failure: Failure| {
        for type_ in [SYNCHRONIZED, READY] {
            set_condition(
                &mut status.status.conditions,
                condition(type_, false, "Failed", &failure.message, generation),
            );
        }
        RunStep::Stop { status, failure }
    };
    if let Some(generation) = generation.filter(|g| *g > 1) {
        let message = format!(
            "the spec of a Run cannot change after creation (it is at generation {generation}); delete the Run \
             and create a new one"
        );
        return refuse(status, Failure::new(ErrorClass::Stalled, "SpecImmutable", message));
    }
    if let Some(message) = crate::api::filter::invalid_artifact_filter(&run.spec.artifacts) {
        return refuse(status, Failure::new(ErrorClass::Stalled, "InvalidSpec", message));
    }

    let wait = |mut status: RunStatus, category: &'static str, message: String| {
        set_condition(
            &mut status.status.conditions,
            condition(DEPENDENCIES_RESOLVED, false, category, &message, generation),
        );
        RunStep::Stop { status, failure: Failure::new(ErrorClass::Waiting, category, message) }
    };
    let namespace = run.namespace().unwrap_or_default();
    if status.dependencies.pipeline.is_empty() {
        status.dependencies.run_configurations =
            dependency_map(&run.spec.parameters, &[], &[], &namespace, |reference| {
                observed
                    .latest
                    .iter()
                    .find(|(name, _)| name == reference)
                    .and_then(|(_, latest)| latest.clone())
            });
        match observed.pipeline.clone() {
            Some(Ok(version)) => {
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
            Some(Err(waiting)) => return wait(status, "WaitingForPipeline", waiting),
            None => {
                return wait(status, "WaitingForPipeline", "the pipeline version is not known yet".into());
            }
        }
    }

    let resolved = match resolve_parameters(&run.spec.parameters, &status.dependencies.run_configurations) {
        Ok(resolved) => resolved,
        Err(message) => return wait(status, "UnresolvedParameters", message),
    };
    let mut prepared = run.clone();
    prepared.status = Some(status.clone());
    match definitions::run(&prepared, &resolved.values) {
        Ok(definition) => RunStep::Synchronize { run: Box::new(prepared), definition, requeue },
        Err(error) => refuse(
            status,
            Failure::new(super::error::definition_class(&error), "InvalidDefinition", error.to_string()),
        ),
    }
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

async fn observe(ctx: &Context, run: &Run) -> Result<RunObservation, Error> {
    if !needs_dependencies(run) {
        return Ok(RunObservation::default());
    }
    Ok(RunObservation {
        pipeline: Some(observed_pipeline_version(ctx, run).await?),
        latest: latest_succeeded_runs(ctx, run).await?,
    })
}

/// Writes the part of the status the reconciler owns, if it changed.
async fn write_run_status(ctx: &Context, run: &Run, status: &RunStatus) -> Result<bool, Error> {
    if run.status.as_ref() == Some(status) {
        return Ok(false);
    }
    ctx.patch_status(run, &owned_status(status), Run::STATUS_WRITTEN_BY_OTHERS).await?;
    Ok(true)
}

/// Reconciles a Run: observe (the Run as the API server holds it, and its dependencies while
/// they are not recorded) → [`plan`] → apply the step, with one status write.
pub async fn reconcile(run: Arc<Run>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(latest) = ctx.latest(run.as_ref()).await? else {
        return Ok(Action::await_change());
    };
    let run = &latest;
    if run.meta().deletion_timestamp.is_some() {
        return reconcile_synced(run, &ctx, None).await;
    }
    let observed = observe(&ctx, run).await?;
    match plan(run, &observed, ctx.config.run_completion_ttl, jiff::Timestamp::now()) {
        RunStep::MarkCompleted { status, requeue } => {
            write_run_status(&ctx, run, &status).await?;
            Ok(requeue.map_or_else(Action::await_change, Action::requeue))
        }
        RunStep::Expire { ttl } => {
            let api: Api<Run> = Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
            api.delete(&run.name_any(), &DeleteParams::default()).await?;
            let note = format!("completed run deleted after its TTL of {}s", ttl.as_secs());
            ctx.event(run, false, "Expired", note).await;
            Ok(Action::await_change())
        }
        RunStep::Stop { status, failure } => {
            if write_run_status(&ctx, run, &status).await? {
                let warning = failure.class == ErrorClass::Stalled;
                ctx.event(run, warning, failure.category, failure.message.clone()).await;
            }
            Err(Error::Recorded(failure))
        }
        RunStep::Synchronize { run: prepared, definition, requeue } => {
            // The dependency snapshot is written with the synchronisation's status write.
            let action = reconcile_synced(prepared.as_ref(), &ctx, Some(definition)).await?;
            Ok(requeue.map_or(action, Action::requeue))
        }
    }
}

/// What wakes the Runs still waiting for their dependencies.
pub struct Wakers {
    pub pipelines: super::Feed<Pipeline>,
    pub run_configurations: super::Feed<RunConfiguration>,
    pub providers: super::Feed<Provider>,
}

/// Runs the Run controller over the objects of `feed`. Pipelines and RunConfigurations
/// changing wake the Runs still waiting on them; Providers changing, the Runs not in step.
pub async fn run_controller(
    ctx: Arc<Context>,
    feed: super::Feed<Run>,
    wakers: Wakers,
    shutdown: crate::shutdown::Shutdown,
) {
    let queue = ctx.metrics.queue(&super::controller_name::<Run>());
    let controller = super::lean_controller(&ctx, feed, &queue, |run: &Run| run.reconcile_trigger());
    let store = controller.store();
    let provider_store = store.clone();
    let waiting_runs = move |matches: Box<dyn Fn(&Run) -> bool + Send>| {
        store
            .state()
            .into_iter()
            .filter(|run| needs_dependencies(run))
            .filter(|run| matches(run))
            .map(|run| ObjectRef::from_obj(run.as_ref()))
            .collect::<Vec<_>>()
    };
    let waiting_for_rc = waiting_runs.clone();
    let controller = controller
        .watches_stream(
            super::changed(wakers.pipelines),
            super::waking(&queue, move |pipeline: Pipeline| {
                let namespace = pipeline.namespace();
                let name = pipeline.name_any();
                waiting_runs(Box::new(move |run: &Run| {
                    run.namespace() == namespace && run.spec.pipeline.name == name
                }))
            }),
        )
        .watches_stream(
            super::changed(wakers.run_configurations),
            super::waking(&queue, move |rc: RunConfiguration| {
                let target = NamespacedName::new(rc.namespace().unwrap_or_default(), rc.name_any());
                waiting_for_rc(Box::new(move |run: &Run| {
                    let namespace = run.namespace().unwrap_or_default();
                    crate::triggers::dependencies::referenced_run_configurations(&run.spec.parameters, &[])
                        .iter()
                        .any(|reference| reference.qualified(&namespace) == target)
                }))
            }),
        )
        .watches_stream(
            super::changed(wakers.providers),
            super::waking(&queue, move |provider: Provider| {
                super::sync::waiting_on(&provider_store, &provider)
            }),
        )
        .graceful_shutdown_on(shutdown);
    let reconciler = super::instrumented(queue.clone(), reconcile);
    super::drain(controller.run(reconciler, super::error_policy, ctx.clone()), queue).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        Artifact, CompletionState, Parameter, PipelineIdentifier, RunConfigurationRef, RunSpec,
    };

    const TTL: Option<Duration> = Some(Duration::from_secs(60));

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn run(parameters: Vec<Parameter>) -> Run {
        let mut run = Run::new(
            "r",
            RunSpec {
                provider: NamespacedName::new("kfp", "stub"),
                pipeline: PipelineIdentifier::new("p", ""),
                parameters,
                ..RunSpec::default()
            },
        );
        run.metadata.namespace = Some("ml".into());
        run.metadata.generation = Some(1);
        run
    }

    fn with_dependency() -> Run {
        run(vec![Parameter::from_run_configuration(
            "model",
            RunConfigurationRef::new(NamespacedName::new("", "train"), "model"),
        )])
    }

    fn observed(pipeline: Result<&str, &str>, latest: Option<RunReference>) -> RunObservation {
        RunObservation {
            pipeline: Some(pipeline.map(str::to_owned).map_err(str::to_owned)),
            latest: vec![(NamespacedName::new("ml", "train"), latest)],
        }
    }

    fn success() -> RunReference {
        RunReference {
            provider_id: "train-1".into(),
            artifacts: vec![Artifact::new("model", "gs://models/1")],
            run_end_time: None,
        }
    }

    fn condition_of<'a>(status: &'a RunStatus, type_: &str) -> (&'a str, &'a str) {
        let found = status.status.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (found.status.as_str(), found.reason.as_str())
    }

    #[test]
    fn a_run_with_its_dependencies_is_synchronised_with_them_in_its_status() {
        let step = plan(&with_dependency(), &observed(Ok("v1"), Some(success())), TTL, at(0));
        let RunStep::Synchronize { run, definition, requeue } = step else { panic!("{step:?}") };
        let status = run.status.unwrap();
        assert_eq!(status.dependencies.pipeline.version, "v1");
        assert_eq!(status.dependencies.run_configurations["train"].provider_id, "train-1");
        assert_eq!(condition_of(&status, DEPENDENCIES_RESOLVED), ("True", "Resolved"));
        assert!(definition.to_string().contains("gs://models/1"), "{definition}");
        assert_eq!(requeue, None, "no TTL runs before completion");
    }

    #[test]
    fn a_missing_pipeline_or_an_unfinished_dependency_waits() {
        let step = plan(&with_dependency(), &observed(Err("pipeline ml/p does not exist"), None), TTL, at(0));
        let RunStep::Stop { status, failure } = step else { panic!("{step:?}") };
        assert_eq!((failure.class, failure.category), (ErrorClass::Waiting, "WaitingForPipeline"));
        assert_eq!(condition_of(&status, DEPENDENCIES_RESOLVED), ("False", "WaitingForPipeline"));

        let step = plan(&with_dependency(), &observed(Ok("v1"), None), TTL, at(0));
        let RunStep::Stop { failure, .. } = step else { panic!("{step:?}") };
        assert_eq!((failure.class, failure.category), (ErrorClass::Waiting, "UnresolvedParameters"));
    }

    #[test]
    fn a_changed_or_invalid_spec_stalls() {
        let mut changed = run(vec![]);
        changed.metadata.generation = Some(2);
        let RunStep::Stop { status, failure } = plan(&changed, &observed(Ok("v1"), None), TTL, at(0)) else {
            panic!()
        };
        assert_eq!((failure.class, failure.category), (ErrorClass::Stalled, "SpecImmutable"));
        assert_eq!(condition_of(&status, SYNCHRONIZED), ("False", "Failed"));
        assert_eq!(condition_of(&status, READY), ("False", "Failed"));

        let mut invalid = run(vec![]);
        invalid.spec.artifacts =
            vec![crate::api::OutputArtifact::new("model", crate::api::ArtifactPath::new("trainer", "model"))];
        invalid.spec.artifacts[0].path.filter = "x ==".into();
        let step = plan(&invalid, &observed(Ok("v1"), None), TTL, at(0));
        assert!(
            matches!(&step, RunStep::Stop { failure, .. } if failure.category == "InvalidSpec"),
            "{step:?}"
        );
    }

    #[test]
    fn a_completion_is_marked_then_expires_after_the_ttl() {
        let mut done = run(vec![]);
        done.status =
            Some(RunStatus { completion_state: Some(CompletionState::Succeeded), ..RunStatus::default() });
        let RunStep::MarkCompleted { status, requeue } = plan(&done, &RunObservation::default(), TTL, at(0))
        else {
            panic!()
        };
        assert_eq!(status.marked_completed_at, Some(Time(at(0))));
        assert_eq!(requeue, TTL);

        done.status = Some(status);
        done.status.as_mut().unwrap().dependencies.pipeline.version = "v1".into();
        let step = plan(&done, &RunObservation::default(), TTL, at(45));
        assert!(
            matches!(step, RunStep::Synchronize { requeue: Some(left), .. } if left == Duration::from_secs(15)),
            "{step:?}"
        );
        assert_eq!(
            plan(&done, &RunObservation::default(), TTL, at(60)),
            RunStep::Expire { ttl: Duration::from_secs(60) }
        );
        assert!(matches!(
            plan(&done, &RunObservation::default(), None, at(6000)),
            RunStep::Synchronize { requeue: None, .. }
        ));
    }

    #[test]
    fn dependencies_are_looked_up_only_until_recorded() {
        let mut recorded = run(vec![]);
        assert!(needs_dependencies(&recorded));
        recorded.status = Some(RunStatus::default());
        recorded.status.as_mut().unwrap().dependencies.pipeline.version = "v1".into();
        assert!(!needs_dependencies(&recorded));
    }
}
