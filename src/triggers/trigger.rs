//! The vocabulary of a trigger evaluation: why a Run starts ([`TriggerKind`], [`Trigger`], with
//! its labels and deterministic name), what an evaluation looks at ([`DecisionInput`],
//! [`ActiveRun`]) and what it decides ([`Decision`]). Pure; [`super::decision`] and the rules it
//! delegates to ([`super::join`], [`super::concurrency`]) share it.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::naming;
use crate::api::labels;
use crate::api::{
    NamespacedName, RunConfigurationSpec, RunConfigurationStatus, RunReference, TriggersStatus,
};

/// Why a Run was started by a RunConfiguration trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TriggerKind {
    /// The referenced pipeline's version changed.
    #[serde(rename = "onChangePipeline")]
    OnChangePipeline,
    /// `spec.run` changed (or the RunConfiguration was created).
    #[serde(rename = "onChangeRunSpec")]
    OnChangeRunSpec,
    /// A RunConfiguration it depends on recorded a new successful run.
    #[serde(rename = "runConfiguration")]
    RunConfiguration,
    /// The join expression became true.
    #[serde(rename = "join")]
    Join,
}

impl TriggerKind {
    /// The `pipelines.kubeflow.org/trigger-type` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnChangePipeline => "onChangePipeline",
            Self::OnChangeRunSpec => "onChangeRunSpec",
            Self::RunConfiguration => "runConfiguration",
            Self::Join => "join",
        }
    }

    /// The kind a `pipelines.kubeflow.org/trigger-type` value names.
    pub fn parse(value: &str) -> Option<Self> {
        [Self::OnChangePipeline, Self::OnChangeRunSpec, Self::RunConfiguration, Self::Join]
            .into_iter()
            .find(|kind| kind.as_str() == value)
    }
}

/// One reason to start a Run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// Which trigger fired.
    pub kind: TriggerKind,
    /// The RunConfiguration (`onChangeRunSpec`), the pipeline (`onChangePipeline`) or the
    /// dependency (`runConfiguration`) that caused it, by name.
    pub source: String,
    /// The source's namespace (a dependency written without one is in the RunConfiguration's).
    pub source_namespace: String,
    /// Identifies this firing; the Run name derives from it.
    pub key: String,
}

impl Trigger {
    /// The Run's labels: `pipelines.kubeflow.org/runconfiguration.name` = `rc_name` (the bare
    /// name; the Run lives in the RunConfiguration's namespace) and the trigger indicator
    /// (`trigger-type`, `trigger-source`, `trigger-source-namespace`, only non-empty values),
    /// sanitised with [`sanitise_label_value`].
    pub fn labels(&self, rc_name: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (labels::RUN_CONFIGURATION.to_owned(), rc_name.to_owned()),
            (labels::TRIGGER_TYPE.to_owned(), self.kind.as_str().to_owned()),
        ]);
        for (key, value) in [
            (labels::TRIGGER_SOURCE, &self.source),
            (labels::TRIGGER_SOURCE_NAMESPACE, &self.source_namespace),
        ] {
            let value = sanitise_label_value(value);
            if !value.is_empty() {
                labels.insert(key.to_owned(), value);
            }
        }
        labels
    }

    /// The deterministic name of the Run this trigger starts for the qualified `rc`.
    pub fn run_name(&self, rc: &NamespacedName) -> String {
        naming::run_name(&rc.to_string(), &self.key)
    }
}

/// The reference's label sanitising (replace `/` with `_`, then drop every character outside
/// `[a-zA-Z0-9_-]`), then, so the value is always a valid label value, cut to 63 characters and
/// trimmed of leading and trailing `_`/`-` (a no-op for every name the reference handles).
pub fn sanitise_label_value(value: &str) -> String {
    let kept: String = value
        .replace('/', "_")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(63)
        .collect();
    kept.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned()
}

/// Everything a trigger evaluation looks at.
#[derive(Debug, Clone)]
pub struct DecisionInput<'a> {
    /// The RunConfiguration, qualified (`namespace/name`).
    pub rc: &'a NamespacedName,
    /// Its spec.
    pub spec: &'a RunConfigurationSpec,
    /// `status.triggers`: what the triggers last acted upon.
    pub triggers: &'a TriggersStatus,
    /// `status.dependencies.pipeline.version`: the pipeline version observed now.
    pub pipeline_version: &'a str,
    /// `status.dependencies.runConfigurations`, refreshed before the evaluation.
    pub dependencies: &'a BTreeMap<String, RunReference>,
    /// `metadata.generation`.
    pub generation: i64,
    /// Fire nothing now (the parameters do not resolve); see the module docs.
    pub hold: bool,
    /// `triggers.runConfigurations` and join keys (as written) along which nothing may fire.
    pub suppressed: BTreeSet<String>,
    /// The time of the evaluation (satisfaction times, resets, pending since).
    pub now: Timestamp,
    /// The Runs of this RunConfiguration that have not finished (for `concurrencyPolicy`).
    pub active: &'a [ActiveRun],
    /// The RunConfiguration's uid (part of a join's Run names).
    pub owner_uid: &'a str,
}

/// A Run started by a RunConfiguration that has not finished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActiveRun {
    pub name: String,
    /// It is being stopped (deleted); `problem` says why that is not done, if known.
    pub stopping: bool,
    pub problem: String,
}

impl<'a> DecisionInput<'a> {
    /// The input for `rc` from its spec, status and generation; not held, nothing suppressed.
    pub fn new(
        rc: &'a NamespacedName,
        spec: &'a RunConfigurationSpec,
        status: &'a RunConfigurationStatus,
        generation: i64,
    ) -> Self {
        Self {
            rc,
            spec,
            triggers: &status.triggers,
            pipeline_version: &status.dependencies.pipeline.version,
            dependencies: &status.dependencies.run_configurations,
            generation,
            hold: false,
            suppressed: BTreeSet::new(),
            now: Timestamp::UNIX_EPOCH,
            active: &[],
            owner_uid: "",
        }
    }

    /// Sets [`Self::now`].
    pub fn at(mut self, now: Timestamp) -> Self {
        self.now = now;
        self
    }

    /// Sets [`Self::active`].
    pub fn with_active(mut self, active: &'a [ActiveRun]) -> Self {
        self.active = active;
        self
    }

    /// Sets [`Self::hold`].
    pub fn held(mut self, hold: bool) -> Self {
        self.hold = hold;
        self
    }

    /// Adds `keys` to [`Self::suppressed`].
    pub fn suppressing(mut self, keys: impl IntoIterator<Item = String>) -> Self {
        self.suppressed.extend(keys);
        self
    }
}

/// The outcome of a trigger evaluation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// The Runs to create, one per trigger, in order.
    pub fire: Vec<Trigger>,
    /// What would have fired but was held; these fire on a later evaluation.
    pub held: Vec<Trigger>,
    /// The `status.triggers` to write once the Runs exist.
    pub new_status: TriggersStatus,
    /// Runs to stop before the new one starts (`concurrencyPolicy: Replace`), by name.
    pub stop: Vec<String>,
    /// When the state changes with no event to wake the RunConfiguration (a join's reset).
    pub requeue_at: Option<Timestamp>,
}

impl Decision {
    /// Whether `new_status` differs from the stored one (a status write is due).
    pub fn status_changed(&self, stored: &TriggersStatus) -> bool {
        self.new_status != *stored
    }
}
