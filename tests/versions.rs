//! The served versions, through the real apiserver calling the conversion webhook over HTTPS
//! on 127.0.0.1: the documentation's v1alpha5 manifests apply unchanged, reconcile on the
//! stub default provider, and read back identically as v1alpha5 and as the equivalent v1beta1;
//! the documented RunConfiguration fires once when its dependency in another namespace succeeds;
//! v1alpha6 manifests (a Pipeline, a Provider with `image`, a RunConfiguration with
//! `runtimeParameters` and a dependency) reconcile, read back as v1beta1 as the reference's
//! conversion rules say, and read back unchanged as v1alpha6.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kfp_operator::api::conversion::{Defaults, remainder::ANNOTATION};
use kfp_operator::api::labels::{TRIGGER_SOURCE, TRIGGER_SOURCE_NAMESPACE, TRIGGER_TYPE};
use kfp_operator::api::{NamespacedName, OnChangeType, Pipeline, Provider, Run, RunConfiguration, Triggers};
use kfp_operator::triggers::CrossNamespacePolicy;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::api::{ListParams, ObjectMeta};
use serde_json::{Value, json};

mod support;

fn api_of(client: &kube::Client, ns: &str, version: &str, kind: &str) -> Api<DynamicObject> {
    let plural = format!("{}s", kind.to_lowercase());
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("pipelines.kubeflow.org", version, kind),
        &plural,
    );
    Api::namespaced_with(client.clone(), ns, &resource)
}

async fn read(client: &kube::Client, ns: &str, version: &str, kind: &str, name: &str) -> Value {
    serde_json::to_value(api_of(client, ns, version, kind).get(name).await.unwrap()).unwrap()
}

fn kubectl(kubeconfig: &std::path::Path, args: &[&str], input: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.unwrap_or_default().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn synchronized(object: &Value) -> Option<&str> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Synchronized")?["reason"]
        .as_str()
}

const PIPELINE: &str = r#"apiVersion: pipelines.kubeflow.org/v1alpha5
kind: Pipeline
metadata:
  name: training-pipeline
spec:
  image: my-org/ml-pipeline:v1.2.0
  env:
  - name: MODEL_VERSION
    value: "v2.1"
"#;

const RUN: &str = r#"apiVersion: pipelines.kubeflow.org/v1alpha5
kind: Run
metadata:
  name: experiment-run-1
spec:
  pipeline: training-pipeline
  runtimeParameters:
    learning_rate: "0.01"
    num_epochs: "20"
"#;

const RUN_CONFIGURATION: &str = r#"apiVersion: pipelines.kubeflow.org/v1alpha5
kind: RunConfiguration
metadata:
  name: retrain-on-dependency-completion
