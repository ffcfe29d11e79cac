//! Regression tests for defects a user met, each named after the defect, counted from outside
//! the operator as the user saw them: a watch on the API server, the metrics, `/readyz` and
//! `kubectl get`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kfp_operator::api::conditions::{READY, SYNCHRONIZED, SyncState};
use kfp_operator::api::{
    Experiment, NamespacedName, OnChangeType, Pipeline, Run, RunConfiguration, RunSchedule, RunScheduleSpec,
    RunSpec, Schedule, Status, Triggers,
};
use kube::Resource;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

mod support;
use support::StatusWrites;
use support::fixtures::{pipeline, run_configuration, stub_provider};
use support::operator::{Operator, OperatorProcess};

fn synchronized(status: Option<&Status>) -> (SyncState, String) {
    let status = status.cloned().unwrap_or_default();
    let message = status.conditions.iter().find(|c| c.type_ == SYNCHRONIZED).map(|c| c.message.clone());
    (SyncState::of(&status), message.unwrap_or_default())
}

async fn create<K>(client: &kube::Client, ns: &str, object: &K)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns).create(&PostParams::default(), object).await.unwrap();
}

/// Reads `name`'s `Synchronized` state and message.
async fn read_state(client: &kube::Client, ns: &str, kind: &str, name: &str) -> (SyncState, String) {
    match kind {
        "pipeline" => synchronized(
            Api::<Pipeline>::namespaced(client.clone(), ns).get(name).await.unwrap().status.as_ref(),
        ),
        "experiment" => synchronized(
            Api::<Experiment>::namespaced(client.clone(), ns).get(name).await.unwrap().status.as_ref(),
        ),
        "runschedule" => synchronized(
            Api::<RunSchedule>::namespaced(client.clone(), ns).get(name).await.unwrap().status.as_ref(),
        ),
        _ => {
            let run = Api::<Run>::namespaced(client.clone(), ns).get(name).await.unwrap();
            synchronized(run.status.as_ref().map(|s| &s.status))
        }
    }
}

