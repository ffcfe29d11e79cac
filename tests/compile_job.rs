//! The compile Job on a real node: `CompileRequest`'s ConfigMap and Job for the KFP v2 example
//! pipeline (`examples/pipelines/kfp-v2/`), with the kfp-sdk framework image and the test
//! pipeline image, run to completion; the compiled pipeline comes back through `pods/log` and the
//! termination message (`read_output`) and the host's KFP SDK accepts it as a PipelineSpec. A
//! pipeline whose code raises ends the Job failed with the exception in the termination message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kfp_operator::api::{
    Framework, NamedValue, NamespacedName, Pipeline, PipelineFramework, PipelineSpec, Provider, ProviderSpec,
};
use kfp_operator::provider::compile::{CompileOutputError, CompileRequest, read_output};
use kfp_operator::provider::definitions;
use kube::api::{Api, ListParams, LogParams, PostParams};
use serde_json::{Value, json};

const FRAMEWORK_IMAGE: &str = "localhost/kfp-framework-kfp-sdk";
const PIPELINE_IMAGE: &str = "localhost/kfp-pipeline-test";

/// A compile Job that ran to its end.
struct Finished {
    succeeded: bool,
    log: String,
    termination_message: String,
    /// From creating the Job until its pod was seen Succeeded or Failed.
    elapsed: Duration,
}

/// Creates the Pipeline `name` (framework kfp-sdk, `parameters.pipeline = function`), then the
/// ConfigMap and Job of its compile, and waits for the Job's pod to end.
async fn compile(client: &kube::Client, namespace: &str, name: &str, function: &str) -> (Finished, Value) {
    let node = support::local_node();
    let pipeline_image = node.image(PIPELINE_IMAGE).to_owned();
    let framework_image = node.image(FRAMEWORK_IMAGE).to_owned();
    let provider_name = NamespacedName::new(namespace, "kfp");
    let mut pipeline = Pipeline::new(
        name,
        PipelineSpec {
            provider: provider_name.clone(),
            image: pipeline_image.clone(),
            env: vec![NamedValue { name: "TRAINING_ROWS".into(), value: "150".into() }],
            framework: PipelineFramework::new("kfp-sdk").with_parameter("pipeline", json!(function)),
        },
    );
    pipeline.metadata.namespace = Some(namespace.to_owned());
    let mut provider = Provider::new(
        "kfp",
        ProviderSpec {
            service_image: "none".into(),
            service_account: "default".into(),
            pipeline_root_storage: "memory://root".into(),
            frameworks: vec![Framework {
                name: "kfp-sdk".into(),
                image: framework_image.clone(),
                patches: vec![],
            }],
            ..ProviderSpec::default()
        },
    );
    provider.metadata.namespace = Some(namespace.to_owned());
    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), namespace);
    let created = pipelines.create(&PostParams::default(), &pipeline).await.unwrap();
    let definition = definitions::pipeline(&pipeline, &provider).unwrap()["pipelineDefinition"].clone();
    let request = CompileRequest {
        namespace: namespace.to_owned(),
        pipeline: name.to_owned(),
        pipeline_uid: created.metadata.uid.clone().unwrap(),
        version: definition["version"].as_str().unwrap().to_owned(),
        attempt: String::new(),
        pipeline_image,
        framework_image,
        definition: definition.clone(),
        deadline: Duration::from_secs(300),
        ttl: Duration::from_secs(3600),
        image_pull_policy: "Never".into(),
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    config_maps.create(&PostParams::default(), &request.config_map().unwrap()).await.unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    jobs.create(&PostParams::default(), &request.job()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let job = request.name();
    let selector = ListParams::default().labels(&format!("job-name={job}"));
    let pod = support::eventually(
        &format!("the pod of the compile Job {namespace}/{job} to end"),
        Duration::from_secs(120),
        || {
            let pods = pods.clone();
            let selector = selector.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let list = pods.list(&selector).await.ok()?;
                list.items.into_iter().find(|pod| {
                    matches!(
                        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    )
                })
            }
        },
    )
    .await;
    let elapsed = started.elapsed();
    let pod_name = pod.metadata.name.clone().unwrap();
    let status = pod.status.clone().unwrap();
    let compile = status
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .find(|container| container.name == "compile")
        .unwrap_or_else(|| panic!("the pod {pod_name} has no status of its compile container"));
    let terminated =
        compile.state.and_then(|state| state.terminated).expect("the compile container terminated");
    let log = pods
        .logs(&pod_name, &LogParams { container: Some("compile".into()), ..LogParams::default() })
        .await
        .unwrap();
    let job_state = support::eventually("the Job's completion condition", Duration::from_secs(30), || {
        let jobs = jobs.clone();
        let job = job.clone();
        async move {
            let status = jobs.get(&job).await.ok()?.status?;
            status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
                .map(|c| c.type_)
        }
    })
    .await;
    assert_eq!(
        job_state == "Complete",
        status.phase.as_deref() == Some("Succeeded"),
        "the Job is {job_state}, its pod {:?}",
        status.phase
    );
    let finished = Finished {
        succeeded: job_state == "Complete",
        log,
        termination_message: terminated.message.unwrap_or_default(),
        elapsed,
    };
    println!(
        "compile Job {namespace}/{job}: {job_state} {:.1}s after it was created (pod {pod_name})",
        finished.elapsed.as_secs_f64()
    );
    (finished, definition)
}

