//! The served versions, through the real apiserver calling the conversion webhook over HTTPS
//! on 127.0.0.1: the documentation's v1alpha5 manifests apply unchanged, reconcile on the
//! stub default provider, and read back identically as v1alpha5 and as the equivalent v1beta1;
//! a v1alpha6 manifest reads back as v1beta1 as the reference's conversion rules say.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use kfp_operator::api::conversion::{Defaults, remainder::ANNOTATION};
use kfp_operator::api::{NamespacedName, Pipeline, Provider, Run};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};

mod support;

fn certificates(dir: &std::path::Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (ca.pem(), cert_file, key_file)
}

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
    let (ca, cert_file, key_file) = certificates(dir.path());
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
    let _operator = support::operator::Operator::start(&client, &ns, |config| {
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

    for version in ["v1beta1", "v1alpha6", "v1alpha5"] {
        let explained = kubectl(
            &kubeconfig,
            &["explain", "pipelines.spec", &format!("--api-version=pipelines.kubeflow.org/{version}")],
            None,
        );
        assert!(explained.contains("image"), "{version}: {explained}");
    }
}
