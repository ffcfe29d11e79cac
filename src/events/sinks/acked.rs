//! Acknowledged JetStream publishing with retries, shared by the `jetstream` and
//! `argo-eventbus` sinks: the in-flight bound, one message's publish-and-wait-for-ack, and the
//! retry policy.
//!
//! Every attempt carries the same `Nats-Msg-Id`, so an attempt whose outcome is unknown (no
//! ack in time: the message may still have been stored) can be repeated safely; the stream
//! acknowledges the repeat with `duplicate: true`, which is success.

use std::time::Duration;

use async_nats::jetstream::context::{GetStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::events::sink::SinkError;

/// `Content-Type` of a structured-mode CloudEvent (NATS binding).
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// One `publish` call gives up after this many `publishTimeout`s.
pub const RETRY_BUDGET_FACTOR: u32 = 6;
/// The first pause between attempts; it doubles up to `publishTimeout`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// What to do when no stream captures a subject.
#[derive(Debug, Clone)]
pub(super) enum MissingStream {
    /// Our own stream: it was set up at start, so "no responders" means JetStream is not
    /// ready yet (a restarting server); retry.
    Retry,
    /// A stream created by someone else: look it up, and fail with a configuration error if
    /// it does not exist or does not capture the subject; otherwise retry.
    Diagnose {
        stream: String,
        /// Said when the stream does not exist.
        missing_hint: &'static str,
        /// Said when the stream exists but does not capture the subject.
        mismatch_hint: &'static str,
    },
}

/// Publishes with acknowledgement, bounded in-flight, and retries.
#[derive(Debug)]
pub(super) struct AckedPublisher {
    sink: &'static str,
    jetstream: Context,
    publish_timeout: Duration,
    in_flight: Semaphore,
    missing_stream: MissingStream,
}

enum Failure {
    /// The outcome is unknown.
    TimedOut,
    /// The bus refused or could not be reached; the message was not stored.
    Other(String),
}

impl AckedPublisher {
    pub(super) fn new(
        sink: &'static str,
        client: async_nats::Client,
        publish_timeout: Duration,
        max_in_flight: usize,
        missing_stream: MissingStream,
    ) -> Self {
        let publish_timeout = publish_timeout.max(Duration::from_millis(1));
        Self {
            sink,
            jetstream: jetstream::ContextBuilder::new().timeout(publish_timeout).build(client),
            publish_timeout,
            in_flight: Semaphore::new(max_in_flight.max(1)),
            missing_stream,
        }
    }

    pub(super) fn jetstream(&self) -> &Context {
        &self.jetstream
    }

    /// Waits for one of the in-flight slots (back-pressure on callers).
    pub(super) async fn permit(&self) -> Result<SemaphorePermit<'_>, SinkError> {
        self.in_flight.acquire().await.map_err(|_| SinkError::Unavailable {
            sink: self.sink.into(),
            message: "the sink is shutting down".into(),
        })
    }

    /// When a `publish` call that starts now must give up.
    pub(super) fn deadline(&self) -> Instant {
        Instant::now() + self.publish_timeout.saturating_mul(RETRY_BUDGET_FACTOR)
    }

    /// Publishes `payload` on `subject` with `Nats-Msg-Id: id` and waits for the ack,
    /// retrying with the same id until `deadline`. A duplicate ack is success.
    pub(super) async fn publish(
        &self,
        subject: &str,
        id: &str,
        payload: Bytes,
        deadline: Instant,
    ) -> Result<PublishAck, SinkError> {
        let mut backoff = INITIAL_BACKOFF.min(self.publish_timeout);
        let mut attempt = 1u32;
        // Once an attempt timed out, the message may be stored: giving up is a Timeout.
        let mut outcome_unknown = false;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt_timeout = self.publish_timeout.min(remaining).max(Duration::from_millis(1));
            let outcome =
                tokio::time::timeout(attempt_timeout, self.attempt(subject, id, payload.clone())).await;
            let failure = match outcome {
                Ok(Ok(ack)) => {
                    tracing::debug!(sink = self.sink, subject, id, stream = %ack.stream, sequence = ack.sequence,
                        duplicate = ack.duplicate, attempt, "published");
                    return Ok(ack);
                }
                Err(_) => Failure::TimedOut,
                Ok(Err(error)) => match error.kind() {
                    PublishErrorKind::TimedOut => Failure::TimedOut,
                    PublishErrorKind::StreamNotFound => {
                        if let Some(error) = self.diagnose_missing_stream(subject).await {
                            return Err(error);
                        }
                        Failure::Other(format!("no stream captures subject {subject} (yet): {error}"))
                    }
                    PublishErrorKind::MaxPayloadExceeded
                    | PublishErrorKind::WrongLastMessageId
                    | PublishErrorKind::WrongLastSequence => {
                        return Err(SinkError::Unavailable {
                            sink: self.sink.into(),
                            message: format!("the bus refused message {id} on {subject}: {error}"),
                        });
                    }
                    PublishErrorKind::BrokenPipe
                    | PublishErrorKind::MaxAckPending
                    | PublishErrorKind::Other => {
                        Failure::Other(format!("publishing message {id} on {subject} failed: {error}"))
                    }
                },
            };
            outcome_unknown |= matches!(failure, Failure::TimedOut);
            if Instant::now() + backoff >= deadline {
                return Err(match failure {
                    Failure::Other(message) if !outcome_unknown => SinkError::Unavailable {
                        sink: self.sink.into(),
                        message: format!("{message} (gave up)"),
                    },
                    _ => SinkError::Timeout {
                        sink: self.sink.into(),
                        seconds: self.publish_timeout.saturating_mul(RETRY_BUDGET_FACTOR).as_secs().max(1),
                    },
                });
            }
            let reason = match &failure {
                Failure::TimedOut => "no acknowledgement in time (outcome unknown)",
                Failure::Other(message) => message.as_str(),
            };
            tracing::warn!(sink = self.sink, subject, id, attempt, retry_in = ?backoff, reason, "publish will be retried");
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2).min(self.publish_timeout);
            attempt = attempt.saturating_add(1);
        }
    }

    async fn attempt(
        &self,
        subject: &str,
        id: &str,
        payload: Bytes,
    ) -> Result<PublishAck, jetstream::context::PublishError> {
        let message = PublishMessage::build()
            .payload(payload)
            .message_id(id)
            .header("Content-Type", STRUCTURED_CONTENT_TYPE);
        self.jetstream.send_publish(subject.to_owned(), message).await?.await
    }

    /// A configuration error if the stream we publish to is missing or does not capture
    /// `subject`; `None` when the cause may be transient.
    async fn diagnose_missing_stream(&self, subject: &str) -> Option<SinkError> {
        let MissingStream::Diagnose { stream, missing_hint, mismatch_hint } = &self.missing_stream else {
            return None;
        };
        let configuration = |message: String| SinkError::Configuration { sink: self.sink.into(), message };
        match self.jetstream.get_stream(stream).await {
            Ok(found) => {
                let subjects = &found.cached_info().config.subjects;
                if subjects.iter().any(|pattern| subject_matches(pattern, subject)) {
                    None
                } else {
                    Some(configuration(format!(
                        "stream {stream:?} exists but its subjects {subjects:?} do not capture {subject:?}; {mismatch_hint}"
                    )))
                }
            }
            Err(error) => match error.kind() {
                GetStreamErrorKind::JetStream(api) if api.code() == 404 => {
                    Some(configuration(format!("stream {stream:?} is missing; {missing_hint}")))
                }
                GetStreamErrorKind::EmptyName | GetStreamErrorKind::InvalidStreamName => {
                    Some(configuration(format!("{stream:?} is not a valid stream name")))
                }
                _ => None,
            },
        }
    }
}

/// Whether NATS subject pattern `pattern` (with `*` and `>`) matches `subject`.
pub(super) fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for wanted in pattern.split('.') {
        match (wanted, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (wanted, Some(token)) if wanted == token => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn subject_patterns() {
        assert!(subject_matches("default.*.*", "default.es.ev"));
        assert!(!subject_matches("default.*.*", "default.e.s.ev"));
        assert!(!subject_matches("default.*.*", "default.es"));
        assert!(subject_matches("kfp.>", "kfp.run-completion.ns.p.succeeded"));
        assert!(!subject_matches("kfp.>", "kfp"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.c"));
    }
}
