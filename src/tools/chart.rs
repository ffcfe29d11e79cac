//! The Helm chart `charts/kfp-operator/`, generated from the typed installation
//! ([`super::deploy::Installation`]) and monitoring ([`super::monitoring`]). A template is the
//! typed objects rendered with sentinels where a value goes, each sentinel then replaced by its
//! template expression; an optional part is the lines it adds to the typed objects, kept under
//! its condition. `values.yaml` and `values.schema.json` both come from [`ChartValues`], whose
//! doc comments are the values' documentation. Pure.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::deploy::{IMAGE_REPOSITORY, Installation, NetworkAccess, default_resources};
use super::monitoring;

/// The chart's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ChartValues {
    /// The operator image; the tag defaults to the chart's appVersion.
    pub image: ImageValues,
    /// How many operator pods run; with more than one, one leads and the others wait (this needs
    /// leaderElection.enabled).
    #[schemars(range(min = 1))]
    pub replicas: u32,
    pub leader_election: LeaderElectionValues,
    /// The namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Whether a RunConfiguration may depend on one in another namespace: allow, deny, or grant
    /// (the depended-on one names the dependant's namespace in its
    /// pipelines.kubeflow.org/allow-dependants-from annotation).
    pub cross_namespace_policy: CrossNamespacePolicyValue,
    /// The operator's `events:` configuration: the ingest's authentication, the NATS connection
    /// and the sinks (see the README's Configuration section). Files of sinkCredentials are under
    /// /etc/kfp-operator/credentials.
    pub events: Map<String, Value>,
    pub sink_credentials: SinkCredentialsValues,
    /// The operator container's requests and limits.
    pub resources: Map<String, Value>,
    /// Any other operator setting (see the README's Configuration section); the listen addresses
    /// are set by the chart.
    pub config: Map<String, Value>,
    pub webhook: WebhookValues,
    pub conversion: ConversionValues,
    pub service_monitor: ServiceMonitorValues,
    /// A PrometheusRule with the operator's alerts (see the README's Monitoring section); its
    /// labels are what the Prometheus's ruleSelector looks for.
    pub prometheus_rule: LabelledValues,
    /// The Grafana dashboard as a ConfigMap labelled grafana_dashboard: "1" (and these labels)
    /// for Grafana's dashboard sidecar.
    pub dashboard: LabelledValues,
    pub network_policy: NetworkPolicyValues,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ImageValues {
    pub repository: String,
    /// Empty means the chart's appVersion.
    pub tag: String,
    pub pull_policy: PullPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CrossNamespacePolicyValue {
    Allow,
    Deny,
    Grant,
}

/// Leader election on a Lease in the release's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LeaderElectionValues {
    pub enabled: bool,
}

/// The Secret with the sinks' credentials (a NATS .creds file, an nkey seed, TLS files),
/// mounted at /etc/kfp-operator/credentials; name its files in `events`, e.g.
/// `events.nats.credsFile: /etc/kfp-operator/credentials/nats.creds`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SinkCredentialsValues {
    /// Empty means none.
    pub secret_name: String,
}

/// The webhook (HTTPS on port 9443 of the release's Service): the CRDs' conversion webhook,
/// which serves v1alpha5 and v1alpha6 (v1beta1 needs no conversion), and `/validate`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WebhookValues {
    pub enabled: bool,
    /// The kubernetes.io/tls Secret with the serving certificate for <release>.<namespace>.svc;
    /// its CA goes in conversion.caBundle. Empty means <release>-webhook-tls.
    pub tls_secret: String,
    /// Have cert-manager issue that Secret (a self-signed Issuer and a Certificate) and inject its
    /// CA into the CRDs; needs cert-manager in the cluster.
    pub cert_manager: bool,
}

/// The CA the CRDs' conversion webhook trusts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConversionValues {
    /// The PEM of the CA, base64-encoded.
    pub ca_bundle: String,
    /// A cert-manager Certificate (namespace/name) whose CA cert-manager's cainjector injects
    /// into the CRDs (set by webhook.certManager).
    pub inject_ca_from: String,
}

