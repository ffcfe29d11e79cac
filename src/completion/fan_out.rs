//! The fan-out of a new success: the Runs of every RunConfiguration it triggers are created
//! straight away, from the shared index and with bounded concurrency, before the success is
//! recorded.
//!
//! Each dependant is evaluated exactly as its reconciler evaluates it
//! ([`crate::triggers::evaluation::evaluate`]) with the new success in view, so the Run names,
//! labels and parameters are the ones the reconciler would produce. The reconcilers, woken by
//! the recorded success, then write `status.triggers`; the Runs they would create exist already
//! (their create finds them). Joins fire here like any dependency trigger (the join's Run is
//! named by the successes that satisfy it). Anything the fast path cannot see (a dependant with
//! a `concurrencyPolicy` other than `Allow`, which needs its running Runs; a dependant whose other
//! dependencies live in namespaces the operator does not watch) is left to the reconciler.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::ResourceExt;

use super::error::CompletionError;
use crate::api::{NamespacedName, Run, RunConfiguration, RunReference};
use crate::controller::Context;
use crate::controller::run_configuration::create_triggered_run;
use crate::triggers::dependencies::referenced_run_configurations;
use crate::triggers::evaluation::{Evaluation, Observed, evaluate, triggered_run};
use crate::triggers::{TriggerKind, qualified_name};

/// How long a completion waits for the index to be complete after the operator started.
const INDEX_WAIT: Duration = Duration::from_secs(30);

/// The Runs `dependency`'s new success `latest` starts, and the RunConfigurations they belong to.
pub fn planned_runs(
    ctx: &Context,
    dependency: &RunConfiguration,
    latest: &RunReference,
) -> Vec<(Arc<RunConfiguration>, Run)> {
    let dependency_name = qualified_name(dependency);
    let mut succeeded = dependency.clone();
    succeeded.status.get_or_insert_with(Default::default).latest_runs.succeeded = Some(latest.clone());
    let succeeded = Arc::new(succeeded);
    let mut planned = Vec::new();
    for dependant in ctx.index.triggered_by(&dependency_name) {
        // What a Run still running does to a trigger needs the dependant's Runs: its
        // reconciler, woken by the recorded success, decides.
        if !dependant.spec.triggers.concurrency_policy.is_allow() {
            continue;
        }
        let Some(observed) = observed_from_index(ctx, &dependant, &dependency_name, &succeeded) else {
            continue;
        };
        if dependant.spec.triggers.join.is_some() && !join_settled(ctx, &dependant, dependency) {
            continue;
        }
        let Evaluation { fire, values, .. } = ctx
            .index
            .with_graph(|graph| evaluate(&dependant, &observed, ctx.config.cross_namespace_policy, graph));
        let name = qualified_name(&dependant);
        for trigger in
            fire.iter().filter(|t| matches!(t.kind, TriggerKind::RunConfiguration | TriggerKind::Join))
        {
            let run = triggered_run(
                &dependant,
                trigger.run_name(&name),
                trigger.labels(&dependant.name_any()),
                &values,
            );
            planned.push((dependant.clone(), run));
        }
    }
    planned
}

/// Whether `dependant`'s join state, as the index holds it, already accounts for every success
/// of its dependencies recorded so far (before the new one): evaluated without the new success,
/// it would fire nothing and see nothing new. A join's Run is named by the successes that
/// satisfy it, so a stale view (the dependant's last status write not yet in the index, a
/// success it has not evaluated) could name a different Run than the reconciler will; such a
/// dependant is left to its reconciler, which reads its status fresh.
fn join_settled(ctx: &Context, dependant: &RunConfiguration, dependency: &RunConfiguration) -> bool {
    let dependency_name = qualified_name(dependency);
    let as_recorded = Arc::new(dependency.clone());
    let Some(observed) = observed_from_index(ctx, dependant, &dependency_name, &as_recorded) else {
        return false;
    };
    let baseline = ctx
        .index
        .with_graph(|graph| evaluate(dependant, &observed, ctx.config.cross_namespace_policy, graph));
    let stored = dependant.status.as_ref().map(|s| &s.triggers.join.dependencies);
    baseline.fire.iter().all(|t| t.kind != TriggerKind::Join)
        && stored.is_some_and(|stored| *stored == baseline.status.triggers.join.dependencies)
}

