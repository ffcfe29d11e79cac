//! The real parts the other tests rely on: the operator binary starts against the test
//! control plane and serves health and metrics, and a private nats-server offers JetStream
//! that keeps its data across a kill and restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use support::fixtures::StubProviderExt;

mod support;

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn operator_starts_and_serves_health_and_metrics() {
    let plane = support::control_plane();
    let port = support::free_port();
    let _operator = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kfp-operator"))
            .args(["run", "--install-crds", "--admin-addr", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", &plane.kubeconfig)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    support::eventually("the operator to report ready", Duration::from_secs(30), || async {
        support::http_get(port, "/readyz").await.filter(|(status, _)| *status == 200)
    })
    .await;
    assert_eq!(support::http_get(port, "/livez").await.map(|(status, _)| status), Some(200));
    let (status, metrics) = support::http_get(port, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("kfp_operator_build_info"), "{metrics}");
}

#[tokio::test]
async fn private_nats_server_keeps_jetstream_data_across_a_restart() {
    let server = support::NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: "probe".into(),
            subjects: vec!["probe.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    jetstream.publish("probe.one", "hello".into()).await.unwrap().await.unwrap();

    let (port, store) = server.kill();
    let server = support::NatsServer::start_on(port, store);
    let client = async_nats::connect(server.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream("probe").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}

/// The operator binary with a configuration file: a Run on a stub Provider is submitted,
/// completes, and its completion is published on the operator's JetStream stream and recorded.
#[tokio::test]
async fn operator_publishes_a_stub_run_completion() {
    use kfp_operator::api::{CompletionState, NamespacedName, Pipeline, Provider, Run, RunSpec};
    use kube::api::{Api, PostParams};

    let plane = support::control_plane();
    let client = support::client().await;
    let ns = support::namespace(&client, "operator-binary").await;
    let nats = support::NatsServer::start();
    let admin_port = support::free_port();
    let ingest_port = support::free_port();
    let config_dir = tempfile::tempdir().unwrap();
    let config_path = config_dir.path().join("operator.yaml");
    std::fs::write(
        &config_path,
        format!(
            "namespaces: [{ns}]\nevents:\n  listenAddr: 127.0.0.1:{ingest_port}\n  nats:\n    url: {}\n",
            nats.url()
        ),
    )
    .unwrap();
    let _operator = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kfp-operator"))
            .args(["run", "--admin-addr", &format!("127.0.0.1:{admin_port}"), "--config"])
            .arg(&config_path)
            .env("KUBECONFIG", &plane.kubeconfig)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    support::eventually("the operator to report ready", Duration::from_secs(30), || async {
        support::http_get(admin_port, "/readyz").await.filter(|(status, _)| *status == 200)
    })
    .await;

    let post = PostParams::default();
    let provider = support::fixtures::stub_provider("stub").completing_after("200ms").producing(
        "Pusher",
        "pushed_model",
        "gs://m/1",
    );
    Api::<Provider>::namespaced(client.clone(), &ns).create(&post, &provider).await.unwrap();
    let pipeline = support::fixtures::pipeline("penguin", &NamespacedName::new(&ns, "stub"));
    Api::<Pipeline>::namespaced(client.clone(), &ns).create(&post, &pipeline).await.unwrap();
    let run = Run::new(
        "penguin-run",
        RunSpec {
            provider: NamespacedName::new(&ns, "stub"),
            pipeline: "penguin".parse().unwrap(),
            artifacts: vec![kfp_operator::api::OutputArtifact::new(
                "serving-model",
                "Pusher:pushed_model".parse().unwrap(),
            )],
            ..RunSpec::default()
        },
    );
    let runs: Api<Run> = Api::namespaced(client.clone(), &ns);
    runs.create(&post, &run).await.unwrap();

    support::eventually("the run's completion to be recorded", Duration::from_secs(60), || async {
        runs.get("penguin-run")
            .await
            .ok()
            .and_then(|r| r.status?.completion_state)
            .filter(|state| *state == CompletionState::Succeeded)
    })
    .await;
    let jetstream = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let mut stream = jetstream.get_stream("kfp-operator-events").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 2, "one run-completion and one model-ready");
    let (status, body) = support::http_get(ingest_port, "/events").await.unwrap();
    assert_eq!(status, 405, "{body}");
}
