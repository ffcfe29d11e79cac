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
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, SeccompProfile, SecurityContext, Volume, VolumeMount,
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
}

/// The name of the Job (and its ConfigMap) compiling `version` of `pipeline`: the same for the
/// same version, so that a restarted operator finds the Job it started. At most 63 characters.
pub fn job_name(pipeline: &str, version: &str) -> String {
    let digest = Sha256::new().chain_update(pipeline).chain_update([0]).chain_update(version).finalize();
    let suffix = format!("-compile-{}", hex::encode(&digest[..5]));
    let room = 63 - suffix.len();
    let prefix: String = pipeline.chars().take(room).collect();
    format!("{}{suffix}", prefix.trim_end_matches(['-', '.']))
}

impl CompileRequest {
    fn metadata(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(job_name(&self.pipeline, &self.version)),
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
        let name = job_name(&self.pipeline, &self.version);
        let compiler = Container {
            name: "framework".into(),
            image: Some(self.framework_image.clone()),
            image_pull_policy: Some("IfNotPresent".into()),
            args: Some(vec!["/shared".into()]),
            volume_mounts: Some(vec![mount("shared", "/shared", false)]),
            security_context: Some(security.clone()),
            ..Container::default()
        };
        let compile = Container {
            name: "compile".into(),
            image: Some(self.pipeline_image.clone()),
            image_pull_policy: Some("IfNotPresent".into()),
            command: Some(vec!["python3".into(), "/kfp-operator/run.py".into()]),
            volume_mounts: Some(vec![
                mount("shared", "/shared", true),
                mount("definition", "/kfp-operator", true),
                mount("tmp", "/tmp", false),
            ]),
            termination_message_policy: Some("File".into()),
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
            pipeline_image: "penguin:1".into(),
            framework_image: "kfp-operator-kfp-sdk-compiler:1".into(),
            definition: json!({"name": "ml/penguin", "framework": {"name": "kfp-sdk"}}),
            deadline: Duration::from_secs(1800),
            ttl: Duration::from_secs(3600),
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
        assert_eq!(job_name("penguin", "v1-abc"), job_name("penguin", "v1-abc"));
        assert_ne!(job_name("penguin", "v1-abc"), job_name("penguin", "v2-abc"));
        let long = "p".repeat(253);
        assert!(job_name(&long, "v1").len() <= 63);
        assert!(job_name("penguin", "v1").starts_with("penguin-compile-"));
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
}
