//! The operator in-cluster on the local node: `deploy/local/dev-env install-in-cluster` builds
//! the operator image from the release binary, imports it into the node and installs
//! `deploy/base` with `deploy/overlays/local` (the CRDs, shared by every test of the control
//! plane, are installed as the other tests install them) in the documented namespace
//! `kfp-operator-system`, which no other test uses; the operator watches two fresh namespaces and
//! publishes to a nats-server of this test. The Deployment becomes available, `kubectl logs`
//! shows the operator's log, `kubectl port-forward svc/kfp-operator-metrics 8080:8080` serves its
//! `/metrics` with the controller series, the quickstart chain completes in-cluster as `tests/quickstart.rs`
//! sees it out-of-cluster, with no request refused; without its RoleBinding the operator is
//! refused as its ServiceAccount. Everything it created is deleted at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod support;

use support::watch_lines::{field, run_name};

const NAMESPACE: &str = "kfp-operator-system";
const DEPLOYMENT: &str = "deployment/kfp-operator-controller-manager";
const SERVICE_ACCOUNT: &str = "system:serviceaccount:kfp-operator-system:kfp-operator";
/// Up to the Deployment being available: may include compiling the release binary.
const INSTALL: Duration = Duration::from_secs(40 * 60);
/// From applying the quickstart until every Run has completed and the graph is printed.
const CHAIN: Duration = Duration::from_secs(180);
const CLEANUP: Duration = Duration::from_secs(120);

fn dev_env(subcommand: &str, settings: &[(&str, String)]) -> Command {
    let mut command = support::dev_env_command(subcommand);
    command.envs(settings.iter().map(|(key, value)| (key, value))).env_remove("KUBECONFIG");
    // What `cargo test` sets for the test would make the release build differ from a
    // developer's (build scripts watch CARGO_MANIFEST_DIR) and compile everything again.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_TARGET_DIR" {
            command.env_remove(key);
        }
    }
    command
}

