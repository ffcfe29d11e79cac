//! Types shared by every kind: `NamespacedName` (`ns/name`), `PipelineIdentifier`
//! (`name[:version]`), named values, artifacts, the artifact path grammar and the common status.
//! Each string form parses and renders canonically, exactly as the reference serialises it.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use regex::Regex;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Pattern of a `spec.provider` reference: the namespace is mandatory.
pub const PROVIDER_REFERENCE_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Pattern of a `spec.pipeline` reference (`name` or `name:version`).
pub const PIPELINE_IDENTIFIER_PATTERN: &str = r"^[\w\-]+(?::[\w\-_.]+)?$";
/// Pattern of an artifact path (`Component:Artifact[:index][filter]`).
pub const ARTIFACT_PATH_PATTERN: &str = r"^([^\[\]:]+):([^\[\]:]+)(?::(\d*))?(?:\[([^\[\]:]+)\])?$";

/// Why a string form did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("namespaced name {0:?} has more than one '/'")]
    TooManySeparators(String),
    #[error("namespaced name {0:?} must have a non-empty namespace and name around '/'")]
    EmptyPart(String),
    #[error("artifact path {0:?} does not match Component:Artifact[:index][filter]")]
    ArtifactPath(String),
    #[error("artifact path {0:?} has an index that does not fit in 64 bits")]
    ArtifactIndex(String),
}

/// A reference to a namespaced object, written `namespace/name` or, where the namespace
/// defaults from context, just `name`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamespacedName {
    /// Empty when the reference was written without a namespace.
    pub namespace: String,
    pub name: String,
}

impl NamespacedName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }

    pub fn name_only(name: impl Into<String>) -> Self {
        Self { namespace: String::new(), name: name.into() }
    }

    pub fn is_empty(&self) -> bool {
        self.namespace.is_empty() && self.name.is_empty()
    }

    /// The namespace, or `default_namespace` when the reference was written without one.
    pub fn namespace_or<'a>(&'a self, default_namespace: &'a str) -> &'a str {
        if self.namespace.is_empty() { default_namespace } else { &self.namespace }
    }

    /// The same reference with the namespace filled in from `default_namespace` if absent.
    pub fn qualified(&self, default_namespace: &str) -> Self {
        Self::new(self.namespace_or(default_namespace), self.name.clone())
    }

    /// `namespace-name`, the form providers use for display names.
    pub fn dashed(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}-{}", self.namespace, self.name)
        }
    }
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

impl FromStr for NamespacedName {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(name), None, _) => Ok(Self::name_only(name)),
            (Some(namespace), Some(name), None) => {
                if namespace.is_empty() || name.is_empty() {
                    Err(ParseError::EmptyPart(s.to_owned()))
                } else {
                    Ok(Self::new(namespace, name))
                }
            }
            _ => Err(ParseError::TooManySeparators(s.to_owned())),
        }
    }
}

impl Serialize for NamespacedName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NamespacedName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Cow::<str>::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for NamespacedName {
    fn schema_name() -> Cow<'static, str> {
        "NamespacedName".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string" })
    }
}

/// A pipeline reference: `name`, or `name:version` to pin a version.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PipelineIdentifier {
    pub name: String,
    /// Empty means "the pipeline's current version".
    pub version: String,
}

impl PipelineIdentifier {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self { name: name.into(), version: version.into() }
    }

    pub fn is_empty(&self) -> bool {
        self.name.is_empty() && self.version.is_empty()
    }
}

impl fmt::Display for PipelineIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.version.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}:{}", self.name, self.version)
        }
    }
}

impl FromStr for PipelineIdentifier {
    type Err = std::convert::Infallible;

    /// Splits on `:`; the version is taken only when there are exactly two parts.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        Ok(match parts.as_slice() {
            [name, version] => Self::new(*name, *version),
            _ => Self::new(parts.first().copied().unwrap_or_default(), ""),
        })
    }
}

impl Serialize for PipelineIdentifier {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PipelineIdentifier {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Cow::<str>::deserialize(deserializer)?;
        let Ok(identifier) = raw.parse();
        Ok(identifier)
    }
}

impl JsonSchema for PipelineIdentifier {
    fn schema_name() -> Cow<'static, str> {
        "PipelineIdentifier".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": PIPELINE_IDENTIFIER_PATTERN })
    }
}

/// A name and a plain string value.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub struct NamedValue {
    /// The name.
    pub name: String,
    /// The value.
    pub value: String,
}

impl NamedValue {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self { name: name.into(), value: value.into() }
    }
}

/// An output artifact of a finished run: its declared name, where it was stored and the
/// metadata the provider reported for it (what trigger conditions look at).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Artifact {
    /// The name declared in the run's `artifacts[]`.
    pub name: String,
    /// Where the provider stored it (e.g. a `gs://` URI).
    pub location: String,
    /// The artifact's metadata as the provider reported it (e.g. `{"accuracy": 0.95}`); omitted
    /// when empty.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schemars(schema_with = "super::schema::json_value_map")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl Artifact {
    pub fn new(name: impl Into<String>, location: impl Into<String>) -> Self {
        Self { name: name.into(), location: location.into(), metadata: serde_json::Map::new() }
    }

    /// The artifact with `metadata`.
    pub fn with_metadata(mut self, metadata: serde_json::Map<String, serde_json::Value>) -> Self {
        self.metadata = metadata;
        self
    }
}

/// Where to find an artifact among a run's outputs:
/// `Component:Artifact[:index][filter]`. The filter is a boolean expression over the
/// artifact's metadata (for example `pushed == 1`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArtifactPath {
    /// The pipeline component that produced the artifact.
    pub component: String,
    /// The component's output name.
    pub artifact: String,
    /// Which of several outputs of that name; 0 when absent.
    pub index: u64,
    /// The filter expression, without its brackets; empty when absent.
    pub filter: String,
}

