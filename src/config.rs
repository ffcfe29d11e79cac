//! The operator configuration: a YAML file (`--config`) with command-line overrides, validated
//! at start so a mistake stops the operator with a message naming the setting.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::api::duration::{deserialize as duration, deserialize_optional as optional_duration};

/// What is wrong with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the configuration file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Everything the operator can be configured with. Field names are camelCase in the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OperatorConfig {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// How many objects of one kind are reconciled at once.
    pub concurrency: u16,
    /// How many Runs a completion's trigger fan-out creates at once.
    pub fan_out_concurrency: usize,
    /// Completed Runs are deleted this long after completion; absent means never.
    #[serde(deserialize_with = "optional_duration")]
    pub run_completion_ttl: Option<Duration>,
    /// How long one provider call may take.
    #[serde(deserialize_with = "duration")]
    pub provider_call_timeout: Duration,
    /// First delay before retrying a failed provider call; doubles up to `retryMaxDelay`.
    #[serde(deserialize_with = "duration")]
    pub retry_initial_delay: Duration,
    #[serde(deserialize_with = "duration")]
    pub retry_max_delay: Duration,
    /// How often a settled object is looked at again as a safety net.
    #[serde(deserialize_with = "duration")]
    pub resync_period: Duration,
    /// The provider service Deployment and Service the operator runs for `http` Providers with
    /// a `serviceImage` and no `serviceUrl`.
    pub provider_defaults: ProviderDefaults,
    /// Run-completion eventing: the ingest endpoint and where events are published.
    pub events: crate::events::config::EventsConfig,
    /// Whether a RunConfiguration may depend on one in another namespace: `allow`, `deny`, or
    /// `grant` (the depended-on one lists the dependant's namespace in its
    /// `pipelines.kubeflow.org/allow-dependants-from` annotation).
    pub cross_namespace_policy: crate::triggers::CrossNamespacePolicy,
    /// Leader election among replicas on a Lease; off by default (one process).
    pub leader_election: crate::leader::LeaderElectionConfig,
    /// The validating admission webhook (HTTPS); off unless `listenAddr` is set.
    pub webhook: WebhookConfig,
    /// The compile Jobs that turn a Pipeline version into what its provider uploads.
    pub compile: CompileConfig,
    /// The Provider (`namespace/name`) of objects applied in `v1alpha5`, which has no
    /// `provider` field; absent means such objects name none and say so in `Synchronized`.
    pub default_provider: Option<crate::api::NamespacedName>,
    /// The framework of a `v1alpha5` Pipeline without `tfxComponents`.
    pub default_framework: String,
    /// The tfx compiler image of a Provider applied in `v1alpha5` or `v1alpha6`; its own
    /// `image` when absent.
    pub default_tfx_image: Option<String>,
}

impl OperatorConfig {
    /// What the conversion webhook fills in for the older versions.
    pub fn conversion_defaults(&self) -> crate::api::conversion::Defaults {
        crate::api::conversion::Defaults {
            default_provider: self.default_provider.clone(),
            default_framework: self.default_framework.clone(),
            default_tfx_image: self.default_tfx_image.clone(),
        }
    }
}

/// How Pipeline versions are compiled: one Job per version, in the Pipeline's namespace.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CompileConfig {
    /// Whether Pipelines are compiled at all; when off, providers receive the definition only.
    pub enabled: bool,
    /// How long one compile may take before it fails (the Job's `activeDeadlineSeconds`).
    #[serde(deserialize_with = "duration")]
    pub deadline: Duration,
    /// How long a finished compile Job is kept (its `ttlSecondsAfterFinished`).
    #[serde(deserialize_with = "duration")]
    pub ttl: Duration,
    /// How many compile Jobs may run at once; more wait for a free slot.
    pub max_concurrent: usize,
    /// The largest compiled pipeline accepted, in bytes.
    pub output_limit: u64,
    /// `imagePullPolicy` of the compile pod's containers.
    pub image_pull_policy: String,
    /// The compiler image of each framework, for Providers whose framework names no `image`.
    pub framework_images: BTreeMap<String, String>,
}

