//! Spec hashing and versions: the NUL-separated SHA-1 `ObjectHasher`, Go-style canonical JSON,
//! the Docker image reference parser behind Pipeline versions, and the per-kind hashes and
//! versions that decide when a resource must be re-synchronised.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

use jiff::tz::TimeZone;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use regex::Regex;
use serde_json::Value;
use sha1::{Digest, Sha1};

use super::experiment::ExperimentSpec;
use super::pipeline::PipelineSpec;
use super::run::{Parameter, RunSpec};
use super::run_schedule::RunScheduleSpec;

/// Written after every field so that adjacent fields cannot run into each other.
const FIELD_SEPARATOR: [u8; 1] = [0];

/// SHA-1 over a stream of fields, each terminated by a NUL byte.
#[derive(Clone)]
pub struct ObjectHasher {
    hasher: Sha1,
}

impl Default for ObjectHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl ObjectHasher {
    pub fn new() -> Self {
        Self { hasher: Sha1::new() }
    }

    /// The UTF-8 bytes of `value`, then NUL.
    pub fn write_string_field(&mut self, value: &str) {
        self.hasher.update(value.as_bytes());
        self.write_field_separator();
    }

    /// Key/value pairs sorted bytewise by key, then value; each key and value as a string
    /// field; then one extra NUL (so an empty list writes a single NUL).
    pub fn write_kv_list_field<I, K, V>(&mut self, items: I)
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut sorted: Vec<(K, V)> = items.into_iter().collect();
        sorted.sort_by(|(k1, v1), (k2, v2)| {
            k1.as_ref().cmp(k2.as_ref()).then_with(|| v1.as_ref().cmp(v2.as_ref()))
        });
        for (key, value) in &sorted {
            self.write_string_field(key.as_ref());
            self.write_string_field(value.as_ref());
        }
        self.write_field_separator();
    }

    /// The items in `compare` order (a stable sort of a copy), each written by `write`, then
    /// one extra NUL.
    pub fn write_list<T>(
        &mut self,
        items: &[T],
        mut compare: impl FnMut(&T, &T) -> Ordering,
        mut write: impl FnMut(&mut Self, &T),
    ) {
        let mut sorted: Vec<&T> = items.iter().collect();
        sorted.sort_by(|a, b| compare(a, b));
        for item in sorted {
            write(self, item);
        }
        self.write_field_separator();
    }

    /// Per key in sorted order: the key as a string field, then, unless the value is
    /// `null` (the reference's nil pointer), its canonical JSON as a string field.
    /// No trailing extra NUL, as the reference writes it.
    pub fn write_json_map_field(&mut self, map: &BTreeMap<String, Value>) {
        for (key, value) in map {
            self.write_string_field(key);
            if !value.is_null() {
                self.write_string_field(&canonical_json(value));
            }
        }
    }

    /// The 20-byte SHA-1 digest of everything written.
    pub fn sum(self) -> [u8; 20] {
        self.hasher.finalize().into()
    }

    fn write_field_separator(&mut self) {
        self.hasher.update(FIELD_SEPARATOR);
    }
}

/// The short version of a digest: its first 3 bytes as 6 lowercase hex digits.
pub fn short_version(digest: &[u8; 20]) -> String {
    hex::encode(&digest[..3])
}

/// Serialises `value` as Go's `encoding/json` would after decoding it into `interface{}`:
/// object keys sorted, no whitespace, every number through `float64`, and Go's string
/// escaping (HTML characters, U+2028/U+2029 and control characters).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical_json(&mut out, value);
    out
}

fn write_canonical_json(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_f64() {
            Some(f) => out.push_str(&go_float(f)),
            None => out.push_str(&n.to_string()),
        },
        Value::String(s) => write_go_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by_key(|(key, _)| *key);
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_string(out, key);
                out.push(':');
                write_canonical_json(out, item);
            }
            out.push('}');
        }
    }
}

/// A float64 as `encoding/json` writes it: `strconv.FormatFloat` with the shortest exact
/// digits, in `'f'` form unless the magnitude is below 1e-6 or at least 1e21, where the `'e'`
/// form is used with a minimal exponent (`1e-7`, `1e+21`).
fn go_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Rust's `{:e}` gives the same shortest digits as Go, written `1.5e-7` / `1e21`.
        let formatted = format!("{f:e}");
        match formatted.split_once('e') {
            Some((mantissa, exponent)) if exponent.starts_with('-') => format!("{mantissa}e{exponent}"),
            Some((mantissa, exponent)) => format!("{mantissa}e+{exponent}"),
            None => formatted,
        }
    } else {
        // Display also gives the shortest digits that round-trip, without an exponent.
        format!("{f}")
    }
}

