//! `kfp-operator bench compile`: a Pipeline created until it is `Synchronized` through a real
//! compile Job on a node, against the raw limit measured in the same run: a bare pod of the same
//! containers, images and definition (the same compile command in the same image on the same
//! node), created directly and timed until it has succeeded. JSON lines on stdout.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::json;

use crate::api::conditions::SyncState;
use crate::api::{
    Framework, NamespacedName, Pipeline, PipelineFramework, PipelineSpec, Provider, ProviderSpec,
    ProviderType,
};
use crate::provider::compile::CompileRequest;

/// Options of `kfp-operator bench compile`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompileBenchArgs {
    /// The framework's compiler image (imported on the node).
    #[arg(long)]
    pub framework_image: String,
    /// The pipeline image that runs the compiler.
    #[arg(long)]
    pub pipeline_image: String,
    /// The pipeline function, `module.function`, importable in the pipeline image.
    #[arg(long, default_value = "penguin_training.pipeline")]
    pub pipeline: String,
    /// Measurements of each kind.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// How long one measurement may take.
    #[arg(long, default_value = "180s", value_parser = crate::api::duration::parse)]
    pub timeout: Duration,
}

const NAMESPACE: &str = "bench-compile";

fn provider(args: &CompileBenchArgs) -> Provider {
    let mut provider = Provider::new(
        "stub",
        ProviderSpec {
            provider_type: ProviderType::Stub,
            service_image: "none".into(),
            service_account: "default".into(),
            pipeline_root_storage: "memory://root".into(),
            frameworks: vec![Framework {
                name: "kfp-sdk".into(),
                image: args.framework_image.clone(),
                patches: vec![],
            }],
            ..ProviderSpec::default()
        },
    );
    provider.metadata.namespace = Some(NAMESPACE.into());
    provider
}

fn pipeline(args: &CompileBenchArgs, name: &str) -> Pipeline {
    let mut pipeline = Pipeline::new(
        name,
        PipelineSpec {
            provider: NamespacedName::new(NAMESPACE, "stub"),
            image: args.pipeline_image.clone(),
            env: vec![],
            framework: PipelineFramework::new("kfp-sdk").with_parameter("pipeline", json!(args.pipeline)),
        },
    );
    pipeline.metadata.namespace = Some(NAMESPACE.into());
    pipeline
}

/// Polls `check` every 50 ms until it gives a value, for at most `timeout`.
async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "{what} did not happen within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bare compile pod of run `i`: the compile Job's pod, created directly.
async fn raw_compile(client: &kube::Client, args: &CompileBenchArgs, i: usize) -> anyhow::Result<Duration> {
    let name = format!("raw-{i}");
    let definition = crate::provider::definitions::pipeline(&pipeline(args, &name), &provider(args))?;
    let request = CompileRequest {
        namespace: NAMESPACE.into(),
        pipeline: name.clone(),
        pipeline_uid: String::new(),
        version: definition["pipelineDefinition"]["version"].as_str().unwrap_or_default().to_owned(),
        attempt: String::new(),
        pipeline_image: args.pipeline_image.clone(),
        framework_image: args.framework_image.clone(),
        definition: definition["pipelineDefinition"].clone(),
        deadline: args.timeout,
        ttl: Duration::from_secs(600),
        image_pull_policy: "Never".into(),
    };
    let mut config_map = request.config_map()?;
    config_map.metadata.owner_references = None;
    let template = request.job().spec.map(|s| s.template).unwrap_or_default();
    let pod = Pod {
        metadata: ObjectMeta { name: Some(request.name()), ..template.metadata.unwrap_or_default() },
        spec: template.spec,
        status: None,
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let started = Instant::now();
    config_maps.create(&PostParams::default(), &config_map).await?;
    pods.create(&PostParams::default(), &pod).await?;
    poll("the bare compile pod", args.timeout, || {
        let pods = pods.clone();
        let name = request.name();
        async move {
            let phase = pods.get(&name).await?.status.and_then(|s| s.phase).unwrap_or_default();
            anyhow::ensure!(phase != "Failed", "the bare compile pod {name} failed");
            Ok((phase == "Succeeded").then(|| started.elapsed()))
        }
    })
    .await
}

async fn operator_compile(
    client: &kube::Client,
    args: &CompileBenchArgs,
    i: usize,
) -> anyhow::Result<Duration> {
    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), NAMESPACE);
    let name = format!("operator-{i}");
    let started = Instant::now();
    pipelines.create(&PostParams::default(), &pipeline(args, &name)).await?;
    poll("the compiled Pipeline", args.timeout, || {
        let pipelines = pipelines.clone();
        let name = name.clone();
        async move {
            let status = pipelines.get(&name).await?.status.unwrap_or_default();
            let state = SyncState::of(&status);
            anyhow::ensure!(
                state != SyncState::Failed,
                "Pipeline {name} failed: {}",
                crate::api::conditions::synchronized_message(&status)
            );
            Ok((state == SyncState::Succeeded).then(|| started.elapsed()))
        }
    })
    .await
}

fn seconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Runs the compile benchmark against the cluster of the current kubeconfig, which must have a
/// Ready node with both images.
pub async fn run(args: CompileBenchArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    crate::crds::install(&client, Duration::from_secs(60), None).await?;
    super::bench::fresh_namespace(&client, NAMESPACE).await?;
    let providers: Api<Provider> = Api::namespaced(client.clone(), NAMESPACE);
    providers.create(&PostParams::default(), &provider(&args)).await?;
    let mut config = crate::config::OperatorConfig {
        namespaces: vec![NAMESPACE.into()],
        retry_max_delay: Duration::from_secs(5),
        ..Default::default()
    };
    config.compile.image_pull_policy = "Never".into();
    let registry = crate::controller::ProviderRegistry::new(config.provider_defaults.clone(), None);
    let ctx = crate::controller::Context::new(client.clone(), config, registry, Default::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = crate::shutdown::shutdown_signal(async move {
        let _ = stopped.await;
    });
    let controllers = tokio::spawn(crate::controller::run(ctx, shutdown));
    let mut raw = Vec::new();
    let mut operator = Vec::new();
    let measured = async {
        for i in 0..args.runs {
            raw.push(raw_compile(&client, &args, i).await?);
            operator.push(operator_compile(&client, &args, i).await?);
        }
        anyhow::Ok(())
    }
    .await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), controllers).await;
    measured?;
    raw.sort();
    operator.sort();
    let (raw_p50, operator_p50) = (raw[raw.len() / 2], operator[operator.len() / 2]);
    let (raw_max, operator_max) = (raw[raw.len() - 1], operator[operator.len() - 1]);
    let result = json!({
        "benchmark": "compile",
        "runs": args.runs,
        "operator_p50_s": seconds(operator_p50),
        "operator_max_s": seconds(operator_max),
        "raw_pod_p50_s": seconds(raw_p50),
        "raw_pod_max_s": seconds(raw_max),
        "ratio_p50": (operator_p50.as_secs_f64() / raw_p50.as_secs_f64() * 100.0).round() / 100.0,
        "overhead_p50_s": seconds(operator_p50.saturating_sub(raw_p50)),
    });
    writeln!(out, "{result}")?;
    Ok(())
}
