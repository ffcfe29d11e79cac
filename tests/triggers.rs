//! The trigger engine against the real apiserver with the stub provider: the reference
//! walkthrough (a base RunConfiguration, a dependant in another namespace taking the base's
//! artifact through `valueFrom`, and a third chained on the dependant), completions fanned out
//! exactly once (repeats, late older completions, an in-process crash and a SIGKILLed operator
//! process), onChange triggers, schedules, and cycles that are reported and never loop.
//!
//! Reference acceptance scenarios (kfp-operator-behaviour §11.2 F) and where they are covered:
//! - F1, F2 (owned RunSchedule per schedule, state follows it, removal deletes it):
//!   `schedules_are_owned_replaced_and_removed`.
//! - F3 (dependencies not met): deliberately different. No Run starts, but the schedules keep
//!   syncing (the reference creates none) and the RunConfiguration says why it is not Ready
//!   (`DependenciesResolved=False`, `UnresolvedParameters`) rather than being Succeeded.
//! - F4 (a pinned pipeline version is observed as such): `schedules_are_owned_replaced_and_removed`.
//! - F5 (pipeline version changes fire `onChange: pipeline`; a Pipeline created later fires
//!   once): `on_change_triggers_fire_once_and_trigger_edits_fire_none` and the schedules test.
//! - F6, F7 (dependency entries, empty when missing): unit tests in `controller::dependencies`
//!   and the walkthrough.
//! - F8 (a dependency's success is copied and fires exactly one Run): the walkthrough and
//!   `completions_fire_each_dependant_exactly_once`.
//! - F9 (removing a trigger drops its status entry) and F12 (labels, reasons, status updates):
//!   unit tests in `triggers::decision`; F9 also fires nothing here (`on_change_…`).
//! - F10 (`onChange: runSpec` fires one Run per edit): `on_change_…`.
//! - F11 (provider changes): deliberately different. The reference fails the RunConfiguration
//!   and keeps the schedules on the old provider; here the schedules move (the old ones are
//!   deleted through the provider that created them): the schedules test.
//! - Also deliberately different: adding a dependency trigger fires nothing (the reference
//!   starts a Run), the first dependant Run carries its trigger labels, a cycle is reported
//!   instead of looping, an older completion arriving late changes nothing, and cross-namespace
//!   dependencies can be refused or granted (`cross_namespace_dependencies_need_a_grant`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kfp_operator::api::{
    NamespacedName, OnChangeType, Parameter, Pipeline, Provider, Run, RunConfiguration, RunConfigurationRef,
    RunSchedule, Schedule, Triggers,
};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

mod support;
use support::fixtures::{self, StubProviderExt};
use support::operator::Operator;

const TIMEOUT: Duration = Duration::from_secs(60);

fn stub_provider() -> Provider {
    fixtures::stub_provider("stub").producing("CsvExampleGen", "examples", "gs://bucket/examples/1")
}

fn pipeline(provider: &NamespacedName) -> Pipeline {
    fixtures::pipeline("penguin", provider)
}

/// A fresh namespace with the stub Provider `stub` and the Pipeline `penguin` on it.
async fn stub_namespace(client: &kube::Client, name: &str) -> (String, NamespacedName) {
    let ns = support::namespace(client, name).await;
    let provider = NamespacedName::new(&ns, "stub");
    let post = PostParams::default();
    Api::<Provider>::namespaced(client.clone(), &ns).create(&post, &stub_provider()).await.unwrap();
    Api::<Pipeline>::namespaced(client.clone(), &ns).create(&post, &pipeline(&provider)).await.unwrap();
    (ns, provider)
}

/// A RunConfiguration on `penguin` declaring the `examples` artifact, with `parameters`.
fn run_configuration(
    name: &str,
    provider: &NamespacedName,
    parameters: Vec<Parameter>,
    triggers: Triggers,
) -> RunConfiguration {
    let mut rc = fixtures::run_configuration(name, provider, triggers);
    rc.spec.run.parameters = parameters;
    rc.spec.run.artifacts =
        vec![kfp_operator::api::OutputArtifact::new("examples", "CsvExampleGen:examples".parse().unwrap())];
    rc
}

fn condition<'a>(rc: &'a RunConfiguration, type_: &str) -> Option<&'a Condition> {
    rc.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

