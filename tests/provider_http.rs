//! Tests of `provider::http::HttpProvider` against an in-process axum server on loopback that
//! implements the provider-service OpenAPI contract (`/resource/{type}[/{id}]`), plus a few
//! misbehaving resources: failures (500), rejections (400/422), slowness (timeouts), missing ids
//! and transient 503s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use kfp_operator::provider::http::{HttpProvider, HttpProviderOptions};
use kfp_operator::provider::{ProviderApi, ProviderError, ResourceKind};
use serde_json::{Value, json};

const ALL_KINDS: [ResourceKind; 4] =
    [ResourceKind::Pipeline, ResourceKind::Run, ResourceKind::RunSchedule, ResourceKind::Experiment];

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Call {
    method: Method,
    /// The raw path, before percent-decoding.
    raw_path: String,
    /// The decoded `{id}` path parameter, if any.
    id: Option<String>,
    body: Option<Value>,
}

#[derive(Default)]
struct ServerState {
    /// (kind, id) → definition.
    resources: Mutex<HashMap<(String, String), Value>>,
    next_id: AtomicU64,
    calls: Mutex<Vec<Call>>,
    /// How many times each `flaky` resource name has been seen.
    flaky: Mutex<HashMap<String, u32>>,
}

impl ServerState {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn calls_for(&self, name: &str) -> usize {
        self.calls()
            .iter()
            .filter(|call| call.body.as_ref().and_then(resource_name).as_deref() == Some(name))
            .count()
    }

    fn stored(&self, kind: ResourceKind, id: &str) -> Option<Value> {
        self.resources.lock().unwrap().get(&(kind.as_str().to_owned(), id.to_owned())).cloned()
    }

    fn seed(&self, kind: ResourceKind, id: &str, definition: Value) {
        self.resources.lock().unwrap().insert((kind.as_str().to_owned(), id.to_owned()), definition);
    }

    fn record(&self, method: Method, uri: &Uri, id: Option<String>, body: Option<Value>) {
        self.calls.lock().unwrap().push(Call { method, raw_path: uri.path().to_owned(), id, body });
    }
}

type Shared = Arc<ServerState>;

/// The resource name in a definition: `name`, or `pipelineDefinition.name` for pipelines.
fn resource_name(definition: &Value) -> Option<String> {
    definition
        .get("name")
        .or_else(|| definition.pointer("/pipelineDefinition/name"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn valid_kind(kind: &str) -> bool {
    matches!(kind, "pipeline" | "run" | "runschedule" | "experiment")
}

fn provider_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "providerError": message }))).into_response()
}

