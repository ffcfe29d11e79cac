//! The plain field mappings between each spoke and `v1beta1`, per kind. They may lose data;
//! the remainder (see `remainder`) makes the whole conversion lossless.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::{Defaults, Kind, Spoke};
use crate::api::{self, NamespacedName, v1alpha5, v1alpha6};

type Object = Map<String, Value>;
/// A field path and what is wrong with it.
pub(super) type Problem = (String, String);

pub(super) struct Context<'a> {
    pub kind: Kind,
    pub namespace: &'a str,
    pub defaults: &'a Defaults,
}

fn check<T: DeserializeOwned>(object: &Object) -> Result<(), Problem> {
    let value = Value::Object(object.clone());
    match serde_path_to_error::deserialize::<_, T>(&value) {
        Ok(_) => Ok(()),
        Err(error) => Err((error.path().to_string(), error.inner().to_string())),
    }
}

/// Checks that `object` decodes as the `v1beta1` kind.
pub(super) fn validate_hub(kind: Kind, object: &Object) -> Result<(), Problem> {
    match kind {
        Kind::Pipeline => check::<api::Pipeline>(object),
        Kind::Run => check::<api::Run>(object),
        Kind::RunConfiguration => check::<api::RunConfiguration>(object),
        Kind::RunSchedule => check::<api::RunSchedule>(object),
        Kind::Experiment => check::<api::Experiment>(object),
        Kind::Provider => check::<api::Provider>(object),
    }
}

/// Checks that `object` decodes as the spoke's kind.
pub(super) fn validate_spoke(kind: Kind, spoke: Spoke, object: &Object) -> Result<(), Problem> {
    match (spoke, kind) {
        (Spoke::V1alpha5, Kind::Pipeline) => check::<v1alpha5::Pipeline>(object),
        (Spoke::V1alpha5, Kind::Run) => check::<v1alpha5::Run>(object),
        (Spoke::V1alpha5, Kind::RunConfiguration) => check::<v1alpha5::RunConfiguration>(object),
        (Spoke::V1alpha5, Kind::RunSchedule) => check::<v1alpha5::RunSchedule>(object),
        (Spoke::V1alpha5, Kind::Experiment) => check::<v1alpha5::Experiment>(object),
        (Spoke::V1alpha5, Kind::Provider) => check::<v1alpha5::Provider>(object),
        (Spoke::V1alpha6, Kind::Pipeline) => check::<v1alpha6::Pipeline>(object),
        (Spoke::V1alpha6, Kind::Run) => check::<v1alpha6::Run>(object),
        (Spoke::V1alpha6, Kind::RunConfiguration) => check::<v1alpha6::RunConfiguration>(object),
        (Spoke::V1alpha6, Kind::RunSchedule) => check::<v1alpha6::RunSchedule>(object),
        (Spoke::V1alpha6, Kind::Experiment) => check::<v1alpha6::Experiment>(object),
        (Spoke::V1alpha6, Kind::Provider) => check::<v1alpha6::Provider>(object),
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Builds an object, leaving out empty values as the types' serialisation does.
#[derive(Default)]
struct Out(Object);

impl Out {
    fn set(&mut self, key: &str, value: Value) -> &mut Self {
        if !is_empty(&value) {
            self.0.insert(key.to_owned(), value);
        }
        self
    }

    fn copy(&mut self, from: &Object, keys: &[&str]) -> &mut Self {
        for key in keys {
            if let Some(value) = from.get(*key) {
                self.set(key, value.clone());
            }
        }
        self
    }

    fn value(self) -> Value {
        Value::Object(self.0)
    }
}

fn field_object<'a>(from: &'a Object, key: &str) -> std::borrow::Cow<'a, Object> {
    match from.get(key) {
        Some(Value::Object(o)) => std::borrow::Cow::Borrowed(o),
        _ => std::borrow::Cow::Owned(Object::new()),
    }
}

fn string<'a>(from: &'a Object, key: &str) -> &'a str {
    from.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn list<'a>(from: &'a Object, key: &str) -> &'a [Value] {
    from.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

fn at<'a>(from: &'a Object, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(from.get(*first)?, |value, key| value.get(key))
}

