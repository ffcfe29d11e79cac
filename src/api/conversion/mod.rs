//! Conversion between the served versions, hub and spoke through the stored `v1beta1`. Pure:
//! an object's JSON and the operator's conversion defaults in, the object in the desired version
//! out. Lossless both ways: what the target version cannot hold rides in the
//! [`remainder::ANNOTATION`] and is restored on the way back.

mod mapping;
pub mod remainder;

use serde_json::{Map, Value};

use super::{GROUP, NamespacedName, VERSION as HUB};
use remainder::{ANNOTATION, Remainder};

/// The versions an object may be converted between.
pub const VERSIONS: [&str; 3] = [HUB, super::v1alpha6::VERSION, super::v1alpha5::VERSION];

/// What a spoke leaves for the operator to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// The Provider of objects whose version has no `provider` field (`v1alpha5`).
    pub default_provider: Option<NamespacedName>,
    /// The framework of a `v1alpha5` Pipeline without `tfxComponents`.
    pub default_framework: String,
    /// The tfx compiler image of a Provider converted from `v1alpha5` or `v1alpha6`; its own
    /// `image` when unset.
    pub default_tfx_image: Option<String>,
}

impl Default for Defaults {
    fn default() -> Self {
        Self { default_provider: None, default_framework: "tfx".into(), default_tfx_image: None }
    }
}

impl Defaults {
    /// The namespace of a Provider named without one in `v1alpha6`: the default Provider's,
    /// else the object's own.
    fn provider_namespace<'a>(&'a self, object_namespace: &'a str) -> &'a str {
        self.default_provider.as_ref().map_or(object_namespace, |p| p.namespace.as_str())
    }
}

/// Why an object could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    #[error("{object}: {field}: {message}")]
    Invalid { object: String, field: String, message: String },
    #[error(
        "{object}: version {version:?} is not served; the served versions are v1beta1, v1alpha6 and v1alpha5"
    )]
    UnknownVersion { object: String, version: String },
    #[error("{object}: kind {kind:?} is not a kind of {GROUP}")]
    UnknownKind { object: String, kind: String },
    #[error("{object}: annotation {ANNOTATION}: {message}")]
    Remainder { object: String, message: String },
}

impl ConversionError {
    /// A stable name for the kind of failure, for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid-field",
            Self::UnknownVersion { .. } => "unknown-version",
            Self::UnknownKind { .. } => "unknown-kind",
            Self::Remainder { .. } => "invalid-remainder",
        }
    }
}

/// The kinds of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pipeline,
    Run,
    RunConfiguration,
    RunSchedule,
    Experiment,
    Provider,
}

impl Kind {
    fn parse(kind: &str) -> Option<Self> {
        Some(match kind {
            "Pipeline" => Self::Pipeline,
            "Run" => Self::Run,
            "RunConfiguration" => Self::RunConfiguration,
            "RunSchedule" => Self::RunSchedule,
            "Experiment" => Self::Experiment,
            "Provider" => Self::Provider,
            _ => return None,
        })
    }
}

/// The spoke versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spoke {
    V1alpha5,
    V1alpha6,
}

impl Spoke {
    fn parse(version: &str) -> Option<Self> {
        match version {
            "v1alpha5" => Some(Self::V1alpha5),
            "v1alpha6" => Some(Self::V1alpha6),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::V1alpha5 => super::v1alpha5::VERSION,
            Self::V1alpha6 => super::v1alpha6::VERSION,
        }
    }
}

/// Names an object in messages: `Pipeline ml-team/training-pipeline (v1alpha5)`.
pub(crate) struct Describe<'a> {
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
    version: &'a str,
}

impl std::fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.kind.is_empty() { "object" } else { self.kind };
        match (self.namespace, self.name) {
            ("", "") => write!(f, "{kind} without a name ({})", self.version),
            ("", name) => write!(f, "{kind} {name} ({})", self.version),
            (namespace, name) => write!(f, "{kind} {namespace}/{name} ({})", self.version),
        }
    }
}

fn str_at<'a>(object: &'a Map<String, Value>, path: &[&str]) -> &'a str {
    let mut current = object.get(path[0]);
    for key in &path[1..] {
        current = current.and_then(|v| v.get(key));
    }
    current.and_then(Value::as_str).unwrap_or_default()
}

