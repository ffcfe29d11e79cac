//! The CRDs on a real kube-apiserver: they install, `kubectl get` shows the printer columns
//! and the `kfp` category, the reference's example manifests are accepted, and wrong ones are
//! rejected with the offending field named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

mod support;

fn stdout_of(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "kubectl failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const PIPELINE: &str = r#"
apiVersion: pipelines.kubeflow.org/v1beta1
kind: Pipeline
metadata:
  name: penguin
spec:
  provider: kfp-system/stub
  image: quickstart:v1
  framework:
    name: tfx
    parameters:
      components: base_pipeline.create_components
"#;

const RUN_CONFIGURATION: &str = r#"
apiVersion: pipelines.kubeflow.org/v1beta1
kind: RunConfiguration
metadata:
  name: penguin-daily
spec:
  run:
    provider: kfp-system/stub
    pipeline: penguin
  triggers:
    onChange: [pipeline]
"#;

#[tokio::test]
async fn kubectl_shows_printer_columns_and_the_kfp_category() {
    let client = support::client().await;
    let ns = support::namespace(&client, "printer-columns").await;
    stdout_of(&support::kubectl_with_input(&["apply", "-n", &ns, "-f", "-"], PIPELINE));
    stdout_of(&support::kubectl_with_input(&["apply", "-n", &ns, "-f", "-"], RUN_CONFIGURATION));

    let table = stdout_of(&support::kubectl(&["get", "mlrc,mlp", "-n", &ns]));
    let mut headers = table.lines().filter(|line| line.starts_with("NAME"));
    let rc_header = headers.next().unwrap_or_default();
    let pipeline_header = headers.next().unwrap_or_default();
    for column in ["SYNCHRONIZED", "PROVIDER", "LATESTSUCCEEDED", "TRIGGERS", "AGE"] {
        assert!(rc_header.contains(column), "no {column} column for mlrc in:\n{table}");
    }
    for column in ["PROVIDER", "SYNCHRONIZED", "VERSION", "AGE"] {
        assert!(pipeline_header.contains(column), "no {column} column for mlp in:\n{table}");
    }
    assert!(table.contains("runconfiguration.pipelines.kubeflow.org/penguin-daily"), "{table}");
    assert!(table.contains("pipeline.pipelines.kubeflow.org/penguin"), "{table}");

    let everything = stdout_of(&support::kubectl(&["get", "kfp", "-n", &ns, "-o", "name"]));
    let mut names: Vec<&str> = everything.lines().collect();
    names.sort();
    assert_eq!(
        names,
        ["pipeline.pipelines.kubeflow.org/penguin", "runconfiguration.pipelines.kubeflow.org/penguin-daily"]
    );

    for (resource, columns) in [
        ("mlr", &["PROVIDER", "SYNCHRONIZED", "VERSION", "COMPLETION", "AGE"][..]),
        ("mlrs", &["PROVIDER", "SYNCHRONIZED", "VERSION"][..]),
        ("mlexp", &["PROVIDER", "SYNCHRONIZED", "VERSION"][..]),
        ("mlprv", &["TYPE", "SYNCHRONIZED", "AGE"][..]),
    ] {
        // An empty list prints no table, so ask the server for the table's column definitions.
        let request = http::Request::get(format!(
            "/apis/pipelines.kubeflow.org/v1beta1/namespaces/{ns}/{}",
            plural_of(resource)
        ))
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .unwrap();
        let table: serde_json::Value = client.request(request).await.unwrap();
        let names: Vec<String> = table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_uppercase())
            .collect();
        for column in columns {
            assert!(names.iter().any(|n| n == column), "no {column} column for {resource}: {names:?}");
        }
    }
}

fn plural_of(short_name: &str) -> &'static str {
    match short_name {
        "mlr" => "runs",
        "mlrs" => "runschedules",
        "mlexp" => "experiments",
        "mlprv" => "providers",
        other => panic!("unknown short name {other}"),
    }
}

