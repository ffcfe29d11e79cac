//! The `Triggers` condition of a RunConfiguration: one sentence per part of the trigger state
//! a user asks about (what the join waits for and what satisfied it, why a success did not
//! count, what is pending or being stopped), from the decision's new status. Pure. Only
//! RunConfigurations that use a join, conditions or a `concurrencyPolicy` other than `Allow`
//! carry it; the others have nothing to explain beyond `status.triggers`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::trigger::{ActiveRun, Decision};
use crate::api::{ConcurrencyPolicy, Triggers};

/// `(status, reason, message)` of the `Triggers` condition, or `None` when the triggers use
/// nothing it explains. Reasons, most pressing first: `InvalidTriggers` (status `False`),
/// `Replacing`, `StopPending`, `Pending`, `ConditionNotMet`, `WaitingForDependencies`, `Armed`.
pub fn triggers_condition(
    triggers: &Triggers,
    decision: &Decision,
    active: &[ActiveRun],
    invalid: Option<&str>,
) -> Option<(&'static str, &'static str, String)> {
    if triggers.join.is_none() && triggers.conditions.is_empty() && triggers.concurrency_policy.is_allow() {
        return None;
    }
    if let Some(problem) = invalid {
        return Some(("False", "InvalidTriggers", problem.to_owned()));
    }
    let status = &decision.new_status;
    let mut parts: Vec<String> = Vec::new();
    let mut reasons: Vec<&'static str> = Vec::new();

    if !decision.stop.is_empty() {
        reasons.push("Replacing");
        parts.push(format!(
            "stopping Run {} on the provider to start a new one (concurrencyPolicy Replace)",
            decision.stop.join(", ")
        ));
    }
    for run in active.iter().filter(|run| run.stopping) {
        reasons.push("StopPending");
        parts.push(if run.problem.is_empty() {
            format!("Run {} is being stopped on the provider", run.name)
        } else {
            format!("Run {} could not be stopped on the provider yet: {}", run.name, run.problem)
        });
    }
    if let Some(pending) = &status.pending {
        reasons.push("Pending");
        let since = pending.since.as_ref().map(|t| format!(" since {}", at(t))).unwrap_or_default();
        parts.push(format!(
            "one Run is pending until Run {} finishes ({} trigger{} coalesced{since}; concurrencyPolicy Forbid)",
            pending.waiting_for,
            pending.coalesced,
            if pending.coalesced == 1 { "" } else { "s" }
        ));
    }
    for (dependency, verdict) in &status.conditions {
        if !verdict.passed {
            reasons.push("ConditionNotMet");
        }
        let outcome = if verdict.passed { "counts" } else { "does not count" };
        parts.push(format!("{dependency} {outcome}: {}", verdict.message));
    }
    if let Some(join) = &triggers.join
        && let Ok(expression) = crate::api::join::parse_shared(&join.expression)
    {
        let satisfied = |name: &crate::api::NamespacedName| {
            status.join.dependencies.get(&name.to_string()).filter(|d| !d.satisfied_by.is_empty())
        };
        let waiting: Vec<String> = expression
            .waiting_for(|name| satisfied(name).is_some())
            .iter()
            .map(ToString::to_string)
            .collect();
        let done: Vec<String> = expression
            .dependencies()
            .filter_map(|name| {
                let entry = satisfied(name)?;
                let when = entry.satisfied_at.as_ref().map(|t| format!(" at {}", at(t))).unwrap_or_default();
                Some(format!("{name} satisfied by run {}{when}", entry.satisfied_by))
            })
            .collect();
        let mut sentence = format!("join waiting for {}", waiting.join(", "));
        if !done.is_empty() {
            sentence.push_str(&format!(" ({})", done.join(", ")));
        }
        if let Some(reset) = status.join.since.as_ref().and(decision.requeue_at) {
            sentence.push_str(&format!("; resets at {}", at(&Time(reset))));
        }
        if !status.join.last_run.is_empty() {
            let when = status.join.last_fired.as_ref().map(|t| format!(" at {}", at(t))).unwrap_or_default();
            sentence.push_str(&format!("; last fired Run {}{when}", status.join.last_run));
        }
        if let Some(reset) = &status.join.last_reset {
            sentence.push_str(&format!("; a partial join was last reset at {}", at(reset)));
        }
        reasons.push("WaitingForDependencies");
        parts.push(sentence);
    }
    if parts.is_empty() {
        let policy = triggers.concurrency_policy;
        parts.push(match policy {
            ConcurrencyPolicy::Allow => "triggers armed".to_owned(),
            _ => format!("triggers armed; nothing running (concurrencyPolicy {})", policy.as_str()),
        });
    }
    let order = ["Replacing", "StopPending", "Pending", "ConditionNotMet", "WaitingForDependencies"];
    let reason = order.into_iter().find(|r| reasons.contains(r)).unwrap_or("Armed");
    Some(("True", reason, parts.join("; ")))
}

/// A time to the second, RFC 3339.
fn at(time: &Time) -> String {
    jiff::Timestamp::from_second(time.0.as_second()).unwrap_or(time.0).to_string()
}