/// Answers for the special resource names shared by create and update; `None` means "behave".
async fn special(state: &ServerState, name: &str) -> Option<Response> {
    match name {
        "create-pipeline-fail" => {
            Some(provider_error(StatusCode::INTERNAL_SERVER_ERROR, "create pipeline failed"))
        }
        "bad-request" => {
            Some(provider_error(StatusCode::BAD_REQUEST, "invalid definition: version is missing"))
        }
        "unprocessable-text" => {
            Some((StatusCode::UNPROCESSABLE_ENTITY, "schedule is not a cron expression").into_response())
        }
        "unimplemented" => Some((StatusCode::NOT_IMPLEMENTED, "not implemented").into_response()),
        "no-id" => Some((StatusCode::CREATED, axum::Json(json!({}))).into_response()),
        "empty-id" => Some((StatusCode::CREATED, axum::Json(json!({ "id": "" }))).into_response()),
        "error-in-2xx" => Some(
            (StatusCode::CREATED, axum::Json(json!({ "id": "x", "providerError": "quota exceeded" })))
                .into_response(),
        ),
        "always-503" => Some((StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable").into_response()),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            None
        }
        "flaky" => {
            let seen = {
                let mut flaky = state.flaky.lock().unwrap();
                let seen = flaky.entry(name.to_owned()).or_default();
                *seen += 1;
                *seen
            };
            (seen == 1).then(|| provider_error(StatusCode::SERVICE_UNAVAILABLE, "warming up"))
        }
        _ => None,
    }
}

async fn create(State(state): State<Shared>, Path(kind): Path<String>, uri: Uri, body: Bytes) -> Response {
    let definition: Option<Value> = serde_json::from_slice(&body).ok();
    state.record(Method::POST, &uri, None, definition.clone());
    if !valid_kind(&kind) {
        return provider_error(StatusCode::BAD_REQUEST, &format!("unknown resource type {kind}"));
    }
    let Some(definition) = definition else {
        return provider_error(StatusCode::BAD_REQUEST, "body not decodable");
    };
    let name = resource_name(&definition).unwrap_or_default();
    if let Some(response) = special(&state, &name).await {
        return response;
    }
    let id = format!("{kind}-{name}-{}", state.next_id.fetch_add(1, Ordering::SeqCst));
    state.resources.lock().unwrap().insert((kind, id.clone()), definition);
    (StatusCode::CREATED, axum::Json(json!({ "id": id }))).into_response()
}

async fn update(
    State(state): State<Shared>,
    Path((kind, id)): Path<(String, String)>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let definition: Option<Value> = serde_json::from_slice(&body).ok();
    state.record(Method::PUT, &uri, Some(id.clone()), definition.clone());
    if kind == "run" {
        // As in the reference provider service: runs cannot be updated.
        return StatusCode::NOT_IMPLEMENTED.into_response();
    }
    if !valid_kind(&kind) {
        return provider_error(StatusCode::BAD_REQUEST, &format!("unknown resource type {kind}"));
    }
    let Some(definition) = definition else {
        return provider_error(StatusCode::BAD_REQUEST, "body not decodable");
    };
    let name = resource_name(&definition).unwrap_or_default();
    if let Some(response) = special(&state, &name).await {
        return response;
    }
    let mut resources = state.resources.lock().unwrap();
    if resources.remove(&(kind.clone(), id.clone())).is_none() {
        return (StatusCode::NOT_FOUND, axum::Json(json!({ "id": id, "providerError": "not found" })))
            .into_response();
    }
    // Like KFP run schedules: an update is a delete and a create, which gives a new id.
    let new_id = if kind == "runschedule" {
        format!("{id}-v{}", state.next_id.fetch_add(1, Ordering::SeqCst))
    } else {
        id
    };
    resources.insert((kind, new_id.clone()), definition);
    (StatusCode::OK, axum::Json(json!({ "id": new_id }))).into_response()
}

async fn delete(State(state): State<Shared>, Path((kind, id)): Path<(String, String)>, uri: Uri) -> Response {
    state.record(Method::DELETE, &uri, Some(id.clone()), None);
    if !valid_kind(&kind) {
        return provider_error(StatusCode::BAD_REQUEST, &format!("unknown resource type {kind}"));
    }
    match id.as_str() {
        "delete-fail" => return provider_error(StatusCode::INTERNAL_SERVER_ERROR, "bucket is locked"),
        "delete-bad" => return provider_error(StatusCode::BAD_REQUEST, "bad id"),
        _ => {}
    }
    if state.resources.lock().unwrap().remove(&(kind, id.clone())).is_some() {
        (StatusCode::OK, axum::Json(json!({}))).into_response()
    } else {
        (StatusCode::NOT_FOUND, axum::Json(json!({ "id": id, "providerError": "not found" }))).into_response()
    }
}

/// Starts the fake provider service; it lives as long as the test's runtime.
async fn start_server() -> (String, Shared) {
    let state = Shared::default();
    let app = Router::new()
        .route("/resource/{kind}", post(create))
        .route("/resource/{kind}/{id}", put(update).delete(delete))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{address}"), state)
}

fn fast_options() -> HttpProviderOptions {
    HttpProviderOptions {
        request_timeout: Duration::from_millis(200),
        retries: 2,
        retry_backoff: Duration::from_millis(10),
    }
}

async fn provider() -> (HttpProvider, Shared) {
    let (url, state) = start_server().await;
    (HttpProvider::new(&url, fast_options()).unwrap(), state)
}

/// A representative definition of each kind, named `name`.
fn definition(kind: ResourceKind, name: &str) -> Value {
    match kind {
        ResourceKind::Pipeline => json!({
            "pipelineDefinition": {
                "name": name,
                "version": "0.1.0-abc",
                "image": "registry/pipeline:1",
                "env": [{ "name": "ENV", "value": "prod ü/%?" }],
                "framework": { "type": "tfx", "parameters": { "beamArgs": [{ "name": "a", "value": "1" }] } }
            },
            "compiledPipeline": { "pipelineSpec": { "root": { "dag": { "tasks": {} } } }, "n": 1.5, "null": null }
        }),
        ResourceKind::Run => json!({
            "name": name,
            "version": "v1",
            "pipelineName": "ns/pipeline",
            "pipelineVersion": "0.1.0",
            "runConfigurationName": "",
            "experimentName": "ns/default",
            "parameters": { "p": "1" },
            "artifacts": [{ "name": "model", "path": "Pusher:pushed_model:0[pushed == 1]" }]
        }),
        ResourceKind::RunSchedule => json!({
            "name": name,
            "version": "v1",
            "pipelineName": "ns/pipeline",
            "pipelineVersion": "0.1.0",
            "runConfigurationName": "ns/rc",
            "experimentName": "ns/default",
            "schedule": { "cronExpression": "0 0 * * *", "startTime": null },
            "parameters": {},
            "artifacts": []
        }),
        ResourceKind::Experiment => json!({ "name": name, "version": "v1", "description": "an experiment" }),
    }
}

#[tokio::test]
async fn create_update_delete_round_trip_for_every_kind() {
    let (provider, state) = provider().await;
    for kind in ALL_KINDS {
        let created = definition(kind, "round-trip");
        let id = provider.create(kind, &created).await.unwrap();
        assert!(id.starts_with(&format!("{kind}-round-trip-")), "{id}");
        assert_eq!(state.stored(kind, &id), Some(created.clone()), "{kind}: stored definition");

        let mut changed = definition(kind, "round-trip");
        changed["version"] = json!("v2");
        let id = match provider.update(kind, &id, &changed).await {
            Ok(new_id) => {
                assert_ne!(kind, ResourceKind::Run, "runs cannot be updated");
                assert_eq!(state.stored(kind, &new_id), Some(changed.clone()), "{kind}: updated definition");
                if kind == ResourceKind::RunSchedule {
                    assert_ne!(new_id, id, "a run schedule update gives a new id");
                } else {
                    assert_eq!(new_id, id);
                }
                new_id
            }
            Err(error) => {
                assert_eq!(kind, ResourceKind::Run, "{kind}: {error}");
                assert_eq!(error, ProviderError::Unimplemented { operation: "update run".to_owned() });
                id
            }
        };

        provider.delete(kind, &id).await.unwrap();
        assert_eq!(state.stored(kind, &id), None, "{kind}: deleted");
        // Deleting again finds nothing (404), which counts as success.
        provider.delete(kind, &id).await.unwrap();
    }

    // The server received exactly what was sent, on the right paths.
    let calls = state.calls();
    let posts: Vec<_> = calls.iter().filter(|call| call.method == Method::POST).collect();
    assert_eq!(posts.len(), 4);
    for (call, kind) in posts.iter().zip(ALL_KINDS) {
        assert_eq!(call.raw_path, format!("/resource/{kind}"));
        assert_eq!(call.body.as_ref(), Some(&definition(kind, "round-trip")));
    }
    assert!(calls.iter().filter(|call| call.method == Method::DELETE).all(|call| call.body.is_none()));
}

#[tokio::test]
async fn ids_are_percent_encoded_in_paths() {
    let (provider, state) = provider().await;
    let kind = ResourceKind::Experiment;
    state.seed(kind, "ns/name", definition(kind, "e"));

    let new_id = provider.update(kind, "ns/name", &definition(kind, "e")).await.unwrap();
    assert_eq!(new_id, "ns/name");
    provider.delete(kind, "ns/name").await.unwrap();
    assert_eq!(state.stored(kind, "ns/name"), None);

    let odd = "a b?c#d%e&f+g=h~i.j_k-l/ü";
    state.seed(kind, odd, definition(kind, "e"));
    provider.delete(kind, odd).await.unwrap();
    assert_eq!(state.stored(kind, odd), None);

    let calls = state.calls();
    assert_eq!(calls[0].raw_path, "/resource/experiment/ns%2Fname");
    assert_eq!(calls[0].id.as_deref(), Some("ns/name"));
    assert_eq!(calls[1].raw_path, "/resource/experiment/ns%2Fname");
    assert_eq!(calls[2].raw_path, "/resource/experiment/a%20b%3Fc%23d%25e%26f%2Bg%3Dh~i.j_k-l%2F%C3%BC");
    assert_eq!(calls[2].id.as_deref(), Some(odd));
}

#[tokio::test]
async fn base_url_may_have_a_trailing_slash() {
    let (url, state) = start_server().await;
    let provider = HttpProvider::new(&format!("{url}/"), fast_options()).unwrap();
    assert_eq!(provider.base_url(), url);
    provider.create(ResourceKind::Experiment, &definition(ResourceKind::Experiment, "e")).await.unwrap();
    assert_eq!(state.calls()[0].raw_path, "/resource/experiment");
}

#[tokio::test]
async fn invalid_base_urls_are_refused_clearly() {
    for url in ["", "not a url", "localhost:8080", "https://provider:8080", "ftp://provider", "http://p/?q=1"]
    {
        let error = HttpProvider::new(url, HttpProviderOptions::default()).unwrap_err();
        assert!(matches!(error, ProviderError::Unreachable { .. }), "{url}: {error:?}");
        assert!(error.to_string().contains("invalid provider URL"), "{url}: {error}");
    }
}

#[tokio::test]
async fn not_implemented_is_unimplemented_and_not_retried() {
    let (provider, state) = provider().await;
    let error = provider
        .create(ResourceKind::Experiment, &definition(ResourceKind::Experiment, "unimplemented"))
        .await
        .unwrap_err();
    assert_eq!(error, ProviderError::Unimplemented { operation: "create experiment".to_owned() });
    assert_eq!(error.to_string(), "the provider does not implement create experiment");
    assert_eq!(error.category(), "ProviderUnimplemented");
    assert_eq!(state.calls_for("unimplemented"), 1);

    let error = provider
        .update(ResourceKind::Run, "some-run", &definition(ResourceKind::Run, "r"))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "the provider does not implement update run");
}