#[tokio::test]
async fn the_walkthrough_chains_three_run_configurations() {
    let client = support::client().await;
    let base = support::namespace(&client, "base").await;
    let dependant = support::namespace(&client, "dependant").await;
    let namespaces = vec![base.clone(), dependant.clone()];
    let operator = Operator::start(&client, &base, |config| config.namespaces = namespaces);
    let provider = NamespacedName::new(&base, "stub");
    let post = PostParams::default();
    Api::<Provider>::namespaced(client.clone(), &base).create(&post, &stub_provider()).await.unwrap();
    for ns in [&base, &dependant] {
        Api::<Pipeline>::namespaced(client.clone(), ns).create(&post, &pipeline(&provider)).await.unwrap();
    }
    let training = run_configuration(
        "training",
        &provider,
        vec![Parameter::from_run_configuration(
            "examples_location",
            RunConfigurationRef::new(NamespacedName::new(&base, "examples"), "examples"),
        )],
        Triggers { run_configurations: vec![NamespacedName::new(&base, "examples")], ..Triggers::default() },
    );
    let evaluation = run_configuration(
        "evaluation",
        &provider,
        vec![],
        Triggers { run_configurations: vec![NamespacedName::name_only("training")], ..Triggers::default() },
    );
    let rcs = |ns: &str| Api::<RunConfiguration>::namespaced(client.clone(), ns);
    rcs(&dependant).create(&post, &training).await.unwrap();
    rcs(&dependant).create(&post, &evaluation).await.unwrap();
    let examples = run_configuration(
        "examples",
        &provider,
        vec![],
        Triggers { on_change: vec![OnChangeType::RunSpec], ..Triggers::default() },
    );
    rcs(&base).create(&post, &examples).await.unwrap();

    // The base run (onChange: runSpec fires once on creation) succeeds with its artifact.
    support::eventually("the base RunConfiguration's latest successful run", TIMEOUT, || async {
        rcs(&base).get("examples").await.ok()?.status?.latest_runs.succeeded
    })
    .await;

    // Exactly one dependant Run, with the artifact location and the trigger labels.
    let training_runs = support::eventually("the training run", TIMEOUT, || async {
        let runs = support::runs_of(&client, &dependant, "training").await;
        (!runs.is_empty()).then_some(runs)
    })
    .await;
    assert_eq!(training_runs.len(), 1);
    let run = &training_runs[0];
    assert_eq!(run.spec.parameters, vec![Parameter::literal("examples_location", "gs://bucket/examples/1")]);
    let labels = run.labels();
    assert_eq!(
        labels.get("pipelines.kubeflow.org/trigger-type").map(String::as_str),
        Some("runConfiguration")
    );
    assert_eq!(labels.get("pipelines.kubeflow.org/trigger-source").map(String::as_str), Some("examples"));
    assert_eq!(labels.get("pipelines.kubeflow.org/trigger-source-namespace"), Some(&base));

    // When it completes, the third RunConfiguration, chained on it, fires.
    let evaluation_runs = support::eventually("the evaluation run", TIMEOUT, || async {
        let runs = support::runs_of(&client, &dependant, "evaluation").await;
        (!runs.is_empty()).then_some(runs)
    })
    .await;
    assert_eq!(evaluation_runs.len(), 1);

    // And nothing more happens.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(support::runs_of(&client, &base, "examples").await.len(), 1);
    assert_eq!(support::runs_of(&client, &dependant, "training").await.len(), 1);
    assert_eq!(support::runs_of(&client, &dependant, "evaluation").await.len(), 1);

    // `kfp-operator graph` shows the chain with each node's latest run.
    let mermaid = kfp_operator::tools::graph::graph_of_cluster(&client, None, "mermaid").await.unwrap();
    for node in
        [format!("{base}/examples"), format!("{dependant}/training"), format!("{dependant}/evaluation")]
    {
        assert!(mermaid.contains(&node), "{node} missing from:\n{mermaid}");
    }
    assert!(mermaid.contains("Succeeded"), "{mermaid}");
    let dot = kfp_operator::tools::graph::graph_of_cluster(&client, Some(&dependant), "dot").await.unwrap();
    assert!(dot.starts_with("digraph"), "{dot}");
    operator.stop().await;
}

