//! The trigger engine against the real apiserver with the stub provider: the reference
//! walkthrough (a base RunConfiguration, a dependant in another namespace taking the base's
//! artifact through `valueFrom`, and a third chained on the dependant), onChange triggers, and
//! cycles that are reported and never loop.
//!
//! Reference scenarios (kfp-operator-behaviour §7.8, §11.2) ported here: the walkthrough
//! end to end; "onChange: runSpec starts one run on first reconcile"; "a dependant fires when its
//! dependency succeeds". Deliberately different: the first dependant Run carries its trigger
//! labels (the reference's has none), and a cycle is reported instead of looping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kfp_operator::api::{
    Framework, NamespacedName, OnChangeType, Parameter, Pipeline, PipelineFramework, PipelineSpec, Provider,
    ProviderSpec, ProviderType, Run, RunConfiguration, RunConfigurationRef, RunConfigurationSpec, RunSpec,
    Triggers,
};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

mod support;
use support::operator::Operator;

const TIMEOUT: Duration = Duration::from_secs(60);

fn stub_provider() -> Provider {
    Provider::new(
        "stub",
        ProviderSpec {
            provider_type: ProviderType::Stub,
            service_image: "none".into(),
            service_account: "default".into(),
            pipeline_root_storage: "memory://root".into(),
            parameters: [
                ("completionDelay".to_owned(), json!("300ms")),
                (
                    "completionArtifacts".to_owned(),
                    json!([{"component": "CsvExampleGen", "artifact": "examples", "uri": "gs://bucket/examples/1"}]),
                ),
            ]
            .into(),
            frameworks: vec![Framework { name: "tfx".into(), image: "none".into(), patches: vec![] }],
            ..ProviderSpec::default()
        },
    )
}

fn pipeline(provider: &NamespacedName) -> Pipeline {
    Pipeline::new(
        "penguin",
        PipelineSpec {
            provider: provider.clone(),
            image: "quickstart:v1".into(),
            env: vec![],
            framework: PipelineFramework::new("tfx"),
        },
    )
}

fn run_configuration(
    name: &str,
    provider: &NamespacedName,
    parameters: Vec<Parameter>,
    triggers: Triggers,
) -> RunConfiguration {
    RunConfiguration::new(
        name,
        RunConfigurationSpec {
            run: RunSpec {
                provider: provider.clone(),
                pipeline: "penguin".parse().unwrap(),
                parameters,
                artifacts: vec![kfp_operator::api::OutputArtifact::new(
                    "examples",
                    "CsvExampleGen:examples".parse().unwrap(),
                )],
                ..RunSpec::default()
            },
            triggers,
        },
    )
}

async fn runs_of(client: &kube::Client, ns: &str, rc: &str) -> Vec<Run> {
    let selector = format!("pipelines.kubeflow.org/runconfiguration.name={rc}");
    Api::<Run>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
}

fn condition<'a>(rc: &'a RunConfiguration, type_: &str) -> Option<&'a Condition> {
    rc.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

