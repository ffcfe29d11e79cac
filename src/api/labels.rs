//! Label keys that carry a run's trigger and owning RunConfiguration (as the reference's).

pub const RUN_CONFIGURATION: &str = "pipelines.kubeflow.org/runconfiguration.name";
pub const TRIGGER_TYPE: &str = "pipelines.kubeflow.org/trigger-type";
pub const TRIGGER_SOURCE: &str = "pipelines.kubeflow.org/trigger-source";
pub const TRIGGER_SOURCE_NAMESPACE: &str = "pipelines.kubeflow.org/trigger-source-namespace";
