//! The compile step of a Pipeline version as a plain Kubernetes Job: its deterministic name, its
//! objects (a ConfigMap with the patched definition and the runner, the Job), and reading the
//! compiled pipeline back from the pod's log, checked against the size and sha256 in the pod's
//! termination message. The pod needs no access to the API: it prints, the operator reads
//! `pods/log`. Pure.
//!
//! In the pod, an init container from the framework's image copies its compiler into `/shared`
//! (the image's entrypoint takes the directory, as the reference's framework images do); the
//! Pipeline's image then runs the runner (Python 3, standard library), which runs
//! `/shared/compile.sh --output_file F --pipeline_config /kfp-operator/definition.json`.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerStateTerminated, ContainerStatus,
    EmptyDirVolumeSource, EnvVar, Pod, PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The runner the Pipeline's image runs.
pub const RUNNER: &str = include_str!("compile_runner.py");
/// The line before the compiled pipeline (base64) on the log.
pub const BEGIN: &str = "==== kfp-operator compiled pipeline begin ====";
/// The line after it.
pub const END: &str = "==== kfp-operator compiled pipeline end ====";
/// The label naming the Pipeline a compile Job belongs to.
pub const PIPELINE_LABEL: &str = "pipelines.kubeflow.org/pipeline.name";
/// The label naming the Pipeline version a compile Job compiles.
pub const VERSION_LABEL: &str = "pipelines.kubeflow.org/pipeline.version";
/// The user the compile pod runs as.
const COMPILE_USER: i64 = 65532;

/// One compile of one Pipeline version.
#[derive(Debug, Clone, PartialEq)]
pub struct CompileRequest {
    pub namespace: String,
    pub pipeline: String,
    /// The Pipeline's uid, for the owner reference.
    pub pipeline_uid: String,
    pub version: String,
    /// Starts a new compile of the same version when it changes (the retry annotation).
    pub attempt: String,
    /// The Pipeline's image, which runs the compiler.
    pub pipeline_image: String,
    /// The framework's image, which brings the compiler.
    pub framework_image: String,
    /// The pipeline definition with the framework's patches applied.
    pub definition: Value,
    /// How long the compile may take (`activeDeadlineSeconds`).
    pub deadline: Duration,
    /// How long a finished Job stays (`ttlSecondsAfterFinished`).
    pub ttl: Duration,
    /// The containers' `imagePullPolicy`.
    pub image_pull_policy: String,
}

/// The name of the Job (and its ConfigMap) compiling `version` of `pipeline` at `attempt`: the
/// same for the same version and attempt, so that a restarted operator finds the Job it
/// started. At most 63 characters.
pub fn job_name(pipeline: &str, version: &str, attempt: &str) -> String {
    let digest = Sha256::new()
        .chain_update(pipeline)
        .chain_update([0])
        .chain_update(version)
        .chain_update([0])
        .chain_update(attempt)
        .finalize();
    let suffix = format!("-compile-{}", hex::encode(&digest[..5]));
    let room = 63 - suffix.len();
    let prefix: String = pipeline.chars().take(room).collect();
    format!("{}{suffix}", prefix.trim_end_matches(['-', '.']))
}

impl CompileRequest {
    /// The name of the Job and its ConfigMap.
    pub fn name(&self) -> String {
        job_name(&self.pipeline, &self.version, &self.attempt)
    }