/// Converts `object` to `desired_api_version` (`pipelines.kubeflow.org/<version>`).
pub fn convert(
    object: Value,
    desired_api_version: &str,
    defaults: &Defaults,
) -> Result<Value, ConversionError> {
    let Value::Object(mut object) = object else {
        return Err(ConversionError::Invalid {
            object: "object".into(),
            field: "(root)".into(),
            message: "not a JSON object".into(),
        });
    };
    let (kind_name, namespace, name) = (
        str_at(&object, &["kind"]).to_owned(),
        str_at(&object, &["metadata", "namespace"]).to_owned(),
        str_at(&object, &["metadata", "name"]).to_owned(),
    );
    let api_version = str_at(&object, &["apiVersion"]).to_owned();
    let describe = |version: &str| {
        Describe { kind: &kind_name, namespace: &namespace, name: &name, version }.to_string()
    };
    let version_of = |api_version: &str| -> Result<String, ConversionError> {
        match api_version.split_once('/') {
            Some((group, version)) if group == GROUP && VERSIONS.contains(&version) => Ok(version.to_owned()),
            _ => Err(ConversionError::UnknownVersion {
                object: describe(api_version),
                version: api_version.into(),
            }),
        }
    };
    let from = version_of(&api_version)?;
    let to = version_of(desired_api_version)?;
    let kind = Kind::parse(&kind_name)
        .ok_or_else(|| ConversionError::UnknownKind { object: describe(&from), kind: kind_name.clone() })?;
    if from == to {
        return Ok(Value::Object(object));
    }
    let mut remainder = match annotation(&object) {
        Some(text) => Remainder::parse(text)
            .map_err(|message| ConversionError::Remainder { object: describe(&from), message })?,
        None => Remainder::default(),
    };
    let context = mapping::Context { kind, namespace: &namespace, defaults };
    let invalid = |version: &str| {
        let object = describe(version);
        move |(field, message): (String, String)| ConversionError::Invalid {
            object: object.clone(),
            field,
            message,
        }
    };
    if let Some(spoke) = Spoke::parse(&from) {
        let hub = spoke_to_hub(&object, spoke, &mut remainder, &context).map_err(invalid(&from))?;
        object = hub;
    } else {
        mapping::validate_hub(kind, &object).map_err(invalid(&from))?;
    }
    if let Some(spoke) = Spoke::parse(&to) {
        object = hub_to_spoke(&object, spoke, &mut remainder, &context).map_err(invalid(HUB))?;
    }
    object.insert("apiVersion".into(), Value::String(desired_api_version.to_owned()));
    set_annotation(&mut object, &remainder);
    Ok(Value::Object(object))
}

const NOT_DATA: [&str; 3] = ["apiVersion", "kind", "metadata"];

type Mapped = Result<Map<String, Value>, (String, String)>;

fn spoke_to_hub(
    object: &Map<String, Value>,
    spoke: Spoke,
    remainder: &mut Remainder,
    context: &mapping::Context,
) -> Mapped {
    mapping::validate_spoke(context.kind, spoke, object)?;
    let mut hub = with_data(object, mapping::to_hub(spoke, object, context)?);
    remainder::apply(&mut hub, &remainder.take(HUB));
    mapping::validate_hub(context.kind, &hub)?;
    let back = with_data(&hub, mapping::from_hub(spoke, &hub, context)?);
    remainder.put(spoke.name(), &remainder::diff(&back, object, &NOT_DATA));
    Ok(hub)
}

fn hub_to_spoke(
    hub: &Map<String, Value>,
    spoke: Spoke,
    remainder: &mut Remainder,
    context: &mapping::Context,
) -> Mapped {
    let mut object = with_data(hub, mapping::from_hub(spoke, hub, context)?);
    remainder::apply(&mut object, &remainder.take(spoke.name()));
    let back = with_data(&object, mapping::to_hub(spoke, &object, context)?);
    remainder.put(HUB, &remainder::diff(&back, hub, &NOT_DATA));
    Ok(object)
}

/// `data` (spec, status, …) under the `apiVersion`, `kind` and `metadata` of `envelope`.
fn with_data(envelope: &Map<String, Value>, data: Map<String, Value>) -> Map<String, Value> {
    let mut object: Map<String, Value> =
        NOT_DATA.iter().filter_map(|key| Some(((*key).to_owned(), envelope.get(*key)?.clone()))).collect();
    object.extend(data);
    object
}

fn annotation(object: &Map<String, Value>) -> Option<&str> {
    object.get("metadata")?.get("annotations")?.get(ANNOTATION)?.as_str()
}

fn set_annotation(object: &mut Map<String, Value>, remainder: &Remainder) {
    let metadata = object.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(metadata) = metadata else { return };
    if remainder.is_empty() {
        if let Some(Value::Object(annotations)) = metadata.get_mut("annotations")
            && annotations.remove(ANNOTATION).is_some()
            && annotations.is_empty()
        {
            metadata.remove("annotations");
        }
        return;
    }
    let annotations = metadata.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(annotations) = annotations {
        annotations.insert(ANNOTATION.into(), Value::String(remainder.render()));
    }
}

#[cfg(test)]
mod tests;
