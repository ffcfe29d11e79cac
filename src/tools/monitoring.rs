//! The installation's optional monitoring, generated like the rest of `deploy/` and the chart: a
//! ServiceMonitor for the metrics Service, a PrometheusRule with the operator's alerts, and a
//! Grafana dashboard (JSON, also as a ConfigMap for Grafana's dashboard sidecar). The alerts'
//! and panels' PromQL lives here once; [`promql_series`] names the series an expression reads,
//! so a test can hold them to what `/metrics` really exposes. Pure.

use serde_json::{Value, json};

/// One alert of the PrometheusRule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alert {
    pub name: &'static str,
    pub expr: &'static str,
    /// How long the expression must hold before the alert fires.
    pub for_: &'static str,
    pub severity: &'static str,
    pub summary: &'static str,
    pub description: &'static str,
}

/// The operator's alerts.
pub const ALERTS: [Alert; 5] = [
    Alert {
        name: "KfpOperatorReconcileErrorsRising",
        expr: "sum by (controller) (rate(kfp_operator_controller_reconcile_errors_total[5m])) > 0.1",
        for_: "15m",
        severity: "warning",
        summary: "kfp-operator's {{ $labels.controller }} controller keeps failing",
        description: "More than one failed reconcile every 10 s for 15 minutes; `kubectl get` the kind and read \
                      the Synchronized condition and the Warning Events of the failing resources.",
    },
    Alert {
        name: "KfpOperatorQueueDepthStuck",
        expr: "min_over_time(kfp_operator_controller_queue_depth[15m]) > 0",
        for_: "15m",
        severity: "warning",
        summary: "kfp-operator's {{ $labels.controller }} queue has not drained for 15 minutes",
        description: "Objects wait to be reconciled and the queue never empties: the controller is stuck or \
                      overloaded (see reconcile duration and the operator's logs).",
    },
    Alert {
        name: "KfpOperatorProviderUnavailable",
        expr: "sum by (provider) (rate(kfp_operator_provider_calls_total{result!=\"ok\"}[5m])) / sum by \
               (provider) (rate(kfp_operator_provider_calls_total[5m])) > 0.5",
        for_: "10m",
        severity: "critical",
        summary: "Provider {{ $labels.provider }} fails most calls",
        description: "More than half the calls to the provider failed for 10 minutes; its resources are not \
                      kept in step. Check the provider service and `kubectl describe provider`.",
    },
    Alert {
        name: "KfpOperatorCompletionsDeadLettered",
        expr: "sum by (sink) (increase(kfp_operator_events_dead_lettered_total[10m])) > 0",
        for_: "0m",
        severity: "warning",
        summary: "Run completions were dead-lettered on {{ $labels.sink }}",
        description: "Completions could not be delivered or recorded and were set aside; their dependants did \
                      not start. Inspect the dead-letter subject with `kfp-operator events tail`.",
    },
    Alert {
        name: "KfpOperatorNoLeader",
        expr: "max(kfp_operator_leader) < 1 or absent(kfp_operator_leader)",
        for_: "5m",
        severity: "critical",
        summary: "No kfp-operator replica leads",
        description: "No replica holds the leader Lease (or none is scraped), so no resource is reconciled and \
                      no completion is processed. Check `kubectl get pods -n kfp-operator-system`.",
    },
];

/// One panel of the dashboard: a time series of one or more expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panel {
    pub title: &'static str,
    /// Grafana's unit of the values.
    pub unit: &'static str,
    /// (legend, expression).
    pub targets: &'static [(&'static str, &'static str)],
}