    fn metadata(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.name()),
            namespace: Some(self.namespace.clone()),
            labels: Some(BTreeMap::from([
                (PIPELINE_LABEL.to_owned(), label_value(&self.pipeline)),
                (VERSION_LABEL.to_owned(), label_value(&self.version)),
            ])),
            owner_references: Some(vec![OwnerReference {
                api_version: format!("{}/{}", crate::api::GROUP, crate::api::VERSION),
                kind: "Pipeline".into(),
                name: self.pipeline.clone(),
                uid: self.pipeline_uid.clone(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        }
    }

    /// The ConfigMap holding the definition and the runner, mounted at `/kfp-operator`.
    pub fn config_map(&self) -> Result<ConfigMap, serde_json::Error> {
        Ok(ConfigMap {
            metadata: self.metadata(),
            data: Some(BTreeMap::from([
                ("definition.json".to_owned(), serde_json::to_string_pretty(&self.definition)?),
                ("run.py".to_owned(), RUNNER.to_owned()),
            ])),
            ..ConfigMap::default()
        })
    }

    /// The Job: one pod, no retries, a deadline, a TTL, no ServiceAccount token, non-root on a
    /// read-only root filesystem.
    pub fn job(&self) -> Job {
        let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
            name: name.to_owned(),
            mount_path: path.to_owned(),
            read_only: Some(read_only),
            ..VolumeMount::default()
        };
        let empty_dir = |name: &str| Volume {
            name: name.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        };
        let security = SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
            ..SecurityContext::default()
        };
        let name = self.name();
        let compiler = Container {
            name: FRAMEWORK_CONTAINER.into(),
            image: Some(self.framework_image.clone()),
            image_pull_policy: Some(self.image_pull_policy.clone()),
            args: Some(vec!["/shared".into()]),
            volume_mounts: Some(vec![mount("shared", "/shared", false)]),
            security_context: Some(security.clone()),
            ..Container::default()
        };
        let compile = Container {
            name: COMPILE_CONTAINER.into(),
            image: Some(self.pipeline_image.clone()),
            image_pull_policy: Some(self.image_pull_policy.clone()),
            command: Some(vec!["python3".into(), "/kfp-operator/run.py".into()]),
            volume_mounts: Some(vec![
                mount("shared", "/shared", true),
                mount("definition", "/kfp-operator", true),
                mount("tmp", "/tmp", false),
            ]),
            termination_message_policy: Some("File".into()),
            env: Some(vec![EnvVar { name: "HOME".into(), value: Some("/tmp".into()), ..EnvVar::default() }]),
            security_context: Some(security),
            ..Container::default()
        };
        let pod = PodSpec {
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(COMPILE_USER),
                run_as_group: Some(COMPILE_USER),
                fs_group: Some(COMPILE_USER),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            init_containers: Some(vec![compiler]),
            containers: vec![compile],
            volumes: Some(vec![
                empty_dir("shared"),
                empty_dir("tmp"),
                Volume {
                    name: "definition".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: name.clone(),
                        ..ConfigMapVolumeSource::default()
                    }),
                    ..Volume::default()
                },
            ]),
            ..PodSpec::default()
        };
        let seconds = |duration: Duration| i64::try_from(duration.as_secs()).unwrap_or(i64::MAX).max(1);
        Job {
            metadata: self.metadata(),
            spec: Some(JobSpec {
                backoff_limit: Some(0),
                active_deadline_seconds: Some(seconds(self.deadline)),
                ttl_seconds_after_finished: Some(i32::try_from(seconds(self.ttl)).unwrap_or(i32::MAX)),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta { labels: self.metadata().labels, ..ObjectMeta::default() }),
                    spec: Some(pod),
                },
                ..JobSpec::default()
            }),
            status: None,
        }
    }
}

/// A label value: at most 63 characters of the allowed ones, starting and ending alphanumeric.
fn label_value(text: &str) -> String {
    let kept: String = text
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .take(63)
        .collect();
    kept.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned()
}

/// Annotation on a compile Job the operator stopped: why, as `reason: message`.
pub const STOPPED_ANNOTATION: &str = "pipelines.kubeflow.org/compile-stopped";
/// The container that runs the compiler; its log and termination message hold the output.
pub const COMPILE_CONTAINER: &str = "compile";
/// The init container that brings the compiler.
pub const FRAMEWORK_CONTAINER: &str = "framework";

/// Waiting reasons of a container that will not start without a change (an image that cannot be
/// pulled, a spec the runtime refuses): the compile is stopped at once rather than at its deadline.
const CANNOT_START: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "ImageInspectError",
    "RegistryUnavailable",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Where one compile stands, read from its Job and the Job's pod. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Still going; with what it waits for, if it waits for more than its own work.
    Running(Option<String>),
    /// The compiler finished: the pod to read the output from, and its termination message.
    Succeeded { pod: String, termination_message: String },
    /// It failed, with a stable reason and a message that says why. `stop`: the Job is still
    /// active and will not succeed, so it should be stopped now.
    Failed { reason: &'static str, message: String, stop: bool },
    /// The Job finished but its pod is gone, so its output cannot be read: compile again.
    Lost,
}

