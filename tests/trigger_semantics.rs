//! Triggers beyond "any dependency fired", against the real apiserver with the stub provider:
//! join expressions (`&&` fires once with the latest runs, `||` once per success, a reset
//! clears a lone half), conditions on a dependency's artifact metadata, `concurrencyPolicy`
//! `Forbid` (coalescing) and `Replace` (stopping on the provider), and a join that survives a
//! SIGKILLed operator and completions redelivered in reverse order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kfp_operator::api::{
    ConcurrencyPolicy, Join, NamespacedName, OutputArtifact, Parameter, Pipeline, Provider, Run,
    RunConfiguration, RunConfigurationRef, TriggerCondition, Triggers,
};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

mod support;
use support::fixtures::{self, StubProviderExt};
use support::operator::Operator;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A namespace with the stub Provider `stub` (runs complete after `delay`) and Pipeline `penguin`.
async fn stub_namespace(client: &kube::Client, name: &str, delay: &str) -> (String, NamespacedName) {
    let ns = support::namespace(client, name).await;
    let provider = NamespacedName::new(&ns, "stub");
    let post = PostParams::default();
    let stub = fixtures::stub_provider("stub").completing_after(delay);
    Api::<Provider>::namespaced(client.clone(), &ns).create(&post, &stub).await.unwrap();
    Api::<Pipeline>::namespaced(client.clone(), &ns)
        .create(&post, &fixtures::pipeline("penguin", &provider))
        .await
        .unwrap();
    (ns, provider)
}

/// A RunConfiguration declaring the artifacts `examples` (`CsvExampleGen:examples`) and
/// `metrics` (`Evaluator:metrics`).
fn run_configuration(name: &str, provider: &NamespacedName, triggers: Triggers) -> RunConfiguration {
    let mut rc = fixtures::run_configuration(name, provider, triggers);
    rc.spec.run.artifacts = vec![
        OutputArtifact::new("examples", "CsvExampleGen:examples".parse().unwrap()),
        OutputArtifact::new("metrics", "Evaluator:metrics".parse().unwrap()),
    ];
    rc
}

fn joined(expression: &str, reset: &str) -> Triggers {
    Triggers {
        join: Some(Join { expression: expression.into(), reset: reset.into() }),
        ..Triggers::default()
    }
}

/// A succeeded completion of `rc`'s run `run`, ending `minute` minutes after 10:00, whose
/// examples are at `gs://b/<run>` and whose metrics artifact has `metrics`.
fn success(ns: &str, rc: &str, run: &str, minute: u32, metrics: Value) -> Value {
    json!({
        "status": "succeeded",
        "pipelineName": format!("{ns}/penguin"),
        "runConfigurationName": format!("{ns}/{rc}"),
        "runId": run,
        "runEndTime": format!("2026-05-01T10:{minute:02}:00Z"),
        "provider": format!("{ns}/stub"),
        "pipelineComponents": [
            {"name": "CsvExampleGen", "componentArtifacts": [{"name": "examples", "artifacts": [{"uri": format!("gs://b/{run}")}]}]},
            {"name": "Evaluator", "componentArtifacts": [{"name": "metrics", "artifacts": [{"uri": format!("gs://b/{run}/metrics"), "metadata": metrics}]}]}
        ]
    })
}

async fn accept(operator: &Operator, body: Value) {
    operator.ingest().accept(serde_json::from_value(body).unwrap()).await.unwrap();
}

async fn eventually_runs(client: &kube::Client, ns: &str, rc: &str, count: usize) -> Vec<Run> {
    support::eventually(&format!("{count} Runs of {rc}"), TIMEOUT, || async {
        let runs = support::runs_of(client, ns, rc).await;
        (runs.len() == count).then_some(runs)
    })
    .await
}

fn triggers_condition(rc: &RunConfiguration) -> Option<Condition> {
    rc.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Triggers").cloned()
}

