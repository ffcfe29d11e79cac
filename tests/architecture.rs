//! The shape of `src/`: its top-level modules stand in layers, and a module may use only its
//! own files and the layers below it; no two files use each other, directly or round a loop.
//! The layer list is the data below; a new top-level module must be placed in it. The analysis
//! is checked on fixture trees first, so that a silent analysis cannot pass a broken tree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use a module of a lower layer, never one of its own layer or above.
const LAYERS: &[&[&str]] = &[
    &["api", "shutdown", "recent", "metrics", "logging"],
    &["events"],
    &["provider"],
    &["triggers", "admission"],
    &["crds", "leader"],
    &["config"],
    &["controller"],
    &["completion"],
    &["server"],
    &["operator"],
    &["tools"],
    &["cli"],
    &["main", "lib"],
];

/// Modules that hold no Kubernetes client: pure or in memory (`events` speaks only to NATS).
const WITHOUT_KUBE_CLIENT: &[&str] = &["api", "events", "triggers", "metrics", "logging"];

/// A file of the tree: its module path (`["controller", "run"]`) and its text.
struct SourceFile {
    module: Vec<String>,
    text: String,
}

fn read_tree(root: &Path) -> Vec<SourceFile> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(root, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(root).unwrap().with_extension("");
            let mut module: Vec<String> =
                relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            if module.last().is_some_and(|last| last == "mod") {
                module.pop();
            }
            SourceFile { module, text: std::fs::read_to_string(&path).unwrap() }
        })
        .collect()
}

/// The text without comments and string literals, so that only code is read.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for next in chars.by_ref() {
                    if next == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut literal = String::new();
                let mut escaped = false;
                for next in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if next == '\\' {
                        escaped = true;
                    } else if next == '"' {
                        break;
                    }
                    literal.push(next);
                }
                // A path in a string is still a use (`#[serde(deserialize_with = "crate::x::f")]`).
                let is_path = literal.starts_with("crate::") || literal.starts_with("super::");
                if is_path && literal.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                    out.push_str(&format!(" {literal} "));
                } else {
                    out.push_str("\"\"");
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Every path the file names that starts with `crate::`, `super::` or `self::`, resolved to an
/// absolute module path (as far as it goes: items are resolved later against the files).
fn references(file: &SourceFile) -> Vec<Vec<String>> {
    let code = code_of(&file.text);
    let mut found = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(is_ident(bytes[i - 1]) || bytes[i - 1] == ':');
        if !starts_word || !is_ident(bytes[i]) {
            i += 1;
            continue;
        }
        let mut segments = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && is_ident(bytes[j]) {
                j += 1;
            }
            segments.push(bytes[start..j].iter().collect::<String>());
            if j + 1 < bytes.len() && bytes[j] == ':' && bytes[j + 1] == ':' {
                j += 2;
                if j < bytes.len() && is_ident(bytes[j]) {
                    continue;
                }
                if j < bytes.len() && bytes[j] == '{' {
                    let close = (j..bytes.len()).find(|&k| bytes[k] == '}').unwrap_or(bytes.len());
                    let group: String = bytes[j + 1..close].iter().collect();
                    for member in group.split(',') {
                        let member: String =
                            member.trim().chars().take_while(|&c| is_ident(c) || c == ':').collect();
                        if !member.is_empty() && member != "self" {
                            let mut path = segments.clone();
                            path.extend(member.split("::").filter(|s| !s.is_empty()).map(str::to_owned));
                            found.push(path);
                        }
                    }
                    j = close;
                }
            }
            break;
        }
        if segments.len() > 1 {
            found.push(segments);
        }
        i = j.max(i + 1);
    }
    found
        .into_iter()
        .filter_map(|path| {
            let (base, rest): (Vec<String>, &[String]) = match path[0].as_str() {
                "crate" => (Vec::new(), &path[1..]),
                "self" => (file.module.clone(), &path[1..]),
                "super" => {
                    let mut base = file.module.clone();
                    let mut rest = &path[..];
                    while rest.first().is_some_and(|s| s == "super") {
                        base.pop();
                        rest = &rest[1..];
                    }
                    (base, rest)
                }
                _ => return None,
            };
            let mut absolute = base;
            absolute.extend(rest.iter().cloned());
            Some(absolute)
        })
        .collect()
}

/// The file a module path lands in: the longest prefix that is a file of the tree.
fn owner<'a>(modules: &'a BTreeSet<Vec<String>>, path: &[String]) -> Option<&'a Vec<String>> {
    (1..=path.len()).rev().find_map(|n| modules.get(&path[..n]))
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn top(module: &[String]) -> String {
    module.first().cloned().unwrap_or_else(|| "lib".into())
}

/// Every use of a module from its own layer or above, as `file -> used`, and every top-level
/// module missing from the layer list.
fn upward_uses(files: &[SourceFile]) -> Vec<String> {
    let mut problems = BTreeSet::new();
    for file in files {
        let from = top(&file.module);
        let Some(from_layer) = layer_of(&from) else {
            problems.insert(format!("{from} is in no layer; add it to LAYERS"));
            continue;
        };
        for path in references(file) {
            let Some(to) = path.first() else { continue };
            if *to == from {
                continue;
            }
            match layer_of(to) {
                Some(to_layer) if to_layer < from_layer => {}
                Some(_) => {
                    problems.insert(format!("{} uses crate::{}", file.module.join("::"), path.join("::")));
                }
                None => {
                    problems.insert(format!("{to} is in no layer; add it to LAYERS"));
                }
            }
        }
    }
    problems.into_iter().collect()
}

