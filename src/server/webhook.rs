//! The webhook server: the validating admission webhook, `POST /validate` over HTTPS takes an `AdmissionReview`
//! (v1), looks up what the rules need (a Pipeline's Provider) and answers with
//! [`crate::admission::validate`]'s verdict. An undecodable review is a 400 that says why.
//! The serving certificate is read from files (a mounted Secret) and read again when they change,
//! so a rotated certificate is picked up without a restart. `/convert` (see `conversion`) is
//! served on the same listener.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::admission::{Admission, Lookups, validate_with};
use crate::api::{NamespacedName, Provider, RunConfiguration};

/// Why the webhook cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the webhook certificate {path}: {message}")]
    Certificate { path: String, message: String },
    #[error("the webhook listener failed: {0}")]
    Listener(#[from] std::io::Error),
}

fn certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, Error> {
    let failed =
        |path: &Path, message: String| Error::Certificate { path: path.display().to_string(), message };
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| failed(cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(failed(cert_file, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| failed(key_file, e.to_string()))?;
    let provider = tokio_rustls::rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, key, &provider).map_err(|e| failed(key_file, e.to_string()))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The serving certificate, read again (at most every few seconds) when its files change.
#[derive(Debug)]
struct ReloadingCertificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: Mutex<(Arc<CertifiedKey>, Option<SystemTime>, Instant)>,
}

const RELOAD_CHECK: Duration = Duration::from_secs(5);

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.2.elapsed() >= RELOAD_CHECK {
            current.2 = Instant::now();
            let stamp = modified(&self.cert_file).max(modified(&self.key_file));
            if stamp != current.1 {
                match certified_key(&self.cert_file, &self.key_file) {
                    Ok(key) => {
                        tracing::info!(cert = %self.cert_file.display(), "webhook certificate reloaded");
                        *current = (Arc::new(key), stamp, Instant::now());
                    }
                    Err(error) => tracing::warn!(%error, "keeping the previous webhook certificate"),
                }
            }
        }
        Some(current.0.clone())
    }
}

/// The TLS side of the webhook, from PEM files.
pub fn tls_acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, Error> {
    let key = certified_key(cert_file, key_file)?;
    let stamp = modified(cert_file).max(modified(key_file));
    let resolver = ReloadingCertificate {
        cert_file: cert_file.to_owned(),
        key_file: key_file.to_owned(),
        current: Mutex::new((Arc::new(key), stamp, Instant::now())),
    };
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Certificate { path: cert_file.display().to_string(), message: e.to_string() })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The `/validate` route (`client` looks up Providers) and the `/convert` route.
pub fn router(client: kube::Client, conversion: crate::api::conversion::Defaults) -> Router {
    Router::new()
        .route("/validate", post(handle))
        .with_state(client)
        .merge(super::conversion::router(conversion))
}

async fn provider_of(client: &kube::Client, object: &serde_json::Value) -> Option<Provider> {
    let name: NamespacedName = object.pointer("/spec/provider")?.as_str()?.parse().ok()?;
    let api: kube::Api<Provider> = kube::Api::namespaced(client.clone(), &name.namespace);
    match api.get_opt(&name.name).await {
        Ok(found) => found,
        Err(error) => {
            tracing::warn!(%error, provider = %name, "admission: could not look up the provider; not checking it");
            None
        }
    }
}

/// The RunConfigurations a join names that do not exist; `None` when one could not be looked
/// up (an outage of the API server must not refuse a valid object).
async fn missing_join_dependencies(
    client: &kube::Client,
    object: &serde_json::Value,
) -> Option<std::collections::BTreeSet<NamespacedName>> {
    let lookups = crate::admission::join_dependencies(object).into_iter().map(|name| async move {
        let api: kube::Api<RunConfiguration> = kube::Api::namespaced(client.clone(), &name.namespace);
        (api.get_metadata_opt(&name.name).await, name)
    });
    let mut missing = std::collections::BTreeSet::new();
    for (found, name) in futures::future::join_all(lookups).await {
        match found {
            Ok(Some(_)) => {}
            Ok(None) => {
                missing.insert(name);
            }
            Err(error) => {
                tracing::warn!(%error, runconfiguration = %name, "admission: could not look up a join's dependency; not checking them");
                return None;
            }
        }
    }
    Some(missing)
}

async fn handle(State(client): State<kube::Client>, body: Bytes) -> Response {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(error) => {
            return (StatusCode::BAD_REQUEST, format!("not an AdmissionReview: {error}")).into_response();
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(error) => {
            return (StatusCode::BAD_REQUEST, format!("not an AdmissionReview request: {error}"))
                .into_response();
        }
    };
    let response = AdmissionResponse::from(&request);
    let to_value =
        |object: &Option<DynamicObject>| object.as_ref().and_then(|o| serde_json::to_value(o).ok());
    let (Some(object), old) = (to_value(&request.object), to_value(&request.old_object)) else {
        return axum::Json(response.into_review()).into_response();
    };
    let kind = request.kind.kind.as_str();
    let provider = if kind == "Pipeline" { provider_of(&client, &object).await } else { None };
    let missing_run_configurations =
        if kind == "RunConfiguration" { missing_join_dependencies(&client, &object).await } else { None };
    let lookups = Lookups { provider: provider.as_ref(), missing_run_configurations };
    let verdict = validate_with(Admission { kind, object: &object, old: old.as_ref() }, &lookups);
    let response = match verdict {
        Ok(()) => response,
        Err(problems) => {
            tracing::info!(kind, name = %request.name, ?problems, "admission refused");
            response.deny(problems.join("; "))
        }
    };
    axum::Json(response.into_review()).into_response()
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    shutdown: crate::shutdown::Shutdown,
) -> Result<(), Error> {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = shutdown.clone() => return Ok(()),
        };
        let (acceptor, service) = (acceptor.clone(), TowerToHyperService::new(router.clone()));
        tokio::spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(error) => {
                    tracing::debug!(%peer, %error, "webhook TLS handshake failed");
                    return;
                }
            };
            if let Err(error) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await
            {
                tracing::debug!(%peer, %error, "webhook connection ended");
            }
        });
    }
}
