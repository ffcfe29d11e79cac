//! The event payload schemas: `schemas/` matches the code (regenerate with
//! `KFP_UPDATE_SCHEMAS=1 cargo test --test event_schemas`), the CloudEvents we emit are valid
//! against the CloudEvents 1.0 JSON Schema (`tests/fixtures/cloudevents/cloudevents.json`,
//! Apache-2.0, from cloudevents/spec v1.0.2), and their `data` and sample provider bodies are
//! valid against our schemas. Validation is offline: every schema is a local file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use cloudevents::AttributesReader;
use kfp_operator::api::{Artifact, NamespacedName};
use kfp_operator::events::{
    self, CloudEventOptions, RUN_COMPLETION_EVENT_DATA_SCHEMA, RUN_COMPLETION_EVENT_SCHEMA,
    RunCompletionEvent, RunCompletionEventData, RunCompletionStatus,
};
use serde_json::{Value, json};

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn schemas_dir() -> PathBuf {
    repo_root().join("schemas")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One of our schemas as the code generates it (equal to the committed file, which
/// `schemas_directory_matches_the_code` checks; reading it from the code keeps this test
/// independent of a concurrent regeneration).
fn our_schema(file: &str) -> Value {
    let (_, text) = events::schemas().into_iter().find(|(name, _)| *name == file).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options().offline().should_validate_formats(true).build(schema).unwrap()
}

fn assert_valid(validator: &jsonschema::Validator, instance: &Value, what: &str) {
    let errors: Vec<String> =
        validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{what} is invalid: {errors:#?}\n{instance:#}");
}

#[test]
fn schemas_directory_matches_the_code() {
    let dir = schemas_dir();
    let update = std::env::var("KFP_UPDATE_SCHEMAS").is_ok_and(|v| v == "1");
    let mut expected_files = Vec::new();
    for (file, generated) in events::schemas() {
        let path = dir.join(file);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "schemas/{file} is out of date; regenerate with `KFP_UPDATE_SCHEMAS=1 cargo test --test event_schemas`"
        );
        expected_files.push(file.to_owned());
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(present, expected_files, "schemas/ holds files the code does not generate");
}

fn completion(status: RunCompletionStatus, artifacts: Vec<Artifact>) -> RunCompletionEvent {
    RunCompletionEvent {
        status,
        pipeline_name: NamespacedName::new("base-namespace", "penguin-pipeline-examples"),
        run_configuration_name: Some(NamespacedName::new("base-namespace", "penguin-pipeline-examples-rc")),
        run_name: None,
        run_id: "3f2c".into(),
        run_start_time: Some(Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap()),
        run_end_time: Some(Utc.with_ymd_and_hms(2024, 5, 1, 10, 21, 7).unwrap()),
        artifacts,
        provider: NamespacedName::new("provider-namespace", "kfp"),
    }
}

fn sample_completions() -> Vec<RunCompletionEvent> {
    let succeeded = completion(
        RunCompletionStatus::Succeeded,
        vec![Artifact::new("examples", "gs://bucket/root/examples/1"), Artifact::new("model", "gs://b/m")],
    );
    let failed = completion(RunCompletionStatus::Failed, vec![]);
    let mut one_off = completion(RunCompletionStatus::Succeeded, vec![]);
    one_off.run_configuration_name = None;
    one_off.run_name = Some(NamespacedName::new("base-namespace", "one-off"));
    one_off.run_start_time = None;
    one_off.run_end_time = None;
    let mut scheduled_without_names = completion(RunCompletionStatus::Failed, vec![]);
    scheduled_without_names.run_configuration_name = None;
    scheduled_without_names.provider = NamespacedName::name_only("odd provider%name");
    vec![succeeded, failed, one_off, scheduled_without_names]
}

#[test]
fn emitted_cloud_events_are_valid_cloud_events_with_valid_data() {
    let cloudevents_schema = read_json(&repo_root().join("tests/fixtures/cloudevents/cloudevents.json"));
    let envelope = validator(&cloudevents_schema);
    let data_schema = validator(&our_schema(RUN_COMPLETION_EVENT_SCHEMA));
    let now = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();

    for options in
        [CloudEventOptions::default(), CloudEventOptions::new("https://example.com/schemas/").unwrap()]
    {
        let mut kinds_seen = Vec::new();
        for completion in sample_completions() {
            let cloud_events = events::cloud_events_for(&completion, &options, now);
            assert!(!cloud_events.is_empty());
            for cloud_event in &cloud_events {
                let json = events::to_structured_json(cloud_event);
                assert_valid(&envelope, &json, &format!("CloudEvent {}", cloud_event.ty()));
                assert_eq!(json["specversion"], "1.0");
                assert_eq!(json["datacontenttype"], "application/json");
                assert!(json["data"].is_object(), "data must be an embedded object: {json:#}");
                assert!(json.get("data_base64").is_none());
                let dataschema = json["dataschema"].as_str().unwrap();
                assert!(dataschema.ends_with(RUN_COMPLETION_EVENT_SCHEMA), "{dataschema}");
                assert_valid(&data_schema, &json["data"], &format!("data of {}", cloud_event.ty()));
                let decoded: RunCompletionEvent = serde_json::from_value(json["data"].clone()).unwrap();
                assert_eq!(decoded, completion);
                kinds_seen.push(cloud_event.ty().to_owned());
            }
            let legacy = events::legacy_body(&completion);
            assert_valid(&data_schema, &legacy["data"], "legacy body data");
        }
        assert!(kinds_seen.iter().any(|t| t == events::MODEL_READY_TYPE));
        assert!(kinds_seen.iter().any(|t| t == events::RUN_COMPLETION_TYPE));
    }

    // The envelope schema does check what we rely on it for.
    let completion = completion(RunCompletionStatus::Succeeded, vec![]);
    let good = events::to_structured_json(
        &events::cloud_events_for(&completion, &CloudEventOptions::default(), now)[0],
    );
    for (attribute, bad) in
        [("source", json!("")), ("time", json!("yesterday")), ("dataschema", json!("no scheme"))]
    {
        let mut event = good.clone();
        event[attribute] = bad;
        assert!(!envelope.is_valid(&event), "{attribute} should be rejected");
    }
}

#[test]
fn the_data_schema_rejects_what_the_types_reject() {
    let data_schema = validator(&our_schema(RUN_COMPLETION_EVENT_SCHEMA));
    let mut event = serde_json::to_value(completion(RunCompletionStatus::Succeeded, vec![])).unwrap();
    event["status"] = json!("running");
    assert!(!data_schema.is_valid(&event));
    assert!(serde_json::from_value::<RunCompletionEvent>(event.clone()).is_err());
    event["status"] = json!("succeeded");
    event.as_object_mut().unwrap().remove("artifacts");
    assert!(!data_schema.is_valid(&event));
}

#[test]
fn provider_bodies_are_valid_against_the_ingest_schema() {
    let ingest = validator(&our_schema(RUN_COMPLETION_EVENT_DATA_SCHEMA));
    let bodies = [
        // The reference's documented example (§8.2).
        json!({"status": "succeeded", "pipelineName": "base-namespace/penguin-pipeline-examples",
            "runConfigurationName": "base-namespace/penguin-pipeline-examples-rc", "runId": "3f2c",
            "runStartTime": "2024-05-01T10:00:00Z", "runEndTime": "2024-05-01T10:21:07Z",
            "pipelineComponents": [{"name": "CsvExampleGen", "componentArtifacts": [{"name": "examples",
                "artifacts": [{"uri": "gs://bucket/root/examples/1", "metadata": {"span": 0}}]}]}],
            "provider": "provider-namespace/kfp"}),
        // What a Go producer sends with nil slices and maps.
        json!({"status": "succeeded", "pipelineName": "ns/p", "runName": "ns/r", "runId": "stub-run-1",
            "pipelineComponents": null, "provider": "ns/stub"}),
        json!({"status": "failed", "pipelineName": "ns/p", "runConfigurationName": "ns/rc", "runId": "1",
            "pipelineComponents": [{"name": "c", "componentArtifacts": [{"name": "a",
                "artifacts": [{"uri": "u", "metadata": null}]}]}], "provider": "ns/kfp"}),
    ];
    for body in bodies {
        assert_valid(&ingest, &body, "provider body");
        let data: RunCompletionEventData = serde_json::from_value(body.clone()).unwrap();
        let rendered = serde_json::to_value(&data).unwrap();
        assert_valid(&ingest, &rendered, "re-rendered provider body");
    }
    assert!(!ingest.is_valid(&json!({"status": "succeeded", "pipelineName": "ns/p", "runId": "1"})));
}
