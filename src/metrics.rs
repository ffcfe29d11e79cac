//! The operator's metrics: every series `/metrics` exposes under the `kfp_operator` prefix, the
//! [`Metrics`] handle the edges (controllers, ingest, sinks, the completion path) record into,
//! the controllers' queue depth ([`QueueDepth`]) and the resources gauge computed at scrape
//! time from the controllers' caches ([`ResourceStates`]).
//!
//! Label sets are bounded: controllers, kinds, results, error categories, Providers, sinks and
//! states; never an object's namespace or name.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The registry's prefix.
pub const PREFIX: &str = "kfp_operator";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `pipeline`, `run`, `runconfiguration`, `runschedule`, `experiment` or `provider`.
    pub controller: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: String,
    /// `ok`, `error` (transient), `waiting` or `stalled`.
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileErrorLabels {
    pub controller: String,
    /// The error's stable category (`ProviderFailed`, `KubernetesApiError`, …).
    pub category: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderCallLabels {
    /// The Provider, `namespace/name`.
    pub provider: String,
    /// `pipeline`, `run`, `runschedule` or `experiment`.
    pub kind: String,
    /// `create`, `update` or `delete`.
    pub operation: String,
    /// `ok` or the failure's category.
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLatencyLabels {
    pub provider: String,
    pub kind: String,
    pub operation: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunStatusLabels {
    /// `succeeded` or `failed`.
    pub status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    /// `pipeline`, `run`, `runconfiguration`, `runschedule`, `experiment` or `provider`.
    pub kind: String,
    /// The reason of the `Synchronized` condition, `Unknown` without one.
    pub state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    /// `accepted` or the ingest error's category.
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    /// `jetstream`, `argo-eventbus`, `legacy-nats` or `memory`.
    pub sink: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    /// `onChangePipeline`, `onChangeRunSpec` or `runConfiguration`.
    pub trigger: String,
    /// `completion` (the fan-out on a completion) or `reconcile`.
    pub path: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Durations of calls inside the operator: 1 ms to about 33 s.
fn call_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Durations of runs: 1 s to about 18 h.
fn run_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 17))
}

/// Dependants per completion: 1 to 4096.
fn fan_out_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// Every series, shared by the controllers, the ingest and the completion path. Cloning shares
/// the series.
#[derive(Debug, Clone)]
pub struct Metrics {
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_errors: Family<ReconcileErrorLabels, Counter>,
    reconcile_duration: Histograms<ControllerLabels>,
    queue_depth: Family<ControllerLabels, Gauge>,
    provider_calls: Family<ProviderCallLabels, Counter>,
    provider_call_duration: Histograms<ProviderLatencyLabels>,
    runs_finished: Family<RunStatusLabels, Counter>,
    run_duration: Histograms<RunStatusLabels>,
    resources: Arc<ResourceStates>,
    events_ingested: Family<IngestLabels, Counter>,
    events_published: Family<SinkLabels, Counter>,
    events_acked: Family<SinkLabels, Counter>,
    events_duplicates: Family<SinkLabels, Counter>,
    events_dead_lettered: Family<SinkLabels, Counter>,
    event_publish_duration: Histograms<SinkLabels>,
    triggered_runs: Family<TriggerLabels, Counter>,
    trigger_fan_out_size: Histogram,
    trigger_latency: Histogram,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(call_buckets),
            queue_depth: Family::default(),
            provider_calls: Family::default(),
            provider_call_duration: Family::new_with_constructor(call_buckets),
            runs_finished: Family::default(),
            run_duration: Family::new_with_constructor(run_buckets),
            resources: Arc::default(),
            events_ingested: Family::default(),
            events_published: Family::default(),
            events_acked: Family::default(),
            events_duplicates: Family::default(),
            events_dead_lettered: Family::default(),
            event_publish_duration: Family::new_with_constructor(call_buckets),
            triggered_runs: Family::default(),
            trigger_fan_out_size: fan_out_buckets(),
            trigger_latency: call_buckets(),
            leader: Gauge::default(),
        }
    }
}

