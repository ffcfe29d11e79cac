//! CloudEvents for a [`RunCompletionEvent`]: structured JSON mode, spec version 1.0.
//!
//! | Attribute | Value |
//! |---|---|
//! | `type` | `org.kubeflow.pipelines.run-completion` for every completion; also `org.kubeflow.pipelines.model-ready` for a succeeded run with at least one artifact |
//! | `id` | 40 hex chars: SHA-1 over `type`, `provider`, `runId` and `status`, NUL-separated, so every retry and every producer of the same completion yields the same id (used as `Nats-Msg-Id`) |
//! | `source` | `urn:kfp-operator:provider:<namespace>/<name>` (the provider; characters outside the URI path set percent-encoded) |
//! | `subject` | `<namespace>/<name>` of the RunConfiguration, else of the Run; omitted when neither is known |
//! | `time` | `runEndTime`, else the `now` passed in |
//! | `datacontenttype` | exactly `application/json` |
//! | `dataschema` | `<schema base>run-completion-event.json` (see [`DEFAULT_SCHEMA_BASE`]) |
//! | `data` | the [`RunCompletionEvent`] as an embedded JSON object |
//!
//! Also here: the legacy core-NATS body `{"data": <RunCompletionEvent>}` and the subjects of the
//! operator's own JetStream stream.

use chrono::{DateTime, Utc};
use cloudevents::event::AttributesReader;
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use serde_json::Value;
use sha1::{Digest, Sha1};

use super::completion::{RunCompletionEvent, RunCompletionStatus};
use super::schema::{DEFAULT_SCHEMA_BASE, RUN_COMPLETION_EVENT_SCHEMA};
use crate::api::NamespacedName;

/// `type` of the event published for every run completion.
pub const RUN_COMPLETION_TYPE: &str = "org.kubeflow.pipelines.run-completion";
/// `type` of the event published for a succeeded run with at least one artifact.
pub const MODEL_READY_TYPE: &str = "org.kubeflow.pipelines.model-ready";
/// `datacontenttype` of every event; Argo Sensors need exactly this value.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// Prefix of `source`; the provider's `namespace/name` follows.
pub const SOURCE_PREFIX: &str = "urn:kfp-operator:provider:";

/// The two kinds of event a completion can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Every completion, succeeded or failed.
    RunCompletion,
    /// A succeeded run with at least one artifact.
    ModelReady,
}

impl EventKind {
    /// Both kinds, in publishing order.
    pub const ALL: [Self; 2] = [Self::RunCompletion, Self::ModelReady];

    /// The CloudEvent `type`.
    pub fn cloud_event_type(self) -> &'static str {
        match self {
            Self::RunCompletion => RUN_COMPLETION_TYPE,
            Self::ModelReady => MODEL_READY_TYPE,
        }
    }

    /// The kind a CloudEvent `type` names, if it is one of ours.
    pub fn from_cloud_event_type(ty: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.cloud_event_type() == ty)
    }

    /// The subject token: `run-completion` or `model-ready`.
    pub fn subject_token(self) -> &'static str {
        match self {
            Self::RunCompletion => "run-completion",
            Self::ModelReady => "model-ready",
        }
    }

    /// Whether `event` produces an event of this kind.
    pub fn applies_to(self, event: &RunCompletionEvent) -> bool {
        match self {
            Self::RunCompletion => true,
            Self::ModelReady => event.status == RunCompletionStatus::Succeeded && !event.artifacts.is_empty(),
        }
    }
}

/// Why CloudEvent options or an event could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudEventError {
    /// The schema base does not make an absolute URI with a schema file name appended.
    #[error("dataschema base {base:?} does not form an absolute URI: {message}")]
    InvalidSchemaBase { base: String, message: String },
}

impl CloudEventError {
    /// A stable, low-cardinality name for the kind of error (for metrics and logs).
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidSchemaBase { .. } => "invalid_schema_base",
        }
    }
}

/// Settings of CloudEvent construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEventOptions {
    schema_base: String,
}

impl Default for CloudEventOptions {
    fn default() -> Self {
        Self { schema_base: DEFAULT_SCHEMA_BASE.to_owned() }
    }
}

