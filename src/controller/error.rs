//! Why a reconcile did not finish, and what that asks of the operator: the error enum every
//! reconciler returns, its stable category (named in Events and metrics), and the taxonomy
//! (stalled / waiting / transient) that decides the requeue.

use std::time::Duration;

use crate::provider::ProviderError;
use crate::provider::definitions::DefinitionError;

/// What a failure asks of the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Only a change to the object itself can help (its spec, or an annotation): a Warning
    /// Event, and no retry until the object changes.
    Stalled,
    /// Waiting on another object (a Pipeline, a Provider, a RunConfiguration): the change of
    /// that object wakes the reconcile; until then it is looked at again after a long delay.
    Waiting,
    /// May pass by itself (the API server, the provider's service): retried on the backoff.
    Transient,
}

impl ErrorClass {
    /// The `result` label of a reconcile that ended with this class.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stalled => "stalled",
            Self::Waiting => "waiting",
            Self::Transient => "error",
        }
    }

    /// When to look again: `backoff` for a transient failure, `waiting` while waiting, never
    /// (until the object changes) when stalled.
    pub fn requeue_after(self, backoff: Duration, waiting: Duration) -> Option<Duration> {
        match self {
            Self::Transient => Some(backoff),
            Self::Waiting => Some(waiting),
            Self::Stalled => None,
        }
    }
}

/// A failure a reconcile has worked out and shown in the object's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub class: ErrorClass,
    /// A stable PascalCase name for Events and metrics.
    pub category: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(class: ErrorClass, category: &'static str, message: impl Into<String>) -> Self {
        Self { class, category, message: message.into() }
    }
}

/// Why a reconcile did not finish. The category is stable: it names Events and metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error("{0}")]
    Invalid(String),
    /// The API server refused a status write as invalid.
    #[error("{0}")]
    StatusRefused(String),
    /// A failure the reconcile has recorded in the object's status (and so needs no Event of
    /// its own).
    #[error("{}", .0.message)]
    Recorded(Failure),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "KubernetesApiError",
            Self::Provider(error) => error.category(),
            Self::Definition(_) => "InvalidDefinition",
            Self::Invalid(_) => "InvalidResource",
            Self::StatusRefused(_) => "StatusWriteRefused",
            Self::Recorded(failure) => failure.category,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Kube(_) | Self::StatusRefused(_) => ErrorClass::Transient,
            Self::Provider(error) => provider_class(error),
            Self::Definition(error) => definition_class(error),
            Self::Invalid(_) => ErrorClass::Stalled,
            Self::Recorded(failure) => failure.class,
        }
    }

    /// Whether the object's status (or an Event) already shows the failure.
    pub fn is_recorded(&self) -> bool {
        matches!(self, Self::Recorded(_) | Self::StatusRefused(_))
    }
}

/// A provider that timed out, could not be reached or failed may succeed later; one that
/// rejected the request or does not implement it will refuse it again.
pub fn provider_class(error: &ProviderError) -> ErrorClass {
    if error.is_transient() { ErrorClass::Transient } else { ErrorClass::Stalled }
}

/// A framework the provider lacks, or a patch of its framework that does not apply, waits for
/// the Provider to change; a pipeline version not known yet waits for the Pipeline.
pub fn definition_class(error: &DefinitionError) -> ErrorClass {
    match error {
        DefinitionError::UnsupportedFramework { .. }
        | DefinitionError::InvalidPatch { .. }
        | DefinitionError::UnknownPipelineVersion => ErrorClass::Waiting,
        DefinitionError::Serialize(_) => ErrorClass::Stalled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_decides_the_requeue() {
        let (backoff, waiting) = (Duration::from_secs(4), Duration::from_secs(300));
        assert_eq!(ErrorClass::Transient.requeue_after(backoff, waiting), Some(backoff));
        assert_eq!(ErrorClass::Waiting.requeue_after(backoff, waiting), Some(waiting));
        assert_eq!(ErrorClass::Stalled.requeue_after(backoff, waiting), None);
    }

    #[test]
    fn errors_are_classified() {
        let failed = ProviderError::Failed { message: "boom".into() };
        let rejected = ProviderError::Rejected { message: "bad".into() };
        assert_eq!(Error::from(failed).class(), ErrorClass::Transient);
        assert_eq!(Error::from(rejected).class(), ErrorClass::Stalled);
        let unsupported = DefinitionError::UnsupportedFramework {
            framework: "kfp".into(),
            provider: "ns/p".into(),
            supported: "tfx".into(),
        };
        assert_eq!(Error::from(unsupported).class(), ErrorClass::Waiting);
        let recorded = Error::Recorded(Failure::new(ErrorClass::Waiting, "WaitingForPipeline", "later"));
        assert_eq!((recorded.class(), recorded.category()), (ErrorClass::Waiting, "WaitingForPipeline"));
        assert!(recorded.is_recorded());
        assert_eq!(recorded.to_string(), "later");
    }
}