/// A JSON string literal escaped like Go's `encoding/json` with HTML escaping on.
fn write_go_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Go 1.22+ (the reference builds with Go 1.26) writes these two short forms.
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The SHA-1 of a Pipeline spec: image, env, framework name, framework parameters.
pub fn pipeline_hash(spec: &PipelineSpec) -> [u8; 20] {
    let mut hasher = ObjectHasher::new();
    hasher.write_string_field(&spec.image);
    hasher.write_kv_list_field(spec.env.iter().map(|e| (&e.name, &e.value)));
    hasher.write_string_field(&spec.framework.name);
    hasher.write_json_map_field(&spec.framework.parameters);
    hasher.sum()
}

/// The Pipeline version: `<tag>-<h>` when `spec.image` is a Docker reference with a tag
/// (`latest` when it names a repository only), otherwise just `<h>` (an unparsable image, or
/// a digest without a tag). `<h>` is the short hash.
pub fn pipeline_version(spec: &PipelineSpec) -> String {
    let short = short_version(&pipeline_hash(spec));
    match parse_image_reference(&spec.image) {
        Some(ImageReference { tag: Some(tag), .. }) => format!("{tag}-{short}"),
        Some(ImageReference { tag: None, digest: None }) => format!("latest-{short}"),
        _ => short,
    }
}

/// The SHA-1 of an Experiment spec: its description.
pub fn experiment_hash(spec: &ExperimentSpec) -> [u8; 20] {
    let mut hasher = ObjectHasher::new();
    hasher.write_string_field(&spec.description);
    hasher.sum()
}

/// The Experiment version: the short hash.
pub fn experiment_version(spec: &ExperimentSpec) -> String {
    short_version(&experiment_hash(spec))
}

/// Writes the hashed RunSpec fields: pipeline (`name[:version]`), experiment name,
/// parameters, artifacts (`name` → canonical path).
fn write_run_spec(hasher: &mut ObjectHasher, spec: &RunSpec) {
    hasher.write_string_field(&spec.pipeline.to_string());
    hasher.write_string_field(&spec.experiment_name);
    hasher.write_list(&spec.parameters, compare_parameters, write_parameter);
    hasher.write_kv_list_field(spec.artifacts.iter().map(|a| (a.name.as_str(), a.path.to_string())));
}

/// The reference's parameter order: name, value, literal before `valueFrom`, ref name,
/// output artifact, non-optional before optional. As written in the reference, the ref step
/// is entered when the namespace or the name differs but compares only the names, so refs
/// differing only in namespace compare equal there and the later steps are skipped.
fn compare_parameters(p1: &Parameter, p2: &Parameter) -> Ordering {
    p1.name.cmp(&p2.name).then_with(|| p1.value.cmp(&p2.value)).then_with(|| {
        match (&p1.value_from, &p2.value_from) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(v1), Some(v2)) => {
                let (r1, r2) = (&v1.run_configuration_ref, &v2.run_configuration_ref);
                if r1.name != r2.name {
                    return r1.name.name.cmp(&r2.name.name);
                }
                r1.output_artifact.cmp(&r2.output_artifact).then_with(|| r1.optional.cmp(&r2.optional))
            }
        }
    })
}

/// Name and value; for a `valueFrom` parameter also the ref's name, namespace, output
/// artifact and optional flag.
fn write_parameter(hasher: &mut ObjectHasher, parameter: &Parameter) {
    hasher.write_string_field(&parameter.name);
    hasher.write_string_field(&parameter.value);
    if let Some(value_from) = &parameter.value_from {
        let reference = &value_from.run_configuration_ref;
        hasher.write_string_field(&reference.name.name);
        hasher.write_string_field(&reference.name.namespace);
        hasher.write_string_field(&reference.output_artifact);
        hasher.write_string_field(if reference.optional { "true" } else { "false" });
    }
}

/// The SHA-1 of a RunSpec alone, as RunConfigurations track it.
pub fn run_spec_hash(spec: &RunSpec) -> [u8; 20] {
    let mut hasher = ObjectHasher::new();
    write_run_spec(&mut hasher, spec);
    hasher.sum()
}

/// The RunSpec version recorded in a RunConfiguration's `status.triggers.runSpec.version`.
pub fn run_spec_version(spec: &RunSpec) -> String {
    short_version(&run_spec_hash(spec))
}

/// The SHA-1 of a Run: its spec, then the pipeline version it observed
/// (`status.dependencies.pipeline.version`). Used whole to de-duplicate runs.
pub fn run_hash(spec: &RunSpec, observed_pipeline_version: &str) -> [u8; 20] {
    let mut hasher = ObjectHasher::new();
    write_run_spec(&mut hasher, spec);
    hasher.write_string_field(observed_pipeline_version);
    hasher.sum()
}

/// The Run version: the short form of [`run_hash`].
pub fn run_version(spec: &RunSpec, observed_pipeline_version: &str) -> String {
    short_version(&run_hash(spec, observed_pipeline_version))
}

