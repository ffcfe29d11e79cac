//! The Helm chart, rendered by Go's text/template as `helm template` renders it: it gives the
//! code's typed objects for the defaults and for every optional part, every value its schema
//! allows changes what it renders, values its schema refuses are refused, and the CRDs call the
//! release's webhook with the configured CA.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kfp_operator::tools::chart::{ChartValues, values_schema, webhook_certificate};
use kfp_operator::tools::deploy::{Installation, NetworkAccess};
use kfp_operator::tools::monitoring;
use serde_json::{Value, json};

mod support;

use support::chart::{kind_and_name, normalised, render};

/// Each object with its configuration file parsed (the chart writes it with `toYaml`, the code
/// by hand) and its numbers normalised.
fn comparable(objects: &[Value]) -> Vec<Value> {
    objects
        .iter()
        .map(|object| {
            let mut object = normalised(object);
            if let Some(config) = object.pointer_mut("/data/operator.yaml") {
                let parsed: Value = serde_saphyr::from_str(config.as_str().unwrap()).unwrap();
                *config = parsed;
            }
            object
        })
        .collect()
}

fn of_kind(rendered: &[Value], kinds: &[&str]) -> Vec<Value> {
    rendered.iter().filter(|o| kinds.contains(&o["kind"].as_str().unwrap_or_default())).cloned().collect()
}

const INSTALLATION_KINDS: [&str; 8] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Deployment",
    "Service",
];

/// The installation the chart should render as release `kfp` in `ml-ops`, before `change`.
fn expected_installation(change: impl FnOnce(&mut Installation)) -> Installation {
    let mut installation = Installation {
        namespace: "ml-ops".into(),
        name: "kfp".into(),
        config:
            "namespaces: []\ncrossNamespacePolicy: allow\nevents:\n  authentication: serviceAccountToken\n  \
                 tokenAudience: kfp-operator-events\n"
                .into(),
        ..Installation::default()
    };
    change(&mut installation);
    installation
}

fn assert_renders(rendered: &[Value], expected: &[Value]) {
    let (mut rendered, mut expected) = (comparable(rendered), comparable(expected));
    rendered.sort_by_key(kind_and_name);
    expected.sort_by_key(kind_and_name);
    let names = |objects: &[Value]| objects.iter().map(kind_and_name).collect::<Vec<_>>();
    assert_eq!(names(&rendered), names(&expected));
    for (rendered, expected) in rendered.iter().zip(&expected) {
        assert!(
            rendered == expected,
            "{:?} renders as expected:\n{}\nexpected:\n{}",
            kind_and_name(expected),
            serde_saphyr::to_string(rendered).unwrap(),
            serde_saphyr::to_string(expected).unwrap()
        );
    }
}

/// The CRDs the chart should install: the code's, calling the release's Service, with this CA
/// bundle and cert-manager annotation.
fn expected_crds(ca_bundle: &str, inject_ca_from: &str) -> Vec<Value> {
    let mut expected: Vec<Value> =
        kfp_operator::api::crd::all().iter().map(|crd| serde_json::to_value(crd).unwrap()).collect();
    for crd in &mut expected {
        crd["metadata"]["annotations"] = if inject_ca_from.is_empty() {
            json!({})
        } else {
            json!({"cert-manager.io/inject-ca-from": inject_ca_from})
        };
        let client = crd.pointer_mut("/spec/conversion/webhook/clientConfig").unwrap();
        client["service"]["namespace"] = json!("ml-ops");
        client["service"]["name"] = json!("kfp");
        client["caBundle"] = json!(ca_bundle);
    }
    expected
}

fn objects(installation: &Installation) -> Vec<Value> {
    installation.objects(false).unwrap()
}

#[test]
fn the_default_values_render_the_plain_installation_and_the_crds() {
    let rendered = render("kfp", "ml-ops", &json!({})).unwrap();
    assert_renders(&of_kind(&rendered, &INSTALLATION_KINDS), &objects(&expected_installation(|_| {})));
    assert_renders(&of_kind(&rendered, &["CustomResourceDefinition"]), &expected_crds("", ""));
    let kinds: Vec<(String, String)> = rendered.iter().map(kind_and_name).collect();
    assert_eq!(kinds.len(), 9 + 6, "nothing optional: {kinds:?}");
}