/// Waits until `name` evaluated its triggers once (every join dependency has an entry).
async fn settled(rcs: &Api<RunConfiguration>, name: &str, dependencies: &[&str]) {
    support::eventually(&format!("{name} to evaluate its join"), TIMEOUT, || async {
        let status = rcs.get(name).await.ok()?.status?;
        dependencies.iter().all(|d| status.triggers.join.dependencies.contains_key(*d)).then_some(())
    })
    .await;
}

fn parameter(run: &Run, name: &str) -> String {
    run.spec.parameters.iter().find(|p| p.name == name).map(|p| p.value.clone()).unwrap_or_default()
}

#[tokio::test]
async fn a_join_fires_once_with_the_latest_runs_and_a_reset_clears_a_lone_half() {
    let client = support::client().await;
    let (ns, provider) = stub_namespace(&client, "join-and", "1h").await;
    let rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &ns);
    let post = PostParams::default();
    for name in ["a", "b"] {
        rcs.create(&post, &run_configuration(name, &provider, Triggers::default())).await.unwrap();
    }
    let mut both = run_configuration("both", &provider, joined("a && b", ""));
    both.spec.run.parameters = ["a", "b"]
        .map(|d| {
            Parameter::from_run_configuration(
                format!("{d}_examples"),
                RunConfigurationRef::new(NamespacedName::name_only(d), "examples"),
            )
        })
        .to_vec();
    rcs.create(&post, &both).await.unwrap();
    rcs.create(&post, &run_configuration("resets", &provider, joined("a && b", "5s"))).await.unwrap();
    let operator = Operator::start(&client, &ns, |_| {});
    settled(&rcs, "both", &["a", "b"]).await;
    settled(&rcs, "resets", &["a", "b"]).await;

    accept(&operator, success(&ns, "a", "a1", 1, json!({}))).await;
    accept(&operator, success(&ns, "a", "a2", 2, json!({}))).await;
    let waiting = support::eventually("both to wait for b, with a satisfied by a2", TIMEOUT, || async {
        let rc = rcs.get("both").await.ok()?;
        let condition = triggers_condition(&rc)?;
        (rc.status?.triggers.join.dependencies["a"].satisfied_by == "a2").then_some(condition)
    })
    .await;
    assert_eq!(waiting.reason, "WaitingForDependencies");
    assert!(
        waiting.message.starts_with("join waiting for b (a satisfied by run a2 at "),
        "{}",
        waiting.message
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(support::runs_of(&client, &ns, "both").await.is_empty(), "A alone never fires");

    // The lone A of `resets` is cleared after 5 s (the reconciler comes back for it).
    let cleared = support::eventually("the reset of the lone a", Duration::from_secs(30), || async {
        let status = rcs.get("resets").await.ok()?.status?;
        let join = status.triggers.join;
        (join.last_reset.is_some() && join.dependencies["a"].satisfied_by.is_empty()).then_some(join)
    })
    .await;
    assert!(cleared.since.is_none());

    accept(&operator, success(&ns, "b", "b1", 3, json!({}))).await;
    let runs = eventually_runs(&client, &ns, "both", 1).await;
    assert_eq!(parameter(&runs[0], "a_examples"), "gs://b/a2", "the latest A");
    assert_eq!(parameter(&runs[0], "b_examples"), "gs://b/b1");
    assert_eq!(runs[0].labels()["pipelines.kubeflow.org/trigger-type"], "join");
    // Redelivered halves change nothing; `resets` saw only b after its reset.
    accept(&operator, success(&ns, "b", "b1", 3, json!({}))).await;
    accept(&operator, success(&ns, "a", "a2", 2, json!({}))).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(support::runs_of(&client, &ns, "both").await.len(), 1);
    assert!(support::runs_of(&client, &ns, "resets").await.is_empty(), "the reset cleared the lone a");
    let both = rcs.get("both").await.unwrap();
    let join = both.status.clone().unwrap().triggers.join;
    assert!(join.dependencies.values().all(|d| d.satisfied_by.is_empty()), "unsatisfied again: {join:?}");
    assert_eq!(join.last_run, runs[0].name_any());
    let condition = triggers_condition(&both).unwrap();
    assert!(
        condition.message.contains(&format!("last fired Run {}", runs[0].name_any())),
        "{}",
        condition.message
    );
    let resets = rcs.get("resets").await.unwrap().status.unwrap().triggers.join;
    assert_eq!(resets.dependencies["b"].satisfied_by, "b1");
    operator.stop().await;
}