#[tokio::test]
async fn a_cycle_is_reported_on_every_member_and_never_loops() {
    let client = support::client().await;
    let (ns, provider) = stub_namespace(&client, "cycle").await;
    let operator = Operator::start(&client, &ns, |_| {});
    let post = PostParams::default();
    let rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &ns);
    let a = run_configuration(
        "a",
        &provider,
        vec![],
        Triggers {
            run_configurations: vec![NamespacedName::name_only("b")],
            on_change: vec![OnChangeType::RunSpec],
            ..Triggers::default()
        },
    );
    let b = run_configuration(
        "b",
        &provider,
        vec![],
        Triggers { run_configurations: vec![NamespacedName::name_only("a")], ..Triggers::default() },
    );
    rcs.create(&post, &a).await.unwrap();
    rcs.create(&post, &b).await.unwrap();
    for name in ["a", "b"] {
        let reported = support::eventually(&format!("{name} to report the cycle"), TIMEOUT, || async {
            let rc = rcs.get(name).await.ok()?;
            condition(&rc, "DependencyCycle").filter(|c| c.status == "True").cloned()
        })
        .await;
        assert!(
            reported.message.contains(&format!("{ns}/a")) && reported.message.contains(&format!("{ns}/b")),
            "{}",
            reported.message
        );
    }
    // a's own onChange run completes; along the cycle nothing fires.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(support::runs_of(&client, &ns, "a").await.len(), 1, "a's onChange run only");
    assert!(support::runs_of(&client, &ns, "b").await.is_empty(), "no run along a cycle edge");
    operator.stop().await;
}

/// A provider's run-completion body for a run of the RunConfiguration `rc`.
fn completion_body(ns: &str, rc: &str, status: &str, run_id: &str, end: &str) -> serde_json::Value {
    json!({
        "status": status,
        "pipelineName": format!("{ns}/penguin"),
        "runConfigurationName": format!("{ns}/{rc}"),
        "runId": run_id,
        "runEndTime": end,
        "provider": format!("{ns}/stub"),
    })
}

fn completion(
    ns: &str,
    rc: &str,
    status: &str,
    run_id: &str,
    end: &str,
) -> kfp_operator::events::RunCompletionEventData {
    serde_json::from_value(completion_body(ns, rc, status, run_id, end)).unwrap()
}

fn ingest_without_engine(client: &kube::Client) -> std::sync::Arc<kfp_operator::events::ingest::Ingest> {
    kfp_operator::events::ingest::Ingest::new(
        std::sync::Arc::new(kfp_operator::completion::KubeResources::new(client.clone())),
        vec![],
        Default::default(),
        8,
        1 << 20,
        Default::default(),
    )
}

/// A completion reported by another Provider than the dependency's is refused with 403 and
/// changes nothing: no event is published, nothing is recorded, no dependant starts; the same
/// completion from the dependency's own Provider then fires the dependant.
#[tokio::test]
async fn a_completion_reported_by_another_provider_changes_nothing() {
    let client = support::client().await;
    let (ns, provider) = stub_namespace(&client, "foreign-provider").await;
    let post = PostParams::default();
    Api::<Provider>::namespaced(client.clone(), &ns)
        .create(&post, &fixtures::stub_provider("other"))
        .await
        .unwrap();
    let rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &ns);
    rcs.create(&post, &run_configuration("dep", &provider, vec![], Triggers::default())).await.unwrap();
    let triggers =
        Triggers { run_configurations: vec![NamespacedName::name_only("dep")], ..Triggers::default() };
    rcs.create(&post, &run_configuration("dependant", &provider, vec![], triggers)).await.unwrap();
    let operator = Operator::start(&client, &ns, |_| {});
    support::eventually("the dependant to evaluate its triggers", TIMEOUT, || async {
        rcs.get("dependant").await.ok()?.status?.triggers.run_configurations.contains_key("dep").then_some(())
    })
    .await;
    let sink = std::sync::Arc::new(kfp_operator::events::sinks::MemorySink::new());
    let ingest = kfp_operator::events::ingest::Ingest::new(
        std::sync::Arc::new(
            kfp_operator::completion::KubeResources::new(client.clone())
                .with_trigger_engine(operator.context()),
        ),
        vec![sink.clone()],
        Default::default(),
        8,
        1 << 20,
        Default::default(),
    );

    let mut forged = completion(&ns, "dep", "succeeded", "run-1", "2024-05-01T10:00:00Z");
    forged.provider = NamespacedName::new(&ns, "other");
    let error = ingest.accept(forged).await.unwrap_err();
    assert_eq!((error.status().as_u16(), error.category()), (403, "ProviderMismatch"));
    assert_eq!(
        error.to_string(),
        format!(
            "Provider {ns}/other may not report a completion of RunConfiguration {ns}/dep, which belongs to Provider {ns}/stub"
        )
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(sink.is_empty(), "nothing is published");
    let dep = rcs.get("dep").await.unwrap();
    assert_eq!(dep.status.and_then(|s| s.latest_runs.succeeded), None, "nothing is recorded");
    assert!(support::runs_of(&client, &ns, "dependant").await.is_empty(), "no dependant starts");

    ingest.accept(completion(&ns, "dep", "succeeded", "run-1", "2024-05-01T10:00:00Z")).await.unwrap();
    support::eventually("the dependant's run", TIMEOUT, || async {
        (support::runs_of(&client, &ns, "dependant").await.len() == 1).then_some(())
    })
    .await;
    assert_eq!(sink.len(), 1, "the run-completion event of the genuine completion");
    operator.stop().await;
}

