//! kfp-operator: keeps ML platforms in step with `pipelines.kubeflow.org` resources and turns
//! run completions into CloudEvents and dependent runs.

pub mod api;
pub mod cli;
pub mod crds;
pub mod operator;
pub mod server;
