//! Run-completion eventing end to end, against the real apiserver and a real nats-server:
//! one POST gives exactly one run-completion and one model-ready CloudEvent on every enabled
//! sink; repeats (and a repeat after a restart) add nothing; and a nats-server killed during a
//! burst of 1,000 completions loses none and duplicates none, while the ingest never answers
//! 200 for what it did not store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kfp_operator::api::{ArtifactPath, NamespacedName, OutputArtifact, Run, RunSpec};
use kfp_operator::completion::KubeResources;
use kfp_operator::events::config::{ArgoEventBusSink, EventsConfig, LegacyNatsSink, NatsConnection};
use kfp_operator::events::ingest::Ingest;
use kfp_operator::events::sinks::build_sinks;
use kfp_operator::events::{CloudEventOptions, RunCompletionEventData};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

mod support;

fn events_config(url: &str) -> EventsConfig {
    EventsConfig {
        nats: Some(NatsConnection { url: url.into(), ..NatsConnection::default() }),
        legacy_nats: LegacyNatsSink { enabled: true, subject: "events".into() },
        argo_event_bus: Some(ArgoEventBusSink {
            nats: NatsConnection { url: url.into(), ..NatsConnection::default() },
            event_source_name: "kfp-operator".into(),
            event_name: "run-completion".into(),
            stream: "default".into(),
        }),
        publish_timeout: Duration::from_millis(500),
        ..EventsConfig::default()
    }
}

async fn ingest_for(client: &kube::Client, config: &EventsConfig) -> Arc<Ingest> {
    let sinks = build_sinks(config).await.unwrap();
    Ingest::new(
        Arc::new(KubeResources::new(client.clone())),
        sinks.all,
        CloudEventOptions::default(),
        config.max_in_flight,
        config.max_body_bytes,
        Default::default(),
    )
}

/// Creates the Argo Events bus stream, as Argo's EventBus controller would.
async fn create_argo_bus_stream(url: &str) {
    let jetstream = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: "default".into(),
            subjects: vec!["default.>".into()],
            duplicate_window: Duration::from_secs(300),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn create_run(client: &kube::Client, ns: &str, name: &str) {
    let run = Run::new(
        name,
        RunSpec {
            provider: NamespacedName::new(ns, "stub"),
            pipeline: "penguin".parse().unwrap(),
            artifacts: vec![OutputArtifact::new(
                "serving-model",
                "Pusher:pushed_model".parse::<ArtifactPath>().unwrap(),
            )],
            ..RunSpec::default()
        },
    );
    Api::<Run>::namespaced(client.clone(), ns).create(&PostParams::default(), &run).await.unwrap();
}

fn completion(ns: &str, run: &str, run_id: &str) -> RunCompletionEventData {
    serde_json::from_value(json!({
        "status": "succeeded",
        "pipelineName": format!("{ns}/penguin"),
        "runName": format!("{ns}/{run}"),
        "runId": run_id,
        "runEndTime": "2024-05-01T10:21:07Z",
        "pipelineComponents": [{"name": "Pusher", "componentArtifacts": [{"name": "pushed_model",
            "artifacts": [{"uri": format!("gs://bucket/{run_id}"), "metadata": {}}]}]}],
        "provider": format!("{ns}/stub"),
    }))
    .unwrap()
}

/// Every message of a stream: subject, headers and JSON body.
async fn stream_messages(url: &str, stream: &str) -> Vec<(String, BTreeMap<String, String>, Value)> {
    let jetstream = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    let mut stream = jetstream.get_stream(stream).await.unwrap();
    let count = stream.info().await.unwrap().state.messages as usize;
    if count == 0 {
        return Vec::new();
    }
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut found = Vec::new();
    while found.len() < count {
        let message =
            tokio::time::timeout(Duration::from_secs(10), messages.next()).await.unwrap().unwrap().unwrap();
        let headers = message
            .headers
            .iter()
            .flat_map(|headers| headers.iter())
            .map(|(name, values)| {
                (name.to_string(), values.first().map(|v| v.to_string()).unwrap_or_default())
            })
            .collect();
        let body = serde_json::from_slice(&message.payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&message.payload).into_owned()));
        found.push((message.subject.to_string(), headers, body));
    }
    found
}