spec:
  run:
    pipeline: training-pipeline
  triggers:
    onChange:
    - pipeline
    - runSpec
    runConfigurations:
    - some-namespace/some-dependency-rc
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_v1alpha5_and_reference_v1alpha6_manifests_are_served() {
    let plane = support::PrivateControlPlane::start().await;
    let client = plane.client().await;
    let kubeconfig = plane.kubeconfig();
    let ns = support::namespace(&client, "versions").await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert_file, key_file) = support::serving_certificates(dir.path());
    let defaults =
        Defaults { default_provider: Some(NamespacedName::new(&ns, "stub")), ..Defaults::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = kfp_operator::server::webhook::router(client.clone(), defaults.clone());
    let acceptor = kfp_operator::server::webhook::tls_acceptor(&cert_file, &key_file).unwrap();
    let shutdown = kfp_operator::shutdown::shutdown_signal(std::future::pending::<()>());
    tokio::spawn(kfp_operator::server::webhook::serve(listener, acceptor, router, shutdown));
    let url = format!("https://127.0.0.1:{port}/convert");
    kfp_operator::crds::install(&client, Duration::from_secs(60), Some((&url, ca.as_bytes()))).await.unwrap();

    let providers: Api<Provider> = Api::namespaced(client.clone(), &ns);
    providers.create(&PostParams::default(), &support::fixtures::stub_provider("stub")).await.unwrap();
    let dependency_ns = "some-namespace";
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta { name: Some(dependency_ns.into()), ..ObjectMeta::default() },
                ..Namespace::default()
            },
        )
        .await
        .unwrap();
    let _operator = support::operator::Operator::start(&client, &ns, |config| {
        config.namespaces = vec![ns.clone(), dependency_ns.to_owned()];
        config.cross_namespace_policy = CrossNamespacePolicy::Allow;
        config.default_provider = defaults.default_provider.clone();
    });

    kubectl(&kubeconfig, &["apply", "-n", &ns, "-f", "-"], Some(PIPELINE));
    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), &ns);
    let first =
        support::eventually("the v1alpha5 Pipeline synchronised", Duration::from_secs(60), || async {
            let p = pipelines.get("training-pipeline").await.ok()?;
            let hub = serde_json::to_value(&p).ok()?;
            (synchronized(&hub) == Some("Succeeded")).then(|| p.status.map(|s| s.version).unwrap_or_default())
        })
        .await;
    let five = read(&client, &ns, "v1alpha5", "Pipeline", "training-pipeline").await;
    assert_eq!(
        five["spec"],
        json!({"image": "my-org/ml-pipeline:v1.2.0", "env": [{"name": "MODEL_VERSION", "value": "v2.1"}]})
    );
    assert!(five["metadata"]["annotations"].get(ANNOTATION).is_none(), "{five:#}");
    assert_eq!(five["status"]["synchronizationState"], "Succeeded");
    let hub = read(&client, &ns, "v1beta1", "Pipeline", "training-pipeline").await;
    assert_eq!(
        hub["spec"],
        json!({"provider": format!("{ns}/stub"), "image": "my-org/ml-pipeline:v1.2.0",
        "env": [{"name": "MODEL_VERSION", "value": "v2.1"}], "framework": {"name": "tfx", "parameters": {}}})
    );

    kubectl(
        &kubeconfig,
        &[
            "patch",
            "-n",
            &ns,
            "pipeline",
            "training-pipeline",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"env":[{"name":"MODEL_VERSION","value":"v2.2"}]}}"#,
        ],
        None,
    );
    support::eventually("the patched Pipeline re-synchronised", Duration::from_secs(60), || async {
        let p = pipelines.get("training-pipeline").await.ok()?;
        let status = p.status.clone()?;
        let hub = serde_json::to_value(&p).ok()?;
        (status.version != first && synchronized(&hub) == Some("Succeeded")).then_some(())
    })
    .await;
    let five = read(&client, &ns, "v1alpha5", "Pipeline", "training-pipeline").await;
    assert_eq!(five["spec"]["env"], json!([{"name": "MODEL_VERSION", "value": "v2.2"}]));

    kubectl(&kubeconfig, &["apply", "-n", &ns, "-f", "-"], Some(RUN));
    let runs: Api<Run> = Api::namespaced(client.clone(), &ns);
    support::eventually("the v1alpha5 Run completed", Duration::from_secs(60), || async {
        let run = runs.get("experiment-run-1").await.ok()?;
        run.status?.completion_state.map(|_| ())
    })
    .await;
    let five = read(&client, &ns, "v1alpha5", "Run", "experiment-run-1").await;
    assert_eq!(
        five["spec"],
        json!({"pipeline": "training-pipeline", "runtimeParameters": {"learning_rate": "0.01", "num_epochs": "20"}})
    );
    assert_eq!(five["status"]["completionState"], "Succeeded");
    let hub = read(&client, &ns, "v1beta1", "Run", "experiment-run-1").await;
    assert_eq!(
        hub["spec"]["parameters"],
        json!([{"name": "learning_rate", "value": "0.01"}, {"name": "num_epochs", "value": "20"}])
    );

    kubectl(&kubeconfig, &["apply", "-n", &ns, "-f", "-"], Some(RUN_CONFIGURATION));
    let five = read(&client, &ns, "v1alpha5", "RunConfiguration", "retrain-on-dependency-completion").await;
    assert_eq!(
        five["spec"],
        json!({"run": {"pipeline": "training-pipeline"},
        "triggers": {"onChange": ["pipeline", "runSpec"], "runConfigurations": ["some-namespace/some-dependency-rc"]}})
    );
    let hub = read(&client, &ns, "v1beta1", "RunConfiguration", "retrain-on-dependency-completion").await;
    assert_eq!(hub["spec"]["run"]["provider"], format!("{ns}/stub"));
    assert_eq!(hub["spec"]["triggers"]["runConfigurations"], json!(["some-namespace/some-dependency-rc"]));

    // Its dependency, in another namespace, runs once its Pipeline is ready; that run's success
    // fires the documented RunConfiguration exactly once.
    let stub = NamespacedName::new(&ns, "stub");
    Api::<Pipeline>::namespaced(client.clone(), dependency_ns)
        .create(&PostParams::default(), &support::fixtures::pipeline("penguin", &stub))
        .await
        .unwrap();
    let triggers = Triggers { on_change: vec![OnChangeType::Pipeline], ..Triggers::default() };
    Api::<RunConfiguration>::namespaced(client.clone(), dependency_ns)
        .create(
            &PostParams::default(),
            &support::fixtures::run_configuration("some-dependency-rc", &stub, triggers),
        )
        .await
        .unwrap();
    let runs_in = |namespace: String, selector: String| {
        let api: Api<Run> = Api::namespaced(client.clone(), &namespace);
        async move { api.list(&ListParams::default().labels(&selector)).await.unwrap().items }
    };
    let fired = || {
        runs_in(
            ns.clone(),
            format!(
                "pipelines.kubeflow.org/runconfiguration.name=retrain-on-dependency-completion,{TRIGGER_TYPE}=runConfiguration"
            ),
        )
    };
    let dependency_runs =
        support::eventually("the dependency's run succeeded", Duration::from_secs(60), || async {
            let runs = runs_in(
                dependency_ns.to_owned(),
                "pipelines.kubeflow.org/runconfiguration.name=some-dependency-rc".to_owned(),
            )
            .await;
            runs.iter()
                .all(|run| run.status.as_ref().is_some_and(|s| s.completion_state.is_some()))
                .then_some(runs)
                .filter(|runs| !runs.is_empty())
        })
        .await;
    assert_eq!(dependency_runs.len(), 1, "the dependency runs once");
    let retrained = support::eventually(
        "the dependency's success fired the retraining",
        Duration::from_secs(60),
        || async { Some(fired().await).filter(|runs| !runs.is_empty()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let retrained_later = fired().await;
    assert_eq!(
        retrained_later.len(),
        1,
        "fired exactly once: {:?}",
        retrained.iter().map(|r| r.name_any()).collect::<Vec<_>>()
    );
    let labels = retrained_later[0].labels();
    assert_eq!(labels[TRIGGER_SOURCE], "some-dependency-rc");
    assert_eq!(labels[TRIGGER_SOURCE_NAMESPACE], dependency_ns);

    let six = r#"apiVersion: pipelines.kubeflow.org/v1alpha6
kind: Pipeline
metadata:
  name: penguin
spec:
  provider: stub
  image: my-org/penguin:v1
  tfxComponents: penguin.components
  beamArgs:
  - name: runner
    value: DirectRunner
"#;
    kubectl(&kubeconfig, &["apply", "-n", &ns, "-f", "-"], Some(six));
    let hub = read(&client, &ns, "v1beta1", "Pipeline", "penguin").await;
    assert_eq!(
        hub["spec"],
        json!({"provider": format!("{ns}/stub"), "image": "my-org/penguin:v1",
        "framework": {"name": "tfx", "parameters": {"components": "penguin.components",
        "beamArgs": [{"name": "runner", "value": "DirectRunner"}]}}})
    );
    support::eventually("the v1alpha6 Pipeline synchronised", Duration::from_secs(60), || async {
        let p = pipelines.get("penguin").await.ok()?;
        (synchronized(&serde_json::to_value(&p).ok()?) == Some("Succeeded")).then_some(())
    })
    .await;
    let six = read(&client, &ns, "v1alpha6", "Pipeline", "penguin").await;
    assert_eq!(six["spec"]["provider"], "stub");
    assert_eq!(six["spec"]["tfxComponents"], "penguin.components");

    let six_provider = json!({"image": "my-org/tfx-compiler:v1", "serviceImage": "my-org/provider-service:v1",
        "serviceAccount": "default", "pipelineRootStorage": "memory://root",
        "defaultBeamArgs": [{"name": "project", "value": "my-project"}]});
    let manifest = json!({"apiVersion": "pipelines.kubeflow.org/v1alpha6", "kind": "Provider",
        "metadata": {"name": "tfx-provider"}, "spec": six_provider});
    kubectl(&kubeconfig, &["apply", "-n", &ns, "-f", "-"], Some(&manifest.to_string()));
    let hub = read(&client, &ns, "v1beta1", "Provider", "tfx-provider").await;
    assert_eq!(hub["spec"]["serviceImage"], "my-org/provider-service:v1");
    assert_eq!(hub["spec"]["pipelineRootStorage"], "memory://root");
    let frameworks = hub["spec"]["frameworks"].as_array().unwrap();
    assert_eq!(frameworks.len(), 1, "{hub:#}");
    assert_eq!(frameworks[0]["name"], "tfx");
    assert_eq!(frameworks[0]["image"], "my-org/tfx-compiler:v1", "no defaultTfxImage: the Provider's image");
    let patches = frameworks[0]["patches"].to_string();
    assert!(
        patches.contains("/framework/parameters/beamArgs/0") && patches.contains("my-project"),
        "{patches}"
    );
    let providers_hub: Api<Provider> = Api::namespaced(client.clone(), &ns);
    support::eventually("the v1alpha6 Provider reconciled", Duration::from_secs(60), || async {
        let provider = providers_hub.get("tfx-provider").await.ok()?;
        synchronized(&serde_json::to_value(&provider).ok()?).map(|_| ())
    })
    .await;
    let six = read(&client, &ns, "v1alpha6", "Provider", "tfx-provider").await;
    assert_eq!(six["spec"], six_provider, "read back unchanged as v1alpha6");

    let six_rc = json!({"run": {"provider": "stub", "pipeline": "penguin", "runtimeParameters": [
            {"name": "learning_rate", "value": "0.1"},
            {"name": "model_location", "valueFrom": {"runConfigurationRef": {
                "name": "some-namespace/some-dependency-rc", "outputArtifact": "serving-model"}}}]},
        "triggers": {"runConfigurations": ["some-namespace/some-dependency-rc"]}});
    let manifest = json!({"apiVersion": "pipelines.kubeflow.org/v1alpha6", "kind": "RunConfiguration",
        "metadata": {"name": "penguin-evaluation"}, "spec": six_rc});
    kubectl(&kubeconfig, &["apply", "-n", &ns, "-f", "-"], Some(&manifest.to_string()));
    let hub = read(&client, &ns, "v1beta1", "RunConfiguration", "penguin-evaluation").await;
    assert_eq!(hub["spec"]["run"]["provider"], format!("{ns}/stub"));
    assert_eq!(hub["spec"]["run"]["pipeline"], "penguin");
    assert_eq!(hub["spec"]["run"]["parameters"], six_rc["run"]["runtimeParameters"]);
    assert_eq!(hub["spec"]["triggers"]["runConfigurations"], json!(["some-namespace/some-dependency-rc"]));
    let rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &ns);
    support::eventually("the v1alpha6 RunConfiguration synchronised", Duration::from_secs(60), || async {
        let rc = rcs.get("penguin-evaluation").await.ok()?;
        (synchronized(&serde_json::to_value(&rc).ok()?) == Some("Succeeded")).then_some(())
    })
    .await;
    let six = read(&client, &ns, "v1alpha6", "RunConfiguration", "penguin-evaluation").await;
    assert_eq!(six["spec"], six_rc, "read back unchanged as v1alpha6");
    if let Some(remainder) = six["metadata"]["annotations"].get(ANNOTATION) {
        let remainder: Value = serde_json::from_str(remainder.as_str().unwrap()).unwrap();
        let paths: Vec<&str> =
            remainder["v1beta1"].as_array().unwrap().iter().filter_map(|e| e["path"].as_str()).collect();
        assert!(
            paths.iter().all(|p| p.starts_with("/status/")),
            "only status v1alpha6 cannot hold: {paths:?}"
        );
    }

    for version in ["v1beta1", "v1alpha6", "v1alpha5"] {
        let explained = kubectl(
            &kubeconfig,
            &["explain", "pipelines.spec", &format!("--api-version=pipelines.kubeflow.org/{version}")],
            None,
        );
        assert!(explained.contains("image"), "{version}: {explained}");
    }
}
