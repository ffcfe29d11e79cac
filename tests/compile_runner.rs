//! The compile Job's runner, run by a real Python 3 with a stand-in compiler: what it prints is
//! what the operator reads back (`read_output`), and a failing compiler's last lines reach the
//! termination message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use kfp_operator::provider::compile::{RUNNER, read_output};
use serde_json::json;

/// Runs the runner with `compiler` (a shell script body) and returns (exit code, stdout+stderr, termination message).
fn run(dir: &Path, compiler: &str) -> (i32, String, String) {
    let script = dir.join("compile.sh");
    std::fs::write(&script, format!("#!/bin/sh\n{compiler}\n")).unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&script).status().unwrap();
    std::fs::write(dir.join("definition.json"), json!({"name": "ml/penguin"}).to_string()).unwrap();
    std::fs::write(dir.join("run.py"), RUNNER).unwrap();
    let output = Command::new("python3")
        .arg(dir.join("run.py"))
        .env("KFP_COMPILER", &script)
        .env("KFP_DEFINITION", dir.join("definition.json"))
        .env("KFP_OUTPUT", dir.join("out/compiled.json"))
        .env("KFP_TERMINATION", dir.join("termination"))
        .output()
        .unwrap();
    let log =
        format!("{}{}", String::from_utf8_lossy(&output.stderr), String::from_utf8_lossy(&output.stdout));
    let message = std::fs::read_to_string(dir.join("termination")).unwrap_or_default();
    (output.status.code().unwrap_or(-1), log, message)
}

#[test]
fn a_compiled_pipeline_comes_back_through_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let compiler = r#"
while [ $# -gt 0 ]; do case "$1" in --output_file) out="$2"; shift;; --pipeline_config) config="$2"; shift;; esac; shift; done
echo "compiling $(cat "$config")"
printf '{"displayName": "ml-penguin", "pipelineSpec": {"schemaVersion": "2.1.0", "big": "%s"}}' "$(head -c 30000 /dev/zero | tr '\0' 'x')" > "$out"
"#;
    let (code, log, message) = run(dir.path(), compiler);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains(r#"compiling {"name":"ml/penguin"}"#), "{log}");
    let compiled = read_output(&log, &message, 1 << 20).unwrap();
    assert_eq!(compiled["pipelineSpec"]["schemaVersion"], "2.1.0");
    assert_eq!(compiled["pipelineSpec"]["big"].as_str().unwrap().len(), 30000);
}

#[test]
fn a_failing_compiler_leaves_its_last_lines_in_the_termination_message() {
    let dir = tempfile::tempdir().unwrap();
    let compiler = "for i in $(seq 1 40); do echo \"line $i\"; done\necho 'ModuleNotFoundError: No module named penguin' >&2\nexit 3";
    let (code, _, message) = run(dir.path(), compiler);
    assert_eq!(code, 1);
    assert!(message.starts_with("the compiler exited with status 3: "), "{message}");
    assert!(message.ends_with("ModuleNotFoundError: No module named penguin"), "{message}");
    assert!(!message.contains("line 20\n"), "only the last lines: {message}");
}

#[test]
fn a_long_failure_keeps_its_start_and_the_end_of_the_output_within_the_kubelets_limit() {
    let dir = tempfile::tempdir().unwrap();
    let compiler = "for i in $(seq 1 30); do printf 'line %s ' \"$i\"; head -c 400 /dev/zero | tr '\\0' 'x'; printf 'ü€\\n'; done\n\
                    echo 'ValueError: the last line'\nexit 1";
    let (code, _, message) = run(dir.path(), compiler);
    assert_eq!(code, 1);
    assert!(message.len() <= 3800, "{} bytes", message.len());
    assert!(message.starts_with("the compiler exited with status 1: "), "{message}");
    assert!(message.ends_with("ValueError: the last line"), "{message}");
}