static ARTIFACT_PATH_REGEX: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Regex::new(ARTIFACT_PATH_PATTERN).expect("the artifact path pattern is a valid regex")
});

impl ArtifactPath {
    pub fn new(component: impl Into<String>, artifact: impl Into<String>) -> Self {
        Self { component: component.into(), artifact: artifact.into(), index: 0, filter: String::new() }
    }

    pub fn with_index(mut self, index: u64) -> Self {
        self.index = index;
        self
    }

    pub fn with_filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = filter.into();
        self
    }
}

impl fmt::Display for ArtifactPath {
    /// The canonical form always carries the index: `Pusher:pushed_model:0[pushed == 1]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.component, self.artifact, self.index)?;
        if !self.filter.is_empty() {
            write!(f, "[{}]", self.filter)?;
        }
        Ok(())
    }
}

impl FromStr for ArtifactPath {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let captures =
            ARTIFACT_PATH_REGEX.captures(s).ok_or_else(|| ParseError::ArtifactPath(s.to_owned()))?;
        let group = |i: usize| captures.get(i).map_or("", |m| m.as_str());
        let index = match group(3) {
            "" => 0,
            digits => digits.parse().map_err(|_| ParseError::ArtifactIndex(s.to_owned()))?,
        };
        Ok(Self {
            component: group(1).to_owned(),
            artifact: group(2).to_owned(),
            index,
            filter: group(4).to_owned(),
        })
    }
}

impl Serialize for ArtifactPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ArtifactPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Cow::<str>::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for ArtifactPath {
    fn schema_name() -> Cow<'static, str> {
        "ArtifactPath".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": ARTIFACT_PATH_PATTERN })
    }
}

/// An artifact a run exposes in its completion events, found by `path`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub struct OutputArtifact {
    /// The name the artifact is published under.
    pub name: String,
    /// Where to find it: `Component:Artifact[:index][filter]`.
    pub path: ArtifactPath,
}

impl OutputArtifact {
    pub fn new(name: impl Into<String>, path: ArtifactPath) -> Self {
        Self { name: name.into(), path }
    }
}

/// The provider that synchronised a resource and the resource's id there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProviderAndId {
    /// The Provider (`namespace/name`) that last synchronised the resource.
    #[serde(default, skip_serializing_if = "NamespacedName::is_empty")]
    pub name: NamespacedName,
    /// The resource's id on the provider; empty when it does not exist there.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
}

/// The status every provider-synchronised kind shares.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The provider that last synchronised the resource and its id there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderAndId>,
    /// The version (hash) of the spec last submitted to the provider.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// The `metadata.generation` last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions; `Synchronized` carries the synchronisation state in its reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::conditions")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_name_parses_and_renders() {
        let cases = [
            ("a/b", Some(NamespacedName::new("a", "b")), "a/b"),
            ("b", Some(NamespacedName::name_only("b")), "b"),
            ("", Some(NamespacedName::default()), ""),
            ("a/", None, ""),
            ("/b", None, ""),
            ("a/b/c", None, ""),
        ];
        for (input, expected, rendered) in cases {
            let parsed = input.parse::<NamespacedName>().ok();
            assert_eq!(parsed, expected, "parsing {input:?}");
            if let Some(parsed) = parsed {
                assert_eq!(parsed.to_string(), rendered);
            }
        }
    }

    #[test]
    fn namespaced_name_json_is_a_string() {
        let name = NamespacedName::new("ns", "rc");
        assert_eq!(serde_json::to_string(&name).ok().as_deref(), Some("\"ns/rc\""));
        assert!(serde_json::from_str::<NamespacedName>("\"a/b/c\"").is_err());
        assert_eq!(NamespacedName::name_only("rc").qualified("ns"), name);
        assert_eq!(name.dashed(), "ns-rc");
    }

    #[test]
    fn pipeline_identifier_parses_like_the_reference() {
        assert_eq!("p".parse(), Ok(PipelineIdentifier::new("p", "")));
        assert_eq!("p:v1-abc".parse(), Ok(PipelineIdentifier::new("p", "v1-abc")));
        assert_eq!("p:a:b".parse(), Ok(PipelineIdentifier::new("p", "")));
        assert_eq!(PipelineIdentifier::new("p", "v1").to_string(), "p:v1");
        assert_eq!(PipelineIdentifier::new("p", "").to_string(), "p");
    }

    #[test]
    fn artifact_paths_render_canonically() {
        let cases = [
            ("Pusher:pushed_model", "Pusher:pushed_model:0"),
            ("Pusher:pushed_model:", "Pusher:pushed_model:0"),
            ("Pusher:pushed_model:2", "Pusher:pushed_model:2"),
            ("Pusher:pushed_model[pushed == 1]", "Pusher:pushed_model:0[pushed == 1]"),
            ("Pusher:pushed_model:1[pushed == 1]", "Pusher:pushed_model:1[pushed == 1]"),
        ];
        for (input, canonical) in cases {
            let parsed: ArtifactPath = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(parsed.to_string(), canonical);
            assert_eq!(canonical.parse::<ArtifactPath>().ok(), Some(parsed));
        }
    }

    #[test]
    fn malformed_artifact_paths_are_rejected() {
        for input in [
            "",
            "Pusher",
            ":a",
            "a:",
            "a:b:c",
            "a:b[x",
            "a:b[]",
            "a:b[x:y]",
            "a[b]:c",
            "a:b:99999999999999999999999",
        ] {
            assert!(input.parse::<ArtifactPath>().is_err(), "{input:?} should not parse");
        }
    }
}
