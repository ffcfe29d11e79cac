//! What a RunConfiguration reconcile should start: from the spec, `status.triggers` (what the
//! triggers last acted upon), the observed pipeline version and the dependency map, decide which
//! Runs fire and the new `status.triggers`. Pure.
//!
//! # Rules
//!
//! The stored status is the state machine; nothing else is consulted, so the decision is the
//! same on every retry until the new status is written, and every fired [`Trigger`] has a key
//! that names its Run deterministically ([`super::naming::run_name`]): a retried reconcile or a
//! redelivered completion hits `AlreadyExists` instead of creating a duplicate.
//!
//! - **`onChange: runSpec`** fires when `run_spec_version(spec.run)` differs from
//!   `status.triggers.runSpec.version`. The first evaluation counts (the stored version is
//!   empty), as in the reference. Key: `runspec-<version>-g<generation>` (the generation makes a
//!   revert to an earlier spec a new key).
//! - **`onChange: pipeline`** fires when the observed pipeline version is non-empty and differs
//!   from `status.triggers.pipeline.version`. An empty observed version (pipeline deleted or not
//!   ready) fires nothing and is not recorded, so the trigger keeps comparing against the last
//!   version it acted upon. Key: `pipeline-<version>-g<generation>-after-<previous version>`.
//! - The two `onChange` reasons coalesce: when both fire in one evaluation (typically the first
//!   one), a single Run fires, labelled `onChangeRunSpec` (the reference's precedence); both
//!   versions are recorded. The Runs would be identical otherwise. For the same reason, while
//!   `onChange` has both entries and the pipeline version is still unknown, the `runSpec` reason
//!   waits (unrecorded) for it instead of starting a Run that could only wait for the pipeline
//!   and then be followed by a second, identical `pipeline` Run.
//! - **`runConfigurations`**: per entry (keyed as written, like `status.dependencies`), let
//!   `current` be the dependency's `providerId` in the dependency map and `stored` the entry in
//!   `status.triggers.runConfigurations`:
//!   - no dependency-map entry yet (the map was not refreshed since the trigger was added):
//!     nothing fires, and the stored entry (if any) is kept as it is;
//!   - no stored entry (**the trigger was just added**, or the RunConfiguration is new):
//!     `current` is recorded **without firing**, even if the dependency already has a success.
//!     Adding a trigger never starts a Run by itself (the reference starts one);
//!   - `current` empty or equal to `stored`: nothing fires, `stored` is kept (a dependency that
//!     lost its success, e.g. was re-created, does not make its next success look new);
//!   - otherwise a new success: one `runConfiguration` Run fires, key `rc-<providerId>` (the
//!     completed run's id, so a redelivered or re-ordered completion maps to the same Run), and
//!     `current` is recorded.
//!
//!   Entries no longer in the spec are dropped and fire nothing (removing a trigger never starts
//!   a Run). Two entries naming the same dependency fire one Run (same key).
//! - **Hold**: while the caller holds firing (the parameters do not resolve), nothing fires; the
//!   would-be triggers are reported in [`Decision::held`] and their status is left as stored so
//!   that they fire once the hold is lifted. Newly added entries are still recorded (the
//!   acknowledgement never fires), which is why the caller must evaluate on every reconcile,
//!   held or not: otherwise a dependency's first success would look like a trigger addition.
//! - **Suppressed** entries (a cycle edge or a reference the cross-namespace policy refuses)
//!   record `current` without firing, so breaking the cycle or granting access later does not
//!   replay an old success.
//! - Removing an `onChange` entry leaves its stored version as it is (reference behaviour).
//! - **Conditions** (`triggers.conditions`): a new success of a dependency with a condition
//!   counts only if its artifact passes the filter ([`super::join::judge`]); one that does not is
//!   recorded as acted upon without firing, and the verdict goes to `status.triggers.conditions`.
//! - **`join`**: see [`super::join`]; one `join` Run when the expression becomes true.
//! - **`concurrencyPolicy`** is applied last, to everything that fires: see
//!   [`super::concurrency`].
//! - Several reasons may fire in one evaluation: one Run per reason (unlike the reference's one
//!   Run per reconcile), each with its own labels. Order: the `onChange` Run, then dependency
//!   Runs in `triggers.runConfigurations` order.

use std::collections::{BTreeMap, BTreeSet};

use super::graph::DependencyGraph;
pub use super::trigger::{ActiveRun, Decision, DecisionInput, Trigger, TriggerKind, sanitise_label_value};
use crate::api::hash::run_spec_version;
use crate::api::{
    JoinStatus, NamespacedName, ObservedVersion, OnChangeType, TriggeredRunReference, TriggersStatus,
};

/// The keys (as written) of `triggers` entries that are cycle edges into `rc` in `graph`.
pub fn cycle_suppressed(
    graph: &DependencyGraph,
    rc: &NamespacedName,
    triggers: &[NamespacedName],
) -> BTreeSet<String> {
    triggers
        .iter()
        .filter(|reference| graph.is_cycle_edge(&reference.qualified(&rc.namespace), rc))
        .map(ToString::to_string)
        .collect()
}

