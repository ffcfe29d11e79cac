//! The controllers: one reconciler per kind over every watched namespace, sharing a
//! [`Context`] (client, event recorder, configuration, provider registry, retry bookkeeping).
//! Each reconcile observes (reads what its plan needs), plans (a pure function to the one
//! next step), applies it (at most one provider call) and writes the status once; a failure's
//! [`ErrorClass`] decides the requeue in the one [`error_policy`].

pub mod error;
pub mod pipeline;
pub mod pipeline_version;
pub mod provider;
pub mod run;
pub mod run_configuration;
pub mod state;
pub mod sync;
pub mod watch;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::conditions::SyncState;
use crate::config::OperatorConfig;
use crate::crds::FIELD_MANAGER;
pub use error::{Error, ErrorClass, Failure};
pub use provider::ProviderRegistry;

/// Annotation that lets a resource be deleted without deleting it on the provider.
pub const FORCE_DELETE_ANNOTATION: &str = "pipelines.kubeflow.org/force-delete";

/// What every reconciler shares.
pub struct Context {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub config: OperatorConfig,
    pub providers: ProviderRegistry,
    pub metrics: crate::metrics::Metrics,
    /// Every watched RunConfiguration, for the trigger engine.
    pub index: Arc<crate::triggers::index::RunConfigurationIndex>,
    /// The state of every watch, for `/readyz`.
    pub watches: Arc<watch::WatchHealth>,
    /// Failed attempts per object (`kind/namespace/name`) at a generation, for backoff; cleared
    /// on success and started over by a new generation.
    attempts: DashMap<String, (Option<i64>, u32)>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        config: OperatorConfig,
        providers: ProviderRegistry,
        metrics: crate::metrics::Metrics,
    ) -> Arc<Self> {
        let instance = std::env::var("POD_NAME")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "local".into());
        let recorder = Recorder::new(
            client.clone(),
            Reporter { controller: "kfp-operator".into(), instance: Some(instance) },
        );
        let index = Arc::new(crate::triggers::index::RunConfigurationIndex::new(scopes(&config).len()));
        Arc::new(Self {
            client,
            recorder,
            config,
            providers,
            metrics,
            index,
            watches: watch::WatchHealth::new(),
            attempts: DashMap::new(),
        })
    }

    fn key<K: Resource<DynamicType = ()>>(object: &K) -> String {
        format!("{}/{}/{}", K::kind(&()), object.namespace().unwrap_or_default(), object.name_any())
    }

    /// How many attempts at the object's current generation have failed.
    fn failed_attempts<K: Resource<DynamicType = ()>>(&self, object: &K) -> u32 {
        self.attempts
            .get(&Self::key(object))
            .filter(|entry| entry.0 == object.meta().generation)
            .map_or(0, |entry| entry.1)
    }

    /// How long [`Self::backoff`] will wait after the next failure of `object`.
    pub fn next_backoff<K: Resource<DynamicType = ()>>(&self, object: &K) -> Duration {
        self.config.retry_delay(self.failed_attempts(object))
    }

    /// Records a failed attempt and returns how long to wait before the next one.
    pub fn backoff<K: Resource<DynamicType = ()>>(&self, object: &K) -> Duration {
        let failed = self.failed_attempts(object);
        self.attempts.insert(Self::key(object), (object.meta().generation, failed.saturating_add(1)));
        self.config.retry_delay(failed)
    }

    /// The action after a failed reconcile of `object`, as its [`ErrorClass`] decides (the
    /// failure is logged and counted by [`instrumented`]): a transient failure retried on the
    /// backoff, a wait looked at again after `retryMaxDelay` (the awaited object's change wakes
    /// it sooner), a stalled object left until it changes, with a Warning Event unless its
    /// status shows the failure already.
    pub fn retry_after<K: Resource<DynamicType = ()>>(&self, object: &K, error: &Error) -> Action {
        let (category, class) = (error.category(), error.class());
        let key = Self::key(object);
        if class == ErrorClass::Stalled && !error.is_recorded() {
            let (recorder, reference) = (self.recorder.clone(), object.object_ref(&()));
            let note = format!("{error}; not retried until the resource changes");
            tokio::spawn(async move { publish_event(&recorder, reference, key, true, category, note).await });
        }
        let backoff = if class == ErrorClass::Transient { self.backoff(object) } else { Duration::ZERO };
        class
            .requeue_after(backoff, self.config.retry_max_delay)
            .map_or_else(Action::await_change, Action::requeue)
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
        publish_event(&self.recorder, object.object_ref(&()), Self::key(object), warning, reason, note).await;
    }

    /// The object as the API server holds it now (`None`: gone). A controller's cache can lag
    /// behind its own last write when another object's change wakes a reconcile at once; a
    /// plan made on that stale copy would repeat a provider call, so the synced kinds plan on
    /// this read.
    pub async fn latest<K>(&self, object: &K) -> Result<Option<K>, Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &object.namespace().unwrap_or_default());
        Ok(api.get_opt(&object.name_any()).await?)
    }

    /// Makes the status of `object` what `status` says, except its top-level fields named in
    /// `others` (written by someone else), with a JSON merge patch against the status the API
    /// server holds now: fields `status` leaves out are removed. (Server-side apply cannot be
    /// used here: API servers of the 1.20 line turn an object whose last field an apply removes
    /// into `null`, which the schema then refuses.) Writes nothing when nothing differs.
    pub async fn patch_status<K>(
        &self,
        object: &K,
        status: &impl Serialize,
        others: &[&str],
    ) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &object.namespace().unwrap_or_default());
        let desired = serde_json::to_value(status).map_err(|e| Error::Invalid(format!("status: {e}")))?;
        let current = api.get_status(&object.name_any()).await?;
        let mut current = serde_json::to_value(&current)
            .map_err(|e| Error::Invalid(format!("status: {e}")))?
            .get("status")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        if let Some(fields) = current.as_object_mut() {
            fields.retain(|key, _| !others.contains(&key.as_str()));
        }
        let Some(patch) = merge_patch(&current, &desired) else {
            return Ok(());
        };
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        match api
            .patch_status(&object.name_any(), &params, &Patch::Merge(serde_json::json!({ "status": patch })))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 422 => {
                let message = format!("the API server refused the status: {}", status.message);
                self.event(object, true, "StatusWriteRefused", message.clone()).await;
                Err(Error::StatusRefused(message))
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// Publishes a Kubernetes Event about the object `reference` (`key` in logs); failures are
/// logged, never fatal.
async fn publish_event(
    recorder: &Recorder,
    reference: k8s_openapi::api::core::v1::ObjectReference,
    key: String,
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
    if let Err(error) = recorder.publish(&event, &reference).await {
        tracing::warn!(%error, object = %key, "could not publish an event");
    }
}

/// The JSON merge patch (RFC 7386) that turns `current` into `desired`: changed values, and
/// `null` for the fields of objects that `desired` leaves out; `None` when they are equal.
pub fn merge_patch(current: &serde_json::Value, desired: &serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::Value;
    if current == desired {
        return None;
    }
    let (Value::Object(current), Value::Object(desired)) = (current, desired) else {
        return Some(desired.clone());
    };
    let mut patch = serde_json::Map::new();
    for (key, value) in desired {
        match current.get(key) {
            Some(old) => {
                if let Some(change) = merge_patch(old, value) {
                    patch.insert(key.clone(), change);
                }
            }
            None => {
                patch.insert(key.clone(), value.clone());
            }
        }
    }
    for key in current.keys().filter(|key| !desired.contains_key(*key)) {
        patch.insert(key.clone(), Value::Null);
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
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

/// The name of a watch of `K` in `scope` (a namespace, or all), for `/readyz` and logs.
fn watch_name<K: Resource<DynamicType = ()>>(scope: Option<&str>, role: &str) -> String {
    let scope = scope.map_or_else(|| "all namespaces".to_owned(), |ns| format!("namespace {ns}"));
    format!("{}s in {scope} ({role})", K::kind(&()))
}

/// A namespaced kind the operator watches.
pub trait Watched:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// One consumer's copy of a kind's watches: per watched namespace (or one for the cluster),
/// the namespace and its events, objects kept without `metadata.managedFields` (which the
/// operator never reads and which are often most of an object written with server-side apply).
pub type Feed<K> = Vec<(Option<String>, futures::channel::mpsc::UnboundedReceiver<watcher::Event<K>>)>;

/// One watch of `K` per watched namespace ([`watch::watch`], reported to the context's health),
/// each shared by `N` consumers: the `i`-th feed is the `i`-th consumer's. `observe` gives each
/// namespace's watch an observer of its events (the trigger engine's index).
pub fn feeds<K: Watched, O, const N: usize>(
    ctx: &Context,
    config: watcher::Config,
    role: &str,
    mut observe: impl FnMut(Option<String>) -> O,
) -> [Feed<K>; N]
where
    O: FnMut(&watcher::Event<K>) + Send + 'static,
{
    use futures::TryStreamExt;
    use kube::runtime::WatchStreamExt;
    let mut feeds: [Feed<K>; N] = std::array::from_fn(|_| Vec::new());
    for scope in scopes(&ctx.config) {
        let api: Api<K> = match &scope {
            Some(namespace) => Api::namespaced(ctx.client.clone(), namespace),
            None => Api::all(ctx.client.clone()),
        };
        let reporter = ctx.watches.register(watch_name::<K>(scope.as_deref(), role));
        let mut observer = observe(scope.clone());
        let source = watch::watch(api, config.clone(), reporter)
            .modify(|object| object.managed_fields_mut().clear())
            .inspect_ok(move |event| observer(event));
        for (feed, copy) in feeds.iter_mut().zip(watch::share(source, N)) {
            feed.push((scope.clone(), copy));
        }
    }
    feeds
}

/// [`feeds`] without an observer.
pub fn plain_feeds<K: Watched, const N: usize>(
    ctx: &Context,
    config: watcher::Config,
    role: &str,
) -> [Feed<K>; N] {
    feeds(ctx, config, role, |_| |_: &watcher::Event<K>| {})
}

/// A feed's events as the events of one watch, reflected into `writer`'s store.
pub fn reflect<K>(
    feed: Feed<K>,
    store: kube::runtime::reflector::Store<K>,
    writer: kube::runtime::reflector::store::Writer<K>,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
{
    use kube::runtime::WatchStreamExt;
    let events = match <[_; 1]>::try_from(feed) {
        Ok([(_, only)]) => only.boxed(),
        Err(feed) => {
            let named = feed.into_iter().map(|(scope, events)| (scope.unwrap_or_default(), events)).collect();
            watch::merge_namespaces(named, store).boxed()
        }
    };
    events.map(Ok).reflect(writer)
}

/// The objects a feed sees change, for a controller's `watches_stream`/`owns_stream`.
pub fn changed<K>(feed: Feed<K>) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Clone + Send + 'static,
{
    futures::stream::select_all(feed.into_iter().map(|(_, events)| events)).filter_map(|event| {
        std::future::ready(match event {
            watcher::Event::Apply(object)
            | watcher::Event::InitApply(object)
            | watcher::Event::Delete(object) => Some(Ok(object)),
            watcher::Event::Init | watcher::Event::InitDone => None,
        })
    })
}

/// The objects a feed sees created or changed, not deleted: for owned objects whose removal
/// (a TTL, garbage collection) must not wake their owner.
pub fn applied<K>(feed: Feed<K>) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Clone + Send + 'static,
{
    futures::stream::select_all(feed.into_iter().map(|(_, events)| events)).filter_map(|event| {
        std::future::ready(match event {
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => Some(Ok(object)),
            watcher::Event::Delete(_) | watcher::Event::Init | watcher::Event::InitDone => None,
        })
    })
}

/// What a reconcile of an object itself acts on: its identity, spec (generation), deletion,
/// finalizers and annotations, and `extra` (a part of the status written by someone else).
/// Not the status the reconciler writes itself, so that its own writes do not wake it.
pub fn lifecycle_hash<K: Resource>(object: &K, extra: impl std::hash::Hash) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = object.meta();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    meta.uid.hash(&mut hasher);
    meta.generation.hash(&mut hasher);
    meta.deletion_timestamp.is_some().hash(&mut hasher);
    meta.finalizers.hash(&mut hasher);
    meta.annotations.hash(&mut hasher);
    extra.hash(&mut hasher);
    Some(hasher.finish())
}

/// A controller of the objects of `feed`, cached in one store (counted in the resources
/// gauge), reconciling an object when `trigger` (a [`lifecycle_hash`]) changes, with the short
/// trigger pause of [`watch`]; the objects it wakes are due in `queue`.
pub fn lean_controller<K>(
    ctx: &Context,
    feed: Feed<K>,
    queue: &crate::metrics::QueueDepth,
    trigger: fn(&K) -> Option<u64>,
) -> kube::runtime::Controller<K>
where
    K: Resource<DynamicType = ()> + Tracked + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    use kube::runtime::{PredicateConfig, WatchStreamExt};
    let (store, writer) = kube::runtime::reflector::store();
    let changes = reflect(feed, store.clone(), writer)
        .applied_objects()
        .predicate_filter(trigger, PredicateConfig::default());
    track_resources(ctx, store.clone());
    kube::runtime::Controller::for_stream(waking_self(queue, changes), store)
        .trigger_backoff(watch::ShortPause)
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency))
}

