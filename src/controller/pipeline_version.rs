//! The pipeline version a Run or RunConfiguration observes: the pinned one, or the version the
//! referenced Pipeline has synchronised. Each caller decides what to do while there is none.

use kube::api::Api;

use super::Context;
use crate::api::conditions::SyncState;
use crate::api::{Pipeline, PipelineIdentifier};

/// What the referenced Pipeline offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservedPipeline {
    /// Pinned in the spec, or synchronised by the Pipeline.
    Version(String),
    /// No such Pipeline (or no name).
    Missing,
    /// The Pipeline exists but has no synchronised version now (it is in this state).
    Waiting(SyncState),
}

pub async fn observe_pipeline(
    ctx: &Context,
    namespace: &str,
    pipeline: &PipelineIdentifier,
) -> Result<ObservedPipeline, kube::Error> {
    if !pipeline.version.is_empty() {
        return Ok(ObservedPipeline::Version(pipeline.version.clone()));
    }
    if pipeline.name.is_empty() {
        return Ok(ObservedPipeline::Missing);
    }
    let api: Api<Pipeline> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(found) = api.get_opt(&pipeline.name).await? else {
        return Ok(ObservedPipeline::Missing);
    };
    let status = found.status.unwrap_or_default();
    Ok(match SyncState::of(&status) {
        SyncState::Succeeded if !status.version.is_empty() => ObservedPipeline::Version(status.version),
        state => ObservedPipeline::Waiting(state),
    })
}
