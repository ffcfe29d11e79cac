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
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

impl Default for Installation {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.into(),
            name: "kfp-operator".into(),
            image: format!("ghcr.io/kfp-operator/kfp-operator:{}", env!("CARGO_PKG_VERSION")),
            image_pull_policy: "IfNotPresent".into(),
            config: DEFAULT_CONFIG.into(),
            webhook_tls_secret: None,
        }
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

    fn labels(&self) -> BTreeMap<String, String> {
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
        let mut args: Vec<String> = vec![
            "run".into(),
            "--log-json".into(),
            "--leader-elect".into(),
            "--admin-addr".into(),
            format!("0.0.0.0:{ADMIN_PORT}"),
            "--events-addr".into(),
            format!("0.0.0.0:{EVENTS_PORT}"),
            "--config".into(),
            format!("{CONFIG_DIR}/operator.yaml"),
        ];
        let mut ports = vec![port("admin", ADMIN_PORT), port("events", EVENTS_PORT)];
        let mut mounts = vec![VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }];
        let mut volumes = vec![Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: self.name.clone(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        }];
        if let Some(secret) = &self.webhook_tls_secret {
            args.extend([
                "--webhook-addr".into(),
                format!("0.0.0.0:{WEBHOOK_PORT}"),
                "--webhook-cert-dir".into(),
                WEBHOOK_CERT_DIR.into(),
            ]);
            ports.push(port("webhook", WEBHOOK_PORT));
            mounts.push(VolumeMount {
                name: "webhook-tls".into(),
                mount_path: WEBHOOK_CERT_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
            volumes.push(Volume {
                name: "webhook-tls".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.clone()),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            });
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
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_owned(), Quantity("100m".into())),
                    ("memory".to_owned(), Quantity("64Mi".into())),
                ])),
                limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("512Mi".into()))])),
                ..ResourceRequirements::default()
            }),
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
                replicas: Some(1),
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

/// The Helm chart's placeholders: each stands for a template expression in the generated
/// templates (sentinel, expression).
pub const CHART_PLACEHOLDERS: [(&str, &str); 5] = [
    ("__KFP_NAMESPACE__", "{{ .Release.Namespace }}"),
    ("__KFP_RELEASE__", "{{ .Release.Name }}"),
    (
        "__KFP_IMAGE__",
        "\"{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}\"",
    ),
    ("__KFP_PULL_POLICY__", "{{ .Values.image.pullPolicy }}"),
    ("__KFP_CONFIG__", "{{ toYaml .Values.config | toJson }}"),
];

/// The placeholders of the chart's CRD templates: the conversion webhook's CA bundle and the
/// annotation by which cert-manager injects one (sentinel, expression).
pub const CHART_CRD_PLACEHOLDERS: [(&str, &str); 2] = [
    ("__KFP_CA_BUNDLE__", "{{ .Values.conversion.caBundle | quote }}"),
    (
        "__KFP_CRD_ANNOTATIONS__",
        "{{ if .Values.conversion.injectCaFrom }}{{ dict \"cert-manager.io/inject-ca-from\" \
         .Values.conversion.injectCaFrom | toJson }}{{ else if and .Values.webhook.enabled \
         .Values.webhook.certManager }}{{ dict \"cert-manager.io/inject-ca-from\" (printf \"%s/%s-webhook\" \
         .Release.Namespace .Release.Name) | toJson }}{{ else }}{}{{ end }}",
    ),
];

/// The chart's webhook Secret: `webhook.tlsSecret`, else the one cert-manager issues.
pub const CHART_WEBHOOK_SECRET: (&str, &str) = (
    "__KFP_WEBHOOK_SECRET__",
    "{{ .Values.webhook.tlsSecret | default (printf \"%s-webhook-tls\" .Release.Name) }}",
);

/// The condition under which the chart serves the webhook.
const CHART_WEBHOOK_ENABLED: &str = ".Values.webhook.enabled";