impl Default for CompileConfig {
    fn default() -> Self {
        let image = |framework: &str| {
            (
                framework.to_owned(),
                format!("{COMPILER_REGISTRY}/compiler-{framework}:{}", env!("CARGO_PKG_VERSION")),
            )
        };
        Self {
            enabled: true,
            deadline: Duration::from_secs(30 * 60),
            ttl: Duration::from_secs(24 * 3600),
            max_concurrent: 4,
            output_limit: 4 << 20,
            image_pull_policy: "IfNotPresent".into(),
            framework_images: BTreeMap::from([image("kfp-sdk"), image("tfx")]),
        }
    }
}

/// Where the project's framework compiler images are published.
pub const COMPILER_REGISTRY: &str = "ghcr.io/kfp-operator";

/// The validating admission webhook's listener and serving certificate.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Where to serve `POST /validate` over HTTPS; absent means no webhook.
    pub listen_addr: Option<std::net::SocketAddr>,
    /// The serving certificate chain (PEM); read again when it changes.
    pub cert_file: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM).
    pub key_file: Option<std::path::PathBuf>,
    /// The URL the API server calls for conversions (`https://…/convert`); when set with
    /// `caFile`, `--install-crds` writes it and the CA into each CRD's conversion webhook.
    pub conversion_url: Option<String>,
    /// The CA (PEM) that signed the serving certificate, for the CRDs' `caBundle`.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            concurrency: 8,
            fan_out_concurrency: 16,
            run_completion_ttl: None,
            provider_call_timeout: Duration::from_secs(30),
            retry_initial_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(300),
            resync_period: Duration::from_secs(3600),
            provider_defaults: ProviderDefaults::default(),
            events: crate::events::config::EventsConfig::default(),
            cross_namespace_policy: crate::triggers::CrossNamespacePolicy::default(),
            leader_election: crate::leader::LeaderElectionConfig::default(),
            webhook: WebhookConfig::default(),
            compile: CompileConfig::default(),
            default_provider: None,
            default_framework: "tfx".into(),
            default_tfx_image: None,
        }
    }
}

/// Defaults of provider service Deployments and Services.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProviderDefaults {
    pub replicas: i32,
    pub service_port: i32,
    pub metrics_port: i32,
    pub service_container_name: String,
    /// Labels added to the Deployment, its pods and the Service.
    pub labels: BTreeMap<String, String>,
}

impl Default for ProviderDefaults {
    fn default() -> Self {
        Self {
            replicas: 1,
            service_port: 8080,
            metrics_port: 8081,
            service_container_name: "provider-service".into(),
            labels: BTreeMap::new(),
        }
    }
}

impl OperatorConfig {
    /// Reads a configuration file; absent settings take their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        let config: Self = serde_saphyr::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: shown.clone(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if self.concurrency == 0 {
            return invalid("concurrency must be at least 1".into());
        }
        if self.fan_out_concurrency == 0 {
            return invalid("fanOutConcurrency must be at least 1".into());
        }
        if self.provider_call_timeout.is_zero() {
            return invalid("providerCallTimeout must be more than 0".into());
        }
        if self.retry_initial_delay.is_zero() || self.retry_initial_delay > self.retry_max_delay {
            return invalid("retryInitialDelay must be more than 0 and at most retryMaxDelay".into());
        }
        if self.resync_period < Duration::from_secs(1) {
            return invalid("resyncPeriod must be at least 1s".into());
        }
        let defaults = &self.provider_defaults;
        for (name, port) in [("servicePort", defaults.service_port), ("metricsPort", defaults.metrics_port)] {
            if !(1..=65535).contains(&port) {
                return invalid(format!("providerDefaults.{name} {port} is not a port number"));
            }
        }
        if defaults.replicas < 0 {
            return invalid("providerDefaults.replicas must not be negative".into());
        }
        if let Some(namespace) = self.namespaces.iter().find(|n| !is_dns_label(n)) {
            return invalid(format!("namespace {namespace:?} is not a valid namespace name"));
        }
        self.leader_election.validate().map_err(ConfigError::Invalid)?;
        if self.webhook.listen_addr.is_some()
            && (self.webhook.cert_file.is_none() || self.webhook.key_file.is_none())
        {
            return invalid("webhook.listenAddr needs webhook.certFile and webhook.keyFile".into());
        }
        let compile = &self.compile;
        if compile.deadline < Duration::from_secs(1) {
            return invalid("compile.deadline must be at least 1s".into());
        }
        if compile.max_concurrent == 0 {
            return invalid("compile.maxConcurrent must be at least 1".into());
        }
        if compile.output_limit == 0 {
            return invalid("compile.outputLimit must be more than 0".into());
        }
        if !["Always", "IfNotPresent", "Never"].contains(&compile.image_pull_policy.as_str()) {
            return invalid(format!(
                "compile.imagePullPolicy {:?} is not one of Always, IfNotPresent, Never",
                compile.image_pull_policy
            ));
        }
        self.events.validate().map_err(ConfigError::Invalid)
    }
}