/// The reason of the `Synchronized` condition.
fn synchronization_state(status: &Object) -> Value {
    list(status, "conditions")
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Synchronized"))
        .and_then(|c| c.get("reason"))
        .cloned()
        .unwrap_or(Value::Null)
}

fn name_part(reference: &str) -> &str {
    reference.rsplit_once('/').map_or(reference, |(_, name)| name)
}

/// A `v1alpha6` Provider name as a `v1beta1` reference.
fn qualified_provider(name: &str, context: &Context) -> Value {
    if name.is_empty() {
        return Value::Null;
    }
    match name.parse::<NamespacedName>() {
        Ok(parsed) if !parsed.namespace.is_empty() => Value::String(parsed.to_string()),
        _ => Value::String(format!("{}/{name}", context.defaults.provider_namespace(context.namespace))),
    }
}

fn spec_provider_to_hub(spec: &Object, spoke: Spoke, context: &Context) -> Value {
    match spoke {
        Spoke::V1alpha5 => {
            context.defaults.default_provider.as_ref().map_or(Value::Null, |p| json!(p.to_string()))
        }
        Spoke::V1alpha6 => qualified_provider(string(spec, "provider"), context),
    }
}

fn spec_provider_from_hub(spec: &Object, spoke: Spoke) -> Value {
    match spoke {
        Spoke::V1alpha5 => Value::Null,
        Spoke::V1alpha6 => json!(name_part(string(spec, "provider"))),
    }
}

const COMMON_STATUS: [&str; 3] = ["version", "observedGeneration", "conditions"];

fn status_to_hub(status: &Object, spoke: Spoke, context: &Context) -> Out {
    let mut out = Out::default();
    out.copy(status, &COMMON_STATUS);
    let (name, id) = match spoke {
        Spoke::V1alpha5 => {
            let id = status.get("providerId").cloned().unwrap_or(Value::Null);
            let name = match &context.defaults.default_provider {
                Some(provider) if !is_empty(&id) => json!(provider.to_string()),
                _ => Value::Null,
            };
            (name, id)
        }
        Spoke::V1alpha6 => {
            let provider = field_object(status, "provider");
            (qualified_provider(string(&provider, "name"), context), json!(string(&provider, "id")))
        }
    };
    out.set("provider", Out::default().set("name", name).set("id", id).clone_value());
    out
}

impl Out {
    fn clone_value(&self) -> Value {
        Value::Object(self.0.clone())
    }
}

fn status_from_hub(status: &Object, spoke: Spoke) -> Out {
    let mut out = Out::default();
    out.copy(status, &COMMON_STATUS);
    out.set("synchronizationState", synchronization_state(status));
    let provider = field_object(status, "provider");
    match spoke {
        Spoke::V1alpha5 => {
            out.set("providerId", json!(string(&provider, "id")));
        }
        Spoke::V1alpha6 => {
            let mut p = Out::default();
            p.set("name", json!(name_part(string(&provider, "name"))))
                .set("id", json!(string(&provider, "id")));
            out.set("provider", p.value());
        }
    }
    out
}

/// `runtimeParameters` (a list, or in `v1alpha5` a map) and the conversion-only `parameters`,
/// as the `v1beta1` list.
fn parameters_to_hub(spec: &Object, prefix: &str) -> Result<Value, Problem> {
    let mut parameters = Vec::new();
    match spec.get("runtimeParameters") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => parameters.extend(items.iter().cloned()),
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let value = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err((
                            format!("{prefix}runtimeParameters.{name}"),
                            "a runtime parameter's value must be a string (or a number or boolean)".into(),
                        ));
                    }
                };
                parameters.push(json!({"name": name, "value": value}));
            }
        }
        Some(_) => {
            return Err((
                format!("{prefix}runtimeParameters"),
                "must be a list of {name, value | valueFrom} or a map of name to value".into(),
            ));
        }
    }
    parameters.extend(list(spec, "parameters").iter().cloned());
    Ok(Value::Array(parameters))
}

/// The `v1beta1` parameters without what the spokes cannot hold (`valueFrom...optional`).
fn parameters_from_hub(spec: &Object) -> Value {
    let strip = |parameter: &Value| {
        let mut parameter = parameter.clone();
        if let Some(Value::Object(reference)) = parameter.pointer_mut("/valueFrom/runConfigurationRef") {
            reference.remove("optional");
        }
        parameter
    };
    Value::Array(list(spec, "parameters").iter().map(strip).collect())
}