impl CloudEventOptions {
    /// Options whose `dataschema` is `schema_base` followed by the schema's file name
    /// (so an `https://…/schemas/` base should end in `/`).
    pub fn new(schema_base: impl Into<String>) -> Result<Self, CloudEventError> {
        let options = Self { schema_base: schema_base.into() };
        // Let the SDK's own URI parser judge, so building events later cannot fail.
        EventBuilderV10::new()
            .id("probe")
            .ty(RUN_COMPLETION_TYPE)
            .source(SOURCE_PREFIX)
            .data_with_schema(JSON_CONTENT_TYPE, options.dataschema(), Value::Null)
            .build()
            .map_err(|error| CloudEventError::InvalidSchemaBase {
                base: options.schema_base.clone(),
                message: error.to_string(),
            })?;
        Ok(options)
    }

    /// The base the schema file name is appended to.
    pub fn schema_base(&self) -> &str {
        &self.schema_base
    }

    /// The `dataschema` of both event kinds (they carry the same payload).
    pub fn dataschema(&self) -> String {
        format!("{}{RUN_COMPLETION_EVENT_SCHEMA}", self.schema_base)
    }
}

/// The deterministic CloudEvent `id`: lower-case hex SHA-1 over
/// `type NUL provider NUL runId NUL status`.
pub fn event_id(kind: EventKind, event: &RunCompletionEvent) -> String {
    id_of(kind, &event.provider, &event.run_id, event.status)
}

/// The id that follows one completion through the logs (`trace_id`): the id of its
/// run-completion CloudEvent, known before the event is built and the same on every repeat.
pub fn trace_id(provider: &NamespacedName, run_id: &str, status: RunCompletionStatus) -> String {
    id_of(EventKind::RunCompletion, provider, run_id, status)
}

fn id_of(kind: EventKind, provider: &NamespacedName, run_id: &str, status: RunCompletionStatus) -> String {
    let mut hasher = Sha1::new();
    let provider = provider.to_string();
    for (i, part) in
        [kind.cloud_event_type(), provider.as_str(), run_id, status.as_str()].into_iter().enumerate()
    {
        if i > 0 {
            hasher.update([0u8]);
        }
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The CloudEvent `source` naming a provider: `urn:kfp-operator:provider:<namespace>/<name>`.
pub fn event_source(provider: &NamespacedName) -> String {
    let mut source = String::from(SOURCE_PREFIX);
    for byte in provider.to_string().bytes() {
        // RFC 3986 `pchar` plus `/`; everything else is percent-encoded.
        if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&byte) {
            source.push(char::from(byte));
        } else {
            source.push_str(&format!("%{byte:02X}"));
        }
    }
    source
}

/// The CloudEvent `subject`: `<namespace>/<name>` of the RunConfiguration, else of the Run.
/// A name without a namespace takes the pipeline's.
pub fn event_subject(event: &RunCompletionEvent) -> Option<String> {
    let name = event.resource_name()?;
    Some(name.qualified(&event.pipeline_name.namespace).to_string())
}

/// The CloudEvents for a completion: always `run-completion`, plus `model-ready` for a
/// succeeded run with at least one artifact. `now` stands in for a missing `runEndTime`.
pub fn cloud_events_for(
    event: &RunCompletionEvent,
    options: &CloudEventOptions,
    now: DateTime<Utc>,
) -> Vec<Event> {
    EventKind::ALL
        .into_iter()
        .filter(|kind| kind.applies_to(event))
        .filter_map(|kind| cloud_event(kind, event, options, now).ok())
        .collect()
}

/// One CloudEvent of `kind` for a completion (whether or not the kind applies to it).
///
/// It cannot fail for options made by [`CloudEventOptions::new`] or `default()`: every
/// required attribute is set and the only parsed one, `dataschema`, was checked there.
pub fn cloud_event(
    kind: EventKind,
    event: &RunCompletionEvent,
    options: &CloudEventOptions,
    now: DateTime<Utc>,
) -> Result<Event, CloudEventError> {
    let data = payload(event);
    let mut builder = EventBuilderV10::new()
        .id(event_id(kind, event))
        .ty(kind.cloud_event_type())
        .source(event_source(&event.provider))
        .time(event.run_end_time.unwrap_or(now))
        .data_with_schema(JSON_CONTENT_TYPE, options.dataschema(), data);
    if let Some(subject) = event_subject(event) {
        builder = builder.subject(subject);
    }
    builder.build().map_err(|error| CloudEventError::InvalidSchemaBase {
        base: options.schema_base.clone(),
        message: error.to_string(),
    })
}

/// The event as a JSON value; serialising our types cannot fail (every map key is a string).
fn payload(event: &RunCompletionEvent) -> Value {
    serde_json::to_value(event).unwrap_or(Value::Null)
}

/// The structured-mode JSON of a CloudEvent (the NATS message payload).
pub fn to_structured_json(event: &Event) -> Value {
    serde_json::to_value(event).unwrap_or(Value::Null)
}

/// The structured-mode bytes of a CloudEvent, ready to publish.
pub fn to_structured_bytes(event: &Event) -> Vec<u8> {
    serde_json::to_vec(event).unwrap_or_default()
}

/// The body the reference publishes on core NATS subject `events`: `{"data": <event>}`, so
/// Sensors filtering `body.data.status` keep working.
pub fn legacy_body(event: &RunCompletionEvent) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("data".to_owned(), payload(event));
    Value::Object(body)
}

