//! The `POST /events` contract against the real apiserver: every status code with the
//! reference's meaning and a body that says why, and a 200 only once the sinks accepted the
//! events and the Run recorded its completion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use kfp_operator::api::{ArtifactPath, CompletionState, NamespacedName, OutputArtifact, Run, RunSpec};
use kfp_operator::completion::KubeResources;
use kfp_operator::events::CloudEventOptions;
use kfp_operator::events::ingest::Ingest;
use kfp_operator::events::sink::{Delivery, Outgoing, Sink, SinkError};
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

#[derive(Debug, Default)]
struct RecordingSink {
    published: Mutex<Vec<Outgoing>>,
    failing: Mutex<bool>,
}

impl Sink for RecordingSink {
    fn name(&self) -> &'static str {
        "recording"
    }

    fn publish<'a>(&'a self, outgoing: &'a Outgoing) -> BoxFuture<'a, Result<Delivery, SinkError>> {
        Box::pin(async move {
            if *self.failing.lock().unwrap() {
                return Err(SinkError::Unavailable {
                    sink: "recording".into(),
                    message: "the bus is down".into(),
                });
            }
            self.published.lock().unwrap().push(outgoing.clone());
            Ok(Delivery { published: outgoing.cloud_events.len() as u64, ..Delivery::default() })
        })
    }
}

async fn request(port: u16, method: &str, content_type: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let content_type = content_type.map(|c| format!("Content-Type: {c}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} /events HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{content_type}Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

async fn start(client: &kube::Client, sink: Arc<RecordingSink>) -> u16 {
    let ingest = Ingest::new(
        Arc::new(KubeResources::new(client.clone())),
        vec![sink],
        CloudEventOptions::default(),
        16,
        64 * 1024,
        Default::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, ingest.router()).await });
    port
}

fn completion(ns: &str, run: Option<&str>, rc: Option<&str>) -> serde_json::Value {
    let mut body = json!({
        "status": "succeeded",
        "pipelineName": format!("{ns}/penguin"),
        "runId": "run-123",
        "runStartTime": "2024-05-01T10:00:00Z",
        "runEndTime": "2024-05-01T10:21:07Z",
        "pipelineComponents": [{"name": "Pusher", "componentArtifacts": [{"name": "pushed_model",
            "artifacts": [{"uri": "gs://bucket/model/1", "metadata": {"pushed": 1}}]}]}],
        "provider": format!("{ns}/stub"),
    });
    if let Some(run) = run {
        body["runName"] = json!(format!("{ns}/{run}"));
    }
    if let Some(rc) = rc {
        body["runConfigurationName"] = json!(format!("{ns}/{rc}"));
    }
    body
}

#[tokio::test]
async fn every_status_code_of_the_contract() {
    let client = support::client().await;
    let ns = support::namespace(&client, "ingest-contract").await;
    let sink = Arc::new(RecordingSink::default());
    let port = start(&client, sink.clone()).await;
    let runs: Api<Run> = Api::namespaced(client.clone(), &ns);
    let run = Run::new(
        "penguin-run",
        RunSpec {
            provider: NamespacedName::new(&ns, "stub"),
            pipeline: "penguin".parse().unwrap(),
            artifacts: vec![OutputArtifact::new(
                "serving-model",
                "Pusher:pushed_model[pushed == 1]".parse::<ArtifactPath>().unwrap(),
            )],
            ..RunSpec::default()
        },
    );
    runs.create(&PostParams::default(), &run).await.unwrap();
    let good = completion(&ns, Some("penguin-run"), None).to_string();

    let (status, body) = request(port, "GET", None, "").await;
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("POST"), "{body}");

    let (status, body) = request(port, "POST", Some("text/plain"), &good).await;
    assert_eq!(status, 415, "{body}");
    let (status, body) = request(port, "POST", Some("application/json; charset=utf-8"), &good).await;
    assert_eq!(status, 415, "a charset is not accepted, as in the reference: {body}");

    let (status, body) = request(port, "POST", Some("application/json"), "").await;
    assert_eq!((status, body.as_str()), (400, "the body is empty; send a RunCompletionEventData"));
    let (status, body) = request(port, "POST", Some("application/json"), "{\"status\": 12}").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("the body is not a RunCompletionEventData"), "{body}");

    let (status, body) =
        request(port, "POST", Some("application/json"), &completion(&ns, None, None).to_string()).await;
    assert_eq!((status, body.as_str()), (400, "the event names no RunConfiguration and no Run"));

    let (status, body) = request(
        port,
        "POST",
        Some("application/json"),
        &completion(&ns, Some("nope"), Some("nada")).to_string(),
    )
    .await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body, format!("RunConfiguration {ns}/nada and Run {ns}/nope not found"));

    let oversized = format!("{{\"padding\": \"{}\"}}", "x".repeat(70 * 1024));
    let (status, _) = request(port, "POST", Some("application/json"), &oversized).await;
    assert_eq!(status, 413);

    *sink.failing.lock().unwrap() = true;
    let (status, body) = request(port, "POST", Some("application/json"), &good).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("the bus is down"), "{body}");
    assert!(
        runs.get("penguin-run").await.unwrap().status.is_none_or(|s| s.completion_state.is_none()),
        "nothing is recorded when publishing failed"
    );

    *sink.failing.lock().unwrap() = false;
    let (status, body) = request(port, "POST", Some("application/json"), &good).await;
    assert_eq!((status, body.as_str()), (200, ""));
    let published = sink.published.lock().unwrap().clone();
    assert_eq!(published.len(), 1);
    let types: Vec<String> =
        published[0].cloud_events.iter().map(|e| cloudevents::AttributesReader::ty(e).to_owned()).collect();
    assert_eq!(types, ["org.kubeflow.pipelines.run-completion", "org.kubeflow.pipelines.model-ready"]);
    assert_eq!(published[0].completion.artifacts[0].location, "gs://bucket/model/1");
    let recorded = runs.get("penguin-run").await.unwrap().status.unwrap().completion_state;
    assert_eq!(recorded, Some(CompletionState::Succeeded));
}

#[tokio::test]
async fn an_invalid_filter_is_a_clear_error_not_a_silent_skip() {
    let client = support::client().await;
    let ns = support::namespace(&client, "ingest-filter").await;
    let sink = Arc::new(RecordingSink::default());
    let port = start(&client, sink.clone()).await;
    let run = Run::new(
        "bad-filter",
        RunSpec {
            provider: NamespacedName::new(&ns, "stub"),
            artifacts: vec![OutputArtifact::new(
                "serving-model",
                "Pusher:pushed_model[pushed = = 1]".parse::<ArtifactPath>().unwrap(),
            )],
            ..RunSpec::default()
        },
    );
    Api::<Run>::namespaced(client.clone(), &ns).create(&PostParams::default(), &run).await.unwrap();
    let (status, body) = request(
        port,
        "POST",
        Some("application/json"),
        &completion(&ns, Some("bad-filter"), None).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("pushed = = 1"), "{body}");
    assert!(sink.published.lock().unwrap().is_empty());
}
