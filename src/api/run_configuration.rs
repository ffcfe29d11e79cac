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
    /// Start one run when a boolean expression over RunConfigurations becomes true: each counts
    /// as satisfied once it has a new success since the expression last fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<Join>,
    /// Successes of dependencies (of `runConfigurations` or of the join) that count only when
    /// the metadata of one of their output artifacts passes a filter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<TriggerCondition>,
    /// What a trigger does while a Run this RunConfiguration started is still running: `Allow`
    /// (start another, the default), `Forbid` (start one more once it finished, however many
    /// triggers came meanwhile) or `Replace` (stop it on the provider and start a new one).
    #[serde(default, skip_serializing_if = "ConcurrencyPolicy::is_allow")]
    pub concurrency_policy: ConcurrencyPolicy,
}

/// A join: one run when an expression over dependencies becomes true.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Join {
    /// `&&`, `||` and parentheses over RunConfigurations (`name` or `namespace/name`), e.g.
    /// `ns-a/features && (ns-b/train-xgb || ns-b/train-lgbm)`.
    pub expression: String,
    /// Clears a partial join that did not complete: a duration from its first satisfied
    /// dependency (`30m`, `24h`) or a cron expression (`0 0 * * *`, cleared at each time it names).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reset: String,
}

/// A filter a dependency's success must pass to count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerCondition {
    /// The dependency (`name` or `namespace/name`), as written in `runConfigurations` or the join.
    pub run_configuration: NamespacedName,
    /// One of the dependency's declared output artifacts (its `spec.run.artifacts[].name`).
    pub artifact: String,
    /// A filter on that artifact's metadata, in the artifact filter grammar, e.g. `accuracy > 0.9`.
    pub filter: String,
}

/// What a trigger does while a Run started by the same RunConfiguration is still running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Start another Run.
    #[default]
    Allow,
    /// Start one Run once the running one finished, for every trigger that came meanwhile.
    Forbid,
    /// Stop the running Run on the provider and start a new one.
    Replace,
}

impl ConcurrencyPolicy {
    pub fn is_allow(&self) -> bool {
        *self == Self::Allow
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "Allow",
            Self::Forbid => "Forbid",
            Self::Replace => "Replace",
        }
    }
}

impl Triggers {
    pub fn is_empty(&self) -> bool {
        self.schedules.is_empty()
            && self.on_change.is_empty()
            && self.run_configurations.is_empty()
            && self.join.is_none()
            && self.conditions.is_empty()
            && self.concurrency_policy.is_allow()
    }

    /// The join's dependencies as written, when it parses.
    pub fn join_dependencies(&self) -> Vec<NamespacedName> {
        self.join
            .as_ref()
            .and_then(|join| super::join::parse_shared(&join.expression).ok())
            .map(|join| join.dependencies().cloned().collect())
            .unwrap_or_default()
    }

    /// Every RunConfiguration whose successes these triggers look at (`runConfigurations`, then
    /// the join's), as written, without duplicates.
    pub fn dependencies(&self) -> Vec<NamespacedName> {
        if self.join.is_none() {
            return self.run_configurations.clone();
        }
        let joined = self.join_dependencies();
        if self.run_configurations.is_empty() {
            return joined;
        }
        let mut all = self.run_configurations.clone();
        let mut seen: std::collections::HashSet<NamespacedName> = all.iter().cloned().collect();
        all.extend(joined.into_iter().filter(|d| seen.insert(d.clone())));
        all
    }

