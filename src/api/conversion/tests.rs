//! Conversion: random valid objects of every kind survive each round trip through `v1beta1`
//! unchanged (annotations included); the reference's lossy cases round-trip; bad input is a
//! reasoned error naming the object and field; random JSON never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use proptest::strategy::Union;
use serde_json::{Value, json};

use super::*;

const KINDS: [&str; 6] = ["Pipeline", "Run", "RunConfiguration", "RunSchedule", "Experiment", "Provider"];

fn api(version: &str) -> String {
    format!("{GROUP}/{version}")
}

fn envelope(
    kind: &str,
    version: &str,
    spec: Value,
    status: Option<Value>,
    annotations: Option<Value>,
) -> Value {
    let mut metadata = json!({"name": "object-1", "namespace": "ml-team", "uid": "3f2b", "generation": 2});
    if let Some(annotations) = annotations {
        metadata["annotations"] = annotations;
    }
    let mut object = json!({"apiVersion": api(version), "kind": kind, "metadata": metadata, "spec": spec});
    if let Some(status) = status {
        object["status"] = status;
    }
    object
}

fn defaults(default_provider: bool) -> Defaults {
    Defaults {
        default_provider: default_provider.then(|| NamespacedName::new("kfp-system", "default-provider")),
        ..Defaults::default()
    }
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,6}"
}

fn namespaced() -> impl Strategy<Value = String> {
    (name(), name()).prop_map(|(ns, n)| format!("{ns}/{n}"))
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ._:=-]{0,10}"
}

fn some_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,10}"
}

fn named_values() -> impl Strategy<Value = Value> {
    prop::collection::vec((name(), text()), 0..3)
        .prop_map(|v| Value::Array(v.into_iter().map(|(n, v)| json!({"name": n, "value": v})).collect()))
}

fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(Value::String),
        any::<i32>().prop_map(|n| json!(n)),
        any::<bool>().prop_map(Value::Bool),
        prop::collection::vec(text(), 0..2).prop_map(|v| json!(v)),
    ]
}

fn conditions() -> impl Strategy<Value = Value> {
    prop::collection::vec(
        (prop::sample::select(vec!["Synchronized", "Ready"]), "[A-Z][a-z]{1,8}", text(), any::<bool>()),
        0..2,
    )
    .prop_map(|v| {
        let mut seen = std::collections::BTreeSet::new();
        Value::Array(
            v.into_iter()
                .filter(|(t, ..)| seen.insert(*t))
                .map(|(t, reason, message, status)| {
                    json!({"type": t, "status": if status {"True"} else {"False"}, "reason": reason,
                           "message": message, "lastTransitionTime": "2024-05-01T10:00:00Z"})
                })
                .collect(),
        )
    })
}

/// Drops the keys whose value is null, so that generated objects hold only what is present.
fn compact(value: Value) -> Value {
    match value {
        Value::Object(o) => {
            Value::Object(o.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, compact(v))).collect())
        }
        other => other,
    }
}

fn opt<T: Strategy<Value = String>>(s: T) -> impl Strategy<Value = Value> {
    prop::option::of(s).prop_map(|o| o.map_or(Value::Null, Value::String))
}

fn hub_status() -> impl Strategy<Value = Value> {
    (prop::option::of((namespaced(), some_text())), opt(some_text()), prop::option::of(0i64..9), conditions())
        .prop_map(|(provider, version, generation, conditions)| {
            compact(json!({
                "provider": provider.map(|(n, id)| json!({"name": n, "id": id})),
                "version": version,
                "observedGeneration": generation,
                "conditions": if conditions.as_array().is_some_and(Vec::is_empty) { Value::Null } else { conditions },
            }))
        })
}

