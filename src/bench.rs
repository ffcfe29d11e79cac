//! `kfp-operator bench events`: the run-completion path measured against the raw limit in the
//! same run. It posts N completions to the real `/events` ingest over loopback HTTP, which
//! builds the CloudEvents and publishes them on a real JetStream stream waiting for each ack,
//! and compares with async-nats publishing the identical messages (same subjects, bodies,
//! message ids, ack waiting and concurrency) straight to a stream of the same configuration.
//! Kubernetes lookups are served from memory here, as the operator's watch cache would.
//! Prints one JSON object per line.

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
use crate::config::{self, NatsConnection};
use crate::events::ingest::{Ingest, IngestError, Resources};
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
    fn declared_artifacts<'a>(
        &'a self,
        _: &'a RunCompletionEventData,
    ) -> BoxFuture<'a, Result<Vec<OutputArtifact>, IngestError>> {
        Box::pin(async {
            Ok(vec![OutputArtifact::new(
                "serving-model",
                ArtifactPath::new("Pusher", "pushed_model").with_filter("pushed == 1"),
            )])
        })
    }

    fn record<'a>(&'a self, _: &'a RunCompletionEvent) -> BoxFuture<'a, Result<(), IngestError>> {
        Box::pin(async { Ok(()) })
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

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
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
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/events", listener.local_addr()?);
    let server = tokio::spawn(axum::serve(listener, ingest.clone().router()).into_future());
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
        "latency_ms_p50": round(percentile(&latencies, 0.5), 100.0),
        "latency_ms_p99": round(percentile(&latencies, 0.99), 100.0),
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
}

fn minimal_run(name: String, namespace: &str) -> crate::api::Run {
    let mut run = crate::api::Run::new(
        &name,
        crate::api::RunSpec {
            provider: crate::api::NamespacedName::new(namespace, "stub"),
            pipeline: crate::api::PipelineIdentifier::new("penguin", ""),
            ..crate::api::RunSpec::default()
        },
    );
    run.metadata.namespace = Some(namespace.to_owned());
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

async fn fresh_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let namespace = k8s_openapi::api::core::v1::Namespace {
        metadata: kube::api::ObjectMeta { name: Some(name.to_owned()), ..Default::default() },
        ..Default::default()
    };
    namespaces.create(&kube::api::PostParams::default(), &namespace).await?;
    Ok(())
}

