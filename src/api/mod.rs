//! The custom resources of group `pipelines.kubeflow.org`: the stored version `v1beta1` (at the
//! top), the served `v1alpha5` and `v1alpha6` and the conversion between them, their common
//! types and the version hashing. Pure: nothing here talks to a cluster.

pub mod common;
pub mod conditions;
pub mod conversion;
pub mod crd;
pub mod duration;
pub mod experiment;
pub mod filter;
pub mod hash;
pub mod join;
pub mod labels;
pub mod pipeline;
pub mod provider;
pub mod run;
pub mod run_configuration;
pub mod run_schedule;
mod schema;
pub mod v1alpha5;
pub mod v1alpha6;

pub use common::{
    Artifact, ArtifactPath, NamedValue, NamespacedName, OutputArtifact, ParseError, PipelineIdentifier,
    ProviderAndId, Status,
};
pub use experiment::{Experiment, ExperimentSpec};
pub use pipeline::{Pipeline, PipelineFramework, PipelineSpec};
pub use provider::{Framework, Patch, PatchType, Provider, ProviderSpec, ProviderType};
pub use run::{
    CompletionState, Dependencies, ObservedVersion, Parameter, Run, RunConfigurationRef, RunReference,
    RunSpec, RunStatus, ValueFrom,
};
pub use run_configuration::{
    ConcurrencyPolicy, ConditionVerdict, Join, JoinDependency, JoinStatus, LatestRuns, OnChangeType,
    PendingRun, RunConfiguration, RunConfigurationSpec, RunConfigurationStatus, Schedule, TriggerCondition,
    TriggeredRunReference, Triggers, TriggersStatus,
};
pub use run_schedule::{RunSchedule, RunScheduleSpec};

/// The API group of every kind.
pub const GROUP: &str = "pipelines.kubeflow.org";
/// The stored version, and the hub of conversion.
pub const VERSION: &str = "v1beta1";
/// The finalizer on provider-synchronised resources.
pub const FINALIZER: &str = "finalizer.pipelines.kubeflow.org";

#[cfg(test)]
mod round_trip_tests;
