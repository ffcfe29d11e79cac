//! A provider service on loopback that speaks the provider API and records every request body,
//! for tests that check what a real provider service would receive (it outlives operator
//! processes, so a restart's repeated uploads show).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use serde_json::{Value, json};

/// One request the service received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: &'static str,
    pub kind: String,
    pub body: Option<Value>,
}

#[derive(Clone, Default)]
pub struct RecordingProvider {
    requests: Arc<Mutex<Vec<Request>>>,
    pub url: String,
}

impl RecordingProvider {
    /// Serves on a free port of 127.0.0.1 for as long as the calling runtime lives.
    pub async fn start() -> Self {
        let mut provider = Self::default();
        let app = Router::new()
            .route("/resource/{kind}", post(create))
            .route("/resource/{kind}/{id}", put(update).delete(delete))
            .with_state(provider.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        provider.url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        provider
    }

    pub fn requests(&self, method: &str, kind: &str) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == method && r.kind == kind)
            .cloned()
            .collect()
    }

    /// The bodies of every create and update of `kind`, in order.
    pub fn uploads(&self, kind: &str) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.kind == kind && r.body.is_some())
            .filter_map(|r| r.body.clone())
            .collect()
    }

    fn record(&self, method: &'static str, kind: String, body: Option<Value>) {
        self.requests.lock().unwrap().push(Request { method, kind, body });
    }
}

fn name_of(kind: &str, body: &Value) -> String {
    let name = if kind == "pipeline" { &body["pipelineDefinition"]["name"] } else { &body["name"] };
    name.as_str().unwrap_or("unnamed").to_owned()
}

async fn create(State(state): State<RecordingProvider>, Path(kind): Path<String>, body: String) -> Response {
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"providerError": "not JSON"}))).into_response();
    };
    let id = name_of(&kind, &body);
    state.record("POST", kind, Some(body));
    (StatusCode::CREATED, axum::Json(json!({ "id": id }))).into_response()
}

async fn update(
    State(state): State<RecordingProvider>,
    Path((kind, id)): Path<(String, String)>,
    body: String,
) -> Response {
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"providerError": "not JSON"}))).into_response();
    };
    state.record("PUT", kind, Some(body));
    (StatusCode::OK, axum::Json(json!({ "id": id }))).into_response()
}

async fn delete(
    State(state): State<RecordingProvider>,
    Path((kind, _id)): Path<(String, String)>,
) -> Response {
    state.record("DELETE", kind, None);
    (StatusCode::OK, axum::Json(json!({}))).into_response()
}