/// Evaluates the triggers; see the module docs for the rules.
pub fn decide(input: &DecisionInput<'_>) -> Decision {
    let stored = input.triggers;
    let mut decision = Decision {
        fire: Vec::new(),
        held: Vec::new(),
        new_status: TriggersStatus {
            pipeline: stored.pipeline.clone(),
            run_spec: stored.run_spec.clone(),
            run_configurations: BTreeMap::new(),
            join: JoinStatus::default(),
            conditions: stored
                .conditions
                .iter()
                .filter(|(key, _)| {
                    input.spec.triggers.conditions.iter().any(|c| c.run_configuration.to_string() == **key)
                })
                .map(|(key, verdict)| (key.clone(), verdict.clone()))
                .collect(),
            pending: stored.pending.clone(),
        },
        stop: Vec::new(),
        requeue_at: None,
    };
    decide_on_change(input, &mut decision);
    decide_run_configurations(input, &mut decision);
    if let Some(join) = &input.spec.triggers.join
        && let Ok(expression) = crate::api::join::parse_shared(&join.expression)
    {
        let mut verdicts = std::mem::take(&mut decision.new_status.conditions);
        let outcome = super::join::decide_join(input, &expression, &join.reset, &mut verdicts);
        decision.new_status.conditions = verdicts;
        decision.new_status.join = outcome.status;
        decision.requeue_at = outcome.reset_at;
        match outcome.trigger {
            Some(trigger) if outcome.held => decision.held.push(trigger),
            Some(trigger) => decision.fire.push(trigger),
            None => {}
        }
    }
    super::concurrency::apply(input, &mut decision);
    decision
}

fn decide_on_change(input: &DecisionInput<'_>, decision: &mut Decision) {
    let stored = input.triggers;
    let on_change = &input.spec.triggers.on_change;
    let pipeline_known = !input.pipeline_version.is_empty();

    let run_spec = on_change.contains(&OnChangeType::RunSpec).then(|| run_spec_version(&input.spec.run));
    let run_spec = run_spec.filter(|version| *version != stored.run_spec.version).map(|version| {
        let trigger = Trigger {
            kind: TriggerKind::OnChangeRunSpec,
            source: input.rc.name.clone(),
            source_namespace: input.rc.namespace.clone(),
            key: format!("runspec-{version}-g{}", input.generation),
        };
        (version, trigger)
    });
    let pipeline = (on_change.contains(&OnChangeType::Pipeline)
        && pipeline_known
        && input.pipeline_version != stored.pipeline.version)
        .then(|| Trigger {
            kind: TriggerKind::OnChangePipeline,
            source: input.spec.run.pipeline.name.clone(),
            source_namespace: input.rc.namespace.clone(),
            key: format!(
                "pipeline-{}-g{}-after-{}",
                input.pipeline_version, input.generation, stored.pipeline.version
            ),
        });
    let run_spec_waits_for_pipeline = on_change.contains(&OnChangeType::Pipeline) && !pipeline_known;

    if let Some((version, trigger)) = run_spec {
        if input.hold || run_spec_waits_for_pipeline {
            decision.held.push(trigger);
        } else {
            decision.new_status.run_spec = ObservedVersion::new(version);
            decision.fire.push(trigger);
        }
    }
    if let Some(trigger) = pipeline {
        if input.hold {
            decision.held.push(trigger);
        } else {
            decision.new_status.pipeline = ObservedVersion::new(input.pipeline_version);
            if !decision.fire.iter().any(|t| t.kind == TriggerKind::OnChangeRunSpec) {
                decision.fire.push(trigger);
            }
        }
    }
}

fn decide_run_configurations(input: &DecisionInput<'_>, decision: &mut Decision) {
    let stored = &input.triggers.run_configurations;
    for reference in &input.spec.triggers.run_configurations {
        let key = reference.to_string();
        if decision.new_status.run_configurations.contains_key(&key) {
            continue;
        }
        let previous = stored.get(&key);
        let Some(dependency) = input.dependencies.get(&key) else {
            if let Some(previous) = previous {
                decision.new_status.run_configurations.insert(key, previous.clone());
            }
            continue;
        };
        let current = &dependency.provider_id;
        let recorded = match previous {
            None => current.clone(),
            Some(previous) if current.is_empty() || *current == previous.provider_id => {
                previous.provider_id.clone()
            }
            Some(_) if input.suppressed.contains(&key) => current.clone(),
            Some(_) if !super::join::counts(input, &key, dependency, &mut decision.new_status.conditions) => {
                current.clone()
            }
            Some(previous) => {
                let trigger = Trigger {
                    kind: TriggerKind::RunConfiguration,
                    source: reference.name.clone(),
                    source_namespace: reference.namespace_or(&input.rc.namespace).to_owned(),
                    key: format!("rc-{current}"),
                };
                if input.hold {
                    decision.held.push(trigger);
                    previous.provider_id.clone()
                } else {
                    if !decision.fire.iter().any(|t| t.key == trigger.key) {
                        decision.fire.push(trigger);
                    }
                    current.clone()
                }
            }
        };
        decision.new_status.run_configurations.insert(key, TriggeredRunReference { provider_id: recorded });
    }
}

