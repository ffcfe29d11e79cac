//! The HTTP provider: a [`ProviderApi`] client for the provider-service HTTP API
//! (`POST /resource/{kind}`, `PUT` and `DELETE /resource/{kind}/{id}`).
//!
//! This module owns building the requests (including percent-encoding of provider ids), the
//! per-request timeout, retrying transient failures, and mapping HTTP answers onto
//! [`ProviderError`] with messages a user can act on when reading a Kubernetes condition.
//!
//! Provider services are reached over plain HTTP inside the cluster, so only `http://` base
//! URLs are accepted.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tracing::debug;

use super::{ProviderApi, ProviderError, ResourceKind};

/// The longest piece of a non-JSON response body quoted in an error message.
const MAX_QUOTED_BODY: usize = 512;

/// The longest wait between two attempts, however many retries are configured.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How an [`HttpProvider`] talks to the provider service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProviderOptions {
    /// How long one attempt (connect, send, and read the whole answer) may take.
    pub request_timeout: Duration,
    /// How many extra attempts are made after a timeout, a connection failure or a 5xx other
    /// than 501. Never used for 4xx or 501 answers.
    pub retries: u32,
    /// The wait before the first retry; it doubles for each further retry (capped at 30 s).
    pub retry_backoff: Duration,
}

impl Default for HttpProviderOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            retries: 2,
            retry_backoff: Duration::from_millis(200),
        }
    }
}

/// A [`ProviderApi`] that calls a provider service over HTTP.
#[derive(Debug, Clone)]
pub struct HttpProvider {
    /// `http://host[:port][/prefix]`, without a trailing slash.
    base_url: String,
    options: HttpProviderOptions,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpProvider {
    /// A provider at `base_url` (for example `http://provider-kfp.kfp-operator:8080`).
    ///
    /// Fails with [`ProviderError::Unreachable`] when the URL is not an absolute `http://` URL
    /// without query or fragment.
    pub fn new(base_url: &str, options: HttpProviderOptions) -> Result<Self, ProviderError> {
        let base_url = normalise_base_url(base_url)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { base_url, options, client })
    }

    /// The normalised base URL (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The options this provider was built with.
    pub fn options(&self) -> &HttpProviderOptions {
        &self.options
    }

    /// Runs one operation with retries. Returns the id from a 2xx answer (`None` for delete).
    async fn call(
        &self,
        operation: Operation,
        kind: ResourceKind,
        id: Option<&str>,
        definition: Option<&Value>,
    ) -> Result<Option<String>, ProviderError> {
        let label = format!("{} {kind}", operation.verb());
        let url = match id {
            Some("") => {
                return Err(ProviderError::Rejected {
                    message: format!("{label}: the provider id is empty"),
                });
            }
            Some(id) => format!("{}/resource/{kind}/{}", self.base_url, encode_path_segment(id)),
            None => format!("{}/resource/{kind}", self.base_url),
        };
        let uri: Uri = url.parse().map_err(|error| ProviderError::Unreachable {
            message: format!("{label}: cannot build the request URL {url}: {error}"),
        })?;
        let body = match definition {
            Some(definition) => Some(Bytes::from(serde_json::to_vec(definition).map_err(|error| {
                ProviderError::Rejected {
                    message: format!("{label}: the definition cannot be serialised: {error}"),
                }
            })?)),
            None => None,
        };

        let mut attempt: u32 = 0;
        loop {
            match self.attempt(operation, kind, &label, &uri, body.clone()).await {
                Ok(id) => return Ok(id),
                Err(Failure { error, retryable }) => {
                    if !retryable || attempt >= self.options.retries {
                        return Err(error);
                    }
                    let delay = backoff(self.options.retry_backoff, attempt);
                    attempt += 1;
                    debug!(
                        kind = %kind,
                        operation = operation.verb(),
                        attempt,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error = %error,
                        "retrying provider request"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One request and the interpretation of its answer.
    async fn attempt(
        &self,
        operation: Operation,
        kind: ResourceKind,
        label: &str,
        uri: &Uri,
        body: Option<Bytes>,
    ) -> Result<Option<String>, Failure> {
        let mut builder = Request::builder()
            .method(operation.method())
            .uri(uri.clone())
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder.body(Full::new(body.unwrap_or_default())).map_err(|error| {
            Failure::fatal(ProviderError::Unreachable {
                message: format!("{label}: cannot build the request to {uri}: {error}"),
            })
        })?;

        let exchange = async {
            let response = self.client.request(request).await.map_err(|error| error_chain(&error))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|error| format!("reading the answer failed: {}", error_chain(&error)))?
                .to_bytes();
            Ok::<_, String>((status, bytes))
        };

        match tokio::time::timeout(self.options.request_timeout, exchange).await {
            Err(_elapsed) => {
                debug!(kind = %kind, operation = operation.verb(), status = "timeout", "provider request");
                Err(Failure::retryable(ProviderError::Timeout {
                    seconds: whole_seconds(self.options.request_timeout),
                }))
            }
            Ok(Err(message)) => {
                debug!(kind = %kind, operation = operation.verb(), status = "unreachable", error = %message, "provider request");
                Err(Failure::retryable(ProviderError::Unreachable {
                    message: format!("{label} at {uri}: {message}"),
                }))
            }
            Ok(Ok((status, bytes))) => {
                debug!(kind = %kind, operation = operation.verb(), status = status.as_u16(), "provider request");
                interpret(operation, label, status, &bytes)
            }
        }
    }
}

impl ProviderApi for HttpProvider {
    fn create<'a>(
        &'a self,
        kind: ResourceKind,
        definition: &'a Value,
    ) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            let id = self.call(Operation::Create, kind, None, Some(definition)).await?;
            id.ok_or_else(|| no_id(Operation::Create, kind))
        })
    }