fn sink(name: &str) -> SinkLabels {
    SinkLabels { sink: name.into() }
}

fn controller(name: &str) -> ControllerLabels {
    ControllerLabels { controller: name.into() }
}

impl Metrics {
    /// A registry with the `kfp_operator` prefix holding every series, `build_info` included.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        self.register(&mut registry);
        registry
    }

    /// Registers every series under `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "controller_reconcile",
            "Reconciles by controller and result (ok, error, waiting, stalled)",
            self.reconciles.clone(),
        );
        registry.register(
            "controller_reconcile_errors",
            "Reconciles that did not finish, by controller and error category",
            self.reconcile_errors.clone(),
        );
        registry.register(
            "controller_reconcile_duration_seconds",
            "Time one reconcile took, by controller",
            self.reconcile_duration.clone(),
        );
        registry.register(
            "controller_queue_depth",
            "Objects due to be reconciled because a watch woke them, not yet started, by controller",
            self.queue_depth.clone(),
        );
        registry.register(
            "provider_calls",
            "Calls to providers by Provider, resource kind, operation and result (ok or the failure's category)",
            self.provider_calls.clone(),
        );
        registry.register(
            "provider_call_duration_seconds",
            "Time one provider call took, by Provider, resource kind and operation",
            self.provider_call_duration.clone(),
        );
        registry.register(
            "runs_finished",
            "Runs whose completion was recorded, by status",
            self.runs_finished.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "Time from a run's start to its end as its completion reports them, by status",
            self.run_duration.clone(),
        );
        registry.register(
            "events_ingested",
            "Completions handed to the ingest, by result (accepted or the rejection's category)",
            self.events_ingested.clone(),
        );
        registry.register(
            "events_published",
            "CloudEvents a sink accepted, by sink",
            self.events_published.clone(),
        );
        registry.register(
            "events_acked",
            "Messages the bus acknowledged as newly stored, by sink",
            self.events_acked.clone(),
        );
        registry.register(
            "events_duplicates",
            "Messages the bus acknowledged as duplicates of stored ones (same message id), by sink",
            self.events_duplicates.clone(),
        );
        registry.register(
            "events_dead_lettered",
            "Messages the completion consumer moved to the dead-letter subject, by sink",
            self.events_dead_lettered.clone(),
        );
        registry.register(
            "event_publish_duration_seconds",
            "Time a sink took to publish one completion's CloudEvents, by sink",
            self.event_publish_duration.clone(),
        );
        registry.register(
            "triggered_runs",
            "Runs created by RunConfiguration triggers, by trigger and by the path that created them",
            self.triggered_runs.clone(),
        );
        registry.register(
            "trigger_fan_out_size",
            "Dependant Runs one completion started, for completions that started any",
            self.trigger_fan_out_size.clone(),
        );
        registry.register(
            "trigger_latency_seconds",
            "Time from a completion's arrival at the ingest to a dependant Run being created",
            self.trigger_latency.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica leads (or leader election is off), else 0",
            self.leader.clone(),
        );
        registry.register_collector(Box::new(self.resources.clone()));
    }

    /// Counts a finished reconcile and its duration.
    pub fn reconciled(&self, controller_name: &str, result: &str, took: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels { controller: controller_name.into(), result: result.into() })
            .inc();
        self.reconcile_duration.get_or_create(&controller(controller_name)).observe(took.as_secs_f64());
    }

    /// Counts a reconcile that failed with `category`.
    pub fn reconcile_failed(&self, controller_name: &str, category: &str) {
        self.reconcile_errors
            .get_or_create(&ReconcileErrorLabels {
                controller: controller_name.into(),
                category: category.into(),
            })
            .inc();
    }

    /// How many reconciles of `controller_name` failed with `category`.
    pub fn reconcile_failures(&self, controller_name: &str, category: &str) -> u64 {
        self.reconcile_errors
            .get(&ReconcileErrorLabels { controller: controller_name.into(), category: category.into() })
            .map_or(0, |counter| counter.get())
    }

    /// The queue of `controller_name`'s controller.
    pub fn queue(&self, controller_name: &str) -> QueueDepth {
        let gauge = self.queue_depth.get_or_create_owned(&controller(controller_name));
        QueueDepth { due: Arc::default(), gauge }
    }

    /// Counts a provider call of `operation` on a `kind` through `provider` that ended with
    /// `result` after `took`.
    pub fn provider_call(&self, call: &ProviderLatencyLabels, result: &str, took: Duration) {
        self.provider_calls
            .get_or_create(&ProviderCallLabels {
                provider: call.provider.clone(),
                kind: call.kind.clone(),
                operation: call.operation.clone(),
                result: result.into(),
            })
            .inc();
        self.provider_call_duration.get_or_create(call).observe(took.as_secs_f64());
    }

    /// How many `operation` calls on `kind` through `provider` ended with `result`.
    pub fn provider_calls(&self, provider: &str, kind: &str, operation: &str, result: &str) -> u64 {
        self.provider_calls
            .get(&ProviderCallLabels {
                provider: provider.into(),
                kind: kind.into(),
                operation: operation.into(),
                result: result.into(),
            })
            .map_or(0, |counter| counter.get())
    }

    /// Counts a run that finished with `status`, and how long it ran when that is known.
    pub fn run_finished(&self, status: &str, ran: Option<Duration>) {
        let labels = RunStatusLabels { status: status.into() };
        self.runs_finished.get_or_create(&labels).inc();
        if let Some(ran) = ran {
            self.run_duration.get_or_create(&labels).observe(ran.as_secs_f64());
        }
    }

    /// The resources gauge's sources.
    pub fn resources(&self) -> &ResourceStates {
        &self.resources
    }

    /// Counts a completion handed to the ingest: `accepted` or the rejection's category.
    pub fn ingested(&self, result: &str) {
        self.events_ingested.get_or_create(&IngestLabels { result: result.into() }).inc();
    }

    /// Counts what `sink_name` did with one completion's CloudEvents, and how long it took.
    pub fn published(&self, sink_name: &str, delivery: Delivery, took: Duration) {
        let labels = sink(sink_name);
        self.events_published.get_or_create(&labels).inc_by(delivery.published);
        self.events_acked.get_or_create(&labels).inc_by(delivery.acked);
        self.events_duplicates.get_or_create(&labels).inc_by(delivery.duplicates);
        self.event_publish_duration.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// Counts a message the consumer of `sink_name`'s stream moved to the dead-letter subject.
    pub fn dead_lettered(&self, sink_name: &str) {
        self.events_dead_lettered.get_or_create(&sink(sink_name)).inc();
    }

    /// Counts `runs` Runs created by `trigger` on `path`.
    pub fn triggered(&self, trigger: &str, path: &str, runs: u64) {
        self.triggered_runs
            .get_or_create(&TriggerLabels { trigger: trigger.into(), path: path.into() })
            .inc_by(runs);
    }

    /// Records how many dependant Runs one completion started.
    pub fn fanned_out(&self, dependants: usize) {
        self.trigger_fan_out_size.observe(dependants as f64);
    }

    /// Records the time from a completion's arrival to one of its dependant Runs being created.
    pub fn trigger_latency(&self, took: Duration) {
        self.trigger_latency.observe(took.as_secs_f64());
    }

    /// Whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }
}

