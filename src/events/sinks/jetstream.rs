//! The `jetstream` sink: the operator's own JetStream stream. Sets the stream up (create, or
//! update the settings we own) and publishes every CloudEvent of a completion in structured
//! JSON mode, with `Nats-Msg-Id` = the CloudEvent id, waiting for each acknowledgement.

use std::time::Duration;

use async_nats::jetstream::stream::{Config, StorageType};
use bytes::Bytes;
use cloudevents::AttributesReader;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::acked::{AckedPublisher, MissingStream, RETRY_BUDGET_FACTOR};
use crate::events::cloudevent::{nats_subject_for, to_structured_bytes};
use crate::events::config;
use crate::events::sink::{Delivery, Outgoing, Sink, SinkError};

const NAME: &str = "jetstream";
/// The shortest duplicate window accepted.
const MIN_DUPLICATE_WINDOW: Duration = Duration::from_secs(300);

/// Publishes completions onto the operator's own stream (see the [module](self) docs).
#[derive(Debug)]
pub struct JetStreamSink {
    publisher: AckedPublisher,
    stream: String,
    subject_prefix: String,
}

impl JetStreamSink {
    /// Creates the stream `config.stream` if it does not exist (subjects `<prefix>.>`, the
    /// configured duplicate window and max age, file storage), or updates those settings if
    /// they differ. `publish_timeout` bounds each wait for an ack; at most `max_in_flight`
    /// completions publish at once and further callers wait. The duplicate window must be at
    /// least 5 minutes and longer than a publish's whole retry budget.
    pub async fn new(
        client: async_nats::Client,
        config: &config::JetStreamSink,
        publish_timeout: Duration,
        max_in_flight: usize,
    ) -> Result<Self, SinkError> {
        // Retries of one publish must stay inside the window, or a late one is stored twice.
        let budget = publish_timeout.saturating_mul(RETRY_BUDGET_FACTOR);
        if config.duplicate_window < MIN_DUPLICATE_WINDOW.max(budget) {
            return Err(SinkError::Configuration {
                sink: NAME.into(),
                message: format!(
                    "events.jetstream.duplicateWindow ({:?}) must be at least 5m and longer than \
                     {RETRY_BUDGET_FACTOR} × events.publishTimeout ({budget:?})",
                    config.duplicate_window
                ),
            });
        }
        let publisher =
            AckedPublisher::new(NAME, client, publish_timeout, max_in_flight, MissingStream::Retry);
        let sink =
            Self { publisher, stream: config.stream.clone(), subject_prefix: config.subject_prefix.clone() };
        sink.ensure_stream(config).await?;
        Ok(sink)
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The prefix of every subject.
    pub fn subject_prefix(&self) -> &str {
        &self.subject_prefix
    }

    async fn ensure_stream(&self, config: &config::JetStreamSink) -> Result<(), SinkError> {
        let desired = Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}.>", config.subject_prefix)],
            duplicate_window: config.duplicate_window,
            max_age: config.max_age,
            storage: StorageType::File,
            ..Config::default()
        };
        let jetstream = self.publisher.jetstream();
        let failed = |what: &str, error: &dyn std::fmt::Display| SinkError::Configuration {
            sink: NAME.into(),
            message: format!("cannot {what} stream {:?}: {error}", config.stream),
        };
        let stream = jetstream
            .get_or_create_stream(desired.clone())
            .await
            .map_err(|error| failed("create or look up", &error))?;
        let current = &stream.cached_info().config;
        if current.storage != desired.storage {
            tracing::warn!(stream = %config.stream, storage = ?current.storage,
                "the stream does not use file storage; JetStream cannot change that in place");
        }
        let mut wanted = current.clone();
        wanted.subjects = desired.subjects;
        wanted.duplicate_window = desired.duplicate_window;
        wanted.max_age = desired.max_age;
        if &wanted != current {
            tracing::info!(stream = %config.stream, "updating the stream's subjects, duplicate window and max age");
            jetstream.update_stream(&wanted).await.map_err(|error| failed("update", &error))?;
        }
        Ok(())
    }

    async fn publish_all(&self, outgoing: &Outgoing) -> Result<Delivery, SinkError> {
        let _permit = self.publisher.permit().await?;
        let deadline = self.publisher.deadline();
        let mut messages = Vec::with_capacity(outgoing.cloud_events.len());
        for event in &outgoing.cloud_events {
            let subject =
                nats_subject_for(&self.subject_prefix, event, &outgoing.completion).ok_or_else(|| {
                    SinkError::Configuration {
                        sink: NAME.into(),
                        message: format!(
                            "CloudEvent {} has type {:?}, which has no subject",
                            event.id(),
                            event.ty()
                        ),
                    }
                })?;
            messages.push((subject, event.id(), Bytes::from(to_structured_bytes(event))));
        }
        // The events of one completion are independent: their acks are awaited together.
        let acks =
            futures::future::try_join_all(messages.into_iter().map(|(subject, id, payload)| async move {
                self.publisher.publish(&subject, id, payload, deadline).await
            }))
            .await?;
        Ok(acks
            .iter()
            .fold(Delivery::default(), |delivery, ack| delivery.and(Delivery::acknowledged(ack.duplicate))))
    }
}

impl Sink for JetStreamSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn publish<'a>(&'a self, outgoing: &'a Outgoing) -> BoxFuture<'a, Result<Delivery, SinkError>> {
        self.publish_all(outgoing).boxed()
    }
}