/// A NATS subject token for `raw`: `.`, `*`, `>`, whitespace and control characters become
/// `_`; an empty token becomes `_`.
pub fn subject_token(raw: &str) -> String {
    if raw.is_empty() {
        return "_".to_owned();
    }
    raw.chars()
        .map(|c| if matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control() { '_' } else { c })
        .collect()
}

/// The namespace an event belongs to: the pipeline's, else the RunConfiguration's or Run's.
fn event_namespace(event: &RunCompletionEvent) -> &str {
    [Some(&event.pipeline_name), event.run_configuration_name.as_ref(), event.run_name.as_ref()]
        .into_iter()
        .flatten()
        .map(|name| name.namespace.as_str())
        .find(|namespace| !namespace.is_empty())
        .unwrap_or_default()
}

/// The subject on the operator's own stream:
/// `<prefix>.run-completion.<namespace>.<pipeline>.<status>` or
/// `<prefix>.model-ready.<namespace>.<pipeline>`. The prefix is used as given (it may hold
/// several tokens); the other tokens are sanitised with [`subject_token`].
pub fn nats_subject(prefix: &str, kind: EventKind, event: &RunCompletionEvent) -> String {
    let namespace = subject_token(event_namespace(event));
    let pipeline = subject_token(&event.pipeline_name.name);
    match kind {
        EventKind::RunCompletion => {
            format!("{prefix}.{}.{namespace}.{pipeline}.{}", kind.subject_token(), event.status)
        }
        EventKind::ModelReady => format!("{prefix}.{}.{namespace}.{pipeline}", kind.subject_token()),
    }
}

