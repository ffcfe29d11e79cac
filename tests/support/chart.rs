//! The Helm chart rendered as `helm template` renders it: `chart_template.go` (Go's text/template,
//! Helm's engine, with the chart's functions) built once per test binary.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

fn renderer() -> &'static PathBuf {
    static RENDERER: OnceLock<PathBuf> = OnceLock::new();
    RENDERER.get_or_init(|| {
        let out =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("chart-template-{}", std::process::id()));
        let source = super::repo_root().join("tests/support/chart_template.go");
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(&source)
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("GOCACHE", PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-cache"))
            .status()
            .expect("running go build (golang-go, installed by deploy/local/dev-env install)");
        assert!(status.success(), "building {}", source.display());
        out
    })
}

/// `b` merged into `a`, maps key by key.
pub fn merged(mut a: Value, b: &Value) -> Value {
    match (&mut a, b) {
        (Value::Object(a_map), Value::Object(b_map)) => {
            for (key, value) in b_map {
                let old = a_map.remove(key).unwrap_or(Value::Null);
                a_map.insert(key.clone(), merged(old, value));
            }
            a
        }
        _ => b.clone(),
    }
}

/// The chart's `values.yaml`.
pub fn default_values() -> Value {
    let path = super::repo_root().join("charts/kfp-operator/values.yaml");
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The documents `helm template <release> -n <namespace>` renders with `overrides` over the
/// chart's values, or the renderer's error.
pub fn render(release: &str, namespace: &str, overrides: &Value) -> Result<Vec<Value>, String> {
    let chart_dir = super::repo_root().join("charts/kfp-operator");
    let chart: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart_dir.join("Chart.yaml")).unwrap()).unwrap();
    let values = merged(default_values(), overrides);
    let dir = tempfile::tempdir().unwrap();
    let (values_file, chart_file) = (dir.path().join("values.json"), dir.path().join("chart.json"));
    std::fs::write(&values_file, values.to_string()).unwrap();
    std::fs::write(&chart_file, chart.to_string()).unwrap();
    let output = Command::new(renderer())
        .arg(&chart_dir)
        .args([release, namespace])
        .args([&values_file, &chart_file])
        .output()
        .unwrap();
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(documents(&String::from_utf8(output.stdout).unwrap().replace("<no value>", "")))
}

/// The documents of a multi-document YAML stream, leaving out those with only comments.
pub fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---\n")
        .map(|document| document.trim_start_matches("---\n"))
        .filter(|document| document.lines().any(|line| !line.starts_with('#') && !line.trim().is_empty()))
        .map(|document| {
            serde_saphyr::from_str(document).unwrap_or_else(|error| panic!("{error}:\n{document}"))
        })
        .collect()
}

/// Numbers as YAML writers differ on them (`0` and `0.0`).
pub fn normalised(value: &Value) -> Value {
    match value {
        Value::Number(n) => {
            n.as_f64().filter(|f| f.fract() == 0.0).map_or(value.clone(), |f| serde_json::json!(f as i64))
        }
        Value::Array(items) => Value::Array(items.iter().map(normalised).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), normalised(v))).collect()),
        other => other.clone(),
    }
}

pub fn kind_and_name(object: &Value) -> (String, String) {
    (
        object["kind"].as_str().unwrap_or_default().to_owned(),
        object["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
    )
}
