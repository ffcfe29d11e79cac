//! The real parts the other tests rely on: the operator binary starts against the test
//! control plane and serves health and metrics, and a private nats-server offers JetStream
//! that keeps its data across a kill and restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Some((status, body))
}

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
        http_get(port, "/readyz").await.filter(|(status, _)| *status == 200)
    })
    .await;
    assert_eq!(http_get(port, "/livez").await.map(|(status, _)| status), Some(200));
    let (status, metrics) = http_get(port, "/metrics").await.unwrap();
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
