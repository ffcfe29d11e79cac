//! The event sinks against real nats-servers on loopback: the operator's JetStream stream
//! (structured CloudEvents, subjects, dedup, a server kill and restart), the Argo Events
//! JetStream bus format, the legacy core-NATS body, the in-memory bus, building sinks from
//! configuration, and connecting with user/password and token authentication.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use chrono::{TimeZone, Utc};
use cloudevents::AttributesReader;
use futures::StreamExt;
use kfp_operator::api::{Artifact, NamespacedName};
use kfp_operator::events::config::{self, EventsConfig, NatsConnection};
use kfp_operator::events::sink::{Outgoing, Sink, SinkError};
use kfp_operator::events::sinks::{
    self, ArgoEventBusSink, JetStreamSink, LegacyNatsSink, MemorySink, STRUCTURED_CONTENT_TYPE,
};
use kfp_operator::events::{
    CloudEventOptions, MODEL_READY_TYPE, RUN_COMPLETION_TYPE, RunCompletionEvent, RunCompletionStatus,
    cloud_events_for, to_structured_json,
};
use serde_json::{Value, json};

mod support;

const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs a test body, failing it if it takes longer than a minute.
async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(Duration::from_secs(60), body).await.expect("the test took longer than 60s");
}

fn completion(run_id: &str, status: RunCompletionStatus, artifacts: Vec<Artifact>) -> RunCompletionEvent {
    RunCompletionEvent {
        status,
        pipeline_name: NamespacedName::new("base-namespace", "penguin"),
        run_configuration_name: Some(NamespacedName::new("base-namespace", "penguin-rc")),
        run_name: None,
        run_id: run_id.into(),
        run_start_time: Some(Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap()),
        run_end_time: Some(Utc.with_ymd_and_hms(2024, 5, 1, 10, 21, 7).unwrap()),
        artifacts,
        provider: NamespacedName::new("provider-namespace", "kfp"),
    }
}

fn outgoing(completion: RunCompletionEvent) -> Outgoing {
    let cloud_events = cloud_events_for(&completion, &CloudEventOptions::default(), Utc::now());
    Outgoing { completion, cloud_events }
}

/// A succeeded run with one artifact: a `run-completion` and a `model-ready` event.
fn succeeded(run_id: &str) -> Outgoing {
    outgoing(completion(run_id, RunCompletionStatus::Succeeded, vec![Artifact::new("model", "gs://b/model")]))
}

fn connection(url: String) -> NatsConnection {
    NatsConnection { url, ..NatsConnection::default() }
}

fn jetstream_config(duplicate_window: Duration) -> config::JetStreamSink {
    config::JetStreamSink {
        enabled: true,
        stream: "kfp-test-events".into(),
        subject_prefix: "kfp".into(),
        duplicate_window,
        max_age: Duration::from_secs(3600),
    }
}

async fn message_count(client: &async_nats::Client, stream: &str) -> u64 {
    jetstream::new(client.clone()).get_stream(stream).await.unwrap().cached_info().state.messages
}

/// Every message of `stream`, in order.
async fn messages(client: &async_nats::Client, name: &str) -> Vec<jetstream::message::StreamMessage> {
    let stream = jetstream::new(client.clone()).get_stream(name).await.unwrap();
    let state = &stream.cached_info().state;
    let mut messages = Vec::new();
    if state.messages > 0 {
        for sequence in state.first_sequence..=state.last_sequence {
            messages.push(stream.get_raw_message(sequence).await.unwrap());
        }
    }
    messages
}

fn header<'a>(message: &'a jetstream::message::StreamMessage, name: &str) -> Option<&'a str> {
    message.headers.get(name).map(|value| value.as_str())
}

