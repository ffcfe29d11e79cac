//! The reconciler of the kinds synchronised with a provider (Pipeline, Experiment,
//! RunSchedule, and Run after its own preparation): finalizer, provider lookup, the state
//! machine's plan, the provider call, and the status before and after it.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::state::{Desired, Outcome, Plan, StatusBuilder, plan, state_during};
use super::{Context, Error, ErrorClass, FORCE_DELETE_ANNOTATION, Failure};
use crate::api::conditions::{SyncState, synchronized_message};
use crate::api::{self, Experiment, NamespacedName, Pipeline, Provider, RunSchedule, Status, hash};
use crate::provider::{ProviderApi, ProviderError, ResourceKind, definitions};

/// A kind the operator keeps in step with a provider.
pub trait Synced:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + super::Tracked
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    const RESOURCE: ResourceKind;
    /// The top-level status fields written by the completion path rather than the reconciler.
    const STATUS_WRITTEN_BY_OTHERS: &'static [&'static str] = &[];

    /// The Provider named by the spec.
    fn provider_ref(&self) -> &NamespacedName;
    /// The common status, if any.
    fn sync_status(&self) -> Option<&Status>;
    /// The version of the spec now.
    fn version(&self) -> String;
    /// The definition sent to the provider.
    fn definition(&self, provider: &Provider) -> Result<Value, definitions::DefinitionError>;
    /// The whole status to apply when the common status becomes `status`.
    fn status_body(&self, status: Status) -> Value {
        json!(status)
    }
    /// What wakes a reconcile of the object itself (see [`super::lifecycle_hash`]).
    fn reconcile_trigger(&self) -> Option<u64> {
        super::lifecycle_hash(self, ())
    }
}

impl Synced for Pipeline {
    const RESOURCE: ResourceKind = ResourceKind::Pipeline;
    fn provider_ref(&self) -> &NamespacedName {
        &self.spec.provider
    }
    fn sync_status(&self) -> Option<&Status> {
        self.status.as_ref()
    }
    fn version(&self) -> String {
        hash::pipeline_version(&self.spec)
    }
    fn definition(&self, provider: &Provider) -> Result<Value, definitions::DefinitionError> {
        definitions::pipeline(self, provider)
    }
}

impl Synced for Experiment {
    const RESOURCE: ResourceKind = ResourceKind::Experiment;
    fn provider_ref(&self) -> &NamespacedName {
        &self.spec.provider
    }
    fn sync_status(&self) -> Option<&Status> {
        self.status.as_ref()
    }
    fn version(&self) -> String {
        hash::experiment_version(&self.spec)
    }
    fn definition(&self, _: &Provider) -> Result<Value, definitions::DefinitionError> {
        definitions::experiment(self)
    }
}

impl Synced for RunSchedule {
    const RESOURCE: ResourceKind = ResourceKind::RunSchedule;
    fn provider_ref(&self) -> &NamespacedName {
        &self.spec.provider
    }
    fn sync_status(&self) -> Option<&Status> {
        self.status.as_ref()
    }
    fn version(&self) -> String {
        hash::run_schedule_version(&self.spec)
    }
    fn definition(&self, _: &Provider) -> Result<Value, definitions::DefinitionError> {
        definitions::run_schedule(self)
    }
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

fn has_finalizer(object: &impl Resource) -> bool {
    object.meta().finalizers.iter().flatten().any(|f| f == api::FINALIZER)
}

/// Adds or removes our finalizer with a JSON patch guarded by a `test` of the current list.
pub async fn set_finalizer<K: Synced>(ctx: &Context, object: &K, present: bool) -> Result<(), Error> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
    let current: Vec<String> = object.meta().finalizers.clone().unwrap_or_default();
    let mut wanted: Vec<String> = current.iter().filter(|f| *f != api::FINALIZER).cloned().collect();
    if present {
        wanted.push(api::FINALIZER.to_owned());
    }
    let operations = if object.meta().finalizers.is_some() {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "replace", "path": "/metadata/finalizers", "value": wanted},
        ])
    } else {
        json!([{"op": "add", "path": "/metadata/finalizers", "value": wanted}])
    };
    let patch: json_patch::Patch =
        serde_json::from_value(operations).map_err(|e| Error::Invalid(format!("finalizer patch: {e}")))?;
    api.patch(&object.name_any(), &PatchParams::default(), &Patch::<()>::Json(patch)).await?;
    Ok(())
}