fn hub_parameters(with_value_from: bool) -> impl Strategy<Value = Value> {
    prop::collection::vec((name(), text(), prop::option::of((namespaced(), name(), any::<bool>()))), 0..3)
        .prop_map(move |v| {
            Value::Array(
                v.into_iter()
                    .map(|(n, value, from)| match from.filter(|_| with_value_from) {
                        Some((rc, artifact, optional)) => {
                            let mut reference = json!({"name": rc, "outputArtifact": artifact});
                            if optional {
                                reference["optional"] = json!(true);
                            }
                            json!({"name": n, "valueFrom": {"runConfigurationRef": reference}})
                        }
                        None if value.is_empty() && with_value_from => json!({"name": n}),
                        None => json!({"name": n, "value": value}),
                    })
                    .collect(),
            )
        })
}

fn artifacts() -> impl Strategy<Value = Value> {
    prop::collection::vec((name(), name(), name()), 0..2).prop_map(|v| {
        Value::Array(
            v.into_iter().map(|(n, c, a)| json!({"name": n, "path": format!("{c}:{a}:0")})).collect(),
        )
    })
}

fn empty_to_null(value: Value) -> Value {
    let empty = match &value {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    };
    if empty { Value::Null } else { value }
}

fn hub_run_spec() -> impl Strategy<Value = Value> {
    (opt(namespaced()), opt(name()), opt(some_text()), hub_parameters(true), artifacts()).prop_map(
        |(p, pl, e, params, arts)| {
            compact(json!({"provider": p, "pipeline": pl, "experimentName": e,
                       "parameters": empty_to_null(params), "artifacts": empty_to_null(arts)}))
        },
    )
}

fn schedule() -> impl Strategy<Value = Value> {
    ("[0-9*]{1,2} \\* \\* \\* \\*", any::<bool>()).prop_map(|(cron, bounded)| {
        if bounded {
            json!({"cronExpression": cron, "startTime": "2024-01-01T00:00:00Z", "endTime": "2025-01-01T00:00:00Z"})
        } else {
            json!({"cronExpression": cron})
        }
    })
}

