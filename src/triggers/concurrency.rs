//! `concurrencyPolicy`: what the triggers that fire do while a Run of the same
//! RunConfiguration is still running. Pure; applied last in [`super::decide`].
//!
//! A fired trigger whose Run is itself among the running ones is a repeat (the Run exists; its
//! create finds it) and is left alone. Of the others (*fresh*):
//! - `Allow`: all fire, as they always have.
//! - `Forbid`: while a Run is running, the fresh triggers are coalesced into one pending Run in
//!   `status.triggers.pending` (the latest trigger names it; `coalesced` counts them all), which
//!   fires once nothing runs. With nothing running, the fresh triggers fire as one Run (the
//!   latest), which takes the place of a pending one.
//! - `Replace`: the running Runs are stopped (deleted, which stops them on the provider) and
//!   one Run (the latest fresh trigger) fires.
//!
//! Runs being stopped do not count as running. Held triggers are untouched.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::trigger::{Decision, DecisionInput, Trigger, TriggerKind};
use crate::api::{ConcurrencyPolicy, PendingRun};

/// Applies the RunConfiguration's policy to `decision`; see the module docs.
pub(super) fn apply(input: &DecisionInput<'_>, decision: &mut Decision) {
    let policy = input.spec.triggers.concurrency_policy;
    if policy == ConcurrencyPolicy::Allow {
        decision.new_status.pending = None;
        return;
    }
    let running: Vec<&str> =
        input.active.iter().filter(|run| !run.stopping).map(|run| run.name.as_str()).collect();
    let (repeats, fresh): (Vec<Trigger>, Vec<Trigger>) = std::mem::take(&mut decision.fire)
        .into_iter()
        .partition(|trigger| running.contains(&trigger.run_name(input.rc).as_str()));
    decision.fire = repeats;
    let pending = decision.new_status.pending.take();
    let pending_runs =
        pending.as_ref().is_some_and(|p| running.contains(&input.rc_run_name(&p.key).as_str()));
    let pending = pending.filter(|_| !pending_runs);
    let latest = fresh.last().cloned();
    match (policy, latest, running.first()) {
        (ConcurrencyPolicy::Forbid, Some(latest), Some(running)) => {
            let coalesced = pending.as_ref().map_or(0, |p| p.coalesced) + fresh.len() as u32;
            let since = pending.as_ref().and_then(|p| p.since.clone()).or(Some(Time(input.now)));
            decision.new_status.pending = Some(pending_run(&latest, coalesced, running, since));
        }
        (ConcurrencyPolicy::Forbid, None, Some(running)) => {
            decision.new_status.pending =
                pending.map(|p| PendingRun { waiting_for: (*running).to_owned(), ..p });
        }
        (ConcurrencyPolicy::Forbid, None, None) => {
            if let Some(pending) = pending {
                decision.fire.push(trigger_of(&pending));
            }
        }
        (ConcurrencyPolicy::Replace, Some(latest), Some(_)) => {
            decision.stop = running.iter().map(|name| (*name).to_owned()).collect();
            decision.fire.push(latest);
        }
        (_, Some(latest), _) => decision.fire.push(latest),
        (_, None, _) => {}
    }
}

fn pending_run(trigger: &Trigger, coalesced: u32, waiting_for: &str, since: Option<Time>) -> PendingRun {
    PendingRun {
        trigger_type: trigger.kind.as_str().to_owned(),
        source: trigger.source.clone(),
        source_namespace: trigger.source_namespace.clone(),
        key: trigger.key.clone(),
        coalesced,
        waiting_for: waiting_for.to_owned(),
        since,
    }
}

fn trigger_of(pending: &PendingRun) -> Trigger {
    Trigger {
        kind: TriggerKind::parse(&pending.trigger_type).unwrap_or(TriggerKind::RunConfiguration),
        source: pending.source.clone(),
        source_namespace: pending.source_namespace.clone(),
        key: pending.key.clone(),
    }
}

impl DecisionInput<'_> {
    fn rc_run_name(&self, key: &str) -> String {
        super::naming::run_name(&self.rc.to_string(), key)
    }
}
