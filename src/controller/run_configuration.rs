//! The RunConfiguration reconciler, host of the trigger engine: validates the spec (artifact
//! filters, dependency cycles, the cross-namespace policy), observes the pipeline version and
//! the depended-on RunConfigurations' latest successful runs, resolves parameters, creates the
//! Runs its triggers call for (with deterministic names, so a repeat hits AlreadyExists), keeps
//! one owned RunSchedule per schedule, and writes one status.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt, predicates};
use kube::{Resource, ResourceExt};
use sha1::{Digest, Sha1};

use super::pipeline_version::{ObservedPipeline, observe_pipeline};
use super::{Context, Error};
use crate::api::conditions::{READY, SYNCHRONIZED, SyncState, new_condition, set_condition};
use crate::api::labels;
use crate::api::{
    NamedValue, NamespacedName, Pipeline, PipelineIdentifier, Run, RunConfiguration, RunSchedule,
    RunScheduleSpec, Status, hash,
};
use crate::triggers::dependencies::referenced_run_configurations;
use crate::triggers::evaluation::{Evaluation, Observed, evaluate, triggered_run};
use crate::triggers::{ActiveRun, qualified_name};

/// The reconciler's context: the shared one plus the owned RunSchedules.
pub struct RcContext {
    pub ctx: Arc<Context>,
    /// The RunSchedules owned by RunConfigurations, from a watch.
    pub schedules: Store<RunSchedule>,
}

/// A RunConfiguration from the shared index, or from the API when the index does not hold it
/// (its namespace is not watched, the watch is still listing, or it does not exist).
async fn lookup(ctx: &Context, name: &NamespacedName) -> Result<Option<Arc<RunConfiguration>>, Error> {
    if let Some(found) = ctx.index.get(name) {
        return Ok(Some(found));
    }
    let api: Api<RunConfiguration> = Api::namespaced(ctx.client.clone(), &name.namespace);
    Ok(api.get_opt(&name.name).await?.map(Arc::new))
}

/// The pipeline version to observe (pinned, the Pipeline's synchronised version, "" when it is
/// gone, or the stored one while it is between states), and what is wrong with the Pipeline
/// when there is no version to run.
async fn pipeline_version(
    ctx: &Context,
    namespace: &str,
    pipeline: &PipelineIdentifier,
    stored: &str,
) -> Result<(String, Option<(&'static str, String)>), Error> {
    let name = format!("{namespace}/{}", pipeline.name);
    Ok(match observe_pipeline(ctx, namespace, pipeline).await? {
        ObservedPipeline::Version(version) => (version, None),
        ObservedPipeline::Missing => {
            (String::new(), Some(("PipelineNotFound", format!("pipeline {name} does not exist"))))
        }
        ObservedPipeline::Waiting(SyncState::Deleted) => {
            (String::new(), Some(("PipelineNotFound", format!("pipeline {name} is deleted"))))
        }
        ObservedPipeline::Waiting(_) if !stored.is_empty() => (stored.to_owned(), None),
        ObservedPipeline::Waiting(state) => (
            String::new(),
            Some((
                "PipelineNotSynchronized",
                format!("pipeline {name} has no synchronised version yet (it is {state})"),
            )),
        ),
    })
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
            // The reference's version leaves the provider out; it is part of the name so that a
            // provider change replaces the schedule (deleted through the provider that made it).
            let digest: [u8; 20] = Sha1::new()
                .chain_update(hash::run_schedule_version(&spec))
                .chain_update([0])
                .chain_update(spec.provider.to_string())
                .finalize()
                .into();
            let version = hash::short_version(&digest);
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

/// What keeping the owned RunSchedules in step takes, and the state they add up to.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleChanges {
    /// Owned schedules no longer wanted, by name.
    pub delete: Vec<String>,
    /// Wanted schedules that do not exist.
    pub create: Vec<RunSchedule>,
    /// The state and message of the wanted schedules together (a new one counts as not in step).
    pub state: SyncState,
    pub message: String,
}

/// Compares the RunSchedules `rc` owns with the ones it wants. Pure.
pub fn plan_schedules(
    rc: &RunConfiguration,
    owned: &[Arc<RunSchedule>],
    desired: BTreeMap<String, RunSchedule>,
) -> ScheduleChanges {
    let namespace = rc.namespace();
    let uid = rc.uid();
    let owned: Vec<&Arc<RunSchedule>> = owned
        .iter()
        .filter(|s| s.namespace() == namespace)
        .filter(|s| s.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref()))
        .collect();
    let mut states = Vec::new();
    let mut delete = Vec::new();
    for existing in &owned {
        let name = existing.name_any();
        if desired.contains_key(&name) {
            states.push(existing.status.clone().unwrap_or_default());
        } else if existing.meta().deletion_timestamp.is_none() {
            delete.push(name);
        }
    }
    let create: Vec<RunSchedule> = desired
        .into_values()
        .filter(|wanted| !owned.iter().any(|s| s.name_any() == wanted.name_any()))
        .collect();
    states.extend(create.iter().map(|_| Status::default()));
    let (state, message) =
        if states.iter().any(|s| !matches!(SyncState::of(s), SyncState::Succeeded | SyncState::Failed)) {
            (SyncState::Updating, "waiting for all owned RunSchedules to be Succeeded".to_owned())
        } else if let Some(failed) = states.iter().find(|s| SyncState::of(s) == SyncState::Failed) {
            let message =
                failed.conditions.iter().find(|c| c.type_ == SYNCHRONIZED).map(|c| c.message.clone());
            (SyncState::Failed, message.unwrap_or_else(|| "a RunSchedule failed".into()))
        } else {
            (SyncState::Succeeded, crate::api::conditions::default_message("Succeeded"))
        };
    ScheduleChanges { delete, create, state, message }
}

