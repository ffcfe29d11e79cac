//! Where run completions go until they reach the eventing pipeline: the stub provider's runs
//! complete after their delay, and each completion is recorded on its Run.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::api::{CompletionState, NamespacedName};
use crate::controller::{Shutdown, run::record_completion};
use crate::provider::stub::StubRun;

/// Completes every run a stub provider created, after its delay, until `shutdown`.
pub async fn complete_stub_runs(
    client: kube::Client,
    mut created: mpsc::UnboundedReceiver<StubRun>,
    shutdown: Shutdown,
) {
    let worker = async {
        while let Some(run) = created.recv().await {
            let client = client.clone();
            tokio::spawn(async move {
                tokio::time::sleep(run.completes_after).await;
                complete(&client, &run).await;
            });
        }
    };
    tokio::select! {
        () = worker => {},
        () = shutdown => {},
    }
}

async fn complete(client: &kube::Client, run: &StubRun) {
    let Ok(name) = run.definition["name"].as_str().unwrap_or_default().parse::<NamespacedName>() else {
        tracing::warn!(run_id = %run.run_id, "a stub run without a namespaced name cannot complete");
        return;
    };
    for attempt in 0..5u32 {
        match record_completion(client, &name, CompletionState::Succeeded).await {
            Ok(true) => return,
            Ok(false) => {
                tracing::debug!(run = %name, "the completed run no longer exists");
                return;
            }
            Err(error) => {
                tracing::warn!(run = %name, %error, attempt, "could not record a completion; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
            }
        }
    }
}
