//! Fixture builders on the API types shared by the integration tests.

use kfp_operator::api::{
    Experiment, ExperimentSpec, Framework, NamespacedName, Pipeline, PipelineFramework, PipelineSpec,
    Provider, ProviderSpec, ProviderType, RunConfiguration, RunConfigurationSpec, RunSpec, Triggers,
};
use serde_json::json;

/// A `stub` Provider supporting `tfx`, whose runs complete after 300 ms and produce nothing.
pub fn stub_provider(name: &str) -> Provider {
    Provider::new(
        name,
        ProviderSpec {
            provider_type: ProviderType::Stub,
            service_image: "none".into(),
            service_account: "default".into(),
            pipeline_root_storage: "memory://root".into(),
            parameters: [("completionDelay".to_owned(), json!("300ms"))].into(),
            frameworks: vec![Framework { name: "tfx".into(), image: "none".into(), patches: vec![] }],
            ..ProviderSpec::default()
        },
    )
}

/// A `tfx` Pipeline `name` (image `quickstart:v1`) on `provider`.
pub fn pipeline(name: &str, provider: &NamespacedName) -> Pipeline {
    Pipeline::new(
        name,
        PipelineSpec {
            provider: provider.clone(),
            image: "quickstart:v1".into(),
            env: vec![],
            framework: PipelineFramework::new("tfx"),
        },
    )
}

/// An Experiment `name` on `provider`, without a description.
pub fn experiment(name: &str, provider: &NamespacedName) -> Experiment {
    Experiment::new(name, ExperimentSpec { provider: provider.clone(), description: String::new() })
}

/// A RunConfiguration `name` running the Pipeline `penguin` on `provider` with `triggers`.
pub fn run_configuration(name: &str, provider: &NamespacedName, triggers: Triggers) -> RunConfiguration {
    RunConfiguration::new(
        name,
        RunConfigurationSpec {
            run: RunSpec {
                provider: provider.clone(),
                pipeline: "penguin".parse().unwrap(),
                ..RunSpec::default()
            },
            triggers,
        },
    )
}

/// Builders for stub Providers.
pub trait StubProviderExt {
    /// Runs complete after `delay` (e.g. `200ms`).
    fn completing_after(self, delay: &str) -> Self;
    /// Runs produce this artifact.
    fn producing(self, component: &str, artifact: &str, uri: &str) -> Self;
}

impl StubProviderExt for Provider {
    fn completing_after(mut self, delay: &str) -> Self {
        self.spec.parameters.insert("completionDelay".into(), json!(delay));
        self
    }

    fn producing(mut self, component: &str, artifact: &str, uri: &str) -> Self {
        let artifacts = self.spec.parameters.entry("completionArtifacts".into()).or_insert_with(|| json!([]));
        if let Some(list) = artifacts.as_array_mut() {
            list.push(json!({"component": component, "artifact": artifact, "uri": uri}));
        }
        self
    }
}
