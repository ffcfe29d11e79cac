//! The shared RunConfiguration index the trigger engine works from: every watched
//! RunConfiguration by qualified name, who references whom (triggers and `valueFrom`), and the
//! trigger graph with its cycles. In memory; fed by watch events, it makes no requests itself.
//!
//! It is fed incrementally by the RunConfiguration controllers' watch streams (one per watched
//! namespace, or one for the cluster), so no reconcile rebuilds anything: an object change costs
//! its own references, and the trigger graph is only written (and its cycles only recomputed)
//! when an object's trigger edges change.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use kube::runtime::watcher;

use super::dependencies::referenced_run_configurations;
use super::{DependencyGraph, qualified_name, trigger_dependencies};
use crate::api::{NamespacedName, RunConfiguration};

/// Every watched RunConfiguration, indexed for the trigger engine. Shared by all controllers.
pub struct RunConfigurationIndex {
    objects: DashMap<NamespacedName, Arc<RunConfiguration>>,
    /// Dependency → the RunConfigurations referencing it (triggers or `valueFrom`).
    referrers: DashMap<NamespacedName, BTreeSet<NamespacedName>>,
    /// The trigger edges only (a `valueFrom` reference never starts a run).
    graph: RwLock<DependencyGraph>,
    /// How many watch scopes have completed their first list, against how many there are.
    listed_scopes: tokio::sync::watch::Sender<usize>,
    scopes: usize,
}

impl Default for RunConfigurationIndex {
    fn default() -> Self {
        Self::new(1)
    }
}

fn references(rc: &RunConfiguration) -> BTreeSet<NamespacedName> {
    let namespace = rc.metadata.namespace.as_deref().unwrap_or_default();
    let trigger_dependencies = rc.spec.triggers.dependencies();
    referenced_run_configurations(&rc.spec.run.parameters, &trigger_dependencies)
        .into_iter()
        .map(|reference| reference.qualified(namespace))
        .collect()
}

impl RunConfigurationIndex {
    /// An empty index that is complete once `scopes` watch streams have listed.
    pub fn new(scopes: usize) -> Self {
        Self {
            objects: DashMap::new(),
            referrers: DashMap::new(),
            graph: RwLock::default(),
            listed_scopes: tokio::sync::watch::Sender::new(0),
            scopes: scopes.max(1),
        }
    }

    /// Waits until every watch scope has listed once (the index holds every RunConfiguration),
    /// at most `timeout`. Returns whether it has.
    pub async fn wait_until_complete(&self, timeout: Duration) -> bool {
        let mut listed = self.listed_scopes.subscribe();
        let complete = listed.wait_for(|listed| *listed >= self.scopes);
        matches!(tokio::time::timeout(timeout, complete).await, Ok(Ok(_)))
    }

    /// Adds or replaces a RunConfiguration.
    pub fn upsert(&self, rc: Arc<RunConfiguration>) {
        let name = qualified_name(&rc);
        let new_references = references(&rc);
        let new_edges = trigger_dependencies(&rc);
        let previous = self.objects.insert(name.clone(), rc);
        let (old_references, old_edges) = previous
            .as_deref()
            .map(|old| (references(old), Some(trigger_dependencies(old))))
            .unwrap_or_default();
        self.relink(&name, &old_references, &new_references);
        if old_edges.as_ref() != Some(&new_edges) {
            self.graph.write().unwrap_or_else(PoisonError::into_inner).insert(name, new_edges);
        }
    }

    /// Forgets a RunConfiguration.
    pub fn remove(&self, name: &NamespacedName) {
        if let Some((_, old)) = self.objects.remove(name) {
            self.relink(name, &references(&old), &BTreeSet::new());
            self.graph.write().unwrap_or_else(PoisonError::into_inner).remove(name);
        }
    }

    fn relink(&self, name: &NamespacedName, old: &BTreeSet<NamespacedName>, new: &BTreeSet<NamespacedName>) {
        for removed in old.difference(new) {
            let emptied = self.referrers.get_mut(removed).is_some_and(|mut set| {
                set.remove(name);
                set.is_empty()
            });
            if emptied {
                self.referrers.remove_if(removed, |_, set| set.is_empty());
            }
        }
        for added in new.difference(old) {
            self.referrers.entry(added.clone()).or_default().insert(name.clone());
        }
    }

