//! The built-in stub provider: deterministic, in-process, for tests and trials. Every call
//! succeeds unless the resource is named after one of the reference stub's failure names
//! (`create-run-fail`, `delete-pipeline-fail`, …); ids are `namespace/name`. Created runs
//! complete after a configurable delay, with a configurable outcome and artifacts (see
//! [`StubSettings`]).

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{ProviderApi, ProviderError, ResourceKind};
use crate::api::NamespacedName;
use crate::events::{
    ComponentArtifact, ComponentArtifactInstance, PipelineComponent, RunCompletionEventData,
    RunCompletionStatus,
};

/// A run the stub created, handed to whoever turns it into a completion event.
#[derive(Debug, Clone, PartialEq)]
pub struct StubRun {
    /// The Provider the run was created through.
    pub provider: NamespacedName,
    /// The provider id of the run.
    pub run_id: String,
    /// The run definition the operator sent.
    pub definition: Value,
    /// How long after creation the run completes.
    pub completes_after: Duration,
    /// How the run ends.
    pub outcome: RunCompletionStatus,
    /// The artifacts it produces.
    pub components: Vec<PipelineComponent>,
}

/// Where an artifact URI names the run that produced it.
pub const RUN_ID_PLACEHOLDER: &str = "{runId}";

impl StubRun {
    /// The artifacts of this run: the configured ones, with [`RUN_ID_PLACEHOLDER`] in their URIs
    /// replaced by the run id.
    fn components_of_run(&self) -> Vec<PipelineComponent> {
        let mut components = self.components.clone();
        for instance in components
            .iter_mut()
            .flat_map(|c| c.component_artifacts.iter_mut())
            .flat_map(|a| a.artifacts.iter_mut())
        {
            instance.uri = instance.uri.replace(RUN_ID_PLACEHOLDER, &self.run_id);
        }
        components
    }

    /// The completion the provider reports for this run.
    pub fn completion(
        &self,
        start: chrono::DateTime<chrono::Utc>,
        end: chrono::DateTime<chrono::Utc>,
    ) -> Result<RunCompletionEventData, String> {
        let name = |key: &str| -> Result<Option<NamespacedName>, String> {
            match self.definition[key].as_str().unwrap_or_default() {
                "" => Ok(None),
                text => text.parse().map(Some).map_err(|e| format!("{key}: {e}")),
            }
        };
        Ok(RunCompletionEventData {
            status: self.outcome,
            pipeline_name: name("pipelineName")?.unwrap_or_default(),
            run_configuration_name: name("runConfigurationName")?,
            run_name: name("name")?,
            run_id: self.run_id.clone(),
            run_start_time: Some(start),
            run_end_time: Some(end),
            pipeline_components: self.components_of_run(),
            provider: self.provider.clone(),
        })
    }
}

/// How a stub provider behaves, read from the Provider's `spec.parameters`.
#[derive(Debug, Clone, PartialEq)]
pub struct StubSettings {
    /// `completionDelay`: how long a created run takes (e.g. `5s`, `200ms`); default 5 s.
    pub completion_delay: Duration,
    /// `completionStatus`: `succeeded` (default) or `failed`.
    pub completion_status: RunCompletionStatus,
    /// `completionArtifacts`: what every run produces, as `[{component, artifact, uri, metadata}]`;
    /// `{runId}` in a `uri` becomes the run's id.
    pub completion_components: Vec<PipelineComponent>,
}

impl Default for StubSettings {
    fn default() -> Self {
        Self {
            completion_delay: Duration::from_secs(5),
            completion_status: RunCompletionStatus::Succeeded,
            completion_components: Vec::new(),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StubArtifact {
    component: String,
    artifact: String,
    uri: String,
    #[serde(default)]
    metadata: serde_json::Map<String, Value>,
}

impl StubSettings {
    pub fn from_parameters(parameters: &std::collections::BTreeMap<String, Value>) -> Result<Self, String> {
        let mut settings = Self::default();
        if let Some(delay) = parameters.get("completionDelay") {
            let text = delay.as_str().ok_or("completionDelay must be a duration string such as \"5s\"")?;
            settings.completion_delay =
                crate::api::duration::parse(text).map_err(|e| format!("completionDelay {text:?}: {e}"))?;
        }
        if let Some(status) = parameters.get("completionStatus") {
            settings.completion_status = serde_json::from_value(status.clone())
                .map_err(|_| format!("completionStatus must be \"succeeded\" or \"failed\", not {status}"))?;
        }
        if let Some(artifacts) = parameters.get("completionArtifacts") {
            let artifacts: Vec<StubArtifact> = serde_json::from_value(artifacts.clone()).map_err(|e| {
                format!("completionArtifacts must be a list of {{component, artifact, uri, metadata}}: {e}")
            })?;
            for artifact in artifacts {
                let instance = ComponentArtifactInstance { uri: artifact.uri, metadata: artifact.metadata };
                let index =
                    match settings.completion_components.iter().position(|c| c.name == artifact.component) {
                        Some(index) => index,
                        None => {
                            settings.completion_components.push(PipelineComponent {
                                name: artifact.component,
                                ..PipelineComponent::default()
                            });
                            settings.completion_components.len() - 1
                        }
                    };
                let Some(component) = settings.completion_components.get_mut(index) else { continue };
                match component.component_artifacts.iter_mut().find(|a| a.name == artifact.artifact) {
                    Some(existing) => existing.artifacts.push(instance),
                    None => component
                        .component_artifacts
                        .push(ComponentArtifact { name: artifact.artifact, artifacts: vec![instance] }),
                }
            }
        }
        Ok(settings)
    }
}

/// The stub provider of one Provider resource.
pub struct StubProvider {
    name: NamespacedName,
    settings: StubSettings,
    resources: DashMap<(ResourceKind, String), Value>,
    /// Every create and update it was sent, in order.
    received: std::sync::Mutex<Vec<Received>>,
    created_runs: Option<mpsc::UnboundedSender<StubRun>>,
}

/// A create or update the stub was sent, as it was sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub kind: ResourceKind,
    /// `create` or `update`.
    pub operation: &'static str,
    pub definition: Value,
}

impl StubProvider {
    pub fn new(
        name: NamespacedName,
        settings: StubSettings,
        created_runs: Option<mpsc::UnboundedSender<StubRun>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            settings,
            resources: DashMap::new(),
            received: Default::default(),
            created_runs,
        })
    }

