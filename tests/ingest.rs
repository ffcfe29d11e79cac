//! The `POST /events` contract against the real apiserver: every status code with the
//! reference's meaning and a body that says why, and a 200 only once the sinks accepted the
//! events and the Run recorded its completion; a completion of another Provider's Run is
//! refused, and with `serviceAccountToken` only the Provider's own ServiceAccount is heard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kfp_operator::api::{
    ArtifactPath, CompletionState, NamespacedName, OutputArtifact, Provider, Run, RunSpec,
};
use kfp_operator::completion::KubeResources;
use kfp_operator::completion::token_review::KubeTokenReviewer;
use kfp_operator::events::CloudEventOptions;
use kfp_operator::events::auth::Authenticator;
use kfp_operator::events::ingest::Ingest;
use kfp_operator::events::sink::{Delivery, Outgoing, Sink, SinkError};
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::json;

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
    let content_type = content_type.map(|c| format!("Content-Type: {c}\r\n")).unwrap_or_default();
    let (status, _, body) = support::http_exchange(port, method, "/events", &content_type, body).await;
    (status, body)
}

async fn start(client: &kube::Client, sink: Arc<RecordingSink>) -> u16 {
    start_authenticated(client, sink, None).await
}

async fn start_authenticated(
    client: &kube::Client,
    sink: Arc<RecordingSink>,
    authenticator: Option<Authenticator>,
) -> u16 {
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
    tokio::spawn(async move { axum::serve(listener, ingest.router(authenticator)).await });
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
    let mut foreign = completion(&ns, Some("penguin-run"), None);
    foreign["provider"] = json!(format!("{ns}/vertex"));
    let (status, body) = request(port, "POST", Some("application/json"), &foreign.to_string()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body,
        format!(
            "Provider {ns}/vertex may not report a completion of Run {ns}/penguin-run, which belongs to Provider {ns}/stub"
        )
    );
    assert!(
        sink.published.lock().unwrap().is_empty(),
        "a completion of another Provider's Run is not published"
    );
    assert_eq!(completion_state(&runs.get("penguin-run").await.unwrap()), None, "nor recorded");

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

const AUDIENCE: &str = kfp_operator::events::config::DEFAULT_TOKEN_AUDIENCE;

/// A Run on the Provider `stub` of `ns`, whose service runs as the ServiceAccount `kfp-stub`;
/// that ServiceAccount and `intruder`, both in `ns`, exist.
async fn provider_with_service_account(client: &kube::Client, ns: &str, run: &str) {
    let mut provider = support::fixtures::stub_provider("stub");
    provider.spec.service_account = "kfp-stub".into();
    Api::<Provider>::namespaced(client.clone(), ns).create(&PostParams::default(), &provider).await.unwrap();
    for name in ["kfp-stub", "intruder"] {
        let account = ServiceAccount {
            metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
            ..ServiceAccount::default()
        };
        Api::<ServiceAccount>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &account)
            .await
            .unwrap();
    }
    let run = Run::new(run, RunSpec { provider: NamespacedName::new(ns, "stub"), ..RunSpec::default() });
    Api::<Run>::namespaced(client.clone(), ns).create(&PostParams::default(), &run).await.unwrap();
}

/// A token of the ServiceAccount `ns/name` for `audience`, from the TokenRequest API.
async fn token_of(client: &kube::Client, ns: &str, name: &str, audience: &str) -> String {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.into()],
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let answer = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap();
    answer.status.unwrap().token
}

fn completion_state(run: &Run) -> Option<CompletionState> {
    run.status.as_ref().and_then(|s| s.completion_state)
}