fn job_condition<'a>(job: &'a Job, type_: &str) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_ && c.status == "True")
}

/// Whether the Job has not finished yet.
pub fn is_active(job: &Job) -> bool {
    job_condition(job, "Complete").is_none() && job_condition(job, "Failed").is_none()
}

fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let status = pod.status.as_ref();
    let init = status.and_then(|s| s.init_container_statuses.as_deref()).unwrap_or_default();
    let main = status.and_then(|s| s.container_statuses.as_deref()).unwrap_or_default();
    init.iter().chain(main)
}

fn terminated<'a>(pod: &'a Pod, container: &str) -> Option<&'a ContainerStateTerminated> {
    statuses(pod).find(|s| s.name == container)?.state.as_ref()?.terminated.as_ref()
}

/// Why the pod's containers failed, if they did: the framework image's copy, or the compiler.
fn pod_failure(pod: &Pod) -> Option<(&'static str, String)> {
    if let Some(copy) = terminated(pod, FRAMEWORK_CONTAINER).filter(|t| t.exit_code != 0) {
        let said = copy.message.as_deref().or(copy.reason.as_deref()).unwrap_or_default();
        return Some((
            "CompilerImageFailed",
            format!(
                "the framework image could not install its compiler: exit status {}: {said}",
                copy.exit_code
            ),
        ));
    }
    let compile = terminated(pod, COMPILE_CONTAINER).filter(|t| t.exit_code != 0)?;
    let said = compile.message.as_deref().map(str::trim).filter(|m| !m.is_empty());
    Some((
        "CompileFailed",
        match said {
            Some(message) => message.to_owned(),
            None => format!(
                "the compiler exited with status {} ({})",
                compile.exit_code,
                compile.reason.as_deref().unwrap_or("no message")
            ),
        },
    ))
}

/// A container of the pod that waits for something that will not come: its image, named.
fn cannot_start(pod: &Pod) -> Option<String> {
    let images: BTreeMap<&str, &str> = pod
        .spec
        .iter()
        .flat_map(|spec| spec.init_containers.iter().flatten().chain(&spec.containers))
        .map(|c| (c.name.as_str(), c.image.as_deref().unwrap_or_default()))
        .collect();
    statuses(pod).find_map(|status| {
        let waiting = status.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref().filter(|r| CANNOT_START.contains(r))?;
        let image = images.get(status.name.as_str()).copied().unwrap_or(status.image.as_str());
        let detail = waiting.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
        Some(format!("container {} cannot start, image {image}: {reason}{detail}", status.name))
    })
}

/// A pod whose compiler finished: its name and the compile container's termination message.
fn succeeded(pod: &Pod) -> Progress {
    Progress::Succeeded {
        pod: pod.metadata.name.clone().unwrap_or_default(),
        termination_message: terminated(pod, COMPILE_CONTAINER)
            .and_then(|t| t.message.clone())
            .unwrap_or_default(),
    }
}

