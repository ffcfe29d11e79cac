//! The eventing part of the operator configuration (`events:`): the ingest, the NATS
//! connection and each sink.

use std::time::Duration;

use serde::Deserialize;

use crate::api::duration::deserialize as duration;

/// Run-completion eventing settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Address of the `POST /events` ingest.
    pub listen_addr: std::net::SocketAddr,
    /// Base URI of the payload schemas, used for CloudEvents' `dataschema`.
    pub schema_base: String,
    /// Largest accepted ingest body, in bytes.
    pub max_body_bytes: usize,
    /// How long one publish may wait for the bus's acknowledgement before it is retried.
    #[serde(deserialize_with = "duration")]
    pub publish_timeout: Duration,
    /// How many completions may be publishing at once; further ingest requests wait.
    pub max_in_flight: usize,
    /// The NATS server of the `jetstream` and `legacyNats` sinks. No URL means the in-memory
    /// bus (embedded mode).
    pub nats: Option<NatsConnection>,
    pub jetstream: JetStreamSink,
    pub legacy_nats: LegacyNatsSink,
    pub argo_event_bus: Option<ArgoEventBusSink>,
    /// Who may `POST /events`: `serviceAccountToken` (the Provider's own ServiceAccount, proven by
    /// a bearer token the API server reviews) or `none` (anyone who can reach the port).
    pub authentication: IngestAuthentication,
    /// The audience a bearer token must be issued for.
    pub token_audience: String,
}

/// How `POST /events` authenticates its callers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum IngestAuthentication {
    /// A bearer token of the reporting Provider's ServiceAccount, verified with a TokenReview.
    #[default]
    ServiceAccountToken,
    /// No authentication: anyone who reaches the port may report completions.
    None,
}

/// The default of `events.tokenAudience`, also the audience of the token the provider service
/// Deployments mount.
pub const DEFAULT_TOKEN_AUDIENCE: &str = "kfp-operator-events";

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            listen_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 8082)),
            schema_base: super::DEFAULT_SCHEMA_BASE.to_owned(),
            max_body_bytes: 1024 * 1024,
            publish_timeout: Duration::from_secs(5),
            max_in_flight: 256,
            nats: None,
            jetstream: JetStreamSink::default(),
            legacy_nats: LegacyNatsSink::default(),
            argo_event_bus: None,
            authentication: IngestAuthentication::default(),
            token_audience: DEFAULT_TOKEN_AUDIENCE.to_owned(),
        }
    }
}

/// How to reach a NATS server.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NatsConnection {
    /// `nats://host:port` (or `tls://`); several separated by commas.
    pub url: String,
    /// A token.
    pub token: Option<String>,
    /// User and password.
    pub user: Option<String>,
    pub password: Option<String>,
    /// A `.creds` file (JWT and nkey seed).
    pub creds_file: Option<std::path::PathBuf>,
    /// An nkey seed file.
    pub nkey_seed_file: Option<std::path::PathBuf>,
    /// TLS: CA bundle, client certificate and key; `tlsRequired` forces TLS.
    pub tls_ca_file: Option<std::path::PathBuf>,
    pub tls_cert_file: Option<std::path::PathBuf>,
    pub tls_key_file: Option<std::path::PathBuf>,
    pub tls_required: bool,
}

/// The operator's own JetStream stream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct JetStreamSink {
    /// On by default when a NATS URL is set.
    pub enabled: bool,
    pub stream: String,
    /// Subjects are `<prefix>.run-completion.<ns>.<pipeline>.<status>` and `<prefix>.model-ready.<ns>.<pipeline>`.
    pub subject_prefix: String,
    /// JetStream's duplicate window; at least 5 minutes.
    #[serde(deserialize_with = "duration")]
    pub duplicate_window: Duration,
    /// How long messages are kept.
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
}

impl Default for JetStreamSink {
    fn default() -> Self {
        Self {
            enabled: true,
            stream: "kfp-operator-events".into(),
            subject_prefix: "kfp".into(),
            duplicate_window: Duration::from_secs(600),
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The reference's core-NATS publication, for existing Sensors.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LegacyNatsSink {
    pub enabled: bool,
    pub subject: String,
}

impl Default for LegacyNatsSink {
    fn default() -> Self {
        Self { enabled: false, subject: "events".into() }
    }
}

/// Publishing straight onto an Argo Events JetStream EventBus.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArgoEventBusSink {
    /// The EventBus's NATS server and credentials (Argo sets up TLS and basic auth).
    pub nats: NatsConnection,
    /// The EventSource name Sensors depend on (becomes the CloudEvent `source`).
    #[serde(default = "default_argo_event_source_name")]
    pub event_source_name: String,
    /// The event name Sensors depend on (becomes the CloudEvent `subject`).
    #[serde(default = "default_argo_event_name")]
    pub event_name: String,
    /// The bus's stream, `default` in Argo Events.
    #[serde(default = "default_argo_stream")]
    pub stream: String,
}

fn default_argo_stream() -> String {
    "default".into()
}

fn default_argo_event_source_name() -> String {
    "kfp-operator".into()
}

fn default_argo_event_name() -> String {
    "run-completion".into()
}

impl EventsConfig {
    /// Checks the settings that the file's types cannot; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let invalid = |message: String| Err(message);
        if self.jetstream.duplicate_window < Duration::from_secs(300) {
            return invalid("events.jetstream.duplicateWindow must be at least 5m".into());
        }
        if self.max_in_flight == 0 || self.max_body_bytes == 0 || self.publish_timeout.is_zero() {
            return invalid(
                "events.maxInFlight, events.maxBodyBytes and events.publishTimeout must be more than 0"
                    .into(),
            );
        }
        for (name, token) in [("events.jetstream.stream", &self.jetstream.stream)] {
            if token.is_empty() || token.contains(['.', '*', '>', ' ']) {
                return invalid(format!("{name} {token:?} is not a valid stream name"));
            }
        }
        if self.authentication == IngestAuthentication::ServiceAccountToken
            && self.token_audience.trim().is_empty()
        {
            return invalid(
                "events.tokenAudience must not be empty with events.authentication serviceAccountToken"
                    .into(),
            );
        }
        if let Some(nats) = &self.nats
            && nats.url.is_empty()
        {
            return invalid("events.nats.url is empty".into());
        }
        if let Some(argo) = &self.argo_event_bus
            && (argo.nats.url.is_empty() || argo.event_source_name.is_empty() || argo.event_name.is_empty())
        {
            return invalid("events.argoEventBus needs nats.url, eventSourceName and eventName".into());
        }
        super::CloudEventOptions::new(self.schema_base.clone())
            .map(|_| ())
            .map_err(|e| format!("events.schemaBase: {e}"))
    }
}
