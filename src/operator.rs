//! The `run` entry point: connects to the cluster, makes sure the CRDs are served, wins the
//! leader election when it is on, and runs the eventing, the controllers and the admin server
//! until SIGINT or SIGTERM (or until leadership is lost, which ends the process with an error).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::completion::KubeResources;
use crate::completion::token_review::KubeTokenReviewer;
use crate::events::auth::Authenticator;
use crate::events::config::IngestAuthentication;
use crate::events::ingest::Ingest;
use crate::leader::LeaderElection;
use crate::server::{self, AdminState};
use crate::{completion, controller, crds, events};

const CRD_TIMEOUT: Duration = Duration::from_secs(60);
const READY_WAIT: Duration = Duration::from_secs(30);

/// Options of `kfp-operator run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Address of the admin server (`/livez`, `/readyz`, `/metrics`).
    #[arg(long, env = "KFP_ADMIN_ADDR", default_value = "127.0.0.1:8081")]
    pub admin_addr: SocketAddr,
    /// Install or update the CRDs (server-side apply) before starting.
    #[arg(long, env = "KFP_INSTALL_CRDS")]
    pub install_crds: bool,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "KFP_LOG_JSON")]
    pub log_json: bool,
    /// The operator configuration file (YAML); flags override it.
    #[arg(long, env = "KFP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Watch only this namespace (repeat for several); all namespaces when absent.
    #[arg(long = "namespace")]
    pub namespaces: Vec<String>,
    /// How many objects of one kind are reconciled at once.
    #[arg(long)]
    pub concurrency: Option<u16>,
    /// Delete completed Runs this long after completion (e.g. `10m`).
    #[arg(long, value_parser = crate::api::duration::parse)]
    pub run_completion_ttl: Option<std::time::Duration>,
    /// Elect a leader among replicas on a Lease (`leaderElection.enabled`).
    #[arg(long, env = "KFP_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Address of the run-completion ingest (`POST /events`); overrides `events.listenAddr`.
    #[arg(long, env = "KFP_EVENTS_ADDR")]
    pub events_addr: Option<SocketAddr>,
    /// Address of the webhook (`/convert`, `/validate`, HTTPS); overrides `webhook.listenAddr`.
    #[arg(long, env = "KFP_WEBHOOK_ADDR")]
    pub webhook_addr: Option<SocketAddr>,
    /// A directory with the webhook's serving certificate as `tls.crt` and `tls.key` (a mounted
    /// `kubernetes.io/tls` Secret); overrides `webhook.certFile` and `webhook.keyFile`.
    #[arg(long, env = "KFP_WEBHOOK_CERT_DIR")]
    pub webhook_cert_dir: Option<PathBuf>,
}

