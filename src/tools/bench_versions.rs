//! `kfp-operator bench versions`: 1,000 RunConfigurations listed as v1alpha5, converted by the
//! operator's conversion webhook (served in this process over HTTPS on 127.0.0.1, called by the
//! API server), against the same list as the stored v1beta1 in the same run; the ratio of the
//! medians and the webhook's time per converted object. JSON lines on stdout.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, PostParams,
};
use serde_json::json;

use crate::api::conversion::Defaults;
use crate::api::{NamespacedName, RunConfiguration, RunConfigurationSpec, RunSpec};

/// Options of `kfp-operator bench versions`.
#[derive(Debug, Clone, clap::Args)]
pub struct VersionsBenchArgs {
    /// How many RunConfigurations to list.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// How many times each list is timed.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// The webhook's serving certificate (PEM) for 127.0.0.1.
    #[arg(long)]
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    pub key_file: PathBuf,
    /// The CA (PEM) that signed it, for the CRDs' conversion webhook.
    #[arg(long)]
    pub ca_file: PathBuf,
}

const NAMESPACE: &str = "bench-versions";

/// Per review answered: how long the webhook took and how many objects it converted.
type Reviews = Arc<Mutex<Vec<(Duration, usize)>>>;

async fn timed(reviews: Reviews, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let objects = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|review| {
            review.pointer("/response/convertedObjects").and_then(|o| o.as_array()).map(Vec::len)
        })
        .unwrap_or(0);
    reviews.lock().unwrap_or_else(PoisonError::into_inner).push((elapsed, objects));
    Response::from_parts(parts, Body::from(bytes))
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

fn micros(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000_000.0).round() / 100.0
}

/// Runs the benchmark against the cluster of the current kubeconfig.
pub async fn run(args: VersionsBenchArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://127.0.0.1:{}/convert", listener.local_addr()?.port());
    let reviews: Reviews = Arc::default();
    let recorded = reviews.clone();
    let router = crate::server::webhook::router(client.clone(), Defaults::default())
        .layer(axum::middleware::from_fn(move |request, next| timed(recorded.clone(), request, next)));
    let acceptor = crate::server::webhook::tls_acceptor(&args.cert_file, &args.key_file)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = crate::shutdown::shutdown_signal(async move {
        let _ = stopped.await;
    });
    let server = tokio::spawn(crate::server::webhook::serve(listener, acceptor, router, shutdown));
    let ca = std::fs::read(&args.ca_file)?;
    crate::crds::install(&client, Duration::from_secs(60), Some((&url, &ca))).await?;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta { name: Some(NAMESPACE.into()), ..ObjectMeta::default() },
        ..Namespace::default()
    };
    if namespaces.get_opt(NAMESPACE).await?.is_none() {
        namespaces.create(&PostParams::default(), &namespace).await?;
    }
    let hub: Api<RunConfiguration> = Api::namespaced(client.clone(), NAMESPACE);
    let spec = RunConfigurationSpec {
        run: RunSpec {
            provider: NamespacedName::new(NAMESPACE, "stub"),
            pipeline: "penguin".parse()?,
            ..RunSpec::default()
        },
        ..RunConfigurationSpec::default()
    };
    let existing = hub.list(&ListParams::default()).await?.items.len();
    let created: Vec<Result<_, kube::Error>> = futures::stream::iter(existing..args.count)
        .map(|i| {
            let (hub, rc) = (hub.clone(), RunConfiguration::new(&format!("rc-{i:05}"), spec.clone()));
            async move { hub.create(&PostParams::default(), &rc).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    created.into_iter().collect::<Result<Vec<_>, _>>()?;

    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("pipelines.kubeflow.org", "v1alpha5", "RunConfiguration"),
        "runconfigurations",
    );
    let spoke: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &resource);
    let (mut hub_times, mut spoke_times) = (Vec::new(), Vec::new());
    reviews.lock().unwrap_or_else(PoisonError::into_inner).clear();
    for _ in 0..args.rounds {
        let started = Instant::now();
        let listed = hub.list(&ListParams::default()).await?.items.len();
        hub_times.push(started.elapsed());
        anyhow::ensure!(
            listed == args.count,
            "listed {listed} v1beta1 RunConfigurations, not {}",
            args.count
        );
        let started = Instant::now();
        let listed = spoke.list(&ListParams::default()).await?.items.len();
        spoke_times.push(started.elapsed());
        anyhow::ensure!(
            listed == args.count,
            "listed {listed} v1alpha5 RunConfigurations, not {}",
            args.count
        );
    }
    let reviews = std::mem::take(&mut *reviews.lock().unwrap_or_else(PoisonError::into_inner));
    let objects: usize = reviews.iter().map(|(_, n)| n).sum();
    let mut per_object: Vec<Duration> =
        reviews.iter().filter(|(_, n)| *n > 0).map(|(d, n)| *d / *n as u32).collect();
    per_object.sort();
    let p99 = per_object
        .get(((per_object.len() as f64 - 1.0) * 0.99).round() as usize)
        .copied()
        .unwrap_or_default();
    let (hub_median, spoke_median) = (median(hub_times), median(spoke_times));
    let result = json!({
        "benchmark": "served-versions-list",
        "run_configurations": args.count,
        "rounds": args.rounds,
        "list_v1beta1_ms_median": millis(hub_median),
        "list_v1alpha5_ms_median": millis(spoke_median),
        "ratio": (spoke_median.as_secs_f64() / hub_median.as_secs_f64().max(1e-9) * 100.0).round() / 100.0,
        "webhook_reviews": reviews.len(),
        "webhook_objects": objects,
        "webhook_us_per_object_p99": micros(p99),
    });
    writeln!(out, "{result}")?;
    namespaces.delete(NAMESPACE, &DeleteParams::default()).await?;
    let _ = stop.send(());
    server.await??;
    Ok(())
}
