//! The Provider reconciler and the registry that turns a Provider resource into a client:
//! `stub` Providers get a built-in stub; `http` Providers get a provider-service client for
//! `serviceUrl`, or for the Deployment and Service the operator runs from `serviceImage`.

use std::collections::BTreeMap;
use std::sync::Arc;

use dashmap::DashMap;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, PodSpec, PodTemplateSpec, ProjectedVolumeSource, Service,
    ServiceAccountTokenProjection, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc;

use super::state::{Plan, StatusBuilder};
use super::{Context, Error, ErrorClass, Failure};
use crate::api::conditions::SyncState;
use crate::api::{NamespacedName, Provider, ProviderType, Status};
use crate::config::ProviderDefaults;
use crate::crds::FIELD_MANAGER;
use crate::provider::ProviderApi;
use crate::provider::http::{HttpProvider, HttpProviderOptions};
use crate::provider::stub::{StubProvider, StubRun, StubSettings};

/// Provider clients by Provider resource, rebuilt when the resource's generation changes.
pub struct ProviderRegistry {
    clients: DashMap<NamespacedName, (Option<i64>, Arc<dyn ProviderApi>)>,
    stubs: DashMap<NamespacedName, Arc<StubProvider>>,
    defaults: ProviderDefaults,
    stub_runs: Option<mpsc::UnboundedSender<StubRun>>,
}

impl ProviderRegistry {
    /// `stub_runs` receives every run a stub provider creates (for completion).
    pub fn new(defaults: ProviderDefaults, stub_runs: Option<mpsc::UnboundedSender<StubRun>>) -> Self {
        Self { clients: DashMap::new(), stubs: DashMap::new(), defaults, stub_runs }
    }

    /// The built-in stub of the Provider `name`, once a call has used it (for tests and
    /// diagnostics: it records what it was sent).
    pub fn stub(&self, name: &NamespacedName) -> Option<Arc<StubProvider>> {
        self.stubs.get(name).map(|entry| entry.value().clone())
    }

    /// The client of `provider`.
    pub async fn client_for(&self, provider: &Provider) -> Result<Arc<dyn ProviderApi>, String> {
        let name = NamespacedName::new(provider.namespace().unwrap_or_default(), provider.name_any());
        let generation = provider.meta().generation;
        if let Some(entry) = self.clients.get(&name)
            && entry.0 == generation
        {
            return Ok(entry.1.clone());
        }
        let client: Arc<dyn ProviderApi> = match provider.spec.provider_type {
            ProviderType::Stub => {
                let settings = StubSettings::from_parameters(&provider.spec.parameters)
                    .map_err(|e| format!("provider {name}: {e}"))?;
                let stub = StubProvider::new(name.clone(), settings, self.stub_runs.clone());
                self.stubs.insert(name.clone(), stub.clone());
                stub
            }
            ProviderType::Http => {
                let url = service_url(provider, &self.defaults);
                Arc::new(
                    HttpProvider::new(&url, HttpProviderOptions::default())
                        .map_err(|e| format!("provider {name}: {e}"))?,
                )
            }
        };
        self.clients.insert(name, (generation, client.clone()));
        Ok(client)
    }
}

/// The name of the Deployment and Service the operator runs for a Provider.
pub fn service_name(provider: &Provider) -> String {
    format!("provider-{}", provider.name_any())
}

fn service_url(provider: &Provider, defaults: &ProviderDefaults) -> String {
    if provider.spec.service_url.is_empty() {
        format!(
            "http://{}.{}.svc:{}",
            service_name(provider),
            provider.namespace().unwrap_or_default(),
            defaults.service_port
        )
    } else {
        provider.spec.service_url.clone()
    }
}

fn json_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The variable that tells a provider service where its `/events` token is.
pub const EVENTS_TOKEN_FILE_ENV: &str = "KFP_EVENTS_TOKEN_FILE";
/// Where the provider service's `/events` token is mounted.
pub const EVENTS_TOKEN_DIR: &str = "/var/run/secrets/kfp-operator/events";
const EVENTS_TOKEN_VOLUME: &str = "kfp-events-token";
/// The token's lifetime; the kubelet renews it at 80 % of it.
const EVENTS_TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// The projected ServiceAccount token, for `audience`, that a provider service sends to
/// `/events`, and its mount.
fn events_token(audience: &str) -> (Volume, VolumeMount) {
    let projection = ServiceAccountTokenProjection {
        audience: Some(audience.to_owned()),
        expiration_seconds: Some(EVENTS_TOKEN_EXPIRATION_SECONDS),
        path: "token".into(),
    };
    let volume = Volume {
        name: EVENTS_TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(projection),
                ..VolumeProjection::default()
            }]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mount = VolumeMount {
        name: EVENTS_TOKEN_VOLUME.into(),
        mount_path: EVENTS_TOKEN_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    (volume, mount)
}