fn stdout_of(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn operator_log() -> String {
    stdout_of(&support::kubectl(&["logs", "-n", NAMESPACE, DEPLOYMENT]), "kubectl logs")
}

/// Deletes what the test created, also when it fails: the quickstart namespaces first, while the
/// operator still runs to release their objects' finalizers, then the installation.
struct Cleanup {
    namespaces: Vec<String>,
    settings: Vec<(&'static str, String)>,
}

impl Cleanup {
    fn run(&mut self) -> Result<(), String> {
        let mut failures = String::new();
        let namespaces: Vec<String> = self.namespaces.drain(..).map(|ns| format!("namespace/{ns}")).collect();
        if !namespaces.is_empty() {
            let mut args = vec!["delete", "--ignore-not-found", "--wait", "--timeout=90s"];
            args.extend(namespaces.iter().map(String::as_str));
            let output = support::kubectl(&args);
            if !output.status.success() {
                failures.push_str(&String::from_utf8_lossy(&output.stderr));
            }
        }
        if !self.settings.is_empty() {
            let output = support::bounded(
                dev_env("uninstall-in-cluster", &std::mem::take(&mut self.settings)),
                "dev-env uninstall-in-cluster",
                CLEANUP,
            );
            if !output.status.success() {
                failures.push_str(&String::from_utf8_lossy(&output.stderr));
            }
        }
        if failures.is_empty() { Ok(()) } else { Err(failures) }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(failures) = self.run() {
            eprintln!("cleaning up after the in-cluster test failed:\n{failures}");
        }
    }
}

/// The chain as `kfp-operator watch` printed it: each stage fired once by the one before, with the
/// artifacts passed down, one completion event each, and every stage succeeded in the graph.
fn assert_the_chain(lines: &[&str], stages: &[String; 3]) {
    let all = lines.join("\n");
    let run_of = |stage: &str| -> &str {
        let runs: Vec<&&str> = lines
            .iter()
            .filter(|line| {
                line.contains("run created") && line.contains(&format!("runConfiguration={stage} "))
            })
            .collect();
        assert_eq!(runs.len(), 1, "{stage} must fire exactly once:\n{all}");
        runs[0]
    };
    let training = run_of(&stages[0]);
    let evaluation = run_of(&stages[1]);
    let promotion = run_of(&stages[2]);
    assert!(field(training, "trigger").starts_with("onChangePipeline"), "{training}");
    assert!(evaluation.contains(&format!("trigger=runConfiguration {}", stages[0])), "{evaluation}");
    assert!(promotion.contains(&format!("trigger=runConfiguration {}", stages[1])), "{promotion}");
    let model = format!("memory://models/{}/serving-model", run_name(training));
    assert_eq!(field(evaluation, "model_location"), model, "{evaluation}");
    assert_eq!(field(promotion, "model_location"), model, "{promotion}");
    assert_eq!(
        field(promotion, "metrics_location"),
        format!("memory://metrics/{}/evaluation", run_name(evaluation)),
        "{promotion}"
    );
    for stage in stages {
        let completions = lines
            .iter()
            .filter(|line| line.contains("event published run-completion") && field(line, "subject") == stage)
            .count();
        assert_eq!(completions, 1, "one run-completion event of {stage}:\n{all}");
    }
    let header = lines.iter().position(|line| line.starts_with("dependency graph")).expect(&all);
    for (stage, run) in stages.iter().zip([training, evaluation, promotion]) {
        let node = format!("{stage}  [Succeeded {}]", run_name(run));
        assert!(
            lines[header..].iter().any(|line| line.contains(&node)),
            "{node} missing from the graph:\n{all}"
        );
    }
}

#[test]
fn the_operator_installed_in_cluster_runs_the_quickstart_chain_as_its_service_account() {
    support::local_node();
    let nats = support::NatsServer::start();
    let id = std::process::id();
    let training = format!("in-cluster-training-{id}");
    let evaluation = format!("in-cluster-evaluation-{id}");
    let settings = vec![
        ("KFP_IN_CLUSTER_NAMESPACES", format!("{training},{evaluation}")),
        ("KFP_IN_CLUSTER_NATS_URL", nats.url()),
        ("KFP_IN_CLUSTER_ADMIN_PORT", support::free_port().to_string()),
        ("KFP_IN_CLUSTER_EVENTS_PORT", support::free_port().to_string()),
        ("KFP_IN_CLUSTER_CRDS", "skip".to_owned()),
    ];
    let mut cleanup =
        Cleanup { namespaces: vec![training.clone(), evaluation.clone()], settings: settings.clone() };

    let started = Instant::now();
    let install =
        support::bounded(dev_env("install-in-cluster", &settings), "dev-env install-in-cluster", INSTALL);
    let installed = String::from_utf8_lossy(&install.stderr).into_owned();
    assert!(install.status.success(), "dev-env install-in-cluster:\n{installed}");
    eprintln!("in-cluster: Deployment available after {:?}", started.elapsed());
    for line in installed.lines().filter(|line| line.contains("operator image") || line.contains("available"))
    {
        eprintln!("in-cluster: {line}");
    }

    let pod = stdout_of(
        &support::kubectl(&[
            "get",
            "pods",
            "-n",
            NAMESPACE,
            "-l",
            "app.kubernetes.io/name=kfp-operator",
            "-o",
            "jsonpath={.items[0].spec.serviceAccountName} {.items[0].spec.hostNetwork} \
             {.items[0].spec.containers[0].image} {.items[0].spec.volumes[*].secret.secretName}",
        ]),
        "kubectl get pods",
    );
    let fields: Vec<&str> = pod.split_whitespace().collect();
    assert_eq!(fields[..2], ["kfp-operator", "true"], "{pod}");
    assert!(fields[2].starts_with("localhost/kfp-operator:"), "{pod}");
    assert!(
        fields.get(3).is_some_and(|secret| secret.starts_with("kfp-operator-token-")),
        "the token is mounted: {pod}"
    );

    let log = operator_log();
    assert!(log.contains("\"kfp-operator ready\""), "the operator's log:\n{log}");
    assert!(log.contains("\"became the leader\""), "the operator's log:\n{log}");

    let manifests: String =
        ["00-namespaces.yaml", "10-provider.yaml", "20-pipelines.yaml", "30-runconfigurations.yaml"]
            .iter()
            .map(|file| {
                std::fs::read_to_string(support::repo_root().join("examples/quickstart").join(file))
                    .unwrap()
                    .replace("ml-training", &training)
                    .replace("ml-evaluation", &evaluation)
            })
            .collect::<Vec<_>>()
            .join("\n---\n");
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let chain_started = Instant::now();
    stdout_of(&support::kubectl_with_input(&["apply", "-f", "-"], &manifests), "applying the quickstart");
    let mut watch = Command::new(env!("CARGO_BIN_EXE_kfp-operator"));
    watch
        .args(["watch", "--namespace", &training, "--namespace", &evaluation, "--nats-url", &nats.url()])
        .args(["--since", &since, "--until-settled", "--timeout", &format!("{}s", CHAIN.as_secs())])
        .env("KUBECONFIG", &support::control_plane().kubeconfig);
    let watched = support::bounded(watch, "kfp-operator watch", CHAIN + Duration::from_secs(30));
    let printed = String::from_utf8_lossy(&watched.stdout).into_owned();
    assert!(
        watched.status.success(),
        "the chain did not complete within {CHAIN:?}:\n{printed}{}\noperator log:\n{}",
        String::from_utf8_lossy(&watched.stderr),
        operator_log()
    );
    eprintln!("in-cluster: chain complete {:?} after applying the quickstart", chain_started.elapsed());
    let stages = [
        format!("{training}/penguin-training"),
        format!("{evaluation}/penguin-evaluation"),
        format!("{evaluation}/penguin-promotion"),
    ];
    assert_the_chain(&printed.lines().collect::<Vec<_>>(), &stages);
    let log = operator_log();
    assert!(!log.to_lowercase().contains("forbidden"), "the operator was refused something:\n{log}");

    // The documented way to the metrics: a port-forward to the metrics Service's port 8080.
    let local = support::free_port();
    let mut forward = Command::new("kubectl")
        .args(["port-forward", "-n", NAMESPACE, "svc/kfp-operator-metrics", &format!("{local}:8080")])
        .env("KUBECONFIG", &support::control_plane().kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        if let Some((200, body)) = runtime.block_on(support::http_get(local, "/metrics")) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no /metrics through kubectl port-forward svc/kfp-operator-metrics"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = forward.kill();
    let _ = forward.wait();
    let controller_lines: Vec<&str> = metrics.lines().filter(|line| line.contains("controller")).collect();
    assert!(
        controller_lines.iter().any(|line| line.starts_with("kfp_operator_controller_reconcile_total{")),
        "curl localhost:8080/metrics | grep controller finds the reconciles:\n{}",
        controller_lines.join("\n")
    );

    // The quickstart's objects go while the operator can still release them.
    let namespaces = std::mem::take(&mut cleanup.namespaces);
    let deleted = support::kubectl(&[
        "delete",
        "--wait",
        "--timeout=90s",
        &format!("namespace/{}", namespaces[0]),
        &format!("namespace/{}", namespaces[1]),
    ]);
    stdout_of(&deleted, "deleting the quickstart namespaces");

    // Without its RoleBinding, renewing the leader Lease is refused to the ServiceAccount.
    stdout_of(
        &support::kubectl(&["delete", "rolebinding", "-n", NAMESPACE, "kfp-operator"]),
        "deleting the RoleBinding",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = operator_log();
        if log.contains("forbidden") && log.contains(&format!("User \\\"{SERVICE_ACCOUNT}\\\"")) {
            break;
        }
        assert!(Instant::now() < deadline, "no request refused to {SERVICE_ACCOUNT} within 30s:\n{log}");
        std::thread::sleep(Duration::from_millis(500));
    }

    cleanup.run().unwrap_or_else(|failures| panic!("cleaning up: {failures}"));
    let left = support::kubectl(&["get", "namespace", NAMESPACE, "--ignore-not-found", "-o", "name"]);
    assert_eq!(stdout_of(&left, "kubectl get namespace"), "", "the installation's namespace is gone");
}
