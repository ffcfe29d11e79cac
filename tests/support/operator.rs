//! The operator's controllers, run in the calling test's runtime against the test apiserver.

use std::sync::Arc;
use std::time::Duration;

use kfp_operator::completion::KubeResources;
use kfp_operator::config::OperatorConfig;
use kfp_operator::controller::{self, Context, ProviderRegistry};
use kfp_operator::events::ingest::Ingest;

/// The operator's controllers and stub completions, in this test's runtime, watching one namespace.
pub struct Operator {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    ctx: Arc<Context>,
    ingest: Arc<Ingest>,
}

impl Operator {
    pub fn start(
        client: &kube::Client,
        namespace: &str,
        customise: impl FnOnce(&mut OperatorConfig),
    ) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut config = OperatorConfig {
            namespaces: vec![namespace.to_owned()],
            retry_initial_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(2),
            ..OperatorConfig::default()
        };
        customise(&mut config);
        let (stub_runs, created_runs) = tokio::sync::mpsc::unbounded_channel();
        let registry = ProviderRegistry::new(config.provider_defaults.clone(), Some(stub_runs));
        let ctx = Context::new(client.clone(), config, registry, Default::default());
        let operator_ctx = ctx.clone();
        let (sender, receiver) = tokio::sync::oneshot::channel::<()>();
        let shutdown = kfp_operator::shutdown::shutdown_signal(async move {
            let _ = receiver.await;
        });
        let ingest = Ingest::new(
            Arc::new(KubeResources::new(client.clone()).with_trigger_engine(ctx.clone())),
            vec![],
            Default::default(),
            16,
            1 << 20,
            ctx.metrics.clone(),
        );
        let completions = kfp_operator::completion::stub::complete_stub_runs(
            ingest.clone(),
            created_runs,
            shutdown.clone(),
        );
        let task = tokio::spawn(async move {
            tokio::join!(controller::run(ctx, shutdown), completions);
        });
        Self { shutdown: Some(sender), task: Some(task), ctx: operator_ctx, ingest }
    }

    /// The run-completion ingest, with the trigger engine, as `POST /events` would use it.
    pub fn ingest(&self) -> Arc<Ingest> {
        self.ingest.clone()
    }

    /// The controllers' shared context (its RunConfiguration index included).
    pub fn context(&self) -> Arc<Context> {
        self.ctx.clone()
    }

    pub async fn stop(mut self) {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The operator binary, run with a configuration file against the test control plane; it can be
/// killed with SIGKILL and started again with the same configuration.
pub struct OperatorProcess {
    child: std::process::Child,
    config: std::path::PathBuf,
    pub admin_port: u16,
}

impl OperatorProcess {
    pub fn start(config: &std::path::Path) -> Self {
        Self::spawn(config, &super::control_plane().kubeconfig, super::free_port(), None, &[])
    }

    /// Logging JSON lines (`--log-json`) to `log`.
    pub fn start_logging_json(config: &std::path::Path, log: &std::path::Path) -> Self {
        Self::spawn(
            config,
            &super::control_plane().kubeconfig,
            super::free_port(),
            Some(log),
            &["--log-json"],
        )
    }

    /// With its own kubeconfig and admin port, its output written to `log`.
    pub fn start_with(
        config: &std::path::Path,
        kubeconfig: &std::path::Path,
        admin_port: u16,
        log: &std::path::Path,
    ) -> Self {
        Self::spawn(config, kubeconfig, admin_port, Some(log), &[])
    }

    fn spawn(
        config: &std::path::Path,
        kubeconfig: &std::path::Path,
        admin_port: u16,
        log: Option<&std::path::Path>,
        flags: &[&str],
    ) -> Self {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kfp-operator"));
        command
            .args(["run", "--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .args(flags)
            .arg("--config")
            .arg(config)
            .env("KUBECONFIG", kubeconfig)
            .stdin(std::process::Stdio::null());
        if let Some(log) = log {
            let file = std::fs::File::create(log).expect("creating the operator log");
            command.stdout(file.try_clone().expect("sharing the operator log")).stderr(file);
        }
        let child = command.spawn().expect("the operator binary starts");
        Self { child, config: config.to_owned(), admin_port }
    }

    /// SIGTERM, then waits (at most `timeout`) for the process to exit; returns its exit code.
    pub fn terminate(mut self, timeout: Duration) -> Option<i32> {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The samples `/metrics` answers now.
    pub async fn metrics(&self) -> Option<super::openmetrics::Samples> {
        match super::http_get(self.admin_port, "/metrics").await {
            Some((200, text)) => Some(super::openmetrics::Samples::parse(&text)),
            _ => None,
        }
    }

    /// Whether `/readyz` answers 200.
    pub async fn ready(&self) -> bool {
        matches!(super::http_get(self.admin_port, "/readyz").await, Some((200, _)))
    }

    /// SIGKILL: nothing is drained or flushed.
    pub fn kill(mut self) -> std::path::PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.config.clone()
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
