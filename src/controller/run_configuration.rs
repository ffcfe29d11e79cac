//! The RunConfiguration reconciler, host of the trigger engine: validates the spec (artifact
//! filters, dependency cycles, the cross-namespace policy), observes the pipeline version and
//! the depended-on RunConfigurations' latest successful runs, resolves parameters, creates the
//! Runs its triggers call for (with deterministic names, so a repeat hits AlreadyExists), keeps
//! one owned RunSchedule per schedule, and writes one status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::dependencies::{dependency_map, referenced_run_configurations, resolve_parameters};
use super::state::{READY, SYNCHRONIZED, SyncState, new_condition, set_condition};
use super::{Context, Error};
use crate::api::{
    NamedValue, NamespacedName, Parameter, Pipeline, PipelineIdentifier, Run, RunConfiguration,
    RunConfigurationStatus, RunSchedule, RunScheduleSpec, RunSpec, hash,
};
use crate::provider::definitions::labels;
use crate::triggers::{DecisionInput, DependencyGraph, check_reference, cycle_suppressed, decide};

/// Says whether all dependencies of a RunConfiguration are known.
pub const DEPENDENCIES_RESOLVED: &str = "DependenciesResolved";
/// Says whether a RunConfiguration is part of a dependency cycle.
pub const DEPENDENCY_CYCLE: &str = "DependencyCycle";

/// The reconciler's context: the shared one plus the RunConfiguration cache.
pub struct RcContext {
    pub ctx: Arc<Context>,
    pub store: Store<RunConfiguration>,
    /// The RunSchedules owned by RunConfigurations, from a watch.
    pub schedules: Store<RunSchedule>,
}

/// A RunConfiguration from the cache, or from the API when the cache does not cover its
/// namespace (the operator may watch several namespaces, one controller each).
async fn lookup(
    ctx: &Context,
    store: &Store<RunConfiguration>,
    name: &NamespacedName,
) -> Result<Option<Arc<RunConfiguration>>, Error> {
    if let Some(found) = store.get(&ObjectRef::new(&name.name).within(&name.namespace)) {
        return Ok(Some(found));
    }
    let api: Api<RunConfiguration> = Api::namespaced(ctx.client.clone(), &name.namespace);
    Ok(api.get_opt(&name.name).await?.map(Arc::new))
}

/// The pipeline version to observe: pinned, the Pipeline's synchronised version, "" when it is
/// gone, or the stored one while it is between states.
async fn pipeline_version(
    ctx: &Context,
    namespace: &str,
    pipeline: &PipelineIdentifier,
    stored: &str,
) -> Result<String, Error> {
    if !pipeline.version.is_empty() {
        return Ok(pipeline.version.clone());
    }
    if pipeline.name.is_empty() {
        return Ok(String::new());
    }
    let api: Api<Pipeline> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(match api.get_opt(&pipeline.name).await? {
        None => String::new(),
        Some(found) => {
            let status = found.status.unwrap_or_default();
            match SyncState::of(&status) {
                SyncState::Succeeded => status.version,
                SyncState::Deleted => String::new(),
                _ => stored.to_owned(),
            }
        }
    })
}