    /// The run the stub executes for a run definition.
    pub fn stub_run(&self, run_id: &str, definition: &Value) -> StubRun {
        StubRun {
            provider: self.name.clone(),
            run_id: run_id.to_owned(),
            definition: definition.clone(),
            completes_after: self.settings.completion_delay,
            outcome: self.settings.completion_status,
            components: self.settings.completion_components.clone(),
        }
    }

    /// What the stub holds now, by kind and id (for tests and diagnostics).
    pub fn resource(&self, kind: ResourceKind, id: &str) -> Option<Value> {
        self.resources.get(&(kind, id.to_owned())).map(|entry| entry.value().clone())
    }

    /// Every create and update of `kind` the stub was sent, in order (for tests and diagnostics).
    pub fn received(&self, kind: ResourceKind) -> Vec<Received> {
        let received = self.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        received.iter().filter(|r| r.kind == kind).cloned().collect()
    }

    fn record(&self, kind: ResourceKind, operation: &'static str, definition: &Value) {
        let mut received = self.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        received.push(Received { kind, operation, definition: definition.clone() });
    }

    pub fn len(&self) -> usize {
        self.resources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }
}

fn definition_name(kind: ResourceKind, definition: &Value) -> String {
    let name = match kind {
        ResourceKind::Pipeline => &definition["pipelineDefinition"]["name"],
        _ => &definition["name"],
    };
    name.as_str().unwrap_or_default().to_owned()
}

fn short_name(id_or_name: &str) -> &str {
    id_or_name.rsplit('/').next().unwrap_or(id_or_name)
}

fn check(action: &str, kind: ResourceKind, subject: &str) -> Result<(), ProviderError> {
    let failure_name = format!("{action}-{kind}-fail");
    if short_name(subject).eq_ignore_ascii_case(&failure_name) {
        Err(ProviderError::Failed { message: format!("{action} {kind} failed") })
    } else {
        Ok(())
    }
}

