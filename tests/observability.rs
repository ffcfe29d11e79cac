//! What a platform engineer looks at on day one, on the operator binary against the test
//! control plane and a nats-server of the test's own: `/metrics` on the admin port after the
//! quickstart chain, with a Pipeline the stub provider refuses and an undecodable message on
//! the stream besides (every series declared, the ones exercised non-zero, the queues back at
//! 0, the resources gauge following deletes), and the JSON log (`--log-json`), in
//! which one completion POSTed to `/events` is followed by its `trace_id` from the ingest
//! through the publish and the record to the dependant Run it creates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use kfp_operator::api::{NamespacedName, Pipeline, Provider, Run, RunConfiguration, RunSpec, Triggers};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::Value;

use kfp_operator::tools::monitoring;

mod support;
use support::fixtures::{self, StubProviderExt};
use support::openmetrics::Samples;
use support::operator::OperatorProcess;

const CHAIN: Duration = Duration::from_secs(120);

const EVERY_FAMILY: [&str; 20] = [
    "kfp_operator_controller_reconcile",
    "kfp_operator_controller_reconcile_errors",
    "kfp_operator_controller_reconcile_duration_seconds",
    "kfp_operator_controller_queue_depth",
    "kfp_operator_provider_calls",
    "kfp_operator_provider_call_duration_seconds",
    "kfp_operator_runs_finished",
    "kfp_operator_run_duration_seconds",
    "kfp_operator_resources",
    "kfp_operator_events_ingested",
    "kfp_operator_events_published",
    "kfp_operator_events_acked",
    "kfp_operator_events_duplicates",
    "kfp_operator_events_dead_lettered",
    "kfp_operator_event_publish_duration_seconds",
    "kfp_operator_triggered_runs",
    "kfp_operator_trigger_fan_out_size",
    "kfp_operator_trigger_latency_seconds",
    "kfp_operator_leader",
    "kfp_operator_build",
];

const CONTROLLERS: [&str; 6] =
    ["pipeline", "run", "runconfiguration", "runschedule", "experiment", "provider"];

/// An operator configuration watching `namespaces`, on the JetStream of `nats`, with its ingest
/// on `ingest_port` open to callers without a token (tests/ingest.rs covers the tokens).
fn operator_config(
    dir: &Path,
    namespaces: &[&str],
    nats: &support::NatsServer,
    ingest_port: u16,
) -> std::path::PathBuf {
    let config = dir.join("operator.yaml");
    std::fs::write(
        &config,
        format!(
            "namespaces: [{}]\nevents:\n  listenAddr: 127.0.0.1:{ingest_port}\n  authentication: none\n  nats:\n    url: {}\n",
            namespaces.join(", "),
            nats.url()
        ),
    )
    .unwrap();
    config
}

/// `examples/quickstart/`, its two namespaces replaced by `training` and `evaluation`.
fn apply_the_quickstart(training: &str, evaluation: &str) {
    let dir = support::repo_root().join("examples/quickstart");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().path()).collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        if !text.contains("apiVersion: pipelines.kubeflow.org/") {
            continue;
        }
        let text = text.replace("ml-training", training).replace("ml-evaluation", evaluation);
        let output = support::kubectl_with_input(&["apply", "-f", "-"], &text);
        assert!(output.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&output.stderr));
    }
}

async fn succeeded_runs(client: &kube::Client, namespace: &str) -> Vec<Run> {
    let runs: Api<Run> = Api::namespaced(client.clone(), namespace);
    runs.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|run| {
            run.status.as_ref().and_then(|s| s.completion_state)
                == Some(kfp_operator::api::CompletionState::Succeeded)
        })
        .collect()
}