/// The watcher configuration for every primary kind.
pub fn watcher_config() -> watcher::Config {
    watcher::Config::default()
}

/// The watched scopes: each configured namespace, or the whole cluster (`None`) when none are.
pub fn scopes(config: &OperatorConfig) -> Vec<Option<String>> {
    if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    }
}

/// One `Api` per configured namespace, or a single cluster-wide one when none are configured.
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

/// The RunConfigurations' watches, feeding the trigger engine's index, shared `N` ways.
fn indexed_run_configurations<const N: usize>(ctx: &Context) -> [Feed<crate::api::RunConfiguration>; N] {
    let index = ctx.index.clone();
    feeds(ctx, watcher_config(), "shared", move |scope| {
        let mut feeder = index.feeder(scope);
        move |event: &watcher::Event<crate::api::RunConfiguration>| feeder.observe(event)
    })
}

/// The RunConfiguration controller alone, with the trigger engine's index (for benchmarks).
pub async fn run_run_configurations(ctx: Arc<Context>, shutdown: crate::shutdown::Shutdown) {
    let [reconciled, dependants] = indexed_run_configurations(&ctx);
    let [pipelines] = plain_feeds(&ctx, watcher_config(), "RunConfigurations running them");
    run_configuration::run_controller(ctx, reconciled, dependants, pipelines, shutdown).await;
}