/// The provider service Deployment of an `http` Provider with a `serviceImage`, with the
/// ServiceAccount token for `/events` issued for `audience`. Deterministic.
pub fn desired_deployment(provider: &Provider, defaults: &ProviderDefaults, audience: &str) -> Deployment {
    let name = service_name(provider);
    let mut labels = defaults.labels.clone();
    labels.insert("app".into(), name.clone());
    let provider_name = NamespacedName::new(provider.namespace().unwrap_or_default(), provider.name_any());
    let mut env: BTreeMap<String, EnvVar> = BTreeMap::new();
    let mut put = |name: String, value: String| {
        env.insert(name.clone(), EnvVar { name, value: Some(value), ..EnvVar::default() });
    };
    put("PROVIDERNAME".into(), provider_name.to_string());
    put("PIPELINEROOTSTORAGE".into(), provider.spec.pipeline_root_storage.clone());
    put(EVENTS_TOKEN_FILE_ENV.into(), format!("{EVENTS_TOKEN_DIR}/token"));
    for (key, value) in &provider.spec.parameters {
        put(format!("PARAMETERS_{}", key.to_uppercase()), json_text(value));
    }
    for entry in &provider.spec.pod_template_env {
        env.insert(entry.name.clone(), entry.clone());
    }
    let (token_volume, token_mount) = events_token(audience);
    let mut volumes: BTreeMap<String, _> = BTreeMap::from([(token_volume.name.clone(), token_volume)]);
    for volume in &provider.spec.pod_template_volumes {
        volumes.insert(volume.name.clone(), volume.clone());
    }
    let mut mounts: BTreeMap<String, _> = BTreeMap::from([(token_mount.mount_path.clone(), token_mount)]);
    for mount in &provider.spec.pod_template_volume_mounts {
        mounts.insert(mount.mount_path.clone(), mount.clone());
    }
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: provider.namespace(),
            labels: Some(labels.clone()),
            owner_references: provider.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(defaults.replicas),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_owned(), name.clone())])),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    service_account_name: Some(provider.spec.service_account.clone()),
                    containers: vec![Container {
                        name: defaults.service_container_name.clone(),
                        image: Some(provider.spec.service_image.clone()),
                        env: Some(env.into_values().collect()),
                        ports: Some(vec![
                            ContainerPort {
                                name: Some("http".into()),
                                container_port: defaults.service_port,
                                ..ContainerPort::default()
                            },
                            ContainerPort {
                                name: Some("metrics".into()),
                                container_port: defaults.metrics_port,
                                ..ContainerPort::default()
                            },
                        ]),
                        volume_mounts: Some(mounts.into_values().collect()),
                        ..Container::default()
                    }],
                    volumes: Some(volumes.into_values().collect()),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The provider service Service. Deterministic.