/// Completions of a dependency: a failure triggers nobody, repeats and a late older completion
/// change nothing, and a crash and restart of the operator creates no second Run.
#[tokio::test]
async fn completions_fire_each_dependant_exactly_once() {
    let client = support::client().await;
    let (ns, provider) = stub_namespace(&client, "fire-once").await;
    let post = PostParams::default();
    let rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &ns);
    rcs.create(&post, &run_configuration("dep", &provider, vec![], Triggers::default())).await.unwrap();
    for name in ["x", "y"] {
        let triggers =
            Triggers { run_configurations: vec![NamespacedName::name_only("dep")], ..Triggers::default() };
        rcs.create(&post, &run_configuration(name, &provider, vec![], triggers)).await.unwrap();
    }
    let operator = Operator::start(&client, &ns, |_| {});
    let mut ingest = operator.ingest();
    // Let the dependants record that the dependency has no success yet.
    for name in ["x", "y"] {
        support::eventually(&format!("{name} to evaluate its triggers"), TIMEOUT, || async {
            rcs.get(name).await.ok()?.status?.triggers.run_configurations.contains_key("dep").then_some(())
        })
        .await;
    }

    ingest.accept(completion(&ns, "dep", "failed", "run-0", "2024-05-01T09:00:00Z")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(support::runs_of(&client, &ns, "x").await.is_empty(), "a failed completion triggers nobody");

    for _ in 0..5 {
        ingest.accept(completion(&ns, "dep", "succeeded", "run-2", "2024-05-01T10:00:00Z")).await.unwrap();
    }
    for name in ["x", "y"] {
        support::eventually(&format!("{name}'s run"), TIMEOUT, || async {
            (support::runs_of(&client, &ns, name).await.len() == 1).then_some(())
        })
        .await;
    }
    support::eventually("an Event on the dependency naming the Runs it started", TIMEOUT, || async {
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
        events.list(&ListParams::default()).await.ok()?.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("TriggeredDependants")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("dep")
                && e.note
                    .as_deref()
                    .is_some_and(|note| note.starts_with("run run-2 started 2 dependant Runs: "))
        })
    })
    .await;
    // A late, older completion does not roll the dependency back or fire again.
    ingest.accept(completion(&ns, "dep", "succeeded", "run-1", "2024-05-01T09:30:00Z")).await.unwrap();
    let latest = rcs.get("dep").await.unwrap().status.unwrap().latest_runs.succeeded.unwrap();
    assert_eq!(latest.provider_id, "run-2");

    // The fan-out repeated (a redelivery that finds the success not yet recorded) creates nothing.
    let dependency = rcs.get("dep").await.unwrap();
    let repeated = kfp_operator::completion::fan_out::fan_out(
        &operator.context(),
        &dependency,
        &dependency.status.clone().unwrap().latest_runs.succeeded.unwrap(),
        std::time::Instant::now(),
    )
    .await
    .unwrap();
    assert_eq!(repeated, 0, "the Runs exist already");

    // A crash (the operator's tasks aborted, nothing drained) and a restart, then the same
    // completion once more, through the new operator's ingest and through one without the
    // trigger engine (where only the reconcilers act).
    drop(operator);
    let operator = Operator::start(&client, &ns, |_| {});
    operator
        .ingest()
        .accept(completion(&ns, "dep", "succeeded", "run-2", "2024-05-01T10:00:00Z"))
        .await
        .unwrap();
    ingest = ingest_without_engine(&client);
    ingest.accept(completion(&ns, "dep", "succeeded", "run-2", "2024-05-01T10:00:00Z")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(support::runs_of(&client, &ns, "x").await.len(), 1);
    assert_eq!(support::runs_of(&client, &ns, "y").await.len(), 1);

    // A newer success fires once more.
    ingest.accept(completion(&ns, "dep", "succeeded", "run-3", "2024-05-01T11:00:00Z")).await.unwrap();
    support::eventually("x's second run", TIMEOUT, || async {
        (support::runs_of(&client, &ns, "x").await.len() == 2).then_some(())
    })
    .await;
    operator.stop().await;
}

