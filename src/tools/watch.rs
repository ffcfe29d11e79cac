//! `kfp-operator watch`: shows the operator at work in plain lines, for a newcomer's first run
//! and for experiments. One line per Run created (its RunConfiguration, trigger and parameters,
//! so the artifact location passed down is visible), one per CloudEvent on the operator's
//! JetStream stream (type, subject, status, artifacts), and the dependency graph as text once
//! every Run seen has completed and nothing else happened for `--settle`.
//!
//! Runs are watched through the Kubernetes API. Events are received on the stream's subjects as
//! they are published (so also those the stream drops as repeats of an id it already holds, as
//! when a stub Run of the same name completes again); with `--since`, the stream is also
//! replayed from that time on, and so are the Runs created since, so a caller can apply
//! manifests first and start watching afterwards without losing a line. An event received both
//! ways is printed once (by its CloudEvent id).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::api::conditions::SyncState;
use crate::api::labels;
use crate::api::{NamespacedName, Run};
use crate::events::cloudevent::subject_token;

/// What to watch and when to stop.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// The NATS server of the operator's JetStream stream.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// The operator's stream.
    #[arg(long, default_value = "kfp-operator-events")]
    pub stream: String,
    /// The subject prefix of the operator's stream.
    #[arg(long, default_value = "kfp")]
    pub prefix: String,
    /// Only this namespace (repeat for several); all namespaces when absent.
    #[arg(long = "namespace")]
    pub namespaces: Vec<String>,
    /// Also show what happened from this time on (RFC 3339, e.g. `2024-05-01T10:00:00Z`);
    /// without it, what happens from the start of the watch.
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// Print the graph once every Run has completed and nothing happened for this long.
    #[arg(long, default_value = "2s", value_parser = crate::api::duration::parse)]
    pub settle: Duration,
    /// Exit (status 0) after printing the graph the first time.
    #[arg(long)]
    pub until_settled: bool,
    /// Exit with an error if still watching after this long (e.g. `5m`).
    #[arg(long, value_parser = crate::api::duration::parse)]
    pub timeout: Option<Duration>,
}

/// A Run as far as the watch is concerned.
#[derive(Debug, Clone, PartialEq)]
struct SeenRun {
    /// Completed, or failed before starting on the provider.
    done: bool,
}

/// Watches until SIGINT or SIGTERM, `--until-settled` or `--timeout`.
pub async fn watch(
    client: kube::Client,
    args: WatchArgs,
    out: &mut (impl Write + Send),
) -> anyhow::Result<()> {
    let where_ = if args.namespaces.is_empty() {
        "all namespaces".to_owned()
    } else {
        format!("namespace {}", args.namespaces.join(", "))
    };
    say(
        out,
        &format!(
            "watching Runs in {where_} and events on {} (stream {}); Ctrl-C stops",
            args.nats_url, args.stream
        ),
    )?;
    let (events_tx, mut events) = mpsc::channel::<EventLine>(256);
    let events_task = tokio::spawn(follow_events(args.clone(), events_tx));
    let mut runs = run_events(&client, &args.namespaces);
    let mut seen: BTreeMap<NamespacedName, SeenRun> = BTreeMap::new();
    let mut last_activity = Instant::now();
    let mut graph_shown = false;
    let mut last_watch_error = String::new();
    let mut printed_events: std::collections::HashSet<String> = std::collections::HashSet::new();
    let runs_since = args.since.unwrap_or_else(Utc::now);
    let deadline = args.timeout.map(|timeout| Instant::now() + timeout);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let stop = stop_signal();
    tokio::pin!(stop);
    let result = loop {
        tokio::select! {
            () = &mut stop => break Ok(()),
            Some(event) = runs.next() => match event {
                Ok(watcher::Event::Apply(run) | watcher::Event::InitApply(run)) => {
                    if let Some(line) = observe(&mut seen, &run, runs_since) {
                        say(out, &line)?;
                        last_activity = Instant::now();
                        graph_shown = false;
                    }
                }
                Ok(watcher::Event::Delete(run)) => {
                    seen.remove(&name_of(&run));
                }
                Ok(_) => {}
                Err(error) => {
                    let text = error.to_string();
                    if text != last_watch_error {
                        eprintln!("watch: cannot watch Runs: {text}; retrying");
                        last_watch_error = text;
                    }
                }
            },
            Some(event) = events.recv() => {
                if event.id.as_ref().is_none_or(|id| printed_events.insert(id.clone())) {
                    say(out, &event.line)?;
                    last_activity = Instant::now();
                    graph_shown = false;
                }
            }
            _ = tick.tick() => {
                let settled = !seen.is_empty() && seen.values().all(|run| run.done);
                if settled && !graph_shown && last_activity.elapsed() >= args.settle {
                    let graph = crate::tools::graph::graph_of_cluster(&client, single(&args.namespaces), "text")
                        .await
                        .map_err(|e| cluster_error("listing RunConfigurations", e))?;
                    say(out, "dependency graph (each RunConfiguration with its latest successful run):")?;
                    write!(out, "{graph}")?;
                    out.flush()?;
                    graph_shown = true;
                    if args.until_settled {
                        break Ok(());
                    }
                }
                if let (Some(deadline), Some(timeout)) = (deadline, args.timeout)
                    && Instant::now() >= deadline
                {
                    let running = seen.values().filter(|run| !run.done).count();
                    break Err(anyhow::anyhow!(
                        "still watching after {timeout:?}: {running} of {} Runs not completed",
                        seen.len()
                    ));
                }
            }
        }
    };
    events_task.abort();
    result
}

