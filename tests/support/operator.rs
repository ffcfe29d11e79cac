//! The operator's controllers, run in the calling test's runtime against the test apiserver.

use std::sync::Arc;
use std::time::Duration;

use kfp_operator::config::OperatorConfig;
use kfp_operator::controller::{self, Context, ProviderRegistry};

/// The operator's controllers and stub completions, in this test's runtime, watching one namespace.
pub struct Operator {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
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
        let (sender, receiver) = tokio::sync::oneshot::channel::<()>();
        let shutdown = controller::shutdown_signal(async move {
            let _ = receiver.await;
        });
        let ingest = kfp_operator::events::ingest::Ingest::new(
            Arc::new(kfp_operator::events::ingest::KubeResources { client: client.clone() }),
            vec![],
            Default::default(),
            16,
            1 << 20,
        );
        let completions =
            kfp_operator::completion::complete_stub_runs(ingest, created_runs, shutdown.clone());
        let task = tokio::spawn(async move {
            tokio::join!(controller::run(ctx, shutdown), completions);
        });
        Self { shutdown: Some(sender), task: Some(task) }
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
