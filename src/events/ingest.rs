//! The run-completion ingest, `POST /events`, with the reference's contract: a
//! `RunCompletionEventData` body as `application/json`; 405 for other methods, 415 for another
//! content type, 400 for an empty or undecodable body or an invalid event, 410 when neither the
//! named Run nor RunConfiguration exists, 500 when publishing or recording failed, 413 above the
//! size limit, and 200 only after every sink accepted the events and the Run recorded its
//! completion. Every rejection says why in its body and logs one line with its category.
//!
//! Each completion is counted by result, and its work runs in a span carrying its `trace_id`
//! (the id of its run-completion CloudEvent, [`trace_id`]): the lines of its receipt, of each
//! sink's publish, of its record on the Run and of the dependant Runs it starts all carry it.
//!
//! Beyond the reference: a completion only changes Runs and RunConfigurations of the Provider
//! that reports it (403 `ProviderMismatch` otherwise, and nothing is published or recorded), and
//! with an [`Authenticator`] the caller must prove with a bearer token that it is that
//! Provider's ServiceAccount (401 without a valid token, 403 for another ServiceAccount, 503
//! when the token cannot be reviewed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use chrono::Utc;
use futures::future::{BoxFuture, join_all};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::auth::{AuthError, Authenticator, Caller, authorize};
use super::cloudevent::{CloudEventOptions, cloud_events_for, trace_id};
use super::completion::{RunCompletionEvent, RunCompletionEventData, select_artifacts};
use super::sink::{Outgoing, Sink};
use crate::api::{NamespacedName, OutputArtifact};
use crate::metrics::Metrics;

/// Why a completion was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("method {0} is not allowed; POST a RunCompletionEventData to /events")]
    MethodNotAllowed(String),
    #[error("content type {0:?} is not supported; send exactly application/json")]
    UnsupportedMediaType(String),
    #[error("the body is empty; send a RunCompletionEventData")]
    EmptyBody,
    #[error("the body is not a RunCompletionEventData: {0}")]
    Undecodable(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Internal(String),
    /// The completion names a Run or RunConfiguration of another Provider than the reporting one.
    #[error("{0}")]
    ProviderMismatch(String),
    /// No valid bearer token for the configured audience.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token, but of another ServiceAccount than the reporting Provider's.
    #[error("{0}")]
    ServiceAccountMismatch(String),
    /// The token could not be reviewed; the caller should retry.
    #[error("{0}")]
    AuthenticationUnavailable(String),
}

impl IngestError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::EmptyBody | Self::Undecodable(_) | Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Gone(_) => StatusCode::GONE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::ProviderMismatch(_) | Self::ServiceAccountMismatch(_) => StatusCode::FORBIDDEN,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::AuthenticationUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn category(&self) -> &'static str {
        match self {
            Self::MethodNotAllowed(_) => "MethodNotAllowed",
            Self::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Self::EmptyBody => "EmptyBody",
            Self::Undecodable(_) => "UndecodableBody",
            Self::Invalid(_) => "InvalidEvent",
            Self::Gone(_) => "MissingResource",
            Self::Internal(_) => "InternalError",
            Self::ProviderMismatch(_) => "ProviderMismatch",
            Self::Unauthenticated(_) => "Unauthenticated",
            Self::ServiceAccountMismatch(_) => "ServiceAccountMismatch",
            Self::AuthenticationUnavailable(_) => "AuthenticationUnavailable",
        }
    }
}

impl From<AuthError> for IngestError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Unauthenticated(message) => Self::Unauthenticated(message),
            AuthError::ServiceAccountMismatch(message) => Self::ServiceAccountMismatch(message),
            AuthError::Unavailable(message) => Self::AuthenticationUnavailable(message),
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), self.to_string()).into_response();
        let extra = match &self {
            Self::Unauthenticated(_) => Some((header::WWW_AUTHENTICATE, "Bearer")),
            Self::AuthenticationUnavailable(_) => Some((header::RETRY_AFTER, "1")),
            _ => None,
        };
        if let Some((name, value)) = extra {
            response.headers_mut().insert(name, header::HeaderValue::from_static(value));
        }
        response
    }
}

