//! The in-cluster installation, built from typed objects: the operator's ServiceAccount, the
//! ClusterRole with exactly the permissions it uses and its binding, the configuration, the
//! Deployment `<name>-controller-manager`, the Service `<name>` of the run-completion ingest and
//! the Service `<name>-metrics` of `/metrics` (the names the product documentation uses, with
//! the default name `kfp-operator` in the namespace `kfp-operator-system`). `kfp-operator manifests` prints them;
//! the kustomize base `deploy/base/` and the Helm chart are generated from here and checked for
//! drift. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, Namespace, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Service, ServiceAccount,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

/// The port of `/metrics` on the metrics Service.
pub const METRICS_SERVICE_PORT: i32 = 8080;
/// The namespace of the default installation.
pub const DEFAULT_NAMESPACE: &str = "kfp-operator-system";
/// The port of `/livez`, `/readyz` and `/metrics` in the pod.
pub const ADMIN_PORT: i32 = 8081;
/// The port of `POST /events` in the pod.
pub const EVENTS_PORT: i32 = 8082;
/// The port of the webhook (`/convert`, `/validate`, HTTPS) in the pod and on the Service.
pub const WEBHOOK_PORT: i32 = 9443;
const CONFIG_DIR: &str = "/etc/kfp-operator";
const WEBHOOK_CERT_DIR: &str = "/etc/kfp-operator/tls";
/// The configuration of a plain installation: every setting at its default.
pub const DEFAULT_CONFIG: &str = "# Every setting is optional; see the README's Configuration section.\nnamespaces: []\n\
     # POST /events takes completions only from the reporting Provider's ServiceAccount.\n\
     events:\n  authentication: serviceAccountToken\n  tokenAudience: kfp-operator-events\n";

/// What varies between installations.
#[derive(Debug, Clone, PartialEq)]
pub struct Installation {
    /// The namespace the operator runs in.
    pub namespace: String,
    /// The name of every object (cluster-scoped ones included), and the prefix of the
    /// Deployment's (`<name>-controller-manager`) and the metrics Service's (`<name>-metrics`).
    pub name: String,
    /// The operator image.
    pub image: String,
    pub image_pull_policy: String,
    /// The operator configuration file (YAML), without the listen addresses, which are fixed.
    pub config: String,
    /// Serve the webhook on [`WEBHOOK_PORT`] with the serving certificate of this
    /// `kubernetes.io/tls` Secret; the CRDs' conversion webhook calls it.
    pub webhook_tls_secret: Option<String>,
    pub replicas: i32,
    /// Elect a leader on a Lease (`--leader-elect`); needed with more than one replica.
    pub leader_election: bool,
    /// A Secret with the sinks' credentials (NATS creds, nkey seed, TLS files), mounted at
    /// [`SINK_CREDENTIALS_DIR`] for the configuration to name its files.
    pub sink_credentials_secret: Option<String>,
    pub resources: ResourceRequirements,
}

/// Where the operator image is published; its tag is the version.
pub const IMAGE_REPOSITORY: &str = "ghcr.io/kfp-operator/kfp-operator";

/// Where the sinks' credentials Secret is mounted.
pub const SINK_CREDENTIALS_DIR: &str = "/etc/kfp-operator/credentials";

/// The operator container's default requests and limits.
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".into())),
            ("memory".to_owned(), Quantity("64Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("512Mi".into()))])),
        ..ResourceRequirements::default()
    }
}

impl Default for Installation {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.into(),
            name: "kfp-operator".into(),
            image: format!("{IMAGE_REPOSITORY}:{}", env!("CARGO_PKG_VERSION")),
            image_pull_policy: "IfNotPresent".into(),
            config: DEFAULT_CONFIG.into(),
            webhook_tls_secret: None,
            replicas: 1,
            leader_election: true,
            sink_credentials_secret: None,
            resources: default_resources(),
        }
    }
}

