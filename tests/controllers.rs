//! The reconcilers against the real apiserver with the built-in stub provider: every kind
//! goes Creating → Succeeded with a provider id, updates bump the version, deletion calls the
//! provider and releases the finalizer, the stub's failure names fail with Warning Events, and
//! deletion never sticks (a gone provider, or the force-delete annotation).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kfp_operator::api::conditions::{SYNCHRONIZED, SyncState};
use kfp_operator::api::{
    Experiment, ExperimentSpec, NamespacedName, Pipeline, PipelineFramework, PipelineSpec, Provider,
    ProviderSpec, Run, RunSchedule, RunScheduleSpec, RunSpec, Schedule, Status,
};
use kfp_operator::controller;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

mod support;

const TIMEOUT: Duration = Duration::from_secs(30);

use support::fixtures::stub_provider;
use support::operator::Operator;

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
        &support::fixtures::experiment("create-experiment-fail", &NamespacedName::new(&ns, "stub")),
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
        support::eventually(&format!("a SyncFailed Warning Event for {name}"), TIMEOUT, || async {
            event_reasons(&client, &ns, name).await.contains(&"Warning:SyncFailed".to_owned()).then_some(())
        })
        .await;
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
        &support::fixtures::experiment("delete-experiment-fail", &NamespacedName::new(&ns, "stub")),
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
    support::eventually("a ProviderGone Warning Event", TIMEOUT, || async {
        event_reasons(&client, &ns, "orphan").await.contains(&"Warning:ProviderGone".to_owned()).then_some(())
    })
    .await;
    operator.stop().await;
}

fn run(name: &str, ns: &str, pipeline: &str) -> Run {
    Run::new(
        name,
        RunSpec {
            provider: NamespacedName::new(ns, "stub"),
            pipeline: pipeline.parse().unwrap(),
            ..RunSpec::default()
        },
    )
}

fn run_state(run: &Run) -> (SyncState, String) {
    sync_state(run.status.as_ref().map(|s| &s.status))
}

#[tokio::test]
async fn run_waits_for_its_pipeline_completes_and_expires() {
    let client = support::client().await;
    let ns = support::namespace(&client, "run-lifecycle").await;
    let operator =
        Operator::start(&client, &ns, |config| config.run_completion_ttl = Some(Duration::from_secs(2)));
    create(&client, &ns, &stub_provider("stub")).await;
    create(&client, &ns, &run("penguin-run", &ns, "penguin")).await;

    let waiting = wait_for::<Run>(&client, &ns, "penguin-run", "waiting for its pipeline", |r: &Run| {
        r.status.as_ref().is_some_and(|s| {
            s.status.conditions.iter().any(|c| c.type_ == "DependenciesResolved" && c.status == "False")
        })
    })
    .await;
    let message = &waiting
        .status
        .unwrap()
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "DependenciesResolved")
        .unwrap()
        .message
        .clone();
    assert!(message.contains("pipeline") && message.contains("penguin"), "{message}");

    create(&client, &ns, &pipeline("penguin", &ns, "quickstart:v1")).await;
    let submitted = wait_for::<Run>(&client, &ns, "penguin-run", "Succeeded", |r: &Run| {
        run_state(r).0 == SyncState::Succeeded
    })
    .await;
    let status = submitted.status.unwrap();
    assert!(status.dependencies.pipeline.version.starts_with("v1-"), "{status:?}");
    assert_eq!(status.status.provider.map(|p| p.id), Some(format!("{ns}/penguin-run")));

    let completed = wait_for::<Run>(&client, &ns, "penguin-run", "completed", |r: &Run| {
        r.status.as_ref().is_some_and(|s| s.marked_completed_at.is_some())
    })
    .await;
    assert_eq!(
        completed.status.unwrap().completion_state,
        Some(kfp_operator::api::CompletionState::Succeeded)
    );
    wait_gone::<Run>(&client, &ns, "penguin-run").await;
    operator.stop().await;
}

