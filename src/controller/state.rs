//! The synchronisation state machine shared by Pipeline, Experiment, Run and RunSchedule:
//! from what a resource's status says and what its spec wants, decide the one provider call
//! (or none) to make, and how its outcome changes the status. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::error::{ErrorClass, Failure};
use crate::api::conditions::{
    READY, SYNCHRONIZED, SyncState, default_message, set_condition, synchronized_message,
};
use crate::api::{NamespacedName, ProviderAndId, Status};

/// What the spec wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The version computed from the spec now.
    pub version: String,
    /// The Provider named by the spec.
    pub provider: NamespacedName,
}

/// The one thing to do in this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// In step: nothing to call.
    Nothing,
    /// Create on the provider (status goes Creating, then Succeeded or Failed).
    Create,
    /// Update the provider resource (status goes Updating, then Succeeded or Failed).
    Update { id: String },
    /// Delete the provider resource (status goes Deleting, then Deleted; a failure stays Deleting).
    Delete { id: String },
    /// Deleting, and nothing exists on the provider: record Deleted.
    MarkDeleted,
    /// Refuse (status Failed with the failure's message), without calling the provider.
    Refuse(Failure),
}

/// Decides what to do from the current status, the desired version and provider, and whether
/// the resource is being deleted. Interrupted calls (a status left Creating or Updating) are
/// issued again; a failure at the current version is retried (the caller spaces retries out).
pub fn plan(status: &Status, desired: &Desired, deleting: bool) -> Plan {
    let state = SyncState::of(status);
    let provider = status.provider.as_ref();
    let id = provider.map_or("", |p| p.id.as_str()).to_owned();
    let recorded_provider = provider.map(|p| &p.name).filter(|name| !name.is_empty());

    if deleting {
        return match state {
            SyncState::Deleted => Plan::Nothing,
            _ if id.is_empty() => Plan::MarkDeleted,
            _ => Plan::Delete { id },
        };
    }
    if let Some(recorded) = recorded_provider.filter(|recorded| **recorded != desired.provider) {
        return Plan::Refuse(Failure::new(
            ErrorClass::Stalled,
            "ProviderChanged",
            format!(
                "the provider has changed from {recorded} to {}; a resource cannot move between providers, \
                 delete it and create it again",
                desired.provider
            ),
        ));
    }
    match state {
        SyncState::Succeeded if status.version == desired.version && !id.is_empty() => Plan::Nothing,
        SyncState::Deleting | SyncState::Deleted => Plan::Nothing,
        _ if id.is_empty() => Plan::Create,
        _ => Plan::Update { id },
    }
}

/// The state a plan enters before its provider call.
pub fn state_during(plan: &Plan) -> Option<SyncState> {
    match plan {
        Plan::Create => Some(SyncState::Creating),
        Plan::Update { .. } => Some(SyncState::Updating),
        Plan::Delete { .. } => Some(SyncState::Deleting),
        Plan::Nothing | Plan::MarkDeleted | Plan::Refuse(_) => None,
    }
}

/// How a provider call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The call succeeded; for create and update, with the resource's id.
    Done { id: String },
    /// The call failed.
    Failed(Failure),
}

/// Builds statuses. `now` stamps conditions that change.
pub struct StatusBuilder<'a> {
    pub previous: &'a Status,
    pub generation: Option<i64>,
    pub now: Time,
}

