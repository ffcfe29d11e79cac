//! The benchmarks, each against the raw limit measured in the same run; JSON lines on stdout.
//!
//! `kfp-operator bench events`: the run-completion path. It posts N completions to the real
//! `/events` ingest over loopback HTTP, which builds the CloudEvents and publishes them on a
//! real JetStream stream waiting for each ack, and compares with async-nats publishing the
//! identical messages (same subjects, bodies, message ids, ack waiting and concurrency) straight
//! to a stream of the same configuration. Kubernetes lookups are served from memory here, as
//! the operator's watch cache would.
//!
//! `kfp-operator bench triggers`: the trigger engine against the API server of the current
//! kubeconfig: the index over many RunConfigurations, the latency from a completion to its
//! dependant's Run, the same through a join over 100 dependencies against the plain path, and
//! one completion fanned out to N dependants, each against a plain client creating the same Runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use futures::future::BoxFuture;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use crate::api::{ArtifactPath, OutputArtifact};
use crate::events::config::{self, NatsConnection};
use crate::events::ingest::{Ingest, IngestError, Named, Resources};
use crate::events::sinks::{JetStreamSink, STRUCTURED_CONTENT_TYPE, connect};
use crate::events::{
    CloudEventOptions, RunCompletionEvent, RunCompletionEventData, cloud_events_for, nats_subject_for,
    to_structured_bytes,
};

/// Options of `kfp-operator bench events`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The NATS server (with JetStream) to measure against.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Completions per measurement.
    #[arg(long, default_value_t = 2000)]
    pub completions: usize,
    /// Requests in flight at once; repeat to measure several levels.
    #[arg(long, default_values_t = [1, 8, 32])]
    pub concurrency: Vec<usize>,
}

/// In-memory resources: every completion names a Run declaring one artifact.
struct CachedResources;

impl Resources for CachedResources {
    fn named<'a>(&'a self, _: &'a RunCompletionEventData) -> BoxFuture<'a, Result<Named, IngestError>> {
        let artifacts = vec![OutputArtifact::new(
            "serving-model",
            ArtifactPath::new("Pusher", "pushed_model").with_filter("pushed == 1"),
        )];
        Box::pin(async { Ok(Named { artifacts, resources: vec![] }) })
    }

    fn record<'a>(
        &'a self,
        _: &'a RunCompletionEvent,
        _: std::time::Instant,
    ) -> BoxFuture<'a, Result<(), IngestError>> {
        Box::pin(async { Ok(()) })
    }

    fn provider_service_account<'a>(
        &'a self,
        _: &'a crate::api::NamespacedName,
    ) -> BoxFuture<'a, Result<Option<String>, IngestError>> {
        Box::pin(async { Ok(None) })
    }
}

fn completion(run: usize, stamp: i64) -> serde_json::Value {
    json!({
        "status": "succeeded",
        "pipelineName": "bench/penguin",
        "runName": format!("bench/run-{run}"),
        "runId": format!("bench-{stamp}-{run}"),
        "runStartTime": "2024-05-01T10:00:00Z",
        "runEndTime": "2024-05-01T10:21:07Z",
        "pipelineComponents": [{"name": "Pusher", "componentArtifacts": [{"name": "pushed_model",
            "artifacts": [{"uri": format!("gs://bucket/model/{run}"), "metadata": {"pushed": 1}}]}]}],
        "provider": "bench/stub",
    })
}

/// The `p`-quantile (0–1) of sorted durations, by nearest rank; zero when there are none.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn resident_memory_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|line| line.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