/// Defect 1: a failing provider call spun (about 49 reconciles and 96 writes a second per
/// object, the condition flipping between Creating and Failed, counted as successes). Now,
/// with the default backoff (1 s doubling), every failure name over 60 s: at most 8 provider
/// calls and 8 status writes, every read shows the same failure, and the failures are counted.
#[tokio::test]
async fn defect_1_a_failing_provider_call_is_retried_on_the_backoff_without_spinning() {
    let client = support::client().await;
    let ns = support::namespace(&client, "failing-call-backoff").await;
    let operator = Operator::start(&client, &ns, |config| {
        config.retry_initial_delay = Duration::from_secs(1);
        config.retry_max_delay = Duration::from_secs(300);
    });
    let provider = NamespacedName::new(&ns, "stub");
    create(&client, &ns, &stub_provider("stub")).await;
    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), &ns);
    for name in ["update-pipeline-fail", "delete-pipeline-fail"] {
        create(&client, &ns, &pipeline(name, &provider)).await;
    }
    for name in ["update-pipeline-fail", "delete-pipeline-fail"] {
        support::eventually(&format!("{name} to synchronise"), Duration::from_secs(30), || async {
            let found = pipelines.get(name).await.ok()?;
            (synchronized(found.status.as_ref()).0 == SyncState::Succeeded).then_some(())
        })
        .await;
    }

    let writes = StatusWrites::default();
    let watches = [
        writes.watch(pipelines.clone()),
        writes.watch(Api::<Experiment>::namespaced(client.clone(), &ns)),
        writes.watch(Api::<RunSchedule>::namespaced(client.clone(), &ns)),
        writes.watch(Api::<Run>::namespaced(client.clone(), &ns)),
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let params = PatchParams::default();
    pipelines
        .patch("update-pipeline-fail", &params, &Patch::Merge(json!({"spec": {"image": "quickstart:v2"}})))
        .await
        .unwrap();
    pipelines.delete("delete-pipeline-fail", &DeleteParams::default()).await.unwrap();
    create(&client, &ns, &pipeline("create-pipeline-fail", &provider)).await;
    create(&client, &ns, &support::fixtures::experiment("create-experiment-fail", &provider)).await;
    create(
        &client,
        &ns,
        &RunSchedule::new(
            "create-runschedule-fail",
            RunScheduleSpec {
                provider: provider.clone(),
                pipeline: "penguin:v1".parse().unwrap(),
                schedule: Schedule::cron("0 * * * *"),
                ..RunScheduleSpec::default()
            },
        ),
    )
    .await;
    create(
        &client,
        &ns,
        &Run::new(
            "create-run-fail",
            RunSpec {
                provider: provider.clone(),
                pipeline: "penguin:v1".parse().unwrap(),
                ..RunSpec::default()
            },
        ),
    )
    .await;

    let expected = [
        ("pipeline", "create", "create-pipeline-fail", SyncState::Failed),
        ("experiment", "create", "create-experiment-fail", SyncState::Failed),
        ("runschedule", "create", "create-runschedule-fail", SyncState::Failed),
        ("run", "create", "create-run-fail", SyncState::Failed),
        ("pipeline", "update", "update-pipeline-fail", SyncState::Failed),
        ("pipeline", "delete", "delete-pipeline-fail", SyncState::Deleting),
    ];
    let mut first_failure: BTreeMap<&str, (SyncState, String)> = BTreeMap::new();
    let mut reads = 0;
    while started.elapsed() < Duration::from_secs(60) {
        for (kind, operation, name, state) in expected {
            let read = read_state(&client, &ns, kind, name).await;
            match first_failure.get(name) {
                Some(first) => {
                    assert_eq!(&read, first, "{name}: the condition changed while waiting to retry");
                    reads += 1;
                }
                None if read.0 == state => {
                    assert_eq!(read.1, format!("{operation} {kind} failed"), "{name}");
                    first_failure.insert(name, read);
                }
                None => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(first_failure.len(), expected.len(), "every object failed: {first_failure:?}");
    assert!(reads > 200, "the condition was read often ({reads} reads)");

    let metrics = &operator.context().metrics;
    let mut failed_calls: BTreeMap<&str, u64> = BTreeMap::new();
    for (kind, operation, name, _) in expected {
        let calls = metrics.provider_calls(&format!("{ns}/stub"), kind, operation, "ProviderFailed");
        assert!((2..=8).contains(&calls), "{name}: {calls} provider calls in 60 s");
        let status_writes = writes.of(name);
        assert!((2..=8).contains(&status_writes), "{name}: {status_writes} status writes in 60 s");
        *failed_calls.entry(kind).or_default() += calls;
    }
    for (kind, calls) in failed_calls {
        assert_eq!(
            metrics.reconcile_failures(kind, "ProviderFailed"),
            calls,
            "{kind}: every failed call is a failure"
        );
        assert_eq!(metrics.reconcile_failures(kind, "KubernetesApiError"), 0, "{kind}: no refused write");
    }

    // A new generation, and the force-delete annotation, act at once, not at the next retry.
    let before = metrics.provider_calls(&format!("{ns}/stub"), "pipeline", "create", "ProviderFailed");
    pipelines
        .patch("create-pipeline-fail", &params, &Patch::Merge(json!({"spec": {"image": "quickstart:v3"}})))
        .await
        .unwrap();
    support::eventually("a new attempt at the new generation", Duration::from_secs(5), || async {
        (metrics.provider_calls(&format!("{ns}/stub"), "pipeline", "create", "ProviderFailed") > before)
            .then_some(())
    })
    .await;
    let force = json!({"metadata": {"annotations": {"pipelines.kubeflow.org/force-delete": "true"}}});
    pipelines.patch("delete-pipeline-fail", &params, &Patch::Merge(force)).await.unwrap();
    support::eventually("the forced deletion", Duration::from_secs(5), || async {
        pipelines.get_opt("delete-pipeline-fail").await.unwrap().is_none().then_some(())
    })
    .await;
    for watch in watches {
        watch.abort();
    }
    operator.stop().await;
}

fn condition<'a>(rc: &'a RunConfiguration, type_: &str) -> Option<&'a Condition> {
    rc.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

/// Waits (at most 5 s) until `rc` has caught up with its generation and `check` holds.
async fn caught_up(
    rcs: &Api<RunConfiguration>,
    name: &str,
    what: &str,
    check: impl Fn(&RunConfiguration) -> bool,
) -> RunConfiguration {
    support::eventually(what, Duration::from_secs(5), || async {
        let rc = rcs.get(name).await.ok()?;
        let current = rc.status.as_ref()?.observed_generation == rc.metadata.generation;
        (current && check(&rc)).then_some(rc)
    })
    .await
}

/// Defect 2: the API server refused (422) RunConfiguration status writes that set an emptied
/// field to null (after a trigger was removed, or the Pipeline deleted), and the status froze.
#[tokio::test]
async fn defect_2_runconfiguration_status_catches_up_when_a_trigger_or_its_pipeline_goes() {
    let client = support::client().await;
    let ns = support::namespace(&client, "emptied-status").await;
    let operator = Operator::start(&client, &ns, |_| {});
    let provider = NamespacedName::new(&ns, "stub");
    create(&client, &ns, &stub_provider("stub")).await;
    create(&client, &ns, &pipeline("penguin", &provider)).await;
    create(&client, &ns, &run_configuration("upstream", &provider, Triggers::default())).await;
    let triggered = Triggers { run_configurations: vec!["upstream".parse().unwrap()], ..Triggers::default() };
    create(&client, &ns, &run_configuration("downstream", &provider, triggered)).await;
    let rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &ns);
    let resolved = |rc: &RunConfiguration| {
        condition(rc, "DependenciesResolved").is_some_and(|c| c.status == "True")
            && condition(rc, READY).is_some_and(|c| c.status == "True")
    };
    support::eventually("downstream to be resolved and ready", Duration::from_secs(30), || async {
        let rc = rcs.get("downstream").await.ok()?;
        let tracked = rc.status.as_ref()?.triggers.run_configurations.contains_key("upstream");
        (tracked && resolved(&rc)).then_some(())
    })
    .await;

    let remove = json!({"spec": {"triggers": {"runConfigurations": null}}});
    rcs.patch("downstream", &PatchParams::default(), &Patch::Merge(remove)).await.unwrap();
    caught_up(&rcs, "downstream", "the status to forget the removed trigger", |rc| {
        let status = rc.status.clone().unwrap_or_default();
        status.triggers.run_configurations.is_empty() && status.trigger_summary.is_empty() && resolved(rc)
    })
    .await;

    Api::<Pipeline>::namespaced(client.clone(), &ns)
        .delete("penguin", &DeleteParams::default())
        .await
        .unwrap();
    let gone = caught_up(&rcs, "downstream", "the status to say the pipeline is gone", |rc| {
        let status = rc.status.clone().unwrap_or_default();
        status.dependencies.pipeline.version.is_empty()
            && condition(rc, "DependenciesResolved").is_some_and(|c| c.status == "False")
    })
    .await;
    let message = &condition(&gone, "DependenciesResolved").unwrap().message;
    assert!(message.contains(&format!("pipeline {ns}/penguin")), "{message}");
    assert_eq!(condition(&gone, READY).unwrap().status, "False");

    create(&client, &ns, &pipeline("penguin", &provider)).await;
    caught_up(&rcs, "downstream", "the status to see the pipeline again", |rc| {
        !rc.status.clone().unwrap_or_default().dependencies.pipeline.version.is_empty() && resolved(rc)
    })
    .await;
    assert_eq!(
        operator.context().metrics.reconcile_failures("runconfiguration", "KubernetesApiError"),
        0,
        "no status write was refused"
    );

    // A status the schema refuses is an error of its own, with a Warning Event.
    let downstream = rcs.get("downstream").await.unwrap();
    let refused =
        operator.context().patch_status(&downstream, &json!({"observedGeneration": "two"}), &[]).await;
    let error = refused.expect_err("the API server refuses a string generation");
    assert_eq!(error.category(), "StatusWriteRefused");
    support::eventually("a StatusWriteRefused Warning Event", Duration::from_secs(10), || async {
        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("StatusWriteRefused") && e.type_.as_deref() == Some("Warning")
            })
            .then_some(())
    })
    .await;
    operator.stop().await;
}