/// The subject on the operator's own stream for a CloudEvent built by [`cloud_events_for`].
pub fn nats_subject_for(prefix: &str, cloud_event: &Event, event: &RunCompletionEvent) -> Option<String> {
    EventKind::from_cloud_event_type(cloud_event.ty()).map(|kind| nats_subject(prefix, kind, event))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use cloudevents::AttributesReader;
    use serde_json::json;

    use super::*;
    use crate::api::Artifact;

    fn event(status: RunCompletionStatus, artifacts: Vec<Artifact>) -> RunCompletionEvent {
        RunCompletionEvent {
            status,
            pipeline_name: NamespacedName::new("base-namespace", "penguin"),
            run_configuration_name: Some(NamespacedName::new("base-namespace", "penguin-rc")),
            run_name: None,
            run_id: "3f2c".into(),
            run_start_time: Some(Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap()),
            run_end_time: Some(Utc.with_ymd_and_hms(2024, 5, 1, 10, 21, 7).unwrap()),
            artifacts,
            provider: NamespacedName::new("provider-namespace", "kfp"),
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn succeeded_with_artifacts_gives_both_kinds() {
        let completion = event(RunCompletionStatus::Succeeded, vec![Artifact::new("model", "gs://b/m")]);
        let events = cloud_events_for(&completion, &CloudEventOptions::default(), now());
        let types: Vec<&str> = events.iter().map(|e| e.ty()).collect();
        assert_eq!(types, vec![RUN_COMPLETION_TYPE, MODEL_READY_TYPE]);
        assert_ne!(events[0].id(), events[1].id());
    }

    #[test]
    fn model_ready_needs_success_and_artifacts() {
        let options = CloudEventOptions::default();
        let failed = event(RunCompletionStatus::Failed, vec![Artifact::new("model", "gs://b/m")]);
        assert_eq!(cloud_events_for(&failed, &options, now()).len(), 1);
        let no_artifacts = event(RunCompletionStatus::Succeeded, vec![]);
        let events = cloud_events_for(&no_artifacts, &options, now());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].ty(), RUN_COMPLETION_TYPE);
    }

    #[test]
    fn attributes() {
        let completion = event(RunCompletionStatus::Succeeded, vec![Artifact::new("model", "gs://b/m")]);
        let events = cloud_events_for(&completion, &CloudEventOptions::default(), now());
        let e = &events[0];
        assert_eq!(e.source(), "urn:kfp-operator:provider:provider-namespace/kfp");
        assert_eq!(e.subject(), Some("base-namespace/penguin-rc"));
        assert_eq!(e.time(), completion.run_end_time.as_ref());
        assert_eq!(e.datacontenttype(), Some("application/json"));
        assert_eq!(
            e.dataschema().map(|u| u.as_str()),
            Some("urn:kfp-operator:schemas:run-completion-event.json")
        );
        assert_eq!(e.id().len(), 40);

        let mut run_only = completion.clone();
        run_only.run_configuration_name = None;
        run_only.run_name = Some(NamespacedName::name_only("one-off"));
        run_only.run_end_time = None;
        let e =
            cloud_event(EventKind::RunCompletion, &run_only, &CloudEventOptions::default(), now()).unwrap();
        assert_eq!(e.subject(), Some("base-namespace/one-off"));
        assert_eq!(e.time(), Some(&now()));

        let mut anonymous = completion;
        anonymous.run_configuration_name = None;
        let e =
            cloud_event(EventKind::RunCompletion, &anonymous, &CloudEventOptions::default(), now()).unwrap();
        assert_eq!(e.subject(), None);
    }

    #[test]
    fn ids_are_deterministic() {
        let options = CloudEventOptions::default();
        let a = event(RunCompletionStatus::Succeeded, vec![]);
        let id = event_id(EventKind::RunCompletion, &a);
        assert_eq!(cloud_events_for(&a, &options, now())[0].id(), id);
        // Same completion, different artifacts, time or names: same id.
        let mut b = a.clone();
        b.artifacts.push(Artifact::new("x", "y"));
        b.run_end_time = None;
        b.run_name = Some(NamespacedName::new("ns", "r"));
        assert_eq!(event_id(EventKind::RunCompletion, &b), id);
        assert_eq!(cloud_events_for(&b, &options, Utc::now())[0].id(), id);
        // Any of type, provider, runId, status changes it.
        let failed = event(RunCompletionStatus::Failed, vec![]);
        assert_ne!(event_id(EventKind::RunCompletion, &failed), id);
        assert_ne!(event_id(EventKind::ModelReady, &a), id);
        let mut other_run = a.clone();
        other_run.run_id = "other".into();
        assert_ne!(event_id(EventKind::RunCompletion, &other_run), id);
        let mut other_provider = a.clone();
        other_provider.provider = NamespacedName::new("other", "kfp");
        assert_ne!(event_id(EventKind::RunCompletion, &other_provider), id);
        // The separator keeps field boundaries: "ab"+"c" differs from "a"+"bc".
        let mut shifted = a.clone();
        shifted.provider = NamespacedName::new("provider-namespace", "kfp3");
        shifted.run_id = "f2c".into();
        assert_ne!(event_id(EventKind::RunCompletion, &shifted), id);
        // Pinned: changing the recipe changes every id on the bus.
        let mut hasher = Sha1::new();
        hasher.update(b"org.kubeflow.pipelines.run-completion\0provider-namespace/kfp\x003f2c\0succeeded");
        assert_eq!(id, hex::encode(hasher.finalize()));
    }

    #[test]
    fn structured_json_embeds_data_as_an_object() {
        let completion = event(RunCompletionStatus::Succeeded, vec![Artifact::new("model", "gs://b/m")]);
        let events = cloud_events_for(&completion, &CloudEventOptions::default(), now());
        let json = to_structured_json(&events[1]);
        assert_eq!(json["specversion"], json!("1.0"));
        assert_eq!(json["type"], json!(MODEL_READY_TYPE));
        assert_eq!(json["time"], json!("2024-05-01T10:21:07Z"));
        assert!(json.get("data_base64").is_none());
        assert_eq!(
            json["data"],
            json!({
                "status": "succeeded",
                "pipelineName": "base-namespace/penguin",
                "runConfigurationName": "base-namespace/penguin-rc",
                "runId": "3f2c",
                "runStartTime": "2024-05-01T10:00:00Z",
                "runEndTime": "2024-05-01T10:21:07Z",
                "artifacts": [{"name": "model", "location": "gs://b/m"}],
                "provider": "provider-namespace/kfp"
            })
        );
        let bytes = to_structured_bytes(&events[1]);
        assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), json);
        let decoded: Event = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(decoded, events[1]);
    }

    #[test]
    fn legacy_body_wraps_the_event() {
        let completion = event(RunCompletionStatus::Failed, vec![]);
        let body = legacy_body(&completion);
        assert_eq!(body["data"]["status"], json!("failed"));
        assert_eq!(body["data"]["artifacts"], json!([]));
        assert_eq!(body.as_object().map(|o| o.len()), Some(1));
    }

    #[test]
    fn schema_base_is_configurable_and_checked() {
        let options = CloudEventOptions::new("https://example.com/kfp/schemas/").unwrap();
        assert_eq!(options.dataschema(), "https://example.com/kfp/schemas/run-completion-event.json");
        let completion = event(RunCompletionStatus::Failed, vec![]);
        let e = &cloud_events_for(&completion, &options, now())[0];
        assert_eq!(e.dataschema().map(|u| u.as_str()), Some(options.dataschema().as_str()));
        let error = CloudEventOptions::new("not a uri/").unwrap_err();
        assert_eq!(error.category(), "invalid_schema_base");
        assert_eq!(CloudEventOptions::new(DEFAULT_SCHEMA_BASE).unwrap(), CloudEventOptions::default());
    }

    #[test]
    fn source_is_percent_encoded() {
        assert_eq!(event_source(&NamespacedName::new("ns", "kfp")), "urn:kfp-operator:provider:ns/kfp");
        assert_eq!(
            event_source(&NamespacedName::name_only("a b%é")),
            "urn:kfp-operator:provider:a%20b%25%C3%A9"
        );
    }

    #[test]
    fn subjects_are_sanitised() {
        let mut completion = event(RunCompletionStatus::Succeeded, vec![]);
        assert_eq!(
            nats_subject("kfp", EventKind::RunCompletion, &completion),
            "kfp.run-completion.base-namespace.penguin.succeeded"
        );
        assert_eq!(
            nats_subject("kfp.events", EventKind::ModelReady, &completion),
            "kfp.events.model-ready.base-namespace.penguin"
        );
        completion.pipeline_name = NamespacedName::name_only("my.pipe *> line\t");
        completion.run_configuration_name = None;
        assert_eq!(
            nats_subject("kfp", EventKind::RunCompletion, &completion),
            "kfp.run-completion._.my_pipe____line_.succeeded"
        );
        completion.run_name = Some(NamespacedName::new("run-ns", "r"));
        assert_eq!(
            nats_subject("kfp", EventKind::ModelReady, &completion),
            "kfp.model-ready.run-ns.my_pipe____line_"
        );
        assert_eq!(subject_token(""), "_");
        assert_eq!(subject_token("ok-token_1"), "ok-token_1");

        let events = cloud_events_for(
            &event(RunCompletionStatus::Failed, vec![]),
            &CloudEventOptions::default(),
            now(),
        );
        assert_eq!(
            nats_subject_for("p", &events[0], &event(RunCompletionStatus::Failed, vec![])).as_deref(),
            Some("p.run-completion.base-namespace.penguin.failed")
        );
    }

    #[test]
    fn kinds_round_trip_through_their_type() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_cloud_event_type(kind.cloud_event_type()), Some(kind));
        }
        assert_eq!(EventKind::from_cloud_event_type("nats"), None);
    }
}
