//! Renders a [`DependencyGraph`] for `kfp-operator graph`: Mermaid, Graphviz DOT or an indented
//! text tree, pure.
//!
//! Each node is labelled `namespace/name` and the state of its last run (`states`, `-` when
//! absent); each edge points from a dependency to its dependant (the way runs flow). Cycle edges
//! are drawn red and dashed (marked `(cycle)` in text), since no run fires along them. A [`View`]
//! of one namespace shows that namespace's RunConfigurations, their dependencies and dependants
//! in other namespaces as external nodes (dashed; `(other namespace)` in text), and the edges
//! that touch the namespace. With [`Annotations`], a join's expression and a concurrency policy
//! label their node, and join membership and conditions (`if metrics: accuracy > 0.9`) label
//! their edges. Nodes and edges come in sorted order, so the output of an unchanged
//! graph is byte-identical.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::graph::DependencyGraph;
use crate::api::NamespacedName;

/// What to draw: a graph, each node's state, and optionally the one namespace to focus on.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    graph: &'a DependencyGraph,
    states: &'a BTreeMap<NamespacedName, String>,
    namespace: Option<&'a str>,
    annotations: Option<&'a Annotations>,
}

/// What the edges alone do not say: a node's join expression and concurrency policy, an edge's
/// part in a join and the condition on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    /// Per dependant: `join: a && (b || c)`, `concurrencyPolicy: Forbid`.
    pub nodes: BTreeMap<NamespacedName, Vec<String>>,
    /// Per (dependency, dependant): `join`, `if metrics: accuracy > 0.9`.
    pub edges: BTreeMap<(NamespacedName, NamespacedName), Vec<String>>,
}

impl Annotations {
    /// The annotations of these RunConfigurations' triggers.
    pub fn of<'r>(rcs: impl IntoIterator<Item = &'r crate::api::RunConfiguration>) -> Self {
        let mut annotations = Self::default();
        for rc in rcs {
            let dependant = super::qualified_name(rc);
            let triggers = &rc.spec.triggers;
            let mut notes = Vec::new();
            if let Some(join) = &triggers.join {
                match crate::api::join::parse(&join.expression) {
                    Ok(expression) => notes.push(format!("join: {expression}")),
                    Err(_) => notes.push(format!("join (invalid): {}", join.expression)),
                }
            }
            if !triggers.concurrency_policy.is_allow() {
                notes.push(format!("concurrencyPolicy: {}", triggers.concurrency_policy.as_str()));
            }
            if !notes.is_empty() {
                annotations.nodes.insert(dependant.clone(), notes);
            }
            for dependency in triggers.join_dependencies() {
                let edge = (dependency.qualified(&dependant.namespace), dependant.clone());
                annotations.edges.entry(edge).or_default().push("join".into());
            }
            for condition in &triggers.conditions {
                let edge = (condition.run_configuration.qualified(&dependant.namespace), dependant.clone());
                let note = format!("if {}: {}", condition.artifact, condition.filter);
                annotations.edges.entry(edge).or_default().push(note);
            }
        }
        annotations
    }
}

impl<'a> View<'a> {
    /// The whole graph.
    pub fn all(graph: &'a DependencyGraph, states: &'a BTreeMap<NamespacedName, String>) -> Self {
        Self { graph, states, namespace: None, annotations: None }
    }

    /// The RunConfigurations of `namespace` and their neighbours in other namespaces.
    pub fn namespace(
        graph: &'a DependencyGraph,
        states: &'a BTreeMap<NamespacedName, String>,
        namespace: &'a str,
    ) -> Self {
        Self { graph, states, namespace: Some(namespace), annotations: None }
    }

    /// Draws `annotations` too: joins and concurrency policies on their nodes, join membership
    /// and conditions on their edges.
    pub fn annotated(mut self, annotations: &'a Annotations) -> Self {
        self.annotations = Some(annotations);
        self
    }