#[tokio::test]
async fn jetstream_publishes_structured_cloud_events_once() {
    bounded(async {
        let server = support::NatsServer::start();
        let client = sinks::connect(&connection(server.url())).await.unwrap();
        let config = jetstream_config(Duration::from_secs(420));
        let sink = JetStreamSink::new(client.clone(), &config, PUBLISH_TIMEOUT, 16).await.unwrap();
        assert_eq!(sink.name(), "jetstream");

        let info =
            jetstream::new(client.clone()).get_stream(&config.stream).await.unwrap().cached_info().clone();
        assert_eq!(info.config.duplicate_window, Duration::from_secs(420));
        assert_eq!(info.config.subjects, vec!["kfp.>".to_owned()]);
        assert_eq!(info.config.max_age, Duration::from_secs(3600));
        assert_eq!(info.config.storage, stream::StorageType::File);

        let event = succeeded("run-1");
        assert_eq!(event.cloud_events.len(), 2);
        sink.publish(&event).await.unwrap();
        let stored = messages(&client, &config.stream).await;
        assert_eq!(stored.len(), 2);
        let expected = [
            ("kfp.run-completion.base-namespace.penguin.succeeded", RUN_COMPLETION_TYPE),
            ("kfp.model-ready.base-namespace.penguin", MODEL_READY_TYPE),
        ];
        for ((message, cloud_event), (subject, ty)) in stored.iter().zip(&event.cloud_events).zip(expected) {
            assert_eq!(message.subject.as_str(), subject);
            assert_eq!(header(message, "Nats-Msg-Id"), Some(cloud_event.id()));
            assert_eq!(header(message, "Content-Type"), Some(STRUCTURED_CONTENT_TYPE));
            let body: Value = serde_json::from_slice(&message.payload).unwrap();
            assert_eq!(body["specversion"], json!("1.0"));
            assert_eq!(body["type"], json!(ty));
            assert_eq!(body["id"], json!(cloud_event.id()));
            assert_eq!(body["datacontenttype"], json!("application/json"));
            assert!(body["data"].is_object(), "data must be an embedded object: {body}");
            assert_eq!(body["data"]["status"], json!("succeeded"));
            assert_eq!(body["data"]["artifacts"][0]["location"], json!("gs://b/model"));
        }

        // Publishing again is acknowledged as a duplicate: success, and nothing new is stored.
        for _ in 0..3 {
            sink.publish(&event).await.unwrap();
        }
        assert_eq!(message_count(&client, &config.stream).await, 2);

        // A failed run has only the run-completion event.
        sink.publish(&outgoing(completion("run-2", RunCompletionStatus::Failed, vec![]))).await.unwrap();
        let stored = messages(&client, &config.stream).await;
        assert_eq!(stored.len(), 3);
        assert_eq!(stored[2].subject.as_str(), "kfp.run-completion.base-namespace.penguin.failed");

        let too_short = jetstream_config(Duration::from_secs(60));
        let error = JetStreamSink::new(client.clone(), &too_short, PUBLISH_TIMEOUT, 16).await.unwrap_err();
        assert!(matches!(error, SinkError::Configuration { .. }), "{error:?}");

        // A sink started with other settings updates the existing stream and keeps its messages.
        let changed = jetstream_config(Duration::from_secs(600));
        JetStreamSink::new(client.clone(), &changed, PUBLISH_TIMEOUT, 16).await.unwrap();
        let info =
            jetstream::new(client.clone()).get_stream(&config.stream).await.unwrap().cached_info().clone();
        assert_eq!(info.config.duplicate_window, Duration::from_secs(600));
        assert_eq!(info.state.messages, 3);
    })
    .await;
}

