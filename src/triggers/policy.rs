//! The cross-namespace policy for RunConfiguration dependencies (`triggers.runConfigurations`
//! and `valueFrom.runConfigurationRef`).
//!
//! The reference lets any RunConfiguration depend on, and read the artifact locations of, any
//! other in the cluster. That stays the default (`allow`) for compatibility; `deny` forbids every
//! cross-namespace reference, and `grant` lets the depended-on RunConfiguration's owners opt in
//! per namespace with the [`ALLOW_DEPENDANTS_FROM`] annotation. A reference within one namespace
//! is always allowed.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::api::NamespacedName;

/// Annotation on a RunConfiguration that lists the namespaces (comma-separated, `*` for any)
/// whose RunConfigurations may depend on it under the `grant` policy.
pub const ALLOW_DEPENDANTS_FROM: &str = "pipelines.kubeflow.org/allow-dependants-from";

/// Whether a RunConfiguration may depend on one in another namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrossNamespacePolicy {
    /// Any cross-namespace reference is allowed (the reference's behaviour).
    #[default]
    Allow,
    /// No cross-namespace reference is allowed.
    Deny,
    /// Allowed when the depended-on RunConfiguration grants the dependant's namespace through
    /// [`ALLOW_DEPENDANTS_FROM`].
    Grant,
}

impl CrossNamespacePolicy {
    /// The configuration spelling: `allow`, `deny` or `grant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Grant => "grant",
        }
    }
}

impl fmt::Display for CrossNamespacePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CrossNamespacePolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Self::Allow),
            "deny" => Ok(Self::Deny),
            "grant" => Ok(Self::Grant),
            other => Err(format!("unknown cross-namespace policy {other:?}: expected allow, deny or grant")),
        }
    }
}

/// Checks that `dependant` may depend on `dependency` (both qualified; a `dependency` without a
/// namespace is in the dependant's). `dependency_annotations` are the depended-on
/// RunConfiguration's annotations, `None` when it does not exist. The error says what to do.
pub fn check_reference(
    policy: CrossNamespacePolicy,
    dependant: &NamespacedName,
    dependency: &NamespacedName,
    dependency_annotations: Option<&BTreeMap<String, String>>,
) -> Result<(), String> {
    let dependency_namespace = dependency.namespace_or(&dependant.namespace);
    if dependency_namespace == dependant.namespace {
        return Ok(());
    }
    let dependency = dependency.qualified(&dependant.namespace);
    let refused = format!("RunConfiguration {dependant} may not depend on {dependency}");
    match policy {
        CrossNamespacePolicy::Allow => Ok(()),
        CrossNamespacePolicy::Deny => {
            Err(format!("{refused}: cross-namespace dependencies are denied by the operator's policy"))
        }
        CrossNamespacePolicy::Grant => {
            let Some(annotations) = dependency_annotations else {
                return Err(format!(
                    "{refused}: {dependency} does not exist; once it does, annotate it with \
                     {ALLOW_DEPENDANTS_FROM}={}",
                    dependant.namespace
                ));
            };
            let granted: Vec<&str> = annotations
                .get(ALLOW_DEPENDANTS_FROM)
                .map(|value| value.split(',').map(str::trim).filter(|s| !s.is_empty()).collect())
                .unwrap_or_default();
            if granted.iter().any(|namespace| *namespace == "*" || *namespace == dependant.namespace) {
                return Ok(());
            }
            let value =
                granted.iter().copied().chain([dependant.namespace.as_str()]).collect::<Vec<_>>().join(",");
            Err(format!("{refused}: annotate {dependency} with {ALLOW_DEPENDANTS_FROM}={value}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nn(s: &str) -> NamespacedName {
        s.parse().unwrap()
    }

    fn annotations(value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(ALLOW_DEPENDANTS_FROM.to_owned(), value.to_owned())])
    }

    #[test]
    fn the_policy_reads_and_writes_lowercase() {
        assert_eq!(CrossNamespacePolicy::default(), CrossNamespacePolicy::Allow);
        for policy in [CrossNamespacePolicy::Allow, CrossNamespacePolicy::Deny, CrossNamespacePolicy::Grant] {
            let json = serde_json::to_string(&policy).unwrap();
            assert_eq!(json, format!("\"{policy}\""));
            assert_eq!(serde_json::from_str::<CrossNamespacePolicy>(&json).unwrap(), policy);
            assert_eq!(policy.as_str().parse::<CrossNamespacePolicy>(), Ok(policy));
        }
        assert!(serde_json::from_str::<CrossNamespacePolicy>("\"Allow\"").is_err());
        assert!("open".parse::<CrossNamespacePolicy>().unwrap_err().contains("allow, deny or grant"));
    }

    /// (policy, dependant, dependency, its annotations, expected)
    type PolicyCase<'a> = (
        CrossNamespacePolicy,
        &'a NamespacedName,
        NamespacedName,
        Option<BTreeMap<String, String>>,
        Result<(), &'a str>,
    );

    #[test]
    fn policy_cases() {
        let (x, y) = (nn("b/x"), nn("a/y"));
        let deny = "RunConfiguration b/x may not depend on a/y: cross-namespace dependencies are denied by the operator's policy";
        let annotate_b = "RunConfiguration b/x may not depend on a/y: annotate a/y with pipelines.kubeflow.org/allow-dependants-from=b";
        let cases: Vec<PolicyCase<'_>> = vec![
            // Same namespace: always allowed, written with or without the namespace, even if missing.
            (CrossNamespacePolicy::Deny, &x, nn("b/z"), None, Ok(())),
            (CrossNamespacePolicy::Deny, &x, nn("z"), None, Ok(())),
            (CrossNamespacePolicy::Grant, &x, nn("z"), Some(BTreeMap::new()), Ok(())),
            // Allow: anything.
            (CrossNamespacePolicy::Allow, &x, y.clone(), None, Ok(())),
            // Deny: every cross-namespace reference.
            (CrossNamespacePolicy::Deny, &x, y.clone(), Some(annotations("*")), Err(deny)),
            // Grant: the annotation lists the namespace, or `*`.
            (CrossNamespacePolicy::Grant, &x, y.clone(), Some(annotations("b")), Ok(())),
            (CrossNamespacePolicy::Grant, &x, y.clone(), Some(annotations("c, b ,d")), Ok(())),
            (CrossNamespacePolicy::Grant, &x, y.clone(), Some(annotations("*")), Ok(())),
            (CrossNamespacePolicy::Grant, &x, y.clone(), Some(BTreeMap::new()), Err(annotate_b)),
            (CrossNamespacePolicy::Grant, &x, y.clone(), Some(annotations("")), Err(annotate_b)),
            (
                CrossNamespacePolicy::Grant,
                &x,
                y.clone(),
                Some(annotations("bb,a")),
                Err(
                    "RunConfiguration b/x may not depend on a/y: annotate a/y with pipelines.kubeflow.org/allow-dependants-from=bb,a,b",
                ),
            ),
            (
                CrossNamespacePolicy::Grant,
                &x,
                y.clone(),
                None,
                Err(
                    "RunConfiguration b/x may not depend on a/y: a/y does not exist; once it does, annotate it with pipelines.kubeflow.org/allow-dependants-from=b",
                ),
            ),
        ];
        for (policy, dependant, dependency, annotations, expected) in cases {
            assert_eq!(
                check_reference(policy, dependant, &dependency, annotations.as_ref()),
                expected.map_err(str::to_owned),
                "{policy} {dependant} -> {dependency} {annotations:?}"
            );
        }
    }
}
