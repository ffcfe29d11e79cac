//! Pipelines compiled by the operator on a real node (needs the local node: `support::local_node`):
//! the KFP v2 example compiles and its provider receives a PipelineSpec the KFP SDK loads; a
//! version compiles once; a pipeline that raises, a missing image and a deadline each fail the
//! Pipeline with the reason; a retry annotation compiles again; an operator killed during a
//! compile leaves one Job and one upload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::events::v1::Event;
use kfp_operator::api::conditions::SyncState;
use kfp_operator::api::{
    Framework, NamedValue, NamespacedName, Pipeline, PipelineFramework, PipelineSpec, Provider, ProviderSpec,
    ProviderType,
};
use kfp_operator::provider::ResourceKind;
use kfp_operator::provider::compile::PIPELINE_LABEL;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use support::operator::{Operator, OperatorProcess};

const FRAMEWORK_IMAGE: &str = "localhost/kfp-framework-kfp-sdk";
const PIPELINE_IMAGE: &str = "localhost/kfp-pipeline-test";
const EXAMPLE: &str = "penguin_training.pipeline";
const RAISES: &str = "broken_pipeline.pipeline";
const SLOW: &str = "slow_pipeline.pipeline";

fn provider(namespace: &str, provider_type: ProviderType, service_url: &str) -> Provider {
    let node = support::local_node();
    let mut provider = Provider::new(
        "kfp",
        ProviderSpec {
            provider_type,
            service_url: service_url.to_owned(),
            service_image: "none".into(),
            service_account: "default".into(),
            pipeline_root_storage: "memory://root".into(),
            frameworks: vec![Framework {
                name: "kfp-sdk".into(),
                image: node.image(FRAMEWORK_IMAGE).to_owned(),
                patches: vec![],
            }],
            ..ProviderSpec::default()
        },
    );
    provider.metadata.namespace = Some(namespace.to_owned());
    provider
}

fn pipeline(namespace: &str, name: &str, image: &str, function: &str) -> Pipeline {
    let mut pipeline = Pipeline::new(
        name,
        PipelineSpec {
            provider: NamespacedName::new(namespace, "kfp"),
            image: image.to_owned(),
            env: vec![NamedValue { name: "TRAINING_ROWS".into(), value: "150".into() }],
            framework: PipelineFramework::new("kfp-sdk").with_parameter("pipeline", json!(function)),
        },
    );
    pipeline.metadata.namespace = Some(namespace.to_owned());
    pipeline
}

fn test_image() -> String {
    support::local_node().image(PIPELINE_IMAGE).to_owned()
}

fn compiling(config: &mut kfp_operator::config::OperatorConfig, deadline: Duration) {
    config.compile.image_pull_policy = "Never".into();
    config.compile.deadline = deadline;
}

async fn create<K>(client: &kube::Client, namespace: &str, object: &K)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), object).await.unwrap();
}

/// Waits until the Pipeline is in `state` (at `version`, if given) and returns it.
async fn pipeline_in(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    state: SyncState,
    version: Option<&str>,
    timeout: Duration,
) -> Pipeline {
    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), namespace);
    support::eventually(&format!("pipeline {name} {state}"), timeout, || {
        let pipelines = pipelines.clone();
        async move {
            let found = pipelines.get(name).await.ok()?;
            let status = found.status.clone()?;
            (SyncState::of(&status) == state && version.is_none_or(|v| status.version == v)).then_some(found)
        }
    })
    .await
}

fn message(pipeline: &Pipeline) -> String {
    kfp_operator::api::conditions::synchronized_message(pipeline.status.as_ref().unwrap())
}

async fn compile_jobs(client: &kube::Client, namespace: &str, name: &str) -> Vec<Job> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    jobs.list(&ListParams::default().labels(&format!("{PIPELINE_LABEL}={name}"))).await.unwrap().items
}

/// Waits until the compile Jobs of the Pipeline `name` pass `check`, and returns them.
async fn compile_jobs_until(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&[Job]) -> bool,
) -> Vec<Job> {
    let check = &check;
    support::eventually(what, timeout, || async move {
        let jobs = compile_jobs(client, namespace, name).await;
        check(&jobs).then_some(jobs)
    })
    .await
}