/// onChange: a pipeline version change fires one Run per RunConfiguration watching it, an
/// edit of `spec.run` fires one Run, and adding or removing a dependency trigger fires none.
#[tokio::test]
async fn on_change_triggers_fire_once_and_trigger_edits_fire_none() {
    let client = support::client().await;
    let (ns, provider) = stub_namespace(&client, "on-change").await;
    let post = PostParams::default();
    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), &ns);
    let operator = Operator::start(&client, &ns, |_| {});
    let rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &ns);
    let on_pipeline = Triggers { on_change: vec![OnChangeType::Pipeline], ..Triggers::default() };
    rcs.create(&post, &run_configuration("follows-pipeline", &provider, vec![], on_pipeline)).await.unwrap();
    let on_spec = Triggers { on_change: vec![OnChangeType::RunSpec], ..Triggers::default() };
    rcs.create(&post, &run_configuration("follows-spec", &provider, vec![], on_spec)).await.unwrap();

    // The first synchronised pipeline version fires once; the first runSpec evaluation fires once.
    for name in ["follows-pipeline", "follows-spec"] {
        support::eventually(&format!("{name}'s first run"), TIMEOUT, || async {
            (support::runs_of(&client, &ns, name).await.len() == 1).then_some(())
        })
        .await;
    }

    let params = kube::api::PatchParams::default();
    pipelines
        .patch("penguin", &params, &kube::api::Patch::Merge(json!({"spec": {"image": "quickstart:v2"}})))
        .await
        .unwrap();
    support::eventually("a run for the new pipeline version", TIMEOUT, || async {
        (support::runs_of(&client, &ns, "follows-pipeline").await.len() == 2).then_some(())
    })
    .await;

    rcs.patch(
        "follows-spec",
        &params,
        &kube::api::Patch::Merge(json!({"spec": {"run": {"experimentName": "other"}}})),
    )
    .await
    .unwrap();
    support::eventually("a run for the edited spec", TIMEOUT, || async {
        (support::runs_of(&client, &ns, "follows-spec").await.len() == 2).then_some(())
    })
    .await;

    // Adding and then removing a dependency trigger fires nothing.
    rcs.create(&post, &run_configuration("dep", &provider, vec![], Triggers::default())).await.unwrap();
    let add = json!({"spec": {"triggers": {"runConfigurations": ["dep"]}}});
    rcs.patch("follows-pipeline", &params, &kube::api::Patch::Merge(add)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    rcs.patch(
        "follows-pipeline",
        &params,
        &kube::api::Patch::Merge(json!({"spec": {"triggers": {"runConfigurations": null}}})),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(support::runs_of(&client, &ns, "follows-pipeline").await.len(), 2);
    assert_eq!(support::runs_of(&client, &ns, "follows-spec").await.len(), 2);
    operator.stop().await;
}

/// The operator process is SIGKILLed in the middle of a completion's fan-out and started again;
/// the provider posts the completion again (and the completion consumer redelivers it): every
/// dependant ends with exactly one Run.
#[tokio::test]
async fn a_fan_out_cut_by_sigkill_completes_once_after_a_restart() {
    const DEPENDANTS: usize = 150;
    let client = support::client().await;
    let ns = support::namespace(&client, "fan-out-kill").await;
    let nats = support::NatsServer::start();
    let ingest_port = support::free_port();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("operator.yaml");
    std::fs::write(
        &config,
        format!(
            "namespaces: [{ns}]\nfanOutConcurrency: 1\nevents:\n  listenAddr: 127.0.0.1:{ingest_port}\n  \
             authentication: none\n  nats:\n    url: {}\n",
            nats.url()
        ),
    )
    .unwrap();
    let provider = NamespacedName::new(&ns, "stub");
    let post = PostParams::default();
    let stub = fixtures::stub_provider("stub").completing_after("1h");
    Api::<Provider>::namespaced(client.clone(), &ns).create(&post, &stub).await.unwrap();
    Api::<Pipeline>::namespaced(client.clone(), &ns).create(&post, &pipeline(&provider)).await.unwrap();
    let rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &ns);
    rcs.create(&post, &run_configuration("dep", &provider, vec![], Triggers::default())).await.unwrap();
    futures::future::join_all((0..DEPENDANTS).map(|i| {
        let triggers =
            Triggers { run_configurations: vec![NamespacedName::name_only("dep")], ..Triggers::default() };
        let rc = run_configuration(&format!("dependant-{i}"), &provider, vec![], triggers);
        let rcs = rcs.clone();
        async move { rcs.create(&PostParams::default(), &rc).await.unwrap() }
    }))
    .await;

    let operator = support::operator::OperatorProcess::start(&config);
    support::eventually("every dependant to evaluate its trigger", Duration::from_secs(90), || async {
        let settled = rcs
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .iter()
            .filter(|rc| {
                rc.status.as_ref().is_some_and(|s| s.triggers.run_configurations.contains_key("dep"))
            })
            .count();
        (settled == DEPENDANTS).then_some(())
    })
    .await;

    let body = completion_body(&ns, "dep", "succeeded", "run-1", "2024-05-01T10:00:00Z").to_string();
    let posting = tokio::spawn({
        let body = body.clone();
        async move { support::post_json(ingest_port, "/events", &body).await }
    });
    let runs: Api<Run> = Api::namespaced(client.clone(), &ns);
    let at_kill = support::eventually("the fan-out to start", Duration::from_secs(30), || async {
        let count = runs.list(&ListParams::default()).await.ok()?.items.len();
        (count > 0).then_some(count)
    })
    .await;
    let config = operator.kill();
    assert!(at_kill < DEPENDANTS, "the kill cut the fan-out ({at_kill} of {DEPENDANTS} Runs)");
    assert_ne!(posting.await.unwrap(), Some(200), "the cut completion was not acknowledged");

    let operator = support::operator::OperatorProcess::start(&config);
    support::eventually(
        "the restarted operator to accept the completion again",
        Duration::from_secs(60),
        || {
            let body = body.clone();
            async move { (support::post_json(ingest_port, "/events", &body).await == Some(200)).then_some(()) }
        },
    )
    .await;
    let count_per_dependant = || async {
        let mut per_dependant = std::collections::BTreeMap::<String, usize>::new();
        for run in runs.list(&ListParams::default()).await.unwrap().items {
            *per_dependant
                .entry(run.labels()["pipelines.kubeflow.org/runconfiguration.name"].clone())
                .or_default() += 1;
        }
        per_dependant
    };
    let after = count_per_dependant().await;
    assert_eq!(after.len(), DEPENDANTS, "every dependant has its Run once the completion is acknowledged");
    assert!(after.values().all(|count| *count == 1), "{after:?}");
    let latest = rcs.get("dep").await.unwrap().status.unwrap().latest_runs.succeeded.unwrap();
    assert_eq!(latest.provider_id, "run-1");
    // The reconcilers and the consumer's redelivery settle without a second Run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count_per_dependant().await, after);
    drop(operator);
}

