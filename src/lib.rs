//! kfp-operator: keeps ML platforms in step with `pipelines.kubeflow.org` resources and turns
//! run completions into CloudEvents and dependent runs.

pub mod admission;
pub mod api;
pub mod cli;
pub mod completion;
pub mod config;
pub mod controller;
pub mod crds;
pub mod events;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod operator;
pub mod provider;
pub mod recent;
pub mod server;
pub mod shutdown;
pub mod tools;
pub mod triggers;