/// Each loop of files using each other, as `a -> b -> a`.
fn cycles(files: &[SourceFile]) -> Vec<String> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for file in files {
        let targets = edges.entry(file.module.clone()).or_default();
        for path in references(file) {
            if let Some(target) = owner(&modules, &path).filter(|t| **t != file.module) {
                targets.insert(target.clone());
            }
        }
    }
    let mut found = BTreeSet::new();
    for start in edges.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, trail)) = stack.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                if next == start {
                    let mut loop_: Vec<String> = trail.iter().map(|m| m.join("::")).collect();
                    loop_.push(start.join("::"));
                    let smallest = loop_[..loop_.len() - 1].iter().min().cloned().unwrap_or_default();
                    if loop_[0] == smallest {
                        found.insert(loop_.join(" -> "));
                    }
                } else if seen.insert(next.clone()) {
                    let mut longer = trail.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found.into_iter().collect()
}

/// Every file of a module in [`WITHOUT_KUBE_CLIENT`] that names a Kubernetes client.
fn kube_clients(files: &[SourceFile]) -> Vec<String> {
    let client = ["kube::Client", "kube::Api", "kube::api::Api", "Api::namespaced", "Api::all", "Api<"];
    files
        .iter()
        .filter(|file| WITHOUT_KUBE_CLIENT.contains(&top(&file.module).as_str()))
        .filter_map(|file| {
            let code = code_of(&file.text);
            let named: Vec<&str> = client.iter().copied().filter(|c| code.contains(c)).collect();
            (!named.is_empty()).then(|| format!("{} names {}", file.module.join("::"), named.join(", ")))
        })
        .collect()
}

fn src() -> Vec<SourceFile> {
    read_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn every_use_points_down_the_layers() {
    let problems = upward_uses(&src());
    assert!(problems.is_empty(), "uses that do not point down the layers:\n{}", problems.join("\n"));
}

#[test]
fn the_pure_layers_hold_no_kubernetes_client() {
    let found = kube_clients(&src());
    assert!(found.is_empty(), "a Kubernetes client where there must be none:\n{}", found.join("\n"));
}

#[test]
fn no_files_use_each_other() {
    let loops = cycles(&src());
    assert!(loops.is_empty(), "files using each other:\n{}", loops.join("\n"));
}

fn fixture(files: &[(&str, &str)]) -> Vec<SourceFile> {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    read_tree(dir.path())
}

#[test]
fn the_analysis_catches_an_upward_use_in_a_fixture_tree() {
    let clean = fixture(&[
        ("api/mod.rs", "pub mod common;\n"),
        ("api/common.rs", "pub struct Name;\n"),
        ("controller/mod.rs", "use crate::api::common::Name;\n"),
    ]);
    assert_eq!(upward_uses(&clean), Vec::<String>::new());
    let broken = fixture(&[
        ("api/mod.rs", "// crate::controller in a comment is no use\nuse crate::controller::Context;\n"),
        ("controller/mod.rs", "pub struct Context;\nfn f() { crate::api::x(); }\n"),
        ("gadget.rs", "use crate::api::X;\n"),
    ]);
    assert_eq!(
        upward_uses(&broken),
        vec![
            "api uses crate::controller::Context".to_owned(),
            "gadget is in no layer; add it to LAYERS".to_owned()
        ]
    );
    let grouped = fixture(&[("events/mod.rs", "use crate::{api::A, triggers::B};\n"), ("api/mod.rs", "")]);
    assert_eq!(upward_uses(&grouped), vec!["events uses crate::triggers::B".to_owned()]);
    let in_attribute = fixture(&[
        (
            "leader.rs",
            "#[serde(deserialize_with = \"crate::config::duration\")]\nstruct A { text: &'static str }\n",
        ),
        ("config.rs", "const NOTE: &str = \"crate::leader is mentioned in text\";\n"),
    ]);
    assert_eq!(upward_uses(&in_attribute), vec!["leader uses crate::config::duration".to_owned()]);
}

#[test]
fn the_analysis_catches_a_kubernetes_client_in_a_pure_layer() {
    let tree = fixture(&[
        ("triggers/mod.rs", "pub async fn graph(client: &kube::Client) {}\n"),
        ("controller/mod.rs", "pub async fn f(client: kube::Client) {}\n"),
    ]);
    assert_eq!(kube_clients(&tree), vec!["triggers names kube::Client".to_owned()]);
}

#[test]
fn the_analysis_catches_files_using_each_other_in_a_fixture_tree() {
    let tree = fixture(&[
        ("controller/mod.rs", "pub mod run;\npub mod sync;\n"),
        ("controller/run.rs", "use super::sync::reconcile;\n"),
        ("controller/sync.rs", "pub fn reconcile() { super::run::helper(); }\n"),
        ("controller/state.rs", "use crate::controller::run::X;\n"),
    ]);
    assert_eq!(cycles(&tree), vec!["controller::run -> controller::sync -> controller::run".to_owned()]);
}