/// What a sink did with one completion's CloudEvents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// CloudEvents accepted.
    pub published: u64,
    /// Messages the bus acknowledged as newly stored.
    pub acked: u64,
    /// Messages the bus acknowledged as duplicates (already stored under their id).
    pub duplicates: u64,
}

impl Delivery {
    /// One message the bus acknowledged: stored, or dropped as a `duplicate` of a stored one.
    pub fn acknowledged(duplicate: bool) -> Self {
        Self { published: 1, acked: u64::from(!duplicate), duplicates: u64::from(duplicate) }
    }

    /// The sum of two deliveries.
    pub fn and(self, other: Self) -> Self {
        Self {
            published: self.published + other.published,
            acked: self.acked + other.acked,
            duplicates: self.duplicates + other.duplicates,
        }
    }
}

/// The objects a controller has due: woken by a watch (of the object or of one it depends on)
/// and not yet started. Marked when a trigger enters the controller ([`Self::due`]), cleared
/// when the reconcile starts ([`Self::started`]) or the object turns out to be gone; an object
/// woken several times before it runs counts once, as the controller runs it once. Timed
/// requeues (backoff, resync) are not counted while they wait.
#[derive(Debug, Clone)]
pub struct QueueDepth {
    due: Arc<Mutex<HashSet<String>>>,
    gauge: Gauge,
}

