//! The built-in completion source: runs created on `stub` Providers complete after their delay
//! and go through the same ingest as provider services' completions. On start, stub runs that
//! were created but never completed (the operator stopped in between) are completed again, so
//! a restart loses no completion; the events' deterministic ids make a repeat harmless.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc;

use crate::api::conditions::SyncState;
use crate::api::{NamespacedName, Provider, ProviderType, Run};
use crate::config::OperatorConfig;
use crate::events::ingest::Ingest;
use crate::provider::stub::{StubProvider, StubRun, StubSettings};
use crate::shutdown::Shutdown;

const MAX_ATTEMPTS: u32 = 10;

/// Completes every run a stub provider created, after its delay, until `shutdown`.
pub async fn complete_stub_runs(
    ingest: Arc<Ingest>,
    mut created: mpsc::UnboundedReceiver<StubRun>,
    shutdown: Shutdown,
) {
    let worker = async {
        while let Some(run) = created.recv().await {
            let ingest = ingest.clone();
            tokio::spawn(async move {
                let started = Utc::now();
                tokio::time::sleep(run.completes_after).await;
                complete(&ingest, &run, started).await;
            });
        }
    };
    tokio::select! {
        () = worker => {},
        () = shutdown => {},
    }
}

async fn complete(ingest: &Ingest, run: &StubRun, started: chrono::DateTime<Utc>) {
    let data = match run.completion(started, Utc::now()) {
        Ok(data) => data,
        Err(error) => {
            tracing::warn!(run_id = %run.run_id, %error, "a stub run cannot complete");
            return;
        }
    };
    for attempt in 0..MAX_ATTEMPTS {
        match ingest.accept(data.clone()).await {
            Ok(_) => return,
            Err(error) if error.status() == axum::http::StatusCode::GONE => {
                tracing::debug!(run_id = %run.run_id, %error, "the completed run no longer exists");
                return;
            }
            Err(error) => {
                tracing::warn!(run_id = %run.run_id, %error, attempt, "could not accept a stub completion; retrying");
                tokio::time::sleep(Duration::from_millis(200) * 2u32.pow(attempt.min(7))).await;
            }
        }
    }
    tracing::error!(run_id = %run.run_id, "gave up completing a stub run after {MAX_ATTEMPTS} attempts");
}

/// Finds the runs created on stub Providers that never completed and hands them to `created`.
pub async fn resync_stub_runs(
    client: &kube::Client,
    config: &OperatorConfig,
    created: &mpsc::UnboundedSender<StubRun>,
) -> Result<usize, kube::Error> {
    let apis: Vec<Api<Run>> = crate::controller::apis(client, config);
    let mut resumed = 0;
    for api in apis {
        let mut page = ListParams::default().limit(RESYNC_PAGE);
        loop {
            let runs = api.list(&page).await?;
            let next = runs.metadata.continue_.clone().filter(|token| !token.is_empty());
            resumed += resume_page(client, runs.items, created).await?;
            match next {
                Some(token) => page = page.continue_token(&token),
                None => break,
            }
        }
    }
    Ok(resumed)
}

/// Runs listed per request when resuming stub runs.
const RESYNC_PAGE: u32 = 500;

async fn resume_page(
    client: &kube::Client,
    runs: Vec<Run>,
    created: &mpsc::UnboundedSender<StubRun>,
) -> Result<usize, kube::Error> {
    let mut resumed = 0;
    for run in runs {
        let Some(status) = run.status.as_ref() else { continue };
        let id = status.status.provider.as_ref().map(|p| p.id.clone()).unwrap_or_default();
        if id.is_empty()
            || status.completion_state.is_some()
            || run.meta().deletion_timestamp.is_some()
            || SyncState::of(&status.status) != SyncState::Succeeded
        {
            continue;
        }
        let namespace = run.namespace().unwrap_or_default();
        let provider_name = run.spec.provider.qualified(&namespace);
        let providers: Api<Provider> = Api::namespaced(client.clone(), &provider_name.namespace);
        let Some(provider) = providers.get_opt(&provider_name.name).await? else { continue };
        if provider.spec.provider_type != ProviderType::Stub {
            continue;
        }
        let Ok(settings) = StubSettings::from_parameters(&provider.spec.parameters) else { continue };
        let Ok(definition) = crate::provider::definitions::run(&run, &[]) else { continue };
        let stub = StubProvider::new(
            NamespacedName::new(&provider_name.namespace, &provider_name.name),
            settings,
            None,
        );
        let mut stub_run = stub.stub_run(&id, &definition);
        stub_run.completes_after = Duration::ZERO;
        if created.send(stub_run).is_ok() {
            resumed += 1;
        }
    }
    Ok(resumed)
}
