//! The bus adapters behind [`Sink`](super::sink::Sink), and how the configuration turns into
//! a set of them ([`build_sinks`]).
//!
//! | Sink | `name()` | What one [`Outgoing`](super::sink::Outgoing) becomes | Done when |
//! |---|---|---|---|
//! | [`JetStreamSink`] | `jetstream` | one structured CloudEvent per event on `<prefix>.run-completion.…` / `<prefix>.model-ready.…` of the operator's stream | every message acknowledged (duplicates count) |
//! | [`ArgoEventBusSink`] | `argo-eventbus` | one Argo bus event per CloudEvent on `default.<eventSourceName>.<eventName>` | every message acknowledged |
//! | [`LegacyNatsSink`] | `legacy-nats` | one core-NATS message `{"data": <RunCompletionEvent>}` on `events` | written to the server (no ack exists) |
//! | [`MemorySink`] | `memory` | every new CloudEvent kept in memory and broadcast in-process | recorded |
//!
//! The two JetStream sinks share one retry policy: the message id (`Nats-Msg-Id`) is the
//! CloudEvent id, so a publish whose outcome is unknown (no ack in time, connection lost) is
//! sent again with the same id and exponential backoff until the call has used
//! [`RETRY_BUDGET_FACTOR`] × `publishTimeout`; the stream drops the repeats.

mod acked;
mod argo;
mod connect;
mod jetstream;
mod legacy;
mod memory;

use std::sync::Arc;

pub use acked::{RETRY_BUDGET_FACTOR, STRUCTURED_CONTENT_TYPE};
pub use argo::{ArgoEventBusSink, argo_bus_event, argo_bus_subject};
pub use connect::connect;
pub use jetstream::JetStreamSink;
pub use legacy::LegacyNatsSink;
pub use memory::MemorySink;

use super::sink::{Sink, SinkError};
use crate::events::config::EventsConfig;

/// The sinks the configuration asks for.
#[derive(Debug, Clone)]
pub struct Sinks {
    /// Every sink; a completion is published to each.
    pub all: Vec<Arc<dyn Sink>>,
    /// The in-memory sink (also in `all`) when no NATS server is configured: the bus of the
    /// embedded trigger engine.
    pub memory: Option<Arc<MemorySink>>,
    /// The connection to `events.nats`, for consumers of the operator's own stream.
    pub nats: Option<async_nats::Client>,
}

/// Connects and builds the configured sinks:
/// - no `events.nats`: a [`MemorySink`];
/// - `events.nats`: a [`JetStreamSink`] if `jetstream.enabled` (its stream is created or
///   updated now) and a [`LegacyNatsSink`] if `legacyNats.enabled`, on one connection;
/// - in both cases an [`ArgoEventBusSink`] on a connection of its own if `argoEventBus` is set.
///
/// Fails if a connection cannot be made, the stream cannot be set up, or `events.nats` is set
/// while nothing would be published.
pub async fn build_sinks(config: &EventsConfig) -> Result<Sinks, SinkError> {
    let mut sinks = Sinks { all: Vec::new(), memory: None, nats: None };
    match &config.nats {
        None => {
            let memory = Arc::new(MemorySink::new());
            sinks.all.push(memory.clone());
            sinks.memory = Some(memory);
        }
        Some(connection) => {
            let client = connect(connection).await?;
            if config.jetstream.enabled {
                let sink = JetStreamSink::new(
                    client.clone(),
                    &config.jetstream,
                    config.publish_timeout,
                    config.max_in_flight,
                )
                .await?;
                sinks.all.push(Arc::new(sink));
            }
            if config.legacy_nats.enabled {
                let sink = LegacyNatsSink::new(
                    client.clone(),
                    &config.legacy_nats,
                    config.publish_timeout,
                    config.max_in_flight,
                );
                sinks.all.push(Arc::new(sink));
            }
            sinks.nats = Some(client);
        }
    }
    if let Some(argo) = &config.argo_event_bus {
        let client = connect(&argo.nats).await?;
        let sink = ArgoEventBusSink::new(client, argo, config.publish_timeout, config.max_in_flight)?;
        sinks.all.push(Arc::new(sink));
    }
    if sinks.all.is_empty() {
        return Err(SinkError::Configuration {
            sink: "events".into(),
            message: "events.nats is set but events.jetstream and events.legacyNats are both disabled \
                      and no events.argoEventBus is configured: completions would go nowhere"
                .into(),
        });
    }
    Ok(sinks)
}