    /// The RunConfiguration, if it is watched.
    pub fn get(&self, name: &NamespacedName) -> Option<Arc<RunConfiguration>> {
        self.objects.get(name).map(|entry| entry.value().clone())
    }

    /// The RunConfigurations referencing `dependency` (by trigger or `valueFrom`).
    pub fn referrers(&self, dependency: &NamespacedName) -> Vec<NamespacedName> {
        self.referrers.get(dependency).map(|set| set.iter().cloned().collect()).unwrap_or_default()
    }

    /// The watched RunConfigurations that `dependency` triggers.
    pub fn triggered_by(&self, dependency: &NamespacedName) -> Vec<Arc<RunConfiguration>> {
        let graph = self.graph.read().unwrap_or_else(PoisonError::into_inner);
        let names: Vec<NamespacedName> = graph.dependants_of(dependency).cloned().collect();
        drop(graph);
        names.iter().filter_map(|name| self.get(name)).collect()
    }

    /// The RunConfigurations in `namespace` that run `pipeline`.
    pub fn running_pipeline(&self, namespace: &str, pipeline: &str) -> Vec<NamespacedName> {
        self.objects
            .iter()
            .filter(|entry| {
                entry.key().namespace == namespace && entry.value().spec.run.pipeline.name == pipeline
            })
            .map(|entry| entry.key().clone())
            .collect()
    }