    fn node_notes(&self, node: &NamespacedName) -> &'a [String] {
        self.annotations.and_then(|a| a.nodes.get(node)).map_or(&[], Vec::as_slice)
    }

    fn edge_notes(&self, from: &NamespacedName, to: &NamespacedName) -> String {
        self.annotations
            .and_then(|a| a.edges.get(&(from.clone(), to.clone())))
            .map(|notes| notes.join(", "))
            .unwrap_or_default()
    }

    fn focused(&self, node: &NamespacedName) -> bool {
        self.namespace.is_none_or(|namespace| node.namespace == namespace)
    }

    /// Whether `node` is drawn as outside the focused namespace.
    fn is_external(&self, node: &NamespacedName) -> bool {
        !self.focused(node)
    }

    /// The edges drawn, sorted by dependency, then dependant.
    fn edges(&self) -> impl Iterator<Item = (&'a NamespacedName, &'a NamespacedName)> + '_ {
        self.graph.edges().filter(|(from, to)| self.focused(from) || self.focused(to))
    }

    /// The nodes drawn, sorted.
    fn nodes(&self) -> Vec<&'a NamespacedName> {
        let mut nodes: BTreeSet<&NamespacedName> = self.graph.nodes().filter(|n| self.focused(n)).collect();
        nodes.extend(self.edges().flat_map(|(from, to)| [from, to]));
        nodes.into_iter().collect()
    }

    fn state(&self, node: &NamespacedName) -> &'a str {
        self.states.get(node).map_or("-", String::as_str)
    }
}

/// Mermaid flowchart source. Node ids are `n0`, `n1`, … in sorted name order; quotes in labels
/// become `#quot;`.
pub fn mermaid(view: &View<'_>) -> String {
    let escape = |s: &str| s.replace('"', "#quot;");
    let ids: BTreeMap<&NamespacedName, usize> =
        view.nodes().into_iter().enumerate().map(|(i, n)| (n, i)).collect();
    let mut out = String::from("flowchart LR\n");
    for (node, id) in &ids {
        let notes: String =
            view.node_notes(node).iter().map(|note| format!("<br/>{}", escape(note))).collect();
        let _ = writeln!(
            out,
            "  n{id}[\"{}<br/>{}{notes}\"]",
            escape(&node.to_string()),
            escape(view.state(node))
        );
    }
    let mut cycle_links = Vec::new();
    for (index, (dependency, dependant)) in view.edges().enumerate() {
        let (Some(from), Some(to)) = (ids.get(dependency), ids.get(dependant)) else {
            continue;
        };
        let notes = view.edge_notes(dependency, dependant);
        let label = if notes.is_empty() { String::new() } else { format!("|\"{}\"|", escape(&notes)) };
        if view.graph.is_cycle_edge(dependency, dependant) {
            cycle_links.push(index.to_string());
            let _ = writeln!(out, "  n{from} -.->{label} n{to}");
        } else {
            let _ = writeln!(out, "  n{from} -->{label} n{to}");
        }
    }
    let class_of = |wanted: &dyn Fn(&NamespacedName) -> bool| -> Vec<String> {
        ids.iter().filter(|(node, _)| wanted(node)).map(|(_, id)| format!("n{id}")).collect()
    };
    if !cycle_links.is_empty() {
        let _ = writeln!(out, "  linkStyle {} stroke:red,stroke-dasharray:5 5", cycle_links.join(","));
        out.push_str("  classDef cycle stroke:red\n");
        let _ = writeln!(out, "  class {} cycle", class_of(&|n| view.graph.in_cycle(n).is_some()).join(","));
    }
    let external = class_of(&|n| view.is_external(n));
    if !external.is_empty() {
        out.push_str("  classDef external stroke-dasharray:3 3\n");
        let _ = writeln!(out, "  class {} external", external.join(","));
    }
    out
}