const RUN_SPEC: [&str; 3] = ["pipeline", "experimentName", "artifacts"];

fn run_spec_to_hub(spec: &Object, spoke: Spoke, context: &Context, prefix: &str) -> Result<Object, Problem> {
    let mut out = Out::default();
    out.set("provider", spec_provider_to_hub(spec, spoke, context));
    out.copy(spec, &RUN_SPEC);
    out.set("parameters", parameters_to_hub(spec, prefix)?);
    Ok(out.0)
}

fn run_spec_from_hub(spec: &Object, spoke: Spoke) -> Object {
    let mut out = Out::default();
    out.set("provider", spec_provider_from_hub(spec, spoke));
    out.copy(spec, &RUN_SPEC);
    out.set("runtimeParameters", parameters_from_hub(spec));
    out.0
}

fn tfx_framework(components: &Value, beam_args: &Value) -> Value {
    let mut parameters = Out::default();
    parameters.set("components", components.clone()).set("beamArgs", beam_args.clone());
    json!({"name": "tfx", "parameters": parameters.value()})
}

const TFX_PATCH_PATH: &str = "/framework/parameters/beamArgs/0";

fn beam_arg_patches(beam_args: &[Value]) -> Value {
    if beam_args.is_empty() {
        return json!([]);
    }
    let ops: Vec<Value> =
        beam_args.iter().map(|arg| json!({"op": "add", "path": TFX_PATCH_PATH, "value": arg})).collect();
    json!([{"type": "json", "payload": Value::Array(ops).to_string()}])
}

/// The `defaultBeamArgs` a tfx framework's patches add; patches of another shape are left to
/// the remainder.
fn beam_args_of(framework: &Object) -> Value {
    let mut args = Vec::new();
    for patch in list(framework, "patches") {
        let Some(ops) =
            patch.get("payload").and_then(Value::as_str).and_then(|p| serde_json::from_str::<Value>(p).ok())
        else {
            continue;
        };
        for op in ops.as_array().map(Vec::as_slice).unwrap_or_default() {
            let value = op.get("value");
            let named = value.and_then(|v| Some((v.get("name")?.as_str()?, v.get("value")?.as_str()?)));
            if op.get("op").and_then(Value::as_str) == Some("add")
                && let Some((name, value)) = named
            {
                args.push(json!({"name": name, "value": value}));
            }
        }
    }
    Value::Array(args)
}

