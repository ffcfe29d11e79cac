//! The resource definitions sent to providers (`POST/PUT /resource/{kind}` bodies), built from
//! the custom resources. Pure. Field names follow the reference provider API.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::api::labels;
use crate::api::{
    self, Experiment, NamedValue, NamespacedName, OutputArtifact, PatchType, Pipeline, Provider, Run,
    RunSchedule, hash,
};

/// Why a definition could not be built. These are problems with the resource, not the provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    #[error("framework {framework:?} is not supported by provider {provider}; it supports {supported}")]
    UnsupportedFramework { framework: String, provider: String, supported: String },
    #[error("patch {index} of framework {framework:?} of provider {provider} is invalid: {reason}")]
    InvalidPatch { framework: String, provider: String, index: usize, reason: String },
    #[error("the pipeline version is not known yet")]
    UnknownPipelineVersion,
    #[error("{0}")]
    Serialize(String),
}

fn to_value<T: Serialize>(value: &T) -> Result<Value, DefinitionError> {
    serde_json::to_value(value).map_err(|e| DefinitionError::Serialize(e.to_string()))
}

fn name_of(resource: &impl kube::Resource) -> NamespacedName {
    NamespacedName::new(
        resource.meta().namespace.clone().unwrap_or_default(),
        resource.meta().name.clone().unwrap_or_default(),
    )
}