impl ProviderApi for StubProvider {
    fn create<'a>(
        &'a self,
        kind: ResourceKind,
        definition: &'a Value,
    ) -> BoxFuture<'a, Result<String, ProviderError>> {
        async move {
            self.record(kind, "create", definition);
            let id = definition_name(kind, definition);
            check("create", kind, &id)?;
            if id.is_empty() {
                return Err(ProviderError::Rejected {
                    message: format!("the {kind} definition has no name"),
                });
            }
            self.resources.insert((kind, id.clone()), definition.clone());
            if kind == ResourceKind::Run
                && let Some(sender) = &self.created_runs
            {
                let _ = sender.send(self.stub_run(&id, definition));
            }
            Ok(id)
        }
        .boxed()
    }

    fn update<'a>(
        &'a self,
        kind: ResourceKind,
        id: &'a str,
        definition: &'a Value,
    ) -> BoxFuture<'a, Result<String, ProviderError>> {
        async move {
            self.record(kind, "update", definition);
            let subject = match kind {
                ResourceKind::Pipeline => id.to_owned(),
                _ => definition_name(kind, definition),
            };
            check("update", kind, &subject)?;
            if kind == ResourceKind::Run {
                return Err(ProviderError::Unimplemented { operation: "update run".into() });
            }
            self.resources.insert((kind, id.to_owned()), definition.clone());
            Ok(id.to_owned())
        }
        .boxed()
    }

    fn delete<'a>(&'a self, kind: ResourceKind, id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        async move {
            check("delete", kind, id)?;
            self.resources.remove(&(kind, id.to_owned()));
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stub() -> Arc<StubProvider> {
        StubProvider::new(NamespacedName::new("kfp", "stub"), StubSettings::default(), None)
    }

    #[tokio::test]
    async fn creates_updates_and_deletes() {
        let stub = stub();
        let definition = json!({"name": "ml/exp", "description": "d"});
        let id = stub.create(ResourceKind::Experiment, &definition).await.unwrap();
        assert_eq!(id, "ml/exp");
        assert_eq!(stub.resource(ResourceKind::Experiment, &id), Some(definition.clone()));
        assert_eq!(stub.update(ResourceKind::Experiment, &id, &definition).await.unwrap(), id);
        let received: Vec<&str> =
            stub.received(ResourceKind::Experiment).iter().map(|r| r.operation).collect();
        assert_eq!(received, ["create", "update"], "it records what it was sent");
        stub.delete(ResourceKind::Experiment, &id).await.unwrap();
        assert!(stub.is_empty());
    }

    #[tokio::test]
    async fn honours_the_reference_failure_names() {
        let stub = stub();
        let failing = json!({"name": "ml/create-run-fail"});
        assert_eq!(
            stub.create(ResourceKind::Run, &failing).await,
            Err(ProviderError::Failed { message: "create run failed".into() })
        );
        let pipeline = json!({"pipelineDefinition": {"name": "ml/Create-Pipeline-Fail"}});
        assert!(stub.create(ResourceKind::Pipeline, &pipeline).await.is_err(), "case-insensitive");
        assert_eq!(
            stub.delete(ResourceKind::Pipeline, "ml/delete-pipeline-fail").await,
            Err(ProviderError::Failed { message: "delete pipeline failed".into() })
        );
        let schedule = json!({"name": "ml/update-runschedule-fail"});
        assert!(stub.update(ResourceKind::RunSchedule, "ml/x", &schedule).await.is_err());
        assert!(matches!(
            stub.update(ResourceKind::Run, "ml/r", &json!({"name": "ml/r"})).await,
            Err(ProviderError::Unimplemented { .. })
        ));
    }

    #[tokio::test]
    async fn created_runs_are_handed_on_for_completion() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let settings =
            StubSettings { completion_delay: Duration::from_millis(10), ..StubSettings::default() };
        let stub = StubProvider::new(NamespacedName::new("kfp", "stub"), settings, Some(sender));
        stub.create(ResourceKind::Run, &json!({"name": "ml/run-1"})).await.unwrap();
        let run = receiver.recv().await.unwrap();
        assert_eq!(run.run_id, "ml/run-1");
        assert_eq!(run.completes_after, Duration::from_millis(10));
    }

    #[test]
    fn completions_carry_the_artifacts_with_the_run_id_in_their_uris() {
        let parameters = std::collections::BTreeMap::from([(
            "completionArtifacts".to_owned(),
            json!([{"component": "Pusher", "artifact": "pushed_model", "uri": "memory://models/{runId}",
                    "metadata": {"pushed": 1}}]),
        )]);
        let settings = StubSettings::from_parameters(&parameters).unwrap();
        let stub = StubProvider::new(NamespacedName::new("kfp", "stub"), settings, None);
        let definition =
            json!({"name": "ml/train-1", "pipelineName": "ml/penguin", "runConfigurationName": "ml/train"});
        let now = chrono::Utc::now();
        let completion = stub.stub_run("ml/train-1", &definition).completion(now, now).unwrap();
        assert_eq!(completion.status, RunCompletionStatus::Succeeded);
        assert_eq!(completion.run_configuration_name, Some(NamespacedName::new("ml", "train")));
        let instance = &completion.pipeline_components[0].component_artifacts[0].artifacts[0];
        assert_eq!(instance.uri, "memory://models/ml/train-1");
        assert_eq!(instance.metadata["pushed"], json!(1));
    }

    #[test]
    fn settings_come_from_provider_parameters() {
        let parameters = std::collections::BTreeMap::from([("completionDelay".to_owned(), json!("250ms"))]);
        assert_eq!(
            StubSettings::from_parameters(&parameters).unwrap().completion_delay,
            Duration::from_millis(250)
        );
        let bad = std::collections::BTreeMap::from([("completionDelay".to_owned(), json!(5))]);
        assert!(StubSettings::from_parameters(&bad).is_err());
        let outcome = std::collections::BTreeMap::from([
            ("completionStatus".to_owned(), json!("failed")),
            (
                "completionArtifacts".to_owned(),
                json!([
                    {"component": "Pusher", "artifact": "pushed_model", "uri": "gs://m/1", "metadata": {"pushed": 1}},
                    {"component": "Pusher", "artifact": "pushed_model", "uri": "gs://m/2"},
                ]),
            ),
        ]);
        let settings = StubSettings::from_parameters(&outcome).unwrap();
        assert_eq!(settings.completion_status, RunCompletionStatus::Failed);
        assert_eq!(settings.completion_components[0].component_artifacts[0].artifacts.len(), 2);
        let bad_status = std::collections::BTreeMap::from([("completionStatus".to_owned(), json!("maybe"))]);
        assert!(StubSettings::from_parameters(&bad_status).unwrap_err().contains("maybe"));
    }
}