async fn event_reasons(client: &kube::Client, namespace: &str, name: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn a_kfp_pipeline_compiles_once_per_version_and_its_provider_receives_the_pipeline_spec() {
    let client = support::client().await;
    let ns = support::namespace(&client, "compile-kfp").await;
    let operator = Operator::start(&client, &ns, |c| compiling(c, Duration::from_secs(300)));
    create(&client, &ns, &provider(&ns, ProviderType::Stub, "")).await;
    create(&client, &ns, &pipeline(&ns, "penguin", &test_image(), EXAMPLE)).await;

    let synced =
        pipeline_in(&client, &ns, "penguin", SyncState::Succeeded, None, Duration::from_secs(180)).await;
    let stub =
        operator.context().providers.stub(&NamespacedName::new(&ns, "kfp")).expect("the stub was used");
    let received = stub.received(ResourceKind::Pipeline);
    assert_eq!(received.len(), 1, "one upload: {received:?}");
    let body = &received[0].definition;
    assert_eq!(body["pipelineDefinition"]["name"], json!(format!("{ns}/penguin")));
    assert_eq!(body["pipelineDefinition"]["version"], json!(synced.status.as_ref().unwrap().version));
    let summary = support::kfp_sdk_summary(&body["compiledPipeline"]);
    assert_eq!(summary["name"], json!(format!("{ns}-penguin")), "named as the reference names it: {summary}");
    assert!(
        summary["tasks"]["prepare-data"].is_object() && summary["tasks"]["train"].is_object(),
        "{summary}"
    );
    assert_eq!(compile_jobs(&client, &ns, "penguin").await.len(), 1);
    let reasons = event_reasons(&client, &ns, "penguin").await;
    for reason in ["Compiling", "Compiled", "Synced"] {
        assert!(reasons.iter().any(|(_, r)| r == reason), "{reason} in {reasons:?}");
    }

    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), &ns);
    let change = json!({"spec": {"env": [{"name": "TRAINING_ROWS", "value": "120"}]}});
    let changed = pipelines.patch("penguin", &PatchParams::default(), &Patch::Merge(&change)).await.unwrap();
    let version = kfp_operator::api::hash::pipeline_version(&changed.spec);
    pipeline_in(&client, &ns, "penguin", SyncState::Succeeded, Some(&version), Duration::from_secs(180))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let operations: Vec<&str> = stub.received(ResourceKind::Pipeline).iter().map(|r| r.operation).collect();
    assert_eq!(operations, ["create", "update"], "each version is uploaded once");
    assert_eq!(compile_jobs(&client, &ns, "penguin").await.len(), 2, "each version is compiled once");
    operator.stop().await;
}

#[tokio::test]
async fn a_failing_compile_fails_the_pipeline_with_the_reason_and_a_retry_compiles_again() {
    let client = support::client().await;
    let ns = support::namespace(&client, "compile-failures").await;
    let operator = Operator::start(&client, &ns, |c| compiling(c, Duration::from_secs(120)));
    let writes = support::StatusWrites::default();
    let watch = writes.watch(Api::<Pipeline>::namespaced(client.clone(), &ns));
    create(&client, &ns, &provider(&ns, ProviderType::Stub, "")).await;
    create(&client, &ns, &pipeline(&ns, "raises", &test_image(), RAISES)).await;
    create(&client, &ns, &pipeline(&ns, "no-image", "localhost/kfp-does-not-exist:1", EXAMPLE)).await;

    let raised = pipeline_in(&client, &ns, "raises", SyncState::Failed, None, Duration::from_secs(60)).await;
    assert!(message(&raised).contains("the compiler exited with status"), "{}", message(&raised));
    assert!(
        message(&raised).contains("no training data is configured"),
        "the exception: {}",
        message(&raised)
    );
    let missing =
        pipeline_in(&client, &ns, "no-image", SyncState::Failed, None, Duration::from_secs(60)).await;
    assert!(message(&missing).contains("ErrImageNeverPull"), "{}", message(&missing));
    assert!(message(&missing).contains("localhost/kfp-does-not-exist:1"), "{}", message(&missing));
    for name in ["raises", "no-image"] {
        let reasons = event_reasons(&client, &ns, name).await;
        assert!(
            reasons.iter().any(|(t, r)| t == "Warning" && r.starts_with("Compile")),
            "a Warning Event for {name}: {reasons:?}"
        );
    }
    let stopped = compile_jobs_until(
        &client,
        &ns,
        "no-image",
        "the stuck compile Job stopped",
        Duration::from_secs(30),
        |jobs| jobs.iter().all(|job| !kfp_operator::provider::compile::is_active(job)),
    )
    .await;
    assert_eq!(stopped.len(), 1);
    let settled = (writes.of("raises"), writes.of("no-image"));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!((writes.of("raises"), writes.of("no-image")), settled, "a failed compile is not rewritten");

    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), &ns);
    let retry = json!({"metadata": {"annotations": {"pipelines.kubeflow.org/retry": "1"}}});
    pipelines.patch("raises", &PatchParams::default(), &Patch::Merge(&retry)).await.unwrap();
    compile_jobs_until(&client, &ns, "raises", "a second compile Job", Duration::from_secs(30), |jobs| {
        jobs.len() == 2
    })
    .await;
    pipeline_in(&client, &ns, "raises", SyncState::Failed, None, Duration::from_secs(60)).await;
    let stub = operator.context().providers.stub(&NamespacedName::new(&ns, "kfp"));
    assert!(stub.is_none_or(|s| s.received(ResourceKind::Pipeline).is_empty()), "nothing was uploaded");
    watch.abort();
    operator.stop().await;
}