/// Defect 3: a RunConfiguration whose Pipeline does not exist said `DependenciesResolved=True
/// "all dependencies are resolved"` and `Ready=True`.
#[tokio::test]
async fn defect_3_conditions_say_a_missing_pipeline_is_missing() {
    let client = support::client().await;
    let ns = support::namespace(&client, "missing-pipeline").await;
    let operator = Operator::start(&client, &ns, |_| {});
    let provider = NamespacedName::new(&ns, "stub");
    create(&client, &ns, &stub_provider("stub")).await;
    let mut orphan = run_configuration("orphan", &provider, Triggers::default());
    orphan.spec.run.pipeline = "nowhere".parse().unwrap();
    create(&client, &ns, &orphan).await;
    let rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &ns);
    let rc = support::eventually("the orphan's conditions", Duration::from_secs(30), || async {
        let rc = rcs.get("orphan").await.ok()?;
        condition(&rc, "DependenciesResolved").is_some().then_some(rc)
    })
    .await;
    let resolved = condition(&rc, "DependenciesResolved").unwrap();
    assert_eq!(
        (resolved.status.as_str(), resolved.reason.as_str(), resolved.message.as_str()),
        ("False", "PipelineNotFound", format!("pipeline {ns}/nowhere does not exist").as_str())
    );
    let ready = condition(&rc, READY).unwrap();
    assert_eq!((ready.status.as_str(), ready.message.as_str()), ("False", resolved.message.as_str()));
    operator.stop().await;
}