    /// What is wrong with the triggers themselves (a join that does not parse, a reset that is
    /// neither a duration nor a cron expression, a condition that does not parse or is on nothing
    /// the triggers depend on). Pure; admission refuses the same.
    pub fn problems(&self) -> Vec<String> {
        let triggers = self;
        let mut problems = Vec::new();
        if let Some(join) = &triggers.join {
            if let Err(error) = super::join::parse_shared(&join.expression) {
                problems.push(error.to_string());
            }
            if let Err(message) = super::join::reset_deadline(&join.reset, jiff::Timestamp::UNIX_EPOCH) {
                problems.push(message);
            }
        }
        let dependencies = if triggers.conditions.is_empty() { Vec::new() } else { triggers.dependencies() };
        for (index, condition) in triggers.conditions.iter().enumerate() {
            let at = format!("triggers.conditions[{index}]");
            if !dependencies.contains(&condition.run_configuration) {
                problems.push(format!(
                    "{at}: {} is neither in triggers.runConfigurations nor in triggers.join; a condition applies \
                     to a dependency, written the same way",
                    condition.run_configuration
                ));
            }
            if condition.artifact.is_empty() {
                problems
                    .push(format!("{at}: artifact is required (one of the dependency's declared outputs)"));
            }
            if let Err(error) = super::filter::parse(&condition.filter) {
                problems.push(format!("{at}: {error}"));
            }
            if triggers.conditions[..index].iter().any(|c| c.run_configuration == condition.run_configuration)
            {
                problems.push(format!("{at}: {} has a condition already", condition.run_configuration));
            }
        }
        problems
    }

    /// The condition on `dependency` (as written), if any.
    pub fn condition_on(&self, dependency: &NamespacedName) -> Option<&TriggerCondition> {
        self.conditions.iter().find(|c| c.run_configuration == *dependency)
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
        .chain(self.join.iter().map(|join| ("join", join.expression.clone())))
        .chain(
            (!self.concurrency_policy.is_allow())
                .then(|| ("concurrencyPolicy", self.concurrency_policy.as_str().to_owned())),
        )
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
    /// Conditions: `Synchronized`, `Ready`, `DependenciesResolved`, `DependencyCycle`, `Triggers`.
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
    /// The join's state: which dependencies are satisfied, by which run, since when.
    #[serde(default, skip_serializing_if = "JoinStatus::is_empty")]
    pub join: JoinStatus,
    /// Per dependency with a condition (as written): the verdict on its latest success.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub conditions: BTreeMap<String, ConditionVerdict>,
    /// The Run waiting for the running one to finish (`concurrencyPolicy: Forbid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingRun>,
}

impl TriggersStatus {
    pub fn is_empty(&self) -> bool {
        self.pipeline.is_empty()
            && self.run_spec.is_empty()
            && self.run_configurations.is_empty()
            && self.join.is_empty()
            && self.conditions.is_empty()
            && self.pending.is_none()
    }
}

/// The state of a join.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinStatus {
    /// Per dependency of the expression (as written).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dependencies: BTreeMap<String, JoinDependency>,
    /// When the current partial join began (its first satisfied dependency): the reset counts
    /// from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// The Run the join started last.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_run: String,
    /// When the join last fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired: Option<Time>,
    /// When a partial join was last cleared by `reset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reset: Option<Time>,
    /// How many times the join fired; the next Run's name derives from it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fired: u64,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

impl JoinStatus {
    pub fn is_empty(&self) -> bool {
        self.dependencies.is_empty()
            && self.since.is_none()
            && self.last_run.is_empty()
            && self.last_fired.is_none()
            && self.last_reset.is_none()
            && self.fired == 0
    }
}

/// One dependency of a join.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinDependency {
    /// The dependency's latest success that was looked at (so it is never counted twice).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub seen: String,
    /// The success that satisfies it since the join last fired; empty while unsatisfied.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub satisfied_by: String,
    /// When it became satisfied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub satisfied_at: Option<Time>,
}

/// Whether a dependency's latest success passed its condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionVerdict {
    /// The run judged.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider_id: String,
    /// Whether it counts.
    #[serde(default)]
    pub passed: bool,
    /// Why, e.g. `metrics: accuracy > 0.9 is false (accuracy is 0.85)`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A Run to start once the running one finished (`concurrencyPolicy: Forbid`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingRun {
    /// The trigger that will start it (the latest of those coalesced).
    pub trigger_type: String,
    /// What caused it (a pipeline, a RunConfiguration, a dependency).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// The source's namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_namespace: String,
    /// Identifies the firing; the Run's name derives from it.
    pub key: String,
    /// How many triggers it stands for.
    pub coalesced: u32,
    /// The Run it waits for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub waiting_for: String,
    /// When the first of them came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
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
            ..Triggers::default()
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
