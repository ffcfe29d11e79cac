//! The validating admission webhook, called by the real apiserver over HTTPS: bad manifests are
//! refused at `create`/`update` with every reason, good ones pass. Reference scenarios (§11.2 B)
//! ported: RunConfiguration duplicate schedules and onChange entries and `value` plus
//! `valueFrom`; Run `value` plus `valueFrom` and spec immutability; Pipeline framework not in
//! its Provider; Provider reserved environment names (all reported). Deliberately different: a
//! Pipeline whose Provider does not exist yet is accepted (manifests applied together may come
//! in any order; the reconciler reports a missing Provider), and more is checked (cron fields,
//! self-triggers, duplicate parameters, artifact filters).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kfp_operator::api::{Pipeline, Provider, Run, RunConfiguration};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

mod support;

fn webhook_configuration(name: &str, port: u16, ca: &str, namespace: &str) -> ValidatingWebhookConfiguration {
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
        webhooks: Some(vec![ValidatingWebhook {
            name: "validate.pipelines.kubeflow.org".into(),
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            failure_policy: Some("Fail".into()),
            timeout_seconds: Some(5),
            client_config: WebhookClientConfig {
                url: Some(format!("https://127.0.0.1:{port}/validate")),
                ca_bundle: Some(ByteString(ca.as_bytes().to_vec())),
                service: None,
            },
            namespace_selector: Some(LabelSelector {
                match_labels: Some([("kfp-admission-test".to_owned(), namespace.to_owned())].into()),
                ..LabelSelector::default()
            }),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec!["pipelines.kubeflow.org".into()]),
                api_versions: Some(vec!["v1beta1".into()]),
                operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
                resources: Some(vec![
                    "pipelines".into(),
                    "providers".into(),
                    "runs".into(),
                    "runconfigurations".into(),
                ]),
                scope: Some("Namespaced".into()),
            }]),
            ..ValidatingWebhook::default()
        }]),
    }
}

fn refusal(error: kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message,
        other => panic!("expected a refusal, got {other}"),
    }
}

async fn create(client: &kube::Client, ns: &str, manifest: Value) -> Result<(), String> {
    let object: kube::core::DynamicObject = serde_json::from_value(manifest).unwrap();
    let kind = object.types.as_ref().unwrap().kind.clone();
    let resource = kube::core::ApiResource {
        group: "pipelines.kubeflow.org".into(),
        version: "v1beta1".into(),
        api_version: "pipelines.kubeflow.org/v1beta1".into(),
        plural: format!("{}s", kind.to_lowercase()),
        kind,
    };
    let api: Api<kube::core::DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    api.create(&PostParams::default(), &object).await.map(|_| ()).map_err(refusal)
}