#[tokio::test]
async fn an_or_fires_once_per_satisfying_success() {
    let client = support::client().await;
    let (ns, provider) = stub_namespace(&client, "join-or", "1h").await;
    let rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &ns);
    let post = PostParams::default();
    for name in ["xgb", "lgbm"] {
        rcs.create(&post, &run_configuration(name, &provider, Triggers::default())).await.unwrap();
    }
    rcs.create(&post, &run_configuration("serve", &provider, joined("xgb || lgbm", ""))).await.unwrap();
    let operator = Operator::start(&client, &ns, |_| {});
    settled(&rcs, "serve", &["xgb", "lgbm"]).await;

    accept(&operator, success(&ns, "xgb", "x1", 1, json!({}))).await;
    eventually_runs(&client, &ns, "serve", 1).await;
    accept(&operator, success(&ns, "lgbm", "l1", 2, json!({}))).await;
    eventually_runs(&client, &ns, "serve", 2).await;
    accept(&operator, success(&ns, "xgb", "x1", 1, json!({}))).await;
    accept(&operator, success(&ns, "xgb", "x2", 3, json!({}))).await;
    eventually_runs(&client, &ns, "serve", 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(support::runs_of(&client, &ns, "serve").await.len(), 3, "one Run per satisfying success");
    operator.stop().await;
}

