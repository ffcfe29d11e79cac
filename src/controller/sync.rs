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
use super::{Context, Error, FORCE_DELETE_ANNOTATION};
use crate::api::conditions::{SyncState, synchronized_message};
use crate::api::{self, Experiment, NamespacedName, Pipeline, Provider, RunSchedule, Status, hash};
use crate::provider::{ProviderApi, ProviderError, ResourceKind, definitions};

/// A kind the operator keeps in step with a provider.
pub trait Synced:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
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

/// Writes `status` if it differs from what the object has, and publishes an Event for a new state.
async fn write_status<K: Synced>(
    ctx: &Context,
    object: &K,
    previous: &Status,
    status: Status,
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
    let changed_state = SyncState::of(previous) != state || message != synchronized_message(previous);
    ctx.patch_status(object, &object.status_body(status.clone()), K::STATUS_WRITTEN_BY_OTHERS).await?;
    if changed_state {
        let mut note = format!("{state} [version: {:?}]", status.version);
        if message != crate::api::conditions::default_message(state.as_str()) {
            note.push_str(": ");
            note.push_str(&message);
        }
        ctx.event(object, state == SyncState::Failed, state.event_reason(), note).await;
    }
    Ok(())
}

/// Reconciles one object of a synced kind. `definition_override` lets the Run reconciler
/// supply a definition built from its resolved parameters.
pub async fn reconcile_synced<K: Synced>(
    object: &K,
    ctx: &Context,
    definition_override: Option<Value>,
) -> Result<Action, Error> {
    let deleting = object.meta().deletion_timestamp.is_some();
    if !has_finalizer(object) {
        if !deleting {
            set_finalizer(ctx, object, true).await?;
        }
        return Ok(Action::await_change());
    }
    let previous = object.sync_status().cloned().unwrap_or_default();
    let namespace = object.namespace().unwrap_or_default();
    let builder = StatusBuilder { previous: &previous, generation: object.meta().generation, now: now() };

    let recorded_provider =
        previous.provider.as_ref().map(|p| p.name.clone()).filter(|name| !name.is_empty() && deleting);
    let provider_name = recorded_provider.unwrap_or_else(|| object.provider_ref().clone());
    let desired = Desired { version: object.version(), provider: object.provider_ref().clone() };

    if deleting && object.annotations().get(FORCE_DELETE_ANNOTATION).is_some_and(|v| v == "true") {
        ctx.event(
            object,
            true,
            "ForcedDeletion",
            format!(
                "deleted without deleting it on provider {provider_name} because of the {FORCE_DELETE_ANNOTATION} annotation; \
                 provider id {:?} may remain there",
                previous.provider.as_ref().map(|p| p.id.as_str()).unwrap_or_default()
            ),
        )
        .await;
        set_finalizer(ctx, object, false).await?;
        return Ok(Action::await_change());
    }

    let providers: Api<Provider> =
        Api::namespaced(ctx.client.clone(), provider_name.namespace_or(&namespace));
    let Some(provider) = providers.get_opt(&provider_name.name).await? else {
        if deleting {
            ctx.event(
                object,
                true,
                "ProviderGone",
                format!(
                    "provider {provider_name} no longer exists, so nothing can be deleted on it; released the resource \
                     (provider id {:?} may remain on the platform)",
                    previous.provider.as_ref().map(|p| p.id.as_str()).unwrap_or_default()
                ),
            )
            .await;
            set_finalizer(ctx, object, false).await?;
            return Ok(Action::await_change());
        }
        let message = format!("provider {provider_name} not found");
        let mut status = builder.after(&Plan::Refuse { message: message.clone() }, &desired, None);
        show_next_attempt(&mut status, ctx.next_backoff(object));
        write_status(ctx, object, &previous, status).await?;
        return Err(Error::Recorded { category: "ProviderNotFound", message });
    };

    let allowed = &provider.spec.allowed_namespaces;
    let mut plan = plan(&previous, &desired, deleting);
    if !deleting && !allowed.is_empty() && !allowed.contains(&namespace) {
        plan = Plan::Refuse {
            message: format!("namespace {namespace} is not allowed by provider {provider_name}"),
        };
    }
    let definition = match &plan {
        Plan::Create | Plan::Update { .. } => {
            match definition_override.map_or_else(|| object.definition(&provider), Ok) {
                Ok(definition) => Some(definition),
                Err(error) => {
                    plan = Plan::Refuse { message: error.to_string() };
                    None
                }
            }
        }
        _ => None,
    };
    // A retry of a failed call shows its failure until the call succeeds, rather than
    // flipping to Creating/Updating/Deleting and back on every attempt.
    let retrying = matches!(SyncState::of(&previous), SyncState::Failed | SyncState::Deleting)
        && (deleting || previous.version == desired.version);
    let during = builder.during(&plan, &desired).filter(|_| !retrying);
    if let Some(during) = &during {
        write_status(ctx, object, &previous, during.clone()).await?;
    }
    let outcome = match state_during(&plan) {
        Some(_) => Some(match ctx.providers.client_for(&provider).await {
            Ok(client) => call(ctx, client.as_ref(), &plan, K::RESOURCE, definition.as_ref()).await,
            Err(message) => Outcome::Failed { message, category: "ProviderUnavailable" },
        }),
        None => None,
    };
    let shown = during.as_ref().unwrap_or(&previous);
    let after_builder = StatusBuilder { previous: shown, generation: object.meta().generation, now: now() };
    let mut after = after_builder.after(&plan, &desired, outcome.as_ref());
    let failure = match (&outcome, &plan) {
        (Some(Outcome::Failed { message, category }), _) => Some((*category, message.clone())),
        (_, Plan::Refuse { message }) => Some(("Refused", message.clone())),
        _ => None,
    };
    if failure.is_some() {
        show_next_attempt(&mut after, ctx.next_backoff(object));
    }
    write_status(ctx, object, shown, after.clone()).await?;
    if let Some((category, message)) = failure {
        return Err(Error::Recorded { category, message });
    }
    finish(ctx, object, &after, deleting).await
}

