//! The join trigger and conditions on results, as pure decisions.
//!
//! # Join rules
//!
//! Per dependency of `triggers.join.expression` (keyed as written), `status.triggers.join`
//! keeps the success last looked at (`seen`) and, while it counts, the success that satisfies
//! it (`satisfiedBy`, `satisfiedAt`). Each evaluation:
//! 1. **Reset**: when a partial join began (`since`) longer ago than `reset` allows (a duration
//!    from `since`, or the first cron time after it), every dependency is unsatisfied again.
//! 2. **New successes**: a dependency whose latest success differs from `seen` (and is not
//!    empty) is seen now; it satisfies the dependency if no condition is on it or the condition
//!    passes, and a later success replaces an earlier one (the Run takes the latest). A
//!    dependency without a stored entry (the join was just written or changed) records its
//!    latest success as seen *without* satisfying: writing a join never starts a Run by itself.
//!    A dependency along a cycle edge or refused by the cross-namespace policy is seen but never
//!    satisfies.
//! 3. **Fire**: when the expression holds, one `join` Run fires and every dependency is
//!    unsatisfied again. The Run is keyed by the RunConfiguration's uid and the number of the
//!    firing (`fired + 1`), not by the successes that satisfied it: every evaluation from the
//!    same stored status (a retry, a redelivery, the fast path and the reconciler, even when one
//!    of them already sees a later success) names the same Run, so one firing is at most one
//!    Run; the uid keeps a re-created RunConfiguration's Runs apart from its predecessor's. While firing is held (parameters unresolved) the
//!    satisfied state is kept, so it fires once the hold lifts.
//!
//! Nothing is in memory: a restart resumes from the status and the dependencies' recorded
//! successes, which only move forward, so redelivered or reordered completions change nothing.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::trigger::{DecisionInput, Trigger, TriggerKind};
use crate::api::join::{JoinExpression, reset_deadline};
use crate::api::{ConditionVerdict, JoinDependency, JoinStatus, RunReference, TriggerCondition};

/// Judges `success` of a dependency by `condition`. Pure and total: a filter that does not
/// parse, a missing artifact and an evaluation error all fail, with a message saying why.
pub fn judge(condition: &TriggerCondition, success: &RunReference) -> ConditionVerdict {
    let verdict = |passed: bool, message: String| ConditionVerdict {
        provider_id: success.provider_id.clone(),
        passed,
        message,
    };
    let run = &success.provider_id;
    let filter = match crate::api::filter::parse(&condition.filter) {
        Ok(filter) => filter,
        Err(error) => return verdict(false, error.to_string()),
    };
    let Some(artifact) = success.artifacts.iter().find(|a| a.name == condition.artifact) else {
        return verdict(false, format!("run {run} has no artifact {:?}", condition.artifact));
    };
    let shown = shown_metadata(&artifact.metadata);
    match filter.evaluate_map(&artifact.metadata) {
        Ok(true) => {
            verdict(true, format!("run {run}: {} {shown} passes {}", condition.artifact, condition.filter))
        }
        Ok(false) => verdict(
            false,
            format!("run {run}: {} {shown} does not pass {}", condition.artifact, condition.filter),
        ),
        Err(error) => verdict(false, format!("run {run}: {} {shown}: {error}", condition.artifact)),
    }
}

/// The metadata as compact JSON, cut to keep messages short.
fn shown_metadata(metadata: &serde_json::Map<String, serde_json::Value>) -> String {
    const LIMIT: usize = 160;
    let text = serde_json::Value::Object(metadata.clone()).to_string();
    if text.chars().count() <= LIMIT {
        return text;
    }
    let cut: String = text.chars().take(LIMIT).collect();
    format!("{cut}…")
}

/// Whether a new success of the dependency `key` counts, recording the verdict of its condition
/// (if it has one) in `verdicts`.
pub(super) fn counts(
    input: &DecisionInput<'_>,
    key: &str,
    success: &RunReference,
    verdicts: &mut BTreeMap<String, ConditionVerdict>,
) -> bool {
    let Some(condition) =
        input.spec.triggers.conditions.iter().find(|c| c.run_configuration.to_string() == key)
    else {
        return true;
    };
    let verdict = verdicts
        .entry(key.to_owned())
        .and_modify(|stored| {
            if stored.provider_id != success.provider_id {
                *stored = judge(condition, success);
            }
        })
        .or_insert_with(|| judge(condition, success));
    verdict.passed
}

/// The outcome of one join evaluation.
pub(super) struct JoinOutcome {
    pub status: JoinStatus,
    pub trigger: Option<Trigger>,
    pub held: bool,
    /// When the partial join left in `status` is reset, if it will be.
    pub reset_at: Option<Timestamp>,
}