impl StatusBuilder<'_> {
    /// The status for `state` with `message`, keeping or replacing version and provider.
    pub fn build(
        &self,
        state: SyncState,
        message: &str,
        version: &str,
        provider: Option<ProviderAndId>,
    ) -> Status {
        let mut conditions = self.previous.conditions.clone();
        let ready = match state {
            SyncState::Succeeded => ("True", "Succeeded"),
            SyncState::Failed => ("False", "Failed"),
            SyncState::Deleted => ("False", "Deleted"),
            other => ("False", other.as_str()),
        };
        set_condition(
            &mut conditions,
            self.condition(SYNCHRONIZED, state.condition_status(), state.as_str(), message),
        );
        set_condition(&mut conditions, self.condition(READY, ready.0, ready.1, message));
        Status {
            provider: provider.filter(|p| !p.name.is_empty() || !p.id.is_empty()),
            version: version.to_owned(),
            observed_generation: self.generation,
            conditions,
        }
    }

    /// The status after `plan` starts its call.
    pub fn during(&self, plan: &Plan, desired: &Desired) -> Option<Status> {
        let state = state_during(plan)?;
        let version = if state == SyncState::Deleting { &self.previous.version } else { &desired.version };
        Some(self.build(state, "", version, self.previous.provider.clone()))
    }

    /// The status after `plan` ended with `outcome` (or, for plans without a call, right away).
    pub fn after(&self, plan: &Plan, desired: &Desired, outcome: Option<&Outcome>) -> Status {
        let previous_provider = self.previous.provider.clone();
        let with_id = |id: &str| Some(ProviderAndId { name: desired.provider.clone(), id: id.to_owned() });
        match (plan, outcome) {
            (Plan::Nothing, _) => self.build(
                SyncState::of(self.previous),
                &synchronized_message(self.previous),
                &self.previous.version,
                previous_provider,
            ),
            (Plan::Refuse(failure), _) => {
                self.build(SyncState::Failed, &failure.message, &desired.version, previous_provider)
            }
            (Plan::MarkDeleted, _) => {
                self.build(SyncState::Deleted, "", &self.previous.version, previous_provider)
            }
            (Plan::Create | Plan::Update { .. }, Some(Outcome::Done { id })) => {
                self.build(SyncState::Succeeded, "", &desired.version, with_id(id))
            }
            (Plan::Create | Plan::Update { .. }, _) => {
                self.build(SyncState::Failed, message_of(outcome), &desired.version, previous_provider)
            }
            (Plan::Delete { .. }, Some(Outcome::Done { .. })) => {
                let provider = previous_provider.map(|p| ProviderAndId { name: p.name, id: String::new() });
                self.build(SyncState::Deleted, "", &self.previous.version, provider)
            }
            (Plan::Delete { .. }, _) => self.build(
                SyncState::Deleting,
                message_of(outcome),
                &self.previous.version,
                previous_provider,
            ),
        }
    }

    fn condition(&self, type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: if message.is_empty() { default_message(reason) } else { message.to_owned() },
            observed_generation: self.generation,
            last_transition_time: self.now.clone(),
        }
    }
}