#[tokio::test]
async fn server_error_is_failed_with_the_provider_text_after_retries() {
    let (provider, state) = provider().await;
    let error = provider
        .create(ResourceKind::Pipeline, &definition(ResourceKind::Pipeline, "create-pipeline-fail"))
        .await
        .unwrap_err();
    let ProviderError::Failed { message } = &error else { panic!("expected Failed, got {error:?}") };
    assert!(message.contains("create pipeline failed"), "{message}");
    assert!(message.contains("create pipeline"), "{message}");
    assert!(message.contains("500"), "{message}");
    assert!(error.is_transient());
    // 500 is retried: 1 attempt + 2 retries.
    assert_eq!(state.calls_for("create-pipeline-fail"), 3);
}

#[tokio::test]
async fn other_5xx_with_a_text_body_is_failed_with_that_text() {
    let (provider, state) = provider().await;
    let error = provider
        .create(ResourceKind::RunSchedule, &definition(ResourceKind::RunSchedule, "always-503"))
        .await
        .unwrap_err();
    let ProviderError::Failed { message } = &error else { panic!("expected Failed, got {error:?}") };
    assert!(message.contains("upstream unavailable"), "{message}");
    assert!(message.contains("create runschedule"), "{message}");
    assert_eq!(state.calls_for("always-503"), 3);
}

