//! Leader election between operator processes on a real Lease: one leads (and is ready), the
//! other waits; a SIGKILLed leader is replaced once its Lease expires; a leader stopped with
//! SIGTERM releases the Lease so its successor takes over at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kfp_operator::api::{CompletionState, NamespacedName, Pipeline, Provider, Run, RunSpec};
use kube::api::{Api, PostParams};

mod support;
use support::operator::OperatorProcess;

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get_opt("kfp-operator").await.ok()??.spec?.holder_identity
}

#[tokio::test]
async fn one_operator_leads_and_a_standby_takes_over() {
    let client = support::client().await;
    let ns = support::namespace(&client, "leader").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("operator.yaml");
    std::fs::write(
        &config,
        format!(
            "namespaces: [{ns}]\nleaderElection:\n  enabled: true\n  namespace: {ns}\n  leaseDuration: 3s\n  \
             renewDeadline: 2s\n  retryPeriod: 500ms\nevents:\n  listenAddr: 127.0.0.1:{}\n",
            support::free_port()
        ),
    )
    .unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);

    let first = OperatorProcess::start(&config);
    support::eventually("the first operator to lead and be ready", Duration::from_secs(30), || async {
        first.ready().await.then_some(())
    })
    .await;
    let first_holder = holder(&leases).await.unwrap();
    let second = OperatorProcess::start(&config);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!second.ready().await, "the standby is not ready");
    assert_eq!(holder(&leases).await.unwrap(), first_holder, "the leader keeps renewing");

    let killed = Instant::now();
    drop(first.kill());
    support::eventually("the standby to take over", Duration::from_secs(30), || async {
        second.ready().await.then_some(())
    })
    .await;
    let took = killed.elapsed();
    let lease = leases.get("kfp-operator").await.unwrap().spec.unwrap();
    assert_ne!(lease.holder_identity.as_deref(), Some(first_holder.as_str()));
    assert_eq!(lease.lease_transitions, Some(1));
    assert!(took >= Duration::from_secs(2), "the Lease was honoured until it expired ({took:?})");

    // The new leader reconciles.
    let post = PostParams::default();
    Api::<Provider>::namespaced(client.clone(), &ns)
        .create(&post, &support::fixtures::stub_provider("stub"))
        .await
        .unwrap();
    let pipeline = support::fixtures::pipeline("penguin", &NamespacedName::new(&ns, "stub"));
    Api::<Pipeline>::namespaced(client.clone(), &ns).create(&post, &pipeline).await.unwrap();
    let runs: Api<Run> = Api::namespaced(client.clone(), &ns);
    let run = Run::new(
        "after-failover",
        RunSpec {
            provider: NamespacedName::new(&ns, "stub"),
            pipeline: "penguin".parse().unwrap(),
            ..RunSpec::default()
        },
    );
    runs.create(&post, &run).await.unwrap();
    support::eventually("the run to complete under the new leader", Duration::from_secs(60), || async {
        runs.get("after-failover")
            .await
            .ok()?
            .status?
            .completion_state
            .filter(|state| *state == CompletionState::Succeeded)
    })
    .await;

    // A graceful stop releases the Lease: the next operator leads well before it would expire.
    assert_eq!(second.terminate(Duration::from_secs(15)), Some(0), "a graceful stop exits cleanly");
    assert_eq!(holder(&leases).await, None, "the Lease was released");
    let third = OperatorProcess::start(&config);
    support::eventually("the next operator to lead", Duration::from_secs(30), || async {
        third.ready().await.then_some(())
    })
    .await;
    assert_eq!(leases.get("kfp-operator").await.unwrap().spec.unwrap().lease_transitions, Some(2));
}