/// The Run a trigger creates: the template with resolved parameters, owned by the RC.
fn triggered_run(
    rc: &RunConfiguration,
    name: String,
    labels: BTreeMap<String, String>,
    values: &[NamedValue],
) -> Run {
    let spec = RunSpec {
        parameters: values.iter().map(|v| Parameter::literal(&v.name, &v.value)).collect(),
        ..rc.spec.run.clone()
    };
    Run {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: rc.namespace(),
            labels: Some(labels),
            owner_references: rc.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

/// The RunSchedules the RC's schedules call for, by deterministic name.
fn desired_schedules(
    rc: &RunConfiguration,
    pipeline_version: &str,
    values: &[NamedValue],
) -> BTreeMap<String, RunSchedule> {
    let rc_name = rc.name_any();
    rc.spec
        .triggers
        .schedules
        .iter()
        .map(|schedule| {
            let spec = RunScheduleSpec {
                provider: rc.spec.run.provider.clone(),
                pipeline: PipelineIdentifier::new(&rc.spec.run.pipeline.name, pipeline_version),
                experiment_name: rc.spec.run.experiment_name.clone(),
                parameters: values.to_vec(),
                artifacts: rc.spec.run.artifacts.clone(),
                schedule: schedule.clone(),
            };
            let version = hash::run_schedule_version(&spec);
            let mut prefix: String = rc_name.chars().take(50).collect();
            prefix = prefix.trim_end_matches('-').to_owned();
            let name = format!("{prefix}-{version}");
            let schedule = RunSchedule {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: rc.namespace(),
                    labels: Some(BTreeMap::from([(labels::RUN_CONFIGURATION.to_owned(), rc_name.clone())])),
                    owner_references: rc.controller_owner_ref(&()).map(|o| vec![o]),
                    ..ObjectMeta::default()
                },
                spec,
                status: None,
            };
            (name, schedule)
        })
        .collect()
}

/// Makes the owned RunSchedules match `desired` and returns their aggregate state and message.
async fn sync_schedules(
    ctx: &Context,
    schedules: &Store<RunSchedule>,
    rc: &RunConfiguration,
    desired: BTreeMap<String, RunSchedule>,
) -> Result<(SyncState, String), Error> {
    let namespace = rc.namespace().unwrap_or_default();
    let api: Api<RunSchedule> = Api::namespaced(ctx.client.clone(), &namespace);
    let uid = rc.uid();
    let owned: Vec<Arc<RunSchedule>> = schedules
        .state()
        .into_iter()
        .filter(|s| s.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|s| s.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref()))
        .collect();
    let mut states = Vec::new();
    for existing in &owned {
        let name = existing.name_any();
        if !desired.contains_key(&name) && existing.meta().deletion_timestamp.is_none() {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        } else if desired.contains_key(&name) {
            states.push(existing.status.clone().unwrap_or_default());
        }
    }
    for (name, schedule) in &desired {
        if !owned.iter().any(|s| s.name_any() == *name) {
            match api.create(&PostParams::default(), schedule).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => return Err(error.into()),
            }
            states.push(Default::default());
        }
    }
    let waiting = "waiting for all owned RunSchedules to be Succeeded".to_owned();
    Ok(if states.iter().any(|s| !matches!(SyncState::of(s), SyncState::Succeeded | SyncState::Failed)) {
        (SyncState::Updating, waiting)
    } else if let Some(failed) = states.iter().find(|s| SyncState::of(s) == SyncState::Failed) {
        let message = failed.conditions.iter().find(|c| c.type_ == SYNCHRONIZED).map(|c| c.message.clone());
        (SyncState::Failed, message.unwrap_or_else(|| "a RunSchedule failed".into()))
    } else {
        (SyncState::Succeeded, super::state::default_message("Succeeded"))
    })
}