#[tokio::test]
async fn the_walkthrough_chains_three_run_configurations() {
    let client = support::client().await;
    let base = support::namespace(&client, "base").await;
    let dependant = support::namespace(&client, "dependant").await;
    let namespaces = vec![base.clone(), dependant.clone()];
    let operator = Operator::start(&client, &base, |config| config.namespaces = namespaces);
    let provider = NamespacedName::new(&base, "stub");
    let post = PostParams::default();
    Api::<Provider>::namespaced(client.clone(), &base).create(&post, &stub_provider()).await.unwrap();
    for ns in [&base, &dependant] {
        Api::<Pipeline>::namespaced(client.clone(), ns).create(&post, &pipeline(&provider)).await.unwrap();
    }
    let training = run_configuration(
        "training",
        &provider,
        vec![Parameter::from_run_configuration(
            "examples_location",
            RunConfigurationRef::new(NamespacedName::new(&base, "examples"), "examples"),
        )],
        Triggers { run_configurations: vec![NamespacedName::new(&base, "examples")], ..Triggers::default() },
    );
    let evaluation = run_configuration(
        "evaluation",
        &provider,
        vec![],
        Triggers { run_configurations: vec![NamespacedName::name_only("training")], ..Triggers::default() },
    );
    let rcs = |ns: &str| Api::<RunConfiguration>::namespaced(client.clone(), ns);
    rcs(&dependant).create(&post, &training).await.unwrap();
    rcs(&dependant).create(&post, &evaluation).await.unwrap();
    let examples = run_configuration(
        "examples",
        &provider,
        vec![],
        Triggers { on_change: vec![OnChangeType::RunSpec], ..Triggers::default() },
    );
    rcs(&base).create(&post, &examples).await.unwrap();

    // The base run (onChange: runSpec fires once on creation) succeeds with its artifact.
    support::eventually("the base RunConfiguration's latest successful run", TIMEOUT, || async {
        rcs(&base).get("examples").await.ok()?.status?.latest_runs.succeeded
    })
    .await;

    // Exactly one dependant Run, with the artifact location and the trigger labels.
    let training_runs = support::eventually("the training run", TIMEOUT, || async {
        let runs = runs_of(&client, &dependant, "training").await;
        (!runs.is_empty()).then_some(runs)
    })
    .await;
    assert_eq!(training_runs.len(), 1);
    let run = &training_runs[0];
    assert_eq!(run.spec.parameters, vec![Parameter::literal("examples_location", "gs://bucket/examples/1")]);
    let labels = run.labels();
    assert_eq!(
        labels.get("pipelines.kubeflow.org/trigger-type").map(String::as_str),
        Some("runConfiguration")
    );
    assert_eq!(labels.get("pipelines.kubeflow.org/trigger-source").map(String::as_str), Some("examples"));
    assert_eq!(labels.get("pipelines.kubeflow.org/trigger-source-namespace"), Some(&base));

    // When it completes, the third RunConfiguration, chained on it, fires.
    let evaluation_runs = support::eventually("the evaluation run", TIMEOUT, || async {
        let runs = runs_of(&client, &dependant, "evaluation").await;
        (!runs.is_empty()).then_some(runs)
    })
    .await;
    assert_eq!(evaluation_runs.len(), 1);

    // And nothing more happens.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(runs_of(&client, &base, "examples").await.len(), 1);
    assert_eq!(runs_of(&client, &dependant, "training").await.len(), 1);
    assert_eq!(runs_of(&client, &dependant, "evaluation").await.len(), 1);
    operator.stop().await;
}

#[tokio::test]
async fn a_cycle_is_reported_on_every_member_and_never_loops() {
    let client = support::client().await;
    let ns = support::namespace(&client, "cycle").await;
    let operator = Operator::start(&client, &ns, |_| {});
    let provider = NamespacedName::new(&ns, "stub");
    let post = PostParams::default();
    Api::<Provider>::namespaced(client.clone(), &ns).create(&post, &stub_provider()).await.unwrap();
    Api::<Pipeline>::namespaced(client.clone(), &ns).create(&post, &pipeline(&provider)).await.unwrap();
    let rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &ns);
    let a = run_configuration(
        "a",
        &provider,
        vec![],
        Triggers {
            run_configurations: vec![NamespacedName::name_only("b")],
            on_change: vec![OnChangeType::RunSpec],
            ..Triggers::default()
        },
    );
    let b = run_configuration(
        "b",
        &provider,
        vec![],
        Triggers { run_configurations: vec![NamespacedName::name_only("a")], ..Triggers::default() },
    );
    rcs.create(&post, &a).await.unwrap();
    rcs.create(&post, &b).await.unwrap();
    for name in ["a", "b"] {
        let reported = support::eventually(&format!("{name} to report the cycle"), TIMEOUT, || async {
            let rc = rcs.get(name).await.ok()?;
            condition(&rc, "DependencyCycle").filter(|c| c.status == "True").cloned()
        })
        .await;
        assert!(
            reported.message.contains(&format!("{ns}/a")) && reported.message.contains(&format!("{ns}/b")),
            "{}",
            reported.message
        );
    }
    // a's own onChange run completes; along the cycle nothing fires.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(runs_of(&client, &ns, "a").await.len(), 1, "a's onChange run only");
    assert!(runs_of(&client, &ns, "b").await.is_empty(), "no run along a cycle edge");
    operator.stop().await;
}