/// A ServiceMonitor (Prometheus Operator) for the metrics Service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServiceMonitorValues {
    pub enabled: bool,
    /// The scrape interval.
    pub interval: String,
    /// Labels the Prometheus's serviceMonitorSelector looks for.
    pub labels: BTreeMap<String, String>,
}

/// An optional object and labels of its own.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LabelledValues {
    pub enabled: bool,
    pub labels: BTreeMap<String, String>,
}

/// The operator's NetworkPolicy: in, only the provider services to the events port and
/// monitoring to the metrics port; out, only the API server, NATS, the provider services and DNS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NetworkPolicyValues {
    pub enabled: bool,
    /// The provider services' namespaces; empty means the release's namespace.
    pub provider_namespaces: Vec<String>,
    /// The provider services' port.
    #[schemars(range(min = 1, max = 65535))]
    pub provider_service_port: u16,
    /// The namespaces that scrape /metrics.
    #[schemars(length(min = 1))]
    pub monitoring_namespaces: Vec<String>,
    /// The namespaces of the NATS servers; empty means the release's namespace.
    pub nats_namespaces: Vec<String>,
    #[schemars(range(min = 1, max = 65535))]
    pub nats_port: u16,
    /// Where the API server is (pods have no selector for it), reached on 443 or 6443.
    #[schemars(length(min = 1))]
    pub api_server_cidrs: Vec<String>,
}

impl Default for ChartValues {
    fn default() -> Self {
        let resources = serde_json::to_value(default_resources()).ok().and_then(|v| v.as_object().cloned());
        Self {
            image: ImageValues::default(),
            replicas: 1,
            leader_election: LeaderElectionValues::default(),
            namespaces: Vec::new(),
            cross_namespace_policy: CrossNamespacePolicyValue::Allow,
            events: Map::from_iter([
                ("authentication".to_owned(), json!("serviceAccountToken")),
                ("tokenAudience".to_owned(), json!("kfp-operator-events")),
            ]),
            sink_credentials: SinkCredentialsValues::default(),
            resources: resources.unwrap_or_default(),
            config: Map::new(),
            webhook: WebhookValues::default(),
            conversion: ConversionValues::default(),
            service_monitor: ServiceMonitorValues::default(),
            prometheus_rule: LabelledValues::default(),
            dashboard: LabelledValues::default(),
            network_policy: NetworkPolicyValues::default(),
        }
    }
}

impl Default for ImageValues {
    fn default() -> Self {
        Self {
            repository: IMAGE_REPOSITORY.into(),
            tag: String::new(),
            pull_policy: PullPolicy::IfNotPresent,
        }
    }
}