#[tokio::test]
async fn a_run_spec_is_immutable() {
    let client = support::client().await;
    let ns = support::namespace(&client, "run-immutable").await;
    let operator = Operator::start(&client, &ns, |_| {});
    create(&client, &ns, &stub_provider("stub")).await;
    create(&client, &ns, &run("pinned", &ns, "penguin:v1-abc")).await;
    wait_for::<Run>(&client, &ns, "pinned", "Succeeded", |r: &Run| run_state(r).0 == SyncState::Succeeded)
        .await;
    Api::<Run>::namespaced(client.clone(), &ns)
        .patch("pinned", &PatchParams::default(), &Patch::Merge(json!({"spec": {"experimentName": "other"}})))
        .await
        .unwrap();
    let refused =
        wait_for::<Run>(&client, &ns, "pinned", "refused", |r: &Run| run_state(r).0 == SyncState::Failed)
            .await;
    assert!(run_state(&refused).1.contains("cannot change after creation"), "{:?}", run_state(&refused));
    support::eventually("a SpecImmutable Warning Event", TIMEOUT, || async {
        event_reasons(&client, &ns, "pinned")
            .await
            .contains(&"Warning:SpecImmutable".to_owned())
            .then_some(())
    })
    .await;
    operator.stop().await;
}

#[tokio::test]
async fn allowed_namespaces_are_enforced() {
    let client = support::client().await;
    let ns = support::namespace(&client, "allowed-namespaces").await;
    let operator = Operator::start(&client, &ns, |_| {});
    let mut provider = stub_provider("stub");
    provider.spec.allowed_namespaces = vec!["somewhere-else".into()];
    create(&client, &ns, &provider).await;
    create(&client, &ns, &support::fixtures::experiment("not-allowed", &NamespacedName::new(&ns, "stub")))
        .await;
    let refused = wait_for::<Experiment>(&client, &ns, "not-allowed", "refused", |e: &Experiment| {
        sync_state(e.status.as_ref()).0 == SyncState::Failed
    })
    .await;
    assert_eq!(
        sync_state(refused.status.as_ref()).1,
        format!("namespace {ns} is not allowed by provider {ns}/stub")
    );
    operator.stop().await;
}

#[tokio::test]
async fn an_http_provider_with_a_service_image_gets_a_deployment_and_service() {
    let client = support::client().await;
    let ns = support::namespace(&client, "provider-workload").await;
    let operator = Operator::start(&client, &ns, |_| {});
    let provider = Provider::new(
        "vai",
        ProviderSpec {
            service_image: "ghcr.io/example/vai-provider:1".into(),
            service_account: "kfp-vai".into(),
            pipeline_root_storage: "gs://root".into(),
            parameters: [("vaiProject".to_owned(), json!("my-project"))].into(),
            ..ProviderSpec::default()
        },
    );
    create(&client, &ns, &provider).await;
    wait_for::<Provider>(&client, &ns, "vai", "Succeeded", |p: &Provider| {
        sync_state(p.status.as_ref()).0 == SyncState::Succeeded
    })
    .await;
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns).get("provider-vai").await.unwrap();
    assert_eq!(deployment.owner_references()[0].name, "vai");
    let container = &deployment.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some("ghcr.io/example/vai-provider:1"));
    assert!(container.env.as_ref().unwrap().iter().any(|e| e.name == "PARAMETERS_VAIPROJECT"));
    let service = Api::<Service>::namespaced(client.clone(), &ns).get("provider-vai").await.unwrap();
    assert_eq!(service.owner_references()[0].name, "vai");
    operator.stop().await;
}