fn manifests_in(root: PathBuf, dirs: &[&str]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|dir| std::fs::read_dir(root.join(dir)).unwrap().map(|entry| entry.unwrap().path()))
        .filter(|path| std::fs::read_to_string(path).unwrap().contains("apiVersion: pipelines.kubeflow.org/"))
        .collect();
    files.sort();
    files
}

async fn assert_accepted_by_server_side_dry_run(test_name: &str, manifests: Vec<PathBuf>, at_least: usize) {
    let client = support::client().await;
    let ns = support::namespace(&client, test_name).await;
    assert!(manifests.len() >= at_least, "expected at least {at_least} manifests, found {manifests:?}");
    for manifest in manifests {
        let output =
            support::kubectl(&["apply", "--dry-run=server", "-n", &ns, "-f", manifest.to_str().unwrap()]);
        assert!(
            output.status.success(),
            "{} was rejected: {}",
            manifest.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test]
async fn reference_examples_are_accepted_by_server_side_dry_run() {
    let root = support::repo_root().join("tests/fixtures/reference/examples");
    assert_accepted_by_server_side_dry_run(
        "examples",
        manifests_in(root, &["quickstart", "kfpsdk-quickstart"]),
        5,
    )
    .await;
}

/// The quickstart names its two namespaces; here they become fresh ones of the test.
#[tokio::test]
async fn project_examples_are_accepted_by_server_side_dry_run() {
    let client = support::client().await;
    let training = support::namespace(&client, "quickstart-training").await;
    let evaluation = support::namespace(&client, "quickstart-evaluation").await;
    let manifests = manifests_in(support::repo_root().join("examples"), &["quickstart", "pipelines/kfp-v2"]);
    assert!(manifests.len() >= 3, "expected at least 3 manifests, found {manifests:?}");
    for manifest in manifests {
        let text = std::fs::read_to_string(&manifest)
            .unwrap()
            .replace("ml-training", &training)
            .replace("ml-evaluation", &evaluation);
        let output = support::kubectl_with_input(&["apply", "--dry-run=server", "-f", "-"], &text);
        assert!(
            output.status.success(),
            "{} was rejected: {}",
            manifest.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test]
async fn wrong_manifests_are_rejected_with_the_field_named() {
    let client = support::client().await;
    let ns = support::namespace(&client, "rejections").await;
    let cases = [
        (
            "a wrong type",
            "apiVersion: pipelines.kubeflow.org/v1beta1\nkind: Pipeline\nmetadata:\n  name: bad\nspec:\n  provider: a/b\n  image: [1]\n  framework: {name: tfx, parameters: {}}\n",
            "spec.image",
        ),
        (
            "a missing required field",
            "apiVersion: pipelines.kubeflow.org/v1beta1\nkind: Pipeline\nmetadata:\n  name: bad\nspec:\n  provider: a/b\n  image: quickstart:v1\n",
            "spec.framework",
        ),
        (
            "a provider without namespace",
            "apiVersion: pipelines.kubeflow.org/v1beta1\nkind: Experiment\nmetadata:\n  name: bad\nspec:\n  provider: just-a-name\n",
            "spec.provider",
        ),
        (
            "a malformed artifact path",
            "apiVersion: pipelines.kubeflow.org/v1beta1\nkind: Run\nmetadata:\n  name: bad\nspec:\n  provider: a/b\n  artifacts:\n  - name: model\n    path: 'no-colon'\n",
            "spec.artifacts.path",
        ),
        (
            "an unknown onChange value",
            "apiVersion: pipelines.kubeflow.org/v1beta1\nkind: RunConfiguration\nmetadata:\n  name: bad\nspec:\n  run:\n    provider: a/b\n  triggers:\n    onChange: [sometimes]\n",
            "spec.triggers.onChange",
        ),
    ];
    for (what, manifest, field) in cases {
        // --validate=false: the API server, not kubectl, must reject it.
        let output = support::kubectl_with_input(
            &["apply", "--dry-run=server", "--validate=false", "-n", &ns, "-f", "-"],
            manifest,
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{what} was accepted");
        assert!(stderr.contains(field), "{what}: the error does not name {field}: {stderr}");
    }
}
