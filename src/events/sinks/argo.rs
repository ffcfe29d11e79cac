//! The `argo-eventbus` sink: completions straight onto an Argo Events JetStream EventBus, as
//! if an EventSource named `eventSourceName` had received them.
//!
//! What Argo's JetStream EventSource writes, and a Sensor reads: one structured CloudEvent
//! JSON per event on subject `default.<eventSourceName>.<eventName>` of stream `default`, with
//! `Nats-Msg-Id` = its `id`. The Sensor parses only the payload (headers are ignored), routes
//! by `source` = EventSource name and `subject` = event name, keeps only `id`, `source`,
//! `specversion`, `type`, `datacontenttype`, `subject` and `time`, and evaluates data filters
//! and `dataKey` parameters as gjson paths over `data`, which needs `datacontenttype` exactly
//! `application/json`.
//!
//! Argo's EventSources do not put the received payload in `data` as is: they wrap it
//! (`{"subject", "body", "header"}` for NATS, `{"body", "header"}` for webhooks, `{"body"}`
//! for generic), so Sensor paths start with `body.`. We do the same: a bus event's `data` is
//! `{"body": <our CloudEvent, structured JSON>}`. So the paths Sensors use with the reference
//! (`body.data.status`, `body.data.pipelineName`, `dataKey: body.data.artifacts.0.location`)
//! work unchanged, and `body.type`, `body.id`, `body.source` and `body.subject` (the provider
//! and the RunConfiguration) are there too.
//!
//! The bus event keeps our `id` (deterministic: dedup on the bus and in the Sensor), `type`
//! (a Sensor `context` filter on `type` tells `run-completion` from `model-ready`, which share
//! the subject) and `time`; `source` and `subject` become the EventSource and event names.
//! `dataschema` is dropped: it describes our payload, not the wrapper (and Sensors drop it).
//!
//! The bus stream is Argo's: we never create it. If it is missing (or does not capture our
//! subject) publishing fails with [`SinkError::Configuration`].

use std::time::Duration;

use bytes::Bytes;
use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::json;

use super::acked::{AckedPublisher, MissingStream};
use crate::events::cloudevent::{JSON_CONTENT_TYPE, to_structured_bytes, to_structured_json};
use crate::events::config;
use crate::events::sink::{Delivery, Outgoing, Sink, SinkError};

const NAME: &str = "argo-eventbus";
const MISSING_STREAM_HINT: &str = "Argo Events creates the EventBus stream when the first EventSource or Sensor \
     using a JetStream EventBus starts; check that the EventBus exists, is of kind jetstream, and that \
     events.argoEventBus.stream names its stream";
const MISMATCHED_STREAM_HINT: &str = "an Argo Events JetStream EventBus stream captures `<stream>.*.*`; check \
     events.argoEventBus.stream, eventSourceName and eventName";

/// Publishes completions onto an Argo Events JetStream EventBus (see the [module](self) docs).
#[derive(Debug)]
pub struct ArgoEventBusSink {
    publisher: AckedPublisher,
    subject: String,
    event_source_name: String,
    event_name: String,
}

impl ArgoEventBusSink {
    /// A sink for the bus `client` is connected to. No I/O happens here: a missing stream
    /// shows on the first publish. Fails if the names cannot form a bus subject.
    pub fn new(
        client: async_nats::Client,
        config: &config::ArgoEventBusSink,
        publish_timeout: Duration,
        max_in_flight: usize,
    ) -> Result<Self, SinkError> {
        for (setting, value) in [
            ("stream", &config.stream),
            ("eventSourceName", &config.event_source_name),
            ("eventName", &config.event_name),
        ] {
            if value.is_empty() || value.contains(|c: char| matches!(c, '.' | '*' | '>') || c.is_whitespace())
            {
                return Err(SinkError::Configuration {
                    sink: NAME.into(),
                    message: format!(
                        "events.argoEventBus.{setting} {value:?} must be a non-empty NATS subject token \
                         (no '.', '*', '>' or spaces)"
                    ),
                });
            }
        }
        let missing_stream = MissingStream::Diagnose {
            stream: config.stream.clone(),
            missing_hint: MISSING_STREAM_HINT,
            mismatch_hint: MISMATCHED_STREAM_HINT,
        };
        Ok(Self {
            publisher: AckedPublisher::new(NAME, client, publish_timeout, max_in_flight, missing_stream),
            subject: argo_bus_subject(&config.stream, &config.event_source_name, &config.event_name),
            event_source_name: config.event_source_name.clone(),
            event_name: config.event_name.clone(),
        })
    }

    /// The subject every message goes to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    async fn publish_all(&self, outgoing: &Outgoing) -> Result<Delivery, SinkError> {
        let _permit = self.publisher.permit().await?;
        let deadline = self.publisher.deadline();
        let mut delivery = Delivery::default();
        for event in &outgoing.cloud_events {
            let bus_event = argo_bus_event(event, &self.event_source_name, &self.event_name)?;
            let payload = Bytes::from(to_structured_bytes(&bus_event));
            let ack = self.publisher.publish(&self.subject, bus_event.id(), payload, deadline).await?;
            delivery = delivery.and(Delivery::acknowledged(ack.duplicate));
        }
        Ok(delivery)
    }
}

/// The subject of an EventSource's events on an Argo JetStream bus:
/// `<stream>.<eventSourceName>.<eventName>` (Argo's stream `default` captures `default.*.*`).
pub fn argo_bus_subject(stream: &str, event_source_name: &str, event_name: &str) -> String {
    format!("{stream}.{event_source_name}.{event_name}")
}

/// The bus event for one of our CloudEvents: same `id`, `type` and `time`;
/// `source` = `event_source_name`, `subject` = `event_name`,
/// `datacontenttype: application/json`, `data` = `{"body": <event as structured JSON>}`.
pub fn argo_bus_event(event: &Event, event_source_name: &str, event_name: &str) -> Result<Event, SinkError> {
    let mut builder = EventBuilderV10::new()
        .id(event.id())
        .ty(event.ty())
        .source(event_source_name)
        .subject(event_name)
        .data(JSON_CONTENT_TYPE, json!({ "body": to_structured_json(event) }));
    if let Some(time) = event.time() {
        builder = builder.time(*time);
    }
    builder.build().map_err(|error| SinkError::Configuration {
        sink: NAME.into(),
        message: format!("cannot build the bus event for {}: {error}", event.id()),
    })
}

impl Sink for ArgoEventBusSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn publish<'a>(&'a self, outgoing: &'a Outgoing) -> BoxFuture<'a, Result<Delivery, SinkError>> {
        self.publish_all(outgoing).boxed()
    }
}