/// The Provider a reconcile synchronises with: the one the status records while deleting
/// (the resource lives there), otherwise the one the spec names.
pub fn provider_name<K: Synced>(object: &K) -> NamespacedName {
    let deleting = object.meta().deletion_timestamp.is_some();
    let recorded = object.sync_status().and_then(|s| s.provider.as_ref()).map(|p| p.name.clone());
    recorded.filter(|name| !name.is_empty() && deleting).unwrap_or_else(|| object.provider_ref().clone())
}

fn force_deleted<K: Synced>(object: &K) -> bool {
    object.meta().deletion_timestamp.is_some()
        && object.annotations().get(FORCE_DELETE_ANNOTATION).is_some_and(|v| v == "true")
}

/// The one next step of a synced object's reconcile.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Add the finalizer; its change wakes the next reconcile.
    AddFinalizer,
    /// Being deleted without our finalizer: nothing to do.
    Nothing,
    /// Let the object go without calling the provider, with a Warning Event.
    Release { reason: &'static str, message: String },
    /// Make the `plan`'s call (if it has one) with `definition`, then write the status.
    Sync { plan: Plan, desired: Desired, definition: Option<Value> },
}

/// Decides the next step from the object and its Provider (`None`: not found). Pure.
/// `definition` is the Run reconciler's definition built from resolved parameters.
pub fn plan_sync<K: Synced>(object: &K, provider: Option<&Provider>, definition: Option<Value>) -> Step {
    let deleting = object.meta().deletion_timestamp.is_some();
    if !has_finalizer(object) {
        return if deleting { Step::Nothing } else { Step::AddFinalizer };
    }
    let previous = object.sync_status().cloned().unwrap_or_default();
    let provider_name = provider_name(object);
    let provider_id = previous.provider.as_ref().map(|p| p.id.as_str()).unwrap_or_default().to_owned();
    if force_deleted(object) {
        return Step::Release {
            reason: "ForcedDeletion",
            message: format!(
                "deleted without deleting it on provider {provider_name} because of the {FORCE_DELETE_ANNOTATION} \
                 annotation; provider id {provider_id:?} may remain there"
            ),
        };
    }
    let desired = Desired { version: object.version(), provider: object.provider_ref().clone() };
    let Some(provider) = provider else {
        if deleting {
            return Step::Release {
                reason: "ProviderGone",
                message: format!(
                    "provider {provider_name} no longer exists, so nothing can be deleted on it; released the \
                     resource (provider id {provider_id:?} may remain on the platform)"
                ),
            };
        }
        let refusal = if provider_name.name.is_empty() {
            Failure::new(ErrorClass::Waiting, "NoProvider", NO_PROVIDER.to_owned())
        } else {
            Failure::new(
                ErrorClass::Waiting,
                "ProviderNotFound",
                format!("provider {provider_name} not found"),
            )
        };
        return Step::Sync { plan: Plan::Refuse(refusal), desired, definition: None };
    };
    let namespace = object.namespace().unwrap_or_default();
    let allowed = &provider.spec.allowed_namespaces;
    if !deleting && !allowed.is_empty() && !allowed.contains(&namespace) {
        let refusal = Failure::new(
            ErrorClass::Waiting,
            "NamespaceNotAllowed",
            format!("namespace {namespace} is not allowed by provider {provider_name}"),
        );
        return Step::Sync { plan: Plan::Refuse(refusal), desired, definition: None };
    }
    let plan = plan(&previous, &desired, deleting);
    if !matches!(plan, Plan::Create | Plan::Update { .. }) {
        return Step::Sync { plan, desired, definition: None };
    }
    match definition.map_or_else(|| object.definition(provider), Ok) {
        Ok(definition) => Step::Sync { plan, desired, definition: Some(definition) },
        Err(error) => {
            let refusal =
                Failure::new(super::error::definition_class(&error), "InvalidDefinition", error.to_string());
            Step::Sync { plan: Plan::Refuse(refusal), desired, definition: None }
        }
    }
}