#[tokio::test]
async fn a_transient_5xx_is_retried_to_success() {
    let (provider, state) = provider().await;
    let id = provider
        .create(ResourceKind::Experiment, &definition(ResourceKind::Experiment, "flaky"))
        .await
        .unwrap();
    assert!(id.starts_with("experiment-flaky-"), "{id}");
    assert_eq!(state.calls_for("flaky"), 2);
}

#[tokio::test]
async fn bad_request_is_rejected_and_not_retried() {
    let (provider, state) = provider().await;
    let error =
        provider.create(ResourceKind::Run, &definition(ResourceKind::Run, "bad-request")).await.unwrap_err();
    let ProviderError::Rejected { message } = &error else { panic!("expected Rejected, got {error:?}") };
    assert!(message.contains("invalid definition: version is missing"), "{message}");
    assert!(message.contains("create run"), "{message}");
    assert!(!error.is_transient());
    assert_eq!(error.category(), "ProviderRejected");
    assert_eq!(state.calls_for("bad-request"), 1, "a 400 must not be retried");

    // 422 with a plain-text body: the raw body is the message.
    let error = provider
        .create(ResourceKind::RunSchedule, &definition(ResourceKind::RunSchedule, "unprocessable-text"))
        .await
        .unwrap_err();
    let ProviderError::Rejected { message } = &error else { panic!("expected Rejected, got {error:?}") };
    assert!(message.contains("schedule is not a cron expression"), "{message}");
    assert_eq!(state.calls_for("unprocessable-text"), 1);

    // A 400 on delete is not "already gone".
    let error = provider.delete(ResourceKind::Pipeline, "delete-bad").await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::Rejected { message } if message.contains("delete pipeline")),
        "{error}"
    );
}