    fn update<'a>(
        &'a self,
        kind: ResourceKind,
        id: &'a str,
        definition: &'a Value,
    ) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            let id = self.call(Operation::Update, kind, Some(id), Some(definition)).await?;
            id.ok_or_else(|| no_id(Operation::Update, kind))
        })
    }

    fn delete<'a>(&'a self, kind: ResourceKind, id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move { self.call(Operation::Delete, kind, Some(id), None).await.map(|_| ()) })
    }
}

/// The three provider operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    fn verb(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }

    fn method(self) -> Method {
        match self {
            Self::Create => Method::POST,
            Self::Update => Method::PUT,
            Self::Delete => Method::DELETE,
        }
    }
}

/// A failed attempt and whether another attempt may help.
struct Failure {
    error: ProviderError,
    retryable: bool,
}

impl Failure {
    fn fatal(error: ProviderError) -> Self {
        Self { error, retryable: false }
    }

    fn retryable(error: ProviderError) -> Self {
        Self { error, retryable: true }
    }
}

fn no_id(operation: Operation, kind: ResourceKind) -> ProviderError {
    ProviderError::Failed { message: format!("the provider returned no id for {} {kind}", operation.verb()) }
}

/// Maps an HTTP answer onto the operation's result.
fn interpret(
    operation: Operation,
    label: &str,
    status: StatusCode,
    body: &[u8],
) -> Result<Option<String>, Failure> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let provider_error = json
        .as_ref()
        .and_then(|json| json.get("providerError"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty());
    let code = status.as_u16();

    if status.is_success() {
        if let Some(text) = provider_error {
            return Err(Failure::fatal(ProviderError::Failed {
                message: format!("the provider failed to {label}: {text}"),
            }));
        }
        if operation == Operation::Delete {
            return Ok(None);
        }
        let id =
            json.as_ref().and_then(|json| json.get("id")).and_then(Value::as_str).filter(|id| !id.is_empty());
        return match id {
            Some(id) => Ok(Some(id.to_owned())),
            None => Err(Failure::fatal(ProviderError::Failed {
                message: format!("the provider returned no id for {label}"),
            })),
        };
    }

    let detail = provider_error.map_or_else(|| quote_body(body), str::to_owned);
    match code {
        404 if operation == Operation::Delete => Ok(None),
        501 => Err(Failure::fatal(ProviderError::Unimplemented { operation: label.to_owned() })),
        400 | 422 => Err(Failure::fatal(ProviderError::Rejected {
            message: format!("{label}: {detail} (HTTP {code})"),
        })),
        404 => Err(Failure::fatal(ProviderError::Rejected {
            message: format!(
                "{label}: the provider does not know this resource or path: {detail} (HTTP 404)"
            ),
        })),
        400..=499 => Err(Failure::fatal(ProviderError::Rejected {
            message: format!("{label}: {detail} (HTTP {code})"),
        })),
        500..=599 => Err(Failure::retryable(ProviderError::Failed {
            message: format!("the provider failed to {label}: {detail} (HTTP {code})"),
        })),
        _ => Err(Failure::fatal(ProviderError::Unreachable {
            message: format!(
                "{label}: unexpected HTTP status {status}, this is not the provider API: {detail}"
            ),
        })),
    }
}

/// The body as text for an error message: trimmed, shortened, never empty.
fn quote_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "empty response body".to_owned();
    }
    match text.char_indices().nth(MAX_QUOTED_BODY) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// An error and its sources, joined with `: ` (hyper's top-level messages are terse).
fn error_chain(error: &dyn StdError) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Percent-encodes everything outside RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`),
/// so that `ns/name` becomes `ns%2Fname`.
fn encode_path_segment(segment: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push('%');
            encoded.push(char::from(HEX[usize::from(byte >> 4)]));
            encoded.push(char::from(HEX[usize::from(byte & 0x0F)]));
        }
    }
    encoded
}

/// The wait before retry number `attempt + 1`: `base`, doubled per earlier retry, capped.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 2_u32.saturating_pow(attempt);
    base.saturating_mul(factor).min(MAX_BACKOFF.max(base))
}

/// A timeout in whole seconds, rounded up so that sub-second timeouts do not read as `0s`.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Checks and normalises a base URL to `http://authority[/prefix]` without a trailing slash.
fn normalise_base_url(base_url: &str) -> Result<String, ProviderError> {
    let invalid = |reason: &str| ProviderError::Unreachable {
        message: format!("invalid provider URL {base_url:?}: {reason}"),
    };
    let trimmed = base_url.trim();
    let uri: Uri = trimmed.parse().map_err(|error| invalid(&format!("{error}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(invalid(&format!("scheme {other:?} is not supported, use http://")));
        }
        None => return Err(invalid("expected an absolute URL such as http://host:8080")),
    }
    let Some(authority) = uri.authority() else {
        return Err(invalid("the URL has no host"));
    };
    if authority.host().is_empty() {
        return Err(invalid("the URL has no host"));
    }
    if authority.as_str().contains('@') {
        return Err(invalid("credentials in the URL are not supported"));
    }
    if uri.query().is_some() || trimmed.contains('#') {
        return Err(invalid("a query or fragment is not allowed"));
    }
    let mut normalised = String::new();
    let _ = write!(normalised, "http://{authority}{}", uri.path().trim_end_matches('/'));
    Ok(normalised)
}