/// The plain mapping of a spoke object's data (spec, status) to `v1beta1`.
pub(super) fn to_hub(spoke: Spoke, object: &Object, context: &Context) -> Result<Object, Problem> {
    let spec = field_object(object, "spec");
    let status = field_object(object, "status");
    let mut out_spec = Out::default();
    let mut out_status = status_to_hub(&status, spoke, context);
    match context.kind {
        Kind::Pipeline => {
            out_spec.set("provider", spec_provider_to_hub(&spec, spoke, context));
            out_spec.copy(&spec, &["image", "env"]);
            let components = spec.get("tfxComponents").cloned().unwrap_or(Value::Null);
            let beam_args = spec.get("beamArgs").cloned().unwrap_or(Value::Null);
            let framework = if is_empty(&components) && is_empty(&beam_args) {
                json!({"name": context.defaults.default_framework, "parameters": {}})
            } else {
                tfx_framework(&components, &beam_args)
            };
            out_spec.0.insert("framework".into(), framework);
        }
        Kind::Run => {
            out_spec.0 = run_spec_to_hub(&spec, spoke, context, "spec.")?;
            run_status_to_hub(&status, &mut out_status);
        }
        Kind::RunConfiguration => {
            out_spec.set(
                "run",
                Value::Object(run_spec_to_hub(&field_object(&spec, "run"), spoke, context, "spec.run.")?),
            );
            let triggers = field_object(&spec, "triggers");
            let mut out_triggers = Out::default();
            out_triggers.copy(&triggers, &["onChange", "runConfigurations"]);
            let schedules = match spoke {
                Spoke::V1alpha5 => Value::Array(
                    list(&triggers, "schedules").iter().map(|cron| json!({"cronExpression": cron})).collect(),
                ),
                Spoke::V1alpha6 => triggers.get("schedules").cloned().unwrap_or(Value::Null),
            };
            out_triggers.set("schedules", schedules);
            out_spec.set("triggers", out_triggers.value());
            out_status = rc_status_to_hub(&status, context);
        }
        Kind::RunSchedule => {
            out_spec.set("provider", spec_provider_to_hub(&spec, spoke, context));
            out_spec.copy(&spec, &RUN_SPEC);
            out_spec.set("parameters", parameters_to_hub(&spec, "spec.")?);
            let schedule = match spoke {
                Spoke::V1alpha5 => {
                    Out::default().set("cronExpression", json!(string(&spec, "schedule"))).clone_value()
                }
                Spoke::V1alpha6 => spec.get("schedule").cloned().unwrap_or(Value::Null),
            };
            out_spec.set("schedule", schedule);
        }
        Kind::Experiment => {
            out_spec.set("provider", spec_provider_to_hub(&spec, spoke, context));
            out_spec.copy(&spec, &["description"]);
        }
        Kind::Provider => {
            out_spec.copy(&spec, &["executionMode", "serviceAccount", "pipelineRootStorage", "parameters"]);
            let image = string(&spec, "image");
            let service_image = match spoke {
                Spoke::V1alpha5 => image,
                Spoke::V1alpha6 => string(&spec, "serviceImage"),
            };
            out_spec.0.insert("serviceImage".into(), json!(service_image));
            let tfx_image = context.defaults.default_tfx_image.as_deref().unwrap_or(image);
            let mut framework = Out::default();
            framework
                .set("name", json!("tfx"))
                .set("image", json!(tfx_image))
                .set("patches", beam_arg_patches(list(&spec, "defaultBeamArgs")));
            out_spec.set("frameworks", json!([framework.value()]));
        }
    }
    let mut data = Object::new();
    data.insert("spec".into(), out_spec.value());
    if !out_status.0.is_empty() {
        data.insert("status".into(), out_status.value());
    }
    Ok(data)
}

fn run_status_to_hub(status: &Object, out: &mut Out) {
    out.copy(status, &["completionState", "markedCompletedAt"]);
    let mut dependencies = Out::default();
    dependencies.set(
        "pipeline",
        Out::default()
            .copy(status, &["observedPipelineVersion"])
            .renamed("observedPipelineVersion", "version"),
    );
    dependencies.copy(&field_object(status, "dependencies"), &["runConfigurations"]);
    out.set("dependencies", dependencies.value());
}

impl Out {
    fn renamed(&mut self, from: &str, to: &str) -> Value {
        let mut object = self.0.clone();
        if let Some(value) = object.remove(from) {
            object.insert(to.to_owned(), value);
        }
        Value::Object(object)
    }
}

fn rc_status_to_hub(status: &Object, context: &Context) -> Out {
    let mut out = Out::default();
    out.set("provider", qualified_provider(string(status, "provider"), context));
    out.copy(status, &["observedGeneration", "conditions", "latestRuns"]);
    let mut dependencies = Out::default();
    dependencies.set(
        "pipeline",
        Out::default().set("version", json!(string(status, "observedPipelineVersion"))).clone_value(),
    );
    dependencies.copy(&field_object(status, "dependencies"), &["runConfigurations"]);
    out.set("dependencies", dependencies.value());
    let mut triggers = Out::default();
    triggers.set(
        "pipeline",
        Out::default().set("version", json!(string(status, "triggeredPipelineVersion"))).clone_value(),
    );
    triggers.copy(&field_object(status, "triggers"), &["runSpec", "runConfigurations"]);
    out.set("triggers", triggers.value());
    out
}