/// The dashboard's panels, in order.
pub const PANELS: [Panel; 10] = [
    Panel {
        title: "Reconciles by controller and result",
        unit: "ops",
        targets: &[(
            "{{controller}} {{result}}",
            "sum by (controller, result) (rate(kfp_operator_controller_reconcile_total[5m]))",
        )],
    },
    Panel {
        title: "Reconcile errors by controller and category",
        unit: "ops",
        targets: &[(
            "{{controller}} {{category}}",
            "sum by (controller, category) (rate(kfp_operator_controller_reconcile_errors_total[5m]))",
        )],
    },
    Panel {
        title: "Reconcile duration (p50, p99)",
        unit: "s",
        targets: &[
            (
                "{{controller}} p50",
                "histogram_quantile(0.5, sum by (controller, le) \
                 (rate(kfp_operator_controller_reconcile_duration_seconds_bucket[5m])))",
            ),
            (
                "{{controller}} p99",
                "histogram_quantile(0.99, sum by (controller, le) \
                 (rate(kfp_operator_controller_reconcile_duration_seconds_bucket[5m])))",
            ),
        ],
    },
    Panel {
        title: "Work-queue depth",
        unit: "short",
        targets: &[("{{controller}}", "max by (controller) (kfp_operator_controller_queue_depth)")],
    },
    Panel {
        title: "Provider call latency (p99) and errors",
        unit: "s",
        targets: &[
            (
                "{{provider}} {{operation}} p99",
                "histogram_quantile(0.99, sum by (provider, operation, le) \
                 (rate(kfp_operator_provider_call_duration_seconds_bucket[5m])))",
            ),
            (
                "{{provider}} errors/s",
                "sum by (provider) (rate(kfp_operator_provider_calls_total{result!=\"ok\"}[5m]))",
            ),
        ],
    },
    Panel {
        title: "Run success rate",
        unit: "percentunit",
        targets: &[(
            "succeeded",
            "sum(rate(kfp_operator_runs_finished_total{status=\"succeeded\"}[1h])) / \
             sum(rate(kfp_operator_runs_finished_total[1h]))",
        )],
    },
    Panel {
        title: "Run duration (p50, p90)",
        unit: "s",
        targets: &[
            (
                "p50",
                "histogram_quantile(0.5, sum by (le) (rate(kfp_operator_run_duration_seconds_bucket[1h])))",
            ),
            (
                "p90",
                "histogram_quantile(0.9, sum by (le) (rate(kfp_operator_run_duration_seconds_bucket[1h])))",
            ),
        ],
    },
    Panel {
        title: "Resources by kind and state",
        unit: "short",
        targets: &[("{{kind}} {{state}}", "sum by (kind, state) (kfp_operator_resources)")],
    },
    Panel {
        title: "Event flow per sink",
        unit: "ops",
        targets: &[
            ("ingested {{result}}", "sum by (result) (rate(kfp_operator_events_ingested_total[5m]))"),
            ("published {{sink}}", "sum by (sink) (rate(kfp_operator_events_published_total[5m]))"),
            ("acked {{sink}}", "sum by (sink) (rate(kfp_operator_events_acked_total[5m]))"),
            ("duplicates {{sink}}", "sum by (sink) (rate(kfp_operator_events_duplicates_total[5m]))"),
            ("dead-lettered {{sink}}", "sum by (sink) (rate(kfp_operator_events_dead_lettered_total[5m]))"),
        ],
    },
    Panel {
        title: "Trigger latency (completion received to dependant Run created) and fan-out",
        unit: "s",
        targets: &[
            (
                "p99 latency",
                "histogram_quantile(0.99, sum by (le) (rate(kfp_operator_trigger_latency_seconds_bucket[5m])))",
            ),
            (
                "publish p99 {{sink}}",
                "histogram_quantile(0.99, sum by (sink, le) \
                 (rate(kfp_operator_event_publish_duration_seconds_bucket[5m])))",
            ),
            (
                "mean fan-out",
                "sum(rate(kfp_operator_trigger_fan_out_size_sum[5m])) / \
                 sum(rate(kfp_operator_trigger_fan_out_size_count[5m]))",
            ),
        ],
    },
];

/// Every PromQL expression of the alerts and the dashboard.
pub fn expressions() -> Vec<&'static str> {
    ALERTS
        .iter()
        .map(|alert| alert.expr)
        .chain(PANELS.iter().flat_map(|panel| panel.targets.iter().map(|(_, expr)| *expr)))
        .collect()
}

const PROMQL_KEYWORDS: [&str; 23] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
];

/// The metric names `expr` selects: identifiers that are neither functions, aggregations,
/// keywords, label names in matchers or groupings, nor parts of durations.
pub fn promql_series(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let (mut braces, mut brackets, mut i) = (0_i32, 0_i32, 0);
    let mut after_grouping = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += usize::from(chars[i] == '\\') + 1;
                }
            }
            '{' => braces += 1,
            '}' => braces -= 1,
            '[' => brackets += 1,
            ']' => brackets -= 1,
            '(' if after_grouping => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                after_grouping = false;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i + 1 < chars.len()
                    && (chars[i + 1].is_ascii_alphanumeric() || matches!(chars[i + 1], '_' | ':'))
                {
                    i += 1;
                }
                let word: String = chars[start..=i].iter().collect();
                let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                let preceded_by_digit = start > 0 && chars[start - 1].is_ascii_digit();
                if PROMQL_KEYWORDS.contains(&word.as_str()) {
                    after_grouping = matches!(word.as_str(), "by" | "without" | "on" | "ignoring");
                } else if braces == 0 && brackets == 0 && !preceded_by_digit && next != Some(&'(') {
                    names.push(word);
                }
            }
            _ => {}
        }
        i += 1;
    }
    names.sort();
    names.dedup();
    names
}