/// Evaluates the join; see the module docs.
pub(super) fn decide_join(
    input: &DecisionInput<'_>,
    expression: &JoinExpression,
    reset: &str,
    verdicts: &mut BTreeMap<String, ConditionVerdict>,
) -> JoinOutcome {
    let stored = &input.triggers.join;
    let now = input.now;
    let mut status = JoinStatus { dependencies: BTreeMap::new(), ..stored.clone() };

    let expired = stored
        .since
        .as_ref()
        .and_then(|since| reset_deadline(reset, since.0).ok().flatten())
        .is_some_and(|deadline| deadline <= now);
    if expired {
        status.since = None;
        status.last_reset = Some(Time(now));
    }

    for name in expression.dependencies() {
        let key = name.to_string();
        let mut entry = stored.dependencies.get(&key).cloned();
        if expired && let Some(entry) = entry.as_mut() {
            entry.satisfied_by.clear();
            entry.satisfied_at = None;
        }
        let Some(observed) = input.dependencies.get(&key) else {
            if let Some(entry) = entry {
                status.dependencies.insert(key, entry);
            }
            continue;
        };
        let current = &observed.provider_id;
        let entry = match entry {
            None => JoinDependency { seen: current.clone(), ..JoinDependency::default() },
            Some(entry) if current.is_empty() || *current == entry.seen => entry,
            Some(mut entry) => {
                entry.seen = current.clone();
                if !input.suppressed.contains(&key) && counts(input, &key, observed, verdicts) {
                    entry.satisfied_by = current.clone();
                    entry.satisfied_at = Some(Time(now));
                }
                entry
            }
        };
        status.dependencies.insert(key, entry);
    }

    let satisfied = |name: &crate::api::NamespacedName| {
        status.dependencies.get(&name.to_string()).is_some_and(|d| !d.satisfied_by.is_empty())
    };
    let any_satisfied = expression.dependencies().any(satisfied);
    let holds = expression.evaluate(satisfied);
    if !any_satisfied {
        status.since = None;
    } else if status.since.is_none() {
        status.since = Some(Time(now));
    }
    if !holds {
        let reset_at = status.since.as_ref().and_then(|since| reset_deadline(reset, since.0).ok().flatten());
        return JoinOutcome { status, trigger: None, held: false, reset_at };
    }

    let trigger = Trigger {
        kind: TriggerKind::Join,
        source: String::new(),
        source_namespace: String::new(),
        key: format!("join-{}-{}", input.owner_uid.get(..8).unwrap_or(input.owner_uid), stored.fired + 1),
    };
    if input.hold {
        return JoinOutcome { status, trigger: Some(trigger), held: true, reset_at: None };
    }
    for dependency in status.dependencies.values_mut() {
        dependency.satisfied_by.clear();
        dependency.satisfied_at = None;
    }
    status.since = None;
    status.last_run = trigger.run_name(input.rc);
    status.last_fired = Some(Time(now));
    status.fired = stored.fired + 1;
    JoinOutcome { status, trigger: Some(trigger), held: false, reset_at: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Artifact;
    use serde_json::json;

    fn success(run: &str, metadata: serde_json::Value) -> RunReference {
        let serde_json::Value::Object(metadata) = metadata else { panic!("an object") };
        RunReference {
            provider_id: run.into(),
            artifacts: vec![Artifact::new("metrics", "gs://m").with_metadata(metadata)],
            run_end_time: None,
        }
    }

    fn condition(filter: &str) -> TriggerCondition {
        TriggerCondition {
            run_configuration: "evaluate".parse().unwrap(),
            artifact: "metrics".into(),
            filter: filter.into(),
        }
    }

    #[test]
    fn conditions_pass_fail_and_say_why() {
        let passed = judge(&condition("accuracy > 0.9"), &success("r-95", json!({"accuracy": 0.95})));
        assert!(passed.passed);
        assert_eq!(passed.message, r#"run r-95: metrics {"accuracy":0.95} passes accuracy > 0.9"#);
        let failed = judge(&condition("accuracy > 0.9"), &success("r-85", json!({"accuracy": 0.85})));
        assert_eq!(
            (failed.passed, failed.message.as_str()),
            (false, r#"run r-85: metrics {"accuracy":0.85} does not pass accuracy > 0.9"#)
        );
        let missing = judge(&condition("accuracy > 0.9"), &success("r-1", json!({"loss": 1})));
        assert!(!missing.passed && missing.message.contains("accuracy"), "{}", missing.message);
        let mut other = condition("accuracy > 0.9");
        other.artifact = "model".into();
        let absent = judge(&other, &success("r-1", json!({})));
        assert_eq!(absent.message, "run r-1 has no artifact \"model\"");
        let invalid = judge(&condition("accuracy >"), &success("r-1", json!({})));
        assert!(!invalid.passed && invalid.message.contains("does not parse"));
    }
}