async fn raw_publish(
    client: async_nats::Client,
    messages: Vec<Vec<(String, String, Bytes)>>,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let jetstream = async_nats::jetstream::new(client);
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(messages)
        .map(|batch| {
            let jetstream = jetstream.clone();
            async move {
                for (subject, id, body) in batch {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Nats-Msg-Id", id.as_str());
                    headers.insert("Content-Type", STRUCTURED_CONTENT_TYPE);
                    jetstream.publish_with_headers(subject, headers, body).await?.await?;
                }
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(started.elapsed())
}

/// Runs the benchmark at every concurrency level and writes one JSON line per level to `out`.
pub async fn run(args: BenchArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    for concurrency in args.concurrency.clone() {
        run_one(&args.nats_url, args.completions, concurrency.max(1), out).await?;
    }
    Ok(())
}

async fn run_one(
    nats_url: &str,
    completions: usize,
    concurrency: usize,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let connection = NatsConnection { url: nats_url.to_owned(), ..NatsConnection::default() };
    let stamp = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let stream_config = |kind: &str| config::JetStreamSink {
        stream: format!("bench-{kind}-{stamp}"),
        subject_prefix: format!("bench{kind}{stamp}"),
        ..config::JetStreamSink::default()
    };
    let (path_stream, raw_stream) = (stream_config("path"), stream_config("raw"));
    let client = connect(&connection).await?;
    let sink =
        JetStreamSink::new(client.clone(), &path_stream, Duration::from_secs(5), concurrency * 2).await?;
    // Creates the raw stream with the same settings.
    JetStreamSink::new(client.clone(), &raw_stream, Duration::from_secs(5), 1).await?;
    let options = CloudEventOptions::default();
    let ingest = Ingest::new(
        Arc::new(CachedResources),
        vec![Arc::new(sink)],
        options.clone(),
        concurrency * 2,
        1 << 20,
        Default::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/events", listener.local_addr()?);
    let server = tokio::spawn(axum::serve(listener, ingest.clone().router(None)).into_future());
    let http: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();

    // Rounds alternate the three measurements so that noise on a shared machine hits them alike.
    let mut raw_rates = Vec::new();
    let mut path_rates = Vec::new();
    let mut direct_rates = Vec::new();
    let mut latencies = Vec::new();
    for round in 0..ROUNDS {
        let first = round * 3 * completions;
        let raw_messages =
            identical_messages(first..first + completions, stamp, &options, &raw_stream.subject_prefix)?;
        raw_rates.push(
            completions as f64 / raw_publish(client.clone(), raw_messages, concurrency).await?.as_secs_f64(),
        );

        let direct_started = Instant::now();
        let direct: Vec<Result<RunCompletionEvent, IngestError>> =
            futures::stream::iter(first + completions..first + 2 * completions)
                .map(|i| {
                    let ingest = ingest.clone();
                    async move {
                        let data: RunCompletionEventData = serde_json::from_value(completion(i, stamp))
                            .map_err(|e| IngestError::Undecodable(e.to_string()))?;
                        ingest.accept(data).await
                    }
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
        direct.into_iter().collect::<Result<Vec<_>, _>>().map_err(|e| anyhow::anyhow!("{e}"))?;
        direct_rates.push(completions as f64 / direct_started.elapsed().as_secs_f64());

        let started = Instant::now();
        let round_latencies: Vec<anyhow::Result<Duration>> =
            futures::stream::iter(first + 2 * completions..first + 3 * completions)
                .map(|i| {
                    let http = http.clone();
                    let url = url.clone();
                    async move {
                        let request = http::Request::post(url)
                            .header("Content-Type", "application/json")
                            .body(Full::new(Bytes::from(completion(i, stamp).to_string())))?;
                        let sent = Instant::now();
                        let response = http.request(request).await?;
                        anyhow::ensure!(response.status() == 200, "ingest answered {}", response.status());
                        Ok(sent.elapsed())
                    }
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
        path_rates.push(completions as f64 / started.elapsed().as_secs_f64());
        latencies.extend(round_latencies.into_iter().collect::<anyhow::Result<Vec<Duration>>>()?);
    }
    server.abort();
    latencies.sort();
    let path_rate = median(&mut path_rates);
    let raw_rate = median(&mut raw_rates);
    let round = |v: f64, places: f64| (v * places).round() / places;
    let result = json!({
        "benchmark": "events",
        "completions": completions,
        "rounds": ROUNDS,
        "concurrency": concurrency,
        "messages_per_completion": 2,
        "path_completions_per_s": round(path_rate, 10.0),
        "in_process_completions_per_s": round(median(&mut direct_rates), 10.0),
        "raw_jetstream_completions_per_s": round(raw_rate, 10.0),
        "ratio": round(path_rate / raw_rate, 1000.0),
        "target_ratio": 0.8,
        "latency_ms_p50": millis(percentile(&latencies, 0.5)),
        "latency_ms_p99": millis(percentile(&latencies, 0.99)),
        "rss_kib": resident_memory_kib(),
    });
    writeln!(out, "{result}")?;
    Ok(())
}

const ROUNDS: usize = 3;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The exact messages the ingest publishes for completions `runs`, for the raw measurement.
fn identical_messages(
    runs: std::ops::Range<usize>,
    stamp: i64,
    options: &CloudEventOptions,
    prefix: &str,
) -> anyhow::Result<Vec<Vec<(String, String, Bytes)>>> {
    runs.map(|i| {
        let body = completion(i, stamp);
        let data: RunCompletionEventData = serde_json::from_value(body)?;
        let artifacts = crate::events::select_artifacts(
            &[OutputArtifact::new(
                "serving-model",
                ArtifactPath::new("Pusher", "pushed_model").with_filter("pushed == 1"),
            )],
            &data.pipeline_components,
        )?;
        let event = RunCompletionEvent::from_data(data, artifacts);
        Ok(cloud_events_for(&event, options, Utc::now())
            .iter()
            .map(|cloud_event| {
                let subject = nats_subject_for(prefix, cloud_event, &event).unwrap_or_default();
                let id = cloudevents::AttributesReader::id(cloud_event).to_owned();
                (subject, id, Bytes::from(to_structured_bytes(cloud_event)))
            })
            .collect())
    })
    .collect()
}

/// Options of `kfp-operator bench triggers`.
#[derive(Debug, Clone, clap::Args)]
pub struct TriggerBenchArgs {
    /// Dependants of the one completed RunConfiguration; repeat for several sizes.
    #[arg(long, default_values_t = [10, 100, 1000])]
    pub dependants: Vec<usize>,
    /// Requests in flight at once when creating objects (the plain client and the setup).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// RunConfigurations in the in-memory index measurement.
    #[arg(long, default_value_t = 10_000)]
    pub index_size: usize,
    /// Measurements per fan-out size (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Successive completions in the trigger latency measurement.
    #[arg(long, default_value_t = 100)]
    pub completions: usize,
    /// Dependencies of the join in the join measurement.
    #[arg(long, default_value_t = 100)]
    pub join_width: usize,
}

/// A Run shaped like the ones the trigger engine creates for [`dependant_rc`]s: the same spec,
/// the trigger labels and an owner reference.
fn plain_run(name: String, namespace: &str) -> crate::api::Run {
    let mut run = crate::api::Run::new(
        &name,
        crate::api::RunSpec {
            provider: crate::api::NamespacedName::new(namespace, "stub"),
            pipeline: crate::api::PipelineIdentifier::new("penguin", "v1"),
            ..crate::api::RunSpec::default()
        },
    );
    run.metadata.namespace = Some(namespace.to_owned());
    let labels = [
        ("pipelines.kubeflow.org/runconfiguration.name", name.as_str()),
        ("pipelines.kubeflow.org/trigger-type", "runConfiguration"),
        ("pipelines.kubeflow.org/trigger-source", "dependency"),
        ("pipelines.kubeflow.org/trigger-source-namespace", namespace),
    ];
    run.metadata.labels = Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
    run.metadata.owner_references =
        Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "pipelines.kubeflow.org/v1beta1".into(),
            kind: "RunConfiguration".into(),
            name: name.clone(),
            uid: format!("00000000-0000-0000-0000-{:012}", name.len()),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
    run
}

fn dependant_rc(name: &str, namespace: &str, dependency: &str) -> crate::api::RunConfiguration {
    let mut rc = crate::api::RunConfiguration::new(
        name,
        crate::api::RunConfigurationSpec {
            run: crate::api::RunSpec {
                provider: crate::api::NamespacedName::new(namespace, "stub"),
                pipeline: crate::api::PipelineIdentifier::new("penguin", "v1"),
                ..crate::api::RunSpec::default()
            },
            triggers: crate::api::Triggers {
                run_configurations: vec![crate::api::NamespacedName::name_only(dependency)],
                ..crate::api::Triggers::default()
            },
        },
    );
    rc.metadata.namespace = Some(namespace.to_owned());
    rc
}

async fn create_all<K>(api: &kube::Api<K>, objects: Vec<K>, concurrency: usize) -> anyhow::Result<Duration>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let started = Instant::now();
    let results: Vec<Result<K, kube::Error>> = futures::stream::iter(objects)
        .map(|object| async move { api.create(&kube::api::PostParams::default(), &object).await })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(started.elapsed())
}

pub(crate) async fn fresh_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let namespace = k8s_openapi::api::core::v1::Namespace {
        metadata: kube::api::ObjectMeta { name: Some(name.to_owned()), ..Default::default() },
        ..Default::default()
    };
    namespaces.create(&kube::api::PostParams::default(), &namespace).await?;
    Ok(())
}

type RunEvents = futures::stream::BoxStream<
    'static,
    Result<kube::runtime::watcher::Event<crate::api::Run>, kube::runtime::watcher::Error>,
>;

/// A watch on the Runs of `namespace`, established (its initial list done).
async fn watch_runs(client: &kube::Client, namespace: &str) -> anyhow::Result<RunEvents> {
    let runs: kube::Api<crate::api::Run> = kube::Api::namespaced(client.clone(), namespace);
    let mut watch = kube::runtime::watcher(runs, kube::runtime::watcher::Config::default()).boxed();
    while let Some(event) = watch.next().await {
        if matches!(event?, kube::runtime::watcher::Event::InitDone) {
            return Ok(watch);
        }
    }
    anyhow::bail!("the Run watch on {namespace} ended")
}

/// Waits (at most ten minutes) for `count` Runs not in `seen`; returns when each appeared,
/// measured from `since`.
async fn new_runs(
    watch: &mut RunEvents,
    seen: &mut std::collections::BTreeSet<String>,
    count: usize,
    since: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut arrivals = Vec::with_capacity(count);
    while arrivals.len() < count {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(remaining, watch.next())
            .await
            .map_err(|_| anyhow::anyhow!("only {} of {count} runs appeared", arrivals.len()))?;
        match event {
            Some(Ok(kube::runtime::watcher::Event::Apply(run))) => {
                if seen.insert(kube::ResourceExt::name_any(&run)) {
                    arrivals.push(since.elapsed());
                }
            }
            Some(_) => {}
            None => anyhow::bail!("the Run watch ended"),
        }
    }
    Ok(arrivals)
}

/// A namespace with one dependency RunConfiguration and `n` dependants triggered by it, the
/// RunConfiguration controller watching it (settled: every dependant evaluated its trigger
/// once), and the run-completion ingest with the trigger engine.
struct EngineUnderTest {
    namespace: String,
    ingest: Arc<Ingest>,
    stop: tokio::sync::oneshot::Sender<()>,
    controller: tokio::task::JoinHandle<()>,
}

impl EngineUnderTest {
    /// `n` dependants of `dependency`, through `triggers.runConfigurations`; with `join_width`
    /// above 0, through a join over `join_width` dependencies instead ([`wide_join`]), the others
    /// existing without ever succeeding.
    async fn start(
        client: &kube::Client,
        namespace: String,
        n: usize,
        concurrency: usize,
        join_width: usize,
    ) -> anyhow::Result<Self> {
        use crate::api::RunConfiguration;
        fresh_namespace(client, &namespace).await?;
        let rcs: kube::Api<RunConfiguration> = kube::Api::namespaced(client.clone(), &namespace);
        let idle = |name: String| {
            let mut rc = dependant_rc(&name, &namespace, "nothing");
            rc.spec.triggers = crate::api::Triggers::default();
            rc
        };
        rcs.create(&kube::api::PostParams::default(), &idle("dependency".into())).await?;
        create_all(&rcs, (1..join_width).map(|i| idle(format!("other-{i}"))).collect(), concurrency).await?;
        let dependant = |i: usize| {
            let mut rc = dependant_rc(&format!("dependant-{i}"), &namespace, "dependency");
            if join_width > 0 {
                rc.spec.triggers = crate::api::Triggers {
                    join: Some(crate::api::Join { expression: wide_join(join_width), reset: String::new() }),
                    ..crate::api::Triggers::default()
                };
            }
            rc
        };
        create_all(&rcs, (0..n).map(dependant).collect(), concurrency).await?;
        let config =
            crate::config::OperatorConfig { namespaces: vec![namespace.clone()], ..Default::default() };
        let registry = crate::controller::ProviderRegistry::new(config.provider_defaults.clone(), None);
        let ctx = crate::controller::Context::new(client.clone(), config, registry, Default::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = crate::shutdown::shutdown_signal(async move {
            let _ = stopped.await;
        });
        let controller = tokio::spawn(crate::controller::run_run_configurations(ctx.clone(), shutdown));
        let settle_deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let settled = rcs
                .list(&kube::api::ListParams::default())
                .await?
                .items
                .iter()
                .filter(|rc| {
                    rc.status.as_ref().is_some_and(|s| {
                        s.triggers.run_configurations.contains_key("dependency")
                            || s.triggers.join.dependencies.contains_key("dependency")
                    })
                })
                .count();
            if settled == n {
                break;
            }
            anyhow::ensure!(Instant::now() < settle_deadline, "only {settled} of {n} dependants settled");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let ingest = Ingest::new(
            Arc::new(crate::completion::KubeResources::new(client.clone()).with_trigger_engine(ctx)),
            Vec::new(),
            CloudEventOptions::default(),
            16,
            1 << 20,
            Default::default(),
        );
        Ok(Self { namespace, ingest, stop, controller })
    }

    /// Posts the dependency's success `run` (ending `run` seconds after a fixed time) and returns
    /// how long the ingest took to answer.
    async fn complete(&self, run: i64) -> anyhow::Result<Duration> {
        let namespace = &self.namespace;
        let ended = chrono::DateTime::from_timestamp(1_714_557_600 + run, 0).unwrap_or_default();
        let data: RunCompletionEventData = serde_json::from_value(json!({
            "status": "succeeded",
            "pipelineName": format!("{namespace}/penguin"),
            "runConfigurationName": format!("{namespace}/dependency"),
            "runId": format!("run-{run}"),
            "runEndTime": ended.to_rfc3339(),
            "provider": format!("{namespace}/stub"),
        }))?;
        let started = Instant::now();
        self.ingest.accept(data).await?;
        Ok(started.elapsed())
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.controller).await;
    }
}

fn median_duration(values: &mut [Duration]) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 100_000.0).round() / 100.0
}

/// One completion with `n` dependants (until all `n` Runs are seen in a watch) against a plain
/// client creating `n` Runs (until all are seen in a watch), `rounds` times each, interleaved.
async fn fan_out(
    client: &kube::Client,
    n: usize,
    args: &TriggerBenchArgs,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let stamp = Utc::now().timestamp_millis();
    let (mut plain_times, mut fan_out_times, mut acks, mut latencies) = (vec![], vec![], vec![], vec![]);
    for round in 0..args.rounds.max(1) {
        let plain_ns = format!("bench-plain-{n}-{round}-{stamp}");
        fresh_namespace(client, &plain_ns).await?;
        let plain: kube::Api<crate::api::Run> = kube::Api::namespaced(client.clone(), &plain_ns);
        let mut watch = watch_runs(client, &plain_ns).await?;
        let mut seen = std::collections::BTreeSet::new();
        let started = Instant::now();
        let objects = (0..n).map(|i| plain_run(format!("plain-{i}"), &plain_ns)).collect();
        let (created, arrivals) = tokio::join!(
            create_all(&plain, objects, args.concurrency),
            new_runs(&mut watch, &mut seen, n, started),
        );
        created?;
        plain_times.push(arrivals?.into_iter().max().unwrap_or_default());

        let engine = EngineUnderTest::start(
            client,
            format!("bench-fanout-{n}-{round}-{stamp}"),
            n,
            args.concurrency,
            0,
        )
        .await?;
        let mut watch = watch_runs(client, &engine.namespace).await?;
        let mut seen = std::collections::BTreeSet::new();
        let started = Instant::now();
        let (ack, arrivals) =
            tokio::join!(engine.complete(i64::from(round)), new_runs(&mut watch, &mut seen, n, started));
        acks.push(ack?);
        let arrivals = arrivals?;
        fan_out_times.push(arrivals.iter().max().copied().unwrap_or_default());
        latencies.extend(arrivals);
        engine.stop().await;
    }
    latencies.sort();
    let plain = median_duration(&mut plain_times);
    let fanned = median_duration(&mut fan_out_times);
    let result = json!({
        "benchmark": "trigger-fanout",
        "dependants": n,
        "rounds": args.rounds.max(1),
        "concurrency": args.concurrency,
        "plain_create_s": millis(plain) / 1000.0,
        "fanout_s": millis(fanned) / 1000.0,
        "ratio": (fanned.as_secs_f64() / plain.as_secs_f64().max(f64::EPSILON) * 1000.0).round() / 1000.0,
        "target_ratio": 1.5,
        "run_latency_ms_p50": millis(percentile(&latencies, 0.5)),
        "run_latency_ms_p99": millis(percentile(&latencies, 0.99)),
        "completion_ack_ms": millis(median_duration(&mut acks)),
        "rss_kib": resident_memory_kib(),
    });
    writeln!(out, "{result}")?;
    Ok(())
}

/// A join over `width` dependencies that every success of `dependency` satisfies:
/// `dependency || (other-1 && … && other-<width-1>)`.
fn wide_join(width: usize) -> String {
    let others: Vec<String> = (1..width).map(|i| format!("other-{i}")).collect();
    if others.is_empty() { "dependency".into() } else { format!("dependency || ({})", others.join(" && ")) }
}

/// Trigger latency: `completions` successive successes of a dependency with one dependant, each
/// from the ingest call until its Run is seen in a watch, against a plain client's create until
/// the Run is seen, and a plain GET round trip.
async fn trigger_latency(
    client: &kube::Client,
    completions: usize,
    args: &TriggerBenchArgs,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let stamp = Utc::now().timestamp_millis();
    let plain_ns = format!("bench-latency-plain-{stamp}");
    fresh_namespace(client, &plain_ns).await?;
    let plain: kube::Api<crate::api::Run> = kube::Api::namespaced(client.clone(), &plain_ns);
    let mut watch = watch_runs(client, &plain_ns).await?;
    let mut seen = Default::default();
    let mut plain_latencies = Vec::with_capacity(completions);
    let mut round_trips = Vec::with_capacity(completions);
    for i in 0..completions {
        let started = Instant::now();
        plain.create(&kube::api::PostParams::default(), &plain_run(format!("plain-{i}"), &plain_ns)).await?;
        plain_latencies.extend(new_runs(&mut watch, &mut seen, 1, started).await?);
        let started = Instant::now();
        plain.get(&format!("plain-{i}")).await?;
        round_trips.push(started.elapsed());
    }

    let (mut latencies, mut acks) =
        engine_latencies(client, format!("bench-latency-{stamp}"), completions, args, 0, Duration::ZERO)
            .await?;
    latencies.sort();
    plain_latencies.sort();
    let round_trip = median_duration(&mut round_trips);
    let result = json!({
        "benchmark": "trigger-latency",
        "completions": completions,
        "trigger_latency_ms_p50": millis(percentile(&latencies, 0.5)),
        "trigger_latency_ms_p99": millis(percentile(&latencies, 0.99)),
        "plain_create_seen_ms_p50": millis(percentile(&plain_latencies, 0.5)),
        "plain_create_seen_ms_p99": millis(percentile(&plain_latencies, 0.99)),
        "api_round_trip_ms": millis(round_trip),
        "target_p99_ms": millis(round_trip) + 50.0,
        "completion_ack_ms_p50": millis(median_duration(&mut acks)),
    });
    writeln!(out, "{result}")?;
    Ok(())
}

/// The trigger latencies and ingest answer times of `completions` successive successes of
/// `dependency` with one dependant (through a join over `join_width` dependencies when above 0),
/// `pause` apart.
async fn engine_latencies(
    client: &kube::Client,
    namespace: String,
    completions: usize,
    args: &TriggerBenchArgs,
    join_width: usize,
    pause: Duration,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let engine = EngineUnderTest::start(client, namespace, 1, args.concurrency, join_width).await?;
    let mut watch = watch_runs(client, &engine.namespace).await?;
    let mut seen = Default::default();
    let mut latencies = Vec::with_capacity(completions);
    let mut acks = Vec::with_capacity(completions);
    for i in 0..completions {
        // Successes of one dependency come minutes apart in practice; a pause lets the dependant
        // record each firing before the next, so every completion takes the fast path.
        tokio::time::sleep(pause).await;
        let started = Instant::now();
        let run = i64::try_from(i).unwrap_or_default();
        let (ack, arrival) = tokio::join!(engine.complete(run), new_runs(&mut watch, &mut seen, 1, started));
        acks.push(ack?);
        latencies.extend(arrival?);
    }
    engine.stop().await;
    Ok((latencies, acks))
}

/// A join over `args.join_width` dependencies against the plain `runConfigurations` path, in
/// the same run, in alternating rounds: the trigger latency of each (completion received →
/// dependant's Run seen), and the pure evaluation of one dependant with the new success in view
/// (what the join adds on the fast path: the settledness check and the decision), in memory.
async fn trigger_join(
    client: &kube::Client,
    args: &TriggerBenchArgs,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    // Successes of one dependency come minutes apart in practice; the pause lets the dependant
    // record each firing before the next, as it would then (on both paths alike).
    const PAUSE: Duration = Duration::from_millis(100);
    let stamp = Utc::now().timestamp_millis();
    let (mut plain, mut joined) = (Vec::new(), Vec::new());
    for round in 0..args.rounds.max(1) {
        let per_round = args.completions.div_ceil(args.rounds.max(1) as usize);
        let namespace = format!("bench-join-plain-{round}-{stamp}");
        plain.extend(engine_latencies(client, namespace, per_round, args, 0, PAUSE).await?.0);
        let namespace = format!("bench-join-{}-{round}-{stamp}", args.join_width);
        joined.extend(engine_latencies(client, namespace, per_round, args, args.join_width, PAUSE).await?.0);
    }
    plain.sort();
    joined.sort();
    let (plain_eval, join_eval) = evaluation_cost(args.join_width);
    let added_p50 = millis(percentile(&joined, 0.5)) - millis(percentile(&plain, 0.5));
    let result = json!({
        "benchmark": "trigger-join",
        "join_dependencies": args.join_width,
        "completions": plain.len(),
        "plain_trigger_latency_ms_p50": millis(percentile(&plain, 0.5)),
        "plain_trigger_latency_ms_p99": millis(percentile(&plain, 0.99)),
        "join_trigger_latency_ms_p50": millis(percentile(&joined, 0.5)),
        "join_trigger_latency_ms_p99": millis(percentile(&joined, 0.99)),
        "join_added_ms_p50": (added_p50 * 100.0).round() / 100.0,
        "plain_evaluation_us": (plain_eval.as_secs_f64() * 1e8).round() / 100.0,
        "join_evaluation_us": (join_eval.as_secs_f64() * 1e8).round() / 100.0,
        "join_evaluation_added_ms": ((join_eval.saturating_sub(plain_eval)).as_secs_f64() * 1e5).round() / 100.0,
        "target_added_ms": 1.0,
    });
    writeln!(out, "{result}")?;
    Ok(())
}

/// The median time of one evaluation of a dependant, with the dependency's new success in view,
/// through `runConfigurations` and through a join over `width` dependencies (each evaluated
/// twice, as the fast path does for a join: once to check the stored state is settled, once with
/// the new success).
fn evaluation_cost(width: usize) -> (Duration, Duration) {
    use crate::api::{RunConfiguration, RunReference, TriggeredRunReference};
    use crate::triggers::evaluation::{Observed, evaluate};
    let dependency = |name: &str, run: &str| {
        let mut rc = dependant_rc(name, "bench", "nothing");
        rc.status.get_or_insert_with(Default::default).latest_runs.succeeded =
            Some(RunReference { provider_id: run.into(), ..RunReference::default() });
        Arc::new(rc)
    };
    let mut plain = dependant_rc("plain", "bench", "dependency");
    plain.status.get_or_insert_with(Default::default).triggers.run_configurations =
        [("dependency".to_owned(), TriggeredRunReference { provider_id: "run-0".into() })].into();
    let mut joined = dependant_rc("joined", "bench", "dependency");
    joined.spec.triggers = crate::api::Triggers {
        join: Some(crate::api::Join { expression: wide_join(width), reset: String::new() }),
        ..Default::default()
    };
    let names: Vec<String> =
        std::iter::once("dependency".to_owned()).chain((1..width).map(|i| format!("other-{i}"))).collect();
    joined.status.get_or_insert_with(Default::default).triggers.join.dependencies = names
        .iter()
        .map(|name| {
            let seen = if name == "dependency" { "run-0" } else { "" };
            (name.clone(), crate::api::JoinDependency { seen: seen.into(), ..Default::default() })
        })
        .collect();
    let observed = |rc: &RunConfiguration, run: &str| Observed {
        now: jiff::Timestamp::now(),
        active_runs: Vec::new(),
        pipeline_version: "v1".into(),
        pipeline_problem: None,
        dependencies: rc
            .spec
            .triggers
            .dependencies()
            .iter()
            .map(|d| {
                let qualified = d.qualified("bench");
                let found = if d.name == "dependency" {
                    dependency("dependency", run)
                } else {
                    dependency(&d.name, "")
                };
                (qualified, Some(found))
            })
            .collect(),
    };
    let graph = crate::triggers::DependencyGraph::from_run_configurations([&plain, &joined]);
    let policy = crate::triggers::CrossNamespacePolicy::Allow;
    let time = |rc: &RunConfiguration, evaluations: usize| {
        let (before, after) = (observed(rc, "run-0"), observed(rc, "run-1"));
        let mut samples: Vec<Duration> = (0..200)
            .map(|_| {
                let started = Instant::now();
                if evaluations > 1 {
                    std::hint::black_box(evaluate(rc, &before, policy, &graph));
                }
                let evaluation = evaluate(rc, &after, policy, &graph);
                std::hint::black_box(&evaluation.fire);
                started.elapsed()
            })
            .collect();
        median_duration(&mut samples)
    };
    (time(&plain, 1), time(&joined, 2))
}

/// The dependency index over `size` RunConfigurations in chains and trees: build time and memory.
fn index_scale(size: usize, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let rcs: Vec<crate::api::RunConfiguration> = (0..size)
        .map(|i| {
            // Chains of ten, then a binary tree over the chain heads.
            let dependency = if i % 10 != 0 {
                format!("rc-{}", i - 1)
            } else if i > 0 {
                format!("rc-{}", (i / 10 - 1) / 2 * 10)
            } else {
                "none".into()
            };
            dependant_rc(&format!("rc-{i}"), "scale", &dependency)
        })
        .collect();
    let before = resident_memory_kib();
    let started = Instant::now();
    let graph = crate::triggers::DependencyGraph::from_run_configurations(rcs.iter());
    let cycles = graph.cycles().len();
    let built = started.elapsed();
    let after = resident_memory_kib();
    let result = json!({
        "benchmark": "trigger-index",
        "run_configurations": size,
        "edges": graph.edges().count(),
        "cycles": cycles,
        "build_and_cycle_check_ms": (built.as_secs_f64() * 100_000.0).round() / 100.0,
        "index_rss_kib": after.saturating_sub(before),
        "rss_kib": after,
    });
    writeln!(out, "{result}")?;
    Ok(())
}

/// Runs the trigger benchmarks against the cluster of the current kubeconfig.
pub async fn run_triggers(args: TriggerBenchArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    index_scale(args.index_size, out)?;
    let client = kube::Client::try_default().await?;
    crate::crds::install(&client, Duration::from_secs(60), None).await?;
    trigger_latency(&client, args.completions, &args, out).await?;
    trigger_join(&client, &args, out).await?;
    for &n in &args.dependants {
        fan_out(&client, n, &args, out).await?;
    }
    Ok(())
}
