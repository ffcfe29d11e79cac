//! The provider system: the `ProviderApi` every ML platform adapter implements, the resource
//! definitions sent to it, and the implementations (`stub`, `http`).

pub mod compile;
pub mod definitions;
pub mod http;
pub mod stub;

use std::fmt;

use futures::future::BoxFuture;
use serde_json::Value;

/// The kinds of provider-side resource, as they appear in the provider API's paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Pipeline,
    Run,
    RunSchedule,
    Experiment,
}

impl ResourceKind {
    /// The path segment and definition name: `pipeline`, `run`, `runschedule`, `experiment`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pipeline => "pipeline",
            Self::Run => "run",
            Self::RunSchedule => "runschedule",
            Self::Experiment => "experiment",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong talking to a provider. The category is stable: it names Event reasons and
/// metric labels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider does not implement the operation (HTTP 501).
    #[error("the provider does not implement {operation}")]
    Unimplemented { operation: String },
    /// The provider rejected the request as malformed or invalid (HTTP 400/422).
    #[error("the provider rejected the request: {message}")]
    Rejected { message: String },
    /// The provider tried and failed (HTTP 500, or a provider error in the body).
    #[error("{message}")]
    Failed { message: String },
    /// No answer in time; the outcome is unknown.
    #[error("the provider did not answer within {seconds}s")]
    Timeout { seconds: u64 },
    /// The provider could not be reached, or answered something that is not the provider API.
    #[error("cannot reach the provider: {message}")]
    Unreachable { message: String },
}

impl ProviderError {
    /// A stable PascalCase name for Events and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Unimplemented { .. } => "ProviderUnimplemented",
            Self::Rejected { .. } => "ProviderRejected",
            Self::Failed { .. } => "ProviderFailed",
            Self::Timeout { .. } => "ProviderTimeout",
            Self::Unreachable { .. } => "ProviderUnreachable",
        }
    }

    /// Whether trying the same call again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Unreachable { .. } | Self::Failed { .. })
    }
}

/// The operations of a provider: create, update and delete provider-side resources from their
/// definitions (see [`definitions`]). Ids are the provider's.
pub trait ProviderApi: Send + Sync {
    /// Creates a resource and returns its provider id.
    fn create<'a>(
        &'a self,
        kind: ResourceKind,
        definition: &'a Value,
    ) -> BoxFuture<'a, Result<String, ProviderError>>;
    /// Updates the resource `id` and returns its (possibly new) id.
    fn update<'a>(
        &'a self,
        kind: ResourceKind,
        id: &'a str,
        definition: &'a Value,
    ) -> BoxFuture<'a, Result<String, ProviderError>>;
    /// Deletes the resource `id`. Deleting what does not exist succeeds.
    fn delete<'a>(&'a self, kind: ResourceKind, id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>>;
}