#[tokio::test]
async fn a_compile_past_its_deadline_fails_naming_it() {
    let client = support::client().await;
    let ns = support::namespace(&client, "compile-deadline").await;
    let operator = Operator::start(&client, &ns, |c| compiling(c, Duration::from_secs(5)));
    create(&client, &ns, &provider(&ns, ProviderType::Stub, "")).await;
    create(&client, &ns, &pipeline(&ns, "slow", &test_image(), SLOW)).await;
    let failed = pipeline_in(&client, &ns, "slow", SyncState::Failed, None, Duration::from_secs(60)).await;
    assert!(message(&failed).contains("deadline of 5s"), "{}", message(&failed));
    operator.stop().await;
}

#[tokio::test]
async fn an_operator_killed_during_a_compile_leaves_one_job_and_one_upload() {
    let client = support::client().await;
    let ns = support::namespace(&client, "compile-restart").await;
    let service = support::provider_service::RecordingProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("operator.yaml");
    std::fs::write(
        &config,
        format!(
            "namespaces: [{ns}]\nretryInitialDelay: 200ms\nretryMaxDelay: 2s\nevents:\n  listenAddr: 127.0.0.1:{}\n\
             compile:\n  imagePullPolicy: Never\n",
            support::free_port()
        ),
    )
    .unwrap();
    let first = OperatorProcess::start(&config);
    create(&client, &ns, &provider(&ns, ProviderType::Http, &service.url)).await;
    create(&client, &ns, &pipeline(&ns, "penguin", &test_image(), EXAMPLE)).await;
    compile_jobs_until(&client, &ns, "penguin", "the compile Job", Duration::from_secs(60), |jobs| {
        !jobs.is_empty()
    })
    .await;
    first.kill();
    let second = OperatorProcess::start(&config);
    pipeline_in(&client, &ns, "penguin", SyncState::Succeeded, None, Duration::from_secs(180)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        compile_jobs(&client, &ns, "penguin").await.len(),
        1,
        "the restarted operator adopted the Job"
    );
    let uploads = service.uploads("pipeline");
    assert_eq!(uploads.len(), 1, "one upload: {uploads:?}");
    assert!(uploads[0]["compiledPipeline"].is_object(), "{}", uploads[0]);
    assert_eq!(uploads[0]["pipelineDefinition"]["name"], json!(format!("{ns}/penguin")));
    second.terminate(Duration::from_secs(10));
}

#[tokio::test]
async fn compiles_beyond_the_limit_wait_for_a_free_slot() {
    let client = support::client().await;
    let ns = support::namespace(&client, "compile-limit").await;
    let operator = Operator::start(&client, &ns, |c| {
        compiling(c, Duration::from_secs(300));
        c.compile.max_concurrent = 1;
    });
    create(&client, &ns, &provider(&ns, ProviderType::Stub, "")).await;
    let names = ["first", "second", "third"];
    for name in names {
        create(&client, &ns, &pipeline(&ns, name, &test_image(), EXAMPLE)).await;
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), &ns);
    let most_at_once = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    support::eventually("every Pipeline compiled", Duration::from_secs(180), || {
        let (jobs, pipelines, most) = (jobs.clone(), pipelines.clone(), most_at_once.clone());
        async move {
            let all = jobs.list(&ListParams::default()).await.ok()?.items;
            let running = all.iter().filter(|job| kfp_operator::provider::compile::is_active(job)).count();
            most.fetch_max(running, std::sync::atomic::Ordering::SeqCst);
            let all = pipelines.list(&ListParams::default()).await.ok()?.items;
            all.iter()
                .all(|p| p.status.as_ref().is_some_and(|s| SyncState::of(s) == SyncState::Succeeded))
                .then_some(())
        }
    })
    .await;
    assert_eq!(most_at_once.load(std::sync::atomic::Ordering::SeqCst), 1, "one compile at a time");
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let notes: Vec<String> =
        events.list(&ListParams::default()).await.unwrap().items.into_iter().filter_map(|e| e.note).collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("waiting to compile") && n.contains("1 of 1 compile Jobs are running")),
        "a Pipeline said it waited: {notes:?}"
    );
    operator.stop().await;
}
