//! The one path from a completion to its effects. Whatever brings a completion — `POST /events`
//! from a provider service, the built-in stub provider ([`stub`]), or the JetStream completion
//! consumer — the ingest hands it to [`KubeResources::record`]: record `completionState` on the
//! Run, and for a success of a RunConfiguration, create the Runs of every RunConfiguration it
//! triggers ([`fan_out`]) and only then record it as the latest success ([`record`]).
//!
//! The guarantee: at least once in, exactly one Run per trigger out. A completion may arrive
//! any number of times, in any order, from several sources, and the process may die at any
//! point; a completion is acknowledged (HTTP 200, JetStream ack) only after its writes, so it is
//! repeated until they are done. Repeats are harmless because every effect is idempotent: a
//! triggered Run's name is derived from its RunConfiguration and the trigger (a repeat hits
//! AlreadyExists), and `latestRuns.succeeded` only moves forward in run end time (a late or
//! repeated success changes nothing and fires nothing). Completions recorded lately are
//! remembered only to spare the API server the repeated requests.
//!
//! A completion recorded for the first time in this process counts as a finished run
//! (`runs_finished`, and its duration from the completion's start and end times), once even
//! when the ingest and the consumer record it at the same time.

pub mod error;
pub mod fan_out;
pub mod record;
pub mod stub;
pub mod token_review;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use crate::api::{CompletionState, NamespacedName, Provider, Run, RunConfiguration};
use crate::events::auth::service_account_user;
use crate::events::completion::{RunCompletionEvent, RunCompletionEventData, RunCompletionStatus};
use crate::events::ingest::{IngestError, Named, Owned, Resources};
use crate::recent::RecentKeys;

pub use error::CompletionError;

/// The one path of every completion, whatever brought it (see the module header).
pub struct KubeResources {
    client: kube::Client,
    /// The trigger engine: with it, a success creates the Runs it triggers before it is recorded.
    engine: Option<Arc<crate::controller::Context>>,
    /// Completions recorded lately (key → when), so that the completion consumer does not redo
    /// what the ingest just did in this process.
    recorded: RecentKeys,
    metrics: crate::metrics::Metrics,
}

/// How long a recorded completion is remembered.
const RECORDED_MEMORY: Duration = Duration::from_secs(600);
/// Above this many remembered completions, expired ones are dropped.
const RECORDED_PRUNE_ABOVE: usize = 10_000;

impl KubeResources {
    /// Records completions on Runs and RunConfigurations; the RunConfiguration reconcilers
    /// start the Runs a success triggers.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            engine: None,
            recorded: RecentKeys::new(RECORDED_MEMORY, RECORDED_PRUNE_ABOVE),
            metrics: crate::metrics::Metrics::default(),
        }
    }

    /// Also starts the Runs a success triggers, through the trigger engine of `ctx`, before
    /// recording it.
    /// before recording it, and counts finished runs in its metrics.
    pub fn with_trigger_engine(mut self, ctx: Arc<crate::controller::Context>) -> Self {
        self.metrics = ctx.metrics.clone();
        self.engine = Some(ctx);
        self
    }

    fn recorded_key(event: &RunCompletionEvent) -> String {
        format!(
            "{}|{:?}|{:?}|{:?}|{}",
            event.run_id, event.status, event.run_name, event.run_configuration_name, event.pipeline_name
        )
    }
}

fn kube_error(what: &str, name: &NamespacedName, error: &kube::Error) -> IngestError {
    IngestError::Internal(format!("could not read {what} {name}: {error}"))
}

/// How long a completed run ran, from its start and end times.
fn ran(event: &RunCompletionEvent) -> Option<Duration> {
    let (start, end) = (event.run_start_time?, event.run_end_time?);
    (end - start).to_std().ok()
}

/// The Providers `spec` (qualified in `namespace`) and `status` name, without repeats.
fn providers_of(
    namespace: &str,
    spec: &NamespacedName,
    status: Option<&NamespacedName>,
) -> Vec<NamespacedName> {
    let mut providers = Vec::new();
    let candidates =
        [(!spec.is_empty()).then(|| spec.qualified(namespace)), status.filter(|s| !s.is_empty()).cloned()];
    for provider in candidates.into_iter().flatten() {
        if !providers.contains(&provider) {
            providers.push(provider);
        }
    }
    providers
}

fn run_configuration_owned(name: NamespacedName, rc: &RunConfiguration) -> Owned {
    let status = rc.status.as_ref().and_then(|s| s.provider.as_ref());
    Owned {
        kind: "RunConfiguration",
        providers: providers_of(&name.namespace, &rc.spec.run.provider, status),
        name,
    }
}

fn run_owned(name: NamespacedName, run: &Run) -> Owned {
    let status = run.status.as_ref().and_then(|s| s.status.provider.as_ref()).map(|p| &p.name);
    Owned { kind: "Run", providers: providers_of(&name.namespace, &run.spec.provider, status), name }
}