/// Who may talk to the operator and whom it talks to, for its NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkAccess {
    /// The namespaces of the provider services, which post completions and which the operator
    /// calls.
    pub provider_namespaces: Vec<String>,
    /// The namespaces that scrape `/metrics`.
    pub monitoring_namespaces: Vec<String>,
    /// The namespaces of the NATS servers (the sinks' buses).
    pub nats_namespaces: Vec<String>,
    pub nats_port: i32,
    /// The provider services' port (`providerDefaults.servicePort`).
    pub provider_service_port: i32,
    /// Where the API server is; Kubernetes gives pods no selector for it.
    pub api_server_cidrs: Vec<String>,
    pub api_server_ports: Vec<i32>,
}

impl NetworkAccess {
    /// The defaults of an installation in `namespace`: provider services and NATS there too,
    /// Prometheus in `monitoring`, the API server anywhere on 443 or 6443.
    pub fn defaults(namespace: &str) -> Self {
        Self {
            provider_namespaces: vec![namespace.to_owned()],
            monitoring_namespaces: vec!["monitoring".into()],
            nats_namespaces: vec![namespace.to_owned()],
            nats_port: 4222,
            provider_service_port: crate::config::ProviderDefaults::default().service_port,
            api_server_cidrs: vec!["0.0.0.0/0".into()],
            api_server_ports: vec![443, 6443],
        }
    }
}

fn read_only_mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

fn secret_volume(volume: &str, secret: &str) -> Volume {
    Volume {
        name: volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..PolicyRule::default()
    }
}

/// The permissions of the leader election, in the operator's own namespace.
pub fn leader_election_rules() -> Vec<PolicyRule> {
    vec![rule("coordination.k8s.io", &["leases"], &["get", "create", "update"])]
}

/// Every cluster-wide permission the operator uses, and no other.
pub fn policy_rules() -> Vec<PolicyRule> {
    let kinds = ["experiments", "pipelines", "providers", "runconfigurations", "runs", "runschedules"];
    let status: Vec<String> = kinds.iter().map(|k| format!("{k}/status")).collect();
    let finalizers: Vec<String> = kinds.iter().map(|k| format!("{k}/finalizers")).collect();
    let all = ["get", "list", "watch", "create", "update", "patch", "delete"];
    vec![
        rule(crate::api::GROUP, &kinds, &all),
        rule(
            crate::api::GROUP,
            &status.iter().map(String::as_str).collect::<Vec<_>>(),
            &["get", "update", "patch"],
        ),
        rule(crate::api::GROUP, &finalizers.iter().map(String::as_str).collect::<Vec<_>>(), &["update"]),
        rule("apps", &["deployments"], &all),
        rule("", &["services"], &all),
        rule("batch", &["jobs"], &["get", "list", "watch", "create", "patch", "delete"]),
        rule("", &["configmaps"], &["create"]),
        rule("", &["pods"], &["get", "list", "watch"]),
        rule("", &["pods/log"], &["get"]),
        rule("events.k8s.io", &["events"], &["create", "patch"]),
        rule("authentication.k8s.io", &["tokenreviews"], &["create"]),
        rule("apiextensions.k8s.io", &["customresourcedefinitions"], &["get", "list", "watch"]),
    ]
}