/// The status after `plan` ended with `outcome` (`None`: it made no call), and the failure it
/// shows, if any. `next_attempt` is when a transient failure is tried again. Pure.
pub fn settle(
    builder: &StatusBuilder<'_>,
    plan: &Plan,
    desired: &Desired,
    outcome: Option<&Outcome>,
    next_attempt: std::time::Duration,
) -> (Status, Option<Failure>) {
    let mut status = builder.after(plan, desired, outcome);
    let failure = match (outcome, plan) {
        (Some(Outcome::Failed(failure)), _) | (_, Plan::Refuse(failure)) => Some(failure.clone()),
        _ => None,
    };
    if let Some(failure) = &failure {
        show_next_attempt(&mut status, failure.class, next_attempt);
    }
    (status, failure)
}

/// What follows a status write without a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUp {
    /// Deleted on the provider: remove the finalizer.
    ReleaseFinalizer,
    /// In step: look again after the resync period.
    Resync,
}

/// Writes `status` if it differs from what the object has, and publishes an Event for a new
/// state: named after the state, or after the failure when it waits (Normal) or stalls
/// (Warning).
async fn write_status<K: Synced>(
    ctx: &Context,
    object: &K,
    previous: &Status,
    status: Status,
    failure: Option<&Failure>,
) -> Result<(), Error> {
    if *previous == status {
        return Ok(());
    }
    let state = SyncState::of(&status);
    let message = status
        .conditions
        .iter()
        .find(|c| c.type_ == crate::api::conditions::SYNCHRONIZED)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    let changed_state = SyncState::of(previous) != state
        || message != synchronized_message(previous)
        || previous.version != status.version;
    ctx.patch_status(object, &object.status_body(status.clone()), K::STATUS_WRITTEN_BY_OTHERS).await?;
    if changed_state {
        let mut note = format!("{state} [version: {:?}]", status.version);
        if message != crate::api::conditions::default_message(state.as_str()) {
            note.push_str(": ");
            note.push_str(&message);
        }
        let (warning, reason) = match failure.filter(|f| f.class != ErrorClass::Transient) {
            Some(failure) => (failure.class == ErrorClass::Stalled, failure.category),
            None => (state == SyncState::Failed, state.event_reason()),
        };
        ctx.event(object, warning, reason, note).await;
    }
    Ok(())
}

/// Reconciles one object of a synced kind: observe (its Provider), plan ([`plan_sync`]),
/// apply (the one provider call), and one status write. `definition` lets the Run reconciler
/// supply a definition built from its resolved parameters.
pub async fn reconcile_synced<K: Synced>(
    object: &K,
    ctx: &Context,
    definition: Option<Value>,
) -> Result<Action, Error> {
    let provider = observe_provider(ctx, object).await?;
    let step = plan_sync(object, provider.as_ref(), definition);
    apply_step(ctx, object, provider.as_ref(), step).await
}

/// Why an object without `spec.provider` is not synchronised.
pub const NO_PROVIDER: &str = "no provider: spec.provider is empty (v1alpha5 has no provider field) and the operator has \
     no defaultProvider configured; set defaultProvider: namespace/name in the operator's configuration or write the \
     object as v1beta1 with spec.provider";

/// The Provider a reconcile of `object` needs (`None`: not found, or not needed).
pub async fn observe_provider<K: Synced>(ctx: &Context, object: &K) -> Result<Option<Provider>, Error> {
    if !has_finalizer(object) || force_deleted(object) {
        return Ok(None);
    }
    let name = provider_name(object);
    if name.name.is_empty() {
        return Ok(None);
    }
    let namespace = object.namespace().unwrap_or_default();
    let providers: Api<Provider> = Api::namespaced(ctx.client.clone(), name.namespace_or(&namespace));
    Ok(providers.get_opt(&name.name).await?)
}