fn hub_object(kind: &'static str) -> BoxedStrategy<Value> {
    let spec: BoxedStrategy<Value> = match kind {
        "Pipeline" => (
            opt(namespaced()),
            some_text(),
            named_values(),
            prop::sample::select(vec!["tfx", "kfp-sdk", "custom"]),
            prop::collection::btree_map(name(), json_scalar(), 0..2),
            opt(some_text()),
            named_values(),
        )
            .prop_map(|(p, image, env, framework, mut parameters, components, beam)| {
                if framework == "tfx" {
                    if let Value::String(c) = components {
                        parameters.insert("components".into(), json!(c));
                    }
                    if !beam.as_array().is_some_and(Vec::is_empty) {
                        parameters.insert("beamArgs".into(), beam);
                    }
                }
                compact(json!({"provider": p, "image": image, "env": empty_to_null(env),
                               "framework": {"name": framework, "parameters": parameters}}))
            })
            .boxed(),
        "Run" => hub_run_spec().boxed(),
        "RunConfiguration" => (
            hub_run_spec(),
            prop::collection::vec(schedule(), 0..2),
            prop::sample::subsequence(vec!["pipeline", "runSpec"], 0..=2),
            prop::collection::vec(namespaced(), 0..2),
        )
            .prop_map(|(run, schedules, on_change, rcs)| {
                let triggers = compact(json!({
                    "schedules": empty_to_null(json!(schedules)),
                    "onChange": empty_to_null(json!(on_change)),
                    "runConfigurations": empty_to_null(json!(rcs)),
                }));
                compact(json!({"run": run, "triggers": empty_to_null(triggers)}))
            })
            .boxed(),
        "RunSchedule" => (opt(namespaced()), opt(name()), opt(some_text()), hub_parameters(false), artifacts(), schedule())
            .prop_map(|(p, pl, e, params, arts, schedule)| {
                compact(json!({"provider": p, "pipeline": pl, "experimentName": e, "parameters": empty_to_null(params),
                               "artifacts": empty_to_null(arts), "schedule": schedule}))
            })
            .boxed(),
        "Experiment" => (opt(namespaced()), opt(some_text()))
            .prop_map(|(p, d)| compact(json!({"provider": p, "description": d})))
            .boxed(),
        _ => (
            prop::sample::select(vec!["http", "stub"]),
            some_text(),
            name(),
            some_text(),
            prop::collection::btree_map(name(), json_scalar(), 0..2),
            prop::collection::vec((prop::sample::select(vec!["tfx", "kfp-sdk"]), some_text(), named_values(), any::<bool>()), 0..2),
            prop::collection::vec(name(), 0..2),
        )
            .prop_map(|(t, service_image, account, root, parameters, frameworks, allowed)| {
                let frameworks: Vec<Value> = frameworks
                    .into_iter()
                    .map(|(n, image, beam, merge)| {
                        let patches = if merge {
                            json!([{"type": "merge", "payload": "{\"framework\":{}}"}])
                        } else {
                            let ops: Vec<Value> = beam.as_array().unwrap().iter()
                                .map(|arg| json!({"op": "add", "path": "/framework/parameters/beamArgs/0", "value": arg}))
                                .collect();
                            if ops.is_empty() { json!([]) } else { json!([{"type": "json", "payload": Value::Array(ops).to_string()}]) }
                        };
                        compact(json!({"name": n, "image": image, "patches": empty_to_null(patches)}))
                    })
                    .collect();
                compact(json!({"type": t, "serviceImage": service_image, "serviceAccount": account,
                               "pipelineRootStorage": root, "parameters": empty_to_null(json!(parameters)),
                               "frameworks": empty_to_null(json!(frameworks)), "allowedNamespaces": empty_to_null(json!(allowed))}))
            })
            .boxed(),
    };
    let status: BoxedStrategy<Value> = match kind {
        "Run" => (
            hub_status(),
            opt(some_text()),
            prop::option::of(prop::sample::select(vec!["Succeeded", "Failed"])),
            prop::option::of((namespaced(), some_text())),
        )
            .prop_map(|(mut s, pipeline_version, completion, rc)| {
                let mut dependencies = json!({});
                if let Value::String(v) = pipeline_version {
                    dependencies["pipeline"] = json!({"version": v});
                }
                if let Some((rc, id)) = rc {
                    dependencies["runConfigurations"] =
                        json!({rc: {"providerId": id, "artifacts": [{"name": "a", "location": "gs://x"}]}});
                }
                s["dependencies"] = empty_to_null(dependencies);
                s["completionState"] = completion.map_or(Value::Null, |c| json!(c));
                compact(s)
            })
            .boxed(),
        "RunConfiguration" => (
            opt(namespaced()),
            conditions(),
            opt(some_text()),
            opt(some_text()),
            opt(some_text()),
            opt(text()),
            prop::option::of(some_text()),
        )
            .prop_map(|(provider, conditions, dep_version, trig_version, run_spec, summary, latest)| {
                compact(json!({
                    "provider": provider,
                    "observedGeneration": 1,
                    "conditions": empty_to_null(conditions),
                    "latestRuns": latest.map(|id| json!({"succeeded": {"providerId": id}})),
                    "dependencies": dep_version.as_str().map(|v| json!({"pipeline": {"version": v}})),
                    "triggers": empty_to_null(compact(json!({
                        "pipeline": trig_version.as_str().map(|v| json!({"version": v})),
                        "runSpec": run_spec.as_str().map(|v| json!({"version": v})),
                    }))),
                    "triggerSummary": summary,
                }))
            })
            .boxed(),
        _ => hub_status().boxed(),
    };
    let annotations = prop::option::of((name(), text()))
        .prop_map(|a| a.map(|(k, v)| json!({format!("example.com/{k}"): v})));
    (spec, status, annotations)
        .prop_map(move |(spec, status, annotations)| {
            let status = if status.as_object().is_some_and(|s| s.is_empty()) { None } else { Some(status) };
            envelope(kind, HUB, spec, status, annotations)
        })
        .boxed()
}

