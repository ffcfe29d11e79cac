//! The Pipeline controller: a synced kind whose new versions are compiled before they reach the
//! provider. For a version whose framework has a compiler image, one Job in the Pipeline's
//! namespace compiles it ([`crate::provider::compile`]); meanwhile the Pipeline shows
//! `Creating`/`Updating` with what the compile waits for, woken by its Job and the Job's pod.
//! The compiled pipeline then goes to the provider with the definition, as
//! `{"pipelineDefinition", "compiledPipeline"}`. A failed compile fails the Pipeline until its
//! version or the retry annotation changes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{Value, json};

use super::state::{Desired, Plan};
use super::sync::{self, Step, Synced};
use super::{Context, Error, ErrorClass, Failure};
use crate::api::{Pipeline, Provider};
use crate::config::CompileConfig;
use crate::crds::FIELD_MANAGER;
use crate::provider::compile::{self, CompileRequest, Progress};

/// Changing this annotation's value compiles the current version again (and retries a stalled
/// Pipeline, as any annotation change does).
pub const RETRY_ANNOTATION: &str = "pipelines.kubeflow.org/retry";
/// How soon a compile waiting for a free slot looks again.
const QUEUED_RECHECK: Duration = Duration::from_secs(3);

/// The Pipeline controller's context: the shared one and the compile Jobs it watches.
pub struct PipelineContext {
    ctx: Arc<Context>,
    jobs: Store<Job>,
    /// Compile Jobs created but maybe not yet in `jobs`, so that the limit holds between a
    /// create and its watch event.
    started: DashMap<String, Instant>,
    /// Serialises counting the running compiles with starting one.
    starting: tokio::sync::Mutex<()>,
}

impl AsRef<Context> for PipelineContext {
    fn as_ref(&self) -> &Context {
        &self.ctx
    }
}

/// The compiler image of the Pipeline's framework on `provider`: the Provider's, else the
/// configured default; `None` when the framework is not compiled (compiling is off, or the
/// Provider's framework image is `none`). Pure.
pub fn compiler_image(
    config: &CompileConfig,
    provider: &Provider,
    pipeline: &Pipeline,
) -> Result<Option<String>, Failure> {
    if !config.enabled {
        return Ok(None);
    }
    let Some(framework) = provider.spec.framework(&pipeline.spec.framework.name) else {
        return Ok(None);
    };
    match framework.image.as_str() {
        "none" => Ok(None),
        "" => config.framework_images.get(&framework.name).cloned().map(Some).ok_or_else(|| {
            Failure::new(
                ErrorClass::Waiting,
                "NoCompilerImage",
                format!(
                    "framework {} of provider {}/{} names no compiler image, and compile.frameworkImages has \
                     none for it; set spec.frameworks[].image on the Provider (or `none` to send it uncompiled)",
                    framework.name,
                    provider.namespace().unwrap_or_default(),
                    provider.name_any()
                ),
            )
        }),
        image => Ok(Some(image.to_owned())),
    }
}

/// What the compile of the version being synchronised asks for next. Pure.
#[derive(Debug, Clone, PartialEq)]
pub enum CompileStep {
    /// No Job yet and a slot is free: start one.
    Start,
    /// No Job yet and every slot is taken.
    Queue { running: usize },
    /// The Job runs; with what it waits for, if anything.
    Wait(Option<String>),
    /// The compiler finished: read its output from `pod`.
    Read { pod: String, termination_message: String },
    /// It will not succeed: stop the running Job and fail.
    Stop(Failure),
    /// It failed.
    Fail(Failure),
    /// Its output is gone: delete the Job and compile again.
    Restart,
}

/// The next compile step from the Job found (`None`: none), its pod, and how many compiles run.
pub fn plan_compile(job: Option<&Job>, pod: Option<&Pod>, running: usize, limit: usize) -> CompileStep {
    let Some(job) = job else {
        return if running >= limit { CompileStep::Queue { running } } else { CompileStep::Start };
    };
    let failure = |reason: &'static str, message: String| Failure::new(ErrorClass::Stalled, reason, message);
    match compile::progress(job, pod) {
        Progress::Running(waits_for) => CompileStep::Wait(waits_for),
        Progress::Succeeded { pod, termination_message } => CompileStep::Read { pod, termination_message },
        Progress::Failed { reason, message, stop: true } => CompileStep::Stop(failure(reason, message)),
        Progress::Failed { reason, message, stop: false } => CompileStep::Fail(failure(reason, message)),
        Progress::Lost => CompileStep::Restart,
    }
}