/// Carries out `step` for `object`: the finalizer, or the plan's one provider call and the
/// status write after it.
pub async fn apply_step<K: Synced>(
    ctx: &Context,
    object: &K,
    provider: Option<&Provider>,
    step: Step,
) -> Result<Action, Error> {
    let (plan, desired, definition) = match step {
        Step::Nothing => return Ok(Action::await_change()),
        Step::AddFinalizer => {
            set_finalizer(ctx, object, true).await?;
            return Ok(Action::await_change());
        }
        Step::Release { reason, message } => {
            ctx.event(object, true, reason, message).await;
            set_finalizer(ctx, object, false).await?;
            return Ok(Action::await_change());
        }
        Step::Sync { plan, desired, definition } => (plan, desired, definition),
    };
    let previous = object.sync_status().cloned().unwrap_or_default();
    announce_call(ctx, object, &previous, &plan, &desired).await;
    let outcome = match (state_during(&plan), provider) {
        (Some(_), Some(provider)) => Some(match ctx.providers.client_for(provider).await {
            Ok(client) => call(ctx, client.as_ref(), provider, &plan, K::RESOURCE, definition.as_ref()).await,
            Err(message) => {
                Outcome::Failed(Failure::new(ErrorClass::Transient, "ProviderUnavailable", message))
            }
        }),
        _ => None,
    };
    let builder = StatusBuilder { previous: &previous, generation: object.meta().generation, now: now() };
    let (status, failure) = settle(&builder, &plan, &desired, outcome.as_ref(), ctx.next_backoff(object));
    write_status(ctx, object, &previous, status.clone(), failure.as_ref()).await?;
    if let Some(failure) = failure {
        return Err(Error::Recorded(failure));
    }
    ctx.succeeded(object);
    match follow_up(&status, object.meta().deletion_timestamp.is_some()) {
        FollowUp::ReleaseFinalizer => {
            set_finalizer(ctx, object, false).await?;
            Ok(Action::await_change())
        }
        FollowUp::Resync => Ok(Action::requeue(ctx.config.resync_period)),
    }
}

/// Shows that `plan` is under way but its call waits for `message` (a compile): the state the
/// call enters, at the desired version, with `message`; written only when it changes.
pub async fn show_progress<K: Synced>(
    ctx: &Context,
    object: &K,
    plan: &Plan,
    desired: &Desired,
    message: &str,
) -> Result<(), Error> {
    let previous = object.sync_status().cloned().unwrap_or_default();
    let builder = StatusBuilder { previous: &previous, generation: object.meta().generation, now: now() };
    let Some(during) = builder.during(plan, desired) else { return Ok(()) };
    let status = builder.build(SyncState::of(&during), message, &during.version, during.provider.clone());
    write_status(ctx, object, &previous, status, None).await
}

/// Announces a provider call with a Normal Event naming the state it enters (`Creating`,
/// `Updating`, `Deleting`) and its version, unless it retries a failed one. The status is
/// written once, after the call.
async fn announce_call<K: Synced>(
    ctx: &Context,
    object: &K,
    previous: &Status,
    plan: &Plan,
    desired: &Desired,
) {
    let builder = StatusBuilder { previous, generation: object.meta().generation, now: now() };
    let Some(during) = builder.during(plan, desired) else { return };
    let state = SyncState::of(&during);
    let retrying = matches!(SyncState::of(previous), SyncState::Failed | SyncState::Deleting)
        && (state == SyncState::Deleting || previous.version == desired.version);
    if !retrying {
        ctx.event(object, false, state.event_reason(), format!("{state} [version: {:?}]", during.version))
            .await;
    }
}

/// What follows a status write that shows no failure. Pure.
pub fn follow_up(status: &Status, deleting: bool) -> FollowUp {
    if deleting && SyncState::of(status) == SyncState::Deleted {
        FollowUp::ReleaseFinalizer
    } else {
        FollowUp::Resync
    }
}

