//! The main command, `deploy/local/dev-env run`, as a newcomer runs it, on a fresh environment of
//! its own (state directory and every port its own, apart from the shared test control plane
//! and a developer's `dev-env up`): it builds and starts the release binary on the local
//! JetStream, applies `examples/quickstart/` and prints the chain as it happens.
//!
//! First run, on a fresh state directory, non-interactive (`KFP_RUN_UNTIL_SETTLED`): the three
//! stages fire once each, the artifact locations are passed down, a model-ready event is
//! printed, the graph at the end shows all three nodes with their latest runs, and the command
//! exits 0 by itself, leaving no process behind.
//! Second run, on the same stopped environment (so the quickstart objects exist), interactive:
//! the chain starts again and is printed the same way; `events tail` and `graph --namespace`
//! work against it, and the Pipelines list as v1alpha5 and v1alpha6 (converted by the operator's
//! webhook on 127.0.0.1); SIGINT to the process group (what Ctrl-C does) ends it with status 130 and
//! leaves no process behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod support;

use support::watch_lines::{field, run_name};

/// Up to the operator being ready: may include compiling the release binary.
const STARTUP: Duration = Duration::from_secs(40 * 60);
/// From the operator being ready until the graph is printed.
const CHAIN: Duration = Duration::from_secs(120);

const STAGES: [&str; 3] =
    ["ml-training/penguin-training", "ml-evaluation/penguin-evaluation", "ml-evaluation/penguin-promotion"];

struct Ports {
    etcd: u16,
    etcd_peer: u16,
    apiserver: u16,
    nats: u16,
    admin: u16,
    events: u16,
    webhook: u16,
}

impl Ports {
    fn free() -> Self {
        let mut ports = std::collections::BTreeSet::new();
        while ports.len() < 7 {
            ports.insert(support::free_port());
        }
        let p: Vec<u16> = ports.into_iter().collect();
        Self {
            etcd: p[0],
            etcd_peer: p[1],
            apiserver: p[2],
            nats: p[3],
            admin: p[4],
            events: p[5],
            webhook: p[6],
        }
    }
}

/// `dev-env run` in a process group of its own, its standard output read line by line.
struct MainCommand {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    started: Instant,
    stderr_log: std::path::PathBuf,
}

impl MainCommand {
    fn start(state: &Path, stderr_log: &Path, ports: &Ports, extra_env: &[(&str, &str)]) -> Self {
        let stderr = std::fs::File::create(stderr_log).unwrap();
        let mut command = Command::new("bash");
        command
            .arg(support::repo_root().join("deploy/local/dev-env"))
            .arg("run")
            .env("KFP_DEV_ENV_DIR", state)
            .env("KFP_ETCD_PORT", ports.etcd.to_string())
            .env("KFP_ETCD_PEER_PORT", ports.etcd_peer.to_string())
            .env("KFP_APISERVER_PORT", ports.apiserver.to_string())
            .env("KFP_NATS_PORT", ports.nats.to_string())
            .env("KFP_ADMIN_PORT", ports.admin.to_string())
            .env("KFP_EVENTS_PORT", ports.events.to_string())
            .env("KFP_WEBHOOK_PORT", ports.webhook.to_string())
            .env("KFP_RUN_TIMEOUT", "10m")
            .env("RUST_BACKTRACE", "1")
            .env_remove("KUBECONFIG")
            .env_remove("NATS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0);
        // What `cargo test` sets for the test would make the build in `run` differ from a
        // developer's (build scripts watch CARGO_MANIFEST_DIR) and compile everything again.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CARGO_") && key != "CARGO_HOME" {
                command.env_remove(key);
            }
        }
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let started = Instant::now();
        let mut child = command.spawn().expect("running deploy/local/dev-env run");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, seen: Vec::new(), started, stderr_log: stderr_log.to_owned() }
    }

    /// Reads lines until one satisfies `done`, failing the test after `timeout`.
    fn read_until(&mut self, what: &str, timeout: Duration, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no {what} within {timeout:?}; output so far:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
                ),
            }
        }
    }

    fn lines_with(&self, needle: &str) -> Vec<&String> {
        self.seen.iter().filter(|line| line.contains(needle)).collect()
    }

    /// Waits (at most `timeout`) for the command to exit; its exit code.
    fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().or(Some(-1));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    fn interrupt(&self) {
        let status =
            Command::new("kill").args(["-INT", "--", &format!("-{}", self.child.id())]).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for MainCommand {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill").args(["-INT", "--", &format!("-{}", self.child.id())]).status();
            let _ = self.wait(Duration::from_secs(60));
            let _ = self.child.kill();
        }
    }
}