/// How the compile stage ends for one reconcile.
enum Compiled {
    /// The compiled pipeline.
    Output(Value),
    /// Not yet: the Pipeline shows `message` and looks again after `recheck` (or when its Job
    /// or pod changes).
    Pending {
        message: String,
        recheck: Duration,
    },
    Failed(Failure),
}

impl PipelineContext {
    fn running_compiles(&self) -> usize {
        let in_store: std::collections::HashSet<String> = self
            .jobs
            .state()
            .iter()
            .filter(|job| compile::is_active(job))
            .map(|job| format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any()))
            .collect();
        self.started.retain(|name, at| !in_store.contains(name) && at.elapsed() < Duration::from_secs(30));
        in_store.len() + self.started.len()
    }

    async fn compile(&self, pipeline: &Pipeline, request: &CompileRequest) -> Result<Compiled, Error> {
        let ctx = &self.ctx;
        let config = &ctx.config.compile;
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &request.namespace);
        let name = request.name();
        let job = jobs.get_opt(&name).await?;
        let pod = match &job {
            Some(job) => self.pod_of(job).await?,
            None => None,
        };
        let shown = format!("{}/{name}", request.namespace);
        let compiling = format!("compiling version {} in Job {shown}", request.version);
        let step = match &job {
            Some(_) => plan_compile(job.as_ref(), pod.as_ref(), 0, usize::MAX),
            None => {
                let _guard = self.starting.lock().await;
                let step = plan_compile(None, None, self.running_compiles(), config.max_concurrent);
                if step == CompileStep::Start {
                    self.start(request).await?;
                }
                step
            }
        };
        Ok(match step {
            CompileStep::Start => {
                let note = format!(
                    "{compiling} (framework {}, compiler image {}, pipeline image {})",
                    pipeline.spec.framework.name, request.framework_image, request.pipeline_image
                );
                ctx.event(pipeline, false, "Compiling", note).await;
                Compiled::Pending { message: compiling, recheck: ctx.config.retry_max_delay }
            }
            CompileStep::Queue { running } => Compiled::Pending {
                message: format!(
                    "waiting to compile version {}: {running} of {} compile Jobs are running",
                    request.version, config.max_concurrent
                ),
                recheck: QUEUED_RECHECK,
            },
            CompileStep::Wait(waits_for) => {
                if pod
                    .as_ref()
                    .is_none_or(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending"))
                {
                    self.ensure_config_map(request, job.as_ref()).await?;
                }
                let message = match waits_for {
                    Some(detail) => format!("{compiling}; {detail}"),
                    None => compiling,
                };
                Compiled::Pending { message, recheck: ctx.config.retry_max_delay }
            }
            CompileStep::Read { pod, termination_message } => {
                match self.read(&request.namespace, &pod, &termination_message).await? {
                    Ok(output) => {
                        let size = serde_json::to_string(&output).map_or(0, |s| s.len());
                        let note =
                            format!("compiled version {} in Job {shown} ({size} bytes)", request.version);
                        ctx.event(pipeline, false, "Compiled", note).await;
                        Compiled::Output(output)
                    }
                    Err(error) => Compiled::Failed(Failure::new(
                        ErrorClass::Stalled,
                        "CompileOutputInvalid",
                        format!("the output of Job {shown} cannot be used: {error}"),
                    )),
                }
            }
            CompileStep::Stop(failure) => {
                self.stop(&jobs, &name, &failure).await?;
                Compiled::Failed(failure)
            }
            CompileStep::Fail(failure) => Compiled::Failed(failure),
            CompileStep::Restart => {
                tracing::info!(job = %shown, "the compile pod is gone before its output was read; compiling again");
                let background = DeleteParams::background();
                match jobs.delete(&name, &background).await {
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Ok(_) => {}
                    Err(error) => return Err(error.into()),
                }
                Compiled::Pending { message: compiling, recheck: Duration::from_secs(2) }
            }
        })
    }

    /// Creates the Job, then its ConfigMap owned by it (so the Job's TTL removes both).
    async fn start(&self, request: &CompileRequest) -> Result<(), Error> {
        let jobs: Api<Job> = Api::namespaced(self.ctx.client.clone(), &request.namespace);
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        let job = match jobs.create(&params, &request.job()).await {
            Ok(job) => job,
            Err(kube::Error::Api(status)) if status.code == 409 => jobs.get(&request.name()).await?,
            Err(error) => return Err(error.into()),
        };
        self.started.insert(format!("{}/{}", request.namespace, request.name()), Instant::now());
        self.ensure_config_map(request, Some(&job)).await
    }

    async fn ensure_config_map(&self, request: &CompileRequest, job: Option<&Job>) -> Result<(), Error> {
        let mut config_map =
            request.config_map().map_err(|e| Error::Invalid(format!("the compile ConfigMap: {e}")))?;
        if let Some(uid) = job.and_then(|j| j.metadata.uid.clone()) {
            config_map.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: request.name(),
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]);
        }
        let config_maps: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &request.namespace);
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        match config_maps.create(&params, &config_map).await {
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Ok(_) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// The Job's pod, the newest if there are several.
    async fn pod_of(&self, job: &Job) -> Result<Option<Pod>, Error> {
        let Some(uid) = job.metadata.uid.as_deref() else { return Ok(None) };
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &job.namespace().unwrap_or_default());
        let found = pods.list(&ListParams::default().labels(&format!("controller-uid={uid}"))).await?;
        Ok(found.items.into_iter().max_by_key(|pod| pod.metadata.creation_timestamp.clone().map(|t| t.0)))
    }

    /// The compiled pipeline from the pod's log, checked against its termination message.
    async fn read(
        &self,
        namespace: &str,
        pod: &str,
        termination_message: &str,
    ) -> Result<Result<Value, compile::CompileOutputError>, Error> {
        let limit = self.ctx.config.compile.output_limit;
        let lines = limit.div_ceil(57).saturating_add(64);
        let params = LogParams {
            container: Some(compile::COMPILE_CONTAINER.into()),
            tail_lines: Some(i64::try_from(lines).unwrap_or(i64::MAX)),
            ..LogParams::default()
        };
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), namespace);
        let log = pods.logs(pod, &params).await?;
        Ok(compile::read_output(&log, termination_message, limit))
    }

    /// Ends a compile that cannot succeed: the reason on the Job, and a deadline already past,
    /// so the Job controller stops its pod and the Job records the failure.
    async fn stop(&self, jobs: &Api<Job>, name: &str, failure: &Failure) -> Result<(), Error> {
        let patch = json!({
            "metadata": {"annotations": {
                compile::STOPPED_ANNOTATION: format!("{}: {}", failure.category, failure.message),
            }},
            "spec": {"activeDeadlineSeconds": 1},
        });
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        jobs.patch(name, &params, &Patch::Merge(patch)).await?;
        Ok(())
    }
}