pub async fn reconcile(rc: Arc<RunConfiguration>, rc_ctx: Arc<RcContext>) -> Result<Action, Error> {
    let ctx = &rc_ctx.ctx;
    let rc = rc.as_ref();
    if rc.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = rc.namespace().unwrap_or_default();
    let name = NamespacedName::new(&namespace, rc.name_any());
    let generation = rc.meta().generation;
    let previous = rc.status.clone().unwrap_or_default();
    let mut status = RunConfigurationStatus {
        provider: Some(rc.spec.run.provider.clone()),
        observed_generation: generation,
        ..previous.clone()
    };

    // Validation: artifact filters, cycles, the cross-namespace policy.
    let mut problems: Vec<(&str, String)> = Vec::new();
    if let Some(message) = super::run::invalid_artifact_filter(&rc.spec.run.artifacts) {
        problems.push(("InvalidSpec", message));
    }
    let all = rc_ctx.store.state();
    let graph = DependencyGraph::from_run_configurations(all.iter().map(|rc| rc.as_ref()));
    let mut suppressed = cycle_suppressed(&graph, &name, &rc.spec.triggers.run_configurations);
    match graph.in_cycle(&name) {
        Some(cycle) => {
            let members = cycle.iter().map(ToString::to_string).collect::<Vec<_>>().join(" → ");
            let message = format!("part of a dependency cycle ({members}); no run fires along it");
            set_condition(
                &mut status.conditions,
                new_condition(DEPENDENCY_CYCLE, "True", "CycleDetected", &message, generation),
            );
        }
        None => set_condition(
            &mut status.conditions,
            new_condition(DEPENDENCY_CYCLE, "False", "NoCycle", "no dependency cycle", generation),
        ),
    }
    let mut denied = BTreeSet::new();
    let mut found = BTreeMap::new();
    for reference in
        referenced_run_configurations(&rc.spec.run.parameters, &rc.spec.triggers.run_configurations)
    {
        let dependency = reference.qualified(&namespace);
        let dependency_rc = lookup(ctx, &rc_ctx.store, &dependency).await?;
        let annotations = dependency_rc.as_ref().map(|d| d.annotations().clone());
        found.insert(dependency.clone(), dependency_rc);
        if let Err(message) =
            check_reference(ctx.config.cross_namespace_policy, &name, &dependency, annotations.as_ref())
        {
            suppressed.insert(reference.to_string());
            denied.insert(dependency);
            problems.push(("DependencyDenied", message));
        }
    }

    // Observed state: pipeline version and dependencies' latest successful runs.
    status.dependencies.pipeline.version =
        pipeline_version(ctx, &namespace, &rc.spec.run.pipeline, &previous.dependencies.pipeline.version)
            .await?;
    status.dependencies.run_configurations = dependency_map(
        &rc.spec.run.parameters,
        &rc.spec.triggers.run_configurations,
        &namespace,
        |reference| {
            if denied.contains(reference) {
                return None;
            }
            found.get(reference).cloned().flatten().and_then(|d| d.status.clone()?.latest_runs.succeeded)
        },
    );
    let resolution = resolve_parameters(&rc.spec.run.parameters, &status.dependencies.run_configurations);
    let hold = resolution.is_err() || !problems.is_empty();
    let values = match &resolution {
        Ok(resolved) => resolved.values.clone(),
        Err(_) => rc
            .spec
            .run
            .parameters
            .iter()
            .filter(|p| p.value_from.is_none())
            .map(|p| NamedValue::new(&p.name, &p.value))
            .collect(),
    };
    let dependencies_message =
        match (&resolution, problems.iter().find(|(reason, _)| *reason == "DependencyDenied")) {
            (_, Some((_, message))) => Some(("DependencyDenied", message.clone())),
            (Err(message), None) => Some(("UnresolvedParameters", message.clone())),
            (Ok(_), None) => None,
        };
    match &dependencies_message {
        Some((reason, message)) => {
            set_condition(
                &mut status.conditions,
                new_condition(DEPENDENCIES_RESOLVED, "False", reason, message, generation),
            );
        }
        None => set_condition(
            &mut status.conditions,
            new_condition(
                DEPENDENCIES_RESOLVED,
                "True",
                "Resolved",
                "all dependencies are resolved",
                generation,
            ),
        ),
    }

    // Triggers: create the Runs, then record what they acted upon.
    let decision = decide(
        &DecisionInput::new(&name, &rc.spec, &status, generation.unwrap_or_default())
            .held(hold)
            .suppressing(suppressed),
    );
    let runs: Api<Run> = Api::namespaced(ctx.client.clone(), &namespace);
    for trigger in &decision.fire {
        let run = triggered_run(rc, trigger.run_name(&name), trigger.labels(&rc.name_any()), &values);
        match runs.create(&PostParams::default(), &run).await {
            Ok(_) => {
                ctx.event(
                    rc,
                    false,
                    "RunCreated",
                    format!("created Run {} ({})", run.name_any(), trigger.kind.as_str()),
                )
                .await;
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::debug!(run = %run.name_any(), "the triggered run exists already");
            }
            Err(error) => return Err(error.into()),
        }
    }
    status.triggers = decision.new_status;

    // Schedules keep syncing even while dependencies are unresolved.
    let (state, message) = match problems.iter().find(|(reason, _)| *reason == "InvalidSpec") {
        Some((_, message)) => (SyncState::Failed, message.clone()),
        None => {
            sync_schedules(
                ctx,
                &rc_ctx.schedules,
                rc,
                desired_schedules(rc, &status.dependencies.pipeline.version, &values),
            )
            .await?
        }
    };
    let ready = state == SyncState::Succeeded && dependencies_message.is_none();
    set_condition(
        &mut status.conditions,
        new_condition(SYNCHRONIZED, state.condition_status(), state.as_str(), &message, generation),
    );
    let ready_message = dependencies_message.as_ref().map_or(message.as_str(), |(_, m)| m.as_str());
    set_condition(
        &mut status.conditions,
        new_condition(
            READY,
            if ready { "True" } else { "False" },
            if ready { "Succeeded" } else { "NotReady" },
            ready_message,
            generation,
        ),
    );

    if status != previous {
        let mut body = serde_json::to_value(&status).map_err(|e| Error::Invalid(e.to_string()))?;
        if let Some(object) = body.as_object_mut() {
            object.remove("latestRuns");
        }
        ctx.apply_status(rc, &body).await?;
        if SyncState::of_conditions(&previous.conditions) != Some(state) && state == SyncState::Failed {
            ctx.event(rc, true, "SyncFailed", message.clone()).await;
        }
    }
    ctx.succeeded(rc);
    Ok(Action::requeue(ctx.config.resync_period))
}