impl Installation {
    fn metadata(&self, namespaced: bool) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.name.clone()),
            namespace: namespaced.then(|| self.namespace.clone()),
            labels: Some(self.labels()),
            ..ObjectMeta::default()
        }
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "kfp-operator".to_owned()),
            ("app.kubernetes.io/instance".to_owned(), self.name.clone()),
        ])
    }

    pub fn namespace(&self) -> Namespace {
        Namespace {
            metadata: ObjectMeta { name: Some(self.namespace.clone()), ..ObjectMeta::default() },
            ..Namespace::default()
        }
    }

    pub fn service_account(&self) -> ServiceAccount {
        ServiceAccount { metadata: self.metadata(true), ..ServiceAccount::default() }
    }

    pub fn cluster_role(&self) -> ClusterRole {
        ClusterRole { metadata: self.metadata(false), rules: Some(policy_rules()), ..ClusterRole::default() }
    }

    pub fn cluster_role_binding(&self) -> ClusterRoleBinding {
        ClusterRoleBinding {
            metadata: self.metadata(false),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: self.name.clone(),
            },
            subjects: Some(vec![self.subject()]),
        }
    }

    pub fn role(&self) -> Role {
        Role { metadata: self.metadata(true), rules: Some(leader_election_rules()) }
    }

    pub fn role_binding(&self) -> RoleBinding {
        RoleBinding {
            metadata: self.metadata(true),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: self.name.clone(),
            },
            subjects: Some(vec![self.subject()]),
        }
    }

    fn subject(&self) -> Subject {
        Subject {
            kind: "ServiceAccount".into(),
            name: self.name.clone(),
            namespace: Some(self.namespace.clone()),
            ..Subject::default()
        }
    }

    pub fn config_map(&self) -> ConfigMap {
        ConfigMap {
            metadata: self.metadata(true),
            data: Some(BTreeMap::from([("operator.yaml".to_owned(), self.config.clone())])),
            ..ConfigMap::default()
        }
    }

    pub fn deployment(&self) -> Deployment {
        let probe = |path: &str| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.to_owned()),
                port: IntOrString::String("admin".into()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(10),
            ..Probe::default()
        };
        let port = |name: &str, port: i32| ContainerPort {
            name: Some(name.to_owned()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        };
        let field = |path: &str| EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        };
        let mut args: Vec<String> = vec!["run".into(), "--log-json".into()];
        if self.leader_election {
            args.push("--leader-elect".into());
        }
        args.extend([
            "--admin-addr".into(),
            format!("0.0.0.0:{ADMIN_PORT}"),
            "--events-addr".into(),
            format!("0.0.0.0:{EVENTS_PORT}"),
            "--config".into(),
            format!("{CONFIG_DIR}/operator.yaml"),
        ]);
        let mut ports = vec![port("admin", ADMIN_PORT), port("events", EVENTS_PORT)];
        let mut mounts = vec![read_only_mount("config", CONFIG_DIR)];
        let mut volumes = vec![Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: self.name.clone(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        }];
        if let Some(secret) = &self.sink_credentials_secret {
            mounts.push(read_only_mount("sink-credentials", SINK_CREDENTIALS_DIR));
            volumes.push(secret_volume("sink-credentials", secret));
        }
        if let Some(secret) = &self.webhook_tls_secret {
            args.extend([
                "--webhook-addr".into(),
                format!("0.0.0.0:{WEBHOOK_PORT}"),
                "--webhook-cert-dir".into(),
                WEBHOOK_CERT_DIR.into(),
            ]);
            ports.push(port("webhook", WEBHOOK_PORT));
            mounts.push(read_only_mount("webhook-tls", WEBHOOK_CERT_DIR));
            volumes.push(secret_volume("webhook-tls", secret));
        }
        let container = Container {
            name: "operator".into(),
            image: Some(self.image.clone()),
            image_pull_policy: Some(self.image_pull_policy.clone()),
            args: Some(args),
            env: Some(vec![
                EnvVar {
                    name: "POD_NAME".into(),
                    value_from: Some(field("metadata.name")),
                    ..EnvVar::default()
                },
                EnvVar {
                    name: "POD_NAMESPACE".into(),
                    value_from: Some(field("metadata.namespace")),
                    ..EnvVar::default()
                },
            ]),
            ports: Some(ports),
            liveness_probe: Some(probe("/livez")),
            readiness_probe: Some(probe("/readyz")),
            resources: Some(self.resources.clone()),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    ..Capabilities::default()
                }),
                ..SecurityContext::default()
            }),
            volume_mounts: Some(mounts),
            ..Container::default()
        };
        let labels = self.labels();
        Deployment {
            metadata: ObjectMeta { name: Some(self.deployment_name()), ..self.metadata(true) },
            spec: Some(DeploymentSpec {
                replicas: Some(self.replicas),
                // One operator at a time: the old one stops (releasing the leader Lease) before
                // the new one starts; the Lease guards against overlaps all the same.
                strategy: Some(DeploymentStrategy {
                    type_: Some("Recreate".into()),
                    ..DeploymentStrategy::default()
                }),
                selector: LabelSelector { match_labels: Some(labels.clone()), ..LabelSelector::default() },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta { labels: Some(labels), ..ObjectMeta::default() }),
                    spec: Some(PodSpec {
                        service_account_name: Some(self.name.clone()),
                        security_context: Some(PodSecurityContext {
                            run_as_non_root: Some(true),
                            run_as_user: Some(65_532),
                            seccomp_profile: Some(SeccompProfile {
                                type_: "RuntimeDefault".into(),
                                ..SeccompProfile::default()
                            }),
                            ..PodSecurityContext::default()
                        }),
                        containers: vec![container],
                        volumes: Some(volumes),
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            status: None,
        }
    }

    /// The Deployment's name: `<name>-controller-manager`.
    pub fn deployment_name(&self) -> String {
        format!("{}-controller-manager", self.name)
    }

    /// The metrics Service's name: `<name>-metrics`.
    pub fn metrics_service_name(&self) -> String {
        format!("{}-metrics", self.name)
    }

    fn service_port(name: &str, port: i32, target: &str) -> ServicePort {
        ServicePort {
            name: Some(name.to_owned()),
            port,
            target_port: Some(IntOrString::String(target.to_owned())),
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        }
    }

    /// The Service of `POST /events` (port `events`), for the provider services, and of the
    /// webhook (port `webhook`) when it is served.
    pub fn service(&self) -> Service {
        let mut ports = vec![Self::service_port("events", EVENTS_PORT, "events")];
        if self.webhook_tls_secret.is_some() {
            ports.push(Self::service_port("webhook", WEBHOOK_PORT, "webhook"));
        }
        Service {
            metadata: self.metadata(true),
            spec: Some(ServiceSpec {
                selector: Some(self.labels()),
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    /// The Service of `/metrics` on port 8080 (port `metrics`), for monitoring.
    pub fn metrics_service(&self) -> Service {
        Service {
            metadata: ObjectMeta { name: Some(self.metrics_service_name()), ..self.metadata(true) },
            spec: Some(ServiceSpec {
                selector: Some(self.labels()),
                ports: Some(vec![Self::service_port("metrics", METRICS_SERVICE_PORT, "admin")]),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    /// The operator's NetworkPolicy: in, only the provider services to `POST /events` and
    /// monitoring to `/metrics` (and the API server to the webhook when it is served); out, only
    /// the API server, NATS, the provider services and DNS.
    pub fn network_policy(&self, access: &NetworkAccess) -> NetworkPolicy {
        let namespaces = |names: &[String]| NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".into(),
                    operator: "In".into(),
                    values: Some(names.to_vec()),
                }]),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        };
        let tcp = |port: IntOrString| NetworkPolicyPort {
            port: Some(port),
            protocol: Some("TCP".into()),
            ..NetworkPolicyPort::default()
        };
        let named = |name: &str| tcp(IntOrString::String(name.into()));
        let numbered = |port: i32| tcp(IntOrString::Int(port));
        let mut ingress = vec![
            NetworkPolicyIngressRule {
                from: Some(vec![namespaces(&access.provider_namespaces)]),
                ports: Some(vec![named("events")]),
            },
            NetworkPolicyIngressRule {
                from: Some(vec![namespaces(&access.monitoring_namespaces)]),
                ports: Some(vec![named("admin")]),
            },
        ];
        if self.webhook_tls_secret.is_some() {
            // The API server calls the webhook from outside any pod network.
            ingress.push(NetworkPolicyIngressRule { from: None, ports: Some(vec![named("webhook")]) });
        }
        let api_server = access
            .api_server_cidrs
            .iter()
            .map(|cidr| NetworkPolicyPeer {
                ip_block: Some(IPBlock { cidr: cidr.clone(), except: None }),
                ..NetworkPolicyPeer::default()
            })
            .collect();
        let dns = NetworkPolicyPort {
            port: Some(IntOrString::Int(53)),
            protocol: Some("UDP".into()),
            ..NetworkPolicyPort::default()
        };
        let egress = vec![
            NetworkPolicyEgressRule {
                to: Some(api_server),
                ports: Some(access.api_server_ports.iter().copied().map(numbered).collect()),
            },
            NetworkPolicyEgressRule {
                to: Some(vec![namespaces(&access.nats_namespaces)]),
                ports: Some(vec![numbered(access.nats_port)]),
            },
            NetworkPolicyEgressRule {
                to: Some(vec![namespaces(&access.provider_namespaces)]),
                ports: Some(vec![numbered(access.provider_service_port)]),
            },
            NetworkPolicyEgressRule { to: None, ports: Some(vec![dns, numbered(53)]) },
        ];
        NetworkPolicy {
            metadata: self.metadata(true),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector {
                    match_labels: Some(self.labels()),
                    ..LabelSelector::default()
                }),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ingress: Some(ingress),
                egress: Some(egress),
            }),
        }
    }

    /// Every object, in apply order, as JSON values (the Namespace first when `with_namespace`).
    pub fn objects(&self, with_namespace: bool) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        let mut objects = Vec::new();
        if with_namespace {
            objects.push(serde_json::to_value(self.namespace())?);
        }
        objects.extend([
            serde_json::to_value(self.service_account())?,
            serde_json::to_value(self.cluster_role())?,
            serde_json::to_value(self.cluster_role_binding())?,
            serde_json::to_value(self.role())?,
            serde_json::to_value(self.role_binding())?,
            serde_json::to_value(self.config_map())?,
            serde_json::to_value(self.deployment())?,
            serde_json::to_value(self.service())?,
            serde_json::to_value(self.metrics_service())?,
        ]);
        Ok(objects)
    }

    /// [`Self::objects`] as one multi-document YAML stream.
    pub fn to_yaml(&self, with_namespace: bool) -> anyhow::Result<String> {
        let mut out = String::new();
        for object in self.objects(with_namespace)? {
            out.push_str("---\n");
            out.push_str(&serde_saphyr::to_string(&object)?);
        }
        Ok(out)
    }
}

/// The first line of every generated file.
pub const GENERATED: &str = "# Generated by `kfp-operator manifests --write-files .`; do not edit.";

/// The local node's installation (`deploy/overlays/local`), with the defaults of
/// `deploy/local/dev-env`; its `install-in-cluster` sets this environment's values on top.
pub struct LocalOverlay {
    pub apiserver_port: u16,
    pub admin_port: u16,
    pub events_port: u16,
    pub nats_url: String,
    pub namespaces: Vec<String>,
}

impl Default for LocalOverlay {
    fn default() -> Self {
        Self {
            apiserver_port: 16443,
            admin_port: 18081,
            events_port: 18082,
            nats_url: "nats://127.0.0.1:14222".into(),
            namespaces: vec!["ml-training".into(), "ml-evaluation".into()],
        }
    }
}

/// The image name of the local overlay; the tag is the one the environment built.
pub const LOCAL_IMAGE: &str = "localhost/kfp-operator";

impl LocalOverlay {
    /// The operator configuration: the watched namespaces and the JetStream sink.
    pub fn config(&self) -> String {
        format!(
            "namespaces: [{}]\nevents:\n  authentication: serviceAccountToken\n  nats:\n    url: {}\n  jetstream:\n    enabled: true\n",
            self.namespaces.join(", "),
            self.nats_url
        )
    }

    /// The kustomization (JSON patches on the base's Deployment and ConfigMap).
    pub fn kustomization(&self) -> anyhow::Result<String> {
        let container = "/spec/template/spec/containers/0";
        let arg_after = |flag: &str| -> anyhow::Result<usize> {
            let args = Installation::default()
                .deployment()
                .spec
                .and_then(|spec| spec.template.spec)
                .and_then(|pod| pod.containers.into_iter().next())
                .and_then(|container| container.args)
                .unwrap_or_default();
            args.iter()
                .position(|arg| arg == flag)
                .map(|index| index + 1)
                .ok_or_else(|| anyhow::anyhow!("the base Deployment has no {flag}"))
        };
        let env = |name: &str, value: String| serde_json::json!({"name": name, "value": value});
        let deployment = serde_json::json!([
            {"op": "add", "path": "/spec/template/spec/hostNetwork", "value": true},
            {"op": "replace", "path": format!("{container}/imagePullPolicy"), "value": "Never"},
            {"op": "add", "path": format!("{container}/env/-"), "value": env("KUBERNETES_SERVICE_HOST", "127.0.0.1".into())},
            {"op": "add", "path": format!("{container}/env/-"), "value": env("KUBERNETES_SERVICE_PORT", self.apiserver_port.to_string())},
            {"op": "replace", "path": format!("{container}/args/{}", arg_after("--admin-addr")?), "value": format!("127.0.0.1:{}", self.admin_port)},
            {"op": "replace", "path": format!("{container}/args/{}", arg_after("--events-addr")?), "value": format!("127.0.0.1:{}", self.events_port)},
            {"op": "replace", "path": format!("{container}/ports/0/containerPort"), "value": self.admin_port},
            {"op": "replace", "path": format!("{container}/ports/1/containerPort"), "value": self.events_port},
            {"op": "add", "path": format!("{container}/livenessProbe/httpGet/host"), "value": "127.0.0.1"},
            {"op": "add", "path": format!("{container}/readinessProbe/httpGet/host"), "value": "127.0.0.1"},
        ]);
        let config_map =
            serde_json::json!([{"op": "replace", "path": "/data/operator.yaml", "value": self.config()}]);
        let kustomization = serde_json::json!({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": ["../../base"],
            "images": [{
                "name": Installation::default().image.split(':').next().unwrap_or_default(),
                "newName": LOCAL_IMAGE,
            }],
            "patches": [
                {
                    "target": {"kind": "Deployment", "name": Installation::default().deployment_name()},
                    "patch": serde_saphyr::to_string(&deployment)?,
                },
                {
                    "target": {"kind": "ConfigMap", "name": Installation::default().name},
                    "patch": serde_saphyr::to_string(&config_map)?,
                },
            ],
        });
        Ok(format!(
            "{GENERATED}\n# The operator on the local node of `deploy/local/dev-env node-up`: the API server listens on\n\
             # 127.0.0.1 only, so the pod runs on the host network with KUBERNETES_SERVICE_HOST=127.0.0.1 and\n\
             # listens on loopback ports of its own; the image is built and imported locally\n\
             # (`deploy/local/dev-env operator-image`), never pulled. `deploy/local/dev-env install-in-cluster`\n\
             # applies it with the environment's ports, namespaces and image tag.\n{}",
            serde_saphyr::to_string(&kustomization)?
        ))
    }
}

/// `deploy/overlays/monitoring/`: the base with the ServiceMonitor, the PrometheusRule and the
/// dashboard ConfigMap, and the dashboard's JSON for importing by hand.
pub fn monitoring_overlay() -> anyhow::Result<Vec<(String, String)>> {
    let installation = Installation::default();
    let labels = serde_json::to_value(installation.labels())?;
    let objects = [
        super::monitoring::service_monitor(
            &installation.namespace,
            &installation.metrics_service_name(),
            &labels,
            &labels,
        ),
        super::monitoring::prometheus_rule(&installation.namespace, &installation.name, &labels),
        super::monitoring::dashboard_config_map(&installation.namespace, &installation.name, &labels)?,
    ];
    let mut monitoring = String::new();
    for object in objects {
        monitoring.push_str("---\n");
        monitoring.push_str(&serde_saphyr::to_string(&object)?);
    }
    Ok(vec![
        (
            "deploy/overlays/monitoring/kustomization.yaml".into(),
            format!(
                "{GENERATED}\n# The base with a ServiceMonitor and a PrometheusRule (Prometheus Operator) and the Grafana\n\
                 # dashboard as a ConfigMap for Grafana's dashboard sidecar (kfp-operator-dashboard.json imports by hand).\n\
                 apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- ../../base\n- monitoring.yaml\n"
            ),
        ),
        ("deploy/overlays/monitoring/monitoring.yaml".into(), format!("{GENERATED}\n{monitoring}")),
        (
            "deploy/overlays/monitoring/kfp-operator-dashboard.json".into(),
            format!("{}\n", serde_json::to_string_pretty(&super::monitoring::dashboard())?),
        ),
    ])
}

/// `deploy/overlays/network-policy/`: the base with the operator's NetworkPolicy, for provider
/// services and NATS in the operator's namespace and Prometheus in `monitoring`.
pub fn network_policy_overlay() -> anyhow::Result<Vec<(String, String)>> {
    let installation = Installation::default();
    let policy = installation.network_policy(&NetworkAccess::defaults(&installation.namespace));
    Ok(vec![
        (
            "deploy/overlays/network-policy/kustomization.yaml".into(),
            format!(
                "{GENERATED}\n# The base with the operator's NetworkPolicy: in, the provider services (namespace\n\
                 # kfp-operator-system) to the events port and Prometheus (namespace monitoring) to /metrics; out,\n\
                 # the API server, NATS and the provider services (kfp-operator-system) and DNS. Patch the namespace\n\
                 # lists for yours.\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- ../../base\n- network-policy.yaml\n"
            ),
        ),
        (
            "deploy/overlays/network-policy/network-policy.yaml".into(),
            format!("{GENERATED}\n---\n{}", serde_saphyr::to_string(&policy)?),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_covers_every_kind_with_its_status_and_finalizers() {
        let rules = policy_rules();
        let resources: Vec<&String> = rules.iter().flat_map(|r| r.resources.iter().flatten()).collect();
        for kind in ["runs", "runs/status", "runconfigurations/finalizers", "deployments", "events"] {
            assert!(resources.iter().any(|r| *r == kind), "{kind}");
        }
        assert!(!rules.iter().any(|r| r.verbs.iter().any(|v| v == "*")), "no wildcards");
    }

    #[test]
    fn the_objects_refer_to_each_other() {
        let installation =
            Installation { namespace: "ops".into(), name: "kfp".into(), ..Installation::default() };
        let binding = installation.cluster_role_binding();
        assert_eq!(binding.role_ref.name, "kfp");
        let subject = &binding.subjects.unwrap()[0];
        assert_eq!((subject.name.as_str(), subject.namespace.as_deref()), ("kfp", Some("ops")));
        let pod = installation.deployment().spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("kfp"));
        assert_eq!(pod.volumes.unwrap()[0].config_map.as_ref().unwrap().name, "kfp");
        let service = installation.service().spec.unwrap();
        assert_eq!(service.selector, Some(installation.labels()));
    }

    #[test]
    fn the_default_installation_has_the_documented_names() {
        let installation = Installation::default();
        assert_eq!(installation.namespace().metadata.name.as_deref(), Some("kfp-operator-system"));
        let deployment = installation.deployment();
        assert_eq!(deployment.metadata.name.as_deref(), Some("kfp-operator-controller-manager"));
        assert_eq!(deployment.metadata.namespace.as_deref(), Some("kfp-operator-system"));
        let metrics = installation.metrics_service();
        assert_eq!(metrics.metadata.name.as_deref(), Some("kfp-operator-metrics"));
        let port = &metrics.spec.unwrap().ports.unwrap()[0];
        assert_eq!((port.port, port.target_port.clone()), (8080, Some(IntOrString::String("admin".into()))));
        let ingest = installation.service();
        assert_eq!(ingest.metadata.name.as_deref(), Some("kfp-operator"));
        let ports: Vec<i32> = ingest.spec.unwrap().ports.unwrap().iter().map(|p| p.port).collect();
        assert_eq!(ports, [EVENTS_PORT], "the ingest keeps its own Service");
    }
}