#[tokio::test]
async fn one_completion_reaches_every_sink_exactly_once() {
    let client = support::client().await;
    let ns = support::namespace(&client, "eventing-e2e").await;
    let nats = support::NatsServer::start();
    create_argo_bus_stream(&nats.url()).await;
    create_run(&client, &ns, "penguin-run").await;
    let config = events_config(&nats.url());
    let ingest = ingest_for(&client, &config).await;

    let legacy = async_nats::connect(nats.url()).await.unwrap();
    let mut legacy_subscription = legacy.subscribe("events").await.unwrap();
    legacy.flush().await.unwrap();

    for _ in 0..3 {
        ingest.accept(completion(&ns, "penguin-run", "run-1")).await.unwrap();
    }
    // An operator restart: new connections, new ingest, the same completion again.
    let restarted = ingest_for(&client, &config).await;
    restarted.accept(completion(&ns, "penguin-run", "run-1")).await.unwrap();

    let own = stream_messages(&nats.url(), "kfp-operator-events").await;
    let subjects: Vec<&str> = own.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(
        subjects,
        [format!("kfp.run-completion.{ns}.penguin.succeeded"), format!("kfp.model-ready.{ns}.penguin")],
        "one run-completion and one model-ready, however often it was posted"
    );
    for (_, headers, body) in &own {
        assert_eq!(headers.get("Nats-Msg-Id").map(String::as_str), body["id"].as_str());
        assert_eq!(headers.get("Content-Type").map(String::as_str), Some("application/cloudevents+json"));
        assert_eq!(body["specversion"], "1.0");
        assert_eq!(body["datacontenttype"], "application/json");
        assert_eq!(body["subject"], format!("{ns}/penguin-run"));
        assert_eq!(body["time"], "2024-05-01T10:21:07Z");
        assert!(body["data"].is_object(), "data is an object: {body}");
        assert_eq!(body["data"]["artifacts"][0]["location"], "gs://bucket/run-1");
    }
    assert_eq!(own[0].2["type"], "org.kubeflow.pipelines.run-completion");
    assert_eq!(own[1].2["type"], "org.kubeflow.pipelines.model-ready");

    let argo = stream_messages(&nats.url(), "default").await;
    assert_eq!(argo.len(), 2, "one Argo bus message per CloudEvent: {argo:?}");
    for (subject, _, _) in &argo {
        assert_eq!(subject, "default.kfp-operator.run-completion");
    }

    let legacy_message =
        tokio::time::timeout(Duration::from_secs(5), legacy_subscription.next()).await.unwrap().unwrap();
    let body: Value = serde_json::from_slice(&legacy_message.payload).unwrap();
    assert_eq!(body["data"]["status"], "succeeded", "{body}");
    assert_eq!(body["data"]["runId"], "run-1");
}