/// Runs one controller per kind over every watched namespace until `shutdown` resolves. The
/// RunConfigurations and Pipelines are watched once per namespace, and each watch is shared by
/// the controllers that follow them.
pub async fn run(ctx: Arc<Context>, shutdown: crate::shutdown::Shutdown) {
    use crate::api::{Experiment, Pipeline, RunSchedule};
    let [rc_reconciled, rc_dependants, rc_for_runs] = indexed_run_configurations(&ctx);
    let [pipelines, pipelines_for_rcs, pipelines_for_runs] =
        plain_feeds::<Pipeline, 3>(&ctx, watcher_config(), "shared");
    let [experiments] = plain_feeds::<Experiment, 1>(&ctx, watcher_config(), "reconciled");
    let [schedules] = plain_feeds::<RunSchedule, 1>(&ctx, watcher_config(), "reconciled");
    let [runs] = plain_feeds::<crate::api::Run, 1>(&ctx, watcher_config(), "reconciled");
    let [providers, for_pipelines, for_experiments, for_schedules, for_runs] =
        plain_feeds::<crate::api::Provider, 5>(&ctx, watcher_config(), "shared");
    let tasks = vec![
        tokio::spawn(pipeline::run_controller(ctx.clone(), pipelines, for_pipelines, shutdown.clone())),
        tokio::spawn(sync::run_controller(ctx.clone(), experiments, for_experiments, shutdown.clone())),
        tokio::spawn(sync::run_controller(ctx.clone(), schedules, for_schedules, shutdown.clone())),
        tokio::spawn(run::run_controller(
            ctx.clone(),
            runs,
            run::Wakers {
                pipelines: pipelines_for_runs,
                run_configurations: rc_for_runs,
                providers: for_runs,
            },
            shutdown.clone(),
        )),
        tokio::spawn(run_configuration::run_controller(
            ctx.clone(),
            rc_reconciled,
            rc_dependants,
            pipelines_for_rcs,
            shutdown.clone(),
        )),
        tokio::spawn(provider::run_controller(ctx.clone(), providers, shutdown.clone())),
    ];
    for task in tasks {
        if let Err(error) = task.await {
            tracing::error!(%error, "a controller task ended abnormally");
        }
    }
}