fn say(out: &mut impl Write, line: &str) -> anyhow::Result<()> {
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

fn single(namespaces: &[String]) -> Option<&str> {
    match namespaces {
        [one] => Some(one.as_str()),
        _ => None,
    }
}

fn name_of(run: &Run) -> NamespacedName {
    NamespacedName::new(run.namespace().unwrap_or_default(), run.name_any())
}

/// Records `run` and returns the line to print when it is new (created `since` then, to the
/// second), or when it failed to start.
fn observe(seen: &mut BTreeMap<NamespacedName, SeenRun>, run: &Run, since: DateTime<Utc>) -> Option<String> {
    let name = name_of(run);
    let status = run.status.clone().unwrap_or_default();
    let failed = SyncState::of(&status.status) == SyncState::Failed;
    let done = status.completion_state.is_some() || failed;
    match seen.get_mut(&name) {
        Some(known) => {
            let newly_failed = failed && !known.done && status.completion_state.is_none();
            known.done = done;
            newly_failed.then(|| failure_line(&name, &status.status.conditions))
        }
        None => {
            let created = run.creation_timestamp().map(|t| t.0);
            if created.is_some_and(|created| created.as_second() < since.timestamp()) {
                return None;
            }
            seen.insert(name.clone(), SeenRun { done });
            Some(run_line(run, &name))
        }
    }
}

/// `run created <ns/name>  runConfiguration=…  trigger=…  parameters: a=…`.
fn run_line(run: &Run, name: &NamespacedName) -> String {
    let labels = run.labels();
    let namespace = &name.namespace;
    let label = |key: &str| labels.get(key).filter(|v| !v.is_empty());
    let run_configuration =
        label(labels::RUN_CONFIGURATION).map_or("-".to_owned(), |rc| format!("{namespace}/{rc}"));
    let trigger = match (label(labels::TRIGGER_TYPE), label(labels::TRIGGER_SOURCE)) {
        (Some(kind), Some(source)) => {
            let source_namespace = label(labels::TRIGGER_SOURCE_NAMESPACE).unwrap_or(namespace);
            format!("{kind} {source_namespace}/{source}")
        }
        (Some(kind), None) => kind.clone(),
        _ => "-".to_owned(),
    };
    let parameters = if run.spec.parameters.is_empty() {
        "-".to_owned()
    } else {
        run.spec.parameters.iter().map(|p| format!("{}={}", p.name, p.value)).collect::<Vec<_>>().join(" ")
    };
    format!(
        "{}  run created     {name}  runConfiguration={run_configuration}  trigger={trigger}  parameters: {parameters}",
        clock()
    )
}

fn failure_line(
    name: &NamespacedName,
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> String {
    let message = conditions.iter().find(|c| c.type_ == "Synchronized").map_or("", |c| c.message.as_str());
    format!("{}  run failed      {name}  {message}", clock())
}

fn clock() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

/// A line to print for an event, with the event's CloudEvent id.
#[derive(Debug, Clone, PartialEq)]
pub struct EventLine {
    pub id: Option<String>,
    pub line: String,
}

/// `event published <kind>  subject=…  status=…  artifacts: name=location …`, or `None` for an
/// event of a run that ended before `since`.
pub fn event_line(body: &[u8], since: Option<DateTime<Utc>>) -> Option<EventLine> {
    let Ok(event) = serde_json::from_slice::<Value>(body) else {
        let line = format!("{}  event published (not JSON, {} bytes)", clock(), body.len());
        return Some(EventLine { id: None, line });
    };
    let time = event["time"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    if let (Some(since), Some(time)) = (since, time)
        && time < since
    {
        return None;
    }
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let kind = text(&event["type"]);
    let kind = kind.rsplit('.').next().unwrap_or(&kind).to_owned();
    let data = &event["data"];
    let artifacts: Vec<String> = data["artifacts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| format!("{}={}", text(&a["name"]), text(&a["location"])))
        .collect();
    let artifacts = if artifacts.is_empty() { "-".to_owned() } else { artifacts.join(" ") };
    let line = format!(
        "{}  event published {kind:<15} subject={}  status={}  artifacts: {artifacts}",
        clock(),
        text(&event["subject"]),
        text(&data["status"]),
    );
    Some(EventLine { id: event["id"].as_str().map(str::to_owned), line })
}

/// The Runs' watch events: one watch over all namespaces, or one per namespace.
fn run_events(
    client: &kube::Client,
    namespaces: &[String],
) -> futures::stream::BoxStream<'static, Result<watcher::Event<Run>, watcher::Error>> {
    let apis: Vec<Api<Run>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect()
    };
    let streams =
        apis.into_iter().map(|api| watcher(api, watcher::Config::default()).default_backoff().boxed());
    futures::stream::select_all(streams).boxed()
}

/// The subjects of the operator's events in these namespaces.
fn event_subjects(prefix: &str, namespaces: &[String]) -> Vec<String> {
    let tokens: Vec<String> = if namespaces.is_empty() {
        vec!["*".to_owned()]
    } else {
        namespaces.iter().map(|ns| subject_token(ns)).collect()
    };
    tokens
        .iter()
        .flat_map(|ns| [format!("{prefix}.run-completion.{ns}.>"), format!("{prefix}.model-ready.{ns}.>")])
        .collect()
}

/// Receives the operator's events and sends one line per event: live on the subjects, and
/// with `--since` also from the stream (once it exists).
async fn follow_events(args: WatchArgs, lines: mpsc::Sender<EventLine>) {
    let client = match crate::tools::tail::connect(&args.nats_url, "kfp-operator-watch").await {
        Ok(client) => client,
        Err(error) => {
            eprintln!("watch: no events: {}", super::error_line(&error));
            return;
        }
    };
    let live = subscribe(&client, &args, &lines);
    let replay = async {
        if args.since.is_some()
            && let Err(error) = replay_stream(&client, &args, &lines).await
        {
            eprintln!("watch: no replay of the stream: {}", super::error_line(&error));
        }
    };
    let (subscribed, ()) = tokio::join!(live, replay);
    if let Err(error) = subscribed {
        eprintln!("watch: no live events: {}", super::error_line(&error));
    }
}

async fn subscribe(
    client: &async_nats::Client,
    args: &WatchArgs,
    lines: &mpsc::Sender<EventLine>,
) -> anyhow::Result<()> {
    let mut subscriptions = Vec::new();
    for subject in event_subjects(&args.prefix, &args.namespaces) {
        let subscription = client
            .subscribe(subject.clone())
            .await
            .with_context(|| format!("cannot subscribe to {subject} on {}", args.nats_url))?;
        subscriptions.push(subscription);
    }
    let mut messages = futures::stream::select_all(subscriptions);
    while let Some(message) = messages.next().await {
        if let Some(line) = event_line(&message.payload, args.since)
            && lines.send(line).await.is_err()
        {
            break;
        }
    }
    Ok(())
}

async fn replay_stream(
    client: &async_nats::Client,
    args: &WatchArgs,
    lines: &mpsc::Sender<EventLine>,
) -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};

    let jetstream = async_nats::jetstream::new(client.clone());
    let mut waiting_said = false;
    let stream = loop {
        match crate::tools::tail::operator_stream(&jetstream, &args.stream, &args.nats_url).await {
            Ok(stream) => break stream,
            Err(error) => {
                if !waiting_said {
                    eprintln!("watch: waiting: {}", super::error_line(&error));
                    waiting_said = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subjects: event_subjects(&args.prefix, &args.namespaces),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot read stream {} on {}", args.stream, args.nats_url))?;
    let mut messages = consumer
        .messages()
        .await
        .with_context(|| format!("cannot read stream {} on {}", args.stream, args.nats_url))?;
    while let Some(message) = messages.next().await {
        let message = message.with_context(|| format!("reading stream {} failed", args.stream))?;
        if let Some(line) = event_line(&message.payload, args.since)
            && lines.send(line).await.is_err()
        {
            break;
        }
    }
    Ok(())
}

/// A Kubernetes API error with what was being done and, for the common causes, what to do.
pub fn cluster_error(doing: &str, error: kube::Error) -> anyhow::Error {
    match &error {
        kube::Error::Api(status) if status.code == 404 => anyhow::anyhow!(
            "{doing}: the pipelines.kubeflow.org CRDs are not installed on this cluster: install them with \
             `kfp-operator crd | kubectl apply -f -` or start the operator with --install-crds"
        ),
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => {
            anyhow::anyhow!(
                "{doing}: refused by the cluster ({}): check the credentials in KUBECONFIG",
                status.message
            )
        }
        _ => anyhow::anyhow!(
            "{doing} failed ({}): is the cluster of KUBECONFIG reachable? (the local one: deploy/local/dev-env up)",
            super::error_line(&anyhow::Error::new(error))
        ),
    }
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {},
                    _ = terminate.recv() => {},
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Parameter, RunSpec, RunStatus};

    fn run(name: &str, labels: &[(&str, &str)]) -> Run {
        let mut run = Run::new(name, RunSpec::default());
        run.metadata.namespace = Some("eval".into());
        run.metadata.labels = Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
        run.spec.parameters = vec![Parameter::literal("model_location", "memory://m/1")];
        run
    }

    #[test]
    fn a_new_run_is_one_line_with_its_trigger_and_parameters() {
        let mut seen = BTreeMap::new();
        let triggered = run(
            "b-1",
            &[
                (labels::RUN_CONFIGURATION, "b"),
                (labels::TRIGGER_TYPE, "runConfiguration"),
                (labels::TRIGGER_SOURCE, "a"),
                (labels::TRIGGER_SOURCE_NAMESPACE, "train"),
            ],
        );
        let line = observe(&mut seen, &triggered, Utc::now() - chrono::Duration::seconds(5)).unwrap();
        assert!(
            line.ends_with(
                "run created     eval/b-1  runConfiguration=eval/b  trigger=runConfiguration train/a  \
                 parameters: model_location=memory://m/1"
            ),
            "{line}"
        );
        assert_eq!(
            observe(&mut seen, &triggered, Utc::now() - chrono::Duration::seconds(5)),
            None,
            "printed once"
        );
        assert!(!seen[&NamespacedName::new("eval", "b-1")].done);

        let mut completed = triggered.clone();
        completed.status = Some(RunStatus {
            completion_state: Some(crate::api::CompletionState::Succeeded),
            ..Default::default()
        });
        assert_eq!(observe(&mut seen, &completed, Utc::now()), None);
        assert!(seen[&NamespacedName::new("eval", "b-1")].done);
    }

    #[test]
    fn runs_created_before_since_are_left_out() {
        let mut seen = BTreeMap::new();
        let mut old = run("old", &[]);
        let created = "2024-05-01T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        old.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::from_second(created.timestamp()).unwrap(),
        ));
        assert_eq!(observe(&mut seen, &old, created + chrono::Duration::seconds(1)), None);
        let line = observe(&mut seen, &old, created + chrono::Duration::milliseconds(300)).unwrap();
        assert!(line.contains("runConfiguration=-  trigger=-"), "{line}");
    }

    #[test]
    fn an_event_is_one_line_with_type_subject_status_and_artifacts() {
        let body = br#"{"type":"org.kubeflow.pipelines.model-ready","subject":"train/a","time":"2024-05-01T10:21:07Z",
            "data":{"status":"succeeded","artifacts":[{"name":"serving-model","location":"memory://m/1"}]}}"#;
        let event = event_line(body, None).unwrap();
        assert_eq!(event.id, None);
        let line = event.line;
        assert!(
            line.ends_with(
                "event published model-ready     subject=train/a  status=succeeded  artifacts: serving-model=memory://m/1"
            ),
            "{line}"
        );
        assert_eq!(event_line(body, Some("2024-05-01T10:30:00Z".parse().unwrap())), None);
        assert!(event_line(b"\xff", None).unwrap().line.ends_with("(not JSON, 1 bytes)"));
        let with_id = br#"{"id":"abc","type":"org.kubeflow.pipelines.run-completion","data":{}}"#;
        assert_eq!(event_line(with_id, None).unwrap().id.as_deref(), Some("abc"));
    }

    #[test]
    fn subjects_cover_both_kinds_per_namespace() {
        assert_eq!(event_subjects("kfp", &[]), ["kfp.run-completion.*.>", "kfp.model-ready.*.>"]);
        assert_eq!(
            event_subjects("kfp", &["a.b".to_owned()]),
            ["kfp.run-completion.a_b.>", "kfp.model-ready.a_b.>"]
        );
    }
}
