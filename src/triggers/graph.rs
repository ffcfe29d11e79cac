//! The trigger dependency graph of RunConfigurations: who depends on whom through
//! `spec.triggers.runConfigurations`, the reverse index the trigger engine uses to find the
//! dependants of a completed RunConfiguration, and cycle detection.
//!
//! Nodes are qualified names (`namespace/name`); a reference written without a namespace takes
//! the depending RunConfiguration's namespace. A node exists while it is defined (inserted) or
//! referenced by a defined node, so a dependency that does not exist (yet) still has dependants.
//!
//! Only trigger references are edges: a `valueFrom` reference reads artifacts but never starts a
//! run, so it cannot make runs loop.
//!
//! Cycles are the strongly connected components with more than one member, plus self-loops.
//! They are found with an iterative Tarjan (no recursion, so 10,000-long chains are fine), lazily
//! on first use after a change, and cached until the next change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use crate::api::{NamespacedName, RunConfiguration};

/// RunConfigurations and the trigger edges between them, with a reverse index and cycles.
///
/// Plain data (no locks inside): share it behind a lock, or rebuild and swap it.
#[derive(Debug, Clone, Default)]
pub struct DependencyGraph {
    /// Each defined RunConfiguration → the RunConfigurations it is triggered by.
    dependencies: BTreeMap<NamespacedName, BTreeSet<NamespacedName>>,
    /// Each referenced RunConfiguration → the defined RunConfigurations it triggers.
    dependants: BTreeMap<NamespacedName, BTreeSet<NamespacedName>>,
    /// Computed on first use after a change.
    cycles: OnceLock<Cycles>,
}

/// The cycle components, each sorted, in sorted order, and each member's component.
#[derive(Debug, Clone, Default)]
struct Cycles {
    components: Vec<Vec<NamespacedName>>,
    component_of: HashMap<NamespacedName, usize>,
}

/// The qualified name of a RunConfiguration (`metadata.namespace/metadata.name`; an object
/// without a namespace gives a name-only reference).
pub fn qualified_name(rc: &RunConfiguration) -> NamespacedName {
    NamespacedName::new(
        rc.metadata.namespace.clone().unwrap_or_default(),
        rc.metadata.name.clone().unwrap_or_default(),
    )
}

/// The qualified names a RunConfiguration is triggered by (`spec.triggers.runConfigurations`,
/// namespaces defaulting to its own), without duplicates.
pub fn trigger_dependencies(rc: &RunConfiguration) -> BTreeSet<NamespacedName> {
    let namespace = rc.metadata.namespace.as_deref().unwrap_or_default();
    rc.spec.triggers.dependencies().iter().map(|reference| reference.qualified(namespace)).collect()
}