/// A provider service on 127.0.0.1 speaking the provider API: ids are the definition names; a
/// name containing `boom` fails with a provider error.
async fn start_provider_service() -> String {
    use axum::Json;
    use axum::extract::Path;
    use axum::http::StatusCode;
    use axum::routing::{delete, post};
    let app = axum::Router::new()
        .route(
            "/resource/{kind}",
            post(|Path(kind): Path<String>, Json(body): Json<serde_json::Value>| async move {
                let name = body["name"]
                    .as_str()
                    .or(body["pipelineDefinition"]["name"].as_str())
                    .unwrap_or("")
                    .to_owned();
                if name.contains("boom") {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        Json(json!({"providerError": format!("{kind} {name} exploded")})),
                    )
                } else {
                    (StatusCode::CREATED, Json(json!({"id": format!("http-{name}")})))
                }
            }),
        )
        .route("/resource/{kind}/{id}", delete(|| async { Json(json!({})) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn an_http_provider_service_is_called_and_its_errors_surface() {
    let client = support::client().await;
    let ns = support::namespace(&client, "http-provider").await;
    let operator = Operator::start(&client, &ns, |_| {});
    let url = start_provider_service().await;
    let provider = Provider::new(
        "stub",
        ProviderSpec {
            service_url: url,
            service_image: "unused".into(),
            service_account: "default".into(),
            pipeline_root_storage: "gs://root".into(),
            ..ProviderSpec::default()
        },
    );
    create(&client, &ns, &provider).await;
    for name in ["fine", "boom"] {
        create(
            &client,
            &ns,
            &Experiment::new(
                name,
                ExperimentSpec { provider: NamespacedName::new(&ns, "stub"), description: String::new() },
            ),
        )
        .await;
    }
    let fine = wait_for::<Experiment>(
        &client,
        &ns,
        "fine",
        "Succeeded",
        succeeded(|e: &Experiment| e.status.as_ref()),
    )
    .await;
    assert_eq!(fine.status.unwrap().provider.map(|p| p.id), Some(format!("http-{ns}/fine")));
    let boom = wait_for::<Experiment>(&client, &ns, "boom", "Failed", |e: &Experiment| {
        sync_state(e.status.as_ref()).0 == SyncState::Failed
    })
    .await;
    let message = sync_state(boom.status.as_ref()).1;
    assert!(message.contains(&format!("experiment {ns}/boom exploded")), "{message}");
    operator.stop().await;
}

/// With 200 resources synchronised, the operator writes nothing for 30 s; failing objects are
/// written only when their retries come, on the default backoff (1 s doubling).
#[tokio::test]
async fn quiet_at_rest() {
    let client = support::client().await;
    let ns = support::namespace(&client, "quiet-at-rest").await;
    let operator = Operator::start(&client, &ns, |config| {
        config.retry_initial_delay = Duration::from_secs(1);
        config.retry_max_delay = Duration::from_secs(300);
    });
    create(&client, &ns, &stub_provider("stub")).await;
    let writes = support::StatusWrites::default();
    let watches = [
        writes.watch(Api::<Pipeline>::namespaced(client.clone(), &ns)),
        writes.watch(Api::<Experiment>::namespaced(client.clone(), &ns)),
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;
    let failing_since = std::time::Instant::now();
    create(&client, &ns, &pipeline("create-pipeline-fail", &ns, "quickstart:v1")).await;
    create(
        &client,
        &ns,
        &support::fixtures::experiment("create-experiment-fail", &NamespacedName::new(&ns, "stub")),
    )
    .await;
    for i in 0..100 {
        create(&client, &ns, &pipeline(&format!("pipeline-{i}"), &ns, "quickstart:v1")).await;
        create(
            &client,
            &ns,
            &support::fixtures::experiment(&format!("experiment-{i}"), &NamespacedName::new(&ns, "stub")),
        )
        .await;
    }
    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), &ns);
    let experiments: Api<Experiment> = Api::namespaced(client.clone(), &ns);
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let snapshot = || async {
        let mut versions: Vec<String> = pipelines
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .chain(std::iter::empty())
            .filter(|p| sync_state(p.status.as_ref()).0 == SyncState::Succeeded)
            .map(|p| format!("{}@{}", p.name_any(), p.resource_version().unwrap_or_default()))
            .collect();
        versions.extend(
            experiments
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .iter()
                .filter(|e| sync_state(e.status.as_ref()).0 == SyncState::Succeeded)
                .map(|e| format!("{}@{}", e.name_any(), e.resource_version().unwrap_or_default())),
        );
        let event_list = events.list(&Default::default()).await.unwrap();
        (versions, event_list.metadata.resource_version.unwrap_or_default(), event_list.items.len())
    };
    support::eventually("200 resources Succeeded", Duration::from_secs(120), || async {
        let (versions, _, _) = snapshot().await;
        (versions.len() == 200).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (before, _, events_before) = snapshot().await;
    let failing = ["create-pipeline-fail", "create-experiment-fail"];
    let failing_before = failing.map(|name| writes.of(name));
    let window_start = failing_since.elapsed();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (after, _, events_after) = snapshot().await;
    let changed: Vec<_> = after.iter().filter(|v| !before.contains(v)).collect();
    assert!(changed.is_empty(), "objects written at rest: {changed:?}");
    assert_eq!(events_after, events_before, "events published at rest");
    // Attempts come at 0, 1, 3, 7, 15, 31, 63 ... s after the first failure.
    let window = window_start.as_secs_f64()..window_start.as_secs_f64() + 30.0;
    let due = (0..12).map(|n| f64::from((1u32 << n) - 1)).filter(|at| window.contains(at)).count() as u32;
    for (name, before) in failing.iter().zip(failing_before) {
        let written = writes.of(name) - before;
        assert!(written <= due + 1, "{name}: {written} status writes at rest, {due} retries due");
    }
    for watch in watches {
        watch.abort();
    }
    operator.stop().await;
}

/// Every failure name of the reference stub: creates fail at once; updates fail once the spec
/// changes; deletes keep the resource Deleting with the provider's message.
#[tokio::test]
async fn every_stub_failure_name_fails_with_its_message() {
    let client = support::client().await;
    let ns = support::namespace(&client, "all-failure-names").await;
    let operator = Operator::start(&client, &ns, |_| {});
    create(&client, &ns, &stub_provider("stub")).await;
    let provider = NamespacedName::new(&ns, "stub");
    let experiment = |name: &str| support::fixtures::experiment(name, &provider);
    let schedule = |name: &str| {
        RunSchedule::new(
            name,
            RunScheduleSpec {
                provider: provider.clone(),
                pipeline: "penguin:v1".parse().unwrap(),
                schedule: Schedule::cron("0 * * * *"),
                ..RunScheduleSpec::default()
            },
        )
    };
    for name in ["create-pipeline-fail", "update-pipeline-fail", "delete-pipeline-fail"] {
        create(&client, &ns, &pipeline(name, &ns, "quickstart:v1")).await;
    }
    for name in ["create-experiment-fail", "update-experiment-fail", "delete-experiment-fail"] {
        create(&client, &ns, &experiment(name)).await;
    }
    for name in ["create-runschedule-fail", "update-runschedule-fail", "delete-runschedule-fail"] {
        create(&client, &ns, &schedule(name)).await;
    }
    create(&client, &ns, &run("create-run-fail", &ns, "penguin:v1")).await;
    create(&client, &ns, &run("delete-run-fail", &ns, "penguin:v1")).await;

    async fn expect<K>(
        client: &kube::Client,
        ns: &str,
        name: &str,
        state: SyncState,
        message: &str,
        status: fn(&K) -> Option<&Status>,
    ) where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let message = message.to_owned();
        wait_for::<K>(client, ns, name, &format!("{state}: {message}"), move |object| {
            sync_state(status(object)) == (state, message.clone())
        })
        .await;
    }
    fn pipeline_status(p: &Pipeline) -> Option<&Status> {
        p.status.as_ref()
    }
    fn experiment_status(e: &Experiment) -> Option<&Status> {
        e.status.as_ref()
    }
    fn schedule_status(s: &RunSchedule) -> Option<&Status> {
        s.status.as_ref()
    }
    fn run_status(r: &Run) -> Option<&Status> {
        r.status.as_ref().map(|s| &s.status)
    }

    /// Expects `<operation>-<kind>-fail` of each kind to be in `state`, with the stub's failure
    /// message for that operation and kind (or the in-step message).
    async fn expect_each(client: &kube::Client, ns: &str, operation: &str, kinds: &[&str], state: SyncState) {
        for kind in kinds {
            let name = format!("{operation}-{kind}-fail");
            let message = match state {
                SyncState::Succeeded => "in step with the provider".to_owned(),
                _ => format!("{operation} {kind} failed"),
            };
            match *kind {
                "pipeline" => expect(client, ns, &name, state, &message, pipeline_status).await,
                "experiment" => expect(client, ns, &name, state, &message, experiment_status).await,
                "runschedule" => expect(client, ns, &name, state, &message, schedule_status).await,
                _ => expect(client, ns, &name, state, &message, run_status).await,
            }
        }
    }
    const ALL: [&str; 4] = ["pipeline", "experiment", "runschedule", "run"];
    const SYNCED: [&str; 3] = ["pipeline", "experiment", "runschedule"];

    expect_each(&client, &ns, "create", &ALL, SyncState::Failed).await;
    expect_each(&client, &ns, "update", &SYNCED, SyncState::Succeeded).await;
    let params = PatchParams::default();
    Api::<Pipeline>::namespaced(client.clone(), &ns)
        .patch("update-pipeline-fail", &params, &Patch::Merge(json!({"spec": {"image": "quickstart:v2"}})))
        .await
        .unwrap();
    Api::<Experiment>::namespaced(client.clone(), &ns)
        .patch("update-experiment-fail", &params, &Patch::Merge(json!({"spec": {"description": "changed"}})))
        .await
        .unwrap();
    Api::<RunSchedule>::namespaced(client.clone(), &ns)
        .patch(
            "update-runschedule-fail",
            &params,
            &Patch::Merge(json!({"spec": {"schedule": {"cronExpression": "5 * * * *"}}})),
        )
        .await
        .unwrap();
    expect_each(&client, &ns, "update", &SYNCED, SyncState::Failed).await;

    expect_each(&client, &ns, "delete", &ALL, SyncState::Succeeded).await;
    let delete = DeleteParams::default();
    Api::<Pipeline>::namespaced(client.clone(), &ns).delete("delete-pipeline-fail", &delete).await.unwrap();
    Api::<Experiment>::namespaced(client.clone(), &ns)
        .delete("delete-experiment-fail", &delete)
        .await
        .unwrap();
    Api::<RunSchedule>::namespaced(client.clone(), &ns)
        .delete("delete-runschedule-fail", &delete)
        .await
        .unwrap();
    Api::<Run>::namespaced(client.clone(), &ns).delete("delete-run-fail", &delete).await.unwrap();
    expect_each(&client, &ns, "delete", &ALL, SyncState::Deleting).await;
    for name in ["create-pipeline-fail", "update-pipeline-fail", "delete-pipeline-fail"] {
        let counts = event_counts(&client, &ns, name).await;
        assert!(
            counts.contains_key("Warning:SyncFailed") || name.starts_with("delete"),
            "{name}: {counts:?}"
        );
    }
    operator.stop().await;
}

#[tokio::test]
async fn a_run_with_an_unparsable_artifact_filter_is_refused_with_the_reason() {
    let client = support::client().await;
    let ns = support::namespace(&client, "run-bad-filter").await;
    let operator = Operator::start(&client, &ns, |_| {});
    create(&client, &ns, &stub_provider("stub")).await;
    let mut bad = run("bad-filter", &ns, "penguin:v1");
    bad.spec.artifacts = vec![kfp_operator::api::OutputArtifact::new(
        "serving-model",
        "Pusher:pushed_model[pushed = = 1]".parse().unwrap(),
    )];
    create(&client, &ns, &bad).await;
    let refused =
        wait_for::<Run>(&client, &ns, "bad-filter", "refused", |r: &Run| run_state(r).0 == SyncState::Failed)
            .await;
    let message = run_state(&refused).1;
    assert!(message.contains("serving-model") && message.contains("pushed = = 1"), "{message}");
    support::eventually("an InvalidSpec Warning Event", TIMEOUT, || async {
        event_reasons(&client, &ns, "bad-filter")
            .await
            .contains(&"Warning:InvalidSpec".to_owned())
            .then_some(())
    })
    .await;
    assert!(refused.status.unwrap().status.provider.is_none(), "nothing was submitted");
    operator.stop().await;
}

fn ready_message(status: Option<&Status>) -> String {
    let status = status.cloned().unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == kfp_operator::api::conditions::READY);
    ready.map(|c| c.message.clone()).unwrap_or_default()
}

/// What another object must fix waits for it: a Pipeline created before its Provider says so
/// in a Normal Event, is left alone (no retries on the backoff, no writes), and synchronises as
/// soon as the Provider appears, woken by its watch.
#[tokio::test]
async fn a_pipeline_waits_for_its_provider_and_goes_on_when_it_appears() {
    let client = support::client().await;
    let ns = support::namespace(&client, "waits-for-provider").await;
    let operator = Operator::start(&client, &ns, |_| {});
    let writes = support::StatusWrites::default();
    let watch = writes.watch(Api::<Pipeline>::namespaced(client.clone(), &ns));
    create(&client, &ns, &pipeline("early", &ns, "quickstart:v1")).await;
    let waiting = wait_for::<Pipeline>(&client, &ns, "early", "waiting", |p: &Pipeline| {
        sync_state(p.status.as_ref()).0 == SyncState::Failed
    })
    .await;
    assert_eq!(sync_state(waiting.status.as_ref()).1, format!("provider {ns}/stub not found"));
    assert!(ready_message(waiting.status.as_ref()).ends_with("; tried again when it changes"));
    support::eventually("a Normal ProviderNotFound Event", TIMEOUT, || async {
        event_reasons(&client, &ns, "early")
            .await
            .contains(&"Normal:ProviderNotFound".to_owned())
            .then_some(())
    })
    .await;
    let written = writes.of("early");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(writes.of("early"), written, "a waiting object is not rewritten while it waits");

    let appeared = std::time::Instant::now();
    create(&client, &ns, &stub_provider("stub")).await;
    wait_for::<Pipeline>(&client, &ns, "early", "Succeeded", succeeded(|p: &Pipeline| p.status.as_ref()))
        .await;
    assert!(appeared.elapsed() < Duration::from_secs(5), "woken by the Provider: {:?}", appeared.elapsed());
    assert_eq!(
        operator.context().metrics.provider_calls(&format!("{ns}/stub"), "pipeline", "create", "ok"),
        1
    );
    watch.abort();
    operator.stop().await;
}

/// What only the object itself can fix stalls: a Pipeline moved to another Provider fails with
/// a Warning Event and is not retried (no provider calls, no writes), until the object changes
/// (an annotation is enough), and moving it back brings it back in step.
#[tokio::test]
async fn a_pipeline_moved_to_another_provider_stalls_until_it_changes() {
    let client = support::client().await;
    let ns = support::namespace(&client, "stalls").await;
    let operator = Operator::start(&client, &ns, |_| {});
    create(&client, &ns, &stub_provider("stub")).await;
    create(&client, &ns, &stub_provider("other")).await;
    create(&client, &ns, &pipeline("moved", &ns, "quickstart:v1")).await;
    wait_for::<Pipeline>(&client, &ns, "moved", "Succeeded", succeeded(|p: &Pipeline| p.status.as_ref()))
        .await;
    let writes = support::StatusWrites::default();
    let watch = writes.watch(Api::<Pipeline>::namespaced(client.clone(), &ns));

    let api: Api<Pipeline> = Api::namespaced(client.clone(), &ns);
    let provider = |name: &str| json!({"spec": {"provider": format!("{ns}/{name}")}});
    api.patch("moved", &PatchParams::default(), &Patch::Merge(provider("other"))).await.unwrap();
    let stalled = wait_for::<Pipeline>(&client, &ns, "moved", "stalled", |p: &Pipeline| {
        sync_state(p.status.as_ref()).0 == SyncState::Failed
    })
    .await;
    assert!(sync_state(stalled.status.as_ref()).1.contains("the provider has changed"));
    assert!(ready_message(stalled.status.as_ref()).ends_with("; not retried until the resource changes"));
    support::eventually("a Warning ProviderChanged Event", TIMEOUT, || async {
        event_reasons(&client, &ns, "moved")
            .await
            .contains(&"Warning:ProviderChanged".to_owned())
            .then_some(())
    })
    .await;
    let metrics = operator.context().metrics.clone();
    let (written, calls) = (writes.of("moved"), metrics.reconcile_failures("pipeline", "ProviderChanged"));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(writes.of("moved"), written, "a stalled object is not rewritten");
    assert_eq!(metrics.reconcile_failures("pipeline", "ProviderChanged"), calls, "nor reconciled again");

    api.patch(
        "moved",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"retry": "1"}}})),
    )
    .await
    .unwrap();
    support::eventually("a retry after the annotation", TIMEOUT, || async {
        (metrics.reconcile_failures("pipeline", "ProviderChanged") > calls).then_some(())
    })
    .await;
    api.patch("moved", &PatchParams::default(), &Patch::Merge(provider("stub"))).await.unwrap();
    wait_for::<Pipeline>(&client, &ns, "moved", "back in step", succeeded(|p: &Pipeline| p.status.as_ref()))
        .await;
    assert_eq!(
        metrics.provider_calls(&format!("{ns}/stub"), "pipeline", "create", "ok"),
        1,
        "in step again without a second create"
    );
    watch.abort();
    operator.stop().await;
}