/// Where the compile of `job` stands, given its pod (`None`: none found).
pub fn progress(job: &Job, pod: Option<&Pod>) -> Progress {
    let name = job.metadata.name.clone().unwrap_or_default();
    if let Some(stopped) = job.metadata.annotations.as_ref().and_then(|a| a.get(STOPPED_ANNOTATION)) {
        let (reason, message) = stopped.split_once(": ").unwrap_or(("CompileFailed", stopped.as_str()));
        let reason = ["CompileImageUnavailable", "CompileOutputInvalid", "CompilerImageFailed"]
            .into_iter()
            .find(|known| *known == reason)
            .unwrap_or("CompileFailed");
        return Progress::Failed { reason, message: message.to_owned(), stop: false };
    }
    if job_condition(job, "Complete").is_some() {
        return pod.map_or(Progress::Lost, succeeded);
    }
    if let Some(failed) = job_condition(job, "Failed") {
        if failed.reason.as_deref() == Some("DeadlineExceeded") {
            let seconds = job.spec.as_ref().and_then(|s| s.active_deadline_seconds).unwrap_or_default();
            return Progress::Failed {
                reason: "CompileDeadlineExceeded",
                message: format!("the compile did not finish within its deadline of {seconds}s (Job {name})"),
                stop: false,
            };
        }
        let (reason, message) = pod.and_then(pod_failure).unwrap_or_else(|| {
            (
                "CompileFailed",
                format!("the compile Job {name} failed: {}", failed.message.clone().unwrap_or_default()),
            )
        });
        return Progress::Failed { reason, message, stop: false };
    }
    let Some(pod) = pod else {
        return Progress::Running(None);
    };
    if let Some((reason, message)) = pod_failure(pod) {
        return Progress::Failed { reason, message, stop: false };
    }
    if let Some(message) = cannot_start(pod) {
        return Progress::Failed { reason: "CompileImageUnavailable", message, stop: true };
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if phase == "Succeeded" {
        return succeeded(pod);
    }
    let unscheduled = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled" && c.status == "False"))
        .map(|c| c.message.clone().unwrap_or_default());
    Progress::Running(unscheduled.map(|message| {
        format!("pod {} waits for a node: {message}", pod.metadata.name.clone().unwrap_or_default())
    }))
}

/// Why the compiled pipeline could not be read from a finished compile pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileOutputError {
    #[error("the compile pod's log holds no compiled pipeline between its framing lines")]
    NotFramed,
    #[error("the compiled pipeline on the log is not valid base64: {0}")]
    NotBase64(String),
    #[error("the compile pod's termination message does not give the output's size and sha256: {0:?}")]
    NoChecksum(String),
    #[error("the compiled pipeline on the log is {got} bytes, the compiler wrote {expected}")]
    SizeMismatch { expected: u64, got: u64 },
    #[error("the compiled pipeline on the log does not match the sha256 the compiler wrote")]
    ChecksumMismatch,
    #[error("the compiled pipeline is {size} bytes, more than the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("the compiled pipeline is neither JSON nor YAML: {0}")]
    Unreadable(String),
}

#[derive(serde::Deserialize)]
struct Checksum {
    sha256: String,
    size: u64,
}