/// Adds when the next attempt comes to the `Ready` message of a failed status; the
/// `Synchronized` message stays the provider's.
fn show_next_attempt(status: &mut Status, delay: std::time::Duration) {
    let at = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(delay).unwrap_or(jiff::SignedDuration::ZERO))
        .map(|t| t.round(jiff::Unit::Second).unwrap_or(t))
        .unwrap_or_else(|_| jiff::Timestamp::now());
    if let Some(ready) = status.conditions.iter_mut().find(|c| c.type_ == crate::api::conditions::READY) {
        ready.message = format!("{}; next attempt in {}s, at {at}", ready.message, delay.as_secs().max(1));
    }
}

async fn finish<K: Synced>(
    ctx: &Context,
    object: &K,
    status: &Status,
    deleting: bool,
) -> Result<Action, Error> {
    match SyncState::of(status) {
        SyncState::Deleted if deleting => {
            set_finalizer(ctx, object, false).await?;
            ctx.succeeded(object);
            Ok(Action::await_change())
        }
        SyncState::Failed | SyncState::Deleting => Ok(Action::requeue(ctx.backoff(object))),
        _ => {
            ctx.succeeded(object);
            Ok(Action::requeue(ctx.config.resync_period))
        }
    }
}

async fn call(
    ctx: &Context,
    client: &dyn ProviderApi,
    plan: &Plan,
    kind: ResourceKind,
    definition: Option<&Value>,
) -> Outcome {
    let timeout = ctx.config.provider_call_timeout;
    let null = Value::Null;
    let definition = definition.unwrap_or(&null);
    let result = match plan {
        Plan::Create => tokio::time::timeout(timeout, client.create(kind, definition)).await,
        Plan::Update { id } => tokio::time::timeout(timeout, client.update(kind, id, definition)).await,
        Plan::Delete { id } => {
            tokio::time::timeout(timeout, async { client.delete(kind, id).await.map(|()| String::new()) })
                .await
        }
        Plan::Nothing | Plan::MarkDeleted | Plan::Refuse { .. } => {
            return Outcome::Done { id: String::new() };
        }
    };
    let operation = match plan {
        Plan::Create => "create",
        Plan::Update { .. } => "update",
        _ => "delete",
    };
    let error = match result {
        Ok(Ok(id)) => {
            ctx.metrics.provider_call(kind.as_str(), operation, "ok");
            return Outcome::Done { id };
        }
        Ok(Err(error)) => error,
        Err(_) => ProviderError::Timeout { seconds: timeout.as_secs() },
    };
    ctx.metrics.provider_call(kind.as_str(), operation, error.category());
    Outcome::Failed { message: error.to_string(), category: error.category() }
}

async fn reconcile<K: Synced>(object: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconcile_synced(object.as_ref(), &ctx, None).await
}

pub fn error_policy<K: Synced>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after(K::RESOURCE.as_str(), object.as_ref(), error)
}

/// Runs the controller of kind `K` over the objects of `feed`.
pub async fn run_controller<K: Synced>(
    ctx: Arc<Context>,
    feed: super::Feed<K>,
    shutdown: crate::shutdown::Shutdown,
) {
    let controller = super::lean_controller(&ctx, feed, |object: &K| object.reconcile_trigger())
        .graceful_shutdown_on(shutdown);
    super::drain(
        controller.run(reconcile::<K>, error_policy::<K>, ctx.clone()),
        K::RESOURCE.as_str(),
        ctx.metrics.clone(),
    )
    .await;
}