impl RunArgs {
    /// The configuration file, if any, with the flags applied over it, validated.
    pub fn operator_config(&self) -> Result<crate::config::OperatorConfig, crate::config::ConfigError> {
        let mut config = match &self.config {
            Some(path) => crate::config::OperatorConfig::from_file(path)?,
            None => crate::config::OperatorConfig::default(),
        };
        if !self.namespaces.is_empty() {
            config.namespaces = self.namespaces.clone();
        }
        if let Some(concurrency) = self.concurrency {
            config.concurrency = concurrency;
        }
        if self.run_completion_ttl.is_some() {
            config.run_completion_ttl = self.run_completion_ttl;
        }
        if self.leader_elect {
            config.leader_election.enabled = true;
        }
        if let Some(addr) = self.events_addr {
            config.events.listen_addr = addr;
        }
        if let Some(addr) = self.webhook_addr {
            config.webhook.listen_addr = Some(addr);
        }
        if let Some(dir) = &self.webhook_cert_dir {
            config.webhook.cert_file = Some(dir.join("tls.crt"));
            config.webhook.key_file = Some(dir.join("tls.key"));
        }
        config.validate()?;
        Ok(config)
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = args.operator_config()?;
    let RunArgs { admin_addr, install_crds, .. } = args;
    let mut kube_config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration: set KUBECONFIG or run in a cluster")?;
    // The client's own retries honour `Retry-After`, which a restarting API server sets to 10 s
    // while it comes up; the controllers and watches back off on their own, and sooner.
    kube_config.default_retry = false;
    let client = kube::Client::try_from(kube_config).context("building the Kubernetes client")?;

    let metrics = crate::metrics::Metrics::default();
    let admin = AdminState::new(metrics.registry());
    let listener = TcpListener::bind(admin_addr)
        .await
        .with_context(|| format!("binding the admin server to {admin_addr}"))?;
    tracing::info!(%admin_addr, "admin server listening");
    let leadership_lost = Arc::new(tokio::sync::Notify::new());
    let lost = leadership_lost.clone();
    let shutdown = crate::shutdown::shutdown_signal(async move {
        tokio::select! {
            () = shutdown_signal() => {},
            () = lost.notified() => {},
        }
    });
    let admin_server = tokio::spawn(
        axum::serve(listener, server::router(admin.clone()))
            .with_graceful_shutdown(shutdown.clone())
            .into_future(),
    );

    if install_crds {
        let ca = match (&config.webhook.conversion_url, &config.webhook.ca_file) {
            (Some(_), Some(file)) => Some(
                std::fs::read(file).with_context(|| format!("reading the webhook CA {}", file.display()))?,
            ),
            _ => None,
        };
        let conversion = config.webhook.conversion_url.as_deref().zip(ca.as_deref());
        crds::install(&client, CRD_TIMEOUT, conversion).await?;
        tracing::info!("CRDs installed");
    } else {
        crds::wait_established(&client, CRD_TIMEOUT).await?;
    }
    let webhook = match (&config.webhook.listen_addr, &config.webhook.cert_file, &config.webhook.key_file) {
        (Some(addr), Some(cert), Some(key)) => {
            let acceptor = server::webhook::tls_acceptor(cert, key)?;
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the admission webhook to {addr}"))?;
            tracing::info!(%addr, "webhook listening on /validate and /convert (HTTPS)");
            let router = server::webhook::router(client.clone(), config.conversion_defaults());
            Some(tokio::spawn(server::webhook::serve(listener, acceptor, router, shutdown.clone())))
        }
        _ => None,
    };
    let election = config
        .leader_election
        .enabled
        .then(|| Arc::new(LeaderElection::new(client.clone(), config.leader_election.clone(), identity())));
    if let Some(election) = &election {
        tracing::info!(identity = election.identity(), "campaigning for the leader Lease");
        tokio::select! {
            () = election.acquire() => metrics.set_leader(true),
            () = shutdown.clone() => {
                admin_server.await.context("admin server task")?.context("admin server")?;
                return Ok(());
            }
        }
    }
    if election.is_none() {
        metrics.set_leader(true);
    }
    let lost_leadership = metrics.clone();
    let keeper = election.clone().map(|election| {
        tokio::spawn(async move {
            let error = election.keep().await;
            lost_leadership.set_leader(false);
            tracing::error!(%error, "stopping: no longer the leader");
            leadership_lost.notify_one();
            error
        })
    });

    let events_config = &config.events;
    let sinks = events::sinks::build_sinks(events_config).await.context("connecting the event sinks")?;
    tracing::info!(sinks = ?sinks.all.iter().map(|s| s.name()).collect::<Vec<_>>(), "publishing run completions");
    let options = events::CloudEventOptions::new(events_config.schema_base.clone())?;
    let (stub_runs, created_runs) = tokio::sync::mpsc::unbounded_channel();
    let registry =
        controller::ProviderRegistry::new(config.provider_defaults.clone(), Some(stub_runs.clone()));
    let ctx = controller::Context::new(client.clone(), config.clone(), registry, metrics.clone());
    let resources = Arc::new(KubeResources::new(client.clone()).with_trigger_engine(ctx.clone()));
    let consumer = match (&sinks.nats, events_config.jetstream.enabled) {
        (Some(nats), true) => Some(tokio::spawn(events::consumer::consume_completions(
            nats.clone(),
            events_config.jetstream.stream.clone(),
            events_config.jetstream.subject_prefix.clone(),
            resources.clone(),
            metrics.clone(),
            shutdown.clone(),
        ))),
        _ => None,
    };
    let authenticator = match events_config.authentication {
        IngestAuthentication::ServiceAccountToken => Some(Authenticator::new(
            Arc::new(KubeTokenReviewer::new(client.clone())),
            events_config.token_audience.clone(),
        )),
        IngestAuthentication::None => {
            tracing::warn!(
                "events.authentication is none: anyone who reaches /events may report completions"
            );
            None
        }
    };
    let ingest = Ingest::new(
        resources,
        sinks.all.clone(),
        options,
        events_config.max_in_flight,
        events_config.max_body_bytes,
        metrics,
    );
    let ingest_listener = TcpListener::bind(events_config.listen_addr)
        .await
        .with_context(|| format!("binding the run-completion ingest to {}", events_config.listen_addr))?;
    tracing::info!(addr = %events_config.listen_addr, authentication = ?events_config.authentication, "run-completion ingest listening on /events");
    let ingest_server = tokio::spawn(
        axum::serve(ingest_listener, ingest.clone().router(authenticator))
            .with_graceful_shutdown(shutdown.clone())
            .into_future(),
    );

    let resync_client = client.clone();
    tokio::spawn(async move {
        match completion::stub::resync_stub_runs(&resync_client, &config, &stub_runs).await {
            Ok(0) => {}
            Ok(resumed) => {
                tracing::info!(resumed, "completing stub runs that were in flight when the operator stopped");
            }
            Err(error) => tracing::warn!(%error, "could not look for stub runs in flight before the start"),
        }
    });
    let completions =
        tokio::spawn(completion::stub::complete_stub_runs(ingest, created_runs, shutdown.clone()));
    let index = ctx.index.clone();
    admin.watch_health(ctx.watches.clone());
    let controllers = tokio::spawn(controller::run(ctx, shutdown.clone()));
    // Ready (and so sent completions) once the trigger engine knows every RunConfiguration.
    tokio::spawn(async move {
        while !index.wait_until_complete(READY_WAIT).await {
            tracing::warn!("still listing RunConfigurations; not ready yet");
        }
        admin.set_ready(true);
        tracing::info!("kfp-operator ready");
    });

    controllers.await.context("controllers task")?;
    completions.await.context("completions task")?;
    ingest_server.await.context("ingest task")?.context("ingest server")?;
    if let Some(consumer) = consumer {
        consumer.await.context("completion consumer task")??;
    }
    admin_server.await.context("admin server task")?.context("admin server")?;
    if let Some(webhook) = webhook {
        webhook.await.context("admission webhook task")??;
    }
    if let (Some(keeper), Some(election)) = (keeper, election) {
        if keeper.is_finished() {
            return Err(keeper.await.context("leader election task")?.into());
        }
        keeper.abort();
        election.release().await;
    }
    tracing::info!("kfp-operator stopped");
    Ok(())
}

/// This replica's name in the leader election: the pod (or host) name and the process id.
fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "kfp-operator".into());
    format!("{host}_{}", std::process::id())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