/// A reconcile that another object's change starts right after the operator's own write plans
/// on the object as the API server holds it, not on a cache that has not seen the write yet:
/// Runs created while their Provider keeps changing are created on the provider once each.
#[tokio::test]
async fn a_provider_changing_during_creation_does_not_repeat_provider_calls() {
    let client = support::client().await;
    let ns = support::namespace(&client, "no-repeats").await;
    let operator = Operator::start(&client, &ns, |_| {});
    let providers: Api<Provider> = Api::namespaced(client.clone(), &ns);
    for index in 0..20 {
        let spec = RunSpec {
            provider: NamespacedName::new(&ns, "stub"),
            pipeline: "penguin:v1-abc".parse().unwrap(),
            ..RunSpec::default()
        };
        create(&client, &ns, &Run::new(&format!("run-{index}"), spec)).await;
    }
    create(&client, &ns, &stub_provider("stub")).await;
    for round in 0..300 {
        let touch = json!({"metadata": {"annotations": {"round": round.to_string()}}});
        providers.patch("stub", &PatchParams::default(), &Patch::Merge(touch)).await.unwrap();
    }
    let runs: Api<Run> = Api::namespaced(client.clone(), &ns);
    support::eventually("20 synchronised Runs", TIMEOUT, || async {
        let listed = runs.list(&Default::default()).await.unwrap().items;
        (listed
            .iter()
            .filter(|r| sync_state(r.status.as_ref().map(|s| &s.status)).0 == SyncState::Succeeded)
            .count()
            == 20)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(operator.context().metrics.provider_calls(&format!("{ns}/stub"), "run", "create", "ok"), 20);
    operator.stop().await;
}

/// Needs the local node (its controller-manager runs the garbage collector).
#[tokio::test]
async fn owned_runs_go_with_their_run_configuration() {
    use kfp_operator::api::{OnChangeType, RunConfiguration, Triggers};
    support::local_node();
    let client = support::client().await;
    let ns = support::namespace(&client, "owned-runs").await;
    let operator = Operator::start(&client, &ns, |_| {});
    let provider = NamespacedName::new(&ns, "stub");
    let post = PostParams::default();
    Api::<Provider>::namespaced(client.clone(), &ns).create(&post, &stub_provider("stub")).await.unwrap();
    let pipeline = support::fixtures::pipeline("penguin", &provider);
    Api::<Pipeline>::namespaced(client.clone(), &ns).create(&post, &pipeline).await.unwrap();
    let on_spec = Triggers { on_change: vec![OnChangeType::RunSpec], ..Triggers::default() };
    let rc = support::fixtures::run_configuration("training", &provider, on_spec);
    let rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &ns);
    rcs.create(&post, &rc).await.unwrap();
    let runs: Api<Run> = Api::namespaced(client.clone(), &ns);
    support::eventually("the RunConfiguration's Run", Duration::from_secs(30), || async {
        let found = runs.list(&Default::default()).await.ok()?.items;
        found.iter().any(|run| run.owner_references().iter().any(|o| o.name == "training")).then_some(())
    })
    .await;
    rcs.delete("training", &DeleteParams::default()).await.unwrap();
    support::eventually(
        "the garbage collector to delete the owned Runs",
        Duration::from_secs(60),
        || async { runs.list(&Default::default()).await.ok()?.items.is_empty().then_some(()) },
    )
    .await;
    operator.stop().await;
}

/// A Pipeline whose framework its Provider does not declare fails at once, before any compile,
/// and goes on when the Provider declares it.
#[tokio::test]
async fn a_pipeline_whose_framework_its_provider_lacks_fails_at_once() {
    let client = support::client().await;
    let ns = support::namespace(&client, "undeclared-framework").await;
    let operator = Operator::start(&client, &ns, |_| {});
    create(&client, &ns, &stub_provider("stub")).await;
    let mut kfp = pipeline("kfp", &ns, "quickstart:v1");
    kfp.spec.framework = PipelineFramework::new("kfp-sdk");
    create(&client, &ns, &kfp).await;
    let failed = wait_for::<Pipeline>(&client, &ns, "kfp", "Failed", |p: &Pipeline| {
        sync_state(p.status.as_ref()).0 == SyncState::Failed
    })
    .await;
    let message = sync_state(failed.status.as_ref()).1;
    assert!(message.contains("framework \"kfp-sdk\" is not supported by provider"), "{message}");
    assert!(message.contains("it supports tfx"), "{message}");
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), &ns);
    assert!(jobs.list(&Default::default()).await.unwrap().items.is_empty(), "nothing was compiled");
    let declare = json!({"spec": {"frameworks": [{"name": "tfx", "image": "none"}, {"name": "kfp-sdk", "image": "none"}]}});
    Api::<Provider>::namespaced(client.clone(), &ns)
        .patch("stub", &PatchParams::default(), &Patch::Merge(declare))
        .await
        .unwrap();
    wait_for::<Pipeline>(&client, &ns, "kfp", "Succeeded", succeeded(|p: &Pipeline| p.status.as_ref())).await;
    operator.stop().await;
}