#[tokio::test]
async fn jetstream_publishes_survive_a_server_restart_exactly_once() {
    bounded(async {
        let server = support::NatsServer::start();
        let client = sinks::connect(&connection(server.url())).await.unwrap();
        let config = jetstream_config(Duration::from_secs(600));
        let sink = Arc::new(JetStreamSink::new(client.clone(), &config, PUBLISH_TIMEOUT, 16).await.unwrap());
        let warm_up = succeeded("before-the-kill");
        sink.publish(&warm_up).await.unwrap();

        let (port, store) = server.kill();
        let completions: Vec<Outgoing> = (0..4)
            .map(|i| match i % 2 {
                0 => succeeded(&format!("during-outage-{i}")),
                _ => outgoing(completion(&format!("during-outage-{i}"), RunCompletionStatus::Failed, vec![])),
            })
            .collect();
        let tasks: Vec<_> = completions
            .iter()
            .cloned()
            .map(|event| {
                let sink = sink.clone();
                tokio::spawn(async move { sink.publish(&event).await })
            })
            .collect();

        // Down for longer than one publish timeout: nothing may claim success meanwhile.
        tokio::time::sleep(PUBLISH_TIMEOUT + Duration::from_millis(500)).await;
        for task in &tasks {
            assert!(!task.is_finished(), "a publish returned while the server was down");
        }

        let server = support::NatsServer::start_on(port, store);
        for task in tasks {
            task.await.unwrap().unwrap();
        }

        let client = async_nats::connect(server.url()).await.unwrap();
        let stored = messages(&client, &config.stream).await;
        let expected: Vec<&str> = std::iter::once(&warm_up)
            .chain(&completions)
            .flat_map(|event| event.cloud_events.iter().map(|e| e.id()))
            .collect();
        let ids: Vec<&str> = stored.iter().map(|message| header(message, "Nats-Msg-Id").unwrap()).collect();
        assert_eq!(ids.len(), expected.len(), "every event exactly once: {ids:?}");
        assert_eq!(ids.iter().collect::<HashSet<_>>(), expected.iter().collect::<HashSet<_>>());
    })
    .await;
}

#[tokio::test]
async fn jetstream_gives_up_with_a_timeout_and_bounds_publishes_in_flight() {
    bounded(async {
        let server = support::NatsServer::start();
        let client = sinks::connect(&connection(server.url())).await.unwrap();
        let timeout = Duration::from_millis(500);
        // One publish in flight at a time: the second caller waits for the first to finish.
        let sink = JetStreamSink::new(client, &jetstream_config(Duration::from_secs(600)), timeout, 1)
            .await
            .unwrap();
        let _stopped = server.kill();

        let started = tokio::time::Instant::now();
        let timed = |run_id: &'static str| {
            let sink = &sink;
            async move {
                let result = sink.publish(&succeeded(run_id)).await;
                (result, started.elapsed())
            }
        };
        let ((first, first_done), (second, second_done)) = tokio::join!(timed("first"), timed("second"));
        for error in [first.unwrap_err(), second.unwrap_err()] {
            assert!(matches!(error, SinkError::Timeout { .. }), "{error:?}");
            assert_eq!(error.category(), "SinkTimeout");
        }
        // Each call is bounded by 6 × publishTimeout (plus scheduling slack), one after the other.
        let (earlier, later) = (first_done.min(second_done), first_done.max(second_done));
        assert!(earlier >= Duration::from_secs(2) && earlier < Duration::from_secs(4), "{earlier:?}");
        assert!(later >= earlier + Duration::from_secs(2), "{earlier:?} then {later:?}");
        assert!(later < Duration::from_secs(8), "{later:?}");
    })
    .await;
}

fn argo_config(url: String) -> config::ArgoEventBusSink {
    config::ArgoEventBusSink {
        nats: connection(url),
        event_source_name: "kfp-operator".into(),
        event_name: "run-completion".into(),
        stream: "default".into(),
    }
}

