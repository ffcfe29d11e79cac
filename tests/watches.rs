//! How many watches the operator opens, counted where they land: in the API server's audit log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

mod support;
use support::operator::OperatorProcess;

const NAMESPACES: usize = 20;

/// The operator's watch requests in the audit log (not the API server's own), by resource and
/// namespace.
fn watches(audit_log: &std::path::Path) -> BTreeMap<(String, String), usize> {
    let text = std::fs::read_to_string(audit_log).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let operator = event["user"]["username"] == "kfp-dev-admin";
        if !operator || event["verb"] != "watch" || event["stage"] != "RequestReceived" {
            continue;
        }
        let resource = event["objectRef"]["resource"].as_str().unwrap_or_default().to_owned();
        let namespace = event["objectRef"]["namespace"].as_str().unwrap_or("(all)").to_owned();
        *counts.entry((resource, namespace)).or_default() += 1;
    }
    counts
}

/// With 20 watched namespaces there is one controller per kind over all of them: one
/// RunConfiguration watch and one Pipeline watch per namespace (each shared by the controllers
/// that follow that kind), not one per controller and namespace, and not one per pair of
/// namespaces.
#[tokio::test]
async fn twenty_namespaces_are_watched_once_each_per_kind() {
    let plane = support::PrivateControlPlane::start_with_args(|dir| {
        let policy = dir.join("audit-policy.yaml");
        std::fs::write(
            &policy,
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [ResponseStarted, ResponseComplete]\nrules:\n\
             - level: Metadata\n  verbs: [watch]\n- level: None\n",
        )
        .unwrap();
        format!("--audit-policy-file={} --audit-log-path={}", policy.display(), dir.join("audit.log").display())
    })
    .await;
    let client = plane.client().await;
    let mut namespaces = Vec::new();
    for i in 0..NAMESPACES {
        namespaces.push(support::namespace(&client, &format!("watched-{i}")).await);
    }
    let config = plane.dir.path().join("operator.yaml");
    std::fs::write(
        &config,
        format!(
            "namespaces: [{}]\nevents:\n  listenAddr: 127.0.0.1:{}\n",
            namespaces.join(", "),
            support::free_port()
        ),
    )
    .unwrap();
    let log = plane.dir.path().join("operator.log");
    let operator = OperatorProcess::start_with(&config, &plane.kubeconfig(), support::free_port(), &log);
    support::eventually("the operator to be ready", Duration::from_secs(60), || async {
        operator.ready().await.then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let counts = watches(&plane.dir.path().join("audit.log"));
    for resource in ["runconfigurations", "pipelines"] {
        let per_namespace: Vec<usize> = namespaces
            .iter()
            .map(|ns| counts.get(&(resource.to_owned(), ns.clone())).copied().unwrap_or(0))
            .collect();
        assert!(
            per_namespace.iter().all(|n| *n == 1),
            "{resource}: watches per namespace {per_namespace:?}\n{counts:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let total: usize = counts.values().sum();
    // Per namespace: the six kinds, RunSchedules again as the RunConfigurations' own, Runs again
    // as the RunConfigurations' triggered Runs (for their concurrency policies), the provider
    // services' Deployments and Services, and the compile Jobs and their pods.
    assert!(total <= NAMESPACES * 12, "{total} watches in all: {counts:?}");
    assert!(!counts.keys().any(|(_, ns)| ns == "(all)"), "nothing is watched cluster-wide: {counts:?}");
}
