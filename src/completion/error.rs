//! Why recording a completion did not finish: the completion path's one error enum.

use crate::api::NamespacedName;

/// Why recording a completion did not finish; the completion is then not acknowledged, and
/// comes again.
#[derive(Debug, thiserror::Error)]
pub enum CompletionError {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    /// The trigger engine's index of RunConfigurations has not finished its first listing.
    #[error("the RunConfiguration index is still loading; the completion is not recorded yet")]
    IndexLoading,
    /// Another writer kept changing the RunConfiguration between our read and our write.
    #[error("RunConfiguration {0} kept changing while recording its latest run")]
    KeptChanging(NamespacedName),
}