/// Processes whose command line or environment names `state`.
fn processes_of(state: &Path) -> Vec<String> {
    let needle = state.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == std::process::id().to_string() {
            continue;
        }
        let read = |file: &str| std::fs::read(entry.path().join(file)).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&read("cmdline")).replace('\0', " ");
        let environ = String::from_utf8_lossy(&read("environ")).into_owned();
        if cmdline.contains(&needle) || environ.contains(&needle) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

fn assert_nothing_left(state: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = processes_of(state);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "processes left behind:\n{}", left.join("\n"));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `run created` line of the RunConfiguration `rc`, which must be the only one.
fn the_run_of<'a>(command: &'a MainCommand, rc: &str) -> &'a str {
    let lines = command.lines_with(&format!("runConfiguration={rc} "));
    let runs: Vec<&&String> = lines.iter().filter(|line| line.contains("run created")).collect();
    assert_eq!(runs.len(), 1, "{rc} must fire exactly once:\n{}", command.seen.join("\n"));
    runs[0]
}

fn graph_printed(lines: &[String]) -> bool {
    lines.iter().position(|line| line.starts_with("dependency graph")).is_some_and(|header| {
        STAGES.iter().all(|stage| lines[header..].iter().any(|line| line.contains(&format!("{stage}  ["))))
    })
}

/// The chain as printed: each stage once, the artifacts passed down, a model-ready event, the graph.
fn assert_the_chain(command: &MainCommand) {
    let training = the_run_of(command, STAGES[0]);
    let evaluation = the_run_of(command, STAGES[1]);
    let promotion = the_run_of(command, STAGES[2]);
    assert!(field(training, "trigger").starts_with("onChangePipeline"), "{training}");
    assert!(evaluation.contains(&format!("trigger=runConfiguration {}", STAGES[0])), "{evaluation}");
    assert!(promotion.contains(&format!("trigger=runConfiguration {}", STAGES[1])), "{promotion}");
    let model = format!("memory://models/{}/serving-model", run_name(training));
    let metrics = format!("memory://metrics/{}/evaluation", run_name(evaluation));
    assert_eq!(field(evaluation, "model_location"), model, "{evaluation}");
    assert_eq!(field(promotion, "model_location"), model, "{promotion}");
    assert_eq!(field(promotion, "metrics_location"), metrics, "{promotion}");

    let model_ready = command.lines_with("event published model-ready");
    assert!(
        model_ready
            .iter()
            .any(|line| field(line, "subject") == STAGES[0] && field(line, "serving-model") == model),
        "no model-ready event of the trained model:\n{}",
        command.seen.join("\n")
    );
    let completions = command.lines_with("event published run-completion");
    for stage in STAGES {
        assert_eq!(
            completions.iter().filter(|line| field(line, "subject") == stage).count(),
            1,
            "one run-completion event of {stage}:\n{}",
            command.seen.join("\n")
        );
    }

    let header = command.seen.iter().position(|line| line.starts_with("dependency graph")).unwrap();
    let graph = &command.seen[header..];
    for (stage, run) in STAGES.iter().zip([training, evaluation, promotion]) {
        let node = format!("{stage}  [Succeeded {}]", run_name(run));
        assert!(
            graph.iter().any(|line| line.contains(&node)),
            "{node} missing from the graph:\n{}",
            graph.join("\n")
        );
    }
}