/// The pipeline definition, with the provider's framework patches applied in order.
pub fn pipeline(pipeline: &Pipeline, provider: &Provider) -> Result<Value, DefinitionError> {
    let spec = &pipeline.spec;
    let mut definition = json!({
        "name": name_of(pipeline),
        "version": hash::pipeline_version(spec),
        "image": spec.image,
        "env": spec.env,
        "framework": { "name": spec.framework.name, "parameters": spec.framework.parameters },
    });
    let provider_name = name_of(provider).to_string();
    let framework = provider.spec.framework(&spec.framework.name).ok_or_else(|| {
        DefinitionError::UnsupportedFramework {
            framework: spec.framework.name.clone(),
            provider: provider_name.clone(),
            supported: provider
                .spec
                .frameworks
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    })?;
    for (index, patch) in framework.patches.iter().enumerate() {
        let invalid = |reason: String| DefinitionError::InvalidPatch {
            framework: framework.name.clone(),
            provider: provider_name.clone(),
            index,
            reason,
        };
        let payload: Value =
            serde_json::from_str(&patch.payload).map_err(|e| invalid(format!("payload: {e}")))?;
        match patch.patch_type {
            Some(PatchType::Json) => {
                let operations: json_patch::Patch =
                    serde_json::from_value(payload).map_err(|e| invalid(format!("not a JSON patch: {e}")))?;
                json_patch::patch(&mut definition, &operations).map_err(|e| invalid(e.to_string()))?;
            }
            Some(PatchType::Merge) => json_patch::merge(&mut definition, &payload),
            None => return Err(invalid("the patch has no type (json or merge)".into())),
        }
    }
    Ok(json!({ "pipelineDefinition": definition }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExperimentDefinition<'a> {
    name: NamespacedName,
    version: String,
    description: &'a str,
}

pub fn experiment(experiment: &Experiment) -> Result<Value, DefinitionError> {
    to_value(&ExperimentDefinition {
        name: name_of(experiment),
        version: hash::experiment_version(&experiment.spec),
        description: &experiment.spec.description,
    })
}

/// Who started a run: a schedule, a RunConfiguration trigger, or a person.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerIndicator {
    #[serde(rename = "type")]
    pub trigger_type: String,
    pub source: String,
    pub source_namespace: String,
}

fn namespaced_or_empty(namespace: &str, name: &str) -> String {
    if name.is_empty() { String::new() } else { format!("{namespace}/{name}") }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunDefinition<'a> {
    name: NamespacedName,
    version: String,
    pipeline_name: String,
    pipeline_version: &'a str,
    run_configuration_name: String,
    experiment_name: String,
    parameters: BTreeMap<String, String>,
    artifacts: &'a [OutputArtifact],
    trigger_indicator: TriggerIndicator,
}

/// The run definition. `parameters` are the resolved values (see the Run reconciler).
pub fn run(run: &Run, parameters: &[NamedValue]) -> Result<Value, DefinitionError> {
    let namespace = run.metadata.namespace.clone().unwrap_or_default();
    let observed = run.status.as_ref().map_or("", |s| s.dependencies.pipeline.version.as_str());
    if observed.is_empty() {
        return Err(DefinitionError::UnknownPipelineVersion);
    }
    let labels = run.metadata.labels.clone().unwrap_or_default();
    let label = |key: &str| labels.get(key).cloned().unwrap_or_default();
    to_value(&RunDefinition {
        name: name_of(run),
        version: hash::run_version(&run.spec, observed),
        pipeline_name: namespaced_or_empty(&namespace, &run.spec.pipeline.name),
        pipeline_version: observed,
        run_configuration_name: namespaced_or_empty(&namespace, &label(labels::RUN_CONFIGURATION)),
        experiment_name: namespaced_or_empty(&namespace, &run.spec.experiment_name),
        parameters: parameters.iter().map(|p| (p.name.clone(), p.value.clone())).collect(),
        artifacts: &run.spec.artifacts,
        trigger_indicator: TriggerIndicator {
            trigger_type: label(labels::TRIGGER_TYPE),
            source: label(labels::TRIGGER_SOURCE),
            source_namespace: label(labels::TRIGGER_SOURCE_NAMESPACE),
        },
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunScheduleDefinition<'a> {
    name: NamespacedName,
    version: String,
    pipeline_name: String,
    pipeline_version: &'a str,
    run_configuration_name: String,
    experiment_name: String,
    schedule: &'a api::Schedule,
    parameters: BTreeMap<String, String>,
    artifacts: &'a [OutputArtifact],
    trigger_indicator: TriggerIndicator,
}

pub fn run_schedule(schedule: &RunSchedule) -> Result<Value, DefinitionError> {
    let namespace = schedule.metadata.namespace.clone().unwrap_or_default();
    let name = schedule.metadata.name.clone().unwrap_or_default();
    let owner = schedule
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| {
            o.controller == Some(true)
                && o.kind == "RunConfiguration"
                && o.api_version.starts_with(api::GROUP)
        })
        .map(|o| o.name.clone())
        .unwrap_or_default();
    to_value(&RunScheduleDefinition {
        name: name_of(schedule),
        version: hash::run_schedule_version(&schedule.spec),
        pipeline_name: namespaced_or_empty(&namespace, &schedule.spec.pipeline.name),
        pipeline_version: &schedule.spec.pipeline.version,
        run_configuration_name: namespaced_or_empty(&namespace, &owner),
        experiment_name: namespaced_or_empty(&namespace, &schedule.spec.experiment_name),
        schedule: &schedule.spec.schedule,
        parameters: schedule.spec.parameters.iter().map(|p| (p.name.clone(), p.value.clone())).collect(),
        artifacts: &schedule.spec.artifacts,
        trigger_indicator: TriggerIndicator {
            trigger_type: "schedule".into(),
            source: name,
            source_namespace: namespace,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Framework, Patch, PipelineFramework, PipelineSpec, ProviderSpec};

    fn provider(patches: Vec<Patch>) -> Provider {
        let mut provider = Provider::new(
            "stub",
            ProviderSpec {
                frameworks: vec![Framework { name: "tfx".into(), image: "compiler".into(), patches }],
                ..ProviderSpec::default()
            },
        );
        provider.metadata.namespace = Some("kfp".into());
        provider
    }

    fn pipeline(framework: &str) -> Pipeline {
        let mut pipeline = Pipeline::new(
            "penguin",
            PipelineSpec {
                provider: NamespacedName::new("kfp", "stub"),
                image: "quickstart:v1".into(),
                env: vec![NamedValue::new("A", "1")],
                framework: PipelineFramework::new(framework).with_parameter("components", json!("x")),
            },
        );
        pipeline.metadata.namespace = Some("ml".into());
        pipeline
    }

    #[test]
    fn pipeline_definition_applies_patches_in_order() {
        let patches = vec![
            Patch {
                patch_type: Some(PatchType::Json),
                payload: r#"[{"op":"add","path":"/framework/parameters/beamArgs","value":[{"name":"a","value":"b"}]}]"#.into(),
            },
            Patch { patch_type: Some(PatchType::Merge), payload: r#"{"image":"patched:v2"}"#.into() },
        ];
        let definition = super::pipeline(&pipeline("tfx"), &provider(patches)).unwrap();
        let body = &definition["pipelineDefinition"];
        assert_eq!(body["name"], "ml/penguin");
        assert_eq!(body["image"], "patched:v2");
        assert_eq!(body["framework"]["parameters"]["beamArgs"][0]["name"], "a");
        assert_eq!(body["env"][0]["name"], "A");
        assert!(body["version"].as_str().unwrap().starts_with("v1-"));
    }

    #[test]
    fn an_unsupported_framework_names_what_is_supported() {
        let error = super::pipeline(&pipeline("kfpsdk"), &provider(vec![])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "framework \"kfpsdk\" is not supported by provider kfp/stub; it supports tfx"
        );
    }

    #[test]
    fn a_broken_patch_is_reported_with_its_index() {
        let patches = vec![Patch { patch_type: Some(PatchType::Json), payload: "not json".into() }];
        let error = super::pipeline(&pipeline("tfx"), &provider(patches)).unwrap_err();
        assert!(matches!(error, DefinitionError::InvalidPatch { index: 0, .. }), "{error}");
    }

    #[test]
    fn run_definition_needs_the_pipeline_version_and_carries_trigger_labels() {
        let mut run = Run::new(
            "run-1",
            api::RunSpec {
                provider: NamespacedName::new("kfp", "stub"),
                pipeline: "penguin".parse().unwrap(),
                ..api::RunSpec::default()
            },
        );
        run.metadata.namespace = Some("ml".into());
        assert_eq!(super::run(&run, &[]), Err(DefinitionError::UnknownPipelineVersion));
        run.metadata.labels = Some(BTreeMap::from([
            (labels::RUN_CONFIGURATION.to_owned(), "daily".to_owned()),
            (labels::TRIGGER_TYPE.to_owned(), "onChangePipeline".to_owned()),
        ]));
        run.status = Some(api::RunStatus {
            dependencies: api::Dependencies {
                pipeline: api::ObservedVersion::new("v1-abc"),
                ..Default::default()
            },
            ..Default::default()
        });
        let definition = super::run(&run, &[NamedValue::new("p", "1")]).unwrap();
        assert_eq!(definition["pipelineName"], "ml/penguin");
        assert_eq!(definition["pipelineVersion"], "v1-abc");
        assert_eq!(definition["runConfigurationName"], "ml/daily");
        assert_eq!(definition["parameters"]["p"], "1");
        assert_eq!(definition["triggerIndicator"]["type"], "onChangePipeline");
        assert_eq!(definition["experimentName"], "");
    }
}