fn message_of(outcome: Option<&Outcome>) -> &str {
    match outcome {
        Some(Outcome::Failed(failure)) => &failure.message,
        _ => "the provider call did not finish",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn provider() -> NamespacedName {
        NamespacedName::new("kfp", "stub")
    }

    fn status(state: Option<SyncState>, version: &str, id: &str) -> Status {
        let previous = Status::default();
        let builder = StatusBuilder { previous: &previous, generation: Some(1), now: time(0) };
        let provider = (!id.is_empty()).then(|| ProviderAndId { name: provider(), id: id.into() });
        match state {
            Some(state) => builder.build(state, "", version, provider),
            None => Status { version: version.into(), provider, ..Status::default() },
        }
    }

    fn desired(version: &str) -> Desired {
        Desired { version: version.into(), provider: provider() }
    }

    /// The reference's transition table (§5.4), adapted to direct provider calls: the
    /// "workflow" of each case is the provider call the plan makes.
    #[test]
    fn transition_table() {
        use SyncState::*;
        let id = || "id-1".to_owned();
        let cases: Vec<(&str, Status, Desired, bool, Plan)> = vec![
            ("empty state, no id: create", status(None, "", ""), desired("v2"), false, Plan::Create),
            (
                "empty state, with id: update",
                status(None, "v1", "id-1"),
                desired("v2"),
                false,
                Plan::Update { id: id() },
            ),
            (
                "succeeded, same version: nothing",
                status(Some(Succeeded), "v2", "id-1"),
                desired("v2"),
                false,
                Plan::Nothing,
            ),
            (
                "succeeded, new version, with id: update",
                status(Some(Succeeded), "v1", "id-1"),
                desired("v2"),
                false,
                Plan::Update { id: id() },
            ),
            (
                "succeeded, new version, no id: create",
                status(Some(Succeeded), "v1", ""),
                desired("v2"),
                false,
                Plan::Create,
            ),
            (
                "failed, new version, with id: update",
                status(Some(Failed), "v1", "id-1"),
                desired("v2"),
                false,
                Plan::Update { id: id() },
            ),
            (
                "failed, new version, no id: create",
                status(Some(Failed), "v1", ""),
                desired("v2"),
                false,
                Plan::Create,
            ),
            (
                "failed, same version: retried",
                status(Some(Failed), "v2", ""),
                desired("v2"),
                false,
                Plan::Create,
            ),
            (
                "creating (interrupted): create again",
                status(Some(Creating), "v2", ""),
                desired("v2"),
                false,
                Plan::Create,
            ),
            (
                "updating (interrupted): update again",
                status(Some(Updating), "v2", "id-1"),
                desired("v2"),
                false,
                Plan::Update { id: id() },
            ),
            (
                "succeeded + deleting, with id: delete",
                status(Some(Succeeded), "v2", "id-1"),
                desired("v2"),
                true,
                Plan::Delete { id: id() },
            ),
            (
                "failed + deleting, with id: delete",
                status(Some(Failed), "v2", "id-1"),
                desired("v2"),
                true,
                Plan::Delete { id: id() },
            ),
            (
                "succeeded + deleting, no id: deleted",
                status(Some(Succeeded), "v2", ""),
                desired("v2"),
                true,
                Plan::MarkDeleted,
            ),
            (
                "deleting (failed before): delete again",
                status(Some(Deleting), "v2", "id-1"),
                desired("v2"),
                true,
                Plan::Delete { id: id() },
            ),
            (
                "deleted: nothing (finalizer released)",
                status(Some(Deleted), "v2", ""),
                desired("v2"),
                true,
                Plan::Nothing,
            ),
        ];
        for (name, status, desired, deleting, expected) in cases {
            assert_eq!(plan(&status, &desired, deleting), expected, "{name}");
        }
    }

    #[test]
    fn a_changed_provider_is_refused_but_deletion_still_works() {
        let current = status(Some(SyncState::Succeeded), "v1", "id-1");
        let moved = Desired { version: "v1".into(), provider: NamespacedName::new("kfp", "other") };
        assert!(
            matches!(plan(&current, &moved, false), Plan::Refuse(Failure { class: ErrorClass::Stalled, message, .. }) if message.contains("kfp/stub") && message.contains("kfp/other"))
        );
        assert_eq!(plan(&current, &moved, true), Plan::Delete { id: "id-1".into() });
    }

    #[test]
    fn outcomes_set_the_reference_states() {
        let previous = status(Some(SyncState::Succeeded), "v1", "id-1");
        let builder = StatusBuilder { previous: &previous, generation: Some(2), now: time(10) };
        let want = desired("v2");
        let update = Plan::Update { id: "id-1".into() };

        let during = builder.during(&update, &want).unwrap();
        assert_eq!(SyncState::of(&during), SyncState::Updating);
        assert_eq!(during.version, "v2");

        let done = builder.after(&update, &want, Some(&Outcome::Done { id: "id-2".into() }));
        assert_eq!(SyncState::of(&done), SyncState::Succeeded);
        assert_eq!(done.provider.as_ref().map(|p| p.id.as_str()), Some("id-2"));
        assert_eq!(done.observed_generation, Some(2));

        let failed = builder.after(
            &update,
            &want,
            Some(&Outcome::Failed(Failure::new(
                ErrorClass::Transient,
                "ProviderFailed",
                "update pipeline failed",
            ))),
        );
        assert_eq!(SyncState::of(&failed), SyncState::Failed);
        assert_eq!(failed.provider.as_ref().map(|p| p.id.as_str()), Some("id-1"), "the old provider is kept");
        let condition = failed.conditions.iter().find(|c| c.type_ == SYNCHRONIZED).unwrap();
        assert_eq!(
            (condition.status.as_str(), condition.message.as_str()),
            ("False", "update pipeline failed")
        );

        let delete = Plan::Delete { id: "id-1".into() };
        let deleted = builder.after(&delete, &want, Some(&Outcome::Done { id: String::new() }));
        assert_eq!(SyncState::of(&deleted), SyncState::Deleted);
        assert_eq!(
            deleted.provider.as_ref().map(|p| p.id.as_str()),
            Some(""),
            "the provider is kept, the id cleared"
        );
        let still_deleting = builder.after(
            &delete,
            &want,
            Some(&Outcome::Failed(Failure::new(
                ErrorClass::Transient,
                "ProviderFailed",
                "delete run failed",
            ))),
        );
        assert_eq!(SyncState::of(&still_deleting), SyncState::Deleting);
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let previous = status(Some(SyncState::Succeeded), "v1", "id-1");
        let builder = StatusBuilder { previous: &previous, generation: Some(1), now: time(99) };
        let again = builder.after(&Plan::Nothing, &desired("v1"), None);
        assert_eq!(again, previous, "a reconcile of an unchanged object changes nothing");
    }

    #[test]
    fn reasons_parse_case_insensitively() {
        assert_eq!(SyncState::from_reason("succeeded"), SyncState::Succeeded);
        assert_eq!(SyncState::from_reason("DELETING"), SyncState::Deleting);
        assert_eq!(SyncState::from_reason(""), SyncState::Unknown);
        assert_eq!(SyncState::Failed.event_reason(), "SyncFailed");
        assert_eq!(SyncState::Deleted.event_reason(), "Synced");
        assert_eq!(SyncState::Creating.event_reason(), "Syncing");
    }
}