/// Defect 4: after an API server restart the watches took minutes to recover (a RunConfiguration
/// created after it fired after 111–164 s) while `/readyz` said ready throughout. Now, within
/// 10 s of the API server being ready again, a new RunConfiguration fires and a completion fires
/// its dependant; `/readyz` is not 200 during the outage.
#[tokio::test]
async fn defect_4_watches_recover_within_seconds_of_an_api_server_restart() {
    let plane = support::PrivateControlPlane::start().await;
    let client = plane.client().await;
    let ns = support::namespace(&client, "apiserver-restart").await;
    let provider = NamespacedName::new(&ns, "stub");
    create(&client, &ns, &stub_provider("stub")).await;
    create(&client, &ns, &pipeline("penguin", &provider)).await;
    let follows =
        Triggers { run_configurations: vec!["created-after".parse().unwrap()], ..Triggers::default() };
    create(&client, &ns, &run_configuration("dependant", &provider, follows)).await;

    let config = plane.dir.path().join("operator.yaml");
    std::fs::write(
        &config,
        format!("namespaces: [{ns}]\nevents:\n  listenAddr: 127.0.0.1:{}\n", support::free_port()),
    )
    .unwrap();
    let log = plane.dir.path().join("operator.log");
    let operator = OperatorProcess::start_with(&config, &plane.kubeconfig(), support::free_port(), &log);
    let log_tail = || std::fs::read_to_string(&log).unwrap_or_default();
    support::eventually("the operator to be ready", Duration::from_secs(60), || async {
        operator.ready().await.then_some(())
    })
    .await;

    plane.kill_apiserver();
    let outage = Instant::now();
    let mut unready_seen = false;
    while outage.elapsed() < Duration::from_secs(5) {
        unready_seen |= !operator.ready().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(unready_seen, "/readyz answered 200 throughout the outage\n{}", log_tail());
    plane.up();
    let back = Instant::now();

    let client = plane.client().await;
    let on_creation = Triggers { on_change: vec![OnChangeType::RunSpec], ..Triggers::default() };
    create(&client, &ns, &run_configuration("created-after", &provider, on_creation)).await;
    let runs: Api<Run> = Api::namespaced(client.clone(), &ns);
    let runs_of = |owner: &'static str| {
        let runs = runs.clone();
        async move {
            let selector = format!("pipelines.kubeflow.org/runconfiguration.name={owner}");
            runs.list(&ListParams::default().labels(&selector)).await.map(|l| l.items.len()).unwrap_or(0)
        }
    };
    let mut fired = None;
    let mut dependant_fired = None;
    while back.elapsed() < Duration::from_secs(10) && dependant_fired.is_none() {
        if fired.is_none() && runs_of("created-after").await == 1 {
            fired = Some(back.elapsed());
        }
        if runs_of("dependant").await == 1 {
            dependant_fired = Some(back.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fired.is_some(), "the new RunConfiguration did not fire within 10 s\n{}", log_tail());
    assert!(
        dependant_fired.is_some(),
        "the completion did not fire the dependant within 10 s\n{}",
        log_tail()
    );
    support::eventually("/readyz to answer 200 again", Duration::from_secs(10), || async {
        operator.ready().await.then_some(())
    })
    .await;
    eprintln!(
        "after the API server was back: created RunConfiguration fired in {:?}, dependant in {:?}",
        fired.unwrap(),
        dependant_fired.unwrap()
    );
}

/// Defect 5: the `kubectl get mlrc` TRIGGERS column showed only the `onChange` list, empty for
/// a RunConfiguration that triggers only on other RunConfigurations.
#[tokio::test]
async fn defect_5_the_triggers_column_shows_every_trigger() {
    let client = support::client().await;
    let ns = support::namespace(&client, "triggers-column").await;
    let operator = Operator::start(&client, &ns, |_| {});
    let provider = NamespacedName::new(&ns, "stub");
    create(&client, &ns, &stub_provider("stub")).await;
    create(&client, &ns, &pipeline("penguin", &provider)).await;
    create(&client, &ns, &run_configuration("upstream", &provider, Triggers::default())).await;
    let only_dependencies =
        Triggers { run_configurations: vec!["upstream".parse().unwrap()], ..Triggers::default() };
    create(&client, &ns, &run_configuration("follows", &provider, only_dependencies)).await;
    let everything = Triggers {
        schedules: vec![Schedule::cron("0 * * * *")],
        on_change: vec![OnChangeType::Pipeline],
        run_configurations: vec!["upstream".parse().unwrap()],
        ..Triggers::default()
    };
    create(&client, &ns, &run_configuration("everything", &provider, everything)).await;
    let column = |name: &'static str| {
        let ns = ns.clone();
        async move {
            let output = support::kubectl(&["get", "mlrc", name, "-n", &ns]);
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let mut lines = text.lines();
            let header = lines.next()?;
            let row = lines.next()?;
            let start = header.find("TRIGGERS")?;
            let end = header.find("AGE")?;
            Some(row.get(start..end.min(row.len()))?.trim().to_owned()).filter(|c| !c.is_empty())
        }
    };
    let follows =
        support::eventually("the follows column", Duration::from_secs(30), || column("follows")).await;
    assert_eq!(follows, "runConfigurations: upstream");
    let everything =
        support::eventually("the everything column", Duration::from_secs(30), || column("everything")).await;
    assert_eq!(everything, "onChange: pipeline; runConfigurations: upstream; schedules: 0 * * * *");
    operator.stop().await;
}