impl Default for LeaderElectionValues {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl Default for ServiceMonitorValues {
    fn default() -> Self {
        Self { enabled: false, interval: "30s".into(), labels: BTreeMap::new() }
    }
}

impl Default for NetworkPolicyValues {
    fn default() -> Self {
        let access = NetworkAccess::defaults("");
        Self {
            enabled: false,
            provider_namespaces: Vec::new(),
            provider_service_port: u16::try_from(access.provider_service_port).unwrap_or(8080),
            monitoring_namespaces: access.monitoring_namespaces,
            nats_namespaces: Vec::new(),
            nats_port: u16::try_from(access.nats_port).unwrap_or(4222),
            api_server_cidrs: access.api_server_cidrs,
        }
    }
}

/// `values.schema.json` (JSON Schema draft 7, which Helm checks values against), every
/// subschema inline.
pub fn values_schema() -> Value {
    let mut settings = schemars::generate::SchemaSettings::draft07();
    settings.inline_subschemas = true;
    settings.into_generator().into_root_schema_for::<ChartValues>().to_value()
}

/// `values.yaml`: every value at its default, under its description.
pub fn values_yaml() -> anyhow::Result<String> {
    let schema = values_schema();
    let defaults = serde_json::to_value(ChartValues::default())?;
    let mut out = String::from(
        "# The values of the kfp-operator chart; values.schema.json checks them. Generated from the code.\n",
    );
    write_values(&mut out, &schema, &defaults, 0)?;
    Ok(out)
}

fn write_values(out: &mut String, schema: &Value, values: &Value, depth: usize) -> anyhow::Result<()> {
    let indent = "  ".repeat(depth);
    let Some(properties) = schema["properties"].as_object() else { return Ok(()) };
    for (key, property) in properties {
        if depth == 0 {
            out.push('\n');
        }
        for line in property["description"].as_str().unwrap_or_default().lines() {
            out.push_str(&format!("{indent}# {}\n", line.trim()));
        }
        let value = &values[key];
        if property["properties"].is_object() {
            out.push_str(&format!("{indent}{key}:\n"));
            write_values(out, property, value, depth + 1)?;
        } else if value.as_object().is_some_and(|o| !o.is_empty()) {
            out.push_str(&format!("{indent}{key}:\n"));
            for line in serde_saphyr::to_string(value)?.lines() {
                out.push_str(&format!("{indent}  {line}\n"));
            }
        } else {
            out.push_str(&format!("{indent}{key}: {}\n", serde_json::to_string(value)?));
        }
    }
    Ok(())
}

/// Sentinels of the chart's templates, each the stand-in for a template expression.
const NAMESPACE: (&str, &str) = ("__KFP_NAMESPACE__", "{{ .Release.Namespace }}");
const RELEASE: (&str, &str) = ("__KFP_RELEASE__", "{{ .Release.Name }}");
const IMAGE: (&str, &str) = (
    "__KFP_IMAGE__",
    "\"{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}\"",
);
const PULL_POLICY: (&str, &str) = ("__KFP_PULL_POLICY__", "{{ .Values.image.pullPolicy }}");
const CONFIG: (&str, &str) = ("__KFP_CONFIG__", "{{ include \"kfp-operator.config\" . | toJson }}");
const REPLICAS: (&str, &str) = ("replicas: 64997", "replicas: {{ .Values.replicas }}");
const WEBHOOK_SECRET: (&str, &str) = (
    "__KFP_WEBHOOK_SECRET__",
    "{{ .Values.webhook.tlsSecret | default (printf \"%s-webhook-tls\" .Release.Name) }}",
);
const SINK_SECRET: (&str, &str) = ("__KFP_SINK_SECRET__", "{{ .Values.sinkCredentials.secretName }}");
const CA_BUNDLE: (&str, &str) = ("__KFP_CA_BUNDLE__", "{{ .Values.conversion.caBundle | quote }}");
const CRD_ANNOTATIONS: (&str, &str) = (
    "__KFP_CRD_ANNOTATIONS__",
    "{{ if .Values.conversion.injectCaFrom }}{{ dict \"cert-manager.io/inject-ca-from\" \
     .Values.conversion.injectCaFrom | toJson }}{{ else if and .Values.webhook.enabled \
     .Values.webhook.certManager }}{{ dict \"cert-manager.io/inject-ca-from\" (printf \"%s/%s-webhook\" \
     .Release.Namespace .Release.Name) | toJson }}{{ else }}{}{{ end }}",
);
const INTERVAL: (&str, &str) = ("__KFP_INTERVAL__", "{{ .Values.serviceMonitor.interval | quote }}");
const EXTRA_LABEL: &str = "__KFP_EXTRA_LABEL__";
const PROVIDER_PORT: (&str, &str) = ("port: 64998", "port: {{ .Values.networkPolicy.providerServicePort }}");
const NATS_PORT: (&str, &str) = ("port: 64999", "port: {{ .Values.networkPolicy.natsPort }}");
const PROVIDER_NAMESPACES: (&str, &str) = (
    "__KFP_PROVIDER_NAMESPACES__",
    "(default (list .Release.Namespace) .Values.networkPolicy.providerNamespaces)",
);
const NATS_NAMESPACES: (&str, &str) =
    ("__KFP_NATS_NAMESPACES__", "(default (list .Release.Namespace) .Values.networkPolicy.natsNamespaces)");
const MONITORING_NAMESPACES: (&str, &str) =
    ("__KFP_MONITORING_NAMESPACES__", ".Values.networkPolicy.monitoringNamespaces");
const API_SERVER_CIDRS: (&str, &str) = ("__KFP_API_SERVER_CIDRS__", ".Values.networkPolicy.apiServerCidrs");

/// `text` with every sentinel replaced by its expression.
fn substituted(mut text: String, placeholders: &[(&str, &str)]) -> String {
    for (sentinel, expression) in placeholders {
        text = text.replace(sentinel, expression);
    }
    text
}

/// Text that the template engine must leave alone (Prometheus and Grafana templates):
/// every `{{` becomes an action printing `{{`.
fn escaped(text: &str) -> String {
    text.replace("{{", "{{ \"{{\" }}")
}

/// One optional part of a template: `with` is the base with the part added; its lines are kept
/// between `open` and `{{- end }}` (an `if` or a `range`).
struct Part<'a> {
    open: String,
    with: &'a str,
}