/// The SHA-1 of a RunSchedule spec: pipeline, experiment, parameters, artifacts, cron
/// expression, then the start and end times when set (Go `time.Time.String()` form, in UTC).
pub fn run_schedule_hash(spec: &RunScheduleSpec) -> [u8; 20] {
    let mut hasher = ObjectHasher::new();
    hasher.write_string_field(&spec.pipeline.to_string());
    hasher.write_string_field(&spec.experiment_name);
    hasher.write_kv_list_field(spec.parameters.iter().map(|p| (&p.name, &p.value)));
    hasher.write_kv_list_field(spec.artifacts.iter().map(|a| (a.name.as_str(), a.path.to_string())));
    hasher.write_string_field(&spec.schedule.cron_expression);
    if let Some(start) = &spec.schedule.start_time {
        hasher.write_string_field(&go_time_string(start));
    }
    if let Some(end) = &spec.schedule.end_time {
        hasher.write_string_field(&go_time_string(end));
    }
    hasher.sum()
}

/// The RunSchedule version: the short form of [`run_schedule_hash`].
pub fn run_schedule_version(spec: &RunScheduleSpec) -> String {
    short_version(&run_schedule_hash(spec))
}

/// Go's `time.Time.String()` of `time` in UTC, e.g. `2024-01-01 00:00:00 +0000 UTC`, with
/// fractional seconds only when non-zero and without trailing zeros (`00:00:00.5`).
/// The reference used the process's local zone; UTC is fixed here on purpose.
fn go_time_string(time: &Time) -> String {
    let dt = TimeZone::UTC.to_datetime(time.0);
    let mut out = String::new();
    let year = i32::from(dt.year());
    if year < 0 {
        let _ = write!(out, "-{:04}", year.unsigned_abs());
    } else {
        let _ = write!(out, "{year:04}");
    }
    let _ = write!(
        out,
        "-{:02}-{:02} {:02}:{:02}:{:02}",
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    let nanos = dt.subsec_nanosecond();
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        let _ = write!(out, ".{}", fraction.trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
    out
}

/// The parts of a Docker image reference that decide the Pipeline version.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImageReference {
    tag: Option<String>,
    digest: Option<String>,
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or dashes.
const PATH_COMPONENT: &str = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*";
/// A host name or bracketed IPv6 address with an optional port.
const DOMAIN_AND_PORT: &str = r"(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[(?:[a-fA-F0-9:]+)\])(?::[0-9]+)?";
/// A tag: ASCII word characters, dots and dashes, not starting with either.
const TAG: &str = r"[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
/// A digest: `algorithm:hex`; the algorithm and length are checked after matching.
const DIGEST: &str = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
/// The longest repository name (domain included) the reference accepts.
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// The whole reference: `name[:tag][@digest]`, capturing each part.
static REFERENCE_REGEX: LazyLock<Regex> = LazyLock::new(|| {
    let pattern = format!(
        r"^((?:{DOMAIN_AND_PORT}/)?{PATH_COMPONENT}(?:/{PATH_COMPONENT})*)(?::({TAG}))?(?:@({DIGEST}))?$"
    );
    #[allow(clippy::expect_used)]
    Regex::new(&pattern).expect("the image reference pattern is a valid regex")
});

/// A bare 64-hex identifier, which the reference refuses as a repository name.
static IDENTIFIER_REGEX: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Regex::new(r"^[a-f0-9]{64}$").expect("the identifier pattern is a valid regex")
});

/// Parses `image` like `ParseNormalizedNamed` of github.com/distribution/reference: a
/// first component with `.` or `:`, equal to `localhost`, or with upper case is a domain,
/// otherwise `docker.io` is implied (and `library/` for single-component names); the
/// repository path must be lower case. `None` when the reference does not parse.
fn parse_image_reference(image: &str) -> Option<ImageReference> {
    if IDENTIFIER_REGEX.is_match(image) {
        return None;
    }
    let (domain, remainder) = split_docker_domain(image);
    let remote_name = remainder.split_once(':').map_or(remainder.as_str(), |(name, _)| name);
    if remote_name.to_lowercase() != remote_name {
        return None;
    }
    let normalised = format!("{domain}/{remainder}");
    let captures = REFERENCE_REGEX.captures(&normalised)?;
    if captures.get(1)?.as_str().len() > NAME_TOTAL_LENGTH_MAX {
        return None;
    }
    let digest = captures.get(3).map(|m| m.as_str().to_owned());
    if let Some(digest) = &digest
        && !is_supported_digest(digest)
    {
        return None;
    }
    Some(ImageReference { tag: captures.get(2).map(|m| m.as_str().to_owned()), digest })
}

/// Splits off the registry domain, defaulting to `docker.io` as Docker does.
fn split_docker_domain(image: &str) -> (String, String) {
    const DEFAULT_DOMAIN: &str = "docker.io";
    let (mut domain, remainder) = match image.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first == "localhost" || first.to_lowercase() != first =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => (DEFAULT_DOMAIN.to_owned(), image.to_owned()),
    };
    if domain == "index.docker.io" {
        domain = DEFAULT_DOMAIN.to_owned();
    }
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        return (domain, format!("library/{remainder}"));
    }
    (domain, remainder)
}

