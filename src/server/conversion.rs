//! The conversion webhook: `POST /convert` over the webhook's HTTPS listener takes a
//! `ConversionReview` (v1) and converts each object with [`crate::api::conversion::convert`].
//! Whatever goes wrong (a body that does not decode, an unknown version, an object that cannot
//! convert) is answered with a failed review whose message names the object and field.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use crate::api::conversion::{ConversionError, Defaults, convert};

const REVIEW_API_VERSION: &str = "apiextensions.k8s.io/v1";

/// Why a review failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("not a ConversionReview: {0}")]
    Undecodable(String),
    #[error("ConversionReview has no {0}")]
    Missing(&'static str),
    #[error("object {index} of {count}: {source}")]
    Object { index: usize, count: usize, source: ConversionError },
}

impl ReviewError {
    /// A stable name for the kind of failure, for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Undecodable(_) => "undecodable-review",
            Self::Missing(_) => "incomplete-review",
            Self::Object { source, .. } => source.category(),
        }
    }
}

/// The `/convert` route.
pub fn router(defaults: Defaults) -> Router {
    Router::new().route("/convert", post(handle)).with_state(Arc::new(defaults))
}

/// The `response` of a review for `request_body`.
pub fn review(request_body: &[u8], defaults: &Defaults) -> Value {
    let request: Result<Value, _> = serde_json::from_slice(request_body);
    let uid = request
        .as_ref()
        .ok()
        .and_then(|r| r.pointer("/request/uid"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let response = match request
        .map_err(|e| ReviewError::Undecodable(e.to_string()))
        .and_then(|r| converted(&r, defaults))
    {
        Ok(objects) => json!({"uid": uid, "convertedObjects": objects, "result": {"status": "Success"}}),
        Err(error) => {
            tracing::info!(category = error.category(), %error, "conversion refused");
            json!({"uid": uid, "convertedObjects": [], "result": {"status": "Failure", "message": error.to_string()}})
        }
    };
    json!({"apiVersion": REVIEW_API_VERSION, "kind": "ConversionReview", "response": response})
}

fn converted(review: &Value, defaults: &Defaults) -> Result<Vec<Value>, ReviewError> {
    let request = review.get("request").filter(|r| r.is_object()).ok_or(ReviewError::Missing("request"))?;
    let desired = request
        .get("desiredAPIVersion")
        .and_then(Value::as_str)
        .ok_or(ReviewError::Missing("request.desiredAPIVersion"))?;
    let objects =
        request.get("objects").and_then(Value::as_array).ok_or(ReviewError::Missing("request.objects"))?;
    let count = objects.len();
    objects
        .iter()
        .enumerate()
        .map(|(index, object)| {
            convert(object.clone(), desired, defaults).map_err(|source| ReviewError::Object {
                index,
                count,
                source,
            })
        })
        .collect()
}

async fn handle(State(defaults): State<Arc<Defaults>>, body: Bytes) -> axum::Json<Value> {
    let started = Instant::now();
    let response = review(&body, &defaults);
    tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, "conversion review answered");
    axum::Json(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_review_converts_each_object() {
        let body = json!({"apiVersion": REVIEW_API_VERSION, "kind": "ConversionReview", "request": {
            "uid": "u-1", "desiredAPIVersion": "pipelines.kubeflow.org/v1beta1",
            "objects": [{"apiVersion": "pipelines.kubeflow.org/v1alpha5", "kind": "Experiment",
                         "metadata": {"name": "e", "namespace": "ns"}, "spec": {"description": "d"}}]}});
        let answer = review(body.to_string().as_bytes(), &Defaults::default());
        assert_eq!(answer["response"]["uid"], "u-1");
        assert_eq!(answer["response"]["result"]["status"], "Success");
        assert_eq!(answer["response"]["convertedObjects"][0]["apiVersion"], "pipelines.kubeflow.org/v1beta1");
    }

    #[test]
    fn a_bad_object_fails_the_review_naming_it() {
        let body = json!({"request": {"uid": "u-2", "desiredAPIVersion": "pipelines.kubeflow.org/v1alpha5",
            "objects": [{"apiVersion": "pipelines.kubeflow.org/v1beta1", "kind": "Pipeline",
                         "metadata": {"name": "p", "namespace": "ns"}, "spec": {"image": ["x"]}}]}});
        let answer = review(body.to_string().as_bytes(), &Defaults::default());
        assert_eq!(answer["response"]["uid"], "u-2");
        assert_eq!(answer["response"]["result"]["status"], "Failure");
        let message = answer["response"]["result"]["message"].as_str().unwrap();
        assert!(message.contains("Pipeline ns/p (v1beta1)") && message.contains("spec.image"), "{message}");
    }

    proptest! {
        #[test]
        fn random_bodies_get_a_reasoned_answer(body in prop::collection::vec(any::<u8>(), 0..200)) {
            let answer = review(&body, &Defaults::default());
            prop_assert_eq!(&answer["response"]["result"]["status"], "Failure");
            prop_assert!(!answer["response"]["result"]["message"].as_str().unwrap_or_default().is_empty());
        }
    }
}