#[tokio::test]
async fn delete_failure_is_failed() {
    let (provider, _state) = provider().await;
    let error = provider.delete(ResourceKind::Pipeline, "delete-fail").await.unwrap_err();
    let ProviderError::Failed { message } = &error else { panic!("expected Failed, got {error:?}") };
    assert!(message.contains("bucket is locked") && message.contains("delete pipeline"), "{message}");
}

#[tokio::test]
async fn updating_an_unknown_resource_is_rejected() {
    let (provider, state) = provider().await;
    let error = provider
        .update(ResourceKind::Pipeline, "missing", &definition(ResourceKind::Pipeline, "p"))
        .await
        .unwrap_err();
    let ProviderError::Rejected { message } = &error else { panic!("expected Rejected, got {error:?}") };
    assert!(message.contains("update pipeline") && message.contains("404"), "{message}");
    assert_eq!(state.calls().len(), 1);
}

#[tokio::test]
async fn timeouts_are_retried_then_reported() {
    let (provider, state) = provider().await;
    let started = std::time::Instant::now();
    let error = provider
        .create(ResourceKind::Experiment, &definition(ResourceKind::Experiment, "slow"))
        .await
        .unwrap_err();
    assert_eq!(error, ProviderError::Timeout { seconds: 1 });
    assert_eq!(error.to_string(), "the provider did not answer within 1s");
    assert_eq!(state.calls_for("slow"), 1 + 2, "one attempt plus two retries");
    assert!(started.elapsed() < Duration::from_secs(3), "bounded by the client timeout");
}

#[tokio::test]
async fn no_retries_means_one_attempt() {
    let (url, state) = start_server().await;
    let options = HttpProviderOptions { retries: 0, ..fast_options() };
    let provider = HttpProvider::new(&url, options).unwrap();
    let error = provider
        .create(ResourceKind::Experiment, &definition(ResourceKind::Experiment, "slow"))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Timeout { .. }), "{error:?}");
    assert_eq!(state.calls_for("slow"), 1);
}

#[tokio::test]
async fn an_unreachable_provider_is_unreachable() {
    // Bind then release a port so that nothing listens on it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);

    let provider = HttpProvider::new(&format!("http://{address}"), fast_options()).unwrap();
    let error = provider.delete(ResourceKind::Run, "ns/run").await.unwrap_err();
    let ProviderError::Unreachable { message } = &error else {
        panic!("expected Unreachable, got {error:?}")
    };
    assert!(message.contains("delete run"), "{message}");
    assert!(message.contains(&address.to_string()), "{message}");
    assert!(error.to_string().starts_with("cannot reach the provider: "), "{error}");
    assert_eq!(error.category(), "ProviderUnreachable");
}

#[tokio::test]
async fn a_success_without_an_id_is_failed() {
    let (provider, state) = provider().await;
    for name in ["no-id", "empty-id"] {
        let error = provider
            .create(ResourceKind::Pipeline, &definition(ResourceKind::Pipeline, name))
            .await
            .unwrap_err();
        let ProviderError::Failed { message } = &error else { panic!("expected Failed, got {error:?}") };
        assert!(message.contains("the provider returned no id"), "{message}");
        assert!(message.contains("create pipeline"), "{message}");
        assert_eq!(state.calls_for(name), 1, "{name}: not retried");
    }
}

#[tokio::test]
async fn a_success_with_a_provider_error_is_failed() {
    let (provider, state) = provider().await;
    let error = provider
        .create(ResourceKind::Experiment, &definition(ResourceKind::Experiment, "error-in-2xx"))
        .await
        .unwrap_err();
    let ProviderError::Failed { message } = &error else { panic!("expected Failed, got {error:?}") };
    assert!(message.contains("quota exceeded") && message.contains("create experiment"), "{message}");
    assert_eq!(state.calls_for("error-in-2xx"), 1);
}

#[tokio::test]
async fn an_empty_id_is_refused_without_a_request() {
    let (provider, state) = provider().await;
    let error = provider.delete(ResourceKind::Pipeline, "").await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::Rejected { message } if message.contains("delete pipeline")),
        "{error}"
    );
    assert!(state.calls().is_empty());
}

#[test]
fn default_options() {
    let options = HttpProviderOptions::default();
    assert_eq!(options.request_timeout, Duration::from_secs(30));
    assert_eq!(options.retries, 2);
    assert_eq!(options.retry_backoff, Duration::from_millis(200));
}