fn kfp_operator(args: &[&str], env: &[(&str, String)], timeout: Duration) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kfp-operator"));
    command.args(args).envs(env.iter().map(|(key, value)| (key, value)));
    let output = support::bounded(command, &format!("kfp-operator {args:?}"), timeout);
    assert!(output.status.success(), "kfp-operator {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_main_command_shows_the_chain_its_events_and_graph_and_stops_everything() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("env");
    let stderr_log = dir.path().join("dev-env-run.log");
    let ports = Ports::free();

    // First run, on a fresh environment: non-interactive, it ends by itself.
    let mut first = MainCommand::start(&state, &stderr_log, &ports, &[("KFP_RUN_UNTIL_SETTLED", "1")]);
    first.read_until("watch line (operator ready)", STARTUP, |lines| {
        lines.iter().any(|line| line.starts_with("watching Runs"))
    });
    let ready_after = first.started.elapsed();
    first.read_until("first Run", CHAIN, |lines| lines.iter().any(|line| line.contains("run created")));
    eprintln!(
        "first run: operator ready after {ready_after:?}, first Run after {:?}",
        first.started.elapsed()
    );
    let code = first.wait(CHAIN);
    while let Ok(line) = first.lines.recv_timeout(Duration::from_secs(1)) {
        first.seen.push(line);
    }
    assert_eq!(code, Some(0), "dev-env run with KFP_RUN_UNTIL_SETTLED:\n{}", first.seen.join("\n"));
    assert!(graph_printed(&first.seen), "{}", first.seen.join("\n"));
    assert_the_chain(&first);
    assert_nothing_left(&state);

    // Second run, on the same (stopped) environment: the chain starts again; interactive, it
    // keeps going until Ctrl-C.
    let mut second = MainCommand::start(&state, &stderr_log, &ports, &[]);
    second.read_until("watch line (operator ready)", STARTUP, |lines| {
        lines.iter().any(|line| line.starts_with("watching Runs"))
    });
    second.read_until("first Run", CHAIN, |lines| lines.iter().any(|line| line.contains("run created")));
    eprintln!("warm run: first Run after {:?}", second.started.elapsed());
    second.read_until("graph with all three stages", CHAIN, graph_printed);
    assert_the_chain(&second);

    let nats_url = format!("nats://127.0.0.1:{}", ports.nats);
    let tail = kfp_operator(
        &["events", "tail", "--nats-url", &nats_url, "--replay", "--count", "5"],
        &[],
        Duration::from_secs(30),
    );
    let tailed: Vec<&str> = tail.lines().collect();
    assert_eq!(tailed.len(), 5, "{tail}");
    assert_eq!(tailed.iter().filter(|line| line.contains(" run-completion succeeded ")).count(), 3, "{tail}");
    assert_eq!(tailed.iter().filter(|line| line.contains(" model-ready succeeded ")).count(), 2, "{tail}");
    assert!(
        tail.contains("pipeline=ml-training/penguin-pipeline runConfiguration=ml-training/penguin-training"),
        "{tail}"
    );

    let kubeconfig = ("KUBECONFIG", state.join("kubeconfig").to_string_lossy().into_owned());
    let graph = kfp_operator(
        &["graph", "--namespace", "ml-evaluation", "--format", "text"],
        std::slice::from_ref(&kubeconfig),
        Duration::from_secs(30),
    );
    let training_run = run_name(the_run_of(&second, STAGES[0])).to_owned();
    assert!(
        graph.starts_with(&format!(
            "{}  [Succeeded {training_run}] (other namespace)\n-> {}  [Succeeded",
            STAGES[0], STAGES[1]
        )),
        "{graph}"
    );

    for version in ["v1alpha5", "v1alpha6"] {
        let output = Command::new("kubectl")
            .args(["get", &format!("pipelines.{version}.pipelines.kubeflow.org"), "-A", "-o", "name"])
            .env("KUBECONFIG", state.join("kubeconfig"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && listed.contains("penguin-pipeline"),
            "the Pipelines as {version}: {listed}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // Nothing more fires.
    std::thread::sleep(Duration::from_secs(3));
    let output = Command::new("kubectl")
        .args(["get", "runs.pipelines.kubeflow.org", "-A", "--no-headers"])
        .env("KUBECONFIG", state.join("kubeconfig"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let runs = String::from_utf8_lossy(&output.stdout);
    assert_eq!(runs.lines().count(), 3, "{runs}");

    second.interrupt();
    let code = second.wait(Duration::from_secs(60));
    assert_eq!(code, Some(130), "dev-env run after Ctrl-C");
    assert_nothing_left(&state);
}