#[tokio::test]
async fn a_condition_on_metrics_decides_and_the_status_says_why() {
    let client = support::client().await;
    let (ns, provider) = stub_namespace(&client, "condition", "1h").await;
    let rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &ns);
    let post = PostParams::default();
    rcs.create(&post, &run_configuration("evaluate", &provider, Triggers::default())).await.unwrap();
    let triggers = Triggers {
        run_configurations: vec![NamespacedName::name_only("evaluate")],
        conditions: vec![TriggerCondition {
            run_configuration: NamespacedName::name_only("evaluate"),
            artifact: "metrics".into(),
            filter: "accuracy > 0.9".into(),
        }],
        ..Triggers::default()
    };
    rcs.create(&post, &run_configuration("promote", &provider, triggers)).await.unwrap();
    let operator = Operator::start(&client, &ns, |_| {});
    support::eventually("promote to evaluate its triggers", TIMEOUT, || async {
        rcs.get("promote")
            .await
            .ok()?
            .status?
            .triggers
            .run_configurations
            .contains_key("evaluate")
            .then_some(())
    })
    .await;

    accept(&operator, success(&ns, "evaluate", "r-85", 1, json!({"accuracy": 0.85}))).await;
    let refused = support::eventually("the verdict on r-85", TIMEOUT, || async {
        let rc = rcs.get("promote").await.ok()?;
        let verdict = rc.status.clone()?.triggers.conditions.get("evaluate")?.clone();
        (verdict.provider_id == "r-85").then_some((verdict, triggers_condition(&rc)?))
    })
    .await;
    assert!(!refused.0.passed);
    assert_eq!(refused.0.message, r#"run r-85: metrics {"accuracy":0.85} does not pass accuracy > 0.9"#);
    assert_eq!(refused.1.reason, "ConditionNotMet");
    assert_eq!(
        refused.1.message,
        r#"evaluate does not count: run r-85: metrics {"accuracy":0.85} does not pass accuracy > 0.9"#
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(support::runs_of(&client, &ns, "promote").await.is_empty(), "0.85 does not fire");

    accept(&operator, success(&ns, "evaluate", "r-95", 2, json!({"accuracy": 0.95}))).await;
    eventually_runs(&client, &ns, "promote", 1).await;
    let passed = support::eventually("the verdict on r-95", TIMEOUT, || async {
        let verdict = rcs.get("promote").await.ok()?.status?.triggers.conditions.get("evaluate")?.clone();
        (verdict.provider_id == "r-95").then_some(verdict)
    })
    .await;
    assert!(passed.passed, "{passed:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(support::runs_of(&client, &ns, "promote").await.len(), 1);
    operator.stop().await;
}

/// The provider id of `run` once it is submitted.
async fn submitted(client: &kube::Client, ns: &str, run: &str) -> String {
    let runs: Api<Run> = Api::namespaced(client.clone(), ns);
    support::eventually(&format!("Run {run} submitted"), TIMEOUT, || async {
        let id = runs.get(run).await.ok()?.status?.status.provider?.id;
        (!id.is_empty()).then_some(id)
    })
    .await
}

fn policy(dependency: &str, policy: ConcurrencyPolicy) -> Triggers {
    Triggers {
        run_configurations: vec![NamespacedName::name_only(dependency)],
        concurrency_policy: policy,
        ..Triggers::default()
    }
}

#[tokio::test]
async fn forbid_coalesces_and_replace_stops_the_running_run() {
    let client = support::client().await;
    let (ns, provider) = stub_namespace(&client, "concurrency", "1h").await;
    let rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &ns);
    let post = PostParams::default();
    for name in ["dep-f", "dep-r"] {
        rcs.create(&post, &run_configuration(name, &provider, Triggers::default())).await.unwrap();
    }
    rcs.create(&post, &run_configuration("forbid", &provider, policy("dep-f", ConcurrencyPolicy::Forbid)))
        .await
        .unwrap();
    rcs.create(&post, &run_configuration("replace", &provider, policy("dep-r", ConcurrencyPolicy::Replace)))
        .await
        .unwrap();
    let operator = Operator::start(&client, &ns, |_| {});
    for name in ["forbid", "replace"] {
        support::eventually(&format!("{name} to evaluate its triggers"), TIMEOUT, || async {
            rcs.get(name).await.ok()?.status?.triggers.run_configurations.values().next().map(|_| ())
        })
        .await;
    }

    // Forbid: five completions while the first Run runs give one pending Run.
    accept(&operator, success(&ns, "dep-f", "f1", 1, json!({}))).await;
    let first = eventually_runs(&client, &ns, "forbid", 1).await.remove(0).name_any();
    let first_id = submitted(&client, &ns, &first).await;
    for minute in 2..7 {
        let run = format!("f{minute}");
        accept(&operator, success(&ns, "dep-f", &run, minute, json!({}))).await;
        // Each success is evaluated on its own (successes faster than one reconcile count once).
        support::eventually(&format!("forbid to see {run}"), TIMEOUT, || async {
            let status = rcs.get("forbid").await.ok()?.status?;
            (status.triggers.run_configurations.get("dep-f")?.provider_id == run).then_some(())
        })
        .await;
    }
    let pending = support::eventually("five triggers coalesced", TIMEOUT, || async {
        let rc = rcs.get("forbid").await.ok()?;
        let pending = rc.status.clone()?.triggers.pending?;
        (pending.coalesced == 5).then_some((pending, triggers_condition(&rc)?))
    })
    .await;
    assert_eq!((pending.0.waiting_for.as_str(), pending.0.key.as_str()), (first.as_str(), "rc-f6"));
    assert_eq!(pending.1.reason, "Pending");
    assert!(
        pending.1.message.starts_with(&format!(
            "one Run is pending until Run {first} finishes (5 triggers coalesced since "
        )),
        "{}",
        pending.1.message
    );
    assert_eq!(support::runs_of(&client, &ns, "forbid").await.len(), 1, "nothing starts while it runs");
    let finished = json!({
        "status": "succeeded", "pipelineName": format!("{ns}/penguin"),
        "runConfigurationName": format!("{ns}/forbid"), "runName": format!("{ns}/{first}"),
        "runId": first_id, "runEndTime": "2026-05-01T11:00:00Z", "provider": format!("{ns}/stub"),
    });
    accept(&operator, finished).await;
    eventually_runs(&client, &ns, "forbid", 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(support::runs_of(&client, &ns, "forbid").await.len(), 2, "exactly one more Run");
    assert!(rcs.get("forbid").await.unwrap().status.unwrap().triggers.pending.is_none());

    // Replace: a new trigger stops the running Run on the provider and starts a new one.
    accept(&operator, success(&ns, "dep-r", "r1", 1, json!({}))).await;
    let running = eventually_runs(&client, &ns, "replace", 1).await.remove(0).name_any();
    submitted(&client, &ns, &running).await;
    let metrics = operator.context().metrics.clone();
    let deletes_before = metrics.provider_calls(&format!("{ns}/stub"), "run", "delete", "ok");
    accept(&operator, success(&ns, "dep-r", "r2", 2, json!({}))).await;
    let replacement = support::eventually("the old Run gone and a new one", TIMEOUT, || async {
        let runs = support::runs_of(&client, &ns, "replace").await;
        (runs.len() == 1 && runs[0].name_any() != running).then(|| runs[0].name_any())
    })
    .await;
    assert_ne!(replacement, running);
    assert_eq!(
        metrics.provider_calls(&format!("{ns}/stub"), "run", "delete", "ok"),
        deletes_before + 1,
        "the running Run was stopped on the stub"
    );
    support::eventually("a RunReplaced Event", TIMEOUT, || async {
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
        events.list(&ListParams::default()).await.ok()?.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("RunReplaced")
                && e.note.as_deref().is_some_and(|n| n.contains(&running))
        })
    })
    .await;
    operator.stop().await;
}

