//! The run-completion ingest, `POST /events`, with the reference's contract: a
//! `RunCompletionEventData` body as `application/json`; 405 for other methods, 415 for another
//! content type, 400 for an empty or undecodable body or an invalid event, 410 when neither the
//! named Run nor RunConfiguration exists, 500 when publishing or recording failed, 413 above the
//! size limit, and 200 only after every sink accepted the events and the Run recorded its
//! completion. Every rejection says why in its body.
//!
//! Each completion is counted by result, and its work runs in a span carrying its `trace_id`
//! (the id of its run-completion CloudEvent, [`trace_id`]): the lines of its receipt, of each
//! sink's publish, of its record on the Run and of the dependant Runs it starts all carry it.

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

use super::cloudevent::{CloudEventOptions, cloud_events_for, trace_id};
use super::completion::{RunCompletionEvent, RunCompletionEventData, select_artifacts};
use super::sink::{Outgoing, Sink};
use crate::api::OutputArtifact;
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
}

impl IngestError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::EmptyBody | Self::Undecodable(_) | Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Gone(_) => StatusCode::GONE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        (self.status(), self.to_string()).into_response()
    }
}

/// The resources a completion names: where its declared artifacts come from, and where the
/// completion is recorded.
pub trait Resources: Send + Sync {
    /// The artifacts declared by the named RunConfiguration (preferred) or Run.
    fn declared_artifacts<'a>(
        &'a self,
        data: &'a RunCompletionEventData,
    ) -> BoxFuture<'a, Result<Vec<OutputArtifact>, IngestError>>;
    /// Records the completion on the Run it names, if any; `received` is when it arrived.
    fn record<'a>(
        &'a self,
        event: &'a RunCompletionEvent,
        received: Instant,
    ) -> BoxFuture<'a, Result<(), IngestError>>;
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

    /// Accepts one completion: selects its artifacts, publishes its CloudEvents on every sink
    /// and records it. Returns only when all of that is durable. Counted, and logged in the
    /// completion's span.
    pub async fn accept(&self, data: RunCompletionEventData) -> Result<RunCompletionEvent, IngestError> {
        let received = Instant::now();
        let span = tracing::info_span!(
            "completion",
            trace_id = %trace_id(&data.provider, &data.run_id, data.status),
            run_id = %data.run_id,
            namespace = %data.pipeline_name.namespace,
        );
        let result = self.accept_in_span(data, received).instrument(span.clone()).await;
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
        let declared = self.resources.declared_artifacts(&data).await?;
        let artifacts = select_artifacts(&declared, &data.pipeline_components).map_err(|error| {
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

    /// Decodes and accepts one HTTP request.
    pub async fn handle(&self, method: &Method, headers: &HeaderMap, body: &[u8]) -> Result<(), IngestError> {
        let data = Self::decode(method, headers, body).inspect_err(|error| self.rejected(error))?;
        self.accept(data).await.map(|_| ())
    }

    fn decode(
        method: &Method,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<RunCompletionEventData, IngestError> {
        if method != Method::POST {
            return Err(IngestError::MethodNotAllowed(method.to_string()));
        }
        let content_type =
            headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if content_type != "application/json" {
            return Err(IngestError::UnsupportedMediaType(content_type.to_owned()));
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(IngestError::EmptyBody);
        }
        serde_json::from_slice(body).map_err(|e| IngestError::Undecodable(e.to_string()))
    }

    /// The `/events` route.
    pub fn router(self: Arc<Self>) -> Router {
        let limit = self.max_body_bytes;
        Router::new()
            .route("/events", any(handle_request))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(self)
    }
}

async fn handle_request(
    State(ingest): State<Arc<Ingest>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match ingest.handle(&method, &headers, &body).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Resources that exist for every name, declare one artifact with a filter, and record nothing.
    struct Everything;

    impl Resources for Everything {
        fn declared_artifacts<'a>(
            &'a self,
            _: &'a RunCompletionEventData,
        ) -> BoxFuture<'a, Result<Vec<OutputArtifact>, IngestError>> {
            Box::pin(async {
                Ok(vec![OutputArtifact::new(
                    "model",
                    crate::api::ArtifactPath::new("Pusher", "pushed_model").with_filter("pushed == 1"),
                )])
            })
        }

        fn record<'a>(
            &'a self,
            _: &'a RunCompletionEvent,
            _: Instant,
        ) -> BoxFuture<'a, Result<(), IngestError>> {
            Box::pin(async { Ok(()) })
        }
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
        ingest.handle(&Method::POST, &json_headers(), body).await.unwrap();
        ingest.handle(&Method::POST, &json_headers(), body).await.unwrap();
        assert_eq!(
            ingest.handle(&Method::GET, &json_headers(), body).await.unwrap_err().category(),
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
        assert_eq!(completion.artifacts, vec![crate::api::Artifact::new("model", "gs://m")]);
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
            let _ = runtime.block_on(ingest().handle(&method, &headers, &body));
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
            let _ = runtime.block_on(ingest().handle(&Method::POST, &json_headers(), body.to_string().as_bytes()));
        }
    }
}