/// The compile request for the version `desired` of `pipeline`.
fn compile_request(
    config: &CompileConfig,
    pipeline: &Pipeline,
    desired: &Desired,
    framework_image: String,
    definition: &Value,
) -> CompileRequest {
    CompileRequest {
        namespace: pipeline.namespace().unwrap_or_default(),
        pipeline: pipeline.name_any(),
        pipeline_uid: pipeline.metadata.uid.clone().unwrap_or_default(),
        version: desired.version.clone(),
        attempt: pipeline.annotations().get(RETRY_ANNOTATION).cloned().unwrap_or_default(),
        pipeline_image: pipeline.spec.image.clone(),
        framework_image,
        definition: definition["pipelineDefinition"].clone(),
        deadline: config.deadline,
        ttl: config.ttl,
        image_pull_policy: config.image_pull_policy.clone(),
    }
}

async fn reconcile(pipeline: Arc<Pipeline>, pctx: Arc<PipelineContext>) -> Result<Action, Error> {
    let ctx = pctx.ctx.as_ref();
    let Some(pipeline) = ctx.latest(pipeline.as_ref()).await? else { return Ok(Action::await_change()) };
    let provider = sync::observe_provider(ctx, &pipeline).await?;
    let step = match (sync::plan_sync(&pipeline, provider.as_ref(), None), provider.as_ref()) {
        (
            Step::Sync {
                plan: plan @ (Plan::Create | Plan::Update { .. }),
                desired,
                definition: Some(definition),
            },
            Some(provider),
        ) => match compiler_image(&ctx.config.compile, provider, &pipeline) {
            Ok(None) => Step::Sync { plan, desired, definition: Some(definition) },
            Err(failure) => Step::Sync { plan: Plan::Refuse(failure), desired, definition: None },
            Ok(Some(image)) => {
                let request = compile_request(&ctx.config.compile, &pipeline, &desired, image, &definition);
                match pctx.compile(&pipeline, &request).await? {
                    Compiled::Output(output) => {
                        let mut definition = definition;
                        definition["compiledPipeline"] = output;
                        Step::Sync { plan, desired, definition: Some(definition) }
                    }
                    Compiled::Failed(failure) => {
                        Step::Sync { plan: Plan::Refuse(failure), desired, definition: None }
                    }
                    Compiled::Pending { message, recheck } => {
                        sync::show_progress(ctx, &pipeline, &plan, &desired, &message).await?;
                        return Ok(Action::requeue(recheck));
                    }
                }
            }
        },
        (step, _) => step,
    };
    sync::apply_step(ctx, &pipeline, provider.as_ref(), step).await
}

