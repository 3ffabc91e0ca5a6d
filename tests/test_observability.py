"""The Grafana dashboard and the alert rules read metrics the servers export: checked
against what the session's web app (which runs the reconciler here) and Triton serve
on their /metrics."""

from pathlib import Path

import pytest
import requests

from cartridge.deploy.observability import (
    dashboard_queries,
    exported_names,
    metric_names,
    rule_queries,
    unknown_metrics,
)

COMPONENT = Path(__file__).resolve().parents[1] / "kustomize" / "components" / "prometheus"


@pytest.fixture(scope="module")
def exported(local_stack, served_champions):
    web = requests.get(f"{local_stack.web_url}/metrics", timeout=30)
    triton = requests.get(local_stack.triton_metrics_url, timeout=30)
    assert web.status_code == triton.status_code == 200
    return exported_names(web.text) | exported_names(triton.text)


def test_every_dashboard_panel_and_alert_reads_exported_metrics(exported):
    dashboard = dashboard_queries(COMPONENT / "dashboard.json")
    rules = rule_queries(COMPONENT / "alerts.yaml")
    assert len(dashboard) >= 10 and len(rules) >= 5
    assert unknown_metrics(dashboard + rules, exported) == []
    read = set().union(*(metric_names(q) for q in dashboard))
    # What the dashboard is for: requests, latencies, Triton batching and queueing,
    # shedding, and the champion being served.
    assert {
        "cartridge_http_requests_total",
        "cartridge_http_request_duration_seconds_bucket",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_queue_duration_us",
        "cartridge_pending_moves",
        "cartridge_serving_in_sync",
    } <= read


def test_a_misspelled_metric_is_named(exported):
    query = 'sum(rate(cartridge_http_request_total{route="/api/move"}[5m])) by (status)'
    assert unknown_metrics([query], exported) == [f"cartridge_http_request_total (in: {query})"]


def test_promql_reading():
    assert metric_names(
        'histogram_quantile(0.99, sum by (le, game) (rate(a_bucket{x="up(y)"}[5m])))'
        " / on (game) group_left b_total offset 5m > bool 1"
    ) == {"a_bucket", "b_total"}
    assert metric_names('changes(max by (game) (c{namespace="$namespace"})[7d:1h]) == 0') == {"c"}
