//! The condition vocabulary every kind shares: the `Synchronized` condition whose reason is the
//! synchronisation state, the kstatus `Ready` summary, the RunConfiguration's own conditions, and
//! how conditions are stamped and replaced. Pure.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::Status;

/// The condition type that carries the synchronisation state in its reason.
pub const SYNCHRONIZED: &str = "Synchronized";
/// The kstatus summary condition.
pub const READY: &str = "Ready";

/// Where a resource is in its synchronisation with the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncState {
    Unknown,
    Creating,
    Updating,
    Succeeded,
    Failed,
    Deleting,
    Deleted,
}

impl SyncState {
    /// Parses a `Synchronized` reason case-insensitively; anything else is `Unknown`.
    pub fn from_reason(reason: &str) -> Self {
        [Self::Creating, Self::Updating, Self::Succeeded, Self::Failed, Self::Deleting, Self::Deleted]
            .into_iter()
            .find(|state| state.as_str().eq_ignore_ascii_case(reason))
            .unwrap_or(Self::Unknown)
    }

    /// The state recorded in a status.
    pub fn of(status: &Status) -> Self {
        Self::of_conditions(&status.conditions).unwrap_or(Self::Unknown)
    }

    /// The state recorded in a `Synchronized` condition, if there is one.
    pub fn of_conditions(conditions: &[Condition]) -> Option<Self> {
        conditions.iter().find(|c| c.type_ == SYNCHRONIZED).map(|c| Self::from_reason(&c.reason))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "Unknown",
            Self::Creating => "Creating",
            Self::Updating => "Updating",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Deleting => "Deleting",
            Self::Deleted => "Deleted",
        }
    }

    /// The `Synchronized` condition status: True when settled, False on failure.
    pub fn condition_status(self) -> &'static str {
        match self {
            Self::Succeeded | Self::Deleted => "True",
            Self::Failed => "False",
            _ => "Unknown",
        }
    }

    /// The Event reason for entering this state: `Synced`, `SyncFailed` or `Syncing`.
    pub fn event_reason(self) -> &'static str {
        match self {
            Self::Succeeded | Self::Deleted => "Synced",
            Self::Failed => "SyncFailed",
            _ => "Syncing",
        }
    }
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Says whether all dependencies of a Run or RunConfiguration are known.
pub const DEPENDENCIES_RESOLVED: &str = "DependenciesResolved";
/// Says whether a RunConfiguration is part of a dependency cycle.
pub const DEPENDENCY_CYCLE: &str = "DependencyCycle";
/// `Triggers` (RunConfiguration): what the triggers are waiting for, what is pending, what last fired.
pub const TRIGGERS: &str = "Triggers";

/// The message of a condition that has nothing more specific to say. Never empty: an empty
/// string in a server-side apply body reaches older API servers as `null`.
pub fn default_message(reason: &str) -> String {
    match reason {
        "Succeeded" => "in step with the provider".into(),
        "Creating" => "creating on the provider".into(),
        "Updating" => "updating on the provider".into(),
        "Deleting" => "deleting on the provider".into(),
        "Deleted" => "deleted on the provider".into(),
        other => other.to_owned(),
    }
}

/// The message of the `Synchronized` condition, empty when there is none.
pub fn synchronized_message(status: &Status) -> String {
    status.conditions.iter().find(|c| c.type_ == SYNCHRONIZED).map(|c| c.message.clone()).unwrap_or_default()
}

/// A condition stamped now, for conditions outside the synchronisation state machine.
pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time: Time(jiff::Timestamp::now()),
    }
}

/// Replaces the condition of the same type, keeping its transition time unless its status changed,
/// and keeping the whole old condition when nothing but the time would differ.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}
