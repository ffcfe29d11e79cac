//! The trigger engine's evaluation of one RunConfiguration: from its spec and status and what
//! was observed (its pipeline version and the RunConfigurations it references), the refreshed
//! dependency map and conditions, the resolved parameters, and the triggers that fire, with the
//! Runs they create. Pure: the reconciler and the completion fan-out both call it, so both make
//! the same Runs with the same names.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::dependencies::{dependency_map, referenced_run_configurations, resolve_parameters};
use super::{
    ActiveRun, CrossNamespacePolicy, DecisionInput, DependencyGraph, Trigger, check_reference,
    cycle_suppressed, decide,
};
use crate::api::conditions::{
    DEPENDENCIES_RESOLVED, DEPENDENCY_CYCLE, TRIGGERS, new_condition, set_condition,
};
use crate::api::{
    NamedValue, NamespacedName, Parameter, Run, RunConfiguration, RunConfigurationStatus, RunReference,
    RunSpec,
};

/// The Run a trigger creates: the template with resolved parameters, owned by the RC.
pub fn triggered_run(
    rc: &RunConfiguration,
    name: String,
    labels: BTreeMap<String, String>,
    values: &[NamedValue],
) -> Run {
    let spec = RunSpec {
        parameters: values.iter().map(|v| Parameter::literal(&v.name, &v.value)).collect(),
        ..rc.spec.run.clone()
    };
    Run {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: rc.namespace(),
            labels: Some(labels),
            owner_references: rc.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

/// What was fetched for one evaluation: the pipeline version to observe and each referenced
/// RunConfiguration (qualified) with what was found.
pub struct Observed {
    /// When it was observed.
    pub now: jiff::Timestamp,
    /// The RunConfiguration's Runs that have not finished (only looked up for a
    /// `concurrencyPolicy` other than `Allow`).
    pub active_runs: Vec<ActiveRun>,
    pub pipeline_version: String,
    /// Why there is no pipeline version to run (reason, message), when there is none.
    pub pipeline_problem: Option<(&'static str, String)>,
    pub dependencies: BTreeMap<NamespacedName, Option<Arc<RunConfiguration>>>,
}

/// The trigger engine's verdict on one RunConfiguration.
pub struct Evaluation {
    /// The new status, except `Synchronized` and `Ready`, which depend on the schedules.
    pub status: RunConfigurationStatus,
    /// The Runs to create.
    pub fire: Vec<Trigger>,
    /// The Runs to stop first (`concurrencyPolicy: Replace`).
    pub stop: Vec<String>,
    /// When to evaluate again though nothing changed (a join's reset).
    pub requeue_at: Option<jiff::Timestamp>,
    /// The parameter values of the Runs and RunSchedules.
    pub values: Vec<NamedValue>,
    /// Why the spec cannot be acted upon at all.
    pub invalid_spec: Option<String>,
    /// Why the dependencies are not resolved (reason, message).
    pub unresolved: Option<(&'static str, String)>,
}

/// Validates `rc` (artifact filters, cycles, the cross-namespace policy), refreshes its
/// dependency map and conditions from `observed`, resolves its parameters and decides which
/// triggers fire. Pure: the reconciler and the completion fan-out both call it.
pub fn evaluate(
    rc: &RunConfiguration,
    observed: &Observed,
    policy: CrossNamespacePolicy,
    graph: &DependencyGraph,
) -> Evaluation {
    let namespace = rc.namespace().unwrap_or_default();
    let name = NamespacedName::new(&namespace, rc.name_any());
    let generation = rc.meta().generation;
    let previous = rc.status.clone().unwrap_or_default();
    let mut status = RunConfigurationStatus {
        provider: Some(rc.spec.run.provider.clone()),
        observed_generation: generation,
        trigger_summary: rc.spec.triggers.summary(),
        ..previous
    };

    let trigger_problems = rc.spec.triggers.problems();
    let invalid_spec = crate::api::filter::invalid_artifact_filter(&rc.spec.run.artifacts)
        .or_else(|| trigger_problems.first().cloned());
    let trigger_dependencies = rc.spec.triggers.dependencies();
    let mut suppressed = cycle_suppressed(graph, &name, &trigger_dependencies);
    let cycle_condition = match graph.in_cycle(&name) {
        Some(cycle) => {
            let members = cycle.iter().map(ToString::to_string).collect::<Vec<_>>().join(" → ");
            let message = format!("part of a dependency cycle ({members}); no run fires along it");
            new_condition(DEPENDENCY_CYCLE, "True", "CycleDetected", &message, generation)
        }
        None => new_condition(DEPENDENCY_CYCLE, "False", "NoCycle", "no dependency cycle", generation),
    };
    set_condition(&mut status.conditions, cycle_condition);

    let mut denied = BTreeSet::new();
    let mut denial = None;
    for reference in referenced_run_configurations(&rc.spec.run.parameters, &trigger_dependencies) {
        let dependency = reference.qualified(&namespace);
        let annotations =
            observed.dependencies.get(&dependency).cloned().flatten().map(|d| d.annotations().clone());
        if let Err(message) = check_reference(policy, &name, &dependency, annotations.as_ref()) {
            suppressed.insert(reference.to_string());
            denied.insert(dependency);
            denial.get_or_insert(message);
        }
    }

    status.dependencies.pipeline.version = observed.pipeline_version.clone();
    status.dependencies.run_configurations = dependency_map(
        &rc.spec.run.parameters,
        &trigger_dependencies,
        &rc.spec.triggers.conditions,
        &namespace,
        |reference| {
            if denied.contains(reference) {
                return None;
            }
            latest_succeeded(observed, reference)
        },
    );
    let resolution = resolve_parameters(&rc.spec.run.parameters, &status.dependencies.run_configurations);
    let hold = resolution.is_err() || invalid_spec.is_some() || denial.is_some();
    let values = match &resolution {
        Ok(resolved) => resolved.values.clone(),
        Err(_) => rc
            .spec
            .run
            .parameters
            .iter()
            .filter(|p| p.value_from.is_none())
            .map(|p| NamedValue::new(&p.name, &p.value))
            .collect(),
    };
    let unresolved = match (&resolution, denial) {
        (_, Some(message)) => Some(("DependencyDenied", message)),
        (_, None) if observed.pipeline_problem.is_some() => observed.pipeline_problem.clone(),
        (Err(message), None) => Some((
            "UnresolvedParameters",
            missing_dependency(rc, &namespace, observed).unwrap_or_else(|| message.clone()),
        )),
        (Ok(_), None) => None,
    };
    let resolved_condition = match &unresolved {
        Some((reason, message)) => new_condition(DEPENDENCIES_RESOLVED, "False", reason, message, generation),
        None => new_condition(
            DEPENDENCIES_RESOLVED,
            "True",
            "Resolved",
            "all dependencies are resolved",
            generation,
        ),
    };
    set_condition(&mut status.conditions, resolved_condition);

    // A refused reference shows nothing of its dependency in `status.dependencies`, but its
    // trigger entry still records the dependency's latest run (without firing), so that a grant
    // given later does not replay a success from before it.
    let mut seen_by_triggers = status.dependencies.run_configurations.clone();
    for reference in &trigger_dependencies {
        let dependency = reference.qualified(&namespace);
        if denied.contains(&dependency)
            && let Some(latest) = latest_succeeded(observed, &dependency)
        {
            seen_by_triggers.insert(reference.to_string(), RunReference { artifacts: vec![], ..latest });
        }
    }
    let mut input = DecisionInput::new(&name, &rc.spec, &status, generation.unwrap_or_default())
        .held(hold)
        .suppressing(suppressed)
        .at(observed.now)
        .with_active(&observed.active_runs);
    let uid = rc.uid().unwrap_or_default();
    input.owner_uid = &uid;
    input.dependencies = &seen_by_triggers;
    let decision = decide(&input);
    let explained = super::explain::triggers_condition(
        &rc.spec.triggers,
        &decision,
        &observed.active_runs,
        trigger_problems.first().map(String::as_str),
    );
    status.triggers = decision.new_status;
    match explained {
        Some((state, reason, message)) => {
            set_condition(
                &mut status.conditions,
                new_condition(TRIGGERS, state, reason, &message, generation),
            );
        }
        None => status.conditions.retain(|c| c.type_ != TRIGGERS),
    }
    Evaluation {
        status,
        fire: decision.fire,
        stop: decision.stop,
        requeue_at: decision.requeue_at,
        values,
        invalid_spec,
        unresolved,
    }
}

fn latest_succeeded(observed: &Observed, dependency: &NamespacedName) -> Option<RunReference> {
    observed.dependencies.get(dependency)?.as_ref()?.status.as_ref()?.latest_runs.succeeded.clone()
}

/// Why the first required `valueFrom` parameter cannot resolve, when its RunConfiguration does
/// not exist or has not succeeded yet (a missing artifact is explained by the resolution).
fn missing_dependency(rc: &RunConfiguration, namespace: &str, observed: &Observed) -> Option<String> {
    rc.spec.run.parameters.iter().find_map(|parameter| {
        let reference = parameter.value_from.as_ref().map(|v| &v.run_configuration_ref)?;
        if reference.optional {
            return None;
        }
        let dependency = reference.name.qualified(namespace);
        match observed.dependencies.get(&dependency).cloned().flatten() {
            None => {
                Some(format!("parameter '{}': RunConfiguration {dependency} does not exist", parameter.name))
            }
            Some(found) if found.status.as_ref().and_then(|s| s.latest_runs.succeeded.as_ref()).is_none() => {
                Some(format!(
                    "parameter '{}': RunConfiguration {dependency} has no successful run yet",
                    parameter.name
                ))
            }
            Some(_) => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        PipelineIdentifier, RunConfigurationRef, RunConfigurationSpec, TriggeredRunReference, Triggers,
    };
    use crate::triggers::ALLOW_DEPENDANTS_FROM;

    fn rc(namespace: &str, name: &str, spec: RunConfigurationSpec) -> RunConfiguration {
        let mut rc = RunConfiguration::new(name, spec);
        rc.metadata.namespace = Some(namespace.into());
        rc.metadata.generation = Some(1);
        rc
    }

    fn triggered_by(dependency: &str) -> RunConfigurationSpec {
        RunConfigurationSpec {
            run: RunSpec { pipeline: PipelineIdentifier::new("p", "v1"), ..RunSpec::default() },
            triggers: Triggers {
                run_configurations: vec![dependency.parse().unwrap()],
                ..Triggers::default()
            },
        }
    }

    fn succeeded(mut rc: RunConfiguration, run: &str) -> Arc<RunConfiguration> {
        rc.status.get_or_insert_with(Default::default).latest_runs.succeeded =
            Some(RunReference { provider_id: run.into(), ..RunReference::default() });
        Arc::new(rc)
    }

    fn observed(dependency: &str, found: Option<Arc<RunConfiguration>>) -> Observed {
        Observed {
            now: jiff::Timestamp::UNIX_EPOCH,
            active_runs: vec![],
            pipeline_version: "v1".into(),
            pipeline_problem: None,
            dependencies: BTreeMap::from([(dependency.parse().unwrap(), found)]),
        }
    }

    fn evaluate_with(
        dependant: &RunConfiguration,
        observed: &Observed,
        policy: CrossNamespacePolicy,
    ) -> Evaluation {
        evaluate(dependant, observed, policy, &DependencyGraph::default())
    }

    #[test]
    fn a_refused_dependency_records_its_runs_so_a_later_grant_replays_nothing() {
        let mut dependant = rc("b", "consumer", triggered_by("a/shared"));
        dependant.status = Some(RunConfigurationStatus {
            triggers: crate::api::TriggersStatus {
                run_configurations: BTreeMap::from([("a/shared".into(), TriggeredRunReference::default())]),
                ..Default::default()
            },
            ..Default::default()
        });
        let shared = rc("a", "shared", RunConfigurationSpec::default());

        let refused = evaluate_with(
            &dependant,
            &observed("a/shared", Some(succeeded(shared.clone(), "run-1"))),
            CrossNamespacePolicy::Grant,
        );
        assert!(refused.fire.is_empty());
        assert_eq!(refused.unresolved.as_ref().map(|(reason, _)| *reason), Some("DependencyDenied"));
        assert_eq!(
            refused.status.dependencies.run_configurations["a/shared"],
            RunReference::default(),
            "nothing of it is shown"
        );
        assert_eq!(refused.status.triggers.run_configurations["a/shared"].provider_id, "run-1");

        dependant.status = Some(refused.status);
        let mut granted = shared;
        granted.metadata.annotations = Some(BTreeMap::from([(ALLOW_DEPENDANTS_FROM.into(), "b".into())]));
        let same_run = evaluate_with(
            &dependant,
            &observed("a/shared", Some(succeeded(granted.clone(), "run-1"))),
            CrossNamespacePolicy::Grant,
        );
        assert!(same_run.fire.is_empty(), "the grant replays nothing");
        assert!(same_run.unresolved.is_none());
        let next_run = evaluate_with(
            &dependant,
            &observed("a/shared", Some(succeeded(granted, "run-2"))),
            CrossNamespacePolicy::Grant,
        );
        assert_eq!(next_run.fire.len(), 1);
    }

    #[test]
    fn unresolved_parameters_name_the_missing_or_unfinished_dependency() {
        let mut spec = triggered_by("train");
        spec.run.parameters = vec![Parameter::from_run_configuration(
            "model",
            RunConfigurationRef::new("train".parse().unwrap(), "model"),
        )];
        let dependant = rc("ml", "serve", spec);
        let message = |found| {
            let evaluation =
                evaluate_with(&dependant, &observed("ml/train", found), CrossNamespacePolicy::Allow);
            evaluation.unresolved.map(|(reason, message)| format!("{reason}: {message}"))
        };
        assert_eq!(
            message(None).as_deref(),
            Some("UnresolvedParameters: parameter 'model': RunConfiguration ml/train does not exist")
        );
        let train = rc("ml", "train", RunConfigurationSpec::default());
        assert_eq!(
            message(Some(Arc::new(train.clone()))).as_deref(),
            Some(
                "UnresolvedParameters: parameter 'model': RunConfiguration ml/train has no successful run yet"
            )
        );
        assert_eq!(
            message(Some(succeeded(train, "run-1"))).as_deref(),
            Some(
                "UnresolvedParameters: parameter 'model': artifact 'model' not found in the latest successful run \
                 of dependency 'train'"
            )
        );
    }
}
