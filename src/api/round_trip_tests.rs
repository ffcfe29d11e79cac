//! Every kind, with every field populated, survives JSON and YAML round trips unchanged.

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::api::core::v1::{EnvVar, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::*;

fn time(seconds: i64) -> Time {
    Time(jiff::Timestamp::from_second(seconds).unwrap())
}

fn synchronized(reason: &str) -> Condition {
    Condition {
        type_: "Synchronized".into(),
        status: "True".into(),
        reason: reason.into(),
        message: "all good".into(),
        observed_generation: Some(3),
        last_transition_time: time(1_700_000_000),
    }
}

fn status() -> Status {
    Status {
        provider: Some(ProviderAndId { name: NamespacedName::new("kfp", "vai"), id: "provider-id".into() }),
        version: "v1-abcdef".into(),
        observed_generation: Some(3),
        conditions: vec![synchronized("Succeeded")],
    }
}

fn run_spec() -> RunSpec {
    RunSpec {
        provider: NamespacedName::new("kfp", "vai"),
        pipeline: PipelineIdentifier::new("penguin", "v1-abcdef"),
        experiment_name: "penguin-experiment".into(),
        parameters: vec![
            Parameter::literal("TRAINING_RUNS", "100"),
            Parameter::from_run_configuration(
                "examples",
                RunConfigurationRef::new(NamespacedName::new("base", "examples-rc"), "examples").optional(),
            ),
        ],
        artifacts: vec![OutputArtifact::new(
            "serving-model",
            ArtifactPath::new("Pusher", "pushed_model").with_index(1).with_filter("pushed == 1"),
        )],
    }
}

fn dependencies() -> Dependencies {
    Dependencies {
        pipeline: ObservedVersion::new("v1-abcdef"),
        run_configurations: BTreeMap::from([(
            "base/examples-rc".to_owned(),
            RunReference {
                provider_id: "run-1".into(),
                artifacts: vec![Artifact::new("examples", "gs://bucket/examples")],
                run_end_time: None,
            },
        )]),
    }
}

fn assert_round_trips<T>(value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let json = serde_json::to_string(value).unwrap();
    let from_json: T = serde_json::from_str(&json).unwrap();
    assert_eq!(&from_json, value, "JSON round trip of {json}");
    let yaml = serde_saphyr::to_string(value).unwrap();
    let from_yaml: T = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(&from_yaml, value, "YAML round trip of {yaml}");
}

#[test]
fn pipeline_round_trips() {
    let mut pipeline = Pipeline::new(
        "penguin",
        PipelineSpec {
            provider: NamespacedName::new("kfp", "vai"),
            image: "quickstart:v1".into(),
            env: vec![NamedValue::new("TRAINING_RUNS", "100")],
            framework: PipelineFramework::new("tfx")
                .with_parameter("components", json!("base.create_components"))
                .with_parameter("beamArgs", json!([{"name": "anArg", "value": "aValue"}])),
        },
    );
    pipeline.status = Some(status());
    assert_round_trips(&pipeline);
}

#[test]
fn run_round_trips() {
    let mut run = Run::new("penguin-run", run_spec());
    run.status = Some(RunStatus {
        status: status(),
        dependencies: dependencies(),
        completion_state: Some(CompletionState::Succeeded),
        marked_completed_at: Some(time(1_700_000_100)),
    });
    assert_round_trips(&run);
}

#[test]
fn run_configuration_round_trips() {
    let mut rc = RunConfiguration::new(
        "penguin-rc",
        RunConfigurationSpec {
            run: run_spec(),
            triggers: Triggers {
                schedules: vec![Schedule {
                    cron_expression: "0 * * * *".into(),
                    start_time: Some(time(1_704_067_200)),
                    end_time: Some(time(1_735_689_599)),
                }],
                on_change: vec![OnChangeType::Pipeline, OnChangeType::RunSpec],
                run_configurations: vec![
                    NamespacedName::name_only("local-rc"),
                    NamespacedName::new("base", "examples-rc"),
                ],
                join: Some(crate::api::Join {
                    expression: "base/features && (train-xgb || train-lgbm)".into(),
                    reset: "24h".into(),
                }),
                conditions: vec![crate::api::TriggerCondition {
                    run_configuration: NamespacedName::name_only("train-xgb"),
                    artifact: "metrics".into(),
                    filter: "accuracy > 0.9".into(),
                }],
                concurrency_policy: crate::api::ConcurrencyPolicy::Forbid,
            },
        },
    );
    rc.status = Some(RunConfigurationStatus {
        provider: Some(NamespacedName::new("kfp", "vai")),
        observed_generation: Some(2),
        conditions: vec![synchronized("Succeeded")],
        latest_runs: LatestRuns {
            succeeded: Some(RunReference {
                provider_id: "run-2".into(),
                artifacts: vec![Artifact::new("serving-model", "gs://bucket/model")],
                run_end_time: Some(time(1_700_000_200)),
            }),
        },
        dependencies: dependencies(),
        triggers: TriggersStatus {
            pipeline: ObservedVersion::new("v1-abcdef"),
            run_spec: ObservedVersion::new("00ac9b"),
            run_configurations: BTreeMap::from([(
                "local-rc".to_owned(),
                TriggeredRunReference { provider_id: "run-1".into() },
            )]),
            join: crate::api::JoinStatus {
                dependencies: BTreeMap::from([(
                    "base/features".to_owned(),
                    crate::api::JoinDependency {
                        seen: "run-7".into(),
                        satisfied_by: "run-7".into(),
                        satisfied_at: Some(time(1_700_000_300)),
                    },
                )]),
                since: Some(time(1_700_000_300)),
                last_run: "penguin-rc-0123456789".into(),
                last_fired: Some(time(1_700_000_100)),
                last_reset: None,
                fired: 4,
            },
            conditions: BTreeMap::from([(
                "train-xgb".to_owned(),
                crate::api::ConditionVerdict {
                    provider_id: "run-8".into(),
                    passed: false,
                    message: "run run-8: metrics {\"accuracy\":0.85} does not pass accuracy > 0.9".into(),
                },
            )]),
            pending: Some(crate::api::PendingRun {
                trigger_type: "join".into(),
                key: "join-0123456789abcdef".into(),
                coalesced: 3,
                waiting_for: "penguin-rc-abcdef0123".into(),
                since: Some(time(1_700_000_400)),
                ..Default::default()
            }),
        },
        trigger_summary: "runConfigurations: local-rc, base/examples-rc".into(),
    });
    assert_round_trips(&rc);
}

#[test]
fn run_schedule_round_trips() {
    let mut schedule = RunSchedule::new(
        "penguin-rc-1",
        RunScheduleSpec {
            provider: NamespacedName::new("kfp", "vai"),
            pipeline: PipelineIdentifier::new("penguin", "v1-abcdef"),
            experiment_name: "penguin-experiment".into(),
            parameters: vec![NamedValue::new("TRAINING_RUNS", "100")],
            artifacts: run_spec().artifacts,
            schedule: Schedule {
                cron_expression: "0 0 * * * *".into(),
                start_time: Some(time(0)),
                end_time: None,
            },
        },
    );
    schedule.status = Some(status());
    assert_round_trips(&schedule);
}

#[test]
fn experiment_round_trips() {
    let mut experiment = Experiment::new(
        "penguin-experiment",
        ExperimentSpec { provider: NamespacedName::new("kfp", "vai"), description: "penguins".into() },
    );
    experiment.status = Some(status());
    assert_round_trips(&experiment);
}

#[test]
fn provider_round_trips() {
    let mut provider = Provider::new(
        "vai",
        ProviderSpec {
            provider_type: ProviderType::Http,
            service_url: "http://provider.kfp:8080".into(),
            service_image: "ghcr.io/kfp-operator/vai-provider:1.0".into(),
            execution_mode: "v2".into(),
            service_account: "kfp-operator-vai".into(),
            pipeline_root_storage: "gs://bucket".into(),
            parameters: BTreeMap::from([
                ("project".to_owned(), json!("my-project")),
                ("maxRuns".into(), json!(3)),
            ]),
            frameworks: vec![Framework {
                name: "tfx".into(),
                image: "ghcr.io/kfp-operator/tfx-compiler:1.0".into(),
                patches: vec![Patch {
                    patch_type: Some(PatchType::Json),
                    payload: r#"[{"op":"add","path":"/a","value":1}]"#.into(),
                }],
            }],
            allowed_namespaces: vec!["team-a".into()],
            pod_template_env: vec![EnvVar {
                name: "LOG_LEVEL".into(),
                value: Some("debug".into()),
                ..Default::default()
            }],
            pod_template_volumes: vec![Volume { name: "scratch".into(), ..Default::default() }],
            pod_template_volume_mounts: vec![VolumeMount {
                name: "scratch".into(),
                mount_path: "/scratch".into(),
                ..Default::default()
            }],
        },
    );
    provider.status = Some(status());
    assert_round_trips(&provider);
}