#[tokio::test]
async fn a_nats_outage_during_a_burst_loses_and_duplicates_nothing() {
    const COMPLETIONS: usize = 1000;
    let client = support::client().await;
    let ns = support::namespace(&client, "eventing-fault").await;
    create_run(&client, &ns, "burst-run").await;
    let nats = support::NatsServer::start();
    let mut config = events_config(&nats.url());
    config.legacy_nats.enabled = false;
    config.argo_event_bus = None;
    config.max_in_flight = 64;
    let ingest = ingest_for(&client, &config).await;

    let outcomes: Arc<tokio::sync::Mutex<Vec<Option<bool>>>> =
        Arc::new(tokio::sync::Mutex::new(vec![None; COMPLETIONS]));
    let burst = {
        let ingest = ingest.clone();
        let outcomes = outcomes.clone();
        let ns = ns.clone();
        tokio::spawn(async move {
            futures::stream::iter(0..COMPLETIONS)
                .for_each_concurrent(8, |i| {
                    let ingest = ingest.clone();
                    let outcomes = outcomes.clone();
                    let ns = ns.clone();
                    async move {
                        let accepted =
                            ingest.accept(completion(&ns, "burst-run", &format!("run-{i}"))).await.is_ok();
                        outcomes.lock().await[i] = Some(accepted);
                    }
                })
                .await;
        })
    };
    // Kill the server part-way through, keep it down for a while, then bring it back.
    support::eventually("a part of the burst to be accepted", Duration::from_secs(60), || async {
        (outcomes.lock().await.iter().flatten().count() >= 100).then_some(())
    })
    .await;
    let (port, store) = nats.kill();
    let answered_before_the_outage = outcomes.lock().await.iter().flatten().count();
    assert!(answered_before_the_outage < COMPLETIONS, "the outage must fall inside the burst");
    // Longer than the sinks' retry budget, so some completions are refused.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let nats = support::NatsServer::start_on(port, store);
    tokio::time::timeout(Duration::from_secs(300), burst).await.unwrap().unwrap();

    // Everything answered 200 is already on the stream: the ingest never answers 200 for what it did not store.
    let stored: std::collections::BTreeSet<String> = stream_messages(&nats.url(), "kfp-operator-events")
        .await
        .iter()
        .filter(|(subject, _, _)| subject.contains("run-completion"))
        .map(|(_, _, body)| body["data"]["runId"].as_str().unwrap().to_owned())
        .collect();
    for (i, outcome) in outcomes.lock().await.iter().enumerate() {
        if *outcome == Some(true) {
            assert!(
                stored.contains(&format!("run-{i}")),
                "run-{i} was answered 200 but is not on the stream"
            );
        }
    }

    // Like a provider would, post again everything that was not answered 200.
    let rejected: Vec<usize> =
        outcomes.lock().await.iter().enumerate().filter(|(_, o)| **o != Some(true)).map(|(i, _)| i).collect();
    println!(
        "{answered_before_the_outage} answered before the outage; {} of {COMPLETIONS} refused during it and posted again",
        rejected.len()
    );
    assert!(!rejected.is_empty(), "an outage longer than the retry budget refuses some completions");
    for i in &rejected {
        let mut attempts = 0;
        while ingest.accept(completion(&ns, "burst-run", &format!("run-{i}"))).await.is_err() {
            attempts += 1;
            assert!(attempts < 50, "run-{i} was never accepted after the server came back");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let messages = stream_messages(&nats.url(), "kfp-operator-events").await;
    let mut per_run: BTreeMap<String, usize> = BTreeMap::new();
    for (subject, _, body) in &messages {
        if subject.contains("run-completion") {
            *per_run.entry(body["data"]["runId"].as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    assert_eq!(per_run.len(), COMPLETIONS, "every completion is on the stream");
    assert!(per_run.values().all(|count| *count == 1), "no completion is there twice");
    assert_eq!(messages.len(), 2 * COMPLETIONS, "one run-completion and one model-ready each");
}

#[tokio::test]
async fn events_tail_replays_and_filters_the_stream() {
    let client = support::client().await;
    let ns = support::namespace(&client, "eventing-tail").await;
    create_run(&client, &ns, "tailed-run").await;
    let nats = support::NatsServer::start();
    let mut config = events_config(&nats.url());
    config.argo_event_bus = None;
    config.legacy_nats.enabled = false;
    let ingest = ingest_for(&client, &config).await;
    ingest.accept(completion(&ns, "tailed-run", "run-tail")).await.unwrap();

    let tail = |extra: &[&str]| {
        let mut args = vec![
            "tail",
            "--nats-url",
            nats.url().leak(),
            "--replay",
            "--namespace",
            ns.as_str().to_owned().leak(),
        ];
        args.extend_from_slice(extra);
        <TailCli as clap::Parser>::parse_from(args).args
    };
    let mut out = Vec::new();
    let args = tail(&["--type", "model-ready", "--count", "1"]);
    tokio::time::timeout(Duration::from_secs(20), kfp_operator::tools::tail::tail(args, &mut out))
        .await
        .unwrap()
        .unwrap();
    let printed = String::from_utf8(out).unwrap();
    assert!(printed.contains("model-ready succeeded"), "{printed}");
    assert!(printed.contains("serving-model=gs://bucket/run-tail"), "{printed}");
    assert!(printed.contains(&format!("run={ns}/tailed-run")), "{printed}");

    let mut out = Vec::new();
    let args = tail(&["--count", "2", "--json"]);
    tokio::time::timeout(Duration::from_secs(20), kfp_operator::tools::tail::tail(args, &mut out))
        .await
        .unwrap()
        .unwrap();
    let lines: Vec<Value> =
        String::from_utf8(out).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|event| event["data"]["runId"] == "run-tail"));
}

#[derive(clap::Parser)]
struct TailCli {
    #[command(flatten)]
    args: kfp_operator::tools::tail::TailArgs,
}

/// The durable completion consumer records what is on the stream, even what the ingest did not
/// record itself, and moves undecodable messages to the dead-letter subject without stopping.
#[tokio::test]
async fn the_completion_consumer_records_and_dead_letters() {
    use kfp_operator::api::CompletionState;
    use kfp_operator::events::sink::Outgoing;

    let client = support::client().await;
    let ns = support::namespace(&client, "eventing-consumer").await;
    create_run(&client, &ns, "consumed-run").await;
    let nats = support::NatsServer::start();
    let mut config = events_config(&nats.url());
    config.argo_event_bus = None;
    config.legacy_nats.enabled = false;
    let sinks = build_sinks(&config).await.unwrap();
    let nats_client = async_nats::connect(nats.url()).await.unwrap();

    // Garbage on a run-completion subject first, then a real completion published straight to
    // the stream (as another producer would), bypassing the ingest's own recording.
    let jetstream = async_nats::jetstream::new(nats_client.clone());
    jetstream
        .publish(format!("kfp.run-completion.{ns}.penguin.succeeded"), "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let completion = kfp_operator::events::RunCompletionEvent::from_data(
        completion(&ns, "consumed-run", "run-consumed"),
        vec![kfp_operator::api::Artifact::new("serving-model", "gs://bucket/run-consumed")],
    );
    let outgoing = Outgoing {
        cloud_events: kfp_operator::events::cloud_events_for(
            &completion,
            &CloudEventOptions::default(),
            chrono::Utc::now(),
        ),
        completion,
    };
    sinks.all[0].publish(&outgoing).await.unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = kfp_operator::shutdown::shutdown_signal(async move {
        let _ = stopped.await;
    });
    let consumer = tokio::spawn(kfp_operator::events::consumer::consume_completions(
        nats_client,
        "kfp-operator-events".into(),
        "kfp".into(),
        Arc::new(KubeResources::new(client.clone())),
        Default::default(),
        shutdown,
    ));
    let runs: Api<Run> = Api::namespaced(client.clone(), &ns);
    support::eventually("the consumer to record the completion", Duration::from_secs(30), || async {
        runs.get("consumed-run")
            .await
            .ok()?
            .status?
            .completion_state
            .filter(|s| *s == CompletionState::Succeeded)
    })
    .await;
    let dead = support::eventually("the dead letter", Duration::from_secs(30), || async {
        let messages = stream_messages(&nats.url(), "kfp-operator-events").await;
        messages.into_iter().find(|(subject, _, _)| subject == "kfp.dead-letter")
    })
    .await;
    assert!(
        dead.1.get("Kfp-Dead-Letter-Reason").is_some_and(|r| r.contains("not a JSON CloudEvent")),
        "{:?}",
        dead.1
    );
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), consumer).await.unwrap().unwrap().unwrap();
}