#[test]
fn every_optional_part_renders_the_typed_objects() {
    let values = json!({
        "replicas": 3,
        "leaderElection": {"enabled": true},
        "namespaces": ["ml-a", "ml-b"],
        "crossNamespacePolicy": "grant",
        "events": {"nats": {"url": "nats://nats.ml-ops:4222", "credsFile": "/etc/kfp-operator/credentials/nats.creds"}},
        "sinkCredentials": {"secretName": "nats-creds"},
        "resources": {"limits": {"memory": "1Gi"}},
        "config": {"concurrency": 8},
        "webhook": {"enabled": true, "certManager": true},
        "serviceMonitor": {"enabled": true, "interval": "15s", "labels": {"release": "prometheus"}},
        "prometheusRule": {"enabled": true, "labels": {"role": "alerts"}},
        "dashboard": {"enabled": true, "labels": {"team": "ml"}},
        "networkPolicy": {
            "enabled": true,
            "providerNamespaces": ["ml-a", "ml-b"],
            "monitoringNamespaces": ["observability"],
            "natsNamespaces": ["argo-events"],
            "natsPort": 4223,
            "providerServicePort": 9090,
            "apiServerCidrs": ["10.0.0.1/32"],
        },
    });
    let rendered = render("kfp", "ml-ops", &values).unwrap();
    let installation = expected_installation(|i| {
        i.replicas = 3;
        i.config = "namespaces: [ml-a, ml-b]\ncrossNamespacePolicy: grant\nconcurrency: 8\nevents:\n  authentication: serviceAccountToken\n  \
                    tokenAudience: kfp-operator-events\n  nats:\n    url: \
                    nats://nats.ml-ops:4222\n    credsFile: /etc/kfp-operator/credentials/nats.creds\n"
            .into();
        i.sink_credentials_secret = Some("nats-creds".into());
        // Helm merges values into the defaults, so the requests stay.
        i.resources = serde_json::from_value(
            json!({"limits": {"memory": "1Gi"}, "requests": {"cpu": "100m", "memory": "64Mi"}}),
        )
        .unwrap();
        i.webhook_tls_secret = Some("kfp-webhook-tls".into());
    });
    let mut expected = objects(&installation);
    let labels = serde_json::to_value(installation.labels()).unwrap();
    let with = |extra: Value| {
        let mut labels = labels.clone();
        labels.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        labels
    };
    let mut monitor = monitoring::service_monitor(
        "ml-ops",
        "kfp-metrics",
        &labels,
        &with(json!({"release": "prometheus"})),
    );
    monitor["spec"]["endpoints"][0]["interval"] = json!("15s");
    expected.extend([
        monitor,
        monitoring::prometheus_rule("ml-ops", "kfp", &with(json!({"role": "alerts"}))),
        monitoring::dashboard_config_map("ml-ops", "kfp", &with(json!({"team": "ml"}))).unwrap(),
    ]);
    expected.push(
        serde_json::to_value(installation.network_policy(&NetworkAccess {
            provider_namespaces: vec!["ml-a".into(), "ml-b".into()],
            monitoring_namespaces: vec!["observability".into()],
            nats_namespaces: vec!["argo-events".into()],
            nats_port: 4223,
            provider_service_port: 9090,
            api_server_cidrs: vec!["10.0.0.1/32".into()],
            ..NetworkAccess::defaults("ml-ops")
        }))
        .unwrap(),
    );
    expected.extend(webhook_certificate("ml-ops", "kfp", "kfp-webhook-tls"));
    let kinds = [
        &INSTALLATION_KINDS[..],
        &["ServiceMonitor", "PrometheusRule", "NetworkPolicy", "Issuer", "Certificate"],
    ]
    .concat();
    assert_renders(&of_kind(&rendered, &kinds), &expected);
    assert_renders(
        &of_kind(&rendered, &["CustomResourceDefinition"]),
        &expected_crds("", "ml-ops/kfp-webhook"),
    );

    let config =
        rendered.iter().find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "kfp").unwrap();
    let parsed: kfp_operator::config::OperatorConfig =
        serde_saphyr::from_str(config["data"]["operator.yaml"].as_str().unwrap()).unwrap();
    parsed.validate().unwrap();
    assert_eq!(parsed.namespaces, ["ml-a", "ml-b"], "the operator reads what the chart writes");
}

#[test]
fn the_network_policy_defaults_to_the_release_namespace() {
    let rendered = render("kfp", "ml-ops", &json!({"networkPolicy": {"enabled": true}})).unwrap();
    let installation = expected_installation(|_| {});
    let expected =
        serde_json::to_value(installation.network_policy(&NetworkAccess::defaults("ml-ops"))).unwrap();
    assert_renders(&of_kind(&rendered, &["NetworkPolicy"]), &[expected]);
}