/// The stream an Argo Events JetStream EventBus creates.
async fn create_argo_stream(client: &async_nats::Client, subjects: &str) {
    jetstream::new(client.clone())
        .create_stream(stream::Config {
            name: "default".into(),
            subjects: vec![subjects.into()],
            duplicate_window: Duration::from_secs(300),
            max_age: Duration::from_secs(168 * 3600),
            max_messages: 50_000,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn argo_bus_gets_what_an_argo_event_source_would_write() {
    bounded(async {
        let server = support::NatsServer::start();
        let client = sinks::connect(&connection(server.url())).await.unwrap();
        create_argo_stream(&client, "default.*.*").await;
        let sink =
            ArgoEventBusSink::new(client.clone(), &argo_config(server.url()), PUBLISH_TIMEOUT, 8).unwrap();
        assert_eq!(sink.name(), "argo-eventbus");
        assert_eq!(sink.subject(), "default.kfp-operator.run-completion");

        let event = succeeded("run-1");
        sink.publish(&event).await.unwrap();
        let stored = messages(&client, "default").await;
        assert_eq!(stored.len(), 2);
        for (message, original) in stored.iter().zip(&event.cloud_events) {
            assert_eq!(message.subject.as_str(), "default.kfp-operator.run-completion");
            assert_eq!(header(message, "Nats-Msg-Id"), Some(original.id()));
            let body: Value = serde_json::from_slice(&message.payload).unwrap();
            assert_eq!(body["specversion"], json!("1.0"));
            assert_eq!(body["id"], json!(original.id()));
            assert_eq!(body["type"], json!(original.ty()));
            assert_eq!(body["source"], json!("kfp-operator"));
            assert_eq!(body["subject"], json!("run-completion"));
            assert_eq!(body["datacontenttype"], json!("application/json"));
            assert_eq!(body["time"], json!("2024-05-01T10:21:07Z"));
            assert!(body.get("dataschema").is_none(), "{body}");
            // Sensor data filters and dataKeys are gjson paths over `data`: `body.data.status`
            // and `body.data.artifacts.0.location`, as with the reference's NATS EventSource.
            assert_eq!(body["data"]["body"], to_structured_json(original));
            assert_eq!(body["data"]["body"]["data"]["status"], json!("succeeded"));
            assert_eq!(body["data"]["body"]["data"]["pipelineName"], json!("base-namespace/penguin"));
            assert_eq!(body["data"]["body"]["data"]["artifacts"][0]["location"], json!("gs://b/model"));
            assert_eq!(body["data"]["body"]["subject"], json!("base-namespace/penguin-rc"));
        }
        assert_ne!(stored[0].payload, stored[1].payload);

        for _ in 0..2 {
            sink.publish(&event).await.unwrap();
        }
        assert_eq!(message_count(&client, "default").await, 2);
    })
    .await;
}

#[tokio::test]
async fn argo_bus_without_its_stream_is_a_configuration_error() {
    bounded(async {
        let server = support::NatsServer::start();
        let client = sinks::connect(&connection(server.url())).await.unwrap();
        let sink =
            ArgoEventBusSink::new(client.clone(), &argo_config(server.url()), PUBLISH_TIMEOUT, 8).unwrap();
        let error = sink.publish(&succeeded("run-1")).await.unwrap_err();
        assert!(matches!(error, SinkError::Configuration { .. }), "{error:?}");
        assert!(error.to_string().contains("stream \"default\" is missing"), "{error}");
        assert!(error.to_string().contains("Argo Events creates the EventBus stream"), "{error}");

        // A stream that does not capture the subject is a configuration error as well.
        create_argo_stream(&client, "elsewhere.>").await;
        let error = sink.publish(&succeeded("run-1")).await.unwrap_err();
        assert!(matches!(error, SinkError::Configuration { .. }), "{error:?}");
        assert!(error.to_string().contains("do not capture"), "{error}");

        // Names that cannot be subject tokens are refused up front.
        let mut dotted = argo_config(server.url());
        dotted.event_source_name = "kfp.operator".into();
        let error = ArgoEventBusSink::new(client, &dotted, PUBLISH_TIMEOUT, 8).unwrap_err();
        assert!(error.to_string().contains("eventSourceName"), "{error}");
    })
    .await;
}

#[tokio::test]
async fn legacy_nats_publishes_the_reference_body_once_per_completion() {
    bounded(async {
        let server = support::NatsServer::start();
        let subscriber = async_nats::connect(server.url()).await.unwrap();
        let mut subscription = subscriber.subscribe("events").await.unwrap();
        subscriber.flush().await.unwrap();

        let client = sinks::connect(&connection(server.url())).await.unwrap();
        let config = config::LegacyNatsSink { enabled: true, subject: "events".into() };
        let sink = LegacyNatsSink::new(client, &config, PUBLISH_TIMEOUT, 4);
        assert_eq!(sink.name(), "legacy-nats");
        let event = succeeded("run-1");
        sink.publish(&event).await.unwrap();

        let message =
            tokio::time::timeout(Duration::from_secs(5), subscription.next()).await.unwrap().unwrap();
        let body: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
        assert_eq!(body["data"]["status"], json!("succeeded"));
        assert_eq!(body["data"]["runId"], json!("run-1"));
        assert_eq!(body["data"], serde_json::to_value(&event.completion).unwrap());
        // One message per completion, not per CloudEvent.
        assert!(tokio::time::timeout(Duration::from_millis(300), subscription.next()).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn memory_sink_deduplicates_keeps_a_bounded_history_and_broadcasts() {
    bounded(async {
        let sink = MemorySink::with_capacity(3);
        assert_eq!(sink.name(), "memory");
        let mut receiver = sink.subscribe();
        let event = succeeded("run-1");
        for _ in 0..3 {
            sink.publish(&event).await.unwrap();
        }
        let ids: Vec<&str> = event.cloud_events.iter().map(|e| e.id()).collect();
        assert_eq!(sink.published().iter().map(|e| e.id().to_owned()).collect::<Vec<_>>(), ids);
        for id in &ids {
            assert_eq!(receiver.recv().await.unwrap().id(), *id);
        }
        assert!(receiver.try_recv().is_err(), "duplicates must not be broadcast");

        let failed = outgoing(completion("run-2", RunCompletionStatus::Failed, vec![]));
        let failed_again = outgoing(completion("run-3", RunCompletionStatus::Failed, vec![]));
        sink.publish(&failed).await.unwrap();
        sink.publish(&failed_again).await.unwrap();
        let kept: Vec<String> = sink.published().iter().map(|e| e.id().to_owned()).collect();
        assert_eq!(kept.len(), 3);
        assert!(!kept.contains(&ids[0].to_owned()), "the oldest event is dropped");
        assert_eq!(kept[2], failed_again.cloud_events[0].id());
        assert_eq!(receiver.recv().await.unwrap().id(), failed.cloud_events[0].id());
    })
    .await;
}

fn names(sinks: &sinks::Sinks) -> Vec<&'static str> {
    sinks.all.iter().map(|sink| sink.name()).collect()
}

#[tokio::test]
async fn sinks_are_built_from_the_configuration() {
    bounded(async {
        let embedded = sinks::build_sinks(&EventsConfig::default()).await.unwrap();
        assert_eq!(names(&embedded), vec!["memory"]);
        assert!(embedded.memory.is_some() && embedded.nats.is_none());

        let server = support::NatsServer::start();
        let client = async_nats::connect(server.url()).await.unwrap();
        create_argo_stream(&client, "default.*.*").await;
        let mut config = EventsConfig {
            nats: Some(connection(server.url())),
            legacy_nats: config::LegacyNatsSink { enabled: true, subject: "events".into() },
            argo_event_bus: Some(argo_config(server.url())),
            ..EventsConfig::default()
        };
        let built = sinks::build_sinks(&config).await.unwrap();
        assert_eq!(names(&built), vec!["jetstream", "legacy-nats", "argo-eventbus"]);
        assert!(built.memory.is_none() && built.nats.is_some());
        for sink in &built.all {
            sink.publish(&succeeded("run-1")).await.unwrap();
        }
        assert_eq!(message_count(&client, "kfp-operator-events").await, 2);
        assert_eq!(message_count(&client, "default").await, 2);

        config.jetstream.enabled = false;
        config.legacy_nats.enabled = false;
        config.argo_event_bus = None;
        let error = sinks::build_sinks(&config).await.unwrap_err();
        assert!(matches!(error, SinkError::Configuration { .. }), "{error:?}");
    })
    .await;
}

/// A nats-server (no JetStream) started with extra arguments, killed when dropped.
struct AuthServer {
    child: Child,
    port: u16,
}

impl AuthServer {
    fn start(args: &[&str]) -> Self {
        let output = Command::new("bash")
            .arg(support::repo_root().join("deploy/local/dev-env"))
            .arg("nats-bin")
            .output()
            .expect("running deploy/local/dev-env nats-bin");
        let binary = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(!binary.is_empty(), "no nats-server binary; run `deploy/local/dev-env install`");
        // A free port can be taken by a parallel test before the server binds it: try again then.
        for _ in 0..5 {
            let port = support::free_port();
            let mut child = Command::new(&binary)
                .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self { child, port };
                }
                assert!(std::time::Instant::now() < deadline, "nats-server did not listen on port {port}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("nats-server could not start on a free port");
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn assert_rejected(connection: &NatsConnection, what: &str) {
    let error = sinks::connect(connection).await.unwrap_err();
    assert!(matches!(error, SinkError::Configuration { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("rejected the credentials") && message.contains(what), "{message}");
}

#[tokio::test]
async fn connect_with_user_and_password() {
    bounded(async {
        let server = AuthServer::start(&["--user", "u", "--pass", "p"]);
        let good =
            NatsConnection { user: Some("u".into()), password: Some("p".into()), ..connection(server.url()) };
        let client = sinks::connect(&good).await.unwrap();
        client.publish("probe", "x".into()).await.unwrap();
        client.flush().await.unwrap();

        let wrong = NatsConnection { password: Some("wrong".into()), ..good.clone() };
        assert_rejected(&wrong, "user \"u\" and password").await;
        assert_rejected(&connection(server.url()), "no credentials").await;

        let half = NatsConnection { password: None, ..good };
        let error = sinks::connect(&half).await.unwrap_err();
        assert!(error.to_string().contains("user and password must be set together"), "{error}");
    })
    .await;
}

#[tokio::test]
async fn connect_with_a_token() {
    bounded(async {
        let server = AuthServer::start(&["--auth", "s3cret"]);
        let good = NatsConnection { token: Some("s3cret".into()), ..connection(server.url()) };
        let client = sinks::connect(&good).await.unwrap();
        client.flush().await.unwrap();

        assert_rejected(&NatsConnection { token: Some("wrong".into()), ..good.clone() }, "token").await;

        let both = NatsConnection { user: Some("u".into()), password: Some("p".into()), ..good };
        let error = sinks::connect(&both).await.unwrap_err();
        assert!(error.to_string().contains("set only one of"), "{error}");
    })
    .await;
}

#[tokio::test]
async fn connect_fails_clearly_without_a_server_or_with_bad_files() {
    bounded(async {
        let url = format!("nats://127.0.0.1:{}", support::free_port());
        let error = sinks::connect(&connection(url.clone())).await.unwrap_err();
        assert!(matches!(error, SinkError::Unavailable { .. }), "{error:?}");
        assert!(error.to_string().contains(&format!("cannot connect to NATS at {url}")), "{error}");

        let missing =
            NatsConnection { creds_file: Some("/nonexistent/user.creds".into()), ..connection(url.clone()) };
        let error = sinks::connect(&missing).await.unwrap_err();
        assert!(matches!(error, SinkError::Configuration { .. }), "{error:?}");
        assert!(error.to_string().contains("/nonexistent/user.creds"), "{error}");

        let missing = NatsConnection { tls_ca_file: Some("/nonexistent/ca.pem".into()), ..connection(url) };
        let error = sinks::connect(&missing).await.unwrap_err();
        assert!(error.to_string().contains("TLS CA file /nonexistent/ca.pem"), "{error}");

        let error = sinks::connect(&connection("http://127.0.0.1:1".into())).await.unwrap_err();
        assert!(matches!(error, SinkError::Configuration { .. }), "{error:?}");
    })
    .await;
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("running openssl");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test]
async fn connect_with_tls_and_a_private_ca() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=kfp-test-ca",
            ],
        );
        openssl(
            dir.path(),
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        std::fs::write(path("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(
            dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "1",
                "-extfile",
                "ext.cnf",
            ],
        );
        let (cert, key) = (path("server.pem"), path("server.key"));
        let server = AuthServer::start(&[
            "--tls",
            "--tlscert",
            cert.to_str().unwrap(),
            "--tlskey",
            key.to_str().unwrap(),
            "--user",
            "u",
            "--pass",
            "p",
        ]);

        let good = NatsConnection {
            user: Some("u".into()),
            password: Some("p".into()),
            tls_ca_file: Some(path("ca.pem")),
            tls_required: true,
            ..connection(server.url())
        };
        let client = sinks::connect(&good).await.unwrap();
        client.publish("probe", "x".into()).await.unwrap();
        client.flush().await.unwrap();

        // The server's certificate is not signed by a CA we trust without the CA file.
        let untrusted = NatsConnection { tls_ca_file: None, ..good };
        let error = sinks::connect(&untrusted).await.unwrap_err();
        assert!(matches!(error, SinkError::Configuration { .. }), "{error:?}");
        assert!(error.to_string().contains("TLS with NATS at"), "{error}");
    })
    .await;
}