pub fn desired_service(provider: &Provider, defaults: &ProviderDefaults) -> Service {
    let name = service_name(provider);
    let mut labels = defaults.labels.clone();
    labels.insert("app".into(), name.clone());
    let port = |port_name: &str, port: i32| ServicePort {
        name: Some(port_name.into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    Service {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: provider.namespace(),
            labels: Some(labels),
            owner_references: provider.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(BTreeMap::from([("app".to_owned(), name)])),
            ports: Some(vec![port("http", defaults.service_port), port("metrics", defaults.metrics_port)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

async fn apply_workload(ctx: &Context, provider: &Provider) -> Result<(), String> {
    let namespace = provider.namespace().unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let defaults = &ctx.config.provider_defaults;
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let deployment = desired_deployment(provider, defaults, &ctx.config.events.token_audience);
    deployments
        .patch(&service_name(provider), &params, &Patch::Apply(&deployment))
        .await
        .map_err(|e| format!("could not apply the provider service deployment: {e}"))?;
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    let service = desired_service(provider, defaults);
    services
        .patch(&service_name(provider), &params, &Patch::Apply(&service))
        .await
        .map_err(|e| format!("could not apply the provider service: {e}"))?;
    Ok(())
}

pub async fn reconcile(provider: Arc<Provider>, ctx: Arc<Context>) -> Result<Action, Error> {
    let provider = provider.as_ref();
    if provider.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let previous = provider.status.clone().unwrap_or_default();
    let builder = StatusBuilder {
        previous: &previous,
        generation: provider.meta().generation,
        now: Time(jiff::Timestamp::now()),
    };
    let runs_workload =
        provider.spec.provider_type == ProviderType::Http && provider.spec.service_url.is_empty();
    let mut problem = ctx.providers.client_for(provider).await.err();
    if problem.is_none() && runs_workload {
        problem = apply_workload(&ctx, provider).await.err();
    }
    let status: Status = match &problem {
        None => builder.build(SyncState::Succeeded, "", "", None),
        Some(message) => builder.after(
            &Plan::Refuse(Failure::new(ErrorClass::Transient, "ProviderServiceFailed", message.clone())),
            &super::state::Desired { version: String::new(), provider: NamespacedName::default() },
            None,
        ),
    };
    if status != previous {
        ctx.patch_status(provider, &status, &[]).await?;
        let state = SyncState::of(&status);
        let note = problem.clone().map_or_else(|| state.to_string(), |m| format!("{state}: {m}"));
        ctx.event(provider, problem.is_some(), state.event_reason(), note).await;
    }
    if let Some(message) = problem {
        return Err(Error::Recorded(Failure::new(ErrorClass::Transient, "ProviderServiceFailed", message)));
    }
    ctx.succeeded(provider);
    Ok(Action::requeue(ctx.config.resync_period))
}

/// Runs the Provider controller over the objects of `feed`, woken also by their provider
/// service Deployments and Services.
pub async fn run_controller(
    ctx: Arc<Context>,
    feed: super::Feed<Provider>,
    shutdown: crate::shutdown::Shutdown,
) {
    let services = super::watcher_config().labels("app");
    let [deployments] = super::plain_feeds::<Deployment, 1>(&ctx, services.clone(), "provider services");
    let [services] = super::plain_feeds::<Service, 1>(&ctx, services, "provider services");
    let queue = ctx.metrics.queue(&super::controller_name::<Provider>());
    let controller =
        super::lean_controller(&ctx, feed, &queue, |provider: &Provider| super::lifecycle_hash(provider, ()))
            .owns_stream(super::waking_owners::<Provider, _>(&queue, super::changed(deployments)))
            .owns_stream(super::waking_owners::<Provider, _>(&queue, super::changed(services)))
            .graceful_shutdown_on(shutdown);
    let reconciler = super::instrumented(queue.clone(), reconcile);
    super::drain(controller.run(reconciler, super::error_policy, ctx.clone()), queue).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ProviderSpec;
    use serde_json::json;

    fn provider() -> Provider {
        let mut provider = Provider::new(
            "vai",
            ProviderSpec {
                service_image: "vai-provider:1".into(),
                service_account: "kfp-vai".into(),
                pipeline_root_storage: "gs://root".into(),
                parameters: BTreeMap::from([
                    ("vaiProject".to_owned(), json!("p")),
                    ("maxRuns".to_owned(), json!(3)),
                ]),
                pod_template_env: vec![EnvVar {
                    name: "PIPELINEROOTSTORAGE".into(),
                    value: Some("gs://override".into()),
                    ..EnvVar::default()
                }],
                ..ProviderSpec::default()
            },
        );
        provider.metadata.namespace = Some("kfp".into());
        provider.metadata.uid = Some("uid-1".into());
        provider
    }

    #[test]
    fn the_deployment_carries_the_provider_settings_deterministically() {
        let defaults = ProviderDefaults::default();
        let deployment = desired_deployment(&provider(), &defaults, "kfp-operator-events");
        assert_eq!(deployment, desired_deployment(&provider(), &defaults, "kfp-operator-events"));
        let pod = deployment.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("kfp-vai"));
        let env: Vec<(String, String)> = pod.containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect();
        assert_eq!(
            env,
            vec![
                ("KFP_EVENTS_TOKEN_FILE".into(), "/var/run/secrets/kfp-operator/events/token".into()),
                ("PARAMETERS_MAXRUNS".into(), "3".into()),
                ("PARAMETERS_VAIPROJECT".into(), "p".into()),
                ("PIPELINEROOTSTORAGE".into(), "gs://override".into()),
                ("PROVIDERNAME".into(), "kfp/vai".into()),
            ]
        );
    }

    #[test]
    fn the_service_gets_a_token_for_events_of_its_own_service_account() {
        let deployment = desired_deployment(&provider(), &ProviderDefaults::default(), "events-audience");
        let pod = deployment.spec.unwrap().template.spec.unwrap();
        let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == "kfp-events-token").unwrap();
        let sources = volume.projected.unwrap().sources.unwrap();
        let token = sources[0].service_account_token.clone().unwrap();
        assert_eq!(
            (token.audience.as_deref(), token.expiration_seconds, token.path.as_str()),
            (Some("events-audience"), Some(3600), "token")
        );
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        assert!(
            mounts.iter().any(|m| m.name == "kfp-events-token"
                && m.mount_path == EVENTS_TOKEN_DIR
                && m.read_only == Some(true)),
            "{mounts:?}"
        );
    }

    #[test]
    fn the_service_exposes_http_and_metrics() {
        let service = desired_service(&provider(), &ProviderDefaults::default());
        assert_eq!(service.metadata.name.as_deref(), Some("provider-vai"));
        let ports: Vec<i32> = service.spec.unwrap().ports.unwrap().iter().map(|p| p.port).collect();
        assert_eq!(ports, vec![8080, 8081]);
        assert_eq!(
            service_url(&provider(), &ProviderDefaults::default()),
            "http://provider-vai.kfp.svc:8080"
        );
    }
}
