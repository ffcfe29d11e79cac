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
