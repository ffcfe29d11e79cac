//! The controllers: one reconciler per kind, sharing a [`Context`] (client, event recorder,
//! configuration, provider registry, retry bookkeeping). Each reconciler fetches, validates
//! (pure), builds the desired provider state (pure), calls the provider, computes the status
//! (pure) and writes it with one deterministic server-side apply.

pub mod dependencies;
pub mod fan_out;
pub mod index;
pub mod metrics;
pub mod pipeline_version;
pub mod provider;
pub mod run;
pub mod run_configuration;
pub mod state;
pub mod sync;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::OperatorConfig;
use crate::crds::FIELD_MANAGER;
use crate::provider::ProviderError;
use crate::provider::definitions::DefinitionError;

pub use provider::ProviderRegistry;

/// Annotation that lets a resource be deleted without deleting it on the provider.
pub const FORCE_DELETE_ANNOTATION: &str = "pipelines.kubeflow.org/force-delete";

/// Why a reconcile did not finish. The category is stable: it names Events and metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "KubernetesApiError",
            Self::Provider(error) => error.category(),
            Self::Definition(_) => "InvalidDefinition",
            Self::Invalid(_) => "InvalidResource",
        }
    }
}

/// What every reconciler shares.
pub struct Context {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub config: OperatorConfig,
    pub providers: ProviderRegistry,
    pub metrics: metrics::Metrics,
    /// Every watched RunConfiguration, for the trigger engine.
    pub index: Arc<index::RunConfigurationIndex>,
    /// Failed attempts per object (`kind/namespace/name`), for backoff; cleared on success.
    attempts: DashMap<String, u32>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        config: OperatorConfig,
        providers: ProviderRegistry,
        metrics: metrics::Metrics,
    ) -> Arc<Self> {
        let instance = std::env::var("POD_NAME")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "local".into());
        let recorder = Recorder::new(
            client.clone(),
            Reporter { controller: "kfp-operator".into(), instance: Some(instance) },
        );
        let index = Arc::new(index::RunConfigurationIndex::new(config.namespaces.len()));
        Arc::new(Self { client, recorder, config, providers, metrics, index, attempts: DashMap::new() })
    }

    fn key<K: Resource<DynamicType = ()>>(object: &K) -> String {
        format!("{}/{}/{}", K::kind(&()), object.namespace().unwrap_or_default(), object.name_any())
    }

    /// Records a failed attempt and returns how long to wait before the next one.
    pub fn backoff<K: Resource<DynamicType = ()>>(&self, object: &K) -> Duration {
        let mut attempts = self.attempts.entry(Self::key(object)).or_insert(0);
        let delay = self.config.retry_delay(*attempts);
        *attempts = attempts.saturating_add(1);
        delay
    }

    pub fn succeeded<K: Resource<DynamicType = ()>>(&self, object: &K) {
        self.attempts.remove(&Self::key(object));
    }

    /// Publishes a Kubernetes Event about `object`; failures are logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.to_owned(),
            note: Some(truncate(note, 1000)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%error, object = %Self::key(object), "could not publish an event");
        }
    }

    /// Server-side applies `status` as the status of `object`.
    pub async fn apply_status<K>(&self, object: &K, status: &impl Serialize) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &object.namespace().unwrap_or_default());
        let body = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        api.patch_status(&object.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body))
            .await?;
        Ok(())
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The watch events of `api` reflected into `writer`'s store, with objects kept without
/// `metadata.managedFields`, which the operator never reads and which are often most of an
/// object that is written with server-side apply.
pub fn lean_reflector<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: kube::runtime::reflector::store::Writer<K>,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    use kube::runtime::WatchStreamExt;
    watcher(api, config)
        .default_backoff()
        .modify(|object| object.managed_fields_mut().clear())
        .reflect(writer)
}

/// A controller over `api` whose cache is a [`lean_reflector`].
pub fn lean_controller<K>(api: Api<K>) -> kube::runtime::Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    use kube::runtime::WatchStreamExt;
    let (store, writer) = kube::runtime::reflector::store();
    kube::runtime::Controller::for_stream(
        lean_reflector(api, watcher_config(), writer).applied_objects(),
        store,
    )
}

/// The watcher configuration for every primary kind.
pub fn watcher_config() -> watcher::Config {
    watcher::Config::default()
}

/// One `Api` per configured namespace, or a single cluster-wide one when none are configured;
/// one controller per entry is started.
pub fn apis<K>(client: &kube::Client, config: &OperatorConfig) -> Vec<Api<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    if config.namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        config.namespaces.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect()
    }
}

/// A shutdown signal every controller can wait on.
pub type Shutdown = futures::future::Shared<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>;

/// Turns a future into a [`Shutdown`] signal.
pub fn shutdown_signal(signal: impl std::future::Future<Output = ()> + Send + 'static) -> Shutdown {
    let boxed: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = Box::pin(signal);
    futures::FutureExt::shared(boxed)
}

/// Runs every controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: Shutdown) {
    let mut tasks = Vec::new();
    for namespace_apis in 0..apis::<crate::api::Pipeline>(&ctx.client, &ctx.config).len() {
        tasks.push(tokio::spawn(sync::run_controller::<crate::api::Pipeline>(
            ctx.clone(),
            namespace_apis,
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(sync::run_controller::<crate::api::Experiment>(
            ctx.clone(),
            namespace_apis,
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(sync::run_controller::<crate::api::RunSchedule>(
            ctx.clone(),
            namespace_apis,
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(run::run_controller(ctx.clone(), namespace_apis, shutdown.clone())));
        tasks.push(tokio::spawn(run_configuration::run_controller(
            ctx.clone(),
            namespace_apis,
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(provider::run_controller(ctx.clone(), namespace_apis, shutdown.clone())));
    }
    for task in tasks {
        if let Err(error) = task.await {
            tracing::error!(%error, "a controller task ended abnormally");
        }
    }
}

/// Logs and counts the results a controller stream yields.
pub async fn drain<S, T, E>(stream: S, kind: &'static str, metrics: metrics::Metrics)
where
    S: futures::Stream<Item = Result<T, E>>,
    T: Debug,
    E: std::fmt::Display,
{
    stream
        .for_each(|result| {
            metrics.reconciled(kind, result.is_ok());
            async move {
                match result {
                    Ok(object) => tracing::debug!(kind, ?object, "reconciled"),
                    Err(error) => tracing::debug!(kind, %error, "reconcile did not finish"),
                }
            }
        })
        .await;
}