#[test]
fn the_webhook_serves_with_a_given_secret_and_ca() {
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pem);
    let values =
        json!({"webhook": {"enabled": true, "tlsSecret": "ops-tls"}, "conversion": {"caBundle": encoded}});
    let rendered = render("kfp", "ml-ops", &values).unwrap();
    let installation = expected_installation(|i| i.webhook_tls_secret = Some("ops-tls".into()));
    assert_renders(&of_kind(&rendered, &INSTALLATION_KINDS), &objects(&installation));
    assert!(!rendered.iter().any(|o| o["apiVersion"] == "cert-manager.io/v1"), "no cert-manager objects");
    assert_renders(&of_kind(&rendered, &["CustomResourceDefinition"]), &expected_crds(&encoded, ""));

    let injected = json!({"conversion": {"injectCaFrom": "certs/ops-ca"}});
    let crds = of_kind(&render("kfp", "ml-ops", &injected).unwrap(), &["CustomResourceDefinition"]);
    assert_renders(&crds, &expected_crds("", "certs/ops-ca"));
    let output = support::kubectl_with_input(
        &["apply", "--dry-run=server", "-f", "-"],
        &crds.iter().map(|crd| format!("---\n{}", serde_saphyr::to_string(crd).unwrap())).collect::<String>(),
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

fn validator() -> jsonschema::Validator {
    jsonschema::draft7::new(&values_schema()).unwrap()
}

#[test]
fn the_values_file_is_valid_and_values_the_schema_refuses_are_refused() {
    let validator = validator();
    let defaults = support::chart::default_values();
    assert!(validator.is_valid(&defaults), "values.yaml");
    assert_eq!(serde_json::from_value::<ChartValues>(defaults.clone()).unwrap(), ChartValues::default());
    for (wrong, why) in [
        (json!({"replicas": 0}), "at least one replica"),
        (json!({"image": {"pullPolicy": "Sometimes"}}), "a pull policy Kubernetes knows"),
        (json!({"crossNamespacePolicy": "maybe"}), "allow, deny or grant"),
        (json!({"webhook": {"enabled": "yes"}}), "a boolean"),
        (json!({"networkPolicy": {"natsPort": 70000}}), "a port"),
        (json!({"networkPolicy": {"monitoringNamespaces": []}}), "a namespace to scrape from"),
        (json!({"serviceMonitor": {"labels": {"release": 1}}}), "labels are strings"),
        (json!({"replica": 2}), "no unknown value"),
        (json!({"webhook": {"certmanager": true}}), "no unknown nested value"),
    ] {
        let values = support::chart::merged(defaults.clone(), &wrong);
        assert!(!validator.is_valid(&values), "{wrong} is refused: {why}");
    }
}

/// Every value of the schema: its path and its schema.
fn leaves(schema: &Value, path: Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
    match schema["properties"].as_object() {
        Some(properties) => {
            for (key, property) in properties {
                leaves(property, [path.clone(), vec![key.clone()]].concat(), out);
            }
        }
        None => out.push((path, schema.clone())),
    }
}

/// A value other than `current` that `schema` allows.
fn another(schema: &Value, current: &Value) -> Value {
    if let Some(options) = schema["enum"].as_array() {
        return options.iter().find(|o| *o != current).unwrap().clone();
    }
    match schema["type"].as_str().unwrap_or("object") {
        "boolean" => json!(!current.as_bool().unwrap()),
        "integer" => {
            let value = current.as_i64().unwrap();
            let max = schema["maximum"].as_i64().unwrap_or(i64::MAX);
            json!(if value < max { value + 1 } else { value - 1 })
        }
        "string" => json!(format!("{}-changed", current.as_str().unwrap())),
        "array" => {
            let mut items = current.as_array().unwrap().clone();
            items.push(json!("changed"));
            Value::Array(items)
        }
        _ => {
            let mut map = current.as_object().unwrap().clone();
            map.insert("changed".into(), json!("changed"));
            Value::Object(map)
        }
    }
}

fn set(values: &mut Value, path: &[String], value: Value) {
    let mut at = values;
    for key in path {
        at = &mut at[key.as_str()];
    }
    *at = value;
}

fn get<'a>(values: &'a Value, path: &[String]) -> &'a Value {
    path.iter().fold(values, |at, key| &at[key.as_str()])
}

#[test]
fn every_value_of_the_schema_changes_what_the_chart_renders() {
    let schema = values_schema();
    let validator = validator();
    let mut all = Vec::new();
    leaves(&schema, Vec::new(), &mut all);
    // Everything optional on, so that a value of an optional part has something to change.
    let mut baseline = support::chart::default_values();
    for (path, leaf) in &all {
        if leaf["type"] == "boolean" {
            set(&mut baseline, path, json!(true));
        }
    }
    let before = render("kfp", "ml-ops", &baseline).unwrap();
    assert!(all.len() >= 30, "{} values", all.len());
    for (path, leaf) in &all {
        let mut values = baseline.clone();
        let changed = another(leaf, get(&baseline, path));
        set(&mut values, path, changed.clone());
        assert!(validator.is_valid(&values), "{} = {changed} is a valid value", path.join("."));
        let after = render("kfp", "ml-ops", &values).unwrap_or_else(|e| panic!("{}: {e}", path.join(".")));
        assert_ne!(
            comparable(&after),
            comparable(&before),
            "{} = {changed} changes the rendered objects",
            path.join(".")
        );
    }
}
