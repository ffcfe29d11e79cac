//! The publishing side of run completions: the [`Sink`] every bus adapter implements, and
//! what it is given to publish.

use std::fmt;

use futures::future::BoxFuture;

use super::completion::RunCompletionEvent;
pub use crate::metrics::Delivery;

/// One completion, ready to publish: the event and its CloudEvents (`run-completion`, and
/// `model-ready` when it applies).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub completion: RunCompletionEvent,
    pub cloud_events: Vec<cloudevents::Event>,
}

/// Why a sink could not publish. The category is stable: it names metrics and log fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The bus did not confirm in time; the outcome is unknown and publishing again (with the
    /// same message ids) is safe.
    #[error("{sink}: no acknowledgement within {seconds}s")]
    Timeout { sink: String, seconds: u64 },
    /// The bus is not reachable or refused the message.
    #[error("{sink}: {message}")]
    Unavailable { sink: String, message: String },
    /// The sink is misconfigured (e.g. a stream that cannot be created).
    #[error("{sink}: {message}")]
    Configuration { sink: String, message: String },
}

impl SinkError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "SinkTimeout",
            Self::Unavailable { .. } => "SinkUnavailable",
            Self::Configuration { .. } => "SinkConfiguration",
        }
    }
}

/// A destination for completions. `publish` returns only when the bus has durably accepted
/// everything it was given (JetStream: acknowledged), so the caller may acknowledge upstream,
/// and says what the bus did with it (stored, or dropped as a duplicate).
/// Publishing the same [`Outgoing`] again must not produce a second message for consumers
/// (JetStream: the same `Nats-Msg-Id`, inside the duplicate window).
pub trait Sink: Send + Sync + fmt::Debug {
    /// A short name for logs and metrics (`jetstream`, `argo-eventbus`, `legacy-nats`, `memory`).
    fn name(&self) -> &'static str;
    fn publish<'a>(&'a self, outgoing: &'a Outgoing) -> BoxFuture<'a, Result<Delivery, SinkError>>;
}