fn v1alpha5_run_spec() -> impl Strategy<Value = Value> {
    (
        opt(name()),
        opt(some_text()),
        any::<bool>(),
        hub_parameters(true),
        prop::collection::btree_map(name(), text(), 0..3),
        artifacts(),
    )
        .prop_map(|(pipeline, experiment, as_map, list, map, arts)| {
            let list: Vec<Value> = list
                .as_array()
                .unwrap()
                .iter()
                .cloned()
                .map(|mut p| {
                    if let Some(Value::Object(r)) = p.pointer_mut("/valueFrom/runConfigurationRef") {
                        r.remove("optional");
                    }
                    p
                })
                .collect();
            let parameters = if as_map { json!(map) } else { json!(list) };
            compact(json!({"pipeline": pipeline, "experimentName": experiment,
                           "runtimeParameters": empty_to_null(parameters), "artifacts": empty_to_null(arts)}))
        })
}

fn v1alpha5_status() -> impl Strategy<Value = Value> {
    (opt(some_text()), opt(some_text()), conditions()).prop_map(|(id, version, conditions)| {
        compact(json!({"providerId": id, "version": version, "conditions": empty_to_null(conditions)}))
    })
}

fn v1alpha5_object(kind: &'static str) -> BoxedStrategy<Value> {
    let spec: BoxedStrategy<Value> = match kind {
        "Pipeline" => (some_text(), named_values(), opt(some_text()), named_values())
            .prop_map(|(image, env, components, beam)| {
                compact(json!({"image": image, "env": empty_to_null(env), "tfxComponents": components, "beamArgs": empty_to_null(beam)}))
            })
            .boxed(),
        "Run" => v1alpha5_run_spec().boxed(),
        "RunConfiguration" => (v1alpha5_run_spec(), prop::collection::vec("[0-9] \\* \\* \\* \\*", 0..2),
                               prop::sample::subsequence(vec!["pipeline", "runSpec"], 0..=2), prop::collection::vec(namespaced(), 0..2))
            .prop_map(|(run, schedules, on_change, rcs)| {
                let triggers = compact(json!({"schedules": empty_to_null(json!(schedules)),
                    "onChange": empty_to_null(json!(on_change)), "runConfigurations": empty_to_null(json!(rcs))}));
                compact(json!({"run": run, "triggers": empty_to_null(triggers)}))
            })
            .boxed(),
        "RunSchedule" => (opt(name()), named_values(), "[0-9] \\* \\* \\* \\*")
            .prop_map(|(pipeline, parameters, cron)| {
                compact(json!({"pipeline": pipeline, "runtimeParameters": empty_to_null(parameters), "schedule": cron}))
            })
            .boxed(),
        "Experiment" => opt(some_text()).prop_map(|d| compact(json!({"description": d}))).boxed(),
        _ => (some_text(), name(), some_text(), named_values(), prop::collection::btree_map(name(), json_scalar(), 0..2))
            .prop_map(|(image, account, root, beam, parameters)| {
                compact(json!({"image": image, "serviceAccount": account, "pipelineRootStorage": root,
                               "defaultBeamArgs": empty_to_null(beam), "parameters": empty_to_null(json!(parameters))}))
            })
            .boxed(),
    };
    (spec, v1alpha5_status())
        .prop_map(move |(spec, status)| {
            let status = if status.as_object().is_some_and(|s| s.is_empty()) { None } else { Some(status) };
            envelope(kind, "v1alpha5", spec, status, None)
        })
        .boxed()
}

fn any_kind<F: Fn(&'static str) -> BoxedStrategy<Value>>(f: F) -> impl Strategy<Value = Value> {
    Union::new(KINDS.map(f))
}

