//! The command line: `run` starts the operator, `crd` prints or writes the CRDs, `manifests`
//! prints the in-cluster installation, and the `events`, `graph`, `watch` and `bench` tools;
//! and how a failure is told in one line.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::api;
use crate::operator;

/// Kubernetes operator for ML pipelines: Pipelines, Runs, RunConfigurations, RunSchedules,
/// Experiments and Providers, with event-driven run completion.
#[derive(Debug, Parser)]
#[command(name = "kfp-operator", version, about)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the operator against the cluster of the current kubeconfig (or in-cluster config).
    Run(operator::RunArgs),
    /// Follow run-completion events on NATS.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Print the RunConfiguration dependency graph with each one's last run state.
    Graph {
        /// Only this namespace (and what it depends on); all namespaces when absent.
        #[arg(long)]
        namespace: Option<String>,
        /// `mermaid`, `dot` (Graphviz) or `text` (an indented tree for the terminal).
        #[arg(long, default_value = "mermaid", value_parser = ["mermaid", "dot", "text"])]
        format: String,
    },
    /// Show the operator at work: one line per Run created and per CloudEvent published, and the
    /// dependency graph whenever every Run has completed.
    Watch(crate::tools::watch::WatchArgs),
    /// Measure the operator against the raw limits (prints JSON lines).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Print the in-cluster installation (ServiceAccount, ClusterRole and binding, configuration,
    /// Deployment, Services) as YAML; the CRDs come from `crd`.
    Manifests {
        /// The namespace to run in.
        #[arg(long, default_value = crate::tools::deploy::DEFAULT_NAMESPACE)]
        namespace: String,
        /// The operator image.
        #[arg(long)]
        image: Option<String>,
        /// The operator configuration file to put in the ConfigMap.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Leave out the Namespace object.
        #[arg(long)]
        without_namespace: bool,
        /// Instead of printing, write the kustomize base `deploy/base/` and the Helm chart under this
        /// repository root.
        #[arg(long)]
        write_files: Option<PathBuf>,
    },
    /// Print the CustomResourceDefinitions as YAML, or write one file per kind into a directory.
    Crd {
        /// Write `<group>_<plural>.yaml` files into this directory instead of printing.
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Print events as they are published (or replay the stream with --replay).
    Tail(crate::tools::tail::TailArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Completions through the ingest to JetStream vs raw JetStream publishing.
    Events(crate::tools::bench::BenchArgs),
    /// One completion fanning out to N dependants vs a plain client creating N Runs; the index at scale.
    Triggers(crate::tools::bench::TriggerBenchArgs),
    /// A Pipeline compiled by its Job until Synchronized vs the same compile pod created directly (needs a node).
    Compile(crate::tools::bench_compile::CompileBenchArgs),
    /// 1,000 RunConfigurations listed as v1alpha5 (converted by the webhook) vs as v1beta1.
    Versions(crate::tools::bench_versions::VersionsBenchArgs),
}

/// A client for the cluster of the current kubeconfig (or the in-cluster configuration).
async fn kube_client() -> anyhow::Result<kube::Client> {
    kube::Client::try_default().await.context(
        "no usable Kubernetes configuration: set KUBECONFIG to a kubeconfig file or run in a cluster",
    )
}

impl Args {
    /// Whether this runs the operator (as opposed to a one-off tool).
    pub fn is_operator(&self) -> bool {
        matches!(self.command, Command::Run(_))
    }

    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Run(args) => {
                init_tracing(args.log_json);
                operator::run(args).await
            }
            Command::Events { command: EventsCommand::Tail(args) } => {
                crate::tools::tail::tail(args, &mut std::io::stdout()).await
            }
            Command::Graph { namespace, format } => {
                let client = kube_client().await?;
                let graph = crate::tools::graph::graph_of_cluster(&client, namespace.as_deref(), &format)
                    .await
                    .map_err(|e| crate::tools::watch::cluster_error("listing RunConfigurations", e))?;
                print!("{graph}");
                Ok(())
            }
            Command::Watch(args) => {
                let client = kube_client().await?;
                crate::tools::watch::watch(client, args, &mut std::io::stdout()).await
            }
            Command::Bench { command: BenchCommand::Events(args) } => {
                crate::tools::bench::run(args, &mut std::io::stdout()).await
            }
            Command::Bench { command: BenchCommand::Compile(args) } => {
                crate::tools::bench_compile::run(args, &mut std::io::stdout()).await
            }
            Command::Bench { command: BenchCommand::Versions(args) } => {
                crate::tools::bench_versions::run(args, &mut std::io::stdout()).await
            }
            Command::Bench { command: BenchCommand::Triggers(args) } => {
                crate::tools::bench::run_triggers(args, &mut std::io::stdout()).await
            }
            Command::Crd { output_dir: None } => {
                print!("{}", api::crd::all_to_yaml()?);
                Ok(())
            }
            Command::Crd { output_dir: Some(dir) } => write_crds(&dir),
            Command::Manifests { write_files: Some(root), .. } => {
                for (path, content) in crate::tools::generated::generated_files()? {
                    let path = root.join(path);
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)
                            .with_context(|| format!("creating {}", dir.display()))?;
                    }
                    std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
                }
                Ok(())
            }
            Command::Manifests { namespace, image, config, without_namespace, write_files: None } => {
                let mut installation = crate::tools::deploy::Installation { namespace, ..Default::default() };
                if let Some(image) = image {
                    installation.image = image;
                }
                if let Some(path) = config {
                    crate::config::OperatorConfig::from_file(&path)?;
                    installation.config = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                }
                print!("{}", installation.to_yaml(!without_namespace)?);
                Ok(())
            }
        }
    }
}

fn write_crds(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for crd in api::crd::all() {
        let path = dir.join(api::crd::file_name(&crd));
        std::fs::write(&path, api::crd::to_yaml(&crd)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    if json {
        let _ =
            tracing::subscriber::set_global_default(crate::logging::json_subscriber(filter, std::io::stdout));
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
}