#[tokio::test]
async fn a_join_survives_sigkill_and_reverse_redelivery() {
    let client = support::client().await;
    let (ns, provider) = stub_namespace(&client, "join-kill", "1h").await;
    let nats = support::NatsServer::start();
    let ingest_port = support::free_port();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("operator.yaml");
    std::fs::write(
        &config,
        format!(
            "namespaces: [{ns}]\nevents:\n  listenAddr: 127.0.0.1:{ingest_port}\n  authentication: none\n  nats:\n    \
             url: {}\n",
            nats.url()
        ),
    )
    .unwrap();
    let rcs: Api<RunConfiguration> = Api::namespaced(client.clone(), &ns);
    let post = PostParams::default();
    for name in ["a", "b"] {
        rcs.create(&post, &run_configuration(name, &provider, Triggers::default())).await.unwrap();
    }
    rcs.create(&post, &run_configuration("joined", &provider, joined("a && b", ""))).await.unwrap();
    let operator = support::operator::OperatorProcess::start(&config);
    settled(&rcs, "joined", &["a", "b"]).await;
    let post_event = |body: Value| async move {
        support::eventually("the completion to be acknowledged", TIMEOUT, || {
            let body = body.to_string();
            async move { (support::post_json(ingest_port, "/events", &body).await == Some(200)).then_some(()) }
        })
        .await
    };
    let a = success(&ns, "a", "a1", 1, json!({}));
    let b = success(&ns, "b", "b1", 2, json!({}));
    post_event(a.clone()).await;
    let config = operator.kill();

    let operator = support::operator::OperatorProcess::start(&config);
    for _ in 0..3 {
        post_event(b.clone()).await;
        post_event(a.clone()).await;
    }
    eventually_runs(&client, &ns, "joined", 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        support::runs_of(&client, &ns, "joined").await.len(),
        1,
        "one Run, however often and in whatever order"
    );
    let join = rcs.get("joined").await.unwrap().status.unwrap().triggers.join;
    assert!(join.dependencies.values().all(|d| d.satisfied_by.is_empty()), "{join:?}");
    drop(operator);
}

/// The documented example manifests decode as RunConfigurations and pass admission.
#[test]
fn the_example_manifests_are_valid() {
    let text =
        std::fs::read_to_string(support::repo_root().join("examples/triggers/run-configurations.yaml"))
            .unwrap();
    let documents: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    assert_eq!(documents.len(), 7);
    for document in &documents {
        let rc: RunConfiguration = serde_json::from_value(document.clone()).unwrap();
        let admission =
            kfp_operator::admission::Admission { kind: "RunConfiguration", object: document, old: None };
        assert_eq!(kfp_operator::admission::validate(admission, None), Ok(()), "{}", rc.name_any());
    }
}
