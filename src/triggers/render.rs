//! Renders a [`DependencyGraph`] for `kfp-operator graph`: Mermaid or Graphviz DOT, pure.
//!
//! Each node is labelled `namespace/name` and the state of its last run (`states`, `-` when
//! absent); each edge points from a dependency to its dependant (the way runs flow). Cycle edges
//! are drawn red and dashed, since no run fires along them. Nodes and edges come in sorted order,
//! so the output of an unchanged graph is byte-identical.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::graph::DependencyGraph;
use crate::api::NamespacedName;

fn state_of<'a>(states: &'a BTreeMap<NamespacedName, String>, node: &NamespacedName) -> &'a str {
    states.get(node).map_or("-", String::as_str)
}

/// Mermaid flowchart source. Node ids are `n0`, `n1`, … in sorted name order; quotes in labels
/// become `#quot;`.
pub fn mermaid(graph: &DependencyGraph, states: &BTreeMap<NamespacedName, String>) -> String {
    let escape = |s: &str| s.replace('"', "#quot;");
    let ids: BTreeMap<&NamespacedName, usize> = graph.nodes().enumerate().map(|(i, n)| (n, i)).collect();
    let mut out = String::from("flowchart LR\n");
    for (node, id) in &ids {
        let _ = writeln!(
            out,
            "  n{id}[\"{}<br/>{}\"]",
            escape(&node.to_string()),
            escape(state_of(states, node))
        );
    }
    let mut cycle_links = Vec::new();
    for (index, (dependency, dependant)) in graph.edges().enumerate() {
        let (Some(from), Some(to)) = (ids.get(dependency), ids.get(dependant)) else {
            continue;
        };
        if graph.is_cycle_edge(dependency, dependant) {
            cycle_links.push(index.to_string());
            let _ = writeln!(out, "  n{from} -.-> n{to}");
        } else {
            let _ = writeln!(out, "  n{from} --> n{to}");
        }
    }
    if !cycle_links.is_empty() {
        let _ = writeln!(out, "  linkStyle {} stroke:red,stroke-dasharray:5 5", cycle_links.join(","));
        let members: Vec<String> = ids
            .iter()
            .filter(|(node, _)| graph.in_cycle(node).is_some())
            .map(|(_, id)| format!("n{id}"))
            .collect();
        out.push_str("  classDef cycle stroke:red\n");
        let _ = writeln!(out, "  class {} cycle", members.join(","));
    }
    out
}

/// Graphviz DOT source. Node ids are the quoted `namespace/name`; quotes and backslashes in
/// strings are escaped.
pub fn dot(graph: &DependencyGraph, states: &BTreeMap<NamespacedName, String>) -> String {
    let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::from("digraph runconfigurations {\n  rankdir=LR;\n  node [shape=box];\n");
    for node in graph.nodes() {
        let name = escape(&node.to_string());
        let _ = writeln!(out, "  \"{name}\" [label=\"{name}\\n{}\"];", escape(state_of(states, node)));
    }
    for (dependency, dependant) in graph.edges() {
        let style =
            if graph.is_cycle_edge(dependency, dependant) { " [color=red, style=dashed]" } else { "" };
        let _ = writeln!(
            out,
            "  \"{}\" -> \"{}\"{style};",
            escape(&dependency.to_string()),
            escape(&dependant.to_string())
        );
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nn(s: &str) -> NamespacedName {
        s.parse().unwrap()
    }

    /// base/examples → ml/train → ml/eval → ml/train (a cycle), ml/eval → ml/report.
    fn small() -> (DependencyGraph, BTreeMap<NamespacedName, String>) {
        let mut graph = DependencyGraph::new();
        graph.insert(nn("ml/train"), [nn("base/examples"), nn("ml/eval")]);
        graph.insert(nn("ml/eval"), [nn("ml/train")]);
        graph.insert(nn("ml/report"), [nn("ml/eval")]);
        let states = BTreeMap::from([
            (nn("base/examples"), "Succeeded".to_owned()),
            (nn("ml/train"), "Failed".to_owned()),
            (nn("ml/report"), "say \"hi\"".to_owned()),
        ]);
        (graph, states)
    }

    #[test]
    fn mermaid_snapshot() {
        let (graph, states) = small();
        let expected = r#"flowchart LR
  n0["base/examples<br/>Succeeded"]
  n1["ml/eval<br/>-"]
  n2["ml/report<br/>say #quot;hi#quot;"]
  n3["ml/train<br/>Failed"]
  n0 --> n3
  n1 --> n2
  n1 -.-> n3
  n3 -.-> n1
  linkStyle 2,3 stroke:red,stroke-dasharray:5 5
  classDef cycle stroke:red
  class n1,n3 cycle
"#;
        // Links are numbered in output order (edges sorted by dependency, then dependant).
        let rendered = mermaid(&graph, &states);
        assert_eq!(rendered, expected, "\n{rendered}");
    }

    #[test]
    fn dot_snapshot() {
        let (graph, states) = small();
        let expected = r#"digraph runconfigurations {
  rankdir=LR;
  node [shape=box];
  "base/examples" [label="base/examples\nSucceeded"];
  "ml/eval" [label="ml/eval\n-"];
  "ml/report" [label="ml/report\nsay \"hi\""];
  "ml/train" [label="ml/train\nFailed"];
  "base/examples" -> "ml/train";
  "ml/eval" -> "ml/report";
  "ml/eval" -> "ml/train" [color=red, style=dashed];
  "ml/train" -> "ml/eval" [color=red, style=dashed];
}
"#;
        let rendered = dot(&graph, &states);
        assert_eq!(rendered, expected, "\n{rendered}");
    }

    #[test]
    fn an_empty_graph_renders() {
        let graph = DependencyGraph::new();
        assert_eq!(mermaid(&graph, &BTreeMap::new()), "flowchart LR\n");
        assert_eq!(
            dot(&graph, &BTreeMap::new()),
            "digraph runconfigurations {\n  rankdir=LR;\n  node [shape=box];\n}\n"
        );
    }
}
