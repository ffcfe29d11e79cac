//! The reconcilers against the real apiserver with the built-in stub provider: every kind
//! goes Creating → Succeeded with a provider id, updates bump the version, deletion calls the
//! provider and releases the finalizer, the stub's failure names fail with Warning Events, and
//! deletion never sticks (a gone provider, or the force-delete annotation).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kfp_operator::api::{
    Experiment, ExperimentSpec, NamespacedName, Pipeline, PipelineFramework, PipelineSpec, Provider,
    ProviderSpec, ProviderType, RunSchedule, RunScheduleSpec, Schedule, Status,
};
use kfp_operator::config::OperatorConfig;
use kfp_operator::controller::state::{SYNCHRONIZED, SyncState};
use kfp_operator::controller::{self, Context, ProviderRegistry};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

mod support;

const TIMEOUT: Duration = Duration::from_secs(30);

/// The operator's controllers and stub completions, in this test's runtime, watching one namespace.
struct Operator {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Operator {
    fn start(client: &kube::Client, namespace: &str, customise: impl FnOnce(&mut OperatorConfig)) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut config = OperatorConfig {
            namespaces: vec![namespace.to_owned()],
            retry_initial_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(2),
            ..OperatorConfig::default()
        };
        customise(&mut config);
        let (stub_runs, created_runs) = tokio::sync::mpsc::unbounded_channel();
        let registry = ProviderRegistry::new(config.provider_defaults.clone(), Some(stub_runs));
        let ctx = Context::new(client.clone(), config, registry);
        let (sender, receiver) = tokio::sync::oneshot::channel::<()>();
        let shutdown = controller::shutdown_signal(async move {
            let _ = receiver.await;
        });
        let completions =
            kfp_operator::completion::complete_stub_runs(client.clone(), created_runs, shutdown.clone());
        let task = tokio::spawn(async move {
            tokio::join!(controller::run(ctx, shutdown), completions);
        });
        Self { shutdown: Some(sender), task: Some(task) }
    }

    async fn stop(mut self) {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn stub_provider(name: &str) -> Provider {
    Provider::new(
        name,
        ProviderSpec {
            provider_type: ProviderType::Stub,
            service_image: "none".into(),
            service_account: "default".into(),
            pipeline_root_storage: "memory://root".into(),
            parameters: [("completionDelay".to_owned(), json!("300ms"))].into(),
            frameworks: vec![kfp_operator::api::Framework {
                name: "tfx".into(),
                image: "none".into(),
                patches: vec![],
            }],
            ..ProviderSpec::default()
        },
    )
}

fn pipeline(name: &str, ns: &str, image: &str) -> Pipeline {
    Pipeline::new(
        name,
        PipelineSpec {
            provider: NamespacedName::new(ns, "stub"),
            image: image.into(),
            env: vec![],
            framework: PipelineFramework::new("tfx").with_parameter("components", json!("x")),
        },
    )
}

async fn create<K>(client: &kube::Client, ns: &str, object: &K) -> K
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns).create(&PostParams::default(), object).await.unwrap()
}

fn sync_state(status: Option<&Status>) -> (SyncState, String) {
    let status = status.cloned().unwrap_or_default();
    let message = status
        .conditions
        .iter()
        .find(|c| c.type_ == SYNCHRONIZED)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    (SyncState::of(&status), message)
}

/// Waits until the object's status satisfies `check`, and returns the object.
async fn wait_for<K>(client: &kube::Client, ns: &str, name: &str, what: &str, check: impl Fn(&K) -> bool) -> K
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), ns);
    let check = Arc::new(check);
    support::eventually(&format!("{name} {what}"), TIMEOUT, || {
        let api = api.clone();
        let check = check.clone();
        async move { api.get_opt(name).await.ok().flatten().filter(|object| check(object)) }
    })
    .await
}

async fn wait_gone<K>(client: &kube::Client, ns: &str, name: &str)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), ns);
    support::eventually(&format!("{name} to be deleted"), TIMEOUT, || {
        let api = api.clone();
        async move { api.get_opt(name).await.ok().filter(Option::is_none).map(|_| ()) }
    })
    .await;
}

async fn event_reasons(client: &kube::Client, ns: &str, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut list: Vec<Event> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    list.into_iter()
        .map(|e| format!("{}:{}", e.type_.unwrap_or_default(), e.reason.unwrap_or_default()))
        .collect()
}