/// What a completion names: the artifacts it may expose, and the resources it would change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Named {
    /// The artifacts declared by the named RunConfiguration (preferred) or Run.
    pub artifacts: Vec<OutputArtifact>,
    /// The named Runs and RunConfigurations that exist.
    pub resources: Vec<Owned>,
}

/// A Run or RunConfiguration, and the Providers it belongs to (its spec's, and the one that
/// last synchronised it).
#[derive(Debug, Clone, PartialEq)]
pub struct Owned {
    pub kind: &'static str,
    pub name: NamespacedName,
    pub providers: Vec<NamespacedName>,
}

/// Refuses a completion reported by `reporter` that names a resource of another Provider.
pub fn check_providers(reporter: &NamespacedName, resources: &[Owned]) -> Result<(), IngestError> {
    let Some(foreign) = resources.iter().find(|owned| !owned.providers.contains(reporter)) else {
        return Ok(());
    };
    let owner = match foreign.providers.as_slice() {
        [] => "no Provider".to_owned(),
        providers => {
            let names: Vec<String> = providers.iter().map(|p| format!("Provider {p}")).collect();
            names.join(" and ")
        }
    };
    Err(IngestError::ProviderMismatch(format!(
        "Provider {reporter} may not report a completion of {} {}, which belongs to {owner}",
        foreign.kind, foreign.name
    )))
}

/// The resources a completion names: where its declared artifacts come from, whose they are,
/// and where the completion is recorded.
pub trait Resources: Send + Sync {
    /// The named RunConfiguration and Run, with the artifacts they declare.
    fn named<'a>(&'a self, data: &'a RunCompletionEventData) -> BoxFuture<'a, Result<Named, IngestError>>;
    /// Records the completion on the Run it names, if any; `received` is when it arrived.
    fn record<'a>(
        &'a self,
        event: &'a RunCompletionEvent,
        received: Instant,
    ) -> BoxFuture<'a, Result<(), IngestError>>;
    /// The user name of the ServiceAccount the service of `provider` runs as; `None` when the
    /// Provider does not exist.
    fn provider_service_account<'a>(
        &'a self,
        provider: &'a NamespacedName,
    ) -> BoxFuture<'a, Result<Option<String>, IngestError>>;
}

/// Turns accepted completions into published CloudEvents and recorded Run states.
pub struct Ingest {
    resources: Arc<dyn Resources>,
    sinks: Vec<Arc<dyn Sink>>,
    options: CloudEventOptions,
    in_flight: Semaphore,
    max_body_bytes: usize,
    metrics: Metrics,
}

fn millis(took: Duration) -> u64 {
    u64::try_from(took.as_millis()).unwrap_or(u64::MAX)
}

/// The state of the `/events` route: the ingest, and who may call it.
struct Endpoint {
    ingest: Arc<Ingest>,
    authenticator: Option<Authenticator>,
}

