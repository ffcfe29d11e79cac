//! The trigger engine's pure core: the dependency graph of RunConfigurations (reverse index and
//! cycles), the cross-namespace policy, the per-reconcile trigger decision (with joins,
//! conditions on results and the concurrency policy), the `Triggers` condition, deterministic
//! Run names and the graph renderings. No I/O: the controller fetches, calls into this, and writes.
//!
//! How the parts fit, per RunConfiguration reconcile:
//! 1. refresh `status.dependencies` ([`crate::triggers::dependencies::dependency_map`]);
//! 2. suppress trigger entries that are cycle edges ([`cycle_suppressed`]) or refused by
//!    [`check_reference`]; hold firing while the parameters do not resolve;
//! 3. [`decide`]; create one Run per [`Trigger`] in [`Decision::fire`], named
//!    [`Trigger::run_name`] and labelled [`Trigger::labels`] (`AlreadyExists` is success);
//! 4. write [`Decision::new_status`] as `status.triggers`.

pub mod concurrency;
pub mod decision;
pub mod dependencies;
pub mod evaluation;
pub mod explain;
pub mod graph;
pub mod index;
pub mod join;
pub mod naming;
pub mod policy;
pub mod render;
pub mod trigger;

pub use decision::{
    ActiveRun, Decision, DecisionInput, Trigger, TriggerKind, cycle_suppressed, decide, sanitise_label_value,
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