#[tokio::test]
async fn after_the_quickstart_chain_the_admin_port_shows_every_series() {
    let client = support::client().await;
    let training = support::namespace(&client, "metrics-training").await;
    let evaluation = support::namespace(&client, "metrics-evaluation").await;
    let nats = support::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = operator_config(dir.path(), &[&training, &evaluation], &nats, support::free_port());
    let operator = OperatorProcess::start(&config);
    apply_the_quickstart(&training, &evaluation);
    let stub = format!("{training}/stub");
    let refused = fixtures::pipeline("create-pipeline-fail", &NamespacedName::new(&training, "stub"));
    Api::<Pipeline>::namespaced(client.clone(), &training)
        .create(&PostParams::default(), &refused)
        .await
        .unwrap();
    let bus = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let garbage = format!("kfp.run-completion.{training}.penguin-pipeline.succeeded");
    bus.publish(garbage, "not json".into()).await.unwrap().await.unwrap();
    support::eventually("the three stages to succeed", CHAIN, || async {
        let done =
            succeeded_runs(&client, &training).await.len() + succeeded_runs(&client, &evaluation).await.len();
        (done == 3).then_some(())
    })
    .await;

    let samples =
        support::eventually("three finished runs and every queue at 0", Duration::from_secs(30), || async {
            let samples = operator.metrics().await?;
            let settled = CONTROLLERS.iter().all(|controller| {
                samples.value("kfp_operator_controller_queue_depth", &[("controller", controller)])
                    == Some(0.0)
            });
            let finished = samples.value("kfp_operator_runs_finished_total", &[("status", "succeeded")]);
            (settled && finished == Some(3.0)).then_some(samples)
        })
        .await;
    for family in EVERY_FAMILY {
        assert!(samples.families.contains(family), "{family} is not declared: {:?}", samples.families);
    }
    for expr in monitoring::expressions() {
        for series in monitoring::promql_series(expr) {
            let family = monitoring::family_of(&series);
            assert!(
                samples.families.contains(family),
                "the dashboard or an alert reads {series}, not declared: {expr}"
            );
            assert!(
                samples.samples.iter().any(|sample| sample.name == series),
                "the dashboard or an alert reads {series}, which /metrics has no sample of: {expr}"
            );
        }
    }
    let jetstream = [("sink", "jetstream")];
    let positive = |name: &str, labels: &[(&str, &str)]| {
        let value = samples.sum(name, labels);
        assert!(value > 0.0, "{name}{labels:?} is {value}: {samples:#?}");
        value
    };
    for controller in ["pipeline", "run", "runconfiguration", "provider"] {
        positive("kfp_operator_controller_reconcile_total", &[("controller", controller), ("result", "ok")]);
        positive("kfp_operator_controller_reconcile_duration_seconds_count", &[("controller", controller)]);
        positive("kfp_operator_controller_reconcile_duration_seconds_sum", &[("controller", controller)]);
    }
    for kind in ["pipeline", "run"] {
        let calls = [("provider", stub.as_str()), ("kind", kind), ("operation", "create")];
        let ok = [calls.as_slice(), &[("result", "ok")]].concat();
        assert_eq!(samples.sum("kfp_operator_provider_calls_total", &ok), 3.0, "{kind}: {samples:#?}");
        assert_eq!(
            samples.sum("kfp_operator_provider_call_duration_seconds_count", &calls),
            samples.sum("kfp_operator_provider_calls_total", &calls),
            "every call timed, the refused ones too"
        );
    }
    assert_eq!(samples.value("kfp_operator_runs_finished_total", &[("status", "succeeded")]), Some(3.0));
    assert_eq!(
        samples.value("kfp_operator_run_duration_seconds_count", &[("status", "succeeded")]),
        Some(3.0)
    );
    let ran = positive("kfp_operator_run_duration_seconds_sum", &[("status", "succeeded")]);
    assert!(ran >= 8.0, "three runs of about 3 s each ran {ran} s");
    assert_eq!(
        samples.value("kfp_operator_resources", &[("kind", "run"), ("state", "Succeeded")]),
        Some(3.0)
    );
    assert_eq!(
        samples.value("kfp_operator_resources", &[("kind", "pipeline"), ("state", "Succeeded")]),
        Some(3.0)
    );
    assert_eq!(
        samples.value("kfp_operator_resources", &[("kind", "pipeline"), ("state", "Failed")]),
        Some(1.0)
    );
    let refusals = [
        ("provider", stub.as_str()),
        ("kind", "pipeline"),
        ("operation", "create"),
        ("result", "ProviderFailed"),
    ];
    positive("kfp_operator_provider_calls_total", &refusals);
    positive(
        "kfp_operator_controller_reconcile_errors_total",
        &[("controller", "pipeline"), ("category", "ProviderFailed")],
    );
    positive("kfp_operator_controller_reconcile_total", &[("controller", "pipeline"), ("result", "error")]);
    assert_eq!(samples.value("kfp_operator_events_dead_lettered_total", &jetstream), Some(1.0));
    assert_eq!(samples.sum("kfp_operator_resources", &[("kind", "runconfiguration")]), 3.0);
    assert_eq!(samples.sum("kfp_operator_resources", &[("kind", "provider")]), 1.0);
    assert!(samples.sum("kfp_operator_events_ingested_total", &[("result", "accepted")]) >= 3.0);
    // A stub completion whose record failed is accepted again: its events are then duplicates.
    let acked = positive("kfp_operator_events_acked_total", &jetstream);
    assert_eq!(acked, 5.0, "3 run-completion, 2 model-ready events stored");
    let duplicates = samples.value("kfp_operator_events_duplicates_total", &jetstream).expect("duplicates");
    assert_eq!(positive("kfp_operator_events_published_total", &jetstream), acked + duplicates);
    positive("kfp_operator_event_publish_duration_seconds_count", &jetstream);
    assert_eq!(
        samples.value(
            "kfp_operator_triggered_runs_total",
            &[("trigger", "runConfiguration"), ("path", "completion")]
        ),
        Some(2.0)
    );
    assert_eq!(samples.value("kfp_operator_trigger_fan_out_size_sum", &[]), Some(2.0));
    assert_eq!(samples.value("kfp_operator_trigger_fan_out_size_count", &[]), Some(2.0), "one per fan-out");
    assert_eq!(samples.value("kfp_operator_trigger_latency_seconds_count", &[]), Some(2.0));
    positive("kfp_operator_trigger_latency_seconds_sum", &[]);
    assert_eq!(samples.value("kfp_operator_leader", &[]), Some(1.0));
    let build = samples.matching("kfp_operator_build_info", &[]).next().expect("build_info");
    assert_eq!(build.labels.get("version").map(String::as_str), Some(env!("CARGO_PKG_VERSION")));

    // Deleted Runs leave the resources gauge (their deletion goes through the provider).
    for namespace in [&training, &evaluation] {
        let runs: Api<Run> = Api::namespaced(client.clone(), namespace);
        runs.delete_collection(&DeleteParams::default(), &ListParams::default()).await.unwrap();
    }
    let samples =
        support::eventually("the deleted Runs to leave the gauge", Duration::from_secs(60), || async {
            let samples = operator.metrics().await?;
            (samples.sum("kfp_operator_resources", &[("kind", "run")]) == 0.0).then_some(samples)
        })
        .await;
    let deletes = [("provider", stub.as_str()), ("kind", "run"), ("operation", "delete"), ("result", "ok")];
    assert_eq!(samples.sum("kfp_operator_provider_calls_total", &deletes), 3.0);
    drop(operator);
}