/// One completion with `n` dependants against creating `n` Runs with a plain client.
async fn fan_out(
    client: &kube::Client,
    n: usize,
    concurrency: usize,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    use crate::api::{Run, RunConfiguration};
    let stamp = Utc::now().timestamp_millis();
    let plain_ns = format!("bench-plain-{n}-{stamp}");
    let fan_ns = format!("bench-fanout-{n}-{stamp}");
    fresh_namespace(client, &plain_ns).await?;
    fresh_namespace(client, &fan_ns).await?;

    let plain: kube::Api<Run> = kube::Api::namespaced(client.clone(), &plain_ns);
    let plain_elapsed = create_all(
        &plain,
        (0..n).map(|i| minimal_run(format!("plain-{i}"), &plain_ns)).collect(),
        concurrency,
    )
    .await?;

    // The engine: only the RunConfiguration controller, watching the fan-out namespace.
    let rcs: kube::Api<RunConfiguration> = kube::Api::namespaced(client.clone(), &fan_ns);
    let mut dependency = dependant_rc("dependency", &fan_ns, "nothing");
    dependency.spec.triggers = crate::api::Triggers::default();
    rcs.create(&kube::api::PostParams::default(), &dependency).await?;
    create_all(
        &rcs,
        (0..n).map(|i| dependant_rc(&format!("dependant-{i}"), &fan_ns, "dependency")).collect(),
        concurrency,
    )
    .await?;
    let config = crate::config::OperatorConfig { namespaces: vec![fan_ns.clone()], ..Default::default() };
    let registry = crate::controller::ProviderRegistry::new(config.provider_defaults.clone(), None);
    let ctx = crate::controller::Context::new(client.clone(), config, registry, Default::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = crate::controller::shutdown_signal(async move {
        let _ = stopped.await;
    });
    let engine = tokio::spawn(crate::controller::run_configuration::run_controller(ctx.clone(), 0, shutdown));

    // Settled: every dependant has evaluated its trigger once.
    let settle_deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let settled = rcs
            .list(&kube::api::ListParams::default())
            .await?
            .items
            .iter()
            .filter(|rc| {
                rc.status.as_ref().is_some_and(|s| s.triggers.run_configurations.contains_key("dependency"))
            })
            .count();
        if settled == n {
            break;
        }
        anyhow::ensure!(Instant::now() < settle_deadline, "only {settled} of {n} dependants settled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // One API round trip, for reference.
    let round_trip_started = Instant::now();
    rcs.get("dependency").await?;
    let round_trip = round_trip_started.elapsed();

    let runs: kube::Api<Run> = kube::Api::namespaced(client.clone(), &fan_ns);
    let mut watch = kube::runtime::watcher(runs, kube::runtime::watcher::Config::default()).boxed();
    // Wait for the watch to be established before the completion.
    while let Some(event) = watch.next().await {
        if matches!(event?, kube::runtime::watcher::Event::InitDone) {
            break;
        }
    }
    let ingest = Ingest::new(
        Arc::new(crate::events::ingest::KubeResources::new(client.clone()).with_trigger_engine(ctx.clone())),
        Vec::new(),
        CloudEventOptions::default(),
        16,
        1 << 20,
    );
    let data: RunCompletionEventData = serde_json::from_value(json!({
        "status": "succeeded",
        "pipelineName": format!("{fan_ns}/penguin"),
        "runConfigurationName": format!("{fan_ns}/dependency"),
        "runId": format!("run-{stamp}"),
        "runEndTime": "2024-05-01T10:21:07Z",
        "provider": format!("{fan_ns}/stub"),
    }))?;
    let completed = Instant::now();
    let accepted = tokio::spawn(async move {
        let result = ingest.accept(data).await;
        (result, completed.elapsed())
    });
    let mut seen = std::collections::BTreeSet::new();
    let mut latencies = Vec::with_capacity(n);
    let deadline = completed + Duration::from_secs(600);
    while seen.len() < n {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(remaining, watch.next())
            .await
            .map_err(|_| anyhow::anyhow!("only {} of {n} runs appeared", seen.len()))?;
        if let Some(Ok(kube::runtime::watcher::Event::Apply(run))) = event
            && seen.insert(kube::ResourceExt::name_any(&run))
        {
            latencies.push(completed.elapsed());
        }
    }
    let fanout_elapsed = completed.elapsed();
    let (accepted, ack) = accepted.await?;
    accepted?;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), engine).await;
    latencies.sort();
    let round = |v: f64, places: f64| (v * places).round() / places;
    let result = json!({
        "benchmark": "trigger-fanout",
        "dependants": n,
        "plain_create_s": round(plain_elapsed.as_secs_f64(), 1000.0),
        "fanout_s": round(fanout_elapsed.as_secs_f64(), 1000.0),
        "ratio": round(fanout_elapsed.as_secs_f64() / plain_elapsed.as_secs_f64(), 1000.0),
        "target_ratio": 1.5,
        "trigger_latency_ms_p50": round(percentile(&latencies, 0.5), 100.0),
        "trigger_latency_ms_p99": round(percentile(&latencies, 0.99), 100.0),
        "completion_ack_ms": round(ack.as_secs_f64() * 1000.0, 100.0),
        "api_round_trip_ms": round(round_trip.as_secs_f64() * 1000.0, 100.0),
        "target_p99_ms": round(50.0 + round_trip.as_secs_f64() * 1000.0, 100.0),
    });
    writeln!(out, "{result}")?;
    Ok(())
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
    crate::crds::install(&client, Duration::from_secs(60)).await?;
    for n in args.dependants {
        fan_out(&client, n, args.concurrency, out).await?;
    }
    Ok(())
}