impl QueueDepth {
    fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        self.due.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The object `key` (`namespace/name`) was woken.
    pub fn due(&self, key: String) {
        let mut due = self.lock();
        due.insert(key);
        self.gauge.set(due.len() as i64);
    }

    /// The reconcile of `key` started, or `key` is gone.
    pub fn started(&self, key: &str) {
        let mut due = self.lock();
        due.remove(key);
        self.gauge.set(due.len() as i64);
    }

    /// How many objects are due.
    pub fn depth(&self) -> usize {
        self.lock().len()
    }
}

/// Counts objects by state: one function per controller cache, each adding its objects.
type StateSource = Box<dyn Fn(&mut BTreeMap<ResourceLabels, i64>) + Send + Sync>;

/// The resources gauge: read from the controllers' caches at every scrape, so deleted objects
/// drop out with them.
#[derive(Default)]
pub struct ResourceStates {
    sources: Mutex<Vec<StateSource>>,
}

impl std::fmt::Debug for ResourceStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceStates").finish_non_exhaustive()
    }
}

impl ResourceStates {
    /// Adds a source: `states` lists the state of each object of `kind` when called.
    pub fn track(&self, kind: &str, states: impl Fn() -> Vec<String> + Send + Sync + 'static) {
        let kind = kind.to_owned();
        let source: StateSource = Box::new(move |counts| {
            for state in states() {
                *counts.entry(ResourceLabels { kind: kind.clone(), state }).or_default() += 1;
            }
        });
        self.sources.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(source);
    }

    /// The count of every (kind, state) now.
    pub fn counts(&self) -> BTreeMap<ResourceLabels, i64> {
        let mut counts = BTreeMap::new();
        for source in self.sources.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter() {
            source(&mut counts);
        }
        counts
    }
}

impl PartialOrd for ResourceLabels {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ResourceLabels {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.kind, &self.state).cmp(&(&other.kind, &other.state))
    }
}