/// The CRDs as the chart's template: their conversion webhook is the release's Service, trusting
/// the CA of the `conversion` values, or cert-manager's when it issues the certificate.
pub fn chart_crds() -> anyhow::Result<String> {
    let mut out = String::new();
    for crd in crate::api::crd::all() {
        let mut crd = serde_json::to_value(&crd)?;
        crd["metadata"]["annotations"] = CHART_CRD_PLACEHOLDERS[1].0.into();
        let client = crd
            .pointer_mut("/spec/conversion/webhook/clientConfig")
            .ok_or_else(|| anyhow::anyhow!("a CRD without a conversion webhook"))?;
        client["service"]["namespace"] = CHART_PLACEHOLDERS[0].0.into();
        client["service"]["name"] = CHART_PLACEHOLDERS[1].0.into();
        client["caBundle"] = CHART_CRD_PLACEHOLDERS[0].0.into();
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    for (sentinel, expression) in CHART_PLACEHOLDERS.iter().chain(&CHART_CRD_PLACEHOLDERS) {
        out = out.replace(sentinel, expression);
    }
    Ok(out)
}

/// `with` as a template of `without`: the lines `with` adds are kept only under `condition`.
/// Fails when `with` changes or removes a line of `without`, which a condition cannot express.
fn conditional_lines(without: &str, with: &str, condition: &str) -> anyhow::Result<String> {
    let (old, new): (Vec<&str>, Vec<&str>) = (without.lines().collect(), with.lines().collect());
    // common[i][j]: the longest common subsequence of old[i..] and new[j..].
    let mut common = vec![vec![0_usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            common[i][j] = if old[i] == new[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    if common[0][0] != old.len() {
        anyhow::bail!("the conditional part changes lines instead of adding them");
    }
    let (mut i, mut out, mut open) = (0, String::new(), false);
    for (j, line) in new.iter().enumerate() {
        let kept = i < old.len() && old[i] == *line && common[i][j] == common[i + 1][j + 1] + 1;
        if kept == open {
            if kept {
                out.push_str("{{- end }}\n");
            } else {
                out.push_str(&format!("{{{{- if {condition} }}}}\n"));
            }
            open = !kept;
        }
        if kept {
            i += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if open {
        out.push_str("{{- end }}\n");
    }
    Ok(out)
}

/// The chart's templates of the installation: [`Installation`] with the placeholders, the
/// webhook's parts under `webhook.enabled`.
fn chart_installation() -> anyhow::Result<String> {
    let sentinels = Installation {
        namespace: CHART_PLACEHOLDERS[0].0.into(),
        name: CHART_PLACEHOLDERS[1].0.into(),
        image: CHART_PLACEHOLDERS[2].0.into(),
        image_pull_policy: CHART_PLACEHOLDERS[3].0.into(),
        config: CHART_PLACEHOLDERS[4].0.into(),
        webhook_tls_secret: None,
    };
    let serving =
        Installation { webhook_tls_secret: Some(CHART_WEBHOOK_SECRET.0.into()), ..sentinels.clone() };
    let mut templates =
        conditional_lines(&sentinels.to_yaml(false)?, &serving.to_yaml(false)?, CHART_WEBHOOK_ENABLED)?;
    for (sentinel, expression) in CHART_PLACEHOLDERS.iter().chain([&CHART_WEBHOOK_SECRET]) {
        templates = templates.replace(sentinel, expression);
    }
    Ok(templates)
}

/// The chart's cert-manager objects for the webhook: a self-signed Issuer and the serving
/// Certificate for the release's Service, whose CA the CRDs' annotation asks to inject.
fn chart_webhook_certificate() -> anyhow::Result<String> {
    let (namespace, release) = (CHART_PLACEHOLDERS[0].0, CHART_PLACEHOLDERS[1].0);
    let metadata = serde_json::json!({"name": format!("{release}-webhook"), "namespace": namespace});
    let issuer = serde_json::json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "Issuer",
        "metadata": metadata,
        "spec": {"selfSigned": {}},
    });
    let certificate = serde_json::json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": metadata,
        "spec": {
            "secretName": CHART_WEBHOOK_SECRET.0,
            "dnsNames": [
                format!("{release}.{namespace}.svc"),
                format!("{release}.{namespace}.svc.cluster.local"),
            ],
            "issuerRef": {"name": format!("{release}-webhook"), "kind": "Issuer"},
        },
    });
    let mut out = format!(
        "{{{{- if and {CHART_WEBHOOK_ENABLED} .Values.webhook.certManager }}}}\n---\n{}---\n{}{{{{- end }}}}\n",
        serde_saphyr::to_string(&issuer)?,
        serde_saphyr::to_string(&certificate)?
    );
    for (sentinel, expression) in CHART_PLACEHOLDERS.iter().chain([&CHART_WEBHOOK_SECRET]) {
        out = out.replace(sentinel, expression);
    }
    Ok(out)
}

/// The chart's `values.yaml`: the image, the operator configuration and the webhook.
pub const CHART_VALUES: &str = "# The operator image; the tag defaults to the chart's appVersion.
image:
  repository: ghcr.io/kfp-operator/kfp-operator
  tag: \"\"
  pullPolicy: IfNotPresent

# The operator configuration (see the README's Configuration section); every setting is optional.
# The listen addresses are set by the chart.
config:
  namespaces: []
  # POST /events takes completions only from the reporting Provider's ServiceAccount (a
  # TokenReview of its bearer token); `none` lets anyone who reaches the Service report.
  events:
    authentication: serviceAccountToken
    tokenAudience: kfp-operator-events

# The webhook (HTTPS on port 9443 of the release's Service): the CRDs' conversion webhook, which
# serves v1alpha5 and v1alpha6 (v1beta1 needs no conversion), and `/validate`.
webhook:
  enabled: false
  # The kubernetes.io/tls Secret with its serving certificate, for the DNS name
  # <release>.<namespace>.svc; its CA goes in conversion.caBundle. Defaults to <release>-webhook-tls.
  tlsSecret: \"\"
  # Have cert-manager issue that Secret (a self-signed Issuer and a Certificate) and inject its CA
  # into the CRDs; needs cert-manager in the cluster.
  certManager: false

# The CA the CRDs' conversion webhook trusts: its PEM, base64-encoded, or the cert-manager
# Certificate (namespace/name) whose CA cert-manager's cainjector injects into the CRDs (set by
# webhook.certManager).
conversion:
  caBundle: \"\"
  injectCaFrom: \"\"
";

const GENERATED: &str = "# Generated by `kfp-operator manifests --write-files .`; do not edit.";

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

/// The files generated from this module and the CRDs, by path relative to the repository: the
/// kustomize base `deploy/base/`, the local node's overlay `deploy/overlays/local/` and the Helm
/// chart `charts/kfp-operator/`.
pub fn generated_files() -> anyhow::Result<Vec<(String, String)>> {
    let version = env!("CARGO_PKG_VERSION");
    let mut crds = String::new();
    for crd in crate::api::crd::all() {
        crds.push_str("---\n");
        crds.push_str(&crate::api::crd::to_yaml(&crd)?);
    }
    let mut files = vec![
        (
            "deploy/base/kustomization.yaml".to_owned(),
            format!(
                "{GENERATED}\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- crds.yaml\n- kfp-operator.yaml\n"
            ),
        ),
        ("deploy/base/crds.yaml".to_owned(), format!("{GENERATED}\n{crds}")),
        (
            "deploy/base/kfp-operator.yaml".to_owned(),
            format!("{GENERATED}\n{}", Installation::default().to_yaml(true)?),
        ),
    ];
    let templates = chart_installation()?;
    files.push((
        "charts/kfp-operator/Chart.yaml".into(),
        format!(
            "apiVersion: v2\nname: kfp-operator\ndescription: Kubernetes operator for ML pipelines \
             (pipelines.kubeflow.org) with event-driven run completion\ntype: application\nversion: \
             {version}\nappVersion: \"{version}\"\n"
        ),
    ));
    files.push(("charts/kfp-operator/values.yaml".into(), CHART_VALUES.into()));
    files.push(("deploy/overlays/local/kustomization.yaml".into(), LocalOverlay::default().kustomization()?));
    files.push((
        "charts/kfp-operator/templates/kfp-operator.yaml".into(),
        format!("{GENERATED}\n{templates}"),
    ));
    files.push(("charts/kfp-operator/templates/crds.yaml".into(), format!("{GENERATED}\n{}", chart_crds()?)));
    files.push((
        "charts/kfp-operator/templates/webhook-certificate.yaml".into(),
        format!("{GENERATED}\n{}", chart_webhook_certificate()?),
    ));
    Ok(files)
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
