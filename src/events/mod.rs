//! Run-completion eventing. The pure core: the provider → operator body
//! ([`RunCompletionEventData`]), artifact selection with go-bexpr filters
//! ([`select_artifacts`], [`crate::api::filter`]), the published [`RunCompletionEvent`], its CloudEvents
//! (`run-completion`, `model-ready`) with deterministic ids, the legacy `{"data": …}` body,
//! NATS subjects, and the JSON Schemas of the payloads. At the edges, with I/O but without a
//! Kubernetes client: the `/events` ingest behind its [`ingest::Resources`] port ([`ingest`]),
//! the bus adapters ([`sinks`]) and their settings ([`config`]), and the completion consumer
//! ([`consumer`]).
//!
//! Errors carry a stable `category()` for metrics and logs: [`FilterError`] (a filter does not
//! parse: a spec error), [`EvalError`] (a filter does not apply to one artifact's metadata: the
//! instance is skipped) and [`CloudEventError`] (bad options).

pub mod auth;
pub mod cloudevent;
pub mod completion;
pub mod config;
pub mod consumer;
pub mod ingest;
mod schema;
pub mod sink;
pub mod sinks;
pub use schema::DEFAULT_SCHEMA_BASE;

pub use crate::api::filter::{EvalError, Filter, FilterError};
pub use cloudevent::{
    CloudEventError, CloudEventOptions, EventKind, JSON_CONTENT_TYPE, MODEL_READY_TYPE, RUN_COMPLETION_TYPE,
    SOURCE_PREFIX, cloud_event, cloud_events_for, event_id, event_source, event_subject, legacy_body,
    nats_subject, nats_subject_for, subject_token, to_structured_bytes, to_structured_json,
};
pub use completion::{
    ComponentArtifact, ComponentArtifactInstance, PipelineComponent, RunCompletionEvent,
    RunCompletionEventData, RunCompletionStatus, select_artifacts,
};
pub use schema::{RUN_COMPLETION_EVENT_DATA_SCHEMA, RUN_COMPLETION_EVENT_SCHEMA, schemas};