impl Ingest {
    /// An ingest publishing on `sinks`, recording into `resources`, counting into `metrics`.
    pub fn new(
        resources: Arc<dyn Resources>,
        sinks: Vec<Arc<dyn Sink>>,
        options: CloudEventOptions,
        max_in_flight: usize,
        max_body_bytes: usize,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            resources,
            sinks,
            options,
            in_flight: Semaphore::new(max_in_flight.max(1)),
            max_body_bytes,
            metrics,
        })
    }

    /// Accepts one completion from within the operator: selects its artifacts, publishes its
    /// CloudEvents on every sink and records it. Returns only when all of that is durable.
    /// Counted, and logged in the completion's span.
    pub async fn accept(&self, data: RunCompletionEventData) -> Result<RunCompletionEvent, IngestError> {
        self.accept_from(data, None).await
    }

    /// Accepts one completion from `caller` (`None`: a caller that needs no proof). The
    /// reporting Provider must be `caller`'s and own every resource the completion names.
    async fn accept_from(
        &self,
        data: RunCompletionEventData,
        caller: Option<&Caller>,
    ) -> Result<RunCompletionEvent, IngestError> {
        let received = Instant::now();
        let span = tracing::info_span!(
            "completion",
            trace_id = %trace_id(&data.provider, &data.run_id, data.status),
            run_id = %data.run_id,
            namespace = %data.pipeline_name.namespace,
        );
        let result = self.accept_in_span(data, received, caller).instrument(span.clone()).await;
        let _entered = span.enter();
        match &result {
            Ok(completion) => {
                self.metrics.ingested("accepted");
                tracing::info!(
                    status = completion.status.as_str(),
                    duration_ms = millis(received.elapsed()),
                    "completion accepted"
                );
            }
            Err(error) => self.rejected(error),
        }
        result
    }

    fn rejected(&self, error: &IngestError) {
        self.metrics.ingested(error.category());
        tracing::info!(category = error.category(), %error, "completion rejected");
    }

    async fn accept_in_span(
        &self,
        data: RunCompletionEventData,
        received: Instant,
        caller: Option<&Caller>,
    ) -> Result<RunCompletionEvent, IngestError> {
        tracing::info!(
            status = data.status.as_str(),
            pipeline = %data.pipeline_name,
            runconfiguration = data.run_configuration_name.as_ref().map(ToString::to_string),
            run = data.run_name.as_ref().map(ToString::to_string),
            "completion received"
        );
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| IngestError::Internal("the ingest is shutting down".into()))?;
        let reporter = data.provider.qualified(&data.pipeline_name.namespace);
        if let Some(caller) = caller {
            let expected = self.resources.provider_service_account(&reporter).await?;
            authorize(caller, &reporter, expected.as_deref())?;
        }
        let named = self.resources.named(&data).await?;
        check_providers(&reporter, &named.resources)?;
        let artifacts = select_artifacts(&named.artifacts, &data.pipeline_components).map_err(|error| {
            IngestError::Invalid(format!("the declared artifacts cannot be selected: {error}"))
        })?;
        let completion = RunCompletionEvent::from_data(data, artifacts);
        let outgoing =
            Outgoing { cloud_events: cloud_events_for(&completion, &self.options, Utc::now()), completion };
        let results = join_all(self.sinks.iter().map(|sink| {
            let outgoing = &outgoing;
            async move {
                let started = Instant::now();
                (sink.name(), sink.publish(outgoing).await, started.elapsed())
            }
        }))
        .await;
        let mut failures = Vec::new();
        for (sink, result, took) in results {
            match result {
                Ok(delivery) => {
                    self.metrics.published(sink, delivery, took);
                    tracing::info!(
                        sink,
                        published = delivery.published,
                        acked = delivery.acked,
                        duplicates = delivery.duplicates,
                        duration_ms = millis(took),
                        "completion published"
                    );
                }
                Err(error) => {
                    tracing::warn!(sink, category = error.category(), %error, "completion not published");
                    failures.push(error.to_string());
                }
            }
        }
        if !failures.is_empty() {
            return Err(IngestError::Internal(format!("not published: {}", failures.join("; "))));
        }
        self.resources.record(&outgoing.completion, received).await?;
        Ok(outgoing.completion)
    }

    /// Decodes and accepts one HTTP request; with `authenticator`, only from the reporting
    /// Provider's ServiceAccount. Every refusal is counted and logged.
    pub async fn handle(
        &self,
        authenticator: Option<&Authenticator>,
        method: &Method,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), IngestError> {
        let (data, caller) = Self::admit(authenticator, method, headers, body)
            .await
            .inspect_err(|error| self.rejected(error))?;
        self.accept_from(data, caller.as_ref()).await.map(|_| ())
    }

    /// The request's completion and its authenticated caller, or why it is refused.
    async fn admit(
        authenticator: Option<&Authenticator>,
        method: &Method,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(RunCompletionEventData, Option<Caller>), IngestError> {
        if method != Method::POST {
            return Err(IngestError::MethodNotAllowed(method.to_string()));
        }
        let caller = match authenticator {
            Some(authenticator) => Some(authenticator.authenticate(headers).await?),
            None => None,
        };
        let content_type =
            headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if content_type != "application/json" {
            return Err(IngestError::UnsupportedMediaType(content_type.to_owned()));
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(IngestError::EmptyBody);
        }
        let data: RunCompletionEventData =
            serde_json::from_slice(body).map_err(|e| IngestError::Undecodable(e.to_string()))?;
        Ok((data, caller))
    }

    /// The `/events` route; with `authenticator`, callers must prove that they are the
    /// reporting Provider's ServiceAccount, and without it anyone may report.
    pub fn router(self: Arc<Self>, authenticator: Option<Authenticator>) -> Router {
        let limit = self.max_body_bytes;
        Router::new()
            .route("/events", any(handle_request))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(Arc::new(Endpoint { ingest: self, authenticator }))
    }
}