/// How many times each `type:reason` was reported, counting repeats folded into an event series.
async fn event_counts(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> std::collections::BTreeMap<String, i32> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut counts = std::collections::BTreeMap::new();
    for event in events.list(&Default::default()).await.unwrap().items {
        if event.regarding.as_ref().and_then(|r| r.name.as_deref()) != Some(name) {
            continue;
        }
        let key = format!("{}:{}", event.type_.unwrap_or_default(), event.reason.unwrap_or_default());
        *counts.entry(key).or_default() += event.series.map_or(1, |s| s.count);
    }
    counts
}

fn succeeded<K>(status: impl Fn(&K) -> Option<&Status>) -> impl Fn(&K) -> bool {
    move |object| sync_state(status(object)).0 == SyncState::Succeeded
}

#[tokio::test]
async fn pipeline_is_created_updated_and_deleted_on_the_provider() {
    let client = support::client().await;
    let ns = support::namespace(&client, "pipeline-lifecycle").await;
    let operator = Operator::start(&client, &ns, |_| {});
    create(&client, &ns, &stub_provider("stub")).await;
    create(&client, &ns, &pipeline("penguin", &ns, "quickstart:v1")).await;

    let created = wait_for::<Pipeline>(
        &client,
        &ns,
        "penguin",
        "Succeeded",
        succeeded(|p: &Pipeline| p.status.as_ref()),
    )
    .await;
    let status = created.status.clone().unwrap();
    assert_eq!(status.provider.as_ref().map(|p| p.id.clone()), Some(format!("{ns}/penguin")));
    assert!(status.version.starts_with("v1-"), "{status:?}");
    assert!(created.finalizers().iter().any(|f| f == kfp_operator::api::FINALIZER));

    let api: Api<Pipeline> = Api::namespaced(client.clone(), &ns);
    api.patch("penguin", &PatchParams::default(), &Patch::Merge(json!({"spec": {"image": "quickstart:v2"}})))
        .await
        .unwrap();
    let updated = wait_for::<Pipeline>(&client, &ns, "penguin", "at v2", |p: &Pipeline| {
        p.status
            .as_ref()
            .is_some_and(|s| s.version.starts_with("v2-") && SyncState::of(s) == SyncState::Succeeded)
    })
    .await;
    assert_eq!(updated.status.unwrap().observed_generation, Some(2));

    api.delete("penguin", &DeleteParams::default()).await.unwrap();
    wait_gone::<Pipeline>(&client, &ns, "penguin").await;
    let counts = support::eventually("the deletion events", TIMEOUT, || async {
        let counts = event_counts(&client, &ns, "penguin").await;
        (counts.values().sum::<i32>() >= 6).then_some(counts)
    })
    .await;
    assert_eq!(
        counts,
        [("Normal:Synced".to_owned(), 3), ("Normal:Syncing".to_owned(), 3)].into(),
        "create, update and delete each go Syncing then Synced"
    );
    operator.stop().await;
}