/// The base series of a sample name: a histogram's `_bucket`, `_sum` and `_count` and a
/// counter's `_total` belong to the family they are reported under.
pub fn family_of(series: &str) -> &str {
    ["_bucket", "_sum", "_count", "_total", "_info"]
        .iter()
        .find_map(|suffix| series.strip_suffix(suffix))
        .unwrap_or(series)
}

/// The ServiceMonitor `name` for the metrics Service (port `metrics`) that `selector` selects.
pub fn service_monitor(namespace: &str, name: &str, selector: &Value, labels: &Value) -> Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": selector},
            "namespaceSelector": {"matchNames": [namespace]},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
        },
    })
}

/// The PrometheusRule with [`ALERTS`].
pub fn prometheus_rule(namespace: &str, name: &str, labels: &Value) -> Value {
    let rules: Vec<Value> = ALERTS
        .iter()
        .map(|alert| {
            json!({
                "alert": alert.name,
                "expr": alert.expr,
                "for": alert.for_,
                "labels": {"severity": alert.severity},
                "annotations": {"summary": alert.summary, "description": alert.description},
            })
        })
        .collect();
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"groups": [{"name": "kfp-operator", "rules": rules}]},
    })
}

/// The Grafana dashboard with [`PANELS`], two to a row, on a `datasource` variable.
pub fn dashboard() -> Value {
    let panels: Vec<Value> = PANELS
        .iter()
        .enumerate()
        .map(|(index, panel)| {
            let targets: Vec<Value> = panel
                .targets
                .iter()
                .enumerate()
                .map(|(target, (legend, expr))| {
                    json!({
                        "refId": char::from(b'A' + target as u8).to_string(),
                        "expr": expr,
                        "legendFormat": legend,
                        "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    })
                })
                .collect();
            json!({
                "id": index + 1,
                "type": "timeseries",
                "title": panel.title,
                "gridPos": {"h": 8, "w": 12, "x": (index % 2) * 12, "y": (index / 2) * 8},
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "targets": targets,
            })
        })
        .collect();
    json!({
        "title": "kfp-operator",
        "uid": "kfp-operator",
        "tags": ["kfp-operator", "kubeflow"],
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource",
            "type": "datasource",
            "query": "prometheus",
            "label": "Data source",
        }]},
        "panels": panels,
    })
}

/// The dashboard as a ConfigMap that Grafana's dashboard sidecar picks up (label
/// `grafana_dashboard: "1"`).
pub fn dashboard_config_map(namespace: &str, name: &str, labels: &Value) -> Result<Value, serde_json::Error> {
    let mut labels = labels.clone();
    labels["grafana_dashboard"] = json!("1");
    Ok(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": format!("{name}-dashboard"), "namespace": namespace, "labels": labels},
        "data": {"kfp-operator.json": serde_json::to_string_pretty(&dashboard())?},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_of_an_expression_are_its_metric_names_only() {
        assert_eq!(
            promql_series(
                "sum by (provider, le) (rate(kfp_x_calls_total{result!=\"ok\", kind=~\"a|b\"}[5m])) / \
                 sum without (sink) (kfp_y) > 0.5 or absent(kfp_z) and on (job) up offset 1h"
            ),
            ["kfp_x_calls_total", "kfp_y", "kfp_z", "up"]
        );
        assert_eq!(
            promql_series("histogram_quantile(0.99, sum by (le) (rate(a_bucket[1h30m])))"),
            ["a_bucket"]
        );
        assert_eq!(promql_series("max(kfp_operator_leader) < 1"), ["kfp_operator_leader"]);
    }

    #[test]
    fn every_alert_and_panel_reads_some_operator_series() {
        for expr in expressions() {
            let series = promql_series(expr);
            assert!(!series.is_empty(), "{expr}");
            assert!(series.iter().all(|s| s.starts_with("kfp_operator_")), "{expr}: {series:?}");
        }
    }

    #[test]
    fn a_sample_belongs_to_its_family() {
        assert_eq!(
            family_of("kfp_operator_run_duration_seconds_bucket"),
            "kfp_operator_run_duration_seconds"
        );
        assert_eq!(family_of("kfp_operator_controller_reconcile_total"), "kfp_operator_controller_reconcile");
        assert_eq!(family_of("kfp_operator_leader"), "kfp_operator_leader");
    }

    #[test]
    fn the_dashboard_has_a_unique_ref_per_target_and_no_overlapping_panels() {
        let dashboard = dashboard();
        let panels = dashboard["panels"].as_array().unwrap();
        assert_eq!(panels.len(), PANELS.len());
        let mut positions: Vec<(u64, u64)> = panels
            .iter()
            .map(|p| (p["gridPos"]["x"].as_u64().unwrap(), p["gridPos"]["y"].as_u64().unwrap()))
            .collect();
        positions.dedup();
        assert_eq!(positions.len(), PANELS.len());
    }
}