    /// Runs `read` on the trigger graph.
    pub fn with_graph<T>(&self, read: impl FnOnce(&DependencyGraph) -> T) -> T {
        read(&self.graph.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// How many RunConfigurations are indexed.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// A feeder for one watch stream over `namespace` (`None`: the whole cluster).
    pub fn feeder(self: &Arc<Self>, namespace: Option<String>) -> IndexFeeder {
        IndexFeeder { index: self.clone(), namespace, relisted: None, listed: false }
    }
}

/// Applies one watch stream's events to the index; after a re-list, objects of its scope that
/// the list no longer contains are forgotten.
pub struct IndexFeeder {
    index: Arc<RunConfigurationIndex>,
    namespace: Option<String>,
    relisted: Option<HashSet<NamespacedName>>,
    listed: bool,
}

impl IndexFeeder {
    pub fn observe(&mut self, event: &watcher::Event<RunConfiguration>) {
        match event {
            watcher::Event::Init => self.relisted = Some(HashSet::new()),
            watcher::Event::InitApply(rc) => {
                if let Some(seen) = &mut self.relisted {
                    seen.insert(qualified_name(rc));
                }
                self.index.upsert(Arc::new(rc.clone()));
            }
            watcher::Event::InitDone => {
                let Some(seen) = self.relisted.take() else { return };
                let gone: Vec<NamespacedName> = self
                    .index
                    .objects
                    .iter()
                    .map(|entry| entry.key().clone())
                    .filter(|name| self.namespace.as_ref().is_none_or(|ns| *ns == name.namespace))
                    .filter(|name| !seen.contains(name))
                    .collect();
                for name in &gone {
                    self.index.remove(name);
                }
                if !std::mem::replace(&mut self.listed, true) {
                    self.index.listed_scopes.send_modify(|listed| *listed += 1);
                }
            }
            watcher::Event::Apply(rc) => self.index.upsert(Arc::new(rc.clone())),
            watcher::Event::Delete(rc) => self.index.remove(&qualified_name(rc)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        Parameter, PipelineIdentifier, RunConfigurationRef, RunConfigurationSpec, RunSpec, Triggers,
    };

    fn rc(namespace: &str, name: &str, triggers: &[&str], value_from: &[&str]) -> Arc<RunConfiguration> {
        let mut rc = RunConfiguration::new(
            name,
            RunConfigurationSpec {
                run: RunSpec {
                    pipeline: PipelineIdentifier::new("p", ""),
                    parameters: value_from
                        .iter()
                        .map(|d| {
                            Parameter::from_run_configuration(
                                *d,
                                RunConfigurationRef::new(d.parse().unwrap(), "model"),
                            )
                        })
                        .collect(),
                    ..RunSpec::default()
                },
                triggers: Triggers {
                    run_configurations: triggers.iter().map(|t| t.parse().unwrap()).collect(),
                    ..Triggers::default()
                },
            },
        );
        rc.metadata.namespace = Some(namespace.into());
        Arc::new(rc)
    }

    fn name(text: &str) -> NamespacedName {
        text.parse().unwrap()
    }

    fn names(rcs: Vec<Arc<RunConfiguration>>) -> Vec<NamespacedName> {
        rcs.iter().map(|rc| qualified_name(rc)).collect()
    }

    #[test]
    fn references_and_trigger_edges_follow_changes() {
        let index = RunConfigurationIndex::default();
        index.upsert(rc("ml", "b", &["a"], &["x/c"]));
        index.upsert(rc("ml", "d", &["ml/a"], &[]));
        assert_eq!(index.referrers(&name("ml/a")), vec![name("ml/b"), name("ml/d")]);
        assert_eq!(index.referrers(&name("x/c")), vec![name("ml/b")]);
        assert_eq!(names(index.triggered_by(&name("ml/a"))), vec![name("ml/b"), name("ml/d")]);
        assert!(index.triggered_by(&name("x/c")).is_empty(), "valueFrom is not a trigger edge");

        index.upsert(rc("ml", "b", &[], &["x/c"]));
        assert_eq!(index.referrers(&name("ml/a")), vec![name("ml/d")]);
        assert_eq!(names(index.triggered_by(&name("ml/a"))), vec![name("ml/d")]);

        index.remove(&name("ml/d"));
        assert!(index.referrers(&name("ml/a")).is_empty());
        assert!(index.triggered_by(&name("ml/a")).is_empty());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn cycles_are_seen_through_the_shared_graph() {
        let index = RunConfigurationIndex::default();
        index.upsert(rc("ml", "a", &["b"], &[]));
        index.upsert(rc("ml", "b", &["a"], &[]));
        assert!(index.with_graph(|graph| graph.in_cycle(&name("ml/a")).is_some()));
        index.upsert(rc("ml", "b", &[], &[]));
        assert!(index.with_graph(|graph| graph.in_cycle(&name("ml/a")).is_none()));
    }

    #[test]
    fn a_relist_forgets_what_is_gone_in_its_scope_only() {
        let index = Arc::new(RunConfigurationIndex::default());
        index.upsert(rc("ml", "kept", &[], &[]));
        index.upsert(rc("ml", "gone", &["kept"], &[]));
        index.upsert(rc("other", "elsewhere", &[], &[]));
        let mut feeder = index.feeder(Some("ml".into()));
        feeder.observe(&watcher::Event::Init);
        feeder.observe(&watcher::Event::InitApply(rc("ml", "kept", &[], &[]).as_ref().clone()));
        feeder.observe(&watcher::Event::InitDone);
        assert!(index.get(&name("ml/gone")).is_none());
        assert!(index.get(&name("other/elsewhere")).is_some());
        assert!(index.referrers(&name("ml/kept")).is_empty());
        feeder.observe(&watcher::Event::Delete(rc("ml", "kept", &[], &[]).as_ref().clone()));
        assert!(index.is_empty() || index.get(&name("ml/kept")).is_none());
    }

    #[tokio::test]
    async fn the_index_is_complete_once_every_scope_listed() {
        let index = Arc::new(RunConfigurationIndex::new(2));
        let mut feeders = [index.feeder(Some("a".into())), index.feeder(Some("b".into()))];
        for feeder in &mut feeders {
            assert!(!index.wait_until_complete(Duration::ZERO).await);
            feeder.observe(&watcher::Event::Init);
            feeder.observe(&watcher::Event::InitDone);
        }
        feeders[0].observe(&watcher::Event::Init);
        feeders[0].observe(&watcher::Event::InitDone);
        assert!(index.wait_until_complete(Duration::ZERO).await);
    }
}