impl Resources for KubeResources {
    fn named<'a>(&'a self, data: &'a RunCompletionEventData) -> BoxFuture<'a, Result<Named, IngestError>> {
        Box::pin(async move {
            let namespace = &data.pipeline_name.namespace;
            let mut resources = Vec::new();
            let mut declared = None;
            let mut missing = Vec::new();
            if let Some(name) = data.run_configuration_name.as_ref().filter(|n| !n.name.is_empty()) {
                let qualified = name.qualified(namespace);
                let indexed = self.engine.as_ref().and_then(|ctx| ctx.index.get(&qualified));
                let rc = match indexed {
                    Some(rc) => Some(rc),
                    None => {
                        kube::Api::<RunConfiguration>::namespaced(self.client.clone(), &qualified.namespace)
                            .get_opt(&qualified.name)
                            .await
                            .map_err(|error| kube_error("RunConfiguration", name, &error))?
                            .map(Arc::new)
                    }
                };
                match rc {
                    Some(rc) => {
                        declared = Some(rc.spec.run.artifacts.clone());
                        resources.push(run_configuration_owned(qualified, &rc));
                    }
                    None => missing.push(format!("RunConfiguration {name}")),
                }
            }
            if let Some(name) = data.run_name.as_ref().filter(|n| !n.name.is_empty()) {
                let qualified = name.qualified(namespace);
                let api: kube::Api<Run> = kube::Api::namespaced(self.client.clone(), &qualified.namespace);
                match api.get_opt(&qualified.name).await {
                    Ok(Some(run)) => {
                        declared.get_or_insert_with(|| run.spec.artifacts.clone());
                        resources.push(run_owned(qualified, &run));
                    }
                    Ok(None) => missing.push(format!("Run {name}")),
                    Err(error) => return Err(kube_error("Run", name, &error)),
                }
            }
            match declared {
                Some(artifacts) => Ok(Named { artifacts, resources }),
                None if missing.is_empty() => {
                    Err(IngestError::Invalid("the event names no RunConfiguration and no Run".into()))
                }
                None => Err(IngestError::Gone(format!("{} not found", missing.join(" and ")))),
            }
        })
    }

    fn provider_service_account<'a>(
        &'a self,
        provider: &'a NamespacedName,
    ) -> BoxFuture<'a, Result<Option<String>, IngestError>> {
        Box::pin(async move {
            let api: kube::Api<Provider> = kube::Api::namespaced(self.client.clone(), &provider.namespace);
            let found = api
                .get_opt(&provider.name)
                .await
                .map_err(|error| kube_error("Provider", provider, &error))?;
            Ok(found.map(|p| service_account_user(&provider.namespace, &p.spec.service_account)))
        })
    }

    fn record<'a>(
        &'a self,
        event: &'a RunCompletionEvent,
        received: Instant,
    ) -> BoxFuture<'a, Result<(), IngestError>> {
        Box::pin(async move {
            let key = Self::recorded_key(event);
            if self.recorded.contains(&key) {
                return Ok(());
            }
            let namespace = &event.pipeline_name.namespace;
            if let Some(name) = event.run_name.as_ref().filter(|n| !n.name.is_empty()) {
                let name = name.qualified(namespace);
                let state = match event.status {
                    RunCompletionStatus::Succeeded => CompletionState::Succeeded,
                    RunCompletionStatus::Failed => CompletionState::Failed,
                };
                let found = record::record_completion(&self.client, &name, state).await.map_err(|error| {
                    IngestError::Internal(format!("could not record the completion on Run {name}: {error}"))
                })?;
                tracing::info!(run = %name.name, run_namespace = %name.namespace, state = ?state, found,
                    "completion recorded on the Run");
            }
            if event.status == RunCompletionStatus::Succeeded
                && let Some(name) = event.run_configuration_name.as_ref().filter(|n| !n.name.is_empty())
            {
                let name = name.qualified(namespace);
                let latest = crate::api::RunReference {
                    provider_id: event.run_id.clone(),
                    artifacts: event.artifacts.clone(),
                    run_end_time: event
                        .run_end_time
                        .and_then(|t| {
                            jiff::Timestamp::from_nanosecond(i128::from(t.timestamp_nanos_opt()?)).ok()
                        })
                        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
                };
                let trigger = self.engine.as_ref().map(|ctx| (ctx, received));
                let found = record::record_latest_succeeded(&self.client, &name, latest, trigger)
                    .await
                    .map_err(|error| {
                        IngestError::Internal(format!(
                            "could not record the latest run of RunConfiguration {name}: {error}"
                        ))
                    })?;
                tracing::info!(runconfiguration = %name, found, "completion recorded on the RunConfiguration");
            }
            if self.recorded.remember(key) {
                self.metrics.run_finished(event.status.as_str(), ran(event));
            }
            Ok(())
        })
    }
}