#[tokio::test]
async fn the_apiserver_refuses_bad_manifests_through_the_webhook() {
    let client = support::client().await;
    let ns = support::namespace(&client, "admission").await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let label = json!({"metadata": {"labels": {"kfp-admission-test": ns}}});
    namespaces.patch(&ns, &PatchParams::default(), &Patch::Merge(label)).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (ca, cert_file, key_file) = support::serving_certificates(dir.path());
    let acceptor = kfp_operator::server::webhook::tls_acceptor(&cert_file, &key_file).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = kfp_operator::shutdown::shutdown_signal(async move {
        let _ = stopped.await;
    });
    let server = tokio::spawn(kfp_operator::server::webhook::serve(
        listener,
        acceptor,
        kfp_operator::server::webhook::router(client.clone(), Default::default()),
        shutdown,
    ));
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let name = format!("kfp-operator-{ns}");
    configurations
        .create(&PostParams::default(), &webhook_configuration(&name, port, &ca, &ns))
        .await
        .unwrap();

    let rc = |name: &str, spec: Value| {
        json!({"apiVersion": "pipelines.kubeflow.org/v1beta1", "kind": "RunConfiguration",
            "metadata": {"name": name}, "spec": spec})
    };
    let bad_rc = rc(
        "bad",
        json!({"run": {"provider": format!("{ns}/stub"), "pipeline": "p", "parameters": [
                {"name": "a", "value": "1", "valueFrom": {"runConfigurationRef": {"name": "x", "outputArtifact": "m"}}}]},
            "triggers": {"schedules": [{"cronExpression": "0 * * * *"}, {"cronExpression": "0 * * * *"}],
                "onChange": ["runSpec", "runSpec"]}}),
    );
    // The apiserver picks the configuration up within a moment.
    let message = support::eventually("the webhook to be called", Duration::from_secs(30), || {
        let (client, ns, bad_rc) = (client.clone(), ns.clone(), bad_rc.clone());
        async move { create(&client, &ns, bad_rc).await.err() }
    })
    .await;
    for reason in [
        "denied the request",
        "parameter \"a\": only one of value or valueFrom can be set",
        "triggers.schedules: \"0 * * * *\" is given more than once",
        "triggers.onChange: RunSpec is given more than once",
    ] {
        assert!(message.contains(reason), "{reason:?} in {message}");
    }
    let good_rc = rc("good", json!({"run": {"provider": format!("{ns}/stub"), "pipeline": "p"}}));
    create(&client, &ns, good_rc).await.unwrap();

    // Joins: a parse error and an unknown dependency are refused with their column; a condition
    // that does not parse or names nothing the triggers depend on, and a bad reset, too.
    let joined = |name: &str, expression: &str, extra: Value| {
        let mut triggers = json!({"join": {"expression": expression}});
        if let (Some(triggers), Value::Object(extra)) = (triggers.as_object_mut(), extra) {
            triggers.extend(extra);
        }
        rc(name, json!({"run": {"provider": format!("{ns}/stub"), "pipeline": "p"}, "triggers": triggers}))
    };
    let message = create(&client, &ns, joined("j1", "good && (bad ||", json!({}))).await.unwrap_err();
    assert!(
        message.contains("triggers.join.expression \"good && (bad ||\" does not parse at column 16"),
        "{message}"
    );
    let message = create(&client, &ns, joined("j2", "good && (goood || good)", json!({}))).await.unwrap_err();
    assert!(
        message.contains(&format!("at column 10: RunConfiguration {ns}/goood does not exist")),
        "{message}"
    );
    let message = create(
        &client,
        &ns,
        joined(
            "j3",
            "good",
            json!({"join": {"expression": "good", "reset": "sometimes"},
                "conditions": [{"runConfiguration": "other", "artifact": "metrics", "filter": "accuracy >"}]}),
        ),
    )
    .await
    .unwrap_err();
    for reason in [
        "triggers.join.reset",
        "triggers.conditions[0]: other is neither in triggers.runConfigurations nor in triggers.join",
        "triggers.conditions[0]: filter \"accuracy >\" does not parse",
    ] {
        assert!(message.contains(reason), "{reason:?} in {message}");
    }
    create(
        &client,
        &ns,
        joined(
            "j4",
            "good",
            json!({"conditions": [{"runConfiguration": "good", "artifact": "metrics", "filter": "accuracy > 0.9"}]}),
        ),
    )
    .await
    .unwrap();

    let provider = |env: Value| {
        json!({"apiVersion": "pipelines.kubeflow.org/v1beta1", "kind": "Provider", "metadata": {"name": "stub"},
            "spec": {"type": "stub", "serviceImage": "none", "serviceAccount": "sa", "pipelineRootStorage": "r",
                "frameworks": [{"name": "tfx", "image": "t"}], "podTemplateEnv": env}})
    };
    let message = create(
        &client,
        &ns,
        provider(json!([{"name": "ProviderName", "value": "x"},
        {"name": "PARAMETERS_X", "value": "y"}])),
    )
    .await
    .unwrap_err();
    assert!(
        message.contains("PROVIDERNAME is set by the operator") && message.contains("PARAMETERS_X"),
        "{message}"
    );
    create(&client, &ns, provider(json!([{"name": "LOG_LEVEL", "value": "debug"}]))).await.unwrap();

    let pipeline = |framework: &str| {
        json!({"apiVersion": "pipelines.kubeflow.org/v1beta1", "kind": "Pipeline", "metadata": {"name": framework},
            "spec": {"provider": format!("{ns}/stub"), "image": "i", "framework": {"name": framework, "parameters": {}}}})
    };
    let message = create(&client, &ns, pipeline("kfpsdk")).await.unwrap_err();
    assert!(message.contains("\"kfpsdk\" is not supported by provider"), "{message}");
    create(&client, &ns, pipeline("tfx")).await.unwrap();

    let run = json!({"apiVersion": "pipelines.kubeflow.org/v1beta1", "kind": "Run", "metadata": {"name": "once"},
        "spec": {"provider": format!("{ns}/stub"), "pipeline": "tfx"}});
    create(&client, &ns, run).await.unwrap();
    let runs: Api<Run> = Api::namespaced(client.clone(), &ns);
    let edit = json!({"spec": {"experimentName": "other"}});
    let message =
        refusal(runs.patch("once", &PatchParams::default(), &Patch::Merge(edit)).await.unwrap_err());
    assert!(message.contains("spec is immutable"), "{message}");

    // Typed objects of every validated kind pass when valid.
    assert!(Api::<RunConfiguration>::namespaced(client.clone(), &ns).get("good").await.is_ok());
    assert!(Api::<Provider>::namespaced(client.clone(), &ns).get("stub").await.is_ok());
    assert!(Api::<Pipeline>::namespaced(client.clone(), &ns).get("tfx").await.is_ok());

    configurations.delete(&name, &DeleteParams::default()).await.unwrap();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_undecodable_review_is_a_bad_request() {
    use tower::ServiceExt;
    let client = support::client().await;
    let request = axum::http::Request::post("/validate")
        .body(axum::body::Body::from("{\"not\": \"a review\"}"))
        .unwrap();
    let response =
        kfp_operator::server::webhook::router(client, Default::default()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), 400);
    let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).starts_with("not an AdmissionReview"), "{body:?}");
}