/// With `serviceAccountToken`: no token and a garbage, other-audience or another namespace's
/// token are refused (401, 401, 401, 403) and change nothing; the Provider's own ServiceAccount's
/// token is accepted and the Run records the completion.
#[tokio::test]
async fn only_the_providers_service_account_may_post_completions() {
    let client = support::client().await;
    let ns = support::namespace(&client, "ingest-auth").await;
    let elsewhere = support::namespace(&client, "ingest-auth-other").await;
    provider_with_service_account(&client, &ns, "penguin-run").await;
    let account = ServiceAccount {
        metadata: ObjectMeta { name: Some("kfp-stub".into()), ..ObjectMeta::default() },
        ..ServiceAccount::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), &elsewhere)
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let sink = Arc::new(RecordingSink::default());
    let authenticator = Authenticator::new(Arc::new(KubeTokenReviewer::new(client.clone())), AUDIENCE);
    let port = start_authenticated(&client, sink.clone(), Some(authenticator)).await;
    let body = completion(&ns, Some("penguin-run"), None).to_string();
    let runs: Api<Run> = Api::namespaced(client.clone(), &ns);

    let (status, head, text) = support::post_events(port, None, &body).await;
    assert_eq!(status, 401, "{text}");
    assert!(head.to_lowercase().contains("www-authenticate: bearer"), "{head}");
    assert!(text.contains("no bearer token"), "{text}");

    let (status, _, text) = support::post_events(port, Some("Bearer not-a-token"), &body).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.starts_with("the token is not valid"), "{text}");

    let other_audience = token_of(&client, &ns, "kfp-stub", "some-other-audience").await;
    let (status, _, text) =
        support::post_events(port, Some(&format!("Bearer {other_audience}")), &body).await;
    assert_eq!(status, 401, "a token for another audience: {text}");

    let foreign = token_of(&client, &elsewhere, "kfp-stub", AUDIENCE).await;
    let (status, _, text) = support::post_events(port, Some(&format!("Bearer {foreign}")), &body).await;
    assert_eq!(status, 403, "{text}");
    assert_eq!(
        text,
        format!(
            "system:serviceaccount:{elsewhere}:kfp-stub may not report completions of Provider {ns}/stub; \
             only its ServiceAccount system:serviceaccount:{ns}:kfp-stub may"
        )
    );
    let intruder = token_of(&client, &ns, "intruder", AUDIENCE).await;
    let (status, _, text) = support::post_events(port, Some(&format!("Bearer {intruder}")), &body).await;
    assert_eq!(status, 403, "another ServiceAccount of the same namespace: {text}");

    assert!(sink.published.lock().unwrap().is_empty(), "no refused completion is published");
    assert_eq!(completion_state(&runs.get("penguin-run").await.unwrap()), None);

    let own = token_of(&client, &ns, "kfp-stub", AUDIENCE).await;
    let (status, _, text) = support::post_events(port, Some(&format!("Bearer {own}")), &body).await;
    assert_eq!((status, text.as_str()), (200, ""));
    assert_eq!(completion_state(&runs.get("penguin-run").await.unwrap()), Some(CompletionState::Succeeded));
    assert_eq!(sink.published.lock().unwrap().len(), 1);
}

/// When tokens cannot be reviewed (the API server unreachable), `/events` answers 503 and
/// never accepts a completion unverified.
#[tokio::test]
async fn a_token_review_outage_answers_503_never_200() {
    let client = support::client().await;
    let ns = support::namespace(&client, "ingest-auth-outage").await;
    provider_with_service_account(&client, &ns, "penguin-run").await;
    let own = token_of(&client, &ns, "kfp-stub", AUDIENCE).await;
    let closed = support::free_port();
    let mut config = kube::Config::new(format!("https://127.0.0.1:{closed}").parse().unwrap());
    config.accept_invalid_certs = true;
    let unreachable = kube::Client::try_from(config).unwrap();
    let sink = Arc::new(RecordingSink::default());
    let authenticator = Authenticator::new(Arc::new(KubeTokenReviewer::new(unreachable)), AUDIENCE);
    let port = start_authenticated(&client, sink.clone(), Some(authenticator)).await;
    let body = completion(&ns, Some("penguin-run"), None).to_string();
    for _ in 0..2 {
        let (status, head, text) = support::post_events(port, Some(&format!("Bearer {own}")), &body).await;
        assert_eq!(status, 503, "{text}");
        assert!(head.to_lowercase().contains("retry-after: 1"), "{head}");
        assert!(text.contains("could not be reviewed"), "{text}");
    }
    assert!(sink.published.lock().unwrap().is_empty());
    let run = Api::<Run>::namespaced(client.clone(), &ns).get("penguin-run").await.unwrap();
    assert_eq!(completion_state(&run), None);
}