fn error_policy(rc: Arc<RunConfiguration>, error: &Error, rc_ctx: Arc<RcContext>) -> Action {
    tracing::warn!(name = %rc.name_any(), category = error.category(), %error, "runconfiguration reconcile failed");
    rc_ctx.ctx.metrics.failed("runconfiguration", error.category());
    Action::requeue(rc_ctx.ctx.backoff(rc.as_ref()))
}

/// Runs the RunConfiguration controller over the `index`-th configured namespace. A change of
/// a RunConfiguration wakes those depending on it; a Pipeline change wakes those running it.
pub async fn run_controller(ctx: Arc<Context>, index: usize, shutdown: super::Shutdown) {
    let Some(api) = super::apis::<RunConfiguration>(&ctx.client, &ctx.config).into_iter().nth(index) else {
        return;
    };
    let controller = Controller::new(api.clone(), super::watcher_config())
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency));
    let store = controller.store();
    let dependants_store = store.clone();
    let pipeline_store = store.clone();
    let dependants_of = move |changed: RunConfiguration| {
        let changed = NamespacedName::new(changed.namespace().unwrap_or_default(), changed.name_any());
        dependants_store
            .state()
            .into_iter()
            .filter(|rc| {
                let namespace = rc.namespace().unwrap_or_default();
                referenced_run_configurations(&rc.spec.run.parameters, &rc.spec.triggers.run_configurations)
                    .iter()
                    .any(|reference| reference.qualified(&namespace) == changed)
            })
            .map(|rc| ObjectRef::from_obj(rc.as_ref()))
            .collect::<Vec<_>>()
    };
    // Dependencies may live in any watched namespace.
    let mut controller = controller;
    drop(api);
    for dependencies in super::apis::<RunConfiguration>(&ctx.client, &ctx.config) {
        controller = controller.watches(dependencies, super::watcher_config(), dependants_of.clone());
    }
    if let Some(pipelines) = super::apis::<Pipeline>(&ctx.client, &ctx.config).into_iter().nth(index) {
        controller = controller.watches(pipelines, super::watcher_config(), move |pipeline: Pipeline| {
            let namespace = pipeline.namespace();
            let name = pipeline.name_any();
            pipeline_store
                .state()
                .into_iter()
                .filter(|rc| rc.namespace() == namespace && rc.spec.run.pipeline.name == name)
                .map(|rc| ObjectRef::from_obj(rc.as_ref()))
                .collect::<Vec<_>>()
        });
    }
    let (schedules, schedules_writer) = kube::runtime::reflector::store();
    if let Some(api) = super::apis::<RunSchedule>(&ctx.client, &ctx.config).into_iter().nth(index) {
        controller = controller.owns(api.clone(), super::watcher_config());
        let owned = super::watcher_config().labels(labels::RUN_CONFIGURATION);
        let reflector = kube::runtime::reflector(schedules_writer, kube::runtime::watcher(api, owned));
        tokio::spawn(
            kube::runtime::WatchStreamExt::default_backoff(reflector).for_each(|_| std::future::ready(())),
        );
        let _ = schedules.wait_until_ready().await;
    }
    let metrics = ctx.metrics.clone();
    let rc_ctx = Arc::new(RcContext { ctx, store, schedules });
    let controller = controller.graceful_shutdown_on(shutdown);
    super::drain(controller.run(reconcile, error_policy, rc_ctx), "runconfiguration", metrics).await;
}

/// Records a successful run as a RunConfiguration's latest, unless a later-ending one is
/// recorded already. Returns false when the RunConfiguration does not exist.
pub async fn record_latest_succeeded(
    client: &kube::Client,
    rc: &NamespacedName,
    latest: crate::api::RunReference,
) -> Result<bool, kube::Error> {
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
        let body = json!({
            "apiVersion": RunConfiguration::api_version(&()),
            "kind": "RunConfiguration",
            "metadata": { "resourceVersion": current.resource_version() },
            "status": { "latestRuns": { "succeeded": latest } },
        });
        let params = PatchParams::apply(super::run::COMPLETION_FIELD_MANAGER).force();
        match api.patch_status(&rc.name, &params, &Patch::Apply(body)).await {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(error),
        }
    }
    Err(kube::Error::Api(Box::new(kube::core::Status::failure(
        &format!("RunConfiguration {rc} kept changing while recording its latest run"),
        "Conflict",
    ))))
}