/// Graphviz DOT source. Node ids are the quoted `namespace/name`; quotes and backslashes in
/// strings are escaped.
pub fn dot(view: &View<'_>) -> String {
    let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::from("digraph runconfigurations {\n  rankdir=LR;\n  node [shape=box];\n");
    for node in view.nodes() {
        let name = escape(&node.to_string());
        let style = if view.is_external(node) { ", style=dashed" } else { "" };
        let notes: String = view.node_notes(node).iter().map(|note| format!("\\n{}", escape(note))).collect();
        let _ =
            writeln!(out, "  \"{name}\" [label=\"{name}\\n{}{notes}\"{style}];", escape(view.state(node)));
    }
    for (dependency, dependant) in view.edges() {
        let mut attributes = Vec::new();
        if view.graph.is_cycle_edge(dependency, dependant) {
            attributes.push("color=red, style=dashed".to_owned());
        }
        let notes = view.edge_notes(dependency, dependant);
        if !notes.is_empty() {
            attributes.push(format!("label=\"{}\"", escape(&notes)));
        }
        let style =
            if attributes.is_empty() { String::new() } else { format!(" [{}]", attributes.join(", ")) };
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

/// An indented tree for a terminal: each RunConfiguration with its state, its dependants below
/// it after `-> `. Trees start at the nodes nothing drawn triggers (then at the first unvisited
/// member of each remaining cycle); a node met again is written `(see above)`.
pub fn text(view: &View<'_>) -> String {
    let nodes = view.nodes();
    let edges: Vec<(&NamespacedName, &NamespacedName)> = view.edges().collect();
    let dependants = |node: &NamespacedName| -> Vec<&NamespacedName> {
        edges.iter().filter(|(from, _)| *from == node).map(|(_, to)| *to).collect()
    };
    let has_dependency = |node: &NamespacedName| edges.iter().any(|(_, to)| *to == node);
    let roots: Vec<&NamespacedName> = nodes.iter().copied().filter(|n| !has_dependency(n)).collect();
    let mut visited: BTreeSet<&NamespacedName> = BTreeSet::new();
    let mut out = String::new();
    let line = |out: &mut String, depth: usize, node: &NamespacedName, note: &str| {
        let arrow = if depth == 0 { String::new() } else { format!("{}-> ", "   ".repeat(depth - 1)) };
        let external = if view.is_external(node) { " (other namespace)" } else { "" };
        let notes: String = view.node_notes(node).iter().map(|n| format!(" {{{n}}}")).collect();
        let _ = writeln!(out, "{arrow}{node}  [{}]{external}{notes}{note}", view.state(node));
    };
    let starts = roots.into_iter().chain(nodes.iter().copied());
    for start in starts {
        if visited.contains(start) {
            continue;
        }
        let mut stack: Vec<(&NamespacedName, usize, Option<&NamespacedName>)> = vec![(start, 0, None)];
        while let Some((node, depth, parent)) = stack.pop() {
            let cycle = parent.is_some_and(|parent| view.graph.is_cycle_edge(parent, node));
            let mut cycle_note =
                if cycle { " (cycle: no run fires along it)".to_owned() } else { String::new() };
            if let Some(parent) = parent {
                let notes = view.edge_notes(parent, node);
                if !notes.is_empty() {
                    cycle_note = format!(" ({notes}){cycle_note}");
                }
            }
            if !visited.insert(node) {
                line(&mut out, depth, node, &format!("{cycle_note} (see above)"));
                continue;
            }
            line(&mut out, depth, node, &cycle_note);
            for dependant in dependants(node).into_iter().rev() {
                stack.push((dependant, depth + 1, Some(node)));
            }
        }
    }
    if out.is_empty() {
        out.push_str("(no RunConfigurations)\n");
    }
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

    /// The quickstart's shape: a → b (another namespace) → c, and an unrelated d.
    fn chain() -> (DependencyGraph, BTreeMap<NamespacedName, String>) {
        let mut graph = DependencyGraph::new();
        graph.insert(nn("train/a"), []);
        graph.insert(nn("eval/b"), [nn("train/a")]);
        graph.insert(nn("eval/c"), [nn("eval/b")]);
        graph.insert(nn("other/d"), []);
        let states = BTreeMap::from([
            (nn("train/a"), "Succeeded train/a-1".to_owned()),
            (nn("eval/b"), "Succeeded eval/b-1".to_owned()),
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
        let rendered = mermaid(&View::all(&graph, &states));
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
        let rendered = dot(&View::all(&graph, &states));
        assert_eq!(rendered, expected, "\n{rendered}");
    }

    #[test]
    fn text_snapshot() {
        let (graph, states) = small();
        let expected = "base/examples  [Succeeded]
-> ml/train  [Failed]
   -> ml/eval  [-] (cycle: no run fires along it)
      -> ml/report  [say \"hi\"]
      -> ml/train  [Failed] (cycle: no run fires along it) (see above)
";
        let rendered = text(&View::all(&graph, &states));
        assert_eq!(rendered, expected, "\n{rendered}");
    }

    #[test]
    fn a_namespace_view_shows_neighbours_elsewhere_with_their_state_and_edges() {
        let (graph, states) = chain();
        let eval = View::namespace(&graph, &states, "eval");
        assert_eq!(
            text(&eval),
            "train/a  [Succeeded train/a-1] (other namespace)\n-> eval/b  [Succeeded eval/b-1]\n   -> eval/c  [-]\n"
        );
        let rendered = mermaid(&eval);
        assert!(rendered.contains("n2[\"train/a<br/>Succeeded train/a-1\"]"), "{rendered}");
        assert!(rendered.contains("n2 --> n0"), "{rendered}");
        assert!(
            rendered.ends_with("  classDef external stroke-dasharray:3 3\n  class n2 external\n"),
            "{rendered}"
        );
        assert!(!rendered.contains("other/d"), "{rendered}");

        let train = View::namespace(&graph, &states, "train");
        let rendered = dot(&train);
        assert!(
            rendered.contains("\"eval/b\" [label=\"eval/b\\nSucceeded eval/b-1\", style=dashed];"),
            "{rendered}"
        );
        assert!(rendered.contains("\"train/a\" -> \"eval/b\";"), "{rendered}");
        assert!(!rendered.contains("eval/c"), "only the direct neighbours: {rendered}");
    }

    #[test]
    fn an_empty_graph_renders() {
        let graph = DependencyGraph::new();
        let states = BTreeMap::new();
        let view = View::all(&graph, &states);
        assert_eq!(mermaid(&view), "flowchart LR\n");
        assert_eq!(dot(&view), "digraph runconfigurations {\n  rankdir=LR;\n  node [shape=box];\n}\n");
        assert_eq!(text(&view), "(no RunConfigurations)\n");
    }

    #[test]
    fn joins_conditions_and_policies_are_drawn() {
        let mut rc = crate::api::RunConfiguration::new("serve", crate::api::RunConfigurationSpec::default());
        rc.metadata.namespace = Some("ml".into());
        rc.spec.triggers.join = Some(crate::api::Join {
            expression: "features&&(train-xgb||train-lgbm)".into(),
            reset: String::new(),
        });
        rc.spec.triggers.conditions = vec![crate::api::TriggerCondition {
            run_configuration: nn("train-xgb"),
            artifact: "metrics".into(),
            filter: "accuracy > 0.9".into(),
        }];
        rc.spec.triggers.concurrency_policy = crate::api::ConcurrencyPolicy::Forbid;
        let graph = DependencyGraph::from_run_configurations([&rc]);
        let annotations = Annotations::of([&rc]);
        let states = BTreeMap::new();
        let view = View::all(&graph, &states).annotated(&annotations);
        let mermaid = mermaid(&view);
        assert!(
            mermaid.contains("n1[\"ml/serve<br/>-<br/>join: features && (train-xgb || train-lgbm)<br/>concurrencyPolicy: Forbid\"]"),
            "{mermaid}"
        );
        assert!(mermaid.contains("n3 -->|\"join, if metrics: accuracy > 0.9\"| n1"), "{mermaid}");
        assert!(mermaid.contains("n0 -->|\"join\"| n1"), "{mermaid}");
        let dot = dot(&view);
        assert!(
            dot.contains("\"ml/train-xgb\" -> \"ml/serve\" [label=\"join, if metrics: accuracy > 0.9\"];"),
            "{dot}"
        );
        let text = text(&view);
        assert!(
            text.contains("-> ml/serve  [-] {join: features && (train-xgb || train-lgbm)} {concurrencyPolicy: Forbid} (join, if metrics: accuracy > 0.9)"),
            "{text}"
        );
    }
}