/// Adds to the `Ready` message of a failed status when it is looked at again; the
/// `Synchronized` message stays the provider's (or the refusal's).
fn show_next_attempt(status: &mut Status, class: ErrorClass, delay: std::time::Duration) {
    let note = match class {
        ErrorClass::Transient => {
            let at = jiff::Timestamp::now()
                .checked_add(jiff::SignedDuration::try_from(delay).unwrap_or(jiff::SignedDuration::ZERO))
                .map(|t| t.round(jiff::Unit::Second).unwrap_or(t))
                .unwrap_or_else(|_| jiff::Timestamp::now());
            format!("next attempt in {}s, at {at}", delay.as_secs().max(1))
        }
        ErrorClass::Waiting => "tried again when it changes".to_owned(),
        ErrorClass::Stalled => "not retried until the resource changes".to_owned(),
    };
    if let Some(ready) = status.conditions.iter_mut().find(|c| c.type_ == crate::api::conditions::READY) {
        ready.message = format!("{}; {note}", ready.message);
    }
}

async fn call(
    ctx: &Context,
    client: &dyn ProviderApi,
    provider: &Provider,
    plan: &Plan,
    kind: ResourceKind,
    definition: Option<&Value>,
) -> Outcome {
    let timeout = ctx.config.provider_call_timeout;
    let null = Value::Null;
    let definition = definition.unwrap_or(&null);
    let operation = match plan {
        Plan::Create => "create",
        Plan::Update { .. } => "update",
        Plan::Delete { .. } => "delete",
        Plan::Nothing | Plan::MarkDeleted | Plan::Refuse(_) => {
            return Outcome::Done { id: String::new() };
        }
    };
    let started = std::time::Instant::now();
    let result = match plan {
        Plan::Update { id } => tokio::time::timeout(timeout, client.update(kind, id, definition)).await,
        Plan::Delete { id } => {
            tokio::time::timeout(timeout, async { client.delete(kind, id).await.map(|()| String::new()) })
                .await
        }
        _ => tokio::time::timeout(timeout, client.create(kind, definition)).await,
    };
    let labels = crate::metrics::ProviderLatencyLabels {
        provider: format!("{}/{}", provider.namespace().unwrap_or_default(), provider.name_any()),
        kind: kind.as_str().into(),
        operation: operation.into(),
    };
    let error = match result {
        Ok(Ok(id)) => {
            ctx.metrics.provider_call(&labels, "ok", started.elapsed());
            return Outcome::Done { id };
        }
        Ok(Err(error)) => error,
        Err(_) => ProviderError::Timeout { seconds: timeout.as_secs() },
    };
    ctx.metrics.provider_call(&labels, error.category(), started.elapsed());
    Outcome::Failed(Failure::new(super::error::provider_class(&error), error.category(), error.to_string()))
}

async fn reconcile<K: Synced>(object: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    match ctx.latest(object.as_ref()).await? {
        Some(latest) => reconcile_synced(&latest, &ctx, None).await,
        None => Ok(Action::await_change()),
    }
}

/// The objects of `store` not in step that name `provider`: a change of the Provider wakes
/// the objects waiting for it (or failing on it), not the settled ones.
pub fn waiting_on<K: Synced>(
    store: &kube::runtime::reflector::Store<K>,
    provider: &Provider,
) -> Vec<kube::runtime::reflector::ObjectRef<K>> {
    let name = NamespacedName::new(provider.namespace().unwrap_or_default(), provider.name_any());
    store
        .state()
        .into_iter()
        .filter(|object| object.sync_status().is_none_or(|s| SyncState::of(s) != SyncState::Succeeded))
        .filter(|object| {
            let namespace = object.namespace().unwrap_or_default();
            let named = object.provider_ref();
            named.name == name.name && named.namespace_or(&namespace) == name.namespace
        })
        .map(|object| kube::runtime::reflector::ObjectRef::from_obj(object.as_ref()))
        .collect()
}