/// The compiled pipeline from a compile pod's `log` and `termination_message`: the last framed
/// block, decoded, checked, and parsed as JSON or YAML. A YAML stream of several documents (a
/// KFP PipelineSpec followed by its PlatformSpec) becomes `{pipelineSpec, platformSpec}`.
pub fn read_output(log: &str, termination_message: &str, limit: u64) -> Result<Value, CompileOutputError> {
    let lines: Vec<&str> = log.lines().map(str::trim_end).collect();
    let begin = lines.iter().rposition(|line| *line == BEGIN).ok_or(CompileOutputError::NotFramed)?;
    let end =
        lines[begin..].iter().position(|line| *line == END).ok_or(CompileOutputError::NotFramed)? + begin;
    let encoded: String = lines[begin + 1..end].concat();
    let checksum: Checksum = serde_json::from_str(termination_message.trim())
        .map_err(|_| CompileOutputError::NoChecksum(termination_message.chars().take(200).collect()))?;
    if checksum.size > limit {
        return Err(CompileOutputError::TooLarge { size: checksum.size, limit });
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_bytes())
        .map_err(|error| CompileOutputError::NotBase64(error.to_string()))?;
    let got = bytes.len() as u64;
    if got != checksum.size {
        return Err(CompileOutputError::SizeMismatch { expected: checksum.size, got });
    }
    if !hex::encode(Sha256::digest(&bytes)).eq_ignore_ascii_case(&checksum.sha256) {
        return Err(CompileOutputError::ChecksumMismatch);
    }
    let text = String::from_utf8(bytes).map_err(|error| CompileOutputError::Unreadable(error.to_string()))?;
    if let Ok(json) = serde_json::from_str::<Value>(&text) {
        return Ok(json);
    }
    let mut documents: Vec<Value> = serde_saphyr::from_multiple(&text)
        .map_err(|error| CompileOutputError::Unreadable(error.to_string()))?;
    documents.retain(|document| !document.is_null());
    match documents.len() {
        0 => Err(CompileOutputError::Unreadable("the output is empty".into())),
        1 => Ok(documents.remove(0)),
        2 => {
            let platform = documents.remove(1);
            Ok(serde_json::json!({ "pipelineSpec": documents.remove(0), "platformSpec": platform }))
        }
        n => Err(CompileOutputError::Unreadable(format!(
            "the output holds {n} YAML documents; at most 2 are expected"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request() -> CompileRequest {
        CompileRequest {
            namespace: "ml".into(),
            pipeline: "penguin".into(),
            pipeline_uid: "uid-1".into(),
            version: "v1-abcdef".into(),
            attempt: String::new(),
            pipeline_image: "penguin:1".into(),
            framework_image: "kfp-operator-kfp-sdk-compiler:1".into(),
            definition: json!({"name": "ml/penguin", "framework": {"name": "kfp-sdk"}}),
            deadline: Duration::from_secs(1800),
            ttl: Duration::from_secs(3600),
            image_pull_policy: "IfNotPresent".into(),
        }
    }

    /// What the runner prints for `output`, and its termination message.
    fn framed(output: &[u8]) -> (String, String) {
        let encoded = base64::engine::general_purpose::STANDARD.encode(output);
        let body: Vec<String> =
            encoded.as_bytes().chunks(76).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
        let log = format!("Compiling ml-penguin\nlog noise\n{BEGIN}\n{}\n{END}\n", body.join("\n"));
        let message =
            json!({"sha256": hex::encode(Sha256::digest(output)), "size": output.len()}).to_string();
        (log, message)
    }

    #[test]
    fn the_job_name_is_deterministic_short_and_distinct_per_version() {
        assert_eq!(job_name("penguin", "v1-abc", ""), job_name("penguin", "v1-abc", ""));
        assert_ne!(job_name("penguin", "v1-abc", ""), job_name("penguin", "v2-abc", ""));
        assert_ne!(job_name("penguin", "v1-abc", ""), job_name("penguin", "v1-abc", "1"), "a retry");
        let long = "p".repeat(253);
        assert!(job_name(&long, "v1", "").len() <= 63);
        assert!(job_name("penguin", "v1", "").starts_with("penguin-compile-"));
    }

    #[test]
    fn the_job_runs_once_bounded_unprivileged_and_without_an_api_token() {
        let job = request().job();
        let spec = job.spec.as_ref().unwrap();
        assert_eq!((spec.backoff_limit, spec.active_deadline_seconds), (Some(0), Some(1800)));
        assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.security_context.as_ref().unwrap().run_as_non_root, Some(true));
        let init = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.image.as_deref(), Some("kfp-operator-kfp-sdk-compiler:1"));
        assert_eq!(init.args, Some(vec!["/shared".to_owned()]));
        assert_eq!(pod.containers[0].image.as_deref(), Some("penguin:1"));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Pipeline", "uid-1", Some(true))
        );
        let config = request().config_map().unwrap();
        assert_eq!(config.metadata.name, job.metadata.name);
        let data = config.data.unwrap();
        assert_eq!(serde_json::from_str::<Value>(&data["definition.json"]).unwrap(), request().definition);
        assert!(data["run.py"].contains(BEGIN) && data["run.py"].contains(END));
    }

    #[test]
    fn the_output_is_read_back_and_checked() {
        let compiled =
            json!({"displayName": "ml-penguin", "labels": {}, "pipelineSpec": {"schemaVersion": "2.1.0"}});
        let (log, message) = framed(compiled.to_string().as_bytes());
        assert_eq!(read_output(&log, &message, 1 << 20), Ok(compiled.clone()));

        let tampered = log.replacen("\n", "\nx", 3);
        assert!(read_output(&tampered, &message, 1 << 20).is_err());
        let (_, other) = framed(b"{}");
        assert!(matches!(read_output(&log, &other, 1 << 20), Err(CompileOutputError::SizeMismatch { .. })));
        assert!(matches!(read_output(&log, &message, 10), Err(CompileOutputError::TooLarge { .. })));
        assert_eq!(read_output("no frames", &message, 1 << 20), Err(CompileOutputError::NotFramed));
        assert!(matches!(read_output(&log, "exit 1: boom", 1 << 20), Err(CompileOutputError::NoChecksum(_))));
    }

    #[test]
    fn yaml_output_with_a_platform_spec_is_read_as_both() {
        let yaml =
            b"pipelineInfo:\n  name: penguin\nschemaVersion: 2.1.0\n---\nplatforms:\n  kubernetes: {}\n";
        let (log, message) = framed(yaml);
        let read = read_output(&log, &message, 1 << 20).unwrap();
        assert_eq!(read["pipelineSpec"]["pipelineInfo"]["name"], "penguin");
        assert_eq!(read["platformSpec"]["platforms"], json!({"kubernetes": {}}));
        let (log, message) = framed(b"pipelineInfo:\n  name: penguin\n");
        assert_eq!(read_output(&log, &message, 1 << 20).unwrap()["pipelineInfo"]["name"], "penguin");
    }

    fn pod(status: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "penguin-compile-1-x"},
            "spec": {
                "initContainers": [{"name": "framework", "image": "compiler:1"}],
                "containers": [{"name": "compile", "image": "penguin:1"}],
            },
            "status": status,
        }))
        .unwrap()
    }

    fn container(name: &str, state: Value) -> Value {
        json!({"name": name, "image": "", "imageID": "", "ready": false, "restartCount": 0, "state": state})
    }

    fn job(conditions: Value, annotations: Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "penguin-compile-1", "annotations": annotations},
            "spec": {"activeDeadlineSeconds": 5, "template": {}},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn a_missing_image_fails_the_compile_at_once_with_the_kubelets_reason() {
        let waiting = pod(json!({
            "phase": "Pending",
            "initContainerStatuses": [container("framework", json!({"waiting": {
                "reason": "ErrImageNeverPull",
                "message": "Container image \"compiler:1\" is not present with pull policy of Never",
            }}))],
        }));
        let Progress::Failed { reason, message, stop } = progress(&job(json!([]), json!({})), Some(&waiting))
        else {
            panic!("expected a failure")
        };
        assert_eq!((reason, stop), ("CompileImageUnavailable", true));
        assert!(message.contains("image compiler:1: ErrImageNeverPull: Container image"), "{message}");
        let stopped = job(
            json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]),
            json!({STOPPED_ANNOTATION: format!("CompileImageUnavailable: {message}")}),
        );
        assert_eq!(
            progress(&stopped, None),
            Progress::Failed { reason: "CompileImageUnavailable", message, stop: false },
            "the stopped Job keeps the reason, not the deadline it was stopped with"
        );
    }

    #[test]
    fn a_compiler_error_names_the_compilers_last_lines_and_a_deadline_names_itself() {
        let failed = pod(json!({
            "phase": "Failed",
            "containerStatuses": [container("compile", json!({"terminated": {
                "exitCode": 1, "message": "the compiler exited with status 1: ValueError: no such component",
            }}))],
        }));
        let job_failed =
            job(json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]), json!({}));
        assert_eq!(
            progress(&job_failed, Some(&failed)),
            Progress::Failed {
                reason: "CompileFailed",
                message: "the compiler exited with status 1: ValueError: no such component".into(),
                stop: false,
            }
        );
        assert!(matches!(
            progress(&job(json!([]), json!({})), Some(&failed)),
            Progress::Failed { stop: false, .. }
        ));
        let deadline =
            job(json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]), json!({}));
        let Progress::Failed { reason, message, .. } = progress(&deadline, Some(&failed)) else { panic!() };
        assert_eq!(reason, "CompileDeadlineExceeded");
        assert!(message.contains("deadline of 5s"), "{message}");
    }

    #[test]
    fn a_pod_without_a_node_says_so() {
        let pending = pod(json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "message": "0/1 nodes are available"}],
        }));
        assert_eq!(
            progress(&job(json!([]), json!({})), Some(&pending)),
            Progress::Running(Some(
                "pod penguin-compile-1-x waits for a node: 0/1 nodes are available".into()
            ))
        );
        assert_eq!(progress(&job(json!([]), json!({})), None), Progress::Running(None));
    }
}
