//! The RunConfiguration kind: a template for runs and the triggers that start them
//! (schedules, pipeline or run-spec changes, and completions of other RunConfigurations).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::NamespacedName;
use super::run::{Dependencies, ObservedVersion, RunReference, RunSpec};

/// A run template and the triggers that start runs from it.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pipelines.kubeflow.org",
    version = "v1beta1",
    kind = "RunConfiguration",
    doc = "A run template and the triggers (schedules, changes, completions of other RunConfigurations) that start runs from it.",
    plural = "runconfigurations",
    namespaced,
    status = "RunConfigurationStatus",
    shortname = "mlrc",
    category = "kfp",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Synchronized","type":"string","jsonPath":".status.conditions[?(@.type==\"Synchronized\")].reason"}"#,
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".status.provider"}"#,
    printcolumn = r#"{"name":"LatestSucceeded","type":"string","jsonPath":".status.latestRuns.succeeded.providerId"}"#,
    printcolumn = r#"{"name":"Triggers","type":"string","jsonPath":".status.triggerSummary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RunConfigurationSpec {
    /// The template of every run this RunConfiguration starts.
    #[serde(default)]
    pub run: RunSpec,
    /// What starts a run.
    #[serde(default, skip_serializing_if = "Triggers::is_empty")]
    pub triggers: Triggers,
}

/// What starts a run of a RunConfiguration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Triggers {
    /// Cron schedules; each becomes one owned RunSchedule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<Schedule>,
    /// Start a run when the referenced pipeline's version (`pipeline`) or `spec.run` (`runSpec`) changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_change: Vec<OnChangeType>,
    /// Start a run whenever one of these RunConfigurations (`name` or `namespace/name`) records a
    /// new successful run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub run_configurations: Vec<NamespacedName>,
}

impl Triggers {
    pub fn is_empty(&self) -> bool {
        self.schedules.is_empty() && self.on_change.is_empty() && self.run_configurations.is_empty()
    }

    /// Every trigger in one line, for `kubectl get`: `onChange: pipeline, runSpec;
    /// runConfigurations: ml/train; schedules: 0 * * * *`.
    pub fn summary(&self) -> String {
        let join = |items: Vec<String>| items.join(", ");
        let on_change = self.on_change.iter().map(|c| c.as_str().to_owned()).collect();
        let dependencies = self.run_configurations.iter().map(ToString::to_string).collect();
        let schedules = self.schedules.iter().map(|s| s.cron_expression.clone()).collect();
        [
            ("onChange", join(on_change)),
            ("runConfigurations", join(dependencies)),
            ("schedules", join(schedules)),
        ]
        .into_iter()
        .filter(|(_, items)| !items.is_empty())
        .map(|(kind, items)| format!("{kind}: {items}"))
        .collect::<Vec<_>>()
        .join("; ")
    }
}

/// A change that starts a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum OnChangeType {
    /// The referenced pipeline's version changed.
    #[serde(rename = "pipeline")]
    Pipeline,
    /// `spec.run` changed.
    #[serde(rename = "runSpec")]
    RunSpec,
}

impl OnChangeType {
    /// The name as written in a manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pipeline => "pipeline",
            Self::RunSpec => "runSpec",
        }
    }
}

/// A cron schedule with an optional active window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// A 5-field cron expression, or 6 fields with leading seconds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cron_expression: String,
    /// No runs start before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// No runs start after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
}

impl Schedule {
    pub fn cron(expression: impl Into<String>) -> Self {
        Self { cron_expression: expression.into(), start_time: None, end_time: None }
    }
}

/// The observed state of a RunConfiguration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunConfigurationStatus {
    /// The Provider of `spec.run` at the last full reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<NamespacedName>,
    /// The `metadata.generation` last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: `Synchronized`, `Ready`, `DependenciesResolved`, `DependencyCycle`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::conditions")]
    pub conditions: Vec<Condition>,
    /// The latest runs started from this RunConfiguration, by outcome.
    #[serde(default, skip_serializing_if = "LatestRuns::is_empty")]
    pub latest_runs: LatestRuns,
    /// The pipeline version and the referenced RunConfigurations' runs observed.
    #[serde(default, skip_serializing_if = "Dependencies::is_empty")]
    pub dependencies: Dependencies,
    /// What the triggers last acted upon.
    #[serde(default, skip_serializing_if = "TriggersStatus::is_empty")]
    pub triggers: TriggersStatus,
    /// Every trigger of the spec in one line (the `kubectl get` Triggers column).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trigger_summary: String,
}

/// The latest runs of a RunConfiguration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LatestRuns {
    /// The latest successful run and its artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<RunReference>,
}

impl LatestRuns {
    pub fn is_empty(&self) -> bool {
        self.succeeded.is_none()
    }
}

/// What each trigger last acted upon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggersStatus {
    /// The pipeline version at the last `onChange: pipeline` evaluation.
    #[serde(default, skip_serializing_if = "ObservedVersion::is_empty")]
    pub pipeline: ObservedVersion,
    /// The `spec.run` version at the last `onChange: runSpec` evaluation.
    #[serde(default, skip_serializing_if = "ObservedVersion::is_empty")]
    pub run_spec: ObservedVersion,
    /// Per `triggers.runConfigurations` entry: the dependency's run that was last acted upon.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub run_configurations: BTreeMap<String, TriggeredRunReference>,
}

impl TriggersStatus {
    pub fn is_empty(&self) -> bool {
        self.pipeline.is_empty() && self.run_spec.is_empty() && self.run_configurations.is_empty()
    }
}

/// The provider id of a dependency's run that a trigger acted upon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggeredRunReference {
    /// The run's id on the provider.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_every_kind_of_trigger() {
        let triggers = Triggers {
            schedules: vec![Schedule::cron("0 * * * *")],
            on_change: vec![OnChangeType::Pipeline, OnChangeType::RunSpec],
            run_configurations: vec!["ml/train".parse().unwrap(), "evaluate".parse().unwrap()],
        };
        assert_eq!(
            triggers.summary(),
            "onChange: pipeline, runSpec; runConfigurations: ml/train, evaluate; schedules: 0 * * * *"
        );
        let only_dependencies =
            Triggers { run_configurations: vec!["ml/train".parse().unwrap()], ..Triggers::default() };
        assert_eq!(only_dependencies.summary(), "runConfigurations: ml/train");
        assert_eq!(Triggers::default().summary(), "");
    }
}