/// A digest of a supported algorithm with the right number of lower-case hex digits.
fn is_supported_digest(digest: &str) -> bool {
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return false;
    };
    let expected_len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    encoded.len() == expected_len && encoded.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use regex::Regex;
    use serde_json::json;

    use super::*;
    use crate::api::common::{ArtifactPath, NamedValue, NamespacedName, OutputArtifact, PipelineIdentifier};
    use crate::api::pipeline::PipelineFramework;
    use crate::api::run::RunConfigurationRef;
    use crate::api::run_configuration::Schedule;

    fn time(s: &str) -> Time {
        Time(s.parse().expect("valid timestamp"))
    }

    fn serving_model() -> OutputArtifact {
        OutputArtifact::new(
            "serving-model",
            ArtifactPath::from_str("Pusher:pushed_model[pushed == 1]").expect("valid path"),
        )
    }

    fn pipeline(image: &str, env: Vec<NamedValue>, framework: PipelineFramework) -> PipelineSpec {
        PipelineSpec { provider: NamespacedName::new("ns", "provider"), image: image.into(), env, framework }
    }

    fn penguin_run_spec() -> RunSpec {
        RunSpec {
            provider: NamespacedName::new("ns", "provider"),
            pipeline: PipelineIdentifier::new("penguin-pipeline", ""),
            experiment_name: "penguin-experiment".into(),
            parameters: vec![Parameter::literal("TRAINING_RUNS", "100")],
            artifacts: vec![serving_model()],
        }
    }

    fn penguin_run_schedule() -> RunScheduleSpec {
        RunScheduleSpec {
            provider: NamespacedName::new("ns", "provider"),
            pipeline: PipelineIdentifier::new("penguin-pipeline", "v1-abcdef"),
            experiment_name: "penguin-experiment".into(),
            parameters: vec![NamedValue::new("TRAINING_RUNS", "100")],
            artifacts: vec![serving_model()],
            schedule: Schedule {
                cron_expression: "0 * * * *".into(),
                start_time: Some(time("2024-01-01T00:00:00Z")),
                end_time: Some(time("2024-12-31T23:59:59Z")),
            },
        }
    }

    fn digest_of(write: impl FnOnce(&mut ObjectHasher)) -> [u8; 20] {
        let mut hasher = ObjectHasher::new();
        write(&mut hasher);
        hasher.sum()
    }

    // Test vectors from the behaviour spec, section 4.2.

    #[test]
    fn experiment_vectors() {
        let empty = ExperimentSpec::default();
        assert_eq!(hex::encode(experiment_hash(&empty)), "5ba93c9db0cff93f52b521d7420e43f6eda2784f");
        assert_eq!(experiment_version(&empty), "5ba93c");
        let described = ExperimentSpec {
            description: "An experiment for the penguin pipeline".into(),
            ..ExperimentSpec::default()
        };
        assert_eq!(experiment_version(&described), "daa88c");
    }

    #[test]
    fn pipeline_vectors() {
        let quickstart = pipeline(
            "quickstart:v1",
            vec![],
            PipelineFramework::new("tfx")
                .with_parameter("components", json!("base_pipeline.create_components")),
        );
        assert_eq!(pipeline_version(&quickstart), "v1-a97843");

        let base = pipeline(
            "kfp-quickstart-base:v1",
            vec![],
            PipelineFramework::new("tfx")
                .with_parameter("pipeline", json!("penguin_examples.pipeline.create_components")),
        );
        assert_eq!(pipeline_version(&base), "v1-12f883");

        let with_env_and_beam_args = pipeline(
            "quickstart:v1",
            vec![NamedValue::new("TRAINING_RUNS", "100")],
            PipelineFramework::new("tfx")
                .with_parameter("components", json!("base_pipeline.create_components"))
                .with_parameter("beamArgs", json!([{"name": "anArg", "value": "aValue"}])),
        );
        assert_eq!(pipeline_version(&with_env_and_beam_args), "v1-689a20");

        let stub = pipeline("alpine:latest", vec![], PipelineFramework::new("stub"));
        assert_eq!(pipeline_version(&stub), "latest-955e67");
    }

    #[test]
    fn run_spec_and_run_vectors() {
        let spec = penguin_run_spec();
        assert_eq!(run_spec_version(&spec), "00ac9b");
        assert_eq!(run_version(&spec, ""), "015b57");
        assert_eq!(run_version(&spec, "v1-abcdef"), "3d178e");
        assert_eq!(short_version(&run_hash(&spec, "v1-abcdef")), "3d178e");
        assert_eq!(run_spec_version(&RunSpec::default()), "9069ca");
    }

    #[test]
    fn run_spec_with_value_from_vector() {
        let spec = RunSpec {
            pipeline: PipelineIdentifier::new("penguin-pipeline-training", ""),
            parameters: vec![Parameter::from_run_configuration(
                "examples_location",
                RunConfigurationRef::new(
                    NamespacedName::new("base-namespace", "penguin-pipeline-examples-rc"),
                    "examples",
                ),
            )],
            ..RunSpec::default()
        };
        assert_eq!(run_spec_version(&spec), "219b95");
    }

    #[test]
    fn run_schedule_vector() {
        assert_eq!(run_schedule_version(&penguin_run_schedule()), "723dc9");
    }

    #[test]
    fn canonical_json_vector() {
        let value: Value = serde_json::from_str(r#"{"b":1,"a":"<x>","c":1.50}"#).expect("valid JSON");
        assert_eq!(canonical_json(&value), r#"{"a":"\u003cx\u003e","b":1,"c":1.5}"#);
    }

    // Canonical JSON details.

    #[test]
    fn canonical_json_formats_numbers_like_go() {
        let cases = [
            ("1.5", "1.5"),
            ("100", "100"),
            ("100.0", "100"),
            ("-3", "-3"),
            ("-0", "-0"),
            ("0", "0"),
            ("1e21", "1e+21"),
            ("1e20", "100000000000000000000"),
            ("1.5e300", "1.5e+300"),
            ("1e-7", "1e-7"),
            ("-2.5e-8", "-2.5e-8"),
            ("1.234e-10", "1.234e-10"),
            ("0.000001", "0.000001"),
            ("12345678901234567890", "12345678901234567000"),
            ("0.1", "0.1"),
        ];
        for (input, expected) in cases {
            let value: Value = serde_json::from_str(input).expect("valid JSON number");
            assert_eq!(canonical_json(&value), expected, "number {input}");
        }
    }

    #[test]
    fn canonical_json_sorts_nested_objects_without_whitespace() {
        let value: Value =
            serde_json::from_str(r#"{ "z": [ 3, {"y": null, "x": true} ], "a": { "d": false, "c": "s" } }"#)
                .expect("valid JSON");
        assert_eq!(canonical_json(&value), r#"{"a":{"c":"s","d":false},"z":[3,{"x":true,"y":null}]}"#);
    }

    #[test]
    fn canonical_json_escapes_strings_like_go() {
        let value = json!("a<b>&c \"q\" \\ \n\r\t\u{1}\u{8}\u{c}\u{1f}\u{7f} é \u{2028}\u{2029} 😀");
        assert_eq!(
            canonical_json(&value),
            "\"a\\u003cb\\u003e\\u0026c \\\"q\\\" \\\\ \\n\\r\\t\\u0001\\b\\f\\u001f\u{7f} é \\u2028\\u2029 😀\""
        );
        assert_eq!(canonical_json(&json!({"<k>": 1})), r#"{"\u003ck\u003e":1}"#);
    }

    // ObjectHasher properties.

    #[test]
    fn adjacent_string_fields_are_separated() {
        let ab_c = digest_of(|h| {
            h.write_string_field("ab");
            h.write_string_field("c");
        });
        let a_bc = digest_of(|h| {
            h.write_string_field("a");
            h.write_string_field("bc");
        });
        assert_ne!(ab_c, a_bc);
    }

    #[test]
    fn string_field_is_the_bytes_then_nul() {
        let mut raw = Sha1::new();
        raw.update(b"ab\0");
        let expected: [u8; 20] = raw.finalize().into();
        assert_eq!(digest_of(|h| h.write_string_field("ab")), expected);
    }

    #[test]
    fn kv_list_order_does_not_matter_even_with_duplicate_keys() {
        let one = [("b", "2"), ("a", "1"), ("a", "0"), ("a", "1")];
        let two = [("a", "1"), ("a", "0"), ("a", "1"), ("b", "2")];
        assert_eq!(digest_of(|h| h.write_kv_list_field(one)), digest_of(|h| h.write_kv_list_field(two)));
    }

    #[test]
    fn kv_list_encoding_is_sorted_pairs_then_nul() {
        let expected = digest_of(|h| {
            h.write_string_field("a");
            h.write_string_field("1");
            h.write_string_field("b");
            h.write_string_field("2");
            h.hasher.update([0]);
        });
        assert_eq!(digest_of(|h| h.write_kv_list_field([("b", "2"), ("a", "1")])), expected);
        let empty: [(&str, &str); 0] = [];
        assert_eq!(digest_of(|h| h.write_kv_list_field(empty)), digest_of(|h| h.hasher.update([0])));
    }

    #[test]
    fn kv_key_and_value_boundaries_matter() {
        let split_early = digest_of(|h| h.write_kv_list_field([("a", "bc")]));
        let split_late = digest_of(|h| h.write_kv_list_field([("ab", "c")]));
        assert_ne!(split_early, split_late);
        let two_items = digest_of(|h| h.write_kv_list_field([("a", "b"), ("c", "d")]));
        let joined = digest_of(|h| h.write_kv_list_field([("a", "b\0c")]));
        assert_ne!(two_items, joined);
    }

    #[test]
    fn json_map_writes_keys_canonical_values_and_no_trailing_nul() {
        let map =
            BTreeMap::from([("b".to_owned(), json!({"y": 1.50, "x": "<"})), ("a".to_owned(), Value::Null)]);
        let expected = digest_of(|h| {
            h.write_string_field("a");
            h.write_string_field("b");
            h.write_string_field(r#"{"x":"\u003c","y":1.5}"#);
        });
        assert_eq!(digest_of(|h| h.write_json_map_field(&map)), expected);
        assert_eq!(digest_of(|h| h.write_json_map_field(&BTreeMap::new())), ObjectHasher::new().sum());
    }

    #[test]
    fn parameter_order_does_not_matter() {
        let reference = |ns: &str, name: &str, artifact: &str| {
            RunConfigurationRef::new(NamespacedName::new(ns, name), artifact)
        };
        let parameters = vec![
            Parameter::literal("b", "2"),
            Parameter::from_run_configuration("a", reference("ns", "rc2", "x")),
            Parameter::from_run_configuration("a", reference("ns", "rc1", "y")),
            Parameter::from_run_configuration("a", reference("ns", "rc1", "x").optional()),
            Parameter::from_run_configuration("a", reference("ns", "rc1", "x")),
            Parameter::literal("a", ""),
            Parameter::literal("a", "1"),
        ];
        let spec = RunSpec { parameters: parameters.clone(), ..RunSpec::default() };
        let mut reversed = spec.clone();
        reversed.parameters.reverse();
        assert_eq!(run_spec_hash(&spec), run_spec_hash(&reversed));
        let mut rotated = spec.clone();
        rotated.parameters.rotate_left(3);
        assert_eq!(run_spec_hash(&spec), run_spec_hash(&rotated));

        let mut sorted = parameters;
        sorted.sort_by(compare_parameters);
        // Rendered `name=value`, plus `<-rc/artifact` and `?` for optional refs.
        let order: Vec<String> = sorted
            .iter()
            .map(|p| {
                let mut rendered = format!("{}={}", p.name, p.value);
                if let Some(v) = &p.value_from {
                    let r = &v.run_configuration_ref;
                    rendered.push_str(&format!("<-{}/{}", r.name.name, r.output_artifact));
                    if r.optional {
                        rendered.push('?');
                    }
                }
                rendered
            })
            .collect();
        assert_eq!(order, ["a=", "a=<-rc1/x", "a=<-rc1/x?", "a=<-rc1/y", "a=<-rc2/x", "a=1", "b=2"]);
    }

    #[test]
    fn parameter_refs_differing_only_in_namespace_compare_equal_as_written() {
        let p1 = Parameter::from_run_configuration(
            "a",
            RunConfigurationRef::new(NamespacedName::new("ns1", "rc"), "y"),
        );
        let p2 = Parameter::from_run_configuration(
            "a",
            RunConfigurationRef::new(NamespacedName::new("ns2", "rc"), "x"),
        );
        assert_eq!(compare_parameters(&p1, &p2), Ordering::Equal);
        assert_eq!(compare_parameters(&p2, &p1), Ordering::Equal);
    }

    #[test]
    fn hashing_does_not_mutate_its_input() {
        let spec = penguin_run_spec();
        let mut reversed = spec.clone();
        reversed.parameters.push(Parameter::literal("A", "first"));
        reversed.parameters.reverse();
        let before = reversed.clone();
        let _ = run_spec_hash(&reversed);
        assert_eq!(reversed, before);
        let schedule = penguin_run_schedule();
        let before = schedule.clone();
        let _ = run_schedule_hash(&schedule);
        assert_eq!(schedule, before);
    }

    // Every hashed spec field changes the hash.

    #[test]
    fn every_pipeline_field_changes_the_hash() {
        let base = pipeline(
            "image:1",
            vec![NamedValue::new("k", "v")],
            PipelineFramework::new("tfx").with_parameter("p", json!("x")),
        );
        let mut variants = Vec::new();
        let mut v = base.clone();
        v.image = "image:2".into();
        variants.push(v);
        let mut v = base.clone();
        v.env[0].value = "w".into();
        variants.push(v);
        let mut v = base.clone();
        v.env[0].name = "j".into();
        variants.push(v);
        let mut v = base.clone();
        v.framework.name = "kfpsdk".into();
        variants.push(v);
        let mut v = base.clone();
        v.framework.parameters.insert("p".into(), json!("y"));
        variants.push(v);
        let mut v = base.clone();
        v.framework.parameters.insert("q".into(), json!("x"));
        variants.push(v);
        let mut v = base.clone();
        v.framework.parameters.insert("p".into(), Value::Null);
        variants.push(v);
        for variant in &variants {
            assert_ne!(pipeline_hash(variant), pipeline_hash(&base), "{variant:?}");
        }
        // The provider is not hashed.
        let mut v = base.clone();
        v.provider = NamespacedName::new("other", "provider");
        assert_eq!(pipeline_hash(&v), pipeline_hash(&base));
    }

    #[test]
    fn every_experiment_field_changes_the_hash() {
        let base = ExperimentSpec { description: "a".into(), ..ExperimentSpec::default() };
        let changed = ExperimentSpec { description: "b".into(), ..base.clone() };
        assert_ne!(experiment_hash(&changed), experiment_hash(&base));
    }

    fn run_spec_variants() -> Vec<RunSpec> {
        let base = penguin_run_spec();
        let mut variants = Vec::new();
        let mut v = base.clone();
        v.pipeline.name = "other".into();
        variants.push(v);
        let mut v = base.clone();
        v.pipeline.version = "v2".into();
        variants.push(v);
        let mut v = base.clone();
        v.experiment_name = "other".into();
        variants.push(v);
        let mut v = base.clone();
        v.parameters[0].name = "OTHER".into();
        variants.push(v);
        let mut v = base.clone();
        v.parameters[0].value = "101".into();
        variants.push(v);
        let reference = RunConfigurationRef::new(NamespacedName::new("ns", "rc"), "artifact");
        let with_ref = |reference: RunConfigurationRef| {
            let mut v = base.clone();
            v.parameters[0].value_from =
                Some(crate::api::run::ValueFrom { run_configuration_ref: reference });
            v
        };
        variants.push(with_ref(reference.clone()));
        let mut other = reference.clone();
        other.name.name = "rc2".into();
        variants.push(with_ref(other));
        let mut other = reference.clone();
        other.name.namespace = "ns2".into();
        variants.push(with_ref(other));
        let mut other = reference.clone();
        other.output_artifact = "other".into();
        variants.push(with_ref(other));
        variants.push(with_ref(reference.optional()));
        let mut v = base.clone();
        v.artifacts[0].name = "other".into();
        variants.push(v);
        let mut v = base.clone();
        v.artifacts[0].path.index = 1;
        variants.push(v);
        let mut v = base.clone();
        v.artifacts[0].path.filter = String::new();
        variants.push(v);
        variants
    }

    #[test]
    fn every_run_spec_field_changes_the_hash() {
        let base = penguin_run_spec();
        let variants = run_spec_variants();
        let mut digests: Vec<[u8; 20]> = variants.iter().map(run_spec_hash).collect();
        digests.push(run_spec_hash(&base));
        let count = digests.len();
        digests.sort_unstable();
        digests.dedup();
        assert_eq!(digests.len(), count, "every variant hashes differently");
        for variant in &variants {
            assert_ne!(run_hash(variant, "v1"), run_hash(&base, "v1"), "{variant:?}");
        }
        assert_ne!(run_hash(&base, "v1"), run_hash(&base, "v2"));
        assert_ne!(run_hash(&base, ""), run_spec_hash(&base));
        let mut v = base.clone();
        v.provider = NamespacedName::new("other", "provider");
        assert_eq!(run_spec_hash(&v), run_spec_hash(&base));
    }

    #[test]
    fn every_run_schedule_field_changes_the_hash() {
        let base = penguin_run_schedule();
        let mut variants = Vec::new();
        let mut v = base.clone();
        v.pipeline.version = "v1-fedcba".into();
        variants.push(v);
        let mut v = base.clone();
        v.experiment_name = "other".into();
        variants.push(v);
        let mut v = base.clone();
        v.parameters[0].value = "101".into();
        variants.push(v);
        let mut v = base.clone();
        v.parameters[0].name = "OTHER".into();
        variants.push(v);
        let mut v = base.clone();
        v.artifacts[0].path.index = 2;
        variants.push(v);
        let mut v = base.clone();
        v.artifacts[0].name = "other".into();
        variants.push(v);
        let mut v = base.clone();
        v.schedule.cron_expression = "5 * * * *".into();
        variants.push(v);
        let mut v = base.clone();
        v.schedule.start_time = Some(time("2024-01-01T00:00:01Z"));
        variants.push(v);
        let mut v = base.clone();
        v.schedule.start_time = None;
        variants.push(v);
        let mut v = base.clone();
        v.schedule.end_time = Some(time("2024-12-31T23:59:59.5Z"));
        variants.push(v);
        let mut v = base.clone();
        v.schedule.end_time = None;
        variants.push(v);
        for variant in &variants {
            assert_ne!(run_schedule_hash(variant), run_schedule_hash(&base), "{variant:?}");
        }
    }

    #[test]
    fn run_schedule_times_are_go_strings_in_utc() {
        assert_eq!(go_time_string(&time("2024-01-01T00:00:00Z")), "2024-01-01 00:00:00 +0000 UTC");
        assert_eq!(go_time_string(&time("2024-12-31T23:59:59.5Z")), "2024-12-31 23:59:59.5 +0000 UTC");
        assert_eq!(
            go_time_string(&time("2024-06-01T12:30:00.000000120+02:00")),
            "2024-06-01 10:30:00.00000012 +0000 UTC"
        );
        assert_eq!(go_time_string(&time("0099-03-04T05:06:07Z")), "0099-03-04 05:06:07 +0000 UTC");
    }

    // Version formats.

    fn version_of_image(image: &str) -> String {
        pipeline_version(&pipeline(image, vec![], PipelineFramework::new("tfx")))
    }

    #[test]
    fn pipeline_version_formats() {
        let cases = [
            ("image:42", r"^42-[a-z0-9]{6}$"),
            ("docker.io/baz/bar/image:baz", r"^baz-[a-z0-9]{6}$"),
            ("image", r"^latest-[a-z0-9]{6}$"),
            (":", r"^[a-z0-9]{6}$"),
            ("", r"^[a-z0-9]{6}$"),
            ("Image:42", r"^[a-z0-9]{6}$"),
            ("localhost:5000/team/image:v1.2_3-x", r"^v1.2_3-x-[a-z0-9]{6}$"),
            ("registry.example.com/image", r"^latest-[a-z0-9]{6}$"),
            (
                "image@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                r"^[a-z0-9]{6}$",
            ),
            (
                "image:v2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                r"^v2-[a-z0-9]{6}$",
            ),
        ];
        for (image, pattern) in cases {
            let version = version_of_image(image);
            let regex = Regex::new(pattern).expect("valid test pattern");
            assert!(regex.is_match(&version), "{image:?} gave {version:?}, expected {pattern}");
        }
    }

    #[test]
    fn short_versions_are_six_lowercase_hex() {
        let regex = Regex::new(r"^[a-z0-9]{6}$").expect("valid test pattern");
        let spec = penguin_run_spec();
        for version in [
            run_version(&spec, "v1"),
            run_spec_version(&spec),
            run_schedule_version(&penguin_run_schedule()),
            experiment_version(&ExperimentSpec::default()),
        ] {
            assert!(regex.is_match(&version), "{version:?}");
        }
    }

    #[test]
    fn image_references_parse_like_distribution_reference() {
        let parsed = |s: &str| parse_image_reference(s);
        let reference = |tag: Option<&str>, digest: Option<&str>| {
            Some(ImageReference { tag: tag.map(Into::into), digest: digest.map(Into::into) })
        };
        let sha = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(parsed("alpine"), reference(None, None));
        assert_eq!(parsed("alpine:3.19"), reference(Some("3.19"), None));
        assert_eq!(parsed("index.docker.io/foo"), reference(None, None));
        assert_eq!(parsed("foo/bar:t"), reference(Some("t"), None));
        assert_eq!(parsed("localhost/foo"), reference(None, None));
        assert_eq!(parsed("Registry/foo"), reference(None, None));
        assert_eq!(parsed("[::1]:5000/foo:t"), reference(Some("t"), None));
        assert_eq!(parsed(&format!("gcr.io/p/i:t@{sha}")), reference(Some("t"), Some(sha)));
        assert_eq!(parsed(&format!("gcr.io/p/i@{sha}")), reference(None, Some(sha)));
        assert_eq!(parsed("a__b--c.d/e_f"), reference(None, None));
        assert_eq!(split_docker_domain("alpine"), ("docker.io".into(), "library/alpine".into()));
        assert_eq!(split_docker_domain("index.docker.io/foo"), ("docker.io".into(), "library/foo".into()));
        assert_eq!(split_docker_domain("foo/bar"), ("docker.io".into(), "foo/bar".into()));
        assert_eq!(split_docker_domain("Registry/foo"), ("Registry".into(), "foo".into()));
        assert_eq!(split_docker_domain("localhost/foo"), ("localhost".into(), "foo".into()));
        assert_eq!(split_docker_domain("gcr.io/p/i"), ("gcr.io".into(), "p/i".into()));
        for invalid in [
            "",
            ":",
            "Image",
            "foo/Bar",
            "image:",
            "image:-tag",
            "image:.tag",
            "image@sha256:abc",
            "image@md5:0123456789abcdef0123456789abcdef",
            "image@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            "a___b",
            "a/",
            "/a",
            "-a",
            "foo:bar/baz",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(parsed(invalid), None, "{invalid:?} should not parse");
        }
        let long_tag = format!("image:{}", "t".repeat(128));
        assert!(parsed(&long_tag).is_some());
        assert_eq!(parsed(&format!("image:{}", "t".repeat(129))), None);
        let long_name = format!("a/{}", "b".repeat(250));
        assert_eq!(parsed(&long_name), None);
    }
}
