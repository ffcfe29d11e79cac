//! The `legacy-nats` sink: what the reference publishes, for existing Sensors. One core-NATS
//! message per completion on the configured subject (`events`), body
//! `{"data": <RunCompletionEvent>}`, no headers.
//!
//! Core NATS has no acknowledgement: success means the message was written to the server
//! (`flush`), not that anyone received it, and a publish reported as timed out may still be
//! delivered later (the client buffers while reconnecting), so a retry can deliver twice.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;

use crate::events::cloudevent::legacy_body;
use crate::events::config;
use crate::events::sink::{Delivery, Outgoing, Sink, SinkError};

const NAME: &str = "legacy-nats";

/// Publishes the legacy body on core NATS (see the [module](self) docs).
#[derive(Debug)]
pub struct LegacyNatsSink {
    client: async_nats::Client,
    subject: String,
    publish_timeout: Duration,
    in_flight: Semaphore,
}

impl LegacyNatsSink {
    /// `publish_timeout` bounds publish plus flush; at most `max_in_flight` publish at once.
    pub fn new(
        client: async_nats::Client,
        config: &config::LegacyNatsSink,
        publish_timeout: Duration,
        max_in_flight: usize,
    ) -> Self {
        Self {
            client,
            subject: config.subject.clone(),
            publish_timeout,
            in_flight: Semaphore::new(max_in_flight.max(1)),
        }
    }

    /// The subject messages go to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    async fn publish_one(&self, outgoing: &Outgoing) -> Result<Delivery, SinkError> {
        let unavailable = |message: String| SinkError::Unavailable { sink: NAME.into(), message };
        let _permit =
            self.in_flight.acquire().await.map_err(|_| unavailable("the sink is shutting down".into()))?;
        let body = serde_json::to_vec(&legacy_body(&outgoing.completion))
            .map_err(|error| unavailable(format!("cannot encode the event: {error}")))?;
        let send = async {
            self.client
                .publish(self.subject.clone(), body.into())
                .await
                .map_err(|error| unavailable(format!("publishing on {} failed: {error}", self.subject)))?;
            self.client.flush().await.map_err(|error| {
                unavailable(format!("flushing after publishing on {} failed: {error}", self.subject))
            })
        };
        tokio::time::timeout(self.publish_timeout, send)
            .await
            .unwrap_or_else(|_| {
                Err(SinkError::Timeout { sink: NAME.into(), seconds: self.publish_timeout.as_secs().max(1) })
            })
            .map(|()| Delivery { published: 1, ..Delivery::default() })
    }
}

impl Sink for LegacyNatsSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn publish<'a>(&'a self, outgoing: &'a Outgoing) -> BoxFuture<'a, Result<Delivery, SinkError>> {
        self.publish_one(outgoing).boxed()
    }
}