async fn owned_schedules(client: &kube::Client, ns: &str, rc: &str) -> Vec<RunSchedule> {
    let selector = format!("pipelines.kubeflow.org/runconfiguration.name={rc}");
    Api::<RunSchedule>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
}

/// Schedule triggers: one owned RunSchedule per schedule, kept in sync while a dependency is
/// unresolved (the reference creates none then), replaced when the schedule changes and deleted
/// when it is removed; and a Pipeline created after its RunConfiguration fires exactly one Run.
#[tokio::test]
async fn schedules_are_owned_replaced_and_removed() {
    let client = support::client().await;
    let (ns, provider) = stub_namespace(&client, "schedules").await;
    let post = PostParams::default();
    let pipelines: Api<Pipeline> = Api::namespaced(client.clone(), &ns);
    let operator = Operator::start(&client, &ns, |_| {});
    let rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &ns);
    let mut follows_late_pipeline = run_configuration(
        "follows-late-pipeline",
        &provider,
        vec![],
        Triggers { on_change: vec![OnChangeType::Pipeline], ..Triggers::default() },
    );
    follows_late_pipeline.spec.run.pipeline = "late".parse().unwrap();
    rcs.create(&post, &follows_late_pipeline).await.unwrap();
    let waiting_for_missing = vec![Parameter::from_run_configuration(
        "model",
        RunConfigurationRef::new(NamespacedName::name_only("missing"), "model"),
    )];
    let hourly = Triggers { schedules: vec![Schedule::cron("0 * * * *")], ..Triggers::default() };
    let mut scheduled = run_configuration("scheduled", &provider, waiting_for_missing, hourly);
    scheduled.spec.run.pipeline = "penguin:pinned-1".parse().unwrap();
    rcs.create(&post, &scheduled).await.unwrap();

    let first = support::eventually("the owned RunSchedule", TIMEOUT, || async {
        let schedules = owned_schedules(&client, &ns, "scheduled").await;
        (schedules.len() == 1).then(|| schedules.into_iter().next()).flatten()
    })
    .await;
    assert_eq!(first.spec.schedule.cron_expression, "0 * * * *");
    assert_eq!(first.spec.pipeline.version, "pinned-1");
    assert_eq!(first.spec.parameters, vec![], "the unresolved parameter is not submitted");
    let owner = &first.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("RunConfiguration", "scheduled", Some(true))
    );
    let rc = support::eventually("the schedule to synchronise", TIMEOUT, || async {
        let rc = rcs.get("scheduled").await.ok()?;
        (condition(&rc, "Synchronized")?.reason == "Succeeded").then_some(rc)
    })
    .await;
    assert_eq!(rc.status.as_ref().unwrap().dependencies.pipeline.version, "pinned-1");
    let resolved = condition(&rc, "DependenciesResolved").unwrap();
    assert_eq!((resolved.status.as_str(), resolved.reason.as_str()), ("False", "UnresolvedParameters"));
    let why = format!("parameter 'model': RunConfiguration {ns}/missing does not exist");
    assert_eq!(resolved.message, why);
    let ready = condition(&rc, "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.message.as_str()), ("False", why.as_str()));

    // A Pipeline created after the RunConfiguration that follows it fires exactly one Run.
    let mut late = pipeline(&provider);
    late.metadata.name = Some("late".into());
    pipelines.create(&post, &late).await.unwrap();
    support::eventually("the run for the late pipeline", TIMEOUT, || async {
        (support::runs_of(&client, &ns, "follows-late-pipeline").await.len() == 1).then_some(())
    })
    .await;

    let params = kube::api::PatchParams::default();
    let replace = json!({"spec": {"triggers": {"schedules": [{"cronExpression": "30 2 * * *"}]}}});
    rcs.patch("scheduled", &params, &kube::api::Patch::Merge(replace)).await.unwrap();
    let replaced = support::eventually("the schedule to be replaced", TIMEOUT, || async {
        let schedules = owned_schedules(&client, &ns, "scheduled").await;
        let live: Vec<_> =
            schedules.into_iter().filter(|s| s.metadata.deletion_timestamp.is_none()).collect();
        (live.len() == 1 && live[0].name_any() != first.name_any()).then(|| live.into_iter().next()).flatten()
    })
    .await;
    assert_eq!(replaced.spec.schedule.cron_expression, "30 2 * * *");

    // A provider change moves the schedule to the new provider.
    Api::<Provider>::namespaced(client.clone(), &ns)
        .create(&post, &fixtures::stub_provider("other"))
        .await
        .unwrap();
    let move_provider = json!({"spec": {"run": {"provider": format!("{ns}/other")}}});
    rcs.patch("scheduled", &params, &kube::api::Patch::Merge(move_provider)).await.unwrap();
    support::eventually("the schedule to move to the other provider", TIMEOUT, || async {
        let schedules = owned_schedules(&client, &ns, "scheduled").await;
        (schedules.len() == 1 && schedules[0].spec.provider == NamespacedName::new(&ns, "other"))
            .then_some(())
    })
    .await;

    rcs.patch(
        "scheduled",
        &params,
        &kube::api::Patch::Merge(json!({"spec": {"triggers": {"schedules": null}}})),
    )
    .await
    .unwrap();
    support::eventually("the owned RunSchedules to be deleted", TIMEOUT, || async {
        owned_schedules(&client, &ns, "scheduled").await.is_empty().then_some(())
    })
    .await;
    support::eventually("the RunConfiguration to be Synchronized", TIMEOUT, || async {
        let rc = rcs.get("scheduled").await.ok()?;
        (condition(&rc, "Synchronized")?.reason == "Succeeded").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(support::runs_of(&client, &ns, "scheduled").await.len(), 0, "the dependency never succeeded");
    assert_eq!(support::runs_of(&client, &ns, "follows-late-pipeline").await.len(), 1);
    operator.stop().await;
}

/// The `grant` cross-namespace policy: a dependency in another namespace is refused (with the
/// annotation to add in the condition) and fires nothing, until the depended-on
/// RunConfiguration grants the dependant's namespace; then its next success fires once.
#[tokio::test]
async fn cross_namespace_dependencies_need_a_grant() {
    use kfp_operator::triggers::{ALLOW_DEPENDANTS_FROM, CrossNamespacePolicy};
    let client = support::client().await;
    let base = support::namespace(&client, "grant-base").await;
    let dependant_ns = support::namespace(&client, "grant-dependant").await;
    let namespaces = vec![base.clone(), dependant_ns.clone()];
    let operator = Operator::start(&client, &base, |config| {
        config.namespaces = namespaces;
        config.cross_namespace_policy = CrossNamespacePolicy::Grant;
    });
    let provider = NamespacedName::new(&base, "stub");
    let post = PostParams::default();
    Api::<Provider>::namespaced(client.clone(), &base).create(&post, &stub_provider()).await.unwrap();
    // The consumer's Pipeline, so that only the reference decides whether it is resolved.
    Api::<Pipeline>::namespaced(client.clone(), &dependant_ns)
        .create(&post, &fixtures::pipeline("penguin", &provider))
        .await
        .unwrap();
    let base_rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &base);
    base_rcs
        .create(&post, &run_configuration("shared", &provider, vec![], Triggers::default()))
        .await
        .unwrap();
    let dependant_rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &dependant_ns);
    let triggers =
        Triggers { run_configurations: vec![NamespacedName::new(&base, "shared")], ..Triggers::default() };
    dependant_rcs.create(&post, &run_configuration("consumer", &provider, vec![], triggers)).await.unwrap();

    let refused = support::eventually("the reference to be refused", TIMEOUT, || async {
        let rc = dependant_rcs.get("consumer").await.ok()?;
        condition(&rc, "DependenciesResolved").filter(|c| c.reason == "DependencyDenied").cloned()
    })
    .await;
    assert_eq!(refused.status, "False");
    assert!(refused.message.contains(ALLOW_DEPENDANTS_FROM), "{}", refused.message);
    let ingest = operator.ingest();
    ingest.accept(completion(&base, "shared", "succeeded", "run-1", "2024-05-01T10:00:00Z")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        support::runs_of(&client, &dependant_ns, "consumer").await.is_empty(),
        "a refused dependency fires nothing"
    );

    let grant = json!({"metadata": {"annotations": {ALLOW_DEPENDANTS_FROM: dependant_ns}}});
    base_rcs
        .patch("shared", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(grant))
        .await
        .unwrap();
    support::eventually("the granted reference to resolve", TIMEOUT, || async {
        let rc = dependant_rcs.get("consumer").await.ok()?;
        (condition(&rc, "DependenciesResolved")?.status == "True").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        support::runs_of(&client, &dependant_ns, "consumer").await.is_empty(),
        "granting does not replay run-1"
    );
    ingest.accept(completion(&base, "shared", "succeeded", "run-2", "2024-05-01T11:00:00Z")).await.unwrap();
    let runs = support::runs_of(&client, &dependant_ns, "consumer").await;
    assert_eq!(runs.len(), 1, "the fan-out created the Run before the completion was acknowledged");
    assert_eq!(runs[0].labels()["pipelines.kubeflow.org/trigger-source-namespace"], base);
    operator.stop().await;
}
