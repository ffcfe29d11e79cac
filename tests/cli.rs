//! How the binary fails: one line on standard error, `error: <cause>: <what to check>`, exit
//! status 1, and no backtrace even with `RUST_BACKTRACE` and `RUST_LIB_BACKTRACE` set, against
//! a NATS port nobody listens on, a real nats-server without the operator's stream, a cluster
//! that cannot be reached and a configuration that is not valid.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

/// Runs the binary (at most 30 s) and returns its standard error, which must be one line, after
/// a failure with status 1.
fn failure_line(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kfp-operator"));
    command
        .args(args)
        .env("RUST_BACKTRACE", "full")
        .env("RUST_LIB_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "kfp-operator {args:?} did not finish within 30s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "kfp-operator {args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "kfp-operator {args:?} wrote more than one line:\n{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
    stderr.trim_end().to_owned()
}

#[test]
fn events_tail_says_when_nats_is_not_there() {
    let url = format!("nats://127.0.0.1:{}", support::free_port());
    let line = failure_line(&["events", "tail", "--nats-url", &url, "--replay"], &[]);
    assert!(line.starts_with(&format!("error: cannot connect to NATS at {url} (")), "{line}");
    assert!(line.ends_with("is nats-server running there? (set --nats-url or NATS_URL)"), "{line}");
}

#[test]
fn events_tail_replay_says_when_the_stream_is_missing() {
    let nats = support::NatsServer::start();
    let line = failure_line(&["events", "tail", "--replay"], &[("NATS_URL", &nats.url())]);
    assert_eq!(
        line,
        format!(
            "error: no stream kfp-operator-events on {}: is the operator running with the jetstream sink \
             (events.nats.url set) against this server?",
            nats.url()
        )
    );
}

#[test]
fn graph_says_when_the_cluster_cannot_be_reached() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let server = format!("https://127.0.0.1:{}", support::free_port());
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"{server}\"}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n\
             current-context: c\n"
        ),
    )
    .unwrap();
    let line = failure_line(&["graph", "--format", "text"], &[("KUBECONFIG", kubeconfig.to_str().unwrap())]);
    assert!(line.starts_with("error: listing RunConfigurations failed ("), "{line}");
    assert!(line.contains("Connection refused"), "{line}");
    assert!(
        line.ends_with("is the cluster of KUBECONFIG reachable? (the local one: deploy/local/dev-env up)"),
        "{line}"
    );

    let line = failure_line(&["graph"], &[("KUBECONFIG", "/nonexistent/kubeconfig")]);
    assert!(
        line.starts_with(
            "error: no usable Kubernetes configuration: set KUBECONFIG to a kubeconfig file or run in a cluster: "
        ),
        "{line}"
    );
}

#[test]
fn run_names_the_setting_that_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("operator.yaml");
    std::fs::write(&config, "concurrency: 0\n").unwrap();
    let line = failure_line(&["run", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(line, "error: invalid configuration: concurrency must be at least 1");
}