fn round_trip(object: &Value, via: &str, defaults: &Defaults) -> Value {
    let original = object["apiVersion"].as_str().unwrap().to_owned();
    let there =
        convert(object.clone(), &api(via), defaults).unwrap_or_else(|e| panic!("to {via}: {e}\n{object:#}"));
    convert(there.clone(), &original, defaults).unwrap_or_else(|e| panic!("back from {via}: {e}\n{there:#}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hub_objects_survive_v1alpha5(object in any_kind(hub_object), with_default in any::<bool>()) {
        prop_assert_eq!(round_trip(&object, "v1alpha5", &defaults(with_default)), object);
    }

    #[test]
    fn hub_objects_survive_v1alpha6(object in any_kind(hub_object), with_default in any::<bool>()) {
        prop_assert_eq!(round_trip(&object, "v1alpha6", &defaults(with_default)), object);
    }

    #[test]
    fn hub_objects_survive_v1alpha5_then_v1alpha6(object in any_kind(hub_object)) {
        let defaults = defaults(true);
        let five = convert(object.clone(), &api("v1alpha5"), &defaults).unwrap();
        let six = convert(five, &api("v1alpha6"), &defaults).unwrap();
        prop_assert_eq!(convert(six, &api(HUB), &defaults).unwrap(), object);
    }

    #[test]
    fn v1alpha5_objects_survive_v1beta1(object in any_kind(v1alpha5_object), with_default in any::<bool>()) {
        prop_assert_eq!(round_trip(&object, HUB, &defaults(with_default)), object);
    }

    #[test]
    fn v1alpha5_objects_convert_to_valid_v1beta1(object in any_kind(v1alpha5_object)) {
        let hub = convert(object, &api(HUB), &defaults(true)).unwrap();
        let kind = Kind::parse(hub["kind"].as_str().unwrap()).unwrap();
        prop_assert!(mapping::validate_hub(kind, hub.as_object().unwrap()).is_ok(), "{hub:#}");
    }

    #[test]
    fn random_json_never_panics(value in arb_json(), kind in prop::sample::select(KINDS.to_vec()),
                                from in prop::sample::select(vec!["v1beta1", "v1alpha5", "v1alpha6", "v2"]),
                                to in prop::sample::select(vec!["v1beta1", "v1alpha5", "v1alpha6", "v9"])) {
        let mut object = json!({"apiVersion": api(from), "kind": kind, "metadata": {"name": "n", "namespace": "ns"}});
        if let Value::Object(fields) = value {
            for (key, value) in fields {
                object[key] = value;
            }
        }
        let _ = convert(object, &api(to), &defaults(true));
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z/:~ ]{0,6}".prop_map(Value::String),
    ];
    let keys = prop::sample::select(vec![
        "spec",
        "status",
        "metadata",
        "run",
        "provider",
        "image",
        "framework",
        "parameters",
        "runtimeParameters",
        "triggers",
        "schedules",
        "schedule",
        "valueFrom",
        "runConfigurationRef",
        "name",
        "value",
        "frameworks",
        "patches",
        "payload",
        "tfxComponents",
        "conditions",
        "annotations",
        ANNOTATION,
        "v1beta1",
        "path",
        "from",
    ]);
    leaf.prop_recursive(4, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..5).prop_map(|m| json!(m)),
        ]
    })
}

#[test]
fn optional_value_from_survives_v1alpha6() {
    let reference = json!({"name": "base/examples-rc", "outputArtifact": "examples", "optional": true});
    let spec = json!({"provider": "kfp/stub", "pipeline": "penguin",
                      "parameters": [{"name": "examples", "valueFrom": {"runConfigurationRef": reference}}]});
    let run = envelope("Run", HUB, spec, None, None);
    let defaults = defaults(false);
    let six = convert(run.clone(), &api("v1alpha6"), &defaults).unwrap();
    assert_eq!(
        six["spec"]["runtimeParameters"][0]["valueFrom"]["runConfigurationRef"],
        json!({"name": "base/examples-rc", "outputArtifact": "examples"})
    );
    assert_eq!(six["spec"]["provider"], "stub");
    assert_eq!(convert(six, &api(HUB), &defaults).unwrap(), run);
}

#[test]
fn a_non_tfx_framework_survives_v1alpha6() {
    let spec = json!({"provider": "kfp/stub", "image": "img:1",
                      "framework": {"name": "kfp-sdk", "parameters": {"pipeline": "penguin.pipeline"}}});
    let pipeline = envelope("Pipeline", HUB, spec, None, None);
    let defaults = defaults(false);
    let six = convert(pipeline.clone(), &api("v1alpha6"), &defaults).unwrap();
    assert!(six["spec"].get("tfxComponents").is_none());
    assert!(six["metadata"]["annotations"][ANNOTATION].as_str().unwrap().contains("kfp-sdk"));
    assert_eq!(convert(six, &api(HUB), &defaults).unwrap(), pipeline);
}