/// The operator's log lines, each a JSON object.
fn log_lines(log: &Path) -> Vec<serde_json::Map<String, Value>> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|line| {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            value.as_object().cloned().unwrap_or_else(|| panic!("not an object: {line}"))
        })
        .collect()
}

fn text<'a>(line: &'a serde_json::Map<String, Value>, key: &str) -> &'a str {
    line.get(key).and_then(Value::as_str).unwrap_or_default()
}

#[tokio::test]
async fn one_completion_is_followed_by_its_trace_id_through_the_json_log() {
    let client = support::client().await;
    let ns = support::namespace(&client, "log-trace").await;
    let nats = support::NatsServer::start();
    let ingest_port = support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = operator_config(dir.path(), &[&ns], &nats, ingest_port);
    let log = dir.path().join("operator.log");
    let provider = NamespacedName::new(&ns, "stub");
    let post = PostParams::default();
    Api::<Provider>::namespaced(client.clone(), &ns)
        .create(&post, &fixtures::stub_provider("stub").completing_after("1h"))
        .await
        .unwrap();
    Api::<Pipeline>::namespaced(client.clone(), &ns)
        .create(&post, &fixtures::pipeline("penguin", &provider))
        .await
        .unwrap();
    let rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &ns);
    rcs.create(&post, &fixtures::run_configuration("upstream", &provider, Triggers::default()))
        .await
        .unwrap();
    let follows =
        Triggers { run_configurations: vec![NamespacedName::name_only("upstream")], ..Triggers::default() };
    rcs.create(&post, &fixtures::run_configuration("downstream", &provider, follows)).await.unwrap();
    let spec =
        RunSpec { provider: provider.clone(), pipeline: "penguin".parse().unwrap(), ..RunSpec::default() };
    Api::<Run>::namespaced(client.clone(), &ns)
        .create(&post, &Run::new("upstream-run-1", spec))
        .await
        .unwrap();
    let operator = OperatorProcess::start_logging_json(&config, &log);
    support::eventually("the dependant to see its trigger", CHAIN, || async {
        let rc = rcs.get("downstream").await.ok()?;
        rc.status
            .as_ref()
            .is_some_and(|s| s.triggers.run_configurations.contains_key("upstream"))
            .then_some(())
    })
    .await;

    let body = serde_json::json!({
        "status": "succeeded", "pipelineName": format!("{ns}/penguin"), "runConfigurationName": format!("{ns}/upstream"),
        "runName": format!("{ns}/upstream-run-1"),
        "runId": "upstream-run-1", "runStartTime": "2024-05-01T10:00:00Z", "runEndTime": "2024-05-01T10:05:00Z",
        "provider": format!("{ns}/stub"),
    });
    let status = support::post_json(ingest_port, "/events", &body.to_string()).await;
    assert_eq!(status, Some(200));
    let runs: Api<Run> = Api::namespaced(client.clone(), &ns);
    support::eventually("the dependant Run", CHAIN, || async {
        let listed = runs
            .list(&ListParams::default().labels("pipelines.kubeflow.org/runconfiguration.name=downstream"))
            .await
            .ok()?;
        (!listed.items.is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let lines = log_lines(&log);
    for line in &lines {
        for key in ["timestamp", "level", "logger", "message"] {
            assert!(line.contains_key(key), "{key} missing: {line:?}");
        }
        assert!(text(line, "timestamp").ends_with('Z'), "{line:?}");
    }
    let received = lines
        .iter()
        .find(|line| {
            text(line, "message") == "completion received" && text(line, "run_id") == "upstream-run-1"
        })
        .expect("the completion's first line");
    assert_eq!(text(received, "logger"), "events-ingest");
    let trace_id = text(received, "trace_id");
    assert_eq!(trace_id.len(), 40, "the run-completion CloudEvent id: {received:?}");
    let traced: Vec<_> = lines.iter().filter(|line| text(line, "trace_id") == trace_id).collect();
    let messages: Vec<&str> = traced.iter().map(|line| text(line, "message")).collect();
    let position = |message: &str| {
        messages
            .iter()
            .position(|m| *m == message)
            .unwrap_or_else(|| panic!("no {message:?} in {messages:?}"))
    };
    let steps = [
        "completion received",
        "completion published",
        "completion recorded on the Run",
        "dependant Run created",
        "triggered dependants",
        "completion recorded on the RunConfiguration",
        "completion accepted",
    ];
    for step in steps {
        position(step);
    }
    assert_eq!(messages[0], "completion received", "{messages:?}");
    // The completion consumer records the same completion from the bus meanwhile, under the same id.
    assert!(position("completion published") < position("completion accepted"), "{messages:?}");
    let published = traced[position("completion published")];
    assert_eq!(text(published, "sink"), "jetstream");
    assert_eq!(published["acked"], 1, "a run-completion event without artifacts: {published:?}");
    assert_eq!(traced[position("completion recorded on the Run")]["found"], true);
    let created = traced[position("dependant Run created")];
    assert_eq!(text(created, "logger"), "completion-fan-out");
    assert_eq!(text(created, "runconfiguration"), format!("{ns}/downstream"));

    let reconciled = lines
        .iter()
        .find(|line| {
            text(line, "message") == "Pipeline reconciliation completed"
                && text(line, "pipeline") == "penguin"
        })
        .expect("a Pipeline reconcile's last line");
    assert_eq!(text(reconciled, "logger"), "pipeline-controller");
    assert_eq!(text(reconciled, "namespace"), ns);
    assert_eq!(text(reconciled, "level"), "INFO");
    assert!(reconciled["duration_ms"].is_u64(), "{reconciled:?}");
    let id = text(reconciled, "reconciliation_id");
    assert!(!id.is_empty(), "{reconciled:?}");
    let same_reconcile: Vec<_> = lines.iter().filter(|line| text(line, "reconciliation_id") == id).collect();
    assert!(
        same_reconcile
            .iter()
            .all(|line| text(line, "logger") == "pipeline-controller" && text(line, "pipeline") == "penguin")
    );
    drop(operator);
}

#[test]
fn the_exposition_parser_reads_labels_with_escapes() {
    let parsed = Samples::parse(
        "# HELP a_total A.\n# TYPE a counter\na_total{x=\"1\",y=\"q\\\"}\"} 2\nb 3.5\n# EOF\n",
    );
    assert!(parsed.families.contains("a"));
    assert_eq!(parsed.value("a_total", &[("y", "q\"}")]), Some(2.0));
    assert_eq!(parsed.value("a_total", &[("x", "1")]), Some(2.0));
    assert_eq!(parsed.value("b", &[]), Some(3.5));
}
