//! The admin HTTP server: `/livez` (the process is serving), `/readyz` (the operator's
//! dependencies are ready) and `/metrics` (Prometheus/OpenMetrics text); the admission webhook
//! lives in [`webhook`].

pub mod conversion;
pub mod webhook;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

use crate::controller::watch::WatchHealth;

const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin endpoints report on.
pub struct AdminState {
    ready: AtomicBool,
    registry: Registry,
    watches: OnceLock<Arc<WatchHealth>>,
}

impl AdminState {
    pub fn new(registry: Registry) -> Arc<Self> {
        Arc::new(Self { ready: AtomicBool::new(false), registry, watches: OnceLock::new() })
    }

    /// Makes readiness also depend on every watch of `watches` being in step.
    pub fn watch_health(&self, watches: Arc<WatchHealth>) {
        let _ = self.watches.set(watches);
    }

    /// Why the operator is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<String> {
        if !self.is_ready() {
            return Some("starting".into());
        }
        self.watches.get().and_then(|watches| watches.not_ready_reason())
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// The admin routes, without binding a port (tests call it with `oneshot`).
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    match state.not_ready_reason() {
        None => (StatusCode::OK, "ready".to_owned()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}")),
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let mut body = String::new();
    match encode(&mut body, &state.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response(),
        Err(error) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("could not encode metrics: {error}")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_path(state: Arc<AdminState>, path: &str) -> (StatusCode, String) {
        let response = router(state).oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readiness_follows_the_state() {
        let state = AdminState::new(Registry::default());
        assert_eq!(get_path(state.clone(), "/livez").await.0, StatusCode::OK);
        assert_eq!(get_path(state.clone(), "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        state.set_ready(true);
        assert_eq!(get_path(state.clone(), "/readyz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_watch_out_of_step_makes_the_operator_unready_and_says_which() {
        let state = AdminState::new(Registry::default());
        let watches = WatchHealth::new();
        state.watch_health(watches.clone());
        state.set_ready(true);
        let listing = watches.register("Runs in namespace ml (reconciled)".into());
        let (status, body) = get_path(state.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not ready: the watch of Runs in namespace ml (reconciled) is listing");
        drop(listing);
        assert_eq!(get_path(state.clone(), "/readyz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text() {
        let (status, body) = get_path(AdminState::new(Registry::default()), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.ends_with("# EOF\n"), "{body}");
    }
}