#[test]
fn a_provider_without_tfx_survives_v1alpha6() {
    let spec = json!({"type": "stub", "serviceImage": "svc:1", "serviceAccount": "sa", "pipelineRootStorage": "gs://b",
                      "frameworks": [{"name": "kfp-sdk", "image": "compiler:1"}], "allowedNamespaces": ["ml"]});
    let provider = envelope("Provider", HUB, spec, None, None);
    let defaults = defaults(false);
    let six = convert(provider.clone(), &api("v1alpha6"), &defaults).unwrap();
    assert_eq!(convert(six, &api(HUB), &defaults).unwrap(), provider);
}

#[test]
fn a_provider_namespace_survives_v1alpha6() {
    let spec = json!({"provider": "other-ns/vai", "description": "d"});
    let experiment = envelope(
        "Experiment",
        HUB,
        spec,
        Some(json!({"provider": {"name": "other-ns/vai", "id": "e1"}})),
        None,
    );
    let defaults = defaults(true);
    let six = convert(experiment.clone(), &api("v1alpha6"), &defaults).unwrap();
    assert_eq!(six["spec"]["provider"], "vai");
    assert_eq!(six["status"]["provider"], json!({"name": "vai", "id": "e1"}));
    assert_eq!(convert(six, &api(HUB), &defaults).unwrap(), experiment);
}

