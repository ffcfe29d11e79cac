//! Controller metrics, registered in the operator's registry: reconciliations by kind and
//! result, failures by kind and error category, and Runs started by triggers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: String,
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub kind: String,
    pub category: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    /// `onChangePipeline`, `onChangeRunSpec` or `runConfiguration`.
    pub trigger: String,
    /// `completion` (the fan-out on a completion) or `reconcile`.
    pub path: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderCallLabels {
    /// `pipeline`, `run`, `runschedule` or `experiment`.
    pub kind: String,
    /// `create`, `update` or `delete`.
    pub operation: String,
    /// `ok` or the failure's category.
    pub result: String,
}

/// The controllers' counters.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub reconciliations: Family<ReconcileLabels, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub triggered_runs: Family<TriggerLabels, Counter>,
    pub provider_calls: Family<ProviderCallLabels, Counter>,
}

impl Metrics {
    /// Creates the counters and registers them under `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "reconciliations",
            "Reconciliations by kind and result",
            metrics.reconciliations.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Failed reconciliations by kind and error category",
            metrics.failures.clone(),
        );
        registry.register(
            "triggered_runs",
            "Runs created by RunConfiguration triggers, by trigger and by the path that created them",
            metrics.triggered_runs.clone(),
        );
        registry.register(
            "provider_calls",
            "Calls to providers by resource kind, operation and result (ok or the failure's category)",
            metrics.provider_calls.clone(),
        );
        metrics
    }

    pub fn provider_call(&self, kind: &str, operation: &str, result: &str) {
        self.provider_calls
            .get_or_create(&ProviderCallLabels {
                kind: kind.into(),
                operation: operation.into(),
                result: result.into(),
            })
            .inc();
    }

    /// How many `operation` calls on `kind` ended with `result`.
    pub fn provider_calls(&self, kind: &str, operation: &str, result: &str) -> u64 {
        self.provider_calls
            .get_or_create(&ProviderCallLabels {
                kind: kind.into(),
                operation: operation.into(),
                result: result.into(),
            })
            .get()
    }

    /// How many reconciles of `kind` failed with `category`.
    pub fn failures_of(&self, kind: &str, category: &str) -> u64 {
        self.failures.get_or_create(&FailureLabels { kind: kind.into(), category: category.into() }).get()
    }

    pub fn triggered(&self, trigger: &str, path: &str, runs: u64) {
        self.triggered_runs
            .get_or_create(&TriggerLabels { trigger: trigger.into(), path: path.into() })
            .inc_by(runs);
    }

    /// Counts a reconcile of `kind` that ended with `result`: `ok`, `error` (transient),
    /// `waiting` or `stalled`.
    pub fn reconciled(&self, kind: &str, result: &str) {
        self.reconciliations
            .get_or_create(&ReconcileLabels { kind: kind.into(), result: result.into() })
            .inc();
    }

    pub fn failed(&self, kind: &str, category: &str) {
        self.failures.get_or_create(&FailureLabels { kind: kind.into(), category: category.into() }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_exposed() {
        let mut registry = Registry::with_prefix("kfp_operator");
        let metrics = Metrics::register(&mut registry);
        metrics.reconciled("pipeline", "ok");
        metrics.failed("run", "ProviderTimeout");
        metrics.triggered("runConfiguration", "completion", 1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"kfp_operator_reconciliations_total{kind="pipeline",result="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kfp_operator_reconcile_failures_total{kind="run",category="ProviderTimeout"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kfp_operator_triggered_runs_total{trigger="runConfiguration",path="completion"} 1"#
            ),
            "{text}"
        );
    }
}