impl DependencyGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// The graph of these RunConfigurations' trigger references.
    pub fn from_run_configurations<'a>(rcs: impl IntoIterator<Item = &'a RunConfiguration>) -> Self {
        let mut graph = Self::new();
        for rc in rcs {
            graph.upsert(rc);
        }
        graph
    }

    /// Defines (or redefines) `rc` from its spec. Returns whether its edges changed.
    pub fn upsert(&mut self, rc: &RunConfiguration) -> bool {
        self.insert(qualified_name(rc), trigger_dependencies(rc))
    }

    /// Defines `dependant` as triggered by `dependencies` (qualified names), replacing what it
    /// was triggered by before. Returns whether the edges changed (a newly defined node without
    /// dependencies counts as a change).
    pub fn insert(
        &mut self,
        dependant: NamespacedName,
        dependencies: impl IntoIterator<Item = NamespacedName>,
    ) -> bool {
        let new: BTreeSet<NamespacedName> = dependencies.into_iter().collect();
        let old = match self.dependencies.get(&dependant) {
            Some(old) if *old == new => return false,
            Some(old) => old.clone(),
            None => BTreeSet::new(),
        };
        for removed in old.difference(&new) {
            self.unlink(removed, &dependant);
        }
        for added in new.difference(&old) {
            self.dependants.entry(added.clone()).or_default().insert(dependant.clone());
        }
        self.dependencies.insert(dependant, new);
        self.cycles = OnceLock::new();
        true
    }

    /// Forgets a defined RunConfiguration and its edges. It stays a node while others still
    /// reference it. Returns whether it was defined.
    pub fn remove(&mut self, dependant: &NamespacedName) -> bool {
        let Some(old) = self.dependencies.remove(dependant) else {
            return false;
        };
        for dependency in &old {
            self.unlink(dependency, dependant);
        }
        self.cycles = OnceLock::new();
        true
    }

    fn unlink(&mut self, dependency: &NamespacedName, dependant: &NamespacedName) {
        if let Some(set) = self.dependants.get_mut(dependency) {
            set.remove(dependant);
            if set.is_empty() {
                self.dependants.remove(dependency);
            }
        }
    }

    /// Whether `name` was defined (inserted), as opposed to only referenced or unknown.
    pub fn contains(&self, name: &NamespacedName) -> bool {
        self.dependencies.contains_key(name)
    }

    /// The number of defined RunConfigurations.
    pub fn len(&self) -> usize {
        self.dependencies.len()
    }

    /// Whether no RunConfiguration is defined.
    pub fn is_empty(&self) -> bool {
        self.dependencies.is_empty()
    }

    /// The RunConfigurations triggered when `name` records a new successful run, sorted.
    pub fn dependants_of(&self, name: &NamespacedName) -> impl Iterator<Item = &NamespacedName> {
        self.dependants.get(name).into_iter().flatten()
    }

    /// The RunConfigurations whose successes trigger `name`, sorted.
    pub fn dependencies_of(&self, name: &NamespacedName) -> impl Iterator<Item = &NamespacedName> {
        self.dependencies.get(name).into_iter().flatten()
    }

    /// Every node (defined or referenced), sorted.
    pub fn nodes(&self) -> impl Iterator<Item = &NamespacedName> {
        let all: BTreeSet<&NamespacedName> = self.dependencies.keys().chain(self.dependants.keys()).collect();
        all.into_iter()
    }

    /// Every edge as `(dependency, dependant)` (the direction runs flow), sorted by dependency,
    /// then dependant.
    pub fn edges(&self) -> impl Iterator<Item = (&NamespacedName, &NamespacedName)> {
        self.dependants
            .iter()
            .flat_map(|(dependency, set)| set.iter().map(move |dependant| (dependency, dependant)))
    }

    /// Every cycle component: strongly connected components of more than one node, and nodes
    /// that trigger themselves. Each is sorted; the list is sorted.
    pub fn cycles(&self) -> Vec<Vec<NamespacedName>> {
        self.computed_cycles().components.clone()
    }

    /// The cycle component `name` belongs to, if any.
    pub fn in_cycle(&self, name: &NamespacedName) -> Option<&[NamespacedName]> {
        let cycles = self.computed_cycles();
        cycles.component_of.get(name).and_then(|&i| cycles.components.get(i)).map(Vec::as_slice)
    }

    /// Whether `from` and `to` are in the same cycle component, so that no run may fire along an
    /// edge between them (in either direction). Does not check that the edge exists.
    pub fn is_cycle_edge(&self, from: &NamespacedName, to: &NamespacedName) -> bool {
        let cycles = self.computed_cycles();
        match (cycles.component_of.get(from), cycles.component_of.get(to)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }

    fn computed_cycles(&self) -> &Cycles {
        self.cycles.get_or_init(|| self.compute_cycles())
    }

    /// Iterative Tarjan over the defined nodes' edges (dependant → dependency).
    fn compute_cycles(&self) -> Cycles {
        const UNVISITED: usize = usize::MAX;
        let nodes: Vec<&NamespacedName> = self.nodes().collect();
        let index_of: HashMap<&NamespacedName, usize> =
            nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let adjacency: Vec<Vec<usize>> = nodes
            .iter()
            .map(|node| self.dependencies_of(node).filter_map(|d| index_of.get(d).copied()).collect())
            .collect();

        let count = nodes.len();
        let mut index = vec![UNVISITED; count];
        let mut low = vec![0; count];
        let mut on_stack = vec![false; count];
        let mut stack: Vec<usize> = Vec::new();
        let mut calls: Vec<(usize, usize)> = Vec::new();
        let mut next_index = 0;
        let mut components: Vec<Vec<NamespacedName>> = Vec::new();

        for root in 0..count {
            if index[root] != UNVISITED {
                continue;
            }
            index[root] = next_index;
            low[root] = next_index;
            next_index += 1;
            stack.push(root);
            on_stack[root] = true;
            calls.push((root, 0));
            while let Some(top) = calls.last_mut() {
                let v = top.0;
                if let Some(&w) = adjacency[v].get(top.1) {
                    top.1 += 1;
                    if index[w] == UNVISITED {
                        index[w] = next_index;
                        low[w] = next_index;
                        next_index += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        calls.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                    continue;
                }
                calls.pop();
                if let Some(&(parent, _)) = calls.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] != index[v] {
                    continue;
                }
                let mut members = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    members.push(w);
                    if w == v {
                        break;
                    }
                }
                if members.len() > 1 || adjacency[v].contains(&v) {
                    members.sort_unstable();
                    components.push(members.into_iter().map(|i| nodes[i].clone()).collect());
                }
            }
        }

        components.sort();
        let component_of = components
            .iter()
            .enumerate()
            .flat_map(|(i, members)| members.iter().map(move |member| (member.clone(), i)))
            .collect();
        Cycles { components, component_of }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RunConfigurationSpec;

    fn nn(s: &str) -> NamespacedName {
        s.parse().unwrap()
    }

    fn graph(edges: &[(&str, &[&str])]) -> DependencyGraph {
        let mut graph = DependencyGraph::new();
        for (dependant, dependencies) in edges {
            graph.insert(nn(dependant), dependencies.iter().map(|d| nn(d)));
        }
        graph
    }

    fn names(items: &[&str]) -> Vec<NamespacedName> {
        items.iter().map(|s| nn(s)).collect()
    }

    #[test]
    fn built_from_run_configurations_with_namespaces_defaulted() {
        let mut rc = RunConfiguration::new("training", RunConfigurationSpec::default());
        rc.metadata.namespace = Some("ml".into());
        rc.spec.triggers.run_configurations = vec![nn("examples"), nn("base/prep"), nn("ml/examples")];
        let graph = DependencyGraph::from_run_configurations([&rc]);
        assert_eq!(
            graph.dependencies_of(&nn("ml/training")).collect::<Vec<_>>(),
            vec![&nn("base/prep"), &nn("ml/examples")]
        );
        assert_eq!(graph.dependants_of(&nn("ml/examples")).collect::<Vec<_>>(), vec![&nn("ml/training")]);
        assert_eq!(graph.dependants_of(&nn("base/prep")).count(), 1);
        assert_eq!(graph.dependants_of(&nn("ml/training")).count(), 0);
        assert!(graph.contains(&nn("ml/training")));
        assert!(!graph.contains(&nn("base/prep")), "only referenced");
        assert_eq!(graph.nodes().count(), 3);
        assert_eq!(graph.len(), 1);
    }

    #[test]
    fn reinserting_replaces_edges_and_removing_forgets_them() {
        let mut graph = graph(&[("a/x", &["a/y", "a/z"])]);
        assert!(!graph.insert(nn("a/x"), names(&["a/z", "a/y"])), "same edges are no change");
        assert!(graph.insert(nn("a/x"), names(&["a/z"])));
        assert_eq!(graph.dependants_of(&nn("a/y")).count(), 0);
        assert_eq!(graph.nodes().collect::<Vec<_>>(), vec![&nn("a/x"), &nn("a/z")]);
        assert!(graph.remove(&nn("a/x")));
        assert!(!graph.remove(&nn("a/x")));
        assert_eq!(graph.nodes().count(), 0);
        assert_eq!(graph.edges().count(), 0);
    }

    #[test]
    fn two_nodes_triggering_each_other_are_a_cycle() {
        let graph = graph(&[("a/x", &["a/y"]), ("a/y", &["a/x"]), ("a/z", &["a/x"])]);
        assert_eq!(graph.cycles(), vec![names(&["a/x", "a/y"])]);
        assert_eq!(graph.in_cycle(&nn("a/y")), Some(names(&["a/x", "a/y"]).as_slice()));
        assert_eq!(graph.in_cycle(&nn("a/z")), None);
        assert!(graph.is_cycle_edge(&nn("a/x"), &nn("a/y")));
        assert!(graph.is_cycle_edge(&nn("a/y"), &nn("a/x")));
        assert!(!graph.is_cycle_edge(&nn("a/x"), &nn("a/z")), "z hangs off the cycle");
    }

    #[test]
    fn a_self_loop_is_a_cycle() {
        let graph = graph(&[("a/x", &["a/x"]), ("a/y", &["a/x"])]);
        assert_eq!(graph.cycles(), vec![names(&["a/x"])]);
        assert!(graph.is_cycle_edge(&nn("a/x"), &nn("a/x")));
        assert!(!graph.is_cycle_edge(&nn("a/x"), &nn("a/y")));
    }

    #[test]
    fn a_diamond_is_not_a_cycle() {
        // top → left, right → bottom
        let graph =
            graph(&[("a/left", &["a/top"]), ("a/right", &["a/top"]), ("a/bottom", &["a/left", "a/right"])]);
        assert!(graph.cycles().is_empty());
        assert_eq!(graph.in_cycle(&nn("a/bottom")), None);
        assert_eq!(
            graph.dependants_of(&nn("a/top")).collect::<Vec<_>>(),
            vec![&nn("a/left"), &nn("a/right")]
        );
    }

    #[test]
    fn cycles_across_namespaces_are_sorted_and_deterministic() {
        let graph = graph(&[
            ("b/q", &["a/p"]),
            ("a/p", &["c/r"]),
            ("c/r", &["b/q"]),
            ("z/1", &["z/2"]),
            ("z/2", &["z/1"]),
            ("m/self", &["m/self"]),
        ]);
        assert_eq!(
            graph.cycles(),
            vec![names(&["a/p", "b/q", "c/r"]), names(&["m/self"]), names(&["z/1", "z/2"])]
        );
    }

    #[test]
    fn breaking_a_cycle_clears_it() {
        let mut graph = graph(&[("a/x", &["a/y"]), ("a/y", &["a/x"])]);
        assert_eq!(graph.cycles().len(), 1);
        graph.insert(nn("a/y"), []);
        assert!(graph.cycles().is_empty());
        assert!(!graph.is_cycle_edge(&nn("a/x"), &nn("a/y")));
    }

    #[test]
    fn ten_thousand_nodes_in_chains_and_trees() {
        let mut graph = DependencyGraph::new();
        // 500 chains of 10.
        for chain in 0..500 {
            for link in 1..10 {
                graph.insert(
                    nn(&format!("chains/c{chain}-{link}")),
                    [nn(&format!("chains/c{chain}-{}", link - 1))],
                );
            }
            graph.insert(nn(&format!("chains/c{chain}-0")), []);
        }
        // A binary tree of 5,000 nodes: node i is triggered by its parent (i - 1) / 2.
        for i in 0..5000 {
            let dependencies = if i == 0 { vec![] } else { vec![nn(&format!("trees/t{}", (i - 1) / 2))] };
            graph.insert(nn(&format!("trees/t{i}")), dependencies);
        }
        assert_eq!(graph.len(), 10_000);
        assert!(graph.cycles().is_empty());
        assert_eq!(graph.dependants_of(&nn("trees/t0")).count(), 2);
        assert_eq!(graph.dependants_of(&nn("chains/c7-3")).collect::<Vec<_>>(), vec![&nn("chains/c7-4")]);

        // Closing one 10,000-long chain into a loop: no recursion, one component.
        let mut ring = DependencyGraph::new();
        for i in 0..10_000 {
            ring.insert(nn(&format!("ring/n{i}")), [nn(&format!("ring/n{}", (i + 1) % 10_000))]);
        }
        let cycles = ring.cycles();
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].len(), 10_000);
        assert!(ring.is_cycle_edge(&nn("ring/n0"), &nn("ring/n9999")));
    }
}
