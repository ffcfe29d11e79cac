//! Admission: what the validating webhook refuses, so that `kubectl apply` says at once what is
//! wrong instead of a reconcile failing later. The 1.20 API server has no CEL, so rules that
//! span fields or objects live here. Pure: the webhook server looks up the Pipeline's Provider
//! and calls [`validate`].

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::{NamespacedName, Parameter, Pipeline, Provider, Run, RunConfiguration, RunSpec};

/// Environment variables the operator sets on provider services itself.
const RESERVED_ENV: [&str; 2] = ["PROVIDERNAME", "PIPELINEROOTSTORAGE"];
const RESERVED_ENV_PREFIX: &str = "PARAMETERS_";

/// The kinds the webhook validates.
pub const VALIDATED_KINDS: [&str; 4] = ["Pipeline", "Provider", "Run", "RunConfiguration"];

/// One admission request: the kind, the new object and, on update, the old one.
#[derive(Debug, Clone, Copy)]
pub struct Admission<'a> {
    pub kind: &'a str,
    pub object: &'a Value,
    pub old: Option<&'a Value>,
}

fn decode<K: DeserializeOwned>(kind: &str, value: &Value) -> Result<K, Vec<String>> {
    serde_json::from_value(value.clone()).map_err(|error| vec![format!("not a valid {kind}: {error}")])
}

/// Every reason to refuse the request (all of them, so one round trip fixes the manifest).
/// `provider` is the Provider a Pipeline names, when it exists. An update that leaves the spec
/// as it is (finalizers, labels, annotations) and anything being deleted always pass, so that a
/// rule tightened later can never block a deletion.
pub fn validate(admission: Admission<'_>, provider: Option<&Provider>) -> Result<(), Vec<String>> {
    validate_with(admission, &Lookups { provider, ..Lookups::default() })
}

/// What the webhook server looked up for the rules that span objects.
#[derive(Debug, Clone, Default)]
pub struct Lookups<'a> {
    /// The Provider a Pipeline names, when it exists.
    pub provider: Option<&'a Provider>,
    /// Of the RunConfigurations a join names (qualified), those that do not exist; `None` when
    /// they were not looked up (then they are not checked).
    pub missing_run_configurations: Option<BTreeSet<NamespacedName>>,
}