impl OperatorConfig {
    /// The delay before retry number `attempt` (0-based).
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(20));
        self.retry_initial_delay.saturating_mul(factor).min(self.retry_max_delay)
    }
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_and_validated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            "concurrency: 4\nrunCompletionTtl: 10m\nproviderDefaults:\n  servicePort: 9000\n",
        )
        .unwrap();
        let config = OperatorConfig::from_file(&path).unwrap();
        assert_eq!(config.concurrency, 4);
        assert_eq!(config.run_completion_ttl, Some(Duration::from_secs(600)));
        assert_eq!(config.provider_defaults.service_port, 9000);
        assert_eq!(config.provider_defaults.metrics_port, 8081);

        std::fs::write(&path, "concurency: 4\n").unwrap();
        let error = OperatorConfig::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("concurency"), "{error}");

        std::fs::write(&path, "runCompletionTtl: soon\n").unwrap();
        let error = OperatorConfig::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("soon"), "{error}");

        std::fs::write(&path, "concurrency: 0\n").unwrap();
        let error = OperatorConfig::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("concurrency must be at least 1"), "{error}");
    }

    #[test]
    fn the_argo_event_bus_names_default_as_documented() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "events:\n  argoEventBus:\n    nats: {url: nats://127.0.0.1:4222}\n").unwrap();
        let argo = OperatorConfig::from_file(&path).unwrap().events.argo_event_bus.unwrap();
        assert_eq!(
            (argo.event_source_name.as_str(), argo.event_name.as_str(), argo.stream.as_str()),
            ("kfp-operator", "run-completion", "default")
        );

        std::fs::write(
            &path,
            "events:\n  argoEventBus:\n    nats: {url: nats://127.0.0.1:4222}\n    eventName: \"\"\n",
        )
        .unwrap();
        let error = OperatorConfig::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("eventName"), "{error}");
    }

    #[test]
    fn events_authentication_defaults_to_service_account_tokens_and_is_checked() {
        use crate::events::config::IngestAuthentication;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "namespaces: []\n").unwrap();
        let events = OperatorConfig::from_file(&path).unwrap().events;
        assert_eq!(events.authentication, IngestAuthentication::ServiceAccountToken);
        assert_eq!(events.token_audience, "kfp-operator-events");

        std::fs::write(&path, "events:\n  authentication: none\n").unwrap();
        let events = OperatorConfig::from_file(&path).unwrap().events;
        assert_eq!(events.authentication, IngestAuthentication::None);

        std::fs::write(&path, "events:\n  authentication: mutualTls\n").unwrap();
        let error = OperatorConfig::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("mutualTls") && error.contains("serviceAccountToken"), "{error}");

        std::fs::write(&path, "events:\n  tokenAudience: \"\"\n").unwrap();
        let error = OperatorConfig::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("events.tokenAudience"), "{error}");
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_maximum() {
        let config = OperatorConfig::default();
        assert_eq!(config.retry_delay(0), Duration::from_secs(1));
        assert_eq!(config.retry_delay(3), Duration::from_secs(8));
        assert_eq!(config.retry_delay(30), Duration::from_secs(300));
    }
}