#[tokio::test]
async fn experiment_and_run_schedule_synchronise() {
    let client = support::client().await;
    let ns = support::namespace(&client, "experiment-schedule").await;
    let operator = Operator::start(&client, &ns, |_| {});
    create(&client, &ns, &stub_provider("stub")).await;
    create(
        &client,
        &ns,
        &Experiment::new(
            "penguins",
            ExperimentSpec { provider: NamespacedName::new(&ns, "stub"), description: "d".into() },
        ),
    )
    .await;
    create(
        &client,
        &ns,
        &RunSchedule::new(
            "hourly",
            RunScheduleSpec {
                provider: NamespacedName::new(&ns, "stub"),
                pipeline: "penguin:v1-abc".parse().unwrap(),
                schedule: Schedule::cron("0 * * * *"),
                ..RunScheduleSpec::default()
            },
        ),
    )
    .await;
    let experiment = wait_for::<Experiment>(
        &client,
        &ns,
        "penguins",
        "Succeeded",
        succeeded(|e: &Experiment| e.status.as_ref()),
    )
    .await;
    assert_eq!(experiment.status.unwrap().version.len(), 6);
    wait_for::<RunSchedule>(
        &client,
        &ns,
        "hourly",
        "Succeeded",
        succeeded(|r: &RunSchedule| r.status.as_ref()),
    )
    .await;

    Api::<Experiment>::namespaced(client.clone(), &ns)
        .delete("penguins", &DeleteParams::default())
        .await
        .unwrap();
    Api::<RunSchedule>::namespaced(client.clone(), &ns)
        .delete("hourly", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone::<Experiment>(&client, &ns, "penguins").await;
    wait_gone::<RunSchedule>(&client, &ns, "hourly").await;
    operator.stop().await;
}

#[tokio::test]
async fn stub_failure_names_fail_with_a_warning_event() {
    let client = support::client().await;
    let ns = support::namespace(&client, "failure-names").await;
    let operator = Operator::start(&client, &ns, |_| {});
    create(&client, &ns, &stub_provider("stub")).await;
    create(&client, &ns, &pipeline("create-pipeline-fail", &ns, "quickstart:v1")).await;
    create(
        &client,
        &ns,
        &Experiment::new(
            "create-experiment-fail",
            ExperimentSpec { provider: NamespacedName::new(&ns, "stub"), description: String::new() },
        ),
    )
    .await;

    for (name, message) in [
        ("create-pipeline-fail", "create pipeline failed"),
        ("create-experiment-fail", "create experiment failed"),
    ] {
        let failed_with = |status: Option<&Status>| {
            let (state, found) = sync_state(status);
            state == SyncState::Failed && found == message
        };
        if name.contains("pipeline") {
            wait_for::<Pipeline>(&client, &ns, name, "Failed", |p: &Pipeline| failed_with(p.status.as_ref()))
                .await;
        } else {
            wait_for::<Experiment>(&client, &ns, name, "Failed", |e: &Experiment| {
                failed_with(e.status.as_ref())
            })
            .await;
        }
        let reasons = event_reasons(&client, &ns, name).await;
        assert!(reasons.contains(&"Warning:SyncFailed".to_owned()), "{name}: {reasons:?}");
    }
    operator.stop().await;
}

#[tokio::test]
async fn deletion_never_sticks() {
    let client = support::client().await;
    let ns = support::namespace(&client, "deletion").await;
    let operator = Operator::start(&client, &ns, |_| {});
    create(&client, &ns, &stub_provider("stub")).await;
    // A provider-side delete that keeps failing: retried, reported, and forced by annotation.
    create(
        &client,
        &ns,
        &Experiment::new(
            "delete-experiment-fail",
            ExperimentSpec { provider: NamespacedName::new(&ns, "stub"), description: String::new() },
        ),
    )
    .await;
    // A resource whose Provider disappears.
    create(&client, &ns, &pipeline("orphan", &ns, "quickstart:v1")).await;
    wait_for::<Experiment>(
        &client,
        &ns,
        "delete-experiment-fail",
        "Succeeded",
        succeeded(|e: &Experiment| e.status.as_ref()),
    )
    .await;
    wait_for::<Pipeline>(&client, &ns, "orphan", "Succeeded", succeeded(|p: &Pipeline| p.status.as_ref()))
        .await;

    let experiments: Api<Experiment> = Api::namespaced(client.clone(), &ns);
    experiments.delete("delete-experiment-fail", &DeleteParams::default()).await.unwrap();
    wait_for::<Experiment>(
        &client,
        &ns,
        "delete-experiment-fail",
        "stuck Deleting with the reason",
        |e: &Experiment| {
            sync_state(e.status.as_ref()) == (SyncState::Deleting, "delete experiment failed".to_owned())
        },
    )
    .await;
    experiments
        .patch(
            "delete-experiment-fail",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {controller::FORCE_DELETE_ANNOTATION: "true"}}}),
            ),
        )
        .await
        .unwrap();
    wait_gone::<Experiment>(&client, &ns, "delete-experiment-fail").await;
    assert!(
        event_reasons(&client, &ns, "delete-experiment-fail")
            .await
            .contains(&"Warning:ForcedDeletion".to_owned())
    );

    Api::<Provider>::namespaced(client.clone(), &ns).delete("stub", &DeleteParams::default()).await.unwrap();
    Api::<Pipeline>::namespaced(client.clone(), &ns)
        .delete("orphan", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone::<Pipeline>(&client, &ns, "orphan").await;
    assert!(event_reasons(&client, &ns, "orphan").await.contains(&"Warning:ProviderGone".to_owned()));
    operator.stop().await;
}