/// Deletes and creates the RunSchedules `changes` names (gone and existing ones are done).
async fn apply_schedules(ctx: &Context, namespace: &str, changes: &ScheduleChanges) -> Result<(), Error> {
    let api: Api<RunSchedule> = Api::namespaced(ctx.client.clone(), namespace);
    for name in &changes.delete {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    for schedule in &changes.create {
        match api.create(&PostParams::default(), schedule).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// Fetches what [`evaluate`] looks at: the dependencies from the shared index (the API for
/// namespaces the operator does not watch) and the pipeline version from the API.
async fn observe(ctx: &Context, rc: &RunConfiguration) -> Result<Observed, Error> {
    let namespace = rc.namespace().unwrap_or_default();
    let mut dependencies = BTreeMap::new();
    let trigger_dependencies = rc.spec.triggers.dependencies();
    for reference in referenced_run_configurations(&rc.spec.run.parameters, &trigger_dependencies) {
        let dependency = reference.qualified(&namespace);
        let found = lookup(ctx, &dependency).await?;
        dependencies.insert(dependency, found);
    }
    let stored = rc.status.as_ref().map(|s| s.dependencies.pipeline.version.as_str()).unwrap_or_default();
    let (pipeline_version, pipeline_problem) =
        pipeline_version(ctx, &namespace, &rc.spec.run.pipeline, stored).await?;
    let active_runs = if rc.spec.triggers.concurrency_policy.is_allow() {
        Vec::new()
    } else {
        active_runs(ctx, rc).await?
    };
    Ok(Observed {
        now: jiff::Timestamp::now(),
        active_runs,
        pipeline_version,
        pipeline_problem,
        dependencies,
    })
}

/// The Runs `rc` started that have not finished, from the API (not a cache: a Run created by
/// the previous reconcile must be seen, or `Forbid` would start a second one).
async fn active_runs(ctx: &Context, rc: &RunConfiguration) -> Result<Vec<ActiveRun>, Error> {
    let namespace = rc.namespace().unwrap_or_default();
    let api: Api<Run> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = format!("{}={}", labels::RUN_CONFIGURATION, rc.name_any());
    let runs = api.list(&ListParams::default().labels(&selector)).await?;
    Ok(runs.items.iter().filter_map(|run| running(run, rc.uid().as_deref())).collect())
}

/// `run` as an [`ActiveRun`] if it is owned by `owner` and has not finished. A Run whose
/// submission failed never runs, so it does not count.
pub fn running(run: &Run, owner: Option<&str>) -> Option<ActiveRun> {
    let owned = run.owner_references().iter().any(|o| Some(o.uid.as_str()) == owner);
    let status = run.status.clone().unwrap_or_default();
    let state = SyncState::of(&status.status);
    if !owned || status.completion_state.is_some() {
        return None;
    }
    let stopping = run.meta().deletion_timestamp.is_some();
    if state == SyncState::Failed && !stopping {
        return None;
    }
    let problem = if stopping && state == SyncState::Failed {
        status
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == SYNCHRONIZED)
            .map(|c| c.message.clone())
            .unwrap_or_default()
    } else {
        String::new()
    };
    Some(ActiveRun { name: run.name_any(), stopping, problem })
}

/// Stops a running Run by deleting it (its finalizer deletes it on the provider).
async fn stop_run(ctx: &Context, namespace: &str, name: &str) -> Result<(), Error> {
    let api: Api<Run> = Api::namespaced(ctx.client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Creates the Run a trigger calls for; an existing one (a repeat) is success. Returns whether
/// it was created now.
pub(crate) async fn create_triggered_run(ctx: &Context, run: &Run) -> Result<bool, kube::Error> {
    let namespace = run.namespace().unwrap_or_default();
    let runs: Api<Run> = Api::namespaced(ctx.client.clone(), &namespace);
    match runs.create(&PostParams::default(), run).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            tracing::debug!(run = %run.name_any(), "the triggered run exists already");
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

pub async fn reconcile(rc: Arc<RunConfiguration>, rc_ctx: Arc<RcContext>) -> Result<Action, Error> {
    let ctx = &rc_ctx.ctx;
    // A join's and a concurrency policy's state is the status itself: decide on the stored one,
    // not on a cached copy that may predate the last write.
    let fresh = if rc.spec.triggers.join.is_some() || !rc.spec.triggers.concurrency_policy.is_allow() {
        match ctx.latest(rc.as_ref()).await? {
            Some(fresh) => Arc::new(fresh),
            None => return Ok(Action::await_change()),
        }
    } else {
        rc
    };
    let rc = fresh.as_ref();
    if rc.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = rc.namespace().unwrap_or_default();
    let name = NamespacedName::new(&namespace, rc.name_any());
    let generation = rc.meta().generation;
    let previous = rc.status.clone().unwrap_or_default();

    let observed = observe(ctx, rc).await?;
    let Evaluation { mut status, fire, stop, requeue_at, values, invalid_spec, unresolved } =
        ctx.index.with_graph(|graph| evaluate(rc, &observed, ctx.config.cross_namespace_policy, graph));

    for run in &stop {
        stop_run(ctx, &namespace, run).await?;
        let note = format!("stopping Run {run} to start a new one (concurrencyPolicy Replace)");
        let (ctx, rc) = (ctx.clone(), rc.clone());
        tokio::spawn(async move { ctx.event(&rc, false, "RunReplaced", note).await });
    }
    for trigger in &fire {
        let run = triggered_run(rc, trigger.run_name(&name), trigger.labels(&rc.name_any()), &values);
        if create_triggered_run(ctx, &run).await? {
            ctx.metrics.triggered(trigger.kind.as_str(), "reconcile", 1);
            let note = format!("created Run {} ({})", run.name_any(), trigger.kind.as_str());
            let (ctx, rc) = (ctx.clone(), rc.clone());
            tokio::spawn(async move { ctx.event(&rc, false, "RunCreated", note).await });
        }
    }

    // Schedules keep syncing even while dependencies are unresolved.
    let (state, message) = match invalid_spec {
        Some(message) => (SyncState::Failed, message),
        None => {
            let desired = desired_schedules(rc, &status.dependencies.pipeline.version, &values);
            let changes = plan_schedules(rc, &rc_ctx.schedules.state(), desired);
            apply_schedules(ctx, &namespace, &changes).await?;
            (changes.state, changes.message)
        }
    };
    let ready = state == SyncState::Succeeded && unresolved.is_none();
    set_condition(
        &mut status.conditions,
        new_condition(SYNCHRONIZED, state.condition_status(), state.as_str(), &message, generation),
    );
    let ready_message = unresolved.as_ref().map_or(message.as_str(), |(_, m)| m.as_str());
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
        ctx.patch_status(rc, &body, &["latestRuns"]).await?;
        if SyncState::of_conditions(&previous.conditions) != Some(state) && state == SyncState::Failed {
            ctx.event(rc, true, "SyncFailed", message.clone()).await;
        }
    }
    ctx.succeeded(rc);
    let until_reset = requeue_at
        .map(|at| at.duration_since(observed.now))
        .and_then(|wait| std::time::Duration::try_from(wait).ok())
        .map(|wait| wait + std::time::Duration::from_millis(50));
    Ok(Action::requeue(
        until_reset.map_or(ctx.config.resync_period, |wait| wait.min(ctx.config.resync_period)),
    ))
}

/// The RunConfiguration to wake when one of its Runs finished or is gone, if its
/// `concurrencyPolicy` waits for that (a pending Run starts, a replaced one is done).
fn finished_run_wakes(
    index: &crate::triggers::index::RunConfigurationIndex,
    run: &Run,
) -> Option<ObjectRef<RunConfiguration>> {
    let finished = run.status.as_ref().is_some_and(|s| s.completion_state.is_some())
        || run.meta().deletion_timestamp.is_some();
    let name = run.labels().get(labels::RUN_CONFIGURATION)?;
    let namespace = run.namespace().unwrap_or_default();
    let rc = index.get(&NamespacedName::new(&namespace, name))?;
    (finished && !rc.spec.triggers.concurrency_policy.is_allow())
        .then(|| ObjectRef::new(name).within(&namespace))
}

impl AsRef<Context> for RcContext {
    fn as_ref(&self) -> &Context {
        &self.ctx
    }
}

/// Runs the RunConfiguration controller over the objects of `feed` (whose watches also feed
/// the shared index). A RunConfiguration is reconciled when its spec changes (not on its own
/// status writes), when one it references changes (`dependencies`: the same watches), when its
/// Pipeline changes and when an owned RunSchedule changes.
pub async fn run_controller(
    ctx: Arc<Context>,
    feed: super::Feed<RunConfiguration>,
    dependencies: super::Feed<RunConfiguration>,
    pipelines: super::Feed<Pipeline>,
    shutdown: crate::shutdown::Shutdown,
) {
    let (store, writer) = reflector::store();
    let own_changes = super::reflect(feed, store.clone(), writer)
        .applied_objects()
        .predicate_filter(predicates::generation, PredicateConfig::default());
    let (index, pipeline_index) = (ctx.index.clone(), ctx.index.clone());
    let owned = super::watcher_config().labels(labels::RUN_CONFIGURATION);
    let [owned_changes, owned_schedules] =
        super::plain_feeds::<RunSchedule, 2>(&ctx, owned, "owned schedules");
    let runs_index = ctx.index.clone();
    let [owned_runs] = super::plain_feeds::<Run, 1>(
        &ctx,
        super::watcher_config().labels(labels::RUN_CONFIGURATION),
        "triggered runs",
    );
    let queue = ctx.metrics.queue(&super::controller_name::<RunConfiguration>());
    super::track_resources(&ctx, store.clone());
    let controller = Controller::for_stream(super::waking_self(&queue, own_changes), store)
        .trigger_backoff(super::watch::ShortPause)
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency))
        .watches_stream(
            super::changed(dependencies),
            super::waking(&queue, move |changed: RunConfiguration| {
                index
                    .referrers(&qualified_name(&changed))
                    .into_iter()
                    .map(|name| ObjectRef::new(&name.name).within(&name.namespace))
                    .collect::<Vec<_>>()
            }),
        )
        .watches_stream(
            super::changed(pipelines),
            super::waking(&queue, move |pipeline: Pipeline| {
                let namespace = pipeline.namespace().unwrap_or_default();
                let name = pipeline.name_any();
                pipeline_index
                    .running_pipeline(&namespace, &name)
                    .into_iter()
                    .map(|name| ObjectRef::new(&name.name).within(&name.namespace))
                    .collect::<Vec<_>>()
            }),
        )
        .owns_stream(super::waking_owners::<RunConfiguration, _>(&queue, super::changed(owned_changes)))
        .watches_stream(
            super::changed(owned_runs),
            super::waking(&queue, move |run: Run| finished_run_wakes(&runs_index, &run)),
        );
    let (schedules, schedules_writer) = reflector::store();
    tokio::spawn(
        super::reflect(owned_schedules, schedules.clone(), schedules_writer)
            .for_each(|_| std::future::ready(())),
    );
    let _ = schedules.wait_until_ready().await;
    let rc_ctx = Arc::new(RcContext { ctx, schedules });
    let controller = controller.graceful_shutdown_on(shutdown);
    let reconciler = super::instrumented(queue.clone(), reconcile);
    super::drain(controller.run(reconciler, super::error_policy, rc_ctx), queue).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{RunConfigurationSpec, Schedule};

    fn rc(crons: &[&str]) -> RunConfiguration {
        let mut rc = RunConfiguration::new("nightly", RunConfigurationSpec::default());
        rc.metadata.namespace = Some("ml".into());
        rc.metadata.uid = Some("uid-1".into());
        rc.spec.run.provider = NamespacedName::new("kfp", "stub");
        rc.spec.run.pipeline = PipelineIdentifier::new("p", "");
        rc.spec.triggers.schedules = crons
            .iter()
            .map(|cron| Schedule { cron_expression: (*cron).into(), ..Schedule::default() })
            .collect();
        rc
    }

    fn existing(schedule: &RunSchedule, state: Option<SyncState>) -> Arc<RunSchedule> {
        let mut schedule = schedule.clone();
        schedule.status = state.map(|state| {
            let previous = Status::default();
            let builder = crate::controller::state::StatusBuilder {
                previous: &previous,
                generation: Some(1),
                now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
            };
            builder.build(state, if state == SyncState::Failed { "cron rejected" } else { "" }, "v", None)
        });
        Arc::new(schedule)
    }

    #[test]
    fn schedules_are_created_kept_and_deleted_by_their_deterministic_names() {
        let before = rc(&["0 * * * *"]);
        let old = desired_schedules(&before, "v1", &[]);
        let old_schedule = old.values().next().unwrap();
        assert!(old_schedule.name_any().starts_with("nightly-"));
        assert_eq!(desired_schedules(&before, "v1", &[]), old, "the same spec names the same schedules");

        let fresh = plan_schedules(&before, &[], old.clone());
        assert_eq!((fresh.create.len(), fresh.delete.len(), fresh.state), (1, 0, SyncState::Updating));

        let settled =
            plan_schedules(&before, &[existing(old_schedule, Some(SyncState::Succeeded))], old.clone());
        assert_eq!((settled.create.len(), settled.delete.len(), settled.state), (0, 0, SyncState::Succeeded));

        let after = rc(&["30 * * * *"]);
        let new = desired_schedules(&after, "v1", &[]);
        let changed = plan_schedules(&after, &[existing(old_schedule, Some(SyncState::Succeeded))], new);
        assert_eq!(changed.delete, vec![old_schedule.name_any()]);
        assert_eq!((changed.create.len(), changed.state), (1, SyncState::Updating));
    }

    #[test]
    fn a_failed_schedule_fails_the_run_configuration_with_its_message() {
        let config = rc(&["0 * * * *"]);
        let wanted = desired_schedules(&config, "v1", &[]);
        let failed = existing(wanted.values().next().unwrap(), Some(SyncState::Failed));
        let changes = plan_schedules(&config, &[failed], wanted);
        assert_eq!((changes.state, changes.message.as_str()), (SyncState::Failed, "cron rejected"));
    }

    #[test]
    fn schedules_of_another_owner_are_left_alone() {
        let config = rc(&["0 * * * *"]);
        let mut other = rc(&["0 * * * *"]);
        other.metadata.uid = Some("uid-2".into());
        let theirs = desired_schedules(&other, "v1", &[]);
        let foreign = existing(theirs.values().next().unwrap(), Some(SyncState::Succeeded));
        let changes = plan_schedules(&config, &[foreign], BTreeMap::new());
        assert!(changes.delete.is_empty() && changes.create.is_empty());
        assert_eq!(changes.state, SyncState::Succeeded, "no schedules wanted, none to wait for");
    }
}