/// [`validate`] with everything the server looked up.
pub fn validate_with(admission: Admission<'_>, lookups: &Lookups<'_>) -> Result<(), Vec<String>> {
    let provider = lookups.provider;
    let deleting = admission.object.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
    let spec_unchanged = admission.old.is_some_and(|old| old.get("spec") == admission.object.get("spec"));
    if deleting || spec_unchanged {
        return Ok(());
    }
    let problems = match admission.kind {
        "RunConfiguration" => run_configuration(
            &decode(admission.kind, admission.object)?,
            lookups.missing_run_configurations.as_ref(),
        ),
        "Run" => {
            let old = admission.old.map(|old| decode::<Run>(admission.kind, old)).transpose()?;
            run(&decode(admission.kind, admission.object)?, old.as_ref())
        }
        "Pipeline" => pipeline(&decode(admission.kind, admission.object)?, provider),
        "Provider" => provider_spec(&decode(admission.kind, admission.object)?),
        _ => Vec::new(),
    };
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

fn parameters(parameters: &[Parameter], problems: &mut Vec<String>) {
    for parameter in parameters {
        if !parameter.value.is_empty() && parameter.value_from.is_some() {
            problems
                .push(format!("parameter {:?}: only one of value or valueFrom can be set", parameter.name));
        }
    }
    let mut seen = BTreeSet::new();
    for parameter in parameters {
        if !seen.insert(&parameter.name) {
            problems.push(format!("parameter {:?} is given more than once", parameter.name));
        }
    }
}

fn run_spec(spec: &RunSpec, problems: &mut Vec<String>) {
    parameters(&spec.parameters, problems);
    if let Some(message) = crate::api::filter::invalid_artifact_filter(&spec.artifacts) {
        problems.push(message);
    }
}

/// The RunConfigurations a RunConfiguration's join names, qualified: what the webhook server
/// looks up for [`Lookups::missing_run_configurations`].
pub fn join_dependencies(object: &Value) -> Vec<NamespacedName> {
    let Ok(rc) = serde_json::from_value::<RunConfiguration>(object.clone()) else {
        return Vec::new();
    };
    let namespace = rc.metadata.namespace.clone().unwrap_or_default();
    rc.spec.triggers.join_dependencies().iter().map(|d| d.qualified(&namespace)).collect()
}

fn run_configuration(rc: &RunConfiguration, missing: Option<&BTreeSet<NamespacedName>>) -> Vec<String> {
    let mut problems = Vec::new();
    run_spec(&rc.spec.run, &mut problems);
    let triggers = &rc.spec.triggers;
    let mut schedules = BTreeSet::new();
    for schedule in &triggers.schedules {
        let fields = schedule.cron_expression.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            problems.push(format!(
                "triggers.schedules: {:?} is not a cron expression (5 fields, or 6 with leading seconds)",
                schedule.cron_expression
            ));
        }
        let key = serde_json::to_string(schedule).unwrap_or_default();
        if !schedules.insert(key) {
            problems
                .push(format!("triggers.schedules: {:?} is given more than once", schedule.cron_expression));
        }
    }
    let mut on_change = BTreeSet::new();
    for entry in &triggers.on_change {
        if !on_change.insert(entry) {
            problems.push(format!("triggers.onChange: {entry:?} is given more than once"));
        }
    }
    let namespace = rc.metadata.namespace.clone().unwrap_or_default();
    let own = NamespacedName::new(&namespace, rc.metadata.name.clone().unwrap_or_default());
    if triggers.run_configurations.iter().any(|reference| reference.qualified(&namespace) == own) {
        problems.push("triggers.runConfigurations: a RunConfiguration cannot trigger itself".into());
    }
    problems.extend(triggers.problems());
    if let Some(join) = &triggers.join
        && let Ok(expression) = crate::api::join::parse(&join.expression)
    {
        for (dependency, column) in expression.dependencies_with_columns() {
            let qualified = dependency.qualified(&namespace);
            if qualified == own {
                problems.push(format!(
                    "triggers.join.expression {:?} at column {column}: a RunConfiguration cannot join on itself",
                    join.expression
                ));
            } else if missing.is_some_and(|missing| missing.contains(&qualified)) {
                problems.push(format!(
                    "triggers.join.expression {:?} at column {column}: RunConfiguration {qualified} does not exist; \
                     correct the name or create it first",
                    join.expression
                ));
            }
        }
    }
    problems
}

fn run(run: &Run, old: Option<&Run>) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(old) = old
        && old.spec != run.spec
    {
        problems.push("spec is immutable: a Run cannot change once created; create a new Run instead".into());
        return problems;
    }
    run_spec(&run.spec, &mut problems);
    problems
}

fn pipeline(pipeline: &Pipeline, provider: Option<&Provider>) -> Vec<String> {
    let Some(provider) = provider else { return Vec::new() };
    let framework = &pipeline.spec.framework.name;
    let supported: Vec<&str> = provider.spec.frameworks.iter().map(|f| f.name.as_str()).collect();
    if supported.contains(&framework.as_str()) {
        return Vec::new();
    }
    vec![format!(
        "spec.framework.name: {framework:?} is not supported by provider {}; it supports {}",
        pipeline.spec.provider,
        if supported.is_empty() { "none".to_owned() } else { supported.join(", ") }
    )]
}

