//! The in-cluster installation: the generated files are current, the kustomize base and overlay
//! render (with `kubectl kustomize`) to the code's objects, the Helm chart's templates render to
//! the same objects, the manifests apply to a real apiserver, and the operator binary,
//! acting as the installation's ServiceAccount (so with only the generated ClusterRole), runs
//! the whole chain without a forbidden request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kfp_operator::api::{
    NamespacedName, OnChangeType, Pipeline, Provider, ProviderSpec, Run, RunConfiguration, Triggers,
};
use kfp_operator::tools::deploy::Installation;
use kfp_operator::tools::generated::generated_files;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

mod support;

use support::chart::{documents, kind_and_name, normalised};

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn generated_files_are_current() {
    for (path, content) in generated_files().unwrap() {
        let on_disk = std::fs::read_to_string(support::repo_root().join(&path)).unwrap_or_default();
        assert!(
            on_disk == content,
            "{path} is out of date: run `cargo run -- manifests --write-files .` and commit the result"
        );
    }
}

fn kustomize(dir: &str) -> Vec<Value> {
    let output = support::kubectl(&["kustomize", support::repo_root().join(dir).to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    documents(&String::from_utf8(output.stdout).unwrap())
}

#[test]
fn the_kustomize_base_and_overlay_render() {
    let rendered = kustomize("deploy/base");
    let expected = documents(&format!(
        "{}{}",
        kfp_operator::api::crd::all_to_yaml().unwrap(),
        Installation::default().to_yaml(true).unwrap()
    ));
    assert_eq!(rendered.len(), expected.len());
    for object in &expected {
        let found = rendered.iter().find(|r| kind_and_name(r) == kind_and_name(object)).map(normalised);
        assert!(found == Some(normalised(object)), "{:?} renders unchanged", kind_and_name(object));
    }

    let overlay = kustomize("deploy/overlays/single-namespace");
    let find = |kind: &str| overlay.iter().find(|o| o["kind"] == kind).unwrap();
    let config = find("ConfigMap")["data"]["operator.yaml"].as_str().unwrap();
    let parsed: kfp_operator::config::OperatorConfig = serde_saphyr::from_str(config).unwrap();
    parsed.validate().unwrap();
    assert_eq!(parsed.namespaces, vec!["ml".to_owned()]);
    let image = find("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap();
    assert_eq!(image, format!("registry.example.com/ml-platform/kfp-operator:{}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn the_webhook_overlay_configures_the_operator_and_the_apiserver() {
    let overlay = kustomize("deploy/overlays/webhook");
    let find = |kind: &str| overlay.iter().find(|o| o["kind"] == kind).unwrap().clone();
    let serving = Installation {
        webhook_tls_secret: Some("kfp-operator-webhook-tls".into()),
        ..Installation::default()
    };
    assert_eq!(
        normalised(&find("Deployment")),
        normalised(&serde_json::to_value(serving.deployment()).unwrap())
    );
    let service =
        overlay.iter().find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "kfp-operator").unwrap();
    assert_eq!(normalised(service), normalised(&serde_json::to_value(serving.service()).unwrap()));
    let webhook = find("ValidatingWebhookConfiguration");
    let output = support::kubectl_with_input(
        &["apply", "--dry-run=server", "-f", "-"],
        &serde_saphyr::to_string(&webhook).unwrap(),
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// A kubeconfig for the test apiserver that acts as `user` in `groups`.
fn impersonating_kubeconfig(dir: &std::path::Path, user: &str, groups: &[String]) -> std::path::PathBuf {
    let admin = std::fs::read_to_string(&support::control_plane().kubeconfig).unwrap();
    let mut config: Value = serde_saphyr::from_str(&admin).unwrap();
    for entry in config["users"].as_array_mut().unwrap() {
        entry["user"]["as"] = json!(user);
        entry["user"]["as-groups"] = json!(groups);
    }
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_saphyr::to_string(&config).unwrap()).unwrap();
    path
}

fn apply(objects: &[Value]) {
    let stream: String =
        objects.iter().map(|object| format!("---\n{}", serde_saphyr::to_string(object).unwrap())).collect();
    let output = support::kubectl_with_input(&["apply", "-f", "-"], &stream);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test]
async fn the_operator_needs_no_more_than_its_cluster_role() {
    let client = support::client().await;
    let ns = support::namespace(&client, "installation").await;
    let name = format!("kfp-{ns}");
    let installation = Installation { namespace: ns.clone(), name: name.clone(), ..Installation::default() };
    apply(&installation.objects(false).unwrap());

    let dir = tempfile::tempdir().unwrap();
    let groups = vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{ns}"),
        "system:authenticated".into(),
    ];
    let kubeconfig =
        impersonating_kubeconfig(dir.path(), &format!("system:serviceaccount:{ns}:{name}"), &groups);
    let acting = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(acting, &ns);
    let refused = secrets.list(&ListParams::default()).await.unwrap_err();
    assert!(matches!(&refused, kube::Error::Api(status) if status.code == 403), "{refused}");

    let config = dir.path().join("operator.yaml");
    let events_port = support::free_port();
    std::fs::write(
        &config,
        format!(
            "namespaces: [{ns}]\nleaderElection: {{enabled: true, namespace: {ns}, leaseName: {name}}}\nevents:\n  \
             listenAddr: 127.0.0.1:{events_port}\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("operator.log");
    let admin_port = support::free_port();
    let _operator = support::operator::OperatorProcess::start_with(&config, &kubeconfig, admin_port, &log);

    let post = PostParams::default();
    let stub = support::fixtures::stub_provider("stub");
    Api::<Provider>::namespaced(client.clone(), &ns).create(&post, &stub).await.unwrap();
    let workload = Provider::new(
        "vai",
        ProviderSpec {
            service_image: "ghcr.io/example/vai-provider:1".into(),
            service_account: "kfp-vai".into(),
            pipeline_root_storage: "gs://root".into(),
            ..ProviderSpec::default()
        },
    );
    Api::<Provider>::namespaced(client.clone(), &ns).create(&post, &workload).await.unwrap();
    let provider = NamespacedName::new(&ns, "stub");
    let pipeline = support::fixtures::pipeline("penguin", &provider);
    Api::<Pipeline>::namespaced(client.clone(), &ns).create(&post, &pipeline).await.unwrap();
    let run_configuration =
        |name: &str, triggers: Triggers| support::fixtures::run_configuration(name, &provider, triggers);
    let rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &ns);
    let on_spec = Triggers { on_change: vec![OnChangeType::RunSpec], ..Triggers::default() };
    rcs.create(&post, &run_configuration("training", on_spec)).await.unwrap();
    let after_training =
        Triggers { run_configurations: vec!["training".parse().unwrap()], ..Triggers::default() };
    rcs.create(&post, &run_configuration("evaluation", after_training)).await.unwrap();

    // training fires on creation, its stub run completes, and the completion fans out.
    let runs: Api<Run> = Api::namespaced(client.clone(), &ns);
    support::eventually("evaluation's triggered run", TIMEOUT, || async {
        let selector = "pipelines.kubeflow.org/runconfiguration.name=evaluation";
        (!runs.list(&ListParams::default().labels(selector)).await.ok()?.items.is_empty()).then_some(())
    })
    .await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), &ns);
    support::eventually("the provider service Deployment", TIMEOUT, || async {
        deployments.get_opt("provider-vai").await.ok()?
    })
    .await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    support::eventually("the operator's Events", TIMEOUT, || async {
        (!events.list(&ListParams::default()).await.ok()?.items.is_empty()).then_some(())
    })
    .await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), &ns);
    assert!(leases.get(&name).await.unwrap().spec.unwrap().holder_identity.is_some(), "it leads");

    // A provider service's completion, authenticated with a TokenReview the operator makes as
    // its ServiceAccount.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let account = ServiceAccount {
        metadata: kube::api::ObjectMeta { name: Some("default".into()), ..Default::default() },
        ..ServiceAccount::default()
    };
    if accounts.get_opt("default").await.unwrap().is_none() {
        accounts.create(&post, &account).await.unwrap();
    }
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["kfp-operator-events".into()],
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let token =
        accounts.create_token_request("default", &post, &request).await.unwrap().status.unwrap().token;
    let evaluation = runs
        .list(&ListParams::default().labels("pipelines.kubeflow.org/runconfiguration.name=evaluation"))
        .await
        .unwrap()
        .items
        .remove(0);
    let completion = json!({
        "status": "succeeded", "pipelineName": format!("{ns}/penguin"), "runId": "from-the-service",
        "runName": format!("{ns}/{}", evaluation.name_any()), "provider": format!("{ns}/stub"),
    });
    let (status, _, body) =
        support::post_events(events_port, Some(&format!("Bearer {token}")), &completion.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(!written.to_lowercase().contains("forbidden"), "the operator was refused something:\n{written}");
}

/// The local node's overlay changes only what the node needs: the host network with the API
/// server on loopback, loopback ports of its own (the same in the arguments, the container ports
/// and the probes), the local image never pulled, and the watched namespaces with the local NATS.
#[test]
fn the_local_overlay_runs_the_base_on_the_host_network() {
    let base = kustomize("deploy/base");
    let overlay = kustomize("deploy/overlays/local");
    assert_eq!(overlay.len(), base.len());
    for object in &base {
        let kind = object["kind"].as_str().unwrap();
        if kind != "Deployment" && kind != "ConfigMap" {
            let found = overlay.iter().find(|o| kind_and_name(o) == kind_and_name(object));
            assert_eq!(
                found.map(normalised),
                Some(normalised(object)),
                "{:?} is the base's",
                kind_and_name(object)
            );
        }
    }
    let find = |kind: &str| overlay.iter().find(|o| o["kind"] == kind).unwrap().clone();
    let defaults = kfp_operator::tools::deploy::LocalOverlay::default();
    let config: kfp_operator::config::OperatorConfig =
        serde_saphyr::from_str(find("ConfigMap")["data"]["operator.yaml"].as_str().unwrap()).unwrap();
    config.validate().unwrap();
    assert_eq!(config.namespaces, defaults.namespaces);

    let pod = &find("Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["serviceAccountName"], "kfp-operator");
    let container = &pod["containers"][0];
    assert_eq!(container["imagePullPolicy"], "Never");
    assert!(container["image"].as_str().unwrap().starts_with("localhost/kfp-operator:"), "{container}");
    let env = |name: &str| {
        container["env"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap()["value"].clone()
    };
    assert_eq!(env("KUBERNETES_SERVICE_HOST"), "127.0.0.1");
    assert_eq!(env("KUBERNETES_SERVICE_PORT"), defaults.apiserver_port.to_string());
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let port_of = |name: &str| {
        container["ports"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["containerPort"]
            .as_u64()
            .unwrap()
    };
    for (flag, port) in [("--admin-addr", "admin"), ("--events-addr", "events")] {
        let address = args[args.iter().position(|a| *a == flag).unwrap() + 1];
        assert_eq!(address, format!("127.0.0.1:{}", port_of(port)), "{args:?}");
    }
    assert_eq!(port_of("admin"), u64::from(defaults.admin_port));
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["host"], "127.0.0.1", "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
}

#[test]
fn the_monitoring_and_network_policy_overlays_add_their_objects_to_the_base() {
    let installation = Installation::default();
    let monitoring = kustomize("deploy/overlays/monitoring");
    let kinds: Vec<(String, String)> = monitoring
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
        .map(kind_and_name)
        .filter(|(kind, _)| ["ServiceMonitor", "PrometheusRule", "ConfigMap"].contains(&kind.as_str()))
        .collect();
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    let monitor = monitoring.iter().find(|o| o["kind"] == "ServiceMonitor").unwrap();
    let metrics = serde_json::to_value(installation.metrics_service()).unwrap();
    assert_eq!(monitor["spec"]["selector"]["matchLabels"], metrics["metadata"]["labels"]);
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], metrics["spec"]["ports"][0]["name"]);
    let dashboard = monitoring.iter().find(|o| o["metadata"]["name"] == "kfp-operator-dashboard").unwrap();
    let on_disk: Value = serde_json::from_str(
        &std::fs::read_to_string(
            support::repo_root().join("deploy/overlays/monitoring/kfp-operator-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let in_config_map: Value =
        serde_json::from_str(dashboard["data"]["kfp-operator.json"].as_str().unwrap()).unwrap();
    assert_eq!(in_config_map, on_disk);

    let policy_overlay = kustomize("deploy/overlays/network-policy");
    let policy = policy_overlay.iter().find(|o| o["kind"] == "NetworkPolicy").unwrap();
    let mut in_default = policy.clone();
    in_default["metadata"]["namespace"] = json!("default");
    let output = support::kubectl_with_input(
        &["apply", "--dry-run=server", "-f", "-"],
        &serde_saphyr::to_string(&in_default).unwrap(),
    );
    assert!(
        output.status.success(),
        "the API server takes the NetworkPolicy: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deployment = serde_json::to_value(installation.deployment()).unwrap();
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&policy["spec"]["podSelector"]["matchLabels"], pod_labels, "it selects the operator's pod");
    let ports: Vec<&Value> =
        policy["spec"]["ingress"].as_array().unwrap().iter().map(|r| &r["ports"][0]["port"]).collect();
    assert_eq!(ports, [&json!("events"), &json!("admin")], "in: only the events and metrics ports");
}