#[test]
fn v1alpha6_converts_as_the_reference_says() {
    let defaults = Defaults { default_tfx_image: Some("tfx-compiler:1".into()), ..defaults(true) };
    let pipeline = envelope(
        "Pipeline",
        "v1alpha6",
        json!({"provider": "stub", "image": "img:1", "tfxComponents": "penguin.components",
               "beamArgs": [{"name": "runner", "value": "DirectRunner"}]}),
        None,
        None,
    );
    let hub = convert(pipeline, &api(HUB), &defaults).unwrap();
    assert_eq!(
        hub["spec"],
        json!({"provider": "kfp-system/stub", "image": "img:1", "framework": {"name": "tfx",
        "parameters": {"components": "penguin.components", "beamArgs": [{"name": "runner", "value": "DirectRunner"}]}}})
    );
    let provider = envelope(
        "Provider",
        "v1alpha6",
        json!({"image": "tfx:1", "serviceImage": "svc:1", "serviceAccount": "sa", "pipelineRootStorage": "gs://b",
               "defaultBeamArgs": [{"name": "project", "value": "p"}]}),
        None,
        None,
    );
    let hub = convert(provider, &api(HUB), &defaults).unwrap();
    let framework = &hub["spec"]["frameworks"][0];
    assert_eq!(
        (framework["name"].as_str(), framework["image"].as_str()),
        (Some("tfx"), Some("tfx-compiler:1"))
    );
    let ops: Value = serde_json::from_str(framework["patches"][0]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(
        ops,
        json!([{"op": "add", "path": "/framework/parameters/beamArgs/0", "value": {"name": "project", "value": "p"}}])
    );
    assert!(hub["metadata"]["annotations"][ANNOTATION].as_str().unwrap().contains("tfx:1"));
}

#[test]
fn the_documented_v1alpha5_manifests_convert() {
    let defaults = defaults(true);
    let pipeline = envelope(
        "Pipeline",
        "v1alpha5",
        json!({"image": "my-org/ml-pipeline:v1.2.0", "env": [{"name": "MODEL_VERSION", "value": "v2.1"}]}),
        None,
        None,
    );
    let hub = convert(pipeline.clone(), &api(HUB), &defaults).unwrap();
    assert_eq!(
        hub["spec"],
        json!({"provider": "kfp-system/default-provider", "image": "my-org/ml-pipeline:v1.2.0",
        "env": [{"name": "MODEL_VERSION", "value": "v2.1"}], "framework": {"name": "tfx", "parameters": {}}})
    );
    assert!(hub["metadata"].get("annotations").is_none(), "{hub:#}");
    let run = envelope(
        "Run",
        "v1alpha5",
        json!({"pipeline": "training-pipeline", "runtimeParameters": {"learning_rate": "0.01", "num_epochs": 20}}),
        None,
        None,
    );
    let hub = convert(run.clone(), &api(HUB), &defaults).unwrap();
    assert_eq!(
        hub["spec"]["parameters"],
        json!([{"name": "learning_rate", "value": "0.01"}, {"name": "num_epochs", "value": "20"}])
    );
    assert_eq!(convert(hub, &api("v1alpha5"), &defaults).unwrap(), run);
    let rc = envelope(
        "RunConfiguration",
        "v1alpha5",
        json!({"run": {"pipeline": "training-pipeline"},
        "triggers": {"onChange": ["pipeline", "runSpec"], "runConfigurations": ["some-namespace/some-dependency-rc"]}}),
        None,
        None,
    );
    let hub = convert(rc, &api(HUB), &defaults).unwrap();
    assert_eq!(hub["spec"]["triggers"]["runConfigurations"], json!(["some-namespace/some-dependency-rc"]));
    assert_eq!(hub["spec"]["run"]["provider"], "kfp-system/default-provider");
}

#[test]
fn without_a_default_provider_v1alpha5_has_none() {
    let experiment = envelope("Experiment", "v1alpha5", json!({"description": "d"}), None, None);
    let hub = convert(experiment, &api(HUB), &defaults(false)).unwrap();
    assert_eq!(hub["spec"], json!({"description": "d"}));
}

#[test]
fn bad_input_names_the_object_and_field() {
    let defaults = defaults(true);
    let run = envelope(
        "Run",
        "v1alpha5",
        json!({"runtimeParameters": {"learning_rate": {"nested": 1}}}),
        None,
        None,
    );
    let error = convert(run, &api(HUB), &defaults).unwrap_err();
    assert_eq!(error.category(), "invalid-field");
    let message = error.to_string();
    assert!(
        message.contains("Run ml-team/object-1 (v1alpha5)")
            && message.contains("spec.runtimeParameters.learning_rate"),
        "{message}"
    );

    let pipeline = envelope(
        "Pipeline",
        HUB,
        json!({"image": 3, "framework": {"name": "tfx", "parameters": {}}}),
        None,
        None,
    );
    let message = convert(pipeline, &api("v1alpha5"), &defaults).unwrap_err().to_string();
    assert!(
        message.contains("Pipeline ml-team/object-1 (v1beta1)") && message.contains("spec.image"),
        "{message}"
    );

    let unknown = envelope("Pipeline", "v1alpha1", json!({}), None, None);
    assert_eq!(convert(unknown, &api(HUB), &defaults).unwrap_err().category(), "unknown-version");
    let bad_remainder = envelope("Experiment", HUB, json!({}), None, Some(json!({ANNOTATION: "{not json"})));
    let error = convert(bad_remainder, &api("v1alpha5"), &defaults).unwrap_err();
    assert_eq!(error.category(), "invalid-remainder");
    assert!(error.to_string().contains(ANNOTATION));
}

#[test]
fn an_edit_in_the_spoke_wins_over_the_remainder() {
    let defaults = defaults(false);
    let spec = json!({"provider": "kfp/stub", "parameters": [{"name": "x",
        "valueFrom": {"runConfigurationRef": {"name": "a/b", "outputArtifact": "o", "optional": true}}}]});
    let rc = envelope("Run", HUB, spec, None, None);
    let mut six = convert(rc, &api("v1alpha6"), &defaults).unwrap();
    six["spec"]["runtimeParameters"] = json!([{"name": "y", "value": "1"}]);
    let hub = convert(six, &api(HUB), &defaults).unwrap();
    assert_eq!(hub["spec"]["parameters"], json!([{"name": "y", "value": "1"}]));
}
