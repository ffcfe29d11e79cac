//! The trigger engine's pure core: the dependency graph of RunConfigurations (reverse index and
//! cycles), the cross-namespace policy, the per-reconcile trigger decision, deterministic Run
//! names and the graph renderings. No I/O, except [`graph_of_cluster`], which lists the
//! RunConfigurations for `kfp-operator graph`; the controller fetches, calls into this, and writes.
//!
//! How the parts fit, per RunConfiguration reconcile:
//! 1. refresh `status.dependencies` ([`crate::triggers::dependencies::dependency_map`]);
//! 2. suppress trigger entries that are cycle edges ([`cycle_suppressed`]) or refused by
//!    [`check_reference`]; hold firing while the parameters do not resolve;
//! 3. [`decide`]; create one Run per [`Trigger`] in [`Decision::fire`], named
//!    [`Trigger::run_name`] and labelled [`Trigger::labels`] (`AlreadyExists` is success);
//! 4. write [`Decision::new_status`] as `status.triggers`.

pub mod decision;
pub mod dependencies;
pub mod evaluation;
pub mod graph;
pub mod index;
pub mod naming;
pub mod policy;
pub mod render;

pub use decision::{
    Decision, DecisionInput, Trigger, TriggerKind, cycle_suppressed, decide, sanitise_label_value,
};
pub use graph::{DependencyGraph, qualified_name, trigger_dependencies};
pub use naming::run_name;
pub use policy::{ALLOW_DEPENDANTS_FROM, CrossNamespacePolicy, check_reference};

use crate::api::NamespacedName;

/// Why the trigger engine refuses a dependency. The category is stable: it names conditions,
/// Events and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The cross-namespace policy refuses the reference; the message says what to do.
    #[error("{0}")]
    CrossNamespace(String),
    /// The RunConfigurations trigger each other in a cycle (sorted members).
    #[error(
        "RunConfigurations {} trigger each other in a cycle; no run starts along it: remove one of \
         their triggers.runConfigurations entries",
        join(.0)
    )]
    Cycle(Vec<NamespacedName>),
}

fn join(names: &[NamespacedName]) -> String {
    names.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

impl Error {
    /// `CrossNamespaceDependencyDenied` or `DependencyCycle` (the condition type).
    pub fn category(&self) -> &'static str {
        match self {
            Self::CrossNamespace(_) => "CrossNamespaceDependencyDenied",
            Self::Cycle(_) => "DependencyCycle",
        }
    }
}

/// Renders the dependency graph as `mermaid`, `dot` or `text`, each node with its latest
/// successful run or its failure: every RunConfiguration, or (with `namespace`) those of one
/// namespace with their neighbours in other namespaces. Without permission to list every
/// namespace, a namespace's graph shows the dependencies it names, but not its dependants
/// elsewhere.
pub async fn graph_of_cluster(
    client: &kube::Client,
    namespace: Option<&str>,
    format: &str,
) -> Result<String, kube::Error> {
    use kube::api::{Api, ListParams};

    use crate::api::RunConfiguration;
    use crate::api::conditions::SyncState;

    let all: Api<RunConfiguration> = Api::all(client.clone());
    let rcs = match (all.list(&ListParams::default()).await, namespace) {
        (Ok(list), _) => list.items,
        (Err(kube::Error::Api(status)), Some(namespace)) if status.code == 403 => {
            let mut rcs = Api::<RunConfiguration>::namespaced(client.clone(), namespace)
                .list(&ListParams::default())
                .await?
                .items;
            let elsewhere: std::collections::BTreeSet<NamespacedName> = rcs
                .iter()
                .flat_map(trigger_dependencies)
                .filter(|dependency| dependency.namespace != namespace)
                .collect();
            for dependency in elsewhere {
                let api: Api<RunConfiguration> = Api::namespaced(client.clone(), &dependency.namespace);
                if let Ok(Some(rc)) = api.get_opt(&dependency.name).await {
                    rcs.push(rc);
                }
            }
            rcs
        }
        (Err(error), _) => return Err(error),
    };
    let graph = DependencyGraph::from_run_configurations(rcs.iter());
    let states = rcs
        .iter()
        .map(|rc| {
            let status = rc.status.clone().unwrap_or_default();
            let state = match (&status.latest_runs.succeeded, SyncState::of_conditions(&status.conditions)) {
                (_, Some(SyncState::Failed)) => "Failed".to_owned(),
                (Some(latest), _) => format!("Succeeded {}", latest.provider_id),
                (None, _) => "-".to_owned(),
            };
            (qualified_name(rc), state)
        })
        .collect();
    let view = match namespace {
        Some(namespace) => render::View::namespace(&graph, &states, namespace),
        None => render::View::all(&graph, &states),
    };
    Ok(match format {
        "dot" => render::dot(&view),
        "text" => render::text(&view),
        _ => render::mermaid(&view),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_stable_categories_and_clear_messages() {
        let cycle = Error::Cycle(vec!["a/x".parse().unwrap(), "a/y".parse().unwrap()]);
        assert_eq!(cycle.category(), "DependencyCycle");
        assert_eq!(
            cycle.to_string(),
            "RunConfigurations a/x, a/y trigger each other in a cycle; no run starts along it: remove one \
             of their triggers.runConfigurations entries"
        );
        let denied = Error::CrossNamespace("RunConfiguration b/x may not depend on a/y: …".into());
        assert_eq!(denied.category(), "CrossNamespaceDependencyDenied");
        assert_eq!(denied.to_string(), "RunConfiguration b/x may not depend on a/y: …");
    }
}
