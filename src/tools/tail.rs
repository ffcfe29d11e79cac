//! `kfp-operator events tail`: follows the operator's run-completion events on NATS and prints
//! them, filtered by namespace, pipeline and event type, for users debugging their Sensors.

use std::io::Write;

use futures::StreamExt;
use serde_json::Value;

use crate::events::cloudevent::{EventKind, subject_token};

/// What to follow and how to show it.
#[derive(Debug, Clone, clap::Args)]
pub struct TailArgs {
    /// The NATS server.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// The subject prefix of the operator's stream.
    #[arg(long, default_value = "kfp")]
    pub prefix: String,
    /// Only events of this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only events of this pipeline.
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Only `run-completion` or `model-ready` events.
    #[arg(long = "type", value_parser = ["run-completion", "model-ready"])]
    pub event_type: Option<String>,
    /// Follow the reference's core-NATS subject (`{"data": …}` bodies) instead.
    #[arg(long)]
    pub legacy_subject: Option<String>,
    /// The operator's stream, to replay what it already holds.
    #[arg(long, default_value = "kfp-operator-events")]
    pub stream: String,
    /// Replay the stream's stored events before following new ones.
    #[arg(long)]
    pub replay: bool,
    /// Print each event's JSON on one line instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<usize>,
}

/// The NATS subjects matching the filters.
pub fn subjects(args: &TailArgs) -> Vec<String> {
    if let Some(subject) = &args.legacy_subject {
        return vec![subject.clone()];
    }
    let namespace = args.namespace.as_deref().map_or_else(|| "*".to_owned(), subject_token);
    let pipeline = args.pipeline.as_deref().map_or_else(|| "*".to_owned(), subject_token);
    let kinds: Vec<EventKind> = match args.event_type.as_deref() {
        Some("model-ready") => vec![EventKind::ModelReady],
        Some(_) => vec![EventKind::RunCompletion],
        None => EventKind::ALL.to_vec(),
    };
    kinds
        .into_iter()
        .map(|kind| match kind {
            EventKind::RunCompletion => {
                format!("{}.{}.{namespace}.{pipeline}.*", args.prefix, kind.subject_token())
            }
            EventKind::ModelReady => {
                format!("{}.{}.{namespace}.{pipeline}", args.prefix, kind.subject_token())
            }
        })
        .collect()
}

/// One line describing an event body: a structured CloudEvent or a legacy `{"data": …}` body.
pub fn summarise(subject: &str, body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return format!("{subject}: (not JSON, {} bytes)", body.len());
    };
    let event_type = value["type"].as_str().unwrap_or("legacy");
    let data = &value["data"];
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let mut line = format!(
        "{} {} {} pipeline={} runConfiguration={} run={} runId={}",
        value["time"].as_str().or(data["runEndTime"].as_str()).unwrap_or("-"),
        event_type.rsplit('.').next().unwrap_or(event_type),
        text(&data["status"]),
        text(&data["pipelineName"]),
        text(&data["runConfigurationName"]),
        text(&data["runName"]),
        text(&data["runId"]),
    );
    for artifact in data["artifacts"].as_array().into_iter().flatten() {
        line.push_str(&format!(" {}={}", text(&artifact["name"]), text(&artifact["location"])));
    }
    line
}

/// Connects to NATS, or says why not and what to check.
pub async fn connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to NATS at {url} ({e}): is nats-server running there? (set --nats-url or NATS_URL)"
            )
        })
}

/// The operator's stream, or an error saying where it was looked for and why it may be missing.
pub async fn operator_stream(
    jetstream: &async_nats::jetstream::Context,
    stream: &str,
    url: &str,
) -> anyhow::Result<async_nats::jetstream::stream::Stream> {
    use async_nats::jetstream::context::GetStreamErrorKind;
    jetstream.get_stream(stream).await.map_err(|e| match e.kind() {
        GetStreamErrorKind::JetStream(js) if js.code() == 404 => anyhow::anyhow!(
            "no stream {stream} on {url}: is the operator running with the jetstream sink (events.nats.url set) \
             against this server?"
        ),
        _ => anyhow::anyhow!("cannot look up stream {stream} on {url} ({e}): does the server have JetStream on (-js)?"),
    })
}

/// Follows events until the count is reached or the connection ends.
pub async fn tail(args: TailArgs, out: &mut (impl Write + Send)) -> anyhow::Result<()> {
    let client = connect(&args.nats_url, "kfp-operator-tail").await?;
    let subjects = subjects(&args);
    let mut printed = 0usize;
    let mut print = |subject: &str, body: &[u8], out: &mut (dyn Write + Send)| -> anyhow::Result<bool> {
        if args.json {
            writeln!(out, "{}", String::from_utf8_lossy(body))?;
        } else {
            writeln!(out, "{}", summarise(subject, body))?;
        }
        out.flush()?;
        printed += 1;
        Ok(args.count.is_some_and(|count| printed >= count))
    };
    if args.replay && args.legacy_subject.is_none() {
        let jetstream = async_nats::jetstream::new(client.clone());
        let stream = operator_stream(&jetstream, &args.stream, &args.nats_url).await?;
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subjects: subjects.clone(),
                deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("cannot read stream {} on {}: {e}", args.stream, args.nats_url))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read stream {} on {}: {e}", args.stream, args.nats_url))?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| {
                anyhow::anyhow!("reading stream {} on {} failed: {e}", args.stream, args.nats_url)
            })?;
            if print(message.subject.as_str(), &message.payload, out)? {
                return Ok(());
            }
        }
        return Ok(());
    }
    let mut subscriptions = Vec::new();
    for subject in subjects {
        let subscription = client
            .subscribe(subject.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot subscribe to {subject} on {}: {e}", args.nats_url))?;
        subscriptions.push(subscription);
    }
    let mut all = futures::stream::select_all(subscriptions);
    while let Some(message) = all.next().await {
        if print(message.subject.as_str(), &message.payload, out)? {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TailArgs,
    }

    fn args(extra: &[&str]) -> TailArgs {
        Cli::parse_from(std::iter::once("tail").chain(extra.iter().copied())).args
    }

    #[test]
    fn filters_become_subjects() {
        assert_eq!(subjects(&args(&[])), ["kfp.run-completion.*.*.*", "kfp.model-ready.*.*"]);
        assert_eq!(
            subjects(&args(&["--namespace", "ml", "--pipeline", "p.v2", "--type", "run-completion"])),
            ["kfp.run-completion.ml.p_v2.*"]
        );
        assert_eq!(subjects(&args(&["--legacy-subject", "events"])), ["events"]);
    }

    #[test]
    fn summaries_show_the_essentials() {
        let body = br#"{"type":"org.kubeflow.pipelines.model-ready","time":"2024-05-01T10:21:07Z","data":{"status":"succeeded",
            "pipelineName":"ml/p","runName":"ml/r","runId":"42","artifacts":[{"name":"model","location":"gs://m"}]}}"#;
        assert_eq!(
            summarise("s", body),
            "2024-05-01T10:21:07Z model-ready succeeded pipeline=ml/p runConfiguration=- run=ml/r runId=42 model=gs://m"
        );
        assert_eq!(summarise("s", b"\xff"), "s: (not JSON, 1 bytes)");
    }
}