/// Runs the controller of kind `K` over the objects of `feed`, woken also by changes of the
/// Providers its objects wait for.
pub async fn run_controller<K: Synced>(
    ctx: Arc<Context>,
    feed: super::Feed<K>,
    providers: super::Feed<Provider>,
    shutdown: crate::shutdown::Shutdown,
) {
    let queue = ctx.metrics.queue(&super::controller_name::<K>());
    let controller = super::lean_controller(&ctx, feed, &queue, |object: &K| object.reconcile_trigger());
    let store = controller.store();
    let controller = controller
        .watches_stream(
            super::changed(providers),
            super::waking(&queue, move |provider: Provider| waiting_on(&store, &provider)),
        )
        .graceful_shutdown_on(shutdown);
    let reconciler = super::instrumented(queue.clone(), reconcile::<K>);
    super::drain(controller.run(reconciler, super::error_policy, ctx.clone()), queue).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Framework, PipelineFramework, PipelineSpec, ProviderAndId, ProviderSpec};

    fn provider(frameworks: &[&str]) -> Provider {
        let mut provider = Provider::new(
            "stub",
            ProviderSpec {
                frameworks: frameworks
                    .iter()
                    .map(|name| Framework { name: (*name).into(), ..Framework::default() })
                    .collect(),
                ..ProviderSpec::default()
            },
        );
        provider.metadata.namespace = Some("kfp".into());
        provider
    }

    fn pipeline() -> Pipeline {
        let mut pipeline = Pipeline::new(
            "p",
            PipelineSpec {
                provider: NamespacedName::new("kfp", "stub"),
                image: "pipeline:1".into(),
                framework: PipelineFramework::new("tfx"),
                ..PipelineSpec::default()
            },
        );
        pipeline.metadata.namespace = Some("ml".into());
        pipeline.metadata.generation = Some(1);
        pipeline.metadata.finalizers = Some(vec![api::FINALIZER.into()]);
        pipeline
    }

    fn deleting(mut pipeline: Pipeline) -> Pipeline {
        pipeline.metadata.deletion_timestamp = Some(now());
        pipeline
    }

    fn synced(mut pipeline: Pipeline, id: &str) -> Pipeline {
        let previous = Status::default();
        let builder = StatusBuilder { previous: &previous, generation: Some(1), now: now() };
        let provider = ProviderAndId { name: NamespacedName::new("kfp", "stub"), id: id.into() };
        pipeline.status = Some(builder.build(SyncState::Succeeded, "", &pipeline.version(), Some(provider)));
        pipeline
    }

    fn refusal(step: Step) -> Failure {
        match step {
            Step::Sync { plan: Plan::Refuse(failure), .. } => failure,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_finalizer_comes_first_and_goes_last() {
        let mut fresh = pipeline();
        fresh.metadata.finalizers = None;
        assert_eq!(plan_sync(&fresh, Some(&provider(&["tfx"])), None), Step::AddFinalizer);
        assert_eq!(plan_sync(&deleting(fresh), None, None), Step::Nothing);
    }

    #[test]
    fn a_new_pipeline_is_created_with_its_definition() {
        let Step::Sync { plan, definition, desired } =
            plan_sync(&pipeline(), Some(&provider(&["tfx"])), None)
        else {
            panic!("expected a sync")
        };
        assert_eq!(plan, Plan::Create);
        assert_eq!(desired.version, pipeline().version());
        assert_eq!(
            definition.and_then(|d| d["pipelineDefinition"]["image"].as_str().map(str::to_owned)).as_deref(),
            Some("pipeline:1")
        );
        let in_step = synced(pipeline(), "id-1");
        assert!(matches!(
            plan_sync(&in_step, Some(&provider(&["tfx"])), None),
            Step::Sync { plan: Plan::Nothing, definition: None, .. }
        ));
    }

    #[test]
    fn what_another_object_must_fix_waits_and_what_the_spec_must_fix_stalls() {
        let missing = refusal(plan_sync(&pipeline(), None, None));
        assert_eq!((missing.class, missing.category), (ErrorClass::Waiting, "ProviderNotFound"));
        assert_eq!(missing.message, "provider kfp/stub not found");

        let mut fenced = provider(&["tfx"]);
        fenced.spec.allowed_namespaces = vec!["elsewhere".into()];
        let fenced = refusal(plan_sync(&pipeline(), Some(&fenced), None));
        assert_eq!((fenced.class, fenced.category), (ErrorClass::Waiting, "NamespaceNotAllowed"));

        let unsupported = refusal(plan_sync(&pipeline(), Some(&provider(&["kfp"])), None));
        assert_eq!((unsupported.class, unsupported.category), (ErrorClass::Waiting, "InvalidDefinition"));

        let mut moved = synced(pipeline(), "id-1");
        moved.spec.provider = NamespacedName::new("kfp", "other");
        let mut other = provider(&["tfx"]);
        other.metadata.name = Some("other".into());
        let moved = refusal(plan_sync(&moved, Some(&other), None));
        assert_eq!((moved.class, moved.category), (ErrorClass::Stalled, "ProviderChanged"));
    }

    #[test]
    fn deletion_releases_without_a_provider_or_when_forced() {
        let gone = plan_sync(&deleting(synced(pipeline(), "id-1")), None, None);
        assert!(
            matches!(gone, Step::Release { reason: "ProviderGone", ref message } if message.contains("\"id-1\""))
        );

        let mut forced = deleting(synced(pipeline(), "id-1"));
        forced.metadata.annotations = Some([(FORCE_DELETE_ANNOTATION.to_owned(), "true".to_owned())].into());
        assert!(matches!(
            plan_sync(&forced, Some(&provider(&["tfx"])), None),
            Step::Release { reason: "ForcedDeletion", .. }
        ));

        let mut fenced = provider(&["tfx"]);
        fenced.spec.allowed_namespaces = vec!["elsewhere".into()];
        assert!(
            matches!(
                plan_sync(&deleting(synced(pipeline(), "id-1")), Some(&fenced), None),
                Step::Sync { plan: Plan::Delete { ref id }, .. } if id == "id-1"
            ),
            "what was created is deleted even from a namespace no longer allowed"
        );
    }

    #[test]
    fn a_settled_failure_says_when_it_is_looked_at_again() {
        let previous = Status::default();
        let builder = StatusBuilder { previous: &previous, generation: Some(1), now: now() };
        let desired = Desired { version: "v1".into(), provider: NamespacedName::new("kfp", "stub") };
        let ready = |status: &Status| {
            status
                .conditions
                .iter()
                .find(|c| c.type_ == crate::api::conditions::READY)
                .unwrap()
                .message
                .clone()
        };
        let failed = Outcome::Failed(Failure::new(ErrorClass::Transient, "ProviderFailed", "boom"));
        let (status, failure) =
            settle(&builder, &Plan::Create, &desired, Some(&failed), std::time::Duration::from_secs(8));
        assert_eq!(failure.map(|f| f.category), Some("ProviderFailed"));
        assert!(ready(&status).starts_with("boom; next attempt in 8s, at "), "{}", ready(&status));

        let stalled = Plan::Refuse(Failure::new(ErrorClass::Stalled, "ProviderChanged", "moved"));
        let (status, _) = settle(&builder, &stalled, &desired, None, std::time::Duration::from_secs(8));
        assert_eq!(ready(&status), "moved; not retried until the resource changes");

        let (status, failure) = settle(
            &builder,
            &Plan::Create,
            &desired,
            Some(&Outcome::Done { id: "id".into() }),
            Default::default(),
        );
        assert_eq!((SyncState::of(&status), failure), (SyncState::Succeeded, None));
        assert_eq!(follow_up(&status, false), FollowUp::Resync);
        let deleted = builder.build(SyncState::Deleted, "", "v1", None);
        assert_eq!(follow_up(&deleted, true), FollowUp::ReleaseFinalizer);
    }
}