/// `base` with the lines each part adds, each under its own action. Fails when a part changes or
/// removes a line of `base`, which an action around added lines cannot express.
fn with_parts(base: &str, parts: &[Part<'_>]) -> anyhow::Result<String> {
    let old: Vec<&str> = base.lines().collect();
    // inserted[k]: the blocks that go before line k of `base`, in the order of `parts`.
    let mut inserted: Vec<Vec<String>> = vec![Vec::new(); old.len() + 1];
    for part in parts {
        let new: Vec<&str> = part.with.lines().collect();
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
            anyhow::bail!("the part under {} changes lines instead of adding them", part.open);
        }
        // added[k]: the lines the part adds before line k of `base`.
        let (mut i, mut added) = (0, vec![Vec::new(); old.len() + 1]);
        for (j, line) in new.iter().enumerate() {
            if i < old.len() && old[i] == *line && common[i][j] == common[i + 1][j + 1] + 1 {
                i += 1;
            } else {
                added[i].push(*line);
            }
        }
        for (k, lines) in added.iter().enumerate().filter(|(_, lines)| !lines.is_empty()) {
            inserted[k].push(format!("{}\n{}\n{{{{- end }}}}", part.open, lines.join("\n")));
        }
    }
    let mut out = String::new();
    for (k, blocks) in inserted.iter().enumerate() {
        for block in blocks {
            out.push_str(block);
            out.push('\n');
        }
        if let Some(line) = old.get(k) {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The index after the lines indented deeper than `lines[start]`, which belong to it.
fn block_end(lines: &[&str], start: usize) -> usize {
    (start + 1..lines.len()).find(|&i| indent_of(lines[i]) <= indent_of(lines[start])).unwrap_or(lines.len())
}

/// `text` with the single line whose trimmed content is `key:`, followed by a line starting
/// `first_child`, and the lines under it replaced by `key: <expression>`.
fn replace_block(text: &str, key: &str, first_child: &str, expression: &str) -> anyhow::Result<String> {
    let lines: Vec<&str> = text.lines().collect();
    let header = format!("{key}:");
    let starts: Vec<usize> = (0..lines.len().saturating_sub(1))
        .filter(|&i| lines[i].trim() == header && lines[i + 1].trim_start().starts_with(first_child))
        .collect();
    let [start] = starts[..] else { anyhow::bail!("{} blocks {header}", starts.len()) };
    let depth = |line: &str| line.len() - line.trim_start().len();
    let end =
        (start + 1..lines.len()).find(|&i| depth(lines[i]) <= depth(lines[start])).unwrap_or(lines.len());
    let mut out: Vec<String> = lines[..start].iter().map(|l| (*l).to_owned()).collect();
    out.push(format!("{}{header} {expression}", &lines[start][..depth(lines[start])]));
    out.extend(lines[end..].iter().map(|l| (*l).to_owned()));
    Ok(out.join("\n") + "\n")
}

/// `text` with the list item holding `sentinel` repeated for each element of `list` (a template
/// expression), the element in place of the sentinel.
fn range_item(text: &str, sentinel: &str, list: &str) -> anyhow::Result<String> {
    let lines: Vec<&str> = text.lines().collect();
    let at =
        lines.iter().position(|l| l.contains(sentinel)).ok_or_else(|| anyhow::anyhow!("no {sentinel}"))?;
    let start = (0..=at)
        .rev()
        .find(|&i| lines[i].trim_start().starts_with("- ") && indent_of(lines[i]) <= indent_of(lines[at]))
        .ok_or_else(|| anyhow::anyhow!("{sentinel} is not in a list"))?;
    let end = block_end(&lines, start);
    let mut out: Vec<String> = lines[..start].iter().map(|l| (*l).to_owned()).collect();
    out.push(format!("{{{{- range {list} }}}}"));
    out.extend(lines[start..end].iter().map(|l| l.replace(sentinel, "{{ . | quote }}")));
    out.push("{{- end }}".into());
    out.extend(lines[end..].iter().map(|l| (*l).to_owned()));
    Ok(out.join("\n") + "\n")
}

/// The installation with sentinels, and `change` applied.
fn sentinel_installation(change: impl FnOnce(&mut Installation)) -> Installation {
    let mut installation = Installation {
        namespace: NAMESPACE.0.into(),
        name: RELEASE.0.into(),
        image: IMAGE.0.into(),
        image_pull_policy: PULL_POLICY.0.into(),
        config: CONFIG.0.into(),
        webhook_tls_secret: None,
        replicas: 64_997,
        leader_election: false,
        sink_credentials_secret: None,
        resources: default_resources(),
    };
    change(&mut installation);
    installation
}

/// `templates/kfp-operator.yaml`: the installation, with the webhook, the leader election and the
/// sinks' credentials under their values.
fn installation_template() -> anyhow::Result<String> {
    let base = sentinel_installation(|_| {}).to_yaml(false)?;
    let webhook =
        sentinel_installation(|i| i.webhook_tls_secret = Some(WEBHOOK_SECRET.0.into())).to_yaml(false)?;
    let leader = sentinel_installation(|i| i.leader_election = true).to_yaml(false)?;
    let credentials =
        sentinel_installation(|i| i.sink_credentials_secret = Some(SINK_SECRET.0.into())).to_yaml(false)?;
    let template = with_parts(
        &base,
        &[
            Part { open: "{{- if .Values.leaderElection.enabled }}".into(), with: &leader },
            Part { open: "{{- if .Values.sinkCredentials.secretName }}".into(), with: &credentials },
            Part { open: "{{- if .Values.webhook.enabled }}".into(), with: &webhook },
        ],
    )?;
    let template = replace_block(&template, "resources", "limits:", "{{ toJson .Values.resources }}")?;
    Ok(substituted(
        template,
        &[NAMESPACE, RELEASE, IMAGE, PULL_POLICY, CONFIG, REPLICAS, WEBHOOK_SECRET, SINK_SECRET],
    ))
}

/// `templates/_helpers.tpl`: the operator configuration the values add up to.
const HELPERS: &str = r#"{{- define "kfp-operator.config" -}}
{{- $config := dict -}}
{{- range $key, $value := .Values.config }}{{ $_ := set $config $key $value }}{{ end -}}
{{- $_ := set $config "namespaces" .Values.namespaces -}}
{{- $_ := set $config "crossNamespacePolicy" .Values.crossNamespacePolicy -}}
{{- if .Values.events }}{{ $_ := set $config "events" .Values.events }}{{ end -}}
{{- toYaml $config -}}
{{- end -}}
"#;

/// The CRDs as the chart's template: their conversion webhook is the release's Service, trusting
/// the CA of the `conversion` values, or cert-manager's when it issues the certificate.
fn crds_template() -> anyhow::Result<String> {
    let mut out = String::new();
    for crd in crate::api::crd::all() {
        let mut crd = serde_json::to_value(&crd)?;
        crd["metadata"]["annotations"] = CRD_ANNOTATIONS.0.into();
        let client = crd
            .pointer_mut("/spec/conversion/webhook/clientConfig")
            .ok_or_else(|| anyhow::anyhow!("a CRD without a conversion webhook"))?;
        client["service"]["namespace"] = NAMESPACE.0.into();
        client["service"]["name"] = RELEASE.0.into();
        client["caBundle"] = CA_BUNDLE.0.into();
        out.push_str("---\n");
        out.push_str(&escaped(&serde_saphyr::to_string(&crd)?));
    }
    Ok(substituted(out, &[NAMESPACE, RELEASE, CA_BUNDLE, CRD_ANNOTATIONS]))
}

/// The chart's cert-manager objects for the webhook: a self-signed Issuer and the serving
/// Certificate for the release's Service, whose CA the CRDs' annotation asks to inject.
pub fn webhook_certificate(namespace: &str, release: &str, secret: &str) -> [Value; 2] {
    let metadata = json!({"name": format!("{release}-webhook"), "namespace": namespace});
    [
        json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "Issuer",
            "metadata": metadata,
            "spec": {"selfSigned": {}},
        }),
        json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": metadata,
            "spec": {
                "secretName": secret,
                "dnsNames": [
                    format!("{release}.{namespace}.svc"),
                    format!("{release}.{namespace}.svc.cluster.local"),
                ],
                "issuerRef": {"name": format!("{release}-webhook"), "kind": "Issuer"},
            },
        }),
    ]
}