/// The error policy of every controller: [`Context::retry_after`].
pub fn error_policy<K, C>(object: Arc<K>, error: &Error, ctx: Arc<C>) -> Action
where
    K: Resource<DynamicType = ()>,
    C: AsRef<Context>,
{
    ctx.as_ref().as_ref().retry_after(object.as_ref(), error)
}

impl AsRef<Context> for Context {
    fn as_ref(&self) -> &Context {
        self
    }
}

/// A controller's name in metrics (the kind, lower case: `runconfiguration`).
pub fn controller_name<K: Resource<DynamicType = ()>>() -> String {
    K::kind(&()).to_ascii_lowercase()
}

/// The key of an object in its controller's queue.
fn queue_key(namespace: Option<&str>, name: &str) -> String {
    format!("{}/{name}", namespace.unwrap_or_default())
}

/// A new id for one reconcile: unique in this process and across restarts.
fn reconciliation_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static STARTED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let started = *STARTED.get_or_init(|| {
        let nanos = jiff::Timestamp::now().as_nanosecond();
        (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
    });
    format!("{:08x}-{:06x}", started & 0xffff_ffff, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The span of one reconcile: the controller as `logger`, the object under its kind's key
/// (`"pipeline": "training-pipeline"`), its namespace, and a new `reconciliation_id`.
macro_rules! reconcile_span {
    ($controller:expr, $name:expr, $namespace:expr, $id:expr; $($kind:ident),+) => {
        match $controller {
            $(stringify!($kind) => tracing::info_span!(
                "reconcile",
                logger = %format!("{}-controller", stringify!($kind)),
                $kind = %$name,
                namespace = %$namespace,
                reconciliation_id = %$id,
            ),)+
            other => tracing::info_span!(
                "reconcile",
                logger = %format!("{other}-controller"),
                name = %$name,
                namespace = %$namespace,
                reconciliation_id = %$id,
            ),
        }
    };
}

/// `reconcile` with what every reconcile shares: it leaves the controller's queue, runs in a
/// span of its own ([`reconcile_span!`]), is counted and timed by result, and ends with one
/// line (`Pipeline reconciliation completed`, with `duration_ms`; a failure with its category
/// and error).
pub fn instrumented<K, C, F, Fut>(
    queue: crate::metrics::QueueDepth,
    reconcile: F,
) -> impl FnMut(Arc<K>, Arc<C>) -> futures::future::BoxFuture<'static, Result<Action, Error>>
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
    C: AsRef<Context> + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<C>) -> Fut,
    Fut: std::future::Future<Output = Result<Action, Error>> + Send + 'static,
{
    use tracing::Instrument;
    move |object, ctx| {
        let kind = K::kind(&());
        let controller = kind.to_ascii_lowercase();
        let (namespace, name) = (object.namespace().unwrap_or_default(), object.name_any());
        queue.started(&queue_key(Some(&namespace), &name));
        let span = reconcile_span!(controller.as_str(), name, namespace, reconciliation_id();
            pipeline, run, runconfiguration, runschedule, experiment, provider);
        let reconciling = reconcile(object, ctx.clone()).instrument(span.clone());
        Box::pin(async move {
            let started = std::time::Instant::now();
            let result = reconciling.await;
            let took = started.elapsed();
            let metrics = &ctx.as_ref().as_ref().metrics;
            let duration_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
            let _entered = span.enter();
            match &result {
                Ok(_) => {
                    metrics.reconciled(&controller, "ok", took);
                    tracing::info!(duration_ms, "{kind} reconciliation completed");
                }
                Err(error) => {
                    let (category, class) = (error.category(), error.class());
                    metrics.reconciled(&controller, class.as_str(), took);
                    metrics.reconcile_failed(&controller, category);
                    if class == ErrorClass::Waiting {
                        tracing::info!(duration_ms, category, %error, "{kind} reconciliation waiting");
                    } else {
                        tracing::warn!(duration_ms, category, class = class.as_str(), %error, "{kind} reconciliation failed");
                    }
                }
            }
            result
        })
    }
}

/// `mapper` of a `watches_stream`, marking the objects it wakes as due in `queue`.
pub fn waking<K, Other, I>(
    queue: &crate::metrics::QueueDepth,
    mapper: impl Fn(Other) -> I + Send + Sync + 'static,
) -> impl Fn(Other) -> Vec<ObjectRef<K>> + Send + Sync + 'static
where
    K: Resource<DynamicType = ()>,
    I: IntoIterator<Item = ObjectRef<K>>,
{
    let queue = queue.clone();
    move |other| {
        let woken: Vec<ObjectRef<K>> = mapper(other).into_iter().collect();
        for object in &woken {
            queue.due(queue_key(object.namespace.as_deref(), &object.name));
        }
        woken
    }
}

/// The objects of an `owns_stream`, marking their owners of kind `K` as due in `queue`.
pub fn waking_owners<K, Child>(
    queue: &crate::metrics::QueueDepth,
    children: impl futures::Stream<Item = Result<Child, watcher::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<Child, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()>,
    Child: Resource + Send + 'static,
{
    use futures::TryStreamExt;
    let queue = queue.clone();
    children.inspect_ok(move |child| {
        let namespace = child.namespace();
        for owner in child.owner_references().iter().filter(|owner| owner.kind == K::kind(&())) {
            queue.due(queue_key(namespace.as_deref(), &owner.name));
        }
    })
}

/// The objects a controller's own stream wakes, marked as due in `queue`.
pub(crate) fn waking_self<K>(
    queue: &crate::metrics::QueueDepth,
    objects: impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Send + 'static,
{
    use futures::TryStreamExt;
    let queue = queue.clone();
    objects.inspect_ok(move |object| queue.due(queue_key(object.namespace().as_deref(), &object.name_any())))
}

/// A kind whose objects the resources gauge counts by their `Synchronized` state.
pub trait Tracked {
    fn sync_state(&self) -> SyncState;
}

fn state_of(status: Option<&crate::api::Status>) -> SyncState {
    status.map_or(SyncState::Unknown, SyncState::of)
}

/// [`Tracked`] for kinds whose status is the common [`crate::api::Status`].
macro_rules! tracked_by_common_status {
    ($($kind:ty),+) => {
        $(impl Tracked for $kind {
            fn sync_state(&self) -> SyncState {
                state_of(self.status.as_ref())
            }
        })+
    };
}

tracked_by_common_status!(
    crate::api::Pipeline,
    crate::api::Experiment,
    crate::api::RunSchedule,
    crate::api::Provider
);

impl Tracked for crate::api::Run {
    fn sync_state(&self) -> SyncState {
        state_of(self.status.as_ref().map(|status| &status.status))
    }
}

impl Tracked for crate::api::RunConfiguration {
    fn sync_state(&self) -> SyncState {
        self.status
            .as_ref()
            .and_then(|status| SyncState::of_conditions(&status.conditions))
            .unwrap_or(SyncState::Unknown)
    }
}

/// Counts the objects of `store` in the resources gauge, by state, at every scrape.
pub(crate) fn track_resources<K>(ctx: &Context, store: kube::runtime::reflector::Store<K>)
where
    K: Resource<DynamicType = ()> + Tracked + Clone + Send + Sync + 'static,
{
    ctx.metrics.resources().track(&controller_name::<K>(), move || {
        store.state().iter().map(|object| object.sync_state().as_str().to_owned()).collect()
    });
}

/// Logs the results a controller stream yields; an object found gone leaves `queue`.
pub async fn drain<S, T>(stream: S, queue: crate::metrics::QueueDepth)
where
    S: futures::Stream<Item = Result<T, kube::runtime::controller::Error<Error, watcher::Error>>>,
    T: Debug,
{
    use kube::runtime::controller::Error as ControllerError;
    stream
        .for_each(|result| {
            match result {
                Ok(object) => tracing::debug!(?object, "reconciled"),
                Err(ControllerError::ObjectNotFound(object)) => {
                    queue.started(&queue_key(object.namespace.as_deref(), &object.name));
                }
                Err(ControllerError::ReconcilerFailed(..)) => {}
                Err(error) => tracing::debug!(%error, "reconcile did not finish"),
            }
            std::future::ready(())
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_merge_patch_removes_what_the_desired_status_leaves_out() {
        let current = json!({
            "observedGeneration": 1,
            "dependencies": {"pipeline": {"version": "v1"}, "runConfigurations": {"a": {"providerId": "r1"}}},
            "triggers": {"runConfigurations": {"a": {}}},
            "conditions": [{"type": "Ready", "status": "True"}],
        });
        let desired = json!({
            "observedGeneration": 2,
            "dependencies": {"runConfigurations": {"a": {"providerId": "r1"}}},
            "conditions": [{"type": "Ready", "status": "False"}],
        });
        assert_eq!(
            merge_patch(&current, &desired),
            Some(json!({
                "observedGeneration": 2,
                "dependencies": {"pipeline": null},
                "triggers": null,
                "conditions": [{"type": "Ready", "status": "False"}],
            }))
        );
        assert_eq!(merge_patch(&desired, &desired), None, "nothing to write");
        assert_eq!(merge_patch(&serde_json::Value::Null, &desired), Some(desired.clone()));
    }

    #[tokio::test]
    async fn backoff_doubles_and_starts_over_at_a_new_generation_or_a_success() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let ctx = Context::new(
            client,
            OperatorConfig::default(),
            ProviderRegistry::new(Default::default(), None),
            Default::default(),
        );
        let mut pipeline = crate::api::Pipeline::new("p", Default::default());
        pipeline.metadata.namespace = Some("ns".into());
        pipeline.metadata.generation = Some(1);
        let delays: Vec<u64> = (0..4).map(|_| ctx.backoff(&pipeline).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8]);
        assert_eq!(ctx.next_backoff(&pipeline), Duration::from_secs(16), "peeking does not count");
        assert_eq!(ctx.backoff(&pipeline), Duration::from_secs(16));
        pipeline.metadata.generation = Some(2);
        assert_eq!(ctx.backoff(&pipeline), Duration::from_secs(1), "a new generation starts over");
        ctx.succeeded(&pipeline);
        assert_eq!(ctx.next_backoff(&pipeline), Duration::from_secs(1));
    }
}
