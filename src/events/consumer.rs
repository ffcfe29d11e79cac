//! The completion consumer: a durable JetStream consumer on the operator's stream that records
//! every run-completion event on its Run and RunConfiguration (which is what fires the
//! dependants), acknowledging a message only after those writes succeeded. Messages that are not
//! run-completion CloudEvents go to the dead-letter subject `<prefix>.dead-letter` with the reason
//! in the `Kfp-Dead-Letter-Reason` header, and are not redelivered (counted as dead-lettered
//! of the `jetstream` sink). A completion is recorded in a span with its `trace_id`, as at the
//! ingest.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt;
use tracing::Instrument;

use super::completion::RunCompletionEvent;
use super::ingest::Resources;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// The durable consumer's name.
pub const CONSUMER_NAME: &str = "kfp-operator-completions";
/// The header carrying why a message was dead-lettered.
pub const DEAD_LETTER_REASON: &str = "Kfp-Dead-Letter-Reason";

/// Why the consumer stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("cannot set up the completion consumer on stream {stream}: {message}")]
    Setup { stream: String, message: String },
}

/// The subject undecodable messages are moved to.
pub fn dead_letter_subject(prefix: &str) -> String {
    format!("{prefix}.dead-letter")
}

/// Decodes a structured run-completion CloudEvent into the completion it carries.
pub fn decode(payload: &[u8]) -> Result<RunCompletionEvent, String> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("not a JSON CloudEvent: {e}"))?;
    if value["type"] != super::cloudevent::RUN_COMPLETION_TYPE {
        return Err(format!("not a run-completion CloudEvent (type {})", value["type"]));
    }
    serde_json::from_value(value["data"].clone())
        .map_err(|e| format!("data is not a RunCompletionEvent: {e}"))
}

/// The sink whose stream the consumer reads, as metrics name it.
const SINK: &str = "jetstream";

/// Consumes run-completion events until `shutdown`.
pub async fn consume_completions(
    client: async_nats::Client,
    stream: String,
    prefix: String,
    resources: Arc<dyn Resources>,
    metrics: Metrics,
    shutdown: Shutdown,
) -> Result<(), ConsumerError> {
    let setup = |message: String| ConsumerError::Setup { stream: stream.clone(), message };
    let context = jetstream::new(client);
    let consumer = context
        .get_stream(&stream)
        .await
        .map_err(|e| setup(e.to_string()))?
        .get_or_create_consumer(
            CONSUMER_NAME,
            pull::Config {
                durable_name: Some(CONSUMER_NAME.to_owned()),
                filter_subject: format!("{prefix}.run-completion.>"),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| setup(e.to_string()))?;
    let mut messages = consumer.messages().await.map_err(|e| setup(e.to_string()))?;
    let dead_letters = dead_letter_subject(&prefix);
    let work = async {
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "completion consumer: receiving failed; continuing");
                    continue;
                }
            };
            let outcome = match decode(&message.payload) {
                Err(reason) => {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(DEAD_LETTER_REASON, reason.as_str());
                    headers.insert("Kfp-Original-Subject", message.subject.as_str());
                    match context
                        .publish_with_headers(dead_letters.clone(), headers, message.payload.clone())
                        .await
                    {
                        Ok(ack) => match ack.await {
                            Ok(_) => {
                                metrics.dead_lettered(SINK);
                                tracing::warn!(subject = %message.subject, %reason, "completion consumer: dead-lettered");
                                AckKind::Term
                            }
                            Err(_) => AckKind::Nak(Some(Duration::from_secs(1))),
                        },
                        Err(_) => AckKind::Nak(Some(Duration::from_secs(1))),
                    }
                }
                Ok(completion) => {
                    let span = tracing::info_span!(
                        "completion",
                        trace_id = %super::cloudevent::trace_id(&completion.provider, &completion.run_id, completion.status),
                        run_id = %completion.run_id,
                        namespace = %completion.pipeline_name.namespace,
                    );
                    record(resources.as_ref(), &completion).instrument(span).await
                }
            };
            if let Err(error) = message.ack_with(outcome).await {
                tracing::warn!(%error, "completion consumer: acknowledging failed; the message will be redelivered");
            }
        }
    };
    tokio::select! {
        () = work => {},
        () = shutdown => {},
    }
    Ok(())
}

/// Records a completion from the bus; what to answer the bus.
async fn record(resources: &dyn Resources, completion: &RunCompletionEvent) -> AckKind {
    match resources.record(completion, std::time::Instant::now()).await {
        Ok(()) => {
            tracing::debug!("completion consumer: recorded");
            AckKind::Ack
        }
        Err(error) if error.status() == axum::http::StatusCode::GONE => AckKind::Ack,
        Err(error) => {
            tracing::warn!(%error, "completion consumer: not recorded; redelivery in 5s");
            AckKind::Nak(Some(Duration::from_secs(5)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_run_completion_cloud_events_decode() {
        assert!(decode(b"nonsense").unwrap_err().starts_with("not a JSON CloudEvent"));
        assert!(
            decode(br#"{"type":"org.kubeflow.pipelines.model-ready","data":{}}"#)
                .unwrap_err()
                .contains("model-ready")
        );
        assert!(
            decode(br#"{"type":"org.kubeflow.pipelines.run-completion","data":{"status":"maybe"}}"#).is_err()
        );
        let event = decode(
            br#"{"type":"org.kubeflow.pipelines.run-completion","data":{"status":"succeeded","pipelineName":"ml/p",
                "runId":"1","artifacts":[],"provider":"ml/stub"}}"#,
        )
        .unwrap();
        assert_eq!(event.run_id, "1");
        assert_eq!(dead_letter_subject("kfp"), "kfp.dead-letter");
    }
}