/// Scenarios ported from the reference's acceptance list (behaviour notes §11.2 F, §7.8) and
/// the recommended additional cases, as pure decisions:
///
/// Ported as in the reference:
/// - F5 unversioned pipeline with `onChange: [pipeline]`: a Run for the first and for the second
///   pipeline version; a Pipeline that appears after the RC triggers exactly one Run
///   (`pipeline_trigger_fires_per_version`).
/// - F9 removing a `runConfigurations` trigger removes its key from `status.triggers`
///   (`removing_a_dependency_trigger_drops_it_and_fires_nothing`).
/// - F10 `onChange: [runSpec]`, then a change to `spec.run` → one Run
///   (`run_spec_trigger_fires_on_creation_and_on_change`).
/// - F12 `updateRcTriggers`: pipeline, runSpec and runConfigurations recorded, fields of disabled
///   triggers retained (`status_is_updated_like_update_rc_triggers`).
/// - F12 `IdentifyRunTriggerReason`: runSpec, pipeline, and runConfiguration with
///   `namespace2/run-configuration-dependent` → source `run-configuration-dependent`, namespace
///   `namespace2`; nothing when nothing changed (`trigger_reasons_and_labels`).
/// - F12 the constructed Run carries `pipelines.kubeflow.org/runconfiguration.name`
///   (`trigger_reasons_and_labels`).
/// - F3 dependencies not met → no Runs (`unresolved_parameters_hold_everything`).
///
/// Ported, deliberately different:
/// - F8 an RC trigger on a dependency that already has a success: status records its providerId
///   as in the reference, but **no** Run fires on the addition (DESIGN §4: adding a trigger does
///   not start a run by itself); exactly one fires on the dependency's next success
///   (`adding_a_dependency_trigger_records_without_firing`).
/// - F9 removal fires nothing (the reference may start a Run; issue #538).
/// - §7.8 walkthrough: the first dependent Run fires when the base first succeeds, **with**
///   trigger labels (the reference's first Run has none), because the held evaluation already
///   recorded the entry (`tutorial_walkthrough`).
/// - F12 a dependency written without a namespace gets the RC's namespace as
///   `trigger-source-namespace` (the reference leaves the label out).
/// - Several reasons in one evaluation fire one Run per dependency reason (the reference: one
///   per reconcile, nondeterministic indicator) (`several_dependencies_fire_one_run_each`).
/// - A pipeline version that becomes empty fires nothing (the reference starts an unlabelled Run).
///
/// Recommended additional cases (§11.2, end): a redelivered or older completion fires no new Run
/// name; one Run per transition across retries (same decision, same names) — see
/// `redelivery_and_retries_are_idempotent`.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::labels;
    use crate::api::{Parameter, PipelineIdentifier, RunConfigurationSpec, RunReference, RunSpec, Triggers};
    use crate::triggers::naming;
    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn nn(s: &str) -> NamespacedName {
        s.parse().unwrap()
    }

    fn rc() -> NamespacedName {
        nn("ml/training")
    }

    fn spec(on_change: &[OnChangeType], dependencies: &[&str]) -> RunConfigurationSpec {
        RunConfigurationSpec {
            run: RunSpec {
                provider: nn("kfp/provider"),
                pipeline: PipelineIdentifier::new("penguin", ""),
                parameters: vec![Parameter::literal("epochs", "3")],
                ..RunSpec::default()
            },
            triggers: Triggers {
                on_change: on_change.to_vec(),
                run_configurations: dependencies.iter().map(|d| nn(d)).collect(),
                ..Triggers::default()
            },
        }
    }

    fn deps(entries: &[(&str, &str)]) -> BTreeMap<String, RunReference> {
        entries
            .iter()
            .map(|(k, id)| {
                ((*k).to_owned(), RunReference { provider_id: (*id).to_owned(), ..RunReference::default() })
            })
            .collect()
    }

    fn triggers(pipeline: &str, run_spec: &str, rcs: &[(&str, &str)]) -> TriggersStatus {
        TriggersStatus {
            pipeline: ObservedVersion::new(pipeline),
            run_spec: ObservedVersion::new(run_spec),
            run_configurations: rcs
                .iter()
                .map(|(k, id)| ((*k).to_owned(), TriggeredRunReference { provider_id: (*id).to_owned() }))
                .collect(),
            ..TriggersStatus::default()
        }
    }

    struct Case<'a> {
        spec: &'a RunConfigurationSpec,
        stored: TriggersStatus,
        pipeline: &'a str,
        dependencies: BTreeMap<String, RunReference>,
        hold: bool,
        suppressed: &'a [&'a str],
        now: Timestamp,
        active: Vec<ActiveRun>,
    }

    impl<'a> Case<'a> {
        fn new(spec: &'a RunConfigurationSpec) -> Self {
            Self {
                spec,
                stored: TriggersStatus::default(),
                pipeline: "",
                dependencies: BTreeMap::new(),
                hold: false,
                suppressed: &[],
                now: Timestamp::UNIX_EPOCH,
                active: Vec::new(),
            }
        }

        fn decide(&self) -> Decision {
            let rc = rc();
            let input = DecisionInput {
                rc: &rc,
                spec: self.spec,
                triggers: &self.stored,
                pipeline_version: self.pipeline,
                dependencies: &self.dependencies,
                generation: 7,
                hold: self.hold,
                suppressed: self.suppressed.iter().map(|s| (*s).to_owned()).collect(),
                now: self.now,
                active: &self.active,
                owner_uid: "0123456789",
            };
            decide(&input)
        }
    }

    fn kinds(decision: &Decision) -> Vec<(TriggerKind, &str)> {
        decision.fire.iter().map(|t| (t.kind, t.key.as_str())).collect()
    }

    #[test]
    fn run_spec_trigger_fires_on_creation_and_on_change() {
        let spec = spec(&[OnChangeType::RunSpec], &[]);
        let version = run_spec_version(&spec.run);
        let key = format!("runspec-{version}-g7");
        // First evaluation: the stored version is empty, so one Run (reference behaviour).
        let first = Case { pipeline: "v1", ..Case::new(&spec) }.decide();
        assert_eq!(kinds(&first), vec![(TriggerKind::OnChangeRunSpec, key.as_str())]);
        assert_eq!(first.new_status, triggers("", &version, &[]));
        // Unchanged: nothing.
        let again = Case { stored: first.new_status.clone(), pipeline: "v1", ..Case::new(&spec) }.decide();
        assert!(again.fire.is_empty());
        assert!(!again.status_changed(&first.new_status));
        // spec.run changed: one Run.
        let mut changed = spec.clone();
        changed.run.parameters = vec![Parameter::literal("epochs", "4")];
        let decision =
            Case { stored: first.new_status.clone(), pipeline: "v1", ..Case::new(&changed) }.decide();
        assert_eq!(decision.fire.len(), 1);
        assert_eq!(decision.new_status.run_spec.version, run_spec_version(&changed.run));
    }

    #[test]
    fn pipeline_trigger_fires_per_version() {
        let spec = spec(&[OnChangeType::Pipeline], &[]);
        // The Pipeline does not exist yet: nothing fires, nothing is recorded.
        let before = Case::new(&spec).decide();
        assert!(before.fire.is_empty() && before.held.is_empty());
        assert_eq!(before.new_status, TriggersStatus::default());
        // It appears: exactly one Run.
        let first = Case { pipeline: "v1", ..Case::new(&spec) }.decide();
        assert_eq!(kinds(&first), vec![(TriggerKind::OnChangePipeline, "pipeline-v1-g7-after-")]);
        assert_eq!(first.new_status, triggers("v1", "", &[]));
        assert!(
            Case { stored: first.new_status.clone(), pipeline: "v1", ..Case::new(&spec) }
                .decide()
                .fire
                .is_empty()
        );
        // A second version: a second Run.
        let second = Case { stored: first.new_status.clone(), pipeline: "v2", ..Case::new(&spec) }.decide();
        assert_eq!(kinds(&second), vec![(TriggerKind::OnChangePipeline, "pipeline-v2-g7-after-v1")]);
        assert_eq!(second.fire[0].source, "penguin");
        // Deleted (empty version): nothing fires and v2 stays recorded.
        let deleted = Case { stored: second.new_status.clone(), ..Case::new(&spec) }.decide();
        assert!(deleted.fire.is_empty());
        assert_eq!(deleted.new_status, second.new_status);
    }

    #[test]
    fn on_change_reasons_coalesce_into_one_run() {
        let spec = spec(&[OnChangeType::Pipeline, OnChangeType::RunSpec], &[]);
        let version = run_spec_version(&spec.run);
        // Pipeline not known yet: the runSpec reason waits for it.
        let waiting = Case::new(&spec).decide();
        assert!(waiting.fire.is_empty());
        assert_eq!(
            waiting.held.iter().map(|t| t.kind).collect::<Vec<_>>(),
            vec![TriggerKind::OnChangeRunSpec]
        );
        assert_eq!(waiting.new_status, TriggersStatus::default());
        // Known: one Run, labelled runSpec; both versions recorded.
        let first = Case { pipeline: "v1", ..Case::new(&spec) }.decide();
        assert_eq!(first.fire.len(), 1);
        assert_eq!(first.fire[0].kind, TriggerKind::OnChangeRunSpec);
        assert_eq!(first.new_status, triggers("v1", &version, &[]));
        // Later, only the pipeline changes: a pipeline Run.
        let later = Case { stored: first.new_status.clone(), pipeline: "v2", ..Case::new(&spec) }.decide();
        assert_eq!(
            later.fire.iter().map(|t| t.kind).collect::<Vec<_>>(),
            vec![TriggerKind::OnChangePipeline]
        );
    }

    /// (on_change, dependencies, stored, pipeline, dependency map, expected status)
    type UpdateCase<'a> =
        (Vec<OnChangeType>, Vec<&'a str>, TriggersStatus, &'a str, Vec<(&'a str, &'a str)>, TriggersStatus);

    #[test]
    fn status_is_updated_like_update_rc_triggers() {
        let cases: Vec<UpdateCase<'_>> = vec![
            // pipeline enabled: recorded; runSpec disabled: retained.
            (
                vec![OnChangeType::Pipeline],
                vec![],
                triggers("v0", "old", &[]),
                "v1",
                vec![],
                triggers("v1", "old", &[]),
            ),
            // runSpec enabled: recorded; pipeline disabled: retained even if it changed.
            (
                vec![OnChangeType::RunSpec],
                vec![],
                triggers("v0", "old", &[]),
                "v1",
                vec![],
                triggers("v0", &run_spec_version(&spec(&[], &[]).run), &[]),
            ),
            // runConfigurations rebuilt from the spec: kept, recorded, dropped.
            (
                vec![],
                vec!["a", "other/b"],
                triggers("v0", "old", &[("a", "1"), ("gone", "9")]),
                "v1",
                vec![("a", "2"), ("other/b", "5")],
                triggers("v0", "old", &[("a", "2"), ("other/b", "5")]),
            ),
        ];
        for (on_change, dependencies, stored, pipeline, dependency_map, expected) in cases {
            let spec = spec(&on_change, &dependencies);
            let decision =
                Case { stored, pipeline, dependencies: deps(&dependency_map), ..Case::new(&spec) }.decide();
            assert_eq!(decision.new_status, expected, "{on_change:?} {dependencies:?}");
        }
    }

    #[test]
    fn trigger_reasons_and_labels() {
        let with_run_spec = spec(&[OnChangeType::RunSpec], &[]);
        let with_pipeline = spec(&[OnChangeType::Pipeline], &[]);
        let with_dependency = spec(&[], &["namespace2/run-configuration-dependent", "local"]);
        let stored =
            triggers("v0", "old", &[("namespace2/run-configuration-dependent", "1"), ("local", "1")]);
        let label = |kind: &str, source: &str, namespace: &str| {
            BTreeMap::from([
                (labels::RUN_CONFIGURATION.to_owned(), "training".to_owned()),
                (labels::TRIGGER_TYPE.to_owned(), kind.to_owned()),
                (labels::TRIGGER_SOURCE.to_owned(), source.to_owned()),
                (labels::TRIGGER_SOURCE_NAMESPACE.to_owned(), namespace.to_owned()),
            ])
        };
        let cases = vec![
            (
                Case { stored: stored.clone(), pipeline: "v0", ..Case::new(&with_run_spec) },
                vec![label("onChangeRunSpec", "training", "ml")],
            ),
            (
                Case { stored: stored.clone(), pipeline: "v1", ..Case::new(&with_pipeline) },
                vec![label("onChangePipeline", "penguin", "ml")],
            ),
            (
                Case {
                    stored: stored.clone(),
                    dependencies: deps(&[("namespace2/run-configuration-dependent", "2"), ("local", "3")]),
                    ..Case::new(&with_dependency)
                },
                vec![
                    label("runConfiguration", "run-configuration-dependent", "namespace2"),
                    label("runConfiguration", "local", "ml"),
                ],
            ),
            // Nothing changed: nothing fires.
            (
                Case {
                    stored: stored.clone(),
                    pipeline: "v0",
                    dependencies: deps(&[("namespace2/run-configuration-dependent", "1"), ("local", "1")]),
                    ..Case::new(&with_dependency)
                },
                vec![],
            ),
        ];
        for (case, expected) in cases {
            let decision = case.decide();
            assert_eq!(decision.fire.iter().map(|t| t.labels("training")).collect::<Vec<_>>(), expected);
        }
    }

    #[test]
    fn labels_are_sanitised() {
        assert_eq!(sanitise_label_value("ns/name"), "ns_name");
        assert_eq!(sanitise_label_value("a.b:c d"), "abcd");
        assert_eq!(sanitise_label_value("_x_"), "x");
        assert_eq!(sanitise_label_value(&"y".repeat(100)).len(), 63);
        let trigger = Trigger {
            kind: TriggerKind::OnChangePipeline,
            source: "my.pipe/line".into(),
            source_namespace: String::new(),
            key: "k".into(),
        };
        assert_eq!(
            trigger.labels("rc"),
            BTreeMap::from([
                (labels::RUN_CONFIGURATION.to_owned(), "rc".to_owned()),
                (labels::TRIGGER_TYPE.to_owned(), "onChangePipeline".to_owned()),
                (labels::TRIGGER_SOURCE.to_owned(), "mypipe_line".to_owned()),
            ])
        );
        assert_eq!(serde_json::to_value(TriggerKind::RunConfiguration).unwrap(), "runConfiguration");
    }

    #[test]
    fn adding_a_dependency_trigger_records_without_firing() {
        let spec = spec(&[], &["base/examples"]);
        // Added while the dependency already succeeded: recorded, nothing fires.
        let added = Case { dependencies: deps(&[("base/examples", "run-1")]), ..Case::new(&spec) }.decide();
        assert!(added.fire.is_empty() && added.held.is_empty());
        assert_eq!(added.new_status, triggers("", "", &[("base/examples", "run-1")]));
        // The dependency's next success: exactly one Run.
        let next = Case {
            stored: added.new_status.clone(),
            dependencies: deps(&[("base/examples", "run-2")]),
            ..Case::new(&spec)
        }
        .decide();
        assert_eq!(kinds(&next), vec![(TriggerKind::RunConfiguration, "rc-run-2")]);
        assert_eq!(next.new_status, triggers("", "", &[("base/examples", "run-2")]));
        // Dependency map not refreshed yet after adding: nothing recorded until it is.
        let unrefreshed = Case::new(&spec).decide();
        assert_eq!(unrefreshed.new_status, TriggersStatus::default());
    }

    #[test]
    fn removing_a_dependency_trigger_drops_it_and_fires_nothing() {
        let spec = spec(&[], &["a"]);
        let stored = triggers("", "", &[("a", "1"), ("b", "1")]);
        let decision =
            Case { stored, dependencies: deps(&[("a", "1"), ("b", "2")]), ..Case::new(&spec) }.decide();
        assert!(decision.fire.is_empty());
        assert_eq!(decision.new_status, triggers("", "", &[("a", "1")]));
    }

    #[test]
    fn a_dependency_losing_its_success_keeps_the_recorded_run() {
        let spec = spec(&[], &["a"]);
        let stored = triggers("", "", &[("a", "1")]);
        let lost =
            Case { stored: stored.clone(), dependencies: deps(&[("a", "")]), ..Case::new(&spec) }.decide();
        assert!(lost.fire.is_empty());
        assert_eq!(lost.new_status, stored);
        let unobserved = Case { stored: stored.clone(), ..Case::new(&spec) }.decide();
        assert_eq!(unobserved.new_status, stored);
    }

    #[test]
    fn unresolved_parameters_hold_everything() {
        let spec = spec(&[OnChangeType::RunSpec, OnChangeType::Pipeline], &["a", "b"]);
        let stored = triggers("", "", &[("a", "1")]);
        let case = Case {
            stored: stored.clone(),
            pipeline: "v1",
            dependencies: deps(&[("a", "2"), ("b", "5")]),
            hold: true,
            ..Case::new(&spec)
        };
        let held = case.decide();
        assert!(held.fire.is_empty());
        assert_eq!(
            held.held.iter().map(|t| t.kind).collect::<Vec<_>>(),
            vec![TriggerKind::OnChangeRunSpec, TriggerKind::OnChangePipeline, TriggerKind::RunConfiguration]
        );
        // Only the newly added entry is recorded; the rest fires once the hold is lifted.
        assert_eq!(held.new_status, triggers("", "", &[("a", "1"), ("b", "5")]));
        let released = Case { stored: held.new_status, hold: false, ..case }.decide();
        assert_eq!(
            released.fire.iter().map(|t| t.kind).collect::<Vec<_>>(),
            vec![TriggerKind::OnChangeRunSpec, TriggerKind::RunConfiguration]
        );
        assert_eq!(released.fire[1].key, "rc-2");
    }

    #[test]
    fn suppressed_entries_record_without_firing() {
        let spec = spec(&[], &["a", "b"]);
        let stored = triggers("", "", &[("a", "1"), ("b", "1")]);
        let decision = Case {
            stored,
            dependencies: deps(&[("a", "2"), ("b", "2")]),
            suppressed: &["a"],
            ..Case::new(&spec)
        }
        .decide();
        assert_eq!(decision.fire.iter().map(|t| t.source.as_str()).collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(decision.new_status, triggers("", "", &[("a", "2"), ("b", "2")]));
    }

    #[test]
    fn cycle_edges_are_suppressed() {
        let mut graph = DependencyGraph::new();
        graph.insert(nn("ml/training"), [nn("ml/a"), nn("other/b")]);
        graph.insert(nn("ml/a"), [nn("ml/training")]);
        let suppressed = cycle_suppressed(&graph, &rc(), &[nn("a"), nn("other/b")]);
        assert_eq!(suppressed, BTreeSet::from(["a".to_owned()]));
    }

    #[test]
    fn several_dependencies_fire_one_run_each() {
        let spec = spec(&[OnChangeType::RunSpec], &["b", "a", "ml/a"]);
        let stored = triggers("", &run_spec_version(&spec.run), &[("a", "1"), ("b", "1"), ("ml/a", "1")]);
        let decision =
            Case { stored, dependencies: deps(&[("a", "2"), ("b", "3"), ("ml/a", "2")]), ..Case::new(&spec) }
                .decide();
        // `a` and `ml/a` are the same RunConfiguration: one Run. Order: spec order.
        assert_eq!(
            kinds(&decision),
            vec![(TriggerKind::RunConfiguration, "rc-3"), (TriggerKind::RunConfiguration, "rc-2")]
        );
    }

    #[test]
    fn tutorial_walkthrough() {
        // dependant-namespace/penguin-pipeline-training-rc depends on the base RC (trigger + valueFrom).
        let base = "base-namespace/penguin-pipeline-examples-rc";
        let spec = spec(&[], &[base]);
        let rc = nn("dependant-namespace/penguin-pipeline-training-rc");
        let evaluate =
            |stored: &TriggersStatus, dependencies: &BTreeMap<String, RunReference>, hold: bool| {
                decide(&DecisionInput {
                    rc: &rc,
                    spec: &spec,
                    triggers: stored,
                    pipeline_version: "v1",
                    dependencies,
                    generation: 1,
                    hold,
                    suppressed: BTreeSet::new(),
                    now: Timestamp::UNIX_EPOCH,
                    active: &[],
                    owner_uid: "",
                })
            };
        // 1. Base never succeeded: parameters unresolved (held), entry recorded empty, no Run.
        let step1 = evaluate(&TriggersStatus::default(), &deps(&[(base, "")]), true);
        assert!(step1.fire.is_empty() && step1.held.is_empty());
        assert_eq!(step1.new_status, triggers("", "", &[(base, "")]));
        // 2-4. Base succeeds; dependencies refreshed; parameters resolve: one labelled Run.
        let step4 = evaluate(&step1.new_status, &deps(&[(base, "run-1")]), false);
        assert_eq!(step4.fire.len(), 1);
        assert_eq!(
            step4.fire[0].labels(&rc.name),
            BTreeMap::from([
                (labels::RUN_CONFIGURATION.to_owned(), "penguin-pipeline-training-rc".to_owned()),
                (labels::TRIGGER_TYPE.to_owned(), "runConfiguration".to_owned()),
                (labels::TRIGGER_SOURCE.to_owned(), "penguin-pipeline-examples-rc".to_owned()),
                (labels::TRIGGER_SOURCE_NAMESPACE.to_owned(), "base-namespace".to_owned()),
            ])
        );
        assert_eq!(step4.fire[0].run_name(&rc), naming::run_name(&rc.to_string(), "rc-run-1"));
        // 6. Every later base completion: one more Run.
        let later = evaluate(&step4.new_status, &deps(&[(base, "run-2")]), false);
        assert_eq!(later.fire.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(), vec!["rc-run-2"]);
    }

    #[test]
    fn redelivery_and_retries_are_idempotent() {
        let spec = spec(&[OnChangeType::RunSpec], &["a"]);
        let stored = triggers("", "", &[("a", "1")]);
        let case = Case { stored, dependencies: deps(&[("a", "2")]), ..Case::new(&spec) };
        // A retry before the status write: the same triggers, hence the same Run names.
        let first = case.decide();
        let retry = case.decide();
        assert_eq!(first, retry);
        let names = |d: &Decision| d.fire.iter().map(|t| t.run_name(&rc())).collect::<Vec<_>>();
        assert_eq!(names(&first), names(&retry));
        // A redelivered completion (same providerId) after the write: nothing.
        let redelivered =
            Case { stored: first.new_status.clone(), dependencies: deps(&[("a", "2")]), ..Case::new(&spec) }
                .decide();
        assert!(redelivered.fire.is_empty());
        // A newer completion, then an older one flipping the id back (the ordering guard
        // upstream should prevent it): it maps to the Run that id already started.
        let newer =
            Case { stored: first.new_status.clone(), dependencies: deps(&[("a", "3")]), ..Case::new(&spec) }
                .decide();
        let older =
            Case { stored: newer.new_status.clone(), dependencies: deps(&[("a", "2")]), ..Case::new(&spec) }
                .decide();
        assert_eq!(
            names(&older),
            names(&first)
                .into_iter()
                .filter(|n| n == &naming::run_name("ml/training", "rc-2"))
                .collect::<Vec<_>>()
        );
        assert_eq!(names(&older).len(), 1);
    }

    fn joined(expression: &str, reset: &str) -> RunConfigurationSpec {
        let mut spec = spec(&[], &[]);
        spec.triggers.join = Some(crate::api::Join { expression: expression.into(), reset: reset.into() });
        spec
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    /// Runs `steps` (dependency map, time) through the decision, each on the status the previous
    /// one wrote; returns every decision.
    fn evolve(spec: &RunConfigurationSpec, steps: &[(&[(&str, &str)], i64)]) -> Vec<Decision> {
        let mut stored = TriggersStatus::default();
        let mut decisions = Vec::new();
        for (dependencies, now) in steps {
            let decision = Case {
                stored: stored.clone(),
                dependencies: deps(dependencies),
                now: at(*now),
                ..Case::new(spec)
            }
            .decide();
            stored = decision.new_status.clone();
            decisions.push(decision);
        }
        decisions
    }

    #[test]
    fn a_join_fires_once_when_all_its_dependencies_succeeded_with_the_latest_runs() {
        let spec = joined("a && b", "");
        let steps: &[(&[(&str, &str)], i64)] = &[
            (&[("a", ""), ("b", "")], 0),
            (&[("a", "a1"), ("b", "")], 10),
            (&[("a", "a2"), ("b", "")], 20),
            (&[("a", "a2"), ("b", "b1")], 30),
            (&[("a", "a2"), ("b", "b1")], 40),
        ];
        let decisions = evolve(&spec, steps);
        let fired: Vec<usize> = decisions.iter().map(|d| d.fire.len()).collect();
        assert_eq!(
            fired,
            [0, 0, 0, 1, 0],
            "A alone never fires; A, A, then B fire once; a repeat fires none"
        );
        let after_a2 = &decisions[2].new_status.join;
        assert_eq!(after_a2.dependencies["a"].satisfied_by, "a2", "the latest A satisfies");
        assert_eq!(after_a2.since, Some(Time(at(10))), "the partial join began with the first A");
        let fired = &decisions[3];
        assert_eq!(fired.fire[0].kind, TriggerKind::Join);
        let after = &fired.new_status.join;
        assert!(after.dependencies.values().all(|d| d.satisfied_by.is_empty()), "all unsatisfied again");
        assert_eq!(
            (after.last_run.as_str(), after.last_fired.clone()),
            (fired.fire[0].run_name(&rc()).as_str(), Some(Time(at(30))))
        );
        // The same successes in the other order name the same Run.
        let reversed = evolve(
            &spec,
            &[(&[("a", ""), ("b", "")], 0), (&[("a", ""), ("b", "b1")], 5), (&[("a", "a2"), ("b", "b1")], 6)],
        );
        assert_eq!(reversed[2].fire, fired.fire);
    }

    #[test]
    fn one_firing_is_one_run_whatever_later_successes_each_path_sees() {
        let spec = joined("a && b", "");
        let stored = evolve(&spec, &[(&[("a", ""), ("b", "")], 0), (&[("a", "a1"), ("b", "")], 1)])
            .pop()
            .unwrap()
            .new_status;
        // The fast path fires with b1; before that firing is recorded, a2 arrives too.
        let fast = Case {
            stored: stored.clone(),
            dependencies: deps(&[("a", "a1"), ("b", "b1")]),
            ..Case::new(&spec)
        }
        .decide();
        let late =
            Case { stored, dependencies: deps(&[("a", "a2"), ("b", "b1")]), ..Case::new(&spec) }.decide();
        assert_eq!(fast.fire, late.fire, "the same Run");
        assert_eq!(late.new_status.join.fired, 1);
        assert_eq!(fast.fire[0].key, "join-01234567-1");
    }

    #[test]
    fn writing_a_join_never_fires_and_an_or_fires_per_success() {
        let spec = joined("a || b", "");
        let decisions = evolve(
            &spec,
            &[
                (&[("a", "a0"), ("b", "b0")], 0),
                (&[("a", "a1"), ("b", "b0")], 1),
                (&[("a", "a1"), ("b", "b1")], 2),
                (&[("a", "a2"), ("b", "b2")], 3),
            ],
        );
        let fired: Vec<usize> = decisions.iter().map(|d| d.fire.len()).collect();
        assert_eq!(fired, [0, 1, 1, 1], "existing successes when the join is written do not fire");
        assert_ne!(decisions[1].fire[0].key, decisions[2].fire[0].key);
    }

    #[test]
    fn a_reset_clears_a_partial_join() {
        let spec = joined("a && b", "5s");
        let decisions = evolve(
            &spec,
            &[
                (&[("a", ""), ("b", "")], 0),
                (&[("a", "a1"), ("b", "")], 100),
                (&[("a", "a1"), ("b", "")], 104),
            ],
        );
        assert_eq!(decisions[1].requeue_at, Some(at(105)), "the reconciler comes back when the reset is due");
        assert_eq!(decisions[2].new_status.join.dependencies["a"].satisfied_by, "a1", "not yet");
        let mut stored = decisions[2].new_status.clone();
        let reset = Case {
            stored: stored.clone(),
            dependencies: deps(&[("a", "a1"), ("b", "b1")]),
            now: at(106),
            ..Case::new(&spec)
        }
        .decide();
        assert!(reset.fire.is_empty(), "B after the reset does not complete the old A");
        assert_eq!(reset.new_status.join.dependencies["b"].satisfied_by, "b1");
        assert_eq!(reset.new_status.join.dependencies["a"].satisfied_by, "");
        assert_eq!(reset.new_status.join.last_reset, Some(Time(at(106))));
        stored = reset.new_status;
        let completed = Case {
            stored,
            dependencies: deps(&[("a", "a2"), ("b", "b1")]),
            now: at(107),
            ..Case::new(&spec)
        }
        .decide();
        assert_eq!(completed.fire.len(), 1);
    }

    #[test]
    fn a_held_join_keeps_what_satisfied_it() {
        let spec = joined("a", "");
        let stored = evolve(&spec, &[(&[("a", "")], 0)]).remove(0).new_status;
        let held =
            Case { stored, dependencies: deps(&[("a", "a1")]), hold: true, ..Case::new(&spec) }.decide();
        assert!(held.fire.is_empty());
        assert_eq!(held.held.len(), 1);
        let lifted =
            Case { stored: held.new_status, dependencies: deps(&[("a", "a1")]), ..Case::new(&spec) }.decide();
        assert_eq!(lifted.fire, held.held);
    }

    fn with_metrics(run: &str, accuracy: f64) -> RunReference {
        let metadata =
            serde_json::Map::from_iter([("accuracy".to_owned(), serde_json::Value::from(accuracy))]);
        RunReference {
            provider_id: run.into(),
            artifacts: vec![crate::api::Artifact::new("metrics", "gs://m").with_metadata(metadata)],
            run_end_time: None,
        }
    }

    fn accurate(dependency: &str) -> crate::api::TriggerCondition {
        crate::api::TriggerCondition {
            run_configuration: nn(dependency),
            artifact: "metrics".into(),
            filter: "accuracy > 0.9".into(),
        }
    }

    #[test]
    fn a_condition_decides_whether_a_success_counts_and_says_why() {
        let mut spec = spec(&[], &["evaluate"]);
        spec.triggers.conditions = vec![accurate("evaluate")];
        let first = Case { dependencies: deps(&[("evaluate", "")]), ..Case::new(&spec) }.decide();
        let low = BTreeMap::from([("evaluate".to_owned(), with_metrics("r-85", 0.85))]);
        let rejected = Case { stored: first.new_status, dependencies: low, ..Case::new(&spec) }.decide();
        assert!(rejected.fire.is_empty());
        let verdict = &rejected.new_status.conditions["evaluate"];
        assert_eq!((verdict.provider_id.as_str(), verdict.passed), ("r-85", false));
        assert_eq!(rejected.new_status.run_configurations["evaluate"].provider_id, "r-85", "judged once");
        let high = BTreeMap::from([("evaluate".to_owned(), with_metrics("r-95", 0.95))]);
        let accepted = Case { stored: rejected.new_status, dependencies: high, ..Case::new(&spec) }.decide();
        assert_eq!(accepted.fire.len(), 1);
        assert!(accepted.new_status.conditions["evaluate"].passed);

        // The same condition gates a join.
        let mut spec = joined("evaluate", "");
        spec.triggers.conditions = vec![accurate("evaluate")];
        let first = Case { dependencies: deps(&[("evaluate", "")]), ..Case::new(&spec) }.decide();
        let low = BTreeMap::from([("evaluate".to_owned(), with_metrics("r-85", 0.85))]);
        let rejected = Case { stored: first.new_status, dependencies: low, ..Case::new(&spec) }.decide();
        assert!(
            rejected.fire.is_empty()
                && rejected.new_status.join.dependencies["evaluate"].satisfied_by.is_empty()
        );
    }

    fn running(name: &str) -> ActiveRun {
        ActiveRun { name: name.into(), ..ActiveRun::default() }
    }

    #[test]
    fn forbid_coalesces_triggers_into_one_pending_run() {
        let mut spec = spec(&[], &["dep"]);
        spec.triggers.concurrency_policy = crate::api::ConcurrencyPolicy::Forbid;
        let mut stored = Case { dependencies: deps(&[("dep", "")]), ..Case::new(&spec) }.decide().new_status;
        let first = Case { stored: stored.clone(), dependencies: deps(&[("dep", "d1")]), ..Case::new(&spec) }
            .decide();
        assert_eq!(first.fire.len(), 1, "nothing running: it fires");
        let current = first.fire[0].run_name(&rc());
        stored = first.new_status;
        // The repeat of the same evaluation, with its Run now running, is still that Run.
        let repeat = Case {
            stored: stored.clone(),
            dependencies: deps(&[("dep", "d1")]),
            active: vec![running(&current)],
            ..Case::new(&spec)
        }
        .decide();
        assert!(repeat.fire.is_empty() && repeat.new_status.pending.is_none());
        for (i, run) in ["d2", "d3", "d4", "d5", "d6"].iter().enumerate() {
            let decision = Case {
                stored: stored.clone(),
                dependencies: deps(&[("dep", run)]),
                active: vec![running(&current)],
                now: at(i as i64),
                ..Case::new(&spec)
            }
            .decide();
            assert!(decision.fire.is_empty(), "nothing starts while {current} runs");
            stored = decision.new_status;
        }
        let pending = stored.pending.clone().unwrap();
        assert_eq!(
            (pending.coalesced, pending.key.as_str(), pending.waiting_for.as_str()),
            (5, "rc-d6", current.as_str())
        );
        assert_eq!(pending.since, Some(Time(at(0))));
        let finished = Case { stored, dependencies: deps(&[("dep", "d6")]), ..Case::new(&spec) }.decide();
        assert_eq!(finished.fire.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(), ["rc-d6"]);
        assert!(finished.new_status.pending.is_none());
        let pending_run = finished.fire[0].run_name(&rc());
        let again = Case {
            stored: finished.new_status.clone(),
            dependencies: deps(&[("dep", "d6")]),
            active: vec![running(&pending_run)],
            ..Case::new(&spec)
        }
        .decide();
        assert!(again.fire.is_empty() && again.new_status.pending.is_none());
    }

    #[test]
    fn replace_stops_the_running_run_and_starts_one() {
        let mut spec = spec(&[], &["dep"]);
        spec.triggers.concurrency_policy = crate::api::ConcurrencyPolicy::Replace;
        let stored = Case { dependencies: deps(&[("dep", "d1")]), ..Case::new(&spec) }.decide().new_status;
        let replaced = Case {
            stored,
            dependencies: deps(&[("dep", "d2")]),
            active: vec![running("old"), ActiveRun { stopping: true, ..running("older") }],
            ..Case::new(&spec)
        }
        .decide();
        assert_eq!(replaced.stop, ["old"], "a Run being stopped is not stopped again");
        assert_eq!(replaced.fire.len(), 1);
    }
}