fn provider_spec(provider: &Provider) -> Vec<String> {
    provider
        .spec
        .pod_template_env
        .iter()
        .map(|env| env.name.to_uppercase())
        .filter(|name| RESERVED_ENV.contains(&name.as_str()) || name.starts_with(RESERVED_ENV_PREFIX))
        .map(|name| format!("spec.podTemplateEnv: {name} is set by the operator and cannot be overridden"))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(kind: &str, object: Value) -> Result<(), Vec<String>> {
        validate(Admission { kind, object: &object, old: None }, None)
    }

    fn rc(spec: Value) -> Value {
        json!({"apiVersion": "pipelines.kubeflow.org/v1beta1", "kind": "RunConfiguration",
            "metadata": {"name": "train", "namespace": "ml"}, "spec": spec})
    }

    #[test]
    fn a_run_configuration_reports_every_problem() {
        let problems = check(
            "RunConfiguration",
            rc(json!({
                "run": {"provider": "ml/stub", "pipeline": "p", "parameters": [
                    {"name": "a", "value": "1", "valueFrom": {"runConfigurationRef": {"name": "x", "outputArtifact": "m"}}},
                    {"name": "b", "value": "2"}, {"name": "b", "value": "3"}]},
                "triggers": {
                    "schedules": [{"cronExpression": "0 * * * *"}, {"cronExpression": "0 * * * *"}, {"cronExpression": "daily"}],
                    "onChange": ["pipeline", "pipeline"],
                    "runConfigurations": ["ml/train"]
                }
            })),
        )
        .unwrap_err();
        assert_eq!(
            problems,
            vec![
                "parameter \"a\": only one of value or valueFrom can be set",
                "parameter \"b\" is given more than once",
                "triggers.schedules: \"0 * * * *\" is given more than once",
                "triggers.schedules: \"daily\" is not a cron expression (5 fields, or 6 with leading seconds)",
                "triggers.onChange: Pipeline is given more than once",
                "triggers.runConfigurations: a RunConfiguration cannot trigger itself",
            ]
        );
        let valid = rc(json!({"run": {"provider": "ml/stub", "pipeline": "p"},
            "triggers": {"schedules": [{"cronExpression": "0 0 * * * *"}], "runConfigurations": ["base"]}}));
        assert_eq!(check("RunConfiguration", valid), Ok(()));
    }

    #[test]
    fn a_join_is_refused_with_the_column_of_its_problem() {
        let joined = |expression: &str| {
            rc(json!({"run": {"provider": "ml/stub", "pipeline": "p"},
                "triggers": {"join": {"expression": expression, "reset": "0 0 * * *"}}}))
        };
        let problems = check("RunConfiguration", joined("a && (b")).unwrap_err();
        assert_eq!(
            problems,
            [
                "triggers.join.expression \"a && (b\" does not parse at column 8: expected \"&&\", \"||\" or \")\" \
              closing the \"(\" at column 6, found the end"
            ]
        );
        let object = joined("base/a && (train || ml/b)");
        assert_eq!(
            join_dependencies(&object),
            [
                NamespacedName::new("base", "a"),
                NamespacedName::new("ml", "train"),
                NamespacedName::new("ml", "b")
            ]
        );
        let lookups = Lookups {
            missing_run_configurations: Some(BTreeSet::from([NamespacedName::new("ml", "b")])),
            ..Lookups::default()
        };
        let problems =
            validate_with(Admission { kind: "RunConfiguration", object: &object, old: None }, &lookups)
                .unwrap_err();
        assert_eq!(
            problems,
            [
                "triggers.join.expression \"base/a && (train || ml/b)\" at column 12: a RunConfiguration cannot join on itself",
                "triggers.join.expression \"base/a && (train || ml/b)\" at column 21: RunConfiguration ml/b does not exist; \
                 correct the name or create it first",
            ]
        );
        assert_eq!(check("RunConfiguration", object), Err(vec![
            "triggers.join.expression \"base/a && (train || ml/b)\" at column 12: a RunConfiguration cannot join on itself".to_owned()
        ]), "not looked up: not checked");
    }

    #[test]
    fn a_run_spec_is_immutable() {
        let run = |experiment: &str| {
            json!({"apiVersion": "pipelines.kubeflow.org/v1beta1", "kind": "Run", "metadata": {"name": "r"},
                "spec": {"provider": "ml/stub", "pipeline": "p", "experimentName": experiment}})
        };
        let (old, new) = (run("a"), run("b"));
        let refused = validate(Admission { kind: "Run", object: &new, old: Some(&old) }, None).unwrap_err();
        assert!(refused[0].starts_with("spec is immutable"), "{refused:?}");
        assert_eq!(validate(Admission { kind: "Run", object: &old, old: Some(&old) }, None), Ok(()));
    }

    #[test]
    fn a_pipeline_needs_a_framework_its_provider_supports() {
        let pipeline = json!({"apiVersion": "pipelines.kubeflow.org/v1beta1", "kind": "Pipeline", "metadata": {"name": "p"},
            "spec": {"provider": "ml/stub", "image": "i", "framework": {"name": "kfpsdk", "parameters": {}}}});
        let provider: Provider = serde_json::from_value(json!({"apiVersion": "pipelines.kubeflow.org/v1beta1",
            "kind": "Provider", "metadata": {"name": "stub"}, "spec": {"serviceImage": "s", "serviceAccount": "sa", "pipelineRootStorage": "r",
            "frameworks": [{"name": "tfx", "image": "t"}]}}))
        .unwrap();
        let admission = Admission { kind: "Pipeline", object: &pipeline, old: None };
        assert_eq!(
            validate(admission, Some(&provider)),
            Err(vec![
                "spec.framework.name: \"kfpsdk\" is not supported by provider ml/stub; it supports tfx"
                    .into()
            ])
        );
        assert_eq!(
            validate(admission, None),
            Ok(()),
            "a Provider that does not exist yet is the reconciler's business"
        );
    }

    #[test]
    fn a_provider_cannot_override_the_operators_environment() {
        let provider = json!({"apiVersion": "pipelines.kubeflow.org/v1beta1", "kind": "Provider", "metadata": {"name": "p"},
            "spec": {"serviceImage": "s", "serviceAccount": "sa", "pipelineRootStorage": "r", "podTemplateEnv": [
                {"name": "providerName", "value": "x"}, {"name": "LOG_LEVEL", "value": "debug"},
                {"name": "parameters_project", "value": "y"}]}});
        assert_eq!(
            check("Provider", provider),
            Err(vec![
                "spec.podTemplateEnv: PROVIDERNAME is set by the operator and cannot be overridden"
                    .to_owned(),
                "spec.podTemplateEnv: PARAMETERS_PROJECT is set by the operator and cannot be overridden"
                    .to_owned(),
            ])
        );
    }

    #[test]
    fn metadata_updates_and_deletions_always_pass() {
        let pipeline = |finalizers: Value, deleting: bool| {
            let mut object = json!({"apiVersion": "pipelines.kubeflow.org/v1beta1", "kind": "Pipeline",
                "metadata": {"name": "p", "finalizers": finalizers},
                "spec": {"provider": "ml/stub", "image": "i", "framework": {"name": "gone", "parameters": {}}}});
            if deleting {
                object["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            object
        };
        let provider: Provider = serde_json::from_value(json!({"apiVersion": "pipelines.kubeflow.org/v1beta1",
            "kind": "Provider", "metadata": {"name": "stub"}, "spec": {"serviceImage": "s", "serviceAccount": "sa",
            "pipelineRootStorage": "r"}}))
        .unwrap();
        let (old, new) = (pipeline(json!(["f"]), false), pipeline(json!([]), false));
        let finalizer_removed = Admission { kind: "Pipeline", object: &new, old: Some(&old) };
        assert_eq!(validate(finalizer_removed, Some(&provider)), Ok(()));
        let deleting = pipeline(json!(["f"]), true);
        assert_eq!(
            validate(Admission { kind: "Pipeline", object: &deleting, old: None }, Some(&provider)),
            Ok(())
        );
        assert!(validate(Admission { kind: "Pipeline", object: &new, old: None }, Some(&provider)).is_err());
    }

    #[test]
    fn an_undecodable_object_is_refused_with_the_reason() {
        let problems = check("Run", json!({"spec": {"provider": 3}})).unwrap_err();
        assert!(problems[0].starts_with("not a valid Run: "), "{problems:?}");
        assert_eq!(check("Experiment", json!({})), Ok(()));
    }
}