async fn handle_request(
    State(endpoint): State<Arc<Endpoint>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match endpoint.ingest.handle(endpoint.authenticator.as_ref(), &method, &headers, &body).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Resources that exist for every name, declare one artifact with a filter, belong to no
    /// Provider they could be checked against, and record nothing.
    struct Everything;

    impl Resources for Everything {
        fn named<'a>(&'a self, _: &'a RunCompletionEventData) -> BoxFuture<'a, Result<Named, IngestError>> {
            let model = crate::api::ArtifactPath::new("Pusher", "pushed_model").with_filter("pushed == 1");
            Box::pin(async {
                Ok(Named { artifacts: vec![OutputArtifact::new("model", model)], resources: vec![] })
            })
        }

        fn record<'a>(
            &'a self,
            _: &'a RunCompletionEvent,
            _: Instant,
        ) -> BoxFuture<'a, Result<(), IngestError>> {
            Box::pin(async { Ok(()) })
        }

        fn provider_service_account<'a>(
            &'a self,
            _: &'a NamespacedName,
        ) -> BoxFuture<'a, Result<Option<String>, IngestError>> {
            Box::pin(async { Ok(None) })
        }
    }

    fn owned(kind: &'static str, name: &str, providers: &[&str]) -> Owned {
        Owned {
            kind,
            name: name.parse().unwrap(),
            providers: providers.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn a_completion_only_changes_resources_of_the_reporting_provider() {
        let reporter: NamespacedName = "ml/vai".parse().unwrap();
        let own_run = owned("Run", "ml/r", &["ml/vai"]);
        let moved_rc = owned("RunConfiguration", "ml/rc", &["ml/kfp", "ml/vai"]);
        assert_eq!(check_providers(&reporter, &[own_run.clone(), moved_rc]), Ok(()));
        assert_eq!(check_providers(&reporter, &[]), Ok(()));

        let foreign = owned("RunConfiguration", "ml/rc", &["ml/kfp"]);
        let error = check_providers(&reporter, &[own_run, foreign]).unwrap_err();
        assert_eq!((error.status(), error.category()), (StatusCode::FORBIDDEN, "ProviderMismatch"));
        assert_eq!(
            error.to_string(),
            "Provider ml/vai may not report a completion of RunConfiguration ml/rc, which belongs to Provider ml/kfp"
        );
        let orphan = check_providers(&reporter, &[owned("Run", "ml/r", &[])]).unwrap_err();
        assert!(orphan.to_string().ends_with("belongs to no Provider"), "{orphan}");
    }

    #[test]
    fn refusals_tell_the_caller_how_to_go_on() {
        let response = IngestError::Unauthenticated("no token".into()).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let response = IngestError::AuthenticationUnavailable("down".into()).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    fn ingest() -> Arc<Ingest> {
        Ingest::new(Arc::new(Everything), vec![], CloudEventOptions::default(), 4, 1024, Metrics::default())
    }

    #[tokio::test]
    async fn completions_are_counted_by_result_and_published_by_sink() {
        let metrics = Metrics::default();
        let memory: Arc<dyn Sink> = Arc::new(crate::events::sinks::MemorySink::new());
        let ingest = Ingest::new(
            Arc::new(Everything),
            vec![memory],
            CloudEventOptions::default(),
            4,
            1024,
            metrics.clone(),
        );
        let body =
            br#"{"status":"failed","pipelineName":"ns/p","runName":"ns/r","runId":"1","provider":"ns/stub"}"#;
        ingest.handle(None, &Method::POST, &json_headers(), body).await.unwrap();
        ingest.handle(None, &Method::POST, &json_headers(), body).await.unwrap();
        assert_eq!(
            ingest.handle(None, &Method::GET, &json_headers(), body).await.unwrap_err().category(),
            "MethodNotAllowed"
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry()).unwrap();
        for line in [
            r#"kfp_operator_events_ingested_total{result="accepted"} 2"#,
            r#"kfp_operator_events_ingested_total{result="MethodNotAllowed"} 1"#,
            r#"kfp_operator_events_published_total{sink="memory"} 2"#,
            r#"kfp_operator_events_acked_total{sink="memory"} 1"#,
            r#"kfp_operator_events_duplicates_total{sink="memory"} 1"#,
            r#"kfp_operator_event_publish_duration_seconds_count{sink="memory"} 2"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    fn json_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
        headers
    }

    #[tokio::test]
    async fn a_valid_body_is_accepted() {
        let body = br#"{"status":"succeeded","pipelineName":"ns/p","runName":"ns/r","runId":"1","provider":"ns/stub",
            "pipelineComponents":[{"name":"Pusher","componentArtifacts":[{"name":"pushed_model","artifacts":[{"uri":"gs://m","metadata":{"pushed":1}}]}]}]}"#;
        let completion = ingest().accept(serde_json::from_slice(body).unwrap()).await.unwrap();
        let metadata = serde_json::Map::from_iter([("pushed".to_owned(), serde_json::Value::from(1))]);
        assert_eq!(
            completion.artifacts,
            vec![crate::api::Artifact::new("model", "gs://m").with_metadata(metadata)]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any bytes with any method and content type get an answer, never a panic.
        #[test]
        fn arbitrary_requests_never_panic(
            body in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..512),
            post in proptest::arbitrary::any::<bool>(),
            json in proptest::arbitrary::any::<bool>(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let method = if post { Method::POST } else { Method::PUT };
            let headers = if json { json_headers() } else { HeaderMap::new() };
            let _ = runtime.block_on(ingest().handle(None, &method, &headers, &body));
        }

        /// Bodies shaped like completions, with arbitrary values, never panic either.
        #[test]
        fn arbitrary_completions_never_panic(
            status in "(succeeded|failed|[a-z]{0,8})",
            name in "[a-z/]{0,12}",
            uri in ".{0,16}",
            metadata in proptest::collection::btree_map("[a-z]{1,6}", proptest::arbitrary::any::<i64>(), 0..4),
        ) {
            let body = serde_json::json!({
                "status": status, "pipelineName": name, "runName": name, "runId": "x", "provider": name,
                "pipelineComponents": [{"name": "Pusher", "componentArtifacts": [{"name": "pushed_model",
                    "artifacts": [{"uri": uri, "metadata": metadata}]}]}],
            });
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let _ = runtime.block_on(ingest().handle(None, &Method::POST, &json_headers(), body.to_string().as_bytes()));
        }
    }
}
