//! Dependencies of Runs and RunConfigurations on other RunConfigurations' latest successful
//! runs, and the resolution of `valueFrom` parameters against them. Pure.

use std::collections::BTreeMap;

use crate::api::{NamedValue, NamespacedName, Parameter, RunReference, TriggerCondition};

/// The RunConfigurations referenced by `valueFrom` parameters and by trigger entries, as written,
/// without duplicates, in first-seen order.
pub fn referenced_run_configurations<'a>(
    parameters: &'a [Parameter],
    triggers: &'a [NamespacedName],
) -> Vec<&'a NamespacedName> {
    let mut seen = std::collections::HashSet::new();
    let from_parameters =
        parameters.iter().filter_map(|p| p.value_from.as_ref()).map(|v| &v.run_configuration_ref.name);
    from_parameters.chain(triggers).filter(|reference| seen.insert(*reference)).collect()
}

/// Builds `status.dependencies.runConfigurations`: per reference (keyed as written), the
/// dependency's latest successful run with only the artifacts the parameters use, in parameter
/// order, then those the trigger `conditions` on it look at. `latest_succeeded` looks a
/// reference up (qualified with the namespace); `None` means not found, which records an empty
/// entry.
pub fn dependency_map(
    parameters: &[Parameter],
    triggers: &[NamespacedName],
    conditions: &[TriggerCondition],
    namespace: &str,
    latest_succeeded: impl Fn(&NamespacedName) -> Option<RunReference>,
) -> BTreeMap<String, RunReference> {
    referenced_run_configurations(parameters, triggers)
        .into_iter()
        .map(|reference| {
            let entry = latest_succeeded(&reference.qualified(namespace))
                .map(|latest| {
                    let used = parameters
                        .iter()
                        .filter_map(|p| p.value_from.as_ref())
                        .filter(|v| v.run_configuration_ref.name == *reference)
                        .map(|v| v.run_configuration_ref.output_artifact.as_str());
                    let judged = conditions
                        .iter()
                        .filter(|c| c.run_configuration == *reference)
                        .map(|c| c.artifact.as_str());
                    let mut artifacts: Vec<crate::api::Artifact> = Vec::new();
                    for name in used.chain(judged) {
                        let found = latest.artifacts.iter().find(|a| a.name == name);
                        if let Some(found) = found
                            && !artifacts.contains(found)
                        {
                            artifacts.push(found.clone());
                        }
                    }
                    RunReference { provider_id: latest.provider_id, artifacts, run_end_time: None }
                })
                .unwrap_or_default();
            (reference.to_string(), entry)
        })
        .collect()
}

/// Parameters resolved against dependencies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedParameters {
    /// The values to submit, in spec order.
    pub values: Vec<NamedValue>,
    /// Optional parameters whose value could not be found; they are left out of `values`.
    pub unresolved_optional: Vec<String>,
}

/// Resolves `valueFrom` parameters. Unlike the reference, an unresolved optional parameter is
/// omitted (not submitted with an empty name).
pub fn resolve_parameters(
    parameters: &[Parameter],
    dependencies: &BTreeMap<String, RunReference>,
) -> Result<ResolvedParameters, String> {
    let mut resolved = ResolvedParameters::default();
    for parameter in parameters {
        let Some(value_from) = &parameter.value_from else {
            resolved.values.push(NamedValue::new(&parameter.name, &parameter.value));
            continue;
        };
        let reference = &value_from.run_configuration_ref;
        let key = reference.name.to_string();
        let dependency = dependencies.get(&key);
        match dependency.and_then(|d| d.artifacts.iter().find(|a| a.name == reference.output_artifact)) {
            Some(artifact) => resolved.values.push(NamedValue::new(&parameter.name, &artifact.location)),
            None if reference.optional => resolved.unresolved_optional.push(parameter.name.clone()),
            None if dependency.is_none() => return Err(format!("dependency '{key}' not found")),
            None => {
                return Err(format!(
                    "parameter '{}': artifact '{}' not found in the latest successful run of dependency '{key}'",
                    parameter.name, reference.output_artifact
                ));
            }
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Artifact, RunConfigurationRef};

    fn from(rc: &str, artifact: &str) -> RunConfigurationRef {
        RunConfigurationRef::new(rc.parse().unwrap(), artifact)
    }

    fn latest(id: &str, artifacts: &[(&str, &str)]) -> RunReference {
        RunReference {
            provider_id: id.into(),
            artifacts: artifacts.iter().map(|(n, l)| Artifact::new(*n, *l)).collect(),
            run_end_time: None,
        }
    }

    #[test]
    fn the_map_is_keyed_as_written_and_keeps_only_used_artifacts() {
        let parameters = vec![
            Parameter::literal("plain", "1"),
            Parameter::from_run_configuration("model", from("base/train", "model")),
            Parameter::from_run_configuration("examples", from("examples", "examples")),
        ];
        let triggers = vec![NamespacedName::name_only("examples"), NamespacedName::new("other", "gone")];
        let map = dependency_map(&parameters, &triggers, &[], "ml", |reference| {
            match reference.to_string().as_str() {
                "base/train" => Some(latest("run-1", &[("stats", "gs://s"), ("model", "gs://m")])),
                "ml/examples" => Some(latest("run-2", &[("examples", "gs://e")])),
                _ => None,
            }
        });
        assert_eq!(
            map,
            BTreeMap::from([
                ("base/train".to_owned(), latest("run-1", &[("model", "gs://m")])),
                ("examples".to_owned(), latest("run-2", &[("examples", "gs://e")])),
                ("other/gone".to_owned(), RunReference::default()),
            ])
        );
    }

    #[test]
    fn parameters_resolve_from_dependencies() {
        let parameters = vec![
            Parameter::literal("plain", "1"),
            Parameter::from_run_configuration("model", from("base/train", "model")),
            Parameter::from_run_configuration("extra", from("base/train", "extra").optional()),
        ];
        let dependencies =
            BTreeMap::from([("base/train".to_owned(), latest("run-1", &[("model", "gs://m")]))]);
        assert_eq!(
            resolve_parameters(&parameters, &dependencies),
            Ok(ResolvedParameters {
                values: vec![NamedValue::new("plain", "1"), NamedValue::new("model", "gs://m")],
                unresolved_optional: vec!["extra".into()],
            })
        );
    }

    #[test]
    fn unresolvable_parameters_explain_themselves() {
        let missing_dependency =
            vec![Parameter::from_run_configuration("model", from("base/train", "model"))];
        assert_eq!(
            resolve_parameters(&missing_dependency, &BTreeMap::new()),
            Err("dependency 'base/train' not found".into())
        );
        let dependencies = BTreeMap::from([("base/train".to_owned(), latest("run-1", &[]))]);
        let error = resolve_parameters(&missing_dependency, &dependencies).unwrap_err();
        assert!(error.contains("artifact 'model' not found"), "{error}");
    }
}