#[tokio::test]
async fn the_example_pipeline_compiles_in_a_job_on_the_node() {
    let client = support::client().await;
    let namespace = support::namespace(&client, "compile-job").await;
    let (finished, definition) =
        compile(&client, &namespace, "penguin-kfp-v2", "penguin_training.pipeline").await;
    assert!(finished.succeeded, "the compile Job failed: {}\n{}", finished.termination_message, finished.log);
    assert!(finished.log.contains("compiling "), "the compiler's output is on the log: {}", finished.log);
    let compiled = read_output(&finished.log, &finished.termination_message, 4 << 20)
        .unwrap_or_else(|e| panic!("{e}; termination message {:?}", finished.termination_message));
    let summary = support::kfp_sdk_summary(&compiled);
    assert_eq!(summary["name"], format!("{namespace}-penguin-kfp-v2"), "{summary:#}");
    assert_eq!(summary["schemaVersion"], "2.1.0", "{summary:#}");
    assert!(summary["sdkVersion"].as_str().unwrap().starts_with("kfp-2.17."), "{summary:#}");
    assert_eq!(summary["parameters"], json!(["epochs", "rows"]), "{summary:#}");
    let tasks = summary["tasks"].as_object().unwrap();
    assert_eq!(tasks.keys().collect::<Vec<_>>(), ["prepare-data", "train"], "{summary:#}");
    assert_eq!(tasks["train"]["outputArtifacts"], json!({"model": "system.Model"}), "{summary:#}");
    assert_eq!(tasks["prepare-data"]["outputArtifacts"], json!({"dataset": "system.Dataset"}), "{summary:#}");
    for task in tasks.values() {
        assert_eq!(task["caching"], false, "execution caching is off by default: {summary:#}");
    }
    assert_eq!(
        summary["images"],
        json!([definition["image"]]),
        "the components run in the Pipeline's image: {summary:#}"
    );
}

#[tokio::test]
async fn a_pipeline_that_raises_fails_its_job_with_the_exception_in_the_termination_message() {
    let client = support::client().await;
    let namespace = support::namespace(&client, "compile-job-broken").await;
    let (finished, _) = compile(&client, &namespace, "broken", "broken_pipeline.pipeline").await;
    assert!(!finished.succeeded, "the broken pipeline compiled: {}", finished.log);
    let message = &finished.termination_message;
    assert!(message.starts_with("the compiler exited with status 1: "), "{message}");
    assert!(
        message.contains("Traceback") || message.contains("File \""),
        "the traceback's last lines: {message}"
    );
    assert!(
        message.trim_end().ends_with(
            "RuntimeError: the broken pipeline cannot be compiled: no training data is configured"
        ),
        "{message}"
    );
    assert!(
        matches!(read_output(&finished.log, message, 4 << 20), Err(CompileOutputError::NotFramed)),
        "a failed compile has no output"
    );
}