/// The Pipeline a compile Job belongs to.
fn owner_of(job: &Job) -> Option<ObjectRef<Pipeline>> {
    let owner = job.owner_references().iter().find(|o| o.kind == "Pipeline" && o.controller == Some(true))?;
    Some(ObjectRef::new(&owner.name).within(&job.namespace().unwrap_or_default()))
}

/// Runs the Pipeline controller over the objects of `feed`, woken also by the Providers they
/// wait for and by changes of their compile Jobs and pods (not by their removal: a failed
/// compile's Job expiring after `compile.ttl` does not start another).
pub async fn run_controller(
    ctx: Arc<Context>,
    feed: super::Feed<Pipeline>,
    providers: super::Feed<Provider>,
    shutdown: crate::shutdown::Shutdown,
) {
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    let compiles = super::watcher_config().labels(compile::PIPELINE_LABEL);
    let [jobs] = super::plain_feeds::<Job, 1>(&ctx, compiles.clone(), "compile Jobs");
    let [pods] = super::plain_feeds::<Pod, 1>(&ctx, compiles, "compile pods");
    let (job_store, job_writer) = kube::runtime::reflector::store();
    let job_changes = super::reflect(jobs, job_store.clone(), job_writer).applied_objects();
    let queue = ctx.metrics.queue(&super::controller_name::<Pipeline>());
    let controller =
        super::lean_controller(&ctx, feed, &queue, |pipeline: &Pipeline| pipeline.reconcile_trigger());
    let store = controller.store();
    let pod_jobs = job_store.clone();
    let controller = controller
        .watches_stream(
            super::changed(providers),
            super::waking(&queue, move |provider: Provider| sync::waiting_on(&store, &provider)),
        )
        .watches_stream(job_changes.boxed(), super::waking(&queue, |job: Job| owner_of(&job)))
        .watches_stream(
            super::applied(pods),
            super::waking(&queue, move |pod: Pod| {
                let job = pod.owner_references().iter().find(|o| o.kind == "Job")?;
                let job =
                    pod_jobs.get(&ObjectRef::new(&job.name).within(&pod.namespace().unwrap_or_default()))?;
                owner_of(&job)
            }),
        )
        .graceful_shutdown_on(shutdown);
    let pctx = Arc::new(PipelineContext {
        ctx: ctx.clone(),
        jobs: job_store,
        started: DashMap::new(),
        starting: tokio::sync::Mutex::new(()),
    });
    let reconciler = super::instrumented(queue.clone(), reconcile);
    super::drain(controller.run(reconciler, super::error_policy, pctx), queue).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Framework, NamespacedName, PipelineFramework, PipelineSpec, ProviderSpec};

    fn provider(image: &str) -> Provider {
        let mut provider = Provider::new(
            "kfp",
            ProviderSpec {
                frameworks: vec![Framework { name: "kfp-sdk".into(), image: image.into(), patches: vec![] }],
                ..ProviderSpec::default()
            },
        );
        provider.metadata.namespace = Some("ops".into());
        provider
    }

    fn pipeline(framework: &str) -> Pipeline {
        let mut pipeline = Pipeline::new(
            "p",
            PipelineSpec {
                provider: NamespacedName::new("ops", "kfp"),
                image: "pipeline:1".into(),
                framework: PipelineFramework::new(framework),
                ..PipelineSpec::default()
            },
        );
        pipeline.metadata.namespace = Some("ml".into());
        pipeline
    }

    fn job(conditions: Value) -> Job {
        serde_json::from_value(
            json!({"metadata": {"name": "p-compile-1"}, "status": {"conditions": conditions}}),
        )
        .unwrap()
    }

    #[test]
    fn the_compiler_is_the_providers_then_the_default_and_none_means_uncompiled() {
        let config = CompileConfig::default();
        let own = compiler_image(&config, &provider("my/compiler:2"), &pipeline("kfp-sdk")).unwrap();
        assert_eq!(own.as_deref(), Some("my/compiler:2"));
        let default = compiler_image(&config, &provider(""), &pipeline("kfp-sdk")).unwrap();
        assert_eq!(default, config.framework_images.get("kfp-sdk").cloned());
        assert_eq!(compiler_image(&config, &provider("none"), &pipeline("kfp-sdk")).unwrap(), None);
        let off = CompileConfig { enabled: false, ..CompileConfig::default() };
        assert_eq!(compiler_image(&off, &provider("my/compiler:2"), &pipeline("kfp-sdk")).unwrap(), None);
        let bare = CompileConfig { framework_images: Default::default(), ..CompileConfig::default() };
        let missing = compiler_image(&bare, &provider(""), &pipeline("kfp-sdk")).unwrap_err();
        assert_eq!((missing.class, missing.category), (ErrorClass::Waiting, "NoCompilerImage"));
        assert!(missing.message.contains("spec.frameworks[].image"), "{}", missing.message);
    }

    #[test]
    fn a_compile_starts_when_a_slot_is_free_and_queues_otherwise() {
        assert_eq!(plan_compile(None, None, 3, 4), CompileStep::Start);
        assert_eq!(plan_compile(None, None, 4, 4), CompileStep::Queue { running: 4 });
        assert_eq!(
            plan_compile(Some(&job(json!([]))), None, 9, 4),
            CompileStep::Wait(None),
            "its own Job runs"
        );
    }

    #[test]
    fn a_finished_compile_is_read_a_failed_one_stalls_and_a_lost_one_starts_over() {
        let complete = job(json!([{"type": "Complete", "status": "True"}]));
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p-compile-1-abcde"},
            "status": {"phase": "Succeeded", "containerStatuses": [{
                "name": "compile", "image": "pipeline:1", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "message": "{\"sha256\": \"x\", \"size\": 1}"}},
            }]},
        }))
        .unwrap();
        assert_eq!(
            plan_compile(Some(&complete), Some(&pod), 0, 1),
            CompileStep::Read {
                pod: "p-compile-1-abcde".into(),
                termination_message: "{\"sha256\": \"x\", \"size\": 1}".into()
            }
        );
        assert_eq!(plan_compile(Some(&complete), None, 0, 1), CompileStep::Restart);
        let deadline = job(json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]));
        let CompileStep::Fail(failure) = plan_compile(Some(&deadline), None, 0, 1) else { panic!() };
        assert_eq!((failure.class, failure.category), (ErrorClass::Stalled, "CompileDeadlineExceeded"));
    }
}