/// What `dependant`'s reconciler would observe once `dependency` records `succeeded`, if the
/// index holds all of its dependencies.
fn observed_from_index(
    ctx: &Context,
    dependant: &RunConfiguration,
    dependency: &NamespacedName,
    succeeded: &Arc<RunConfiguration>,
) -> Option<Observed> {
    let namespace = dependant.namespace().unwrap_or_default();
    let mut dependencies = std::collections::BTreeMap::new();
    let trigger_dependencies = dependant.spec.triggers.dependencies();
    for reference in referenced_run_configurations(&dependant.spec.run.parameters, &trigger_dependencies) {
        let qualified = reference.qualified(&namespace);
        let found = if qualified == *dependency { succeeded.clone() } else { ctx.index.get(&qualified)? };
        dependencies.insert(qualified, Some(found));
    }
    let pipeline_version =
        dependant.status.as_ref().map(|s| s.dependencies.pipeline.version.clone()).unwrap_or_default();
    Some(Observed {
        now: jiff::Timestamp::now(),
        active_runs: Vec::new(),
        pipeline_version,
        pipeline_problem: None,
        dependencies,
    })
}

/// Creates the Runs `dependency`'s new success `latest` starts, `fanOutConcurrency` at a time,
/// and returns how many were created now (existing ones count as done). Every Run is attempted;
/// the first failure is returned after the others finished. Each Run created counts its
/// trigger latency from `received`, when the completion arrived.
pub async fn fan_out(
    ctx: &Arc<Context>,
    dependency: &RunConfiguration,
    latest: &RunReference,
    received: std::time::Instant,
) -> Result<usize, CompletionError> {
    if !ctx.index.wait_until_complete(INDEX_WAIT).await {
        return Err(CompletionError::IndexLoading);
    }
    let planning = std::time::Instant::now();
    let planned = planned_runs(ctx, dependency, latest);
    let planned_in = planning.elapsed();
    if planned.is_empty() {
        return Ok(0);
    }
    let results: Vec<(Arc<RunConfiguration>, Run, Result<bool, kube::Error>)> = futures::stream::iter(
        planned,
    )
    .map(|(dependant, run)| async move {
        let result = create_triggered_run(ctx, &run).await;
        if let Ok(true) = result {
            ctx.metrics.trigger_latency(received.elapsed());
            tracing::info!(run = %run.name_any(), run_namespace = %run.namespace().unwrap_or_default(),
                        runconfiguration = %qualified_name(&dependant), "dependant Run created");
        }
        (dependant, run, result)
    })
    .buffer_unordered(ctx.config.fan_out_concurrency.max(1))
    .collect()
    .await;
    let mut created = Vec::new();
    let mut first_error = None;
    for (dependant, run, result) in results {
        match result {
            Ok(fresh) => {
                if fresh {
                    created.push((dependant, run.name_any()));
                }
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    let count = created.len();
    ctx.metrics.triggered(TriggerKind::RunConfiguration.as_str(), "completion", count as u64);
    if count > 0 {
        ctx.metrics.fanned_out(count);
    }
    tracing::info!(
        dependency = %qualified_name(dependency),
        run = %latest.provider_id,
        created = count,
        planned_ms = planned_in.as_secs_f64() * 1000.0,
        total_ms = planning.elapsed().as_secs_f64() * 1000.0,
        "triggered dependants"
    );
    let events = ctx.clone();
    let dependency = dependency.clone();
    let run_id = latest.provider_id.clone();
    tokio::spawn(async move {
        if !created.is_empty() {
            let mut names: Vec<String> = created.iter().take(10).map(|(_, run)| run.clone()).collect();
            if created.len() > names.len() {
                names.push(format!("and {} more", created.len() - names.len()));
            }
            let note = format!("run {run_id} started {} dependant Runs: {}", created.len(), names.join(", "));
            events.event(&dependency, false, "TriggeredDependants", note).await;
        }
        for (dependant, run) in created {
            let note = format!("created Run {run} ({})", TriggerKind::RunConfiguration.as_str());
            events.event(dependant.as_ref(), false, "RunCreated", note).await;
        }
    });
    match first_error {
        Some(error) => Err(error.into()),
        None => Ok(count),
    }
}