/// The plain mapping of a `v1beta1` object's data to the spoke.
pub(super) fn from_hub(spoke: Spoke, hub: &Object, context: &Context) -> Result<Object, Problem> {
    let kind = context.kind;
    let spec = field_object(hub, "spec");
    let status = field_object(hub, "status");
    let mut out_spec = Out::default();
    let mut out_status = status_from_hub(&status, spoke);
    match kind {
        Kind::Pipeline => {
            out_spec.set("provider", spec_provider_from_hub(&spec, spoke));
            out_spec.copy(&spec, &["image", "env"]);
            let framework = field_object(&spec, "framework");
            if string(&framework, "name") == "tfx" {
                let parameters = field_object(&framework, "parameters");
                out_spec.copy(&parameters, &["beamArgs"]);
                if let Some(components) = parameters.get("components").filter(|c| c.is_string()) {
                    out_spec.set("tfxComponents", components.clone());
                }
            }
        }
        Kind::Run => {
            out_spec.0 = run_spec_from_hub(&spec, spoke);
            out_status.copy(&status, &["completionState", "markedCompletedAt"]);
            let dependencies = field_object(&status, "dependencies");
            out_status.set(
                "observedPipelineVersion",
                at(&dependencies, &["pipeline", "version"]).cloned().unwrap_or(Value::Null),
            );
            out_status.set(
                "dependencies",
                Out::default().copy(&dependencies, &["runConfigurations"]).clone_value(),
            );
        }
        Kind::RunConfiguration => {
            out_spec.set("run", Value::Object(run_spec_from_hub(&field_object(&spec, "run"), spoke)));
            let triggers = field_object(&spec, "triggers");
            let mut out_triggers = Out::default();
            out_triggers.copy(&triggers, &["onChange", "runConfigurations"]);
            let schedules = match spoke {
                Spoke::V1alpha5 => Value::Array(
                    list(&triggers, "schedules")
                        .iter()
                        .map(|s| s.get("cronExpression").cloned().unwrap_or_else(|| json!("")))
                        .collect(),
                ),
                Spoke::V1alpha6 => triggers.get("schedules").cloned().unwrap_or(Value::Null),
            };
            out_triggers.set("schedules", schedules);
            out_spec.set("triggers", out_triggers.value());
            out_status = rc_status_from_hub(&status);
        }
        Kind::RunSchedule => {
            out_spec.set("provider", spec_provider_from_hub(&spec, spoke));
            out_spec.copy(&spec, &RUN_SPEC);
            out_spec.set("runtimeParameters", spec.get("parameters").cloned().unwrap_or(Value::Null));
            let schedule = field_object(&spec, "schedule");
            match spoke {
                Spoke::V1alpha5 => out_spec.set("schedule", json!(string(&schedule, "cronExpression"))),
                Spoke::V1alpha6 => out_spec.set("schedule", Value::Object(schedule.into_owned())),
            };
        }
        Kind::Experiment => {
            out_spec.set("provider", spec_provider_from_hub(&spec, spoke));
            out_spec.copy(&spec, &["description"]);
        }
        Kind::Provider => {
            out_spec.copy(&spec, &["executionMode", "serviceAccount", "pipelineRootStorage", "parameters"]);
            let frameworks = list(&spec, "frameworks");
            let tfx = frameworks.iter().filter_map(Value::as_object).find(|f| string(f, "name") == "tfx");
            let tfx_image = tfx.map(|f| string(f, "image")).unwrap_or_default();
            out_spec.set("defaultBeamArgs", tfx.map(beam_args_of).unwrap_or(Value::Null));
            match spoke {
                Spoke::V1alpha5 => {
                    out_spec.set("image", json!(string(&spec, "serviceImage")));
                }
                Spoke::V1alpha6 => {
                    out_spec.set("image", json!(tfx_image)).copy(&spec, &["serviceImage"]);
                }
            }
        }
    }
    let mut data = Object::new();
    data.insert("spec".into(), out_spec.value());
    if !out_status.0.is_empty() {
        data.insert("status".into(), out_status.value());
    }
    Ok(data)
}

fn rc_status_from_hub(status: &Object) -> Out {
    let mut out = Out::default();
    out.set("provider", json!(name_part(string(status, "provider"))));
    out.copy(status, &["observedGeneration", "conditions", "latestRuns"]);
    out.set("synchronizationState", synchronization_state(status));
    let dependencies = field_object(status, "dependencies");
    out.set(
        "observedPipelineVersion",
        at(&dependencies, &["pipeline", "version"]).cloned().unwrap_or(Value::Null),
    );
    out.set("dependencies", Out::default().copy(&dependencies, &["runConfigurations"]).clone_value());
    let triggers = field_object(status, "triggers");
    out.set(
        "triggeredPipelineVersion",
        at(&triggers, &["pipeline", "version"]).cloned().unwrap_or(Value::Null),
    );
    out.set("triggers", Out::default().copy(&triggers, &["runSpec", "runConfigurations"]).clone_value());
    out
}