impl Collector for ResourceStates {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family: Family<ResourceLabels, Gauge> = Family::default();
        for (labels, count) in self.counts() {
            family.get_or_create(&labels).set(count);
        }
        let metric = encoder.encode_descriptor(
            "resources",
            "Resources by kind and the reason of their Synchronized condition",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(metrics: &Metrics) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry()).unwrap();
        text
    }

    #[test]
    fn every_series_is_exposed_with_its_labels() {
        let metrics = Metrics::default();
        metrics.reconciled("pipeline", "ok", Duration::from_millis(20));
        metrics.reconcile_failed("run", "ProviderTimeout");
        let call = ProviderLatencyLabels {
            provider: "ml/stub".into(),
            kind: "pipeline".into(),
            operation: "create".into(),
        };
        metrics.provider_call(&call, "ok", Duration::from_millis(3));
        metrics.run_finished("succeeded", Some(Duration::from_secs(3)));
        metrics.ingested("accepted");
        metrics.published("jetstream", Delivery { published: 2, acked: 1, duplicates: 1 }, Duration::ZERO);
        metrics.dead_lettered("jetstream");
        metrics.triggered("runConfiguration", "completion", 1);
        metrics.fanned_out(2);
        metrics.trigger_latency(Duration::from_millis(5));
        metrics.set_leader(true);
        metrics
            .resources()
            .track("pipeline", || vec!["Succeeded".into(), "Succeeded".into(), "Failed".into()]);
        let text = exposition(&metrics);
        for line in [
            r#"kfp_operator_controller_reconcile_total{controller="pipeline",result="ok"} 1"#,
            r#"kfp_operator_controller_reconcile_errors_total{controller="run",category="ProviderTimeout"} 1"#,
            r#"kfp_operator_controller_reconcile_duration_seconds_count{controller="pipeline"} 1"#,
            r#"kfp_operator_provider_calls_total{provider="ml/stub",kind="pipeline",operation="create",result="ok"} 1"#,
            r#"kfp_operator_provider_call_duration_seconds_count{provider="ml/stub",kind="pipeline",operation="create"} 1"#,
            r#"kfp_operator_runs_finished_total{status="succeeded"} 1"#,
            r#"kfp_operator_run_duration_seconds_sum{status="succeeded"} 3.0"#,
            r#"kfp_operator_events_ingested_total{result="accepted"} 1"#,
            r#"kfp_operator_events_published_total{sink="jetstream"} 2"#,
            r#"kfp_operator_events_acked_total{sink="jetstream"} 1"#,
            r#"kfp_operator_events_duplicates_total{sink="jetstream"} 1"#,
            r#"kfp_operator_events_dead_lettered_total{sink="jetstream"} 1"#,
            r#"kfp_operator_event_publish_duration_seconds_count{sink="jetstream"} 1"#,
            r#"kfp_operator_triggered_runs_total{trigger="runConfiguration",path="completion"} 1"#,
            "kfp_operator_trigger_fan_out_size_sum 2.0",
            "kfp_operator_trigger_latency_seconds_count 1",
            "kfp_operator_leader 1",
            r#"kfp_operator_resources{kind="pipeline",state="Failed"} 1"#,
            r#"kfp_operator_resources{kind="pipeline",state="Succeeded"} 2"#,
            "# HELP kfp_operator_resources Resources by kind and the reason of their Synchronized condition",
            "# TYPE kfp_operator_resources gauge",
            r#"kfp_operator_build_info{version=""#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(metrics.provider_calls("ml/stub", "pipeline", "create", "ok"), 1);
        assert_eq!(metrics.reconcile_failures("run", "ProviderTimeout"), 1);
        assert_eq!(metrics.reconcile_failures("run", "Other"), 0);
    }

    #[test]
    fn the_resources_gauge_follows_its_sources_at_every_scrape() {
        let metrics = Metrics::default();
        let objects = Arc::new(Mutex::new(vec!["Creating".to_owned()]));
        let source = objects.clone();
        metrics.resources().track("run", move || source.lock().unwrap().clone());
        assert!(exposition(&metrics).contains(r#"kfp_operator_resources{kind="run",state="Creating"} 1"#));
        objects.lock().unwrap().clear();
        assert!(!exposition(&metrics).contains(r#"kind="run""#), "a deleted object drops out");
    }

    #[test]
    fn an_object_woken_several_times_is_due_once_until_it_starts() {
        let metrics = Metrics::default();
        let queue = metrics.queue("run");
        queue.due("ml/a".into());
        queue.due("ml/a".into());
        queue.due("ml/b".into());
        assert_eq!(queue.depth(), 2);
        assert!(exposition(&metrics).contains(r#"kfp_operator_controller_queue_depth{controller="run"} 2"#));
        queue.started("ml/a");
        queue.started("ml/b");
        queue.started("ml/b");
        assert!(exposition(&metrics).contains(r#"kfp_operator_controller_queue_depth{controller="run"} 0"#));
    }

    #[test]
    fn deliveries_add_up() {
        let one = Delivery { published: 1, acked: 1, duplicates: 0 };
        let other = Delivery { published: 1, acked: 0, duplicates: 1 };
        assert_eq!(one.and(other), Delivery { published: 2, acked: 1, duplicates: 1 });
    }
}
