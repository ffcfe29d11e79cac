//! The framework compilers of `deploy/images/` run on the host, laid out as their images copy
//! them into a compile pod's `/shared`: kfp-sdk with the host's KFP SDK compiles the KFP v2
//! example pipeline into a PipelineSpec the SDK accepts; tfx (TFX itself is too large to install
//! here) handles its definition, parameters and the Pipeline's env with the host's python3 up to
//! the point where it imports TFX.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use serde_json::{Value, json};

/// `deploy/images/<framework>` and the shared definition module, copied into a fresh directory.
fn shared_dir(framework: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let images = support::repo_root().join("deploy/images");
    copy_tree(&images.join(framework), dir.path());
    std::fs::copy(
        images.join("framework/kfp_operator_definition.py"),
        dir.path().join("kfp_operator_definition.py"),
    )
    .unwrap();
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_name() == "__pycache__" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Runs `compile.sh --output_file OUT --pipeline_config DEFINITION` with `python_bin` first on
/// PATH and `code` on PYTHONPATH, in `work`.
fn run_compiler(
    shared: &Path,
    work: &Path,
    definition: &Value,
    output: &str,
    python_bin: Option<&Path>,
    code: &Path,
) -> Output {
    let config = work.join("definition.json");
    std::fs::write(&config, serde_json::to_string_pretty(definition).unwrap()).unwrap();
    let mut path = std::env::var("PATH").unwrap_or_default();
    if let Some(bin) = python_bin {
        path = format!("{}:{path}", bin.display());
    }
    Command::new("sh")
        .arg(shared.join("compile.sh"))
        .args(["--output_file"])
        .arg(work.join(output))
        .arg("--pipeline_config")
        .arg(&config)
        .current_dir(work)
        .env("PATH", path)
        .env("PYTHONPATH", code)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("KFP_DISABLE_EXECUTION_CACHING_BY_DEFAULT")
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn last_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim_end().lines().last().unwrap_or_default().to_owned()
}

fn kfp_definition(pipeline: &str) -> Value {
    json!({
        "name": "ml-training/penguin-kfp-v2",
        "version": "v1-abc123",
        "image": "localhost/kfp-pipeline-test:v1",
        "env": [{"name": "TRAINING_ROWS", "value": "150"}],
        "framework": {"name": "kfp-sdk", "parameters": {"pipeline": pipeline}},
    })
}

fn example_code() -> PathBuf {
    support::repo_root().join("examples/pipelines/kfp-v2")
}

fn host_sdk_bin() -> PathBuf {
    support::kfp_sdk_python().parent().unwrap().to_owned()
}

#[test]
fn kfp_sdk_compiles_the_example_pipeline_into_a_pipeline_spec() {
    let shared = shared_dir("kfp-sdk");
    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let output = run_compiler(
        shared.path(),
        work.path(),
        &kfp_definition("penguin_training.pipeline"),
        "compiled.json",
        Some(&host_sdk_bin()),
        &example_code(),
    );
    println!("compile.sh with the host's KFP SDK: {:.2}s", started.elapsed().as_secs_f64());
    assert!(output.status.success(), "{}", text(&output));
    let compiled: Value =
        serde_json::from_slice(&std::fs::read(work.path().join("compiled.json")).unwrap()).unwrap();
    assert_eq!(compiled["pipelineInfo"]["name"], "ml-training-penguin-kfp-v2");
    let executors = compiled["deploymentSpec"]["executors"].as_object().unwrap();
    assert_eq!(executors.len(), 2);
    for executor in executors.values() {
        assert_eq!(
            executor["container"]["image"], "localhost/kfp-pipeline-test:v1",
            "KFP_PIPELINE_IMAGE: {executor}"
        );
    }
    for task in compiled["root"]["dag"]["tasks"].as_object().unwrap().values() {
        assert_eq!(task["cachingOptions"].get("enableCache"), None, "caching is off by default: {task}");
    }
    let check = Command::new(support::kfp_sdk_python())
        .arg(support::repo_root().join("tests/fixtures/check_pipeline_spec.py"))
        .arg(work.path().join("compiled.json"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
}

#[test]
fn kfp_sdk_writes_yaml_for_a_yaml_output_file_and_keeps_caching_when_the_env_asks() {
    let shared = shared_dir("kfp-sdk");
    let work = tempfile::tempdir().unwrap();
    let mut definition = kfp_definition("penguin_training.pipeline");
    definition["env"] = json!([{"name": "KFP_DISABLE_EXECUTION_CACHING_BY_DEFAULT", "value": "false"}]);
    let output = run_compiler(
        shared.path(),
        work.path(),
        &definition,
        "compiled.yaml",
        Some(&host_sdk_bin()),
        &example_code(),
    );
    assert!(output.status.success(), "{}", text(&output));
    let compiled = std::fs::read_to_string(work.path().join("compiled.yaml")).unwrap();
    assert!(compiled.contains("pipelineInfo:") && compiled.contains("schemaVersion: 2.1.0"), "{compiled}");
    assert!(compiled.contains("enableCache: true"), "the Pipeline's env turns caching on: {compiled}");
}

#[test]
fn kfp_sdk_names_what_is_wrong_with_the_definition() {
    let shared = shared_dir("kfp-sdk");
    let work = tempfile::tempdir().unwrap();
    let code = example_code();
    let cases = [
        (json!({"framework": {"parameters": {}}}), "error: the Pipeline definition has no name"),
        (
            kfp_definition("no_dot"),
            "error: the framework parameter pipeline is 'no_dot'; expected module.function",
        ),
        (kfp_definition("penguin_training.missing"), "error: the module penguin_training has no missing"),
        (kfp_definition("no_such_module.pipeline"), "ModuleNotFoundError: No module named 'no_such_module'"),
    ];
    for (definition, expected) in cases {
        let output =
            run_compiler(shared.path(), work.path(), &definition, "out.json", Some(&host_sdk_bin()), &code);
        assert!(!output.status.success(), "{definition}: {}", text(&output));
        assert!(last_line(&output).starts_with(expected), "{definition}: {}", text(&output));
    }
    let output = Command::new("sh")
        .arg(shared.path().join("compile.sh"))
        .arg("--output_file")
        .arg("x")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("--pipeline_config"), "{}", text(&output));
}

/// A components module that records, when imported, the env it sees.
fn components_module(dir: &Path) {
    std::fs::write(
        dir.join("penguin_components.py"),
        "import json, os\n\
         with open(os.path.join(os.path.dirname(__file__), 'seen.json'), 'w') as out:\n    \
         json.dump({'TRAINING_ROWS': os.environ.get('TRAINING_ROWS')}, out)\n\
         def create_components():\n    return []\n",
    )
    .unwrap();
}

fn tfx_definition(parameters: Value) -> Value {
    json!({
        "name": "ml-training/penguin",
        "version": "v1-abc123",
        "image": "quickstart:v1",
        "env": [{"name": "TRAINING_ROWS", "value": "150"}],
        "framework": {"name": "tfx", "parameters": parameters},
    })
}

#[test]
fn tfx_reads_its_parameters_and_env_before_it_imports_tfx() {
    let shared = shared_dir("tfx");
    let work = tempfile::tempdir().unwrap();
    let code = tempfile::tempdir().unwrap();
    components_module(code.path());
    let definition = tfx_definition(json!({
        "components": "penguin_components.create_components",
        "beamArgs": [{"name": "runner", "value": "DirectRunner"}],
    }));
    let output = run_compiler(shared.path(), work.path(), &definition, "out.json", None, code.path());
    assert!(!output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("compiling ml-training/penguin (version v1-abc123)"), "{}", text(&output));
    assert_eq!(last_line(&output), "ModuleNotFoundError: No module named 'tfx'", "{}", text(&output));
    let seen: Value = serde_json::from_slice(&std::fs::read(code.path().join("seen.json")).unwrap()).unwrap();
    assert_eq!(seen, json!({"TRAINING_ROWS": "150"}), "the Pipeline's env is set when its code is imported");
}

#[test]
fn tfx_names_what_is_wrong_with_its_parameters() {
    let shared = shared_dir("tfx");
    let work = tempfile::tempdir().unwrap();
    let code = tempfile::tempdir().unwrap();
    components_module(code.path());
    let cases = [
        (json!({}), "error: the framework parameter components is None; expected module.function"),
        (
            json!({"components": "create_components"}),
            "error: the framework parameter components is 'create_components'",
        ),
        (
            json!({"components": "penguin_components.create_components", "beamArgs": "--runner=DirectRunner"}),
            "error: the framework parameter beamArgs is not a list of {name, value}",
        ),
        (
            json!({"components": "penguin_components.create_components", "beamArgs": [{"value": "x"}]}),
            "error: an entry of the framework parameter beamArgs has no name",
        ),
    ];
    for (parameters, expected) in cases {
        let output = run_compiler(
            shared.path(),
            work.path(),
            &tfx_definition(parameters.clone()),
            "out.json",
            None,
            code.path(),
        );
        assert_eq!(output.status.code(), Some(2), "{parameters}: {}", text(&output));
        assert!(last_line(&output).starts_with(expected), "{parameters}: {}", text(&output));
    }
}

#[test]
fn tfx_turns_beam_args_into_command_line_arguments() {
    let shared = shared_dir("tfx");
    let script = "from kfp_operator_tfx_compiler import beam_arguments\n\
                  print(beam_arguments([{'name': 'runner', 'value': 'DirectRunner'}, {'name': 'direct_num_workers', 'value': 2}, {'name': 'flag'}]))";
    let output =
        Command::new("python3").arg("-c").arg(script).env("PYTHONPATH", shared.path()).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "['--runner=DirectRunner', '--direct_num_workers=2', '--flag=']"
    );
}
