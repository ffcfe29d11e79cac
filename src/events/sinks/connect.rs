//! Connecting to a NATS server from a [`NatsConnection`]: authentication (token,
//! user/password, creds file, nkey seed file), TLS, and errors that say what failed.
//!
//! The first connection must succeed (no retry at start, so a wrong URL or credentials stop the
//! operator with a clear message); after that the client reconnects forever in the background
//! (async-nats' default), buffering publishes meanwhile.

use std::path::Path;
use std::time::Duration;

use async_nats::{ConnectErrorKind, ConnectOptions, Event, ServerAddr};

use crate::events::config::NatsConnection;
use crate::events::sink::SinkError;

/// The connection name the server shows for our clients.
const CONNECTION_NAME: &str = "kfp-operator";
/// How long the first connection may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The `sink` of errors raised while connecting.
const SINK: &str = "nats";

/// Connects to the server(s) of `connection` (`url` may list several, comma-separated).
///
/// Errors: [`SinkError::Configuration`] for settings that cannot work (bad URL, unreadable
/// credential or certificate files, more than one authentication method, credentials or TLS
/// rejected by the server); [`SinkError::Unavailable`] when no server could be reached.
pub async fn connect(connection: &NatsConnection) -> Result<async_nats::Client, SinkError> {
    let servers = parse_servers(&connection.url)?;
    let shown = redact(&connection.url);
    let (options, auth) = options(connection).await?;
    options.connect(servers).await.map_err(|error| {
        let message = match error.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                format!("NATS at {shown} rejected the credentials ({auth}): {error}")
            }
            ConnectErrorKind::Tls => format!("TLS with NATS at {shown} failed: {error}"),
            // A rejected certificate surfaces as an I/O error of the handshake.
            ConnectErrorKind::Io if error.to_string().contains("certificate") => {
                format!(
                    "TLS with NATS at {shown} failed (check tlsCaFile, tlsCertFile and tlsKeyFile): {error}"
                )
            }
            ConnectErrorKind::ServerParse => format!("NATS URL {shown:?} is not valid: {error}"),
            ConnectErrorKind::Dns
            | ConnectErrorKind::TimedOut
            | ConnectErrorKind::Io
            | ConnectErrorKind::MaxReconnects => {
                return SinkError::Unavailable {
                    sink: SINK.into(),
                    message: format!("cannot connect to NATS at {shown}: {error}"),
                };
            }
        };
        SinkError::Configuration { sink: SINK.into(), message }
    })
}

fn configuration(message: String) -> SinkError {
    SinkError::Configuration { sink: SINK.into(), message }
}

fn parse_servers(url: &str) -> Result<Vec<ServerAddr>, SinkError> {
    let servers = url
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<ServerAddr>()
                .map_err(|error| configuration(format!("NATS URL {:?} is not valid: {error}", redact(part))))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(configuration("no NATS URL is configured".into()));
    }
    Ok(servers)
}

/// The options for `connection`, and a description of the authentication for error messages.
async fn options(connection: &NatsConnection) -> Result<(ConnectOptions, String), SinkError> {
    let mut options = ConnectOptions::new()
        .name(CONNECTION_NAME)
        .connection_timeout(CONNECTION_TIMEOUT)
        .event_callback(|event| async move { log_event(event) });

    let methods = [
        connection.token.is_some(),
        connection.user.is_some() || connection.password.is_some(),
        connection.creds_file.is_some(),
        connection.nkey_seed_file.is_some(),
    ];
    if methods.into_iter().filter(|set| *set).count() > 1 {
        return Err(configuration(
            "set only one of token, user/password, credsFile and nkeySeedFile for NATS".into(),
        ));
    }

    let mut auth = "no credentials".to_owned();
    if let Some(token) = &connection.token {
        options = options.token(token.clone());
        auth = "token".into();
    }
    match (&connection.user, &connection.password) {
        (Some(user), Some(password)) => {
            options = options.user_and_password(user.clone(), password.clone());
            auth = format!("user {user:?} and password");
        }
        (None, None) => {}
        _ => return Err(configuration("NATS user and password must be set together".into())),
    }
    if let Some(path) = &connection.creds_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|error| configuration(format!("NATS creds file {}: {error}", path.display())))?;
        auth = format!("creds file {}", path.display());
    }
    if let Some(path) = &connection.nkey_seed_file {
        let seed = tokio::fs::read_to_string(path)
            .await
            .map_err(|error| configuration(format!("NATS nkey seed file {}: {error}", path.display())))?;
        let seed = seed.trim();
        if seed.is_empty() {
            return Err(configuration(format!("NATS nkey seed file {} is empty", path.display())));
        }
        options = options.nkey(seed.to_owned());
        auth = format!("nkey seed file {}", path.display());
    }

    if let Some(path) = &connection.tls_ca_file {
        readable(path, "TLS CA file").await?;
        options = options.add_root_certificates(path.clone());
    }
    match (&connection.tls_cert_file, &connection.tls_key_file) {
        (Some(cert), Some(key)) => {
            readable(cert, "TLS client certificate file").await?;
            readable(key, "TLS client key file").await?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        (None, None) => {}
        _ => return Err(configuration("NATS tlsCertFile and tlsKeyFile must be set together".into())),
    }
    if connection.tls_required {
        options = options.require_tls(true);
    }
    Ok((options, auth))
}

async fn readable(path: &Path, what: &str) -> Result<(), SinkError> {
    tokio::fs::read(path)
        .await
        .map(|_| ())
        .map_err(|error| configuration(format!("NATS {what} {}: {error}", path.display())))
}

fn log_event(event: Event) {
    match event {
        Event::Connected => tracing::info!(target: "kfp_operator::nats", "connected to NATS"),
        Event::Disconnected => {
            tracing::warn!(target: "kfp_operator::nats", "disconnected from NATS; reconnecting")
        }
        // Repeated on every failed reconnect attempt; `Disconnected` already said so.
        Event::ClientError(error) => {
            tracing::debug!(target: "kfp_operator::nats", %error, "NATS client error")
        }
        other => tracing::warn!(target: "kfp_operator::nats", event = %other, "NATS connection event"),
    }
}

/// `url` with any `user:password@` replaced by `***@`, for messages.
fn redact(url: &str) -> String {
    url.split(',')
        .map(|part| {
            let part = part.trim();
            let (scheme, rest) = part.split_once("://").map_or(("", part), |(scheme, rest)| (scheme, rest));
            let (authority, path) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
            let authority = match authority.rsplit_once('@') {
                Some((_, host)) => format!("***@{host}"),
                None => authority.to_owned(),
            };
            if scheme.is_empty() {
                format!("{authority}{path}")
            } else {
                format!("{scheme}://{authority}{path}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials_in_urls() {
        assert_eq!(redact("nats://u:p@127.0.0.1:4222"), "nats://***@127.0.0.1:4222");
        assert_eq!(redact("nats://a:4222, tls://t@b:4222"), "nats://a:4222,tls://***@b:4222");
        assert_eq!(redact("127.0.0.1:4222"), "127.0.0.1:4222");
    }

    #[test]
    fn urls_are_checked() {
        assert_eq!(parse_servers("nats://a:1,b:2").unwrap().len(), 2);
        assert!(matches!(parse_servers(" , "), Err(SinkError::Configuration { .. })));
        assert!(matches!(parse_servers("http://a:1"), Err(SinkError::Configuration { .. })));
    }
}