fn documents(objects: &[Value]) -> anyhow::Result<String> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&escaped(&serde_saphyr::to_string(object)?));
    }
    Ok(out)
}

fn webhook_certificate_template() -> anyhow::Result<String> {
    let objects = webhook_certificate(NAMESPACE.0, RELEASE.0, WEBHOOK_SECRET.0);
    Ok(format!(
        "{{{{- if and .Values.webhook.enabled .Values.webhook.certManager }}}}\n{}{{{{- end }}}}\n",
        substituted(documents(&objects)?, &[NAMESPACE, RELEASE, WEBHOOK_SECRET])
    ))
}

/// Builds an object with the given labels.
type ObjectWithLabels<'a> = Box<dyn Fn(&Value) -> anyhow::Result<Value> + 'a>;

/// `templates/monitoring.yaml`: the ServiceMonitor, the PrometheusRule and the dashboard
/// ConfigMap, each under its `enabled` with its extra labels.
fn monitoring_template() -> anyhow::Result<String> {
    let installation = sentinel_installation(|_| {});
    let labels = serde_json::to_value(installation.labels())?;
    let mut extra = labels.clone();
    extra[EXTRA_LABEL] = json!(EXTRA_LABEL);
    let metrics_service = installation.metrics_service_name();
    let objects: [(&str, ObjectWithLabels<'_>); 3] = [
        (
            "serviceMonitor",
            Box::new(|l: &Value| {
                let mut monitor = monitoring::service_monitor(NAMESPACE.0, &metrics_service, &labels, l);
                monitor["spec"]["endpoints"][0]["interval"] = json!(INTERVAL.0);
                Ok(monitor)
            }),
        ),
        ("prometheusRule", Box::new(|l: &Value| Ok(monitoring::prometheus_rule(NAMESPACE.0, RELEASE.0, l)))),
        ("dashboard", Box::new(|l: &Value| Ok(monitoring::dashboard_config_map(NAMESPACE.0, RELEASE.0, l)?))),
    ];
    let mut out = String::new();
    for (value, object) in &objects {
        let base = documents(&[object(&labels)?])?;
        let with = documents(&[object(&extra)?])?;
        let open = format!("{{{{- range $key, $value := .Values.{value}.labels }}}}");
        let template = with_parts(&base, &[Part { open, with: &with }])?
            .replace(&format!("{EXTRA_LABEL}: {EXTRA_LABEL}"), "{{ $key }}: {{ $value | quote }}");
        out.push_str(&format!("{{{{- if .Values.{value}.enabled }}}}\n{template}{{{{- end }}}}\n"));
    }
    Ok(substituted(out, &[NAMESPACE, RELEASE, INTERVAL]))
}

/// `templates/network-policy.yaml`: the NetworkPolicy under `networkPolicy.enabled`, and its
/// webhook ingress under `webhook.enabled`.
fn network_policy_template() -> anyhow::Result<String> {
    let access = NetworkAccess {
        provider_namespaces: vec![PROVIDER_NAMESPACES.0.into()],
        monitoring_namespaces: vec![MONITORING_NAMESPACES.0.into()],
        nats_namespaces: vec![NATS_NAMESPACES.0.into()],
        nats_port: 64_999,
        provider_service_port: 64_998,
        api_server_cidrs: vec![API_SERVER_CIDRS.0.into()],
        api_server_ports: NetworkAccess::defaults("").api_server_ports,
    };
    let base = documents(&[serde_json::to_value(sentinel_installation(|_| {}).network_policy(&access))?])?;
    let webhook = documents(&[serde_json::to_value(
        sentinel_installation(|i| i.webhook_tls_secret = Some(WEBHOOK_SECRET.0.into()))
            .network_policy(&access),
    )?])?;
    let mut template =
        with_parts(&base, &[Part { open: "{{- if .Values.webhook.enabled }}".into(), with: &webhook }])?;
    for (sentinel, list) in [PROVIDER_NAMESPACES, MONITORING_NAMESPACES, NATS_NAMESPACES, API_SERVER_CIDRS] {
        while template.contains(sentinel) {
            template = range_item(&template, sentinel, list)?;
        }
    }
    Ok(format!(
        "{{{{- if .Values.networkPolicy.enabled }}}}\n{}{{{{- end }}}}\n",
        substituted(template, &[NAMESPACE, RELEASE, PROVIDER_PORT, NATS_PORT])
    ))
}

/// Every file of the chart, by path relative to the repository, with `header` on top of each
/// YAML file.
pub fn files(header: &str) -> anyhow::Result<Vec<(String, String)>> {
    let version = env!("CARGO_PKG_VERSION");
    let chart = |path: &str| format!("charts/kfp-operator/{path}");
    Ok(vec![
        (
            chart("Chart.yaml"),
            format!(
                "apiVersion: v2\nname: kfp-operator\ndescription: Kubernetes operator for ML pipelines \
                 (pipelines.kubeflow.org) with event-driven run completion\ntype: application\nversion: \
                 {version}\nappVersion: \"{version}\"\n"
            ),
        ),
        (chart("values.yaml"), values_yaml()?),
        (chart("values.schema.json"), format!("{}\n", serde_json::to_string_pretty(&values_schema())?)),
        (
            chart("templates/_helpers.tpl"),
            format!("{{{{/* {} */}}}}\n{HELPERS}", header.trim_start_matches("# ")),
        ),
        (chart("templates/kfp-operator.yaml"), format!("{header}\n{}", installation_template()?)),
        (chart("templates/crds.yaml"), format!("{header}\n{}", crds_template()?)),
        (
            chart("templates/webhook-certificate.yaml"),
            format!("{header}\n{}", webhook_certificate_template()?),
        ),
        (chart("templates/monitoring.yaml"), format!("{header}\n{}", monitoring_template()?)),
        (chart("templates/network-policy.yaml"), format!("{header}\n{}", network_policy_template()?)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_keeps_its_added_lines_under_its_action() {
        let base = "a:\n- 1\nb: 2\n";
        let with = "a:\n- 1\n- 3\nb: 2\n";
        let other = "a:\n- 1\nb: 2\nc: 4\n";
        let out = with_parts(
            base,
            &[Part { open: "{{- if x }}".into(), with }, Part { open: "{{- if y }}".into(), with: other }],
        )
        .unwrap();
        assert_eq!(out, "a:\n- 1\n{{- if x }}\n- 3\n{{- end }}\nb: 2\n{{- if y }}\nc: 4\n{{- end }}\n");
        assert!(with_parts(base, &[Part { open: "{{- if x }}".into(), with: "a:\n- 2\nb: 2\n" }]).is_err());
    }

    #[test]
    fn a_block_and_a_list_item_become_expressions() {
        let text = "spec:\n  resources:\n    limits:\n      cpu: 1\n  name: x\n";
        assert_eq!(
            replace_block(text, "resources", "limits:", "{{ r }}").unwrap(),
            "spec:\n  resources: {{ r }}\n  name: x\n"
        );
        let text = "to:\n- ipBlock:\n    cidr: S\nports:\n- 1\n";
        assert_eq!(
            range_item(text, "S", ".Values.c").unwrap(),
            "to:\n{{- range .Values.c }}\n- ipBlock:\n    cidr: {{ . | quote }}\n{{- end }}\nports:\n- 1\n"
        );
    }

    #[test]
    fn prometheus_and_grafana_templates_are_left_to_them() {
        assert_eq!(escaped("a {{ $labels.x }} b"), "a {{ \"{{\" }} $labels.x }} b");
    }

    #[test]
    fn the_values_file_holds_every_default_and_parses_back() {
        let values: ChartValues = serde_saphyr::from_str(&values_yaml().unwrap()).unwrap();
        assert_eq!(values, ChartValues::default());
    }
}
