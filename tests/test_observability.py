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
    """What the web app and Triton serve, and every series the pipeline steps push
    (no Pushgateway runs here; what a push sends is checked in test_pipeline)."""
    from prometheus_client import generate_latest

    from cartridge.pipeline_metrics import SERIES, registry_for

    web = requests.get(f"{local_stack.web_url}/metrics", timeout=30)
    triton = requests.get(local_stack.triton_metrics_url, timeout=30)
    assert web.status_code == triton.status_code == 200
    pushed = generate_latest(registry_for(dict.fromkeys(SERIES, 1.0))).decode()
    return exported_names(web.text) | exported_names(triton.text) | exported_names(pushed)


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
        # The pipeline's: training loss, arena score, positions/s.
        "cartridge_pipeline_train_loss",
        "cartridge_pipeline_arena_score",
        "cartridge_selfplay_positions_per_second",
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


STEP_UNDER_KFP = """
import logging, sys
# What KFP's executor_main does before it calls a component.
logging.basicConfig(stream=sys.stdout, format="[KFP Executor %(message)s", level=logging.INFO)
from cartridge import loop
from cartridge.settings import Endpoints
loop.finish_pipeline_run(
    "tictactoe", "run-42", True, endpoints=Endpoints(mlflow_tracking_uri=sys.argv[1])
)
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("json_lines", [True, False])
def test_pipeline_steps_log_json_lines_naming_their_game_and_run(json_lines, tmp_path):
    """A step's library function, run as KFP's executor runs it: with CARTRIDGE_LOG_JSON
    (set on every task) each line is one JSON object carrying the step's game and run."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "CARTRIDGE_LOG_JSON": "true" if json_lines else ""}
    done = subprocess.run(
        [sys.executable, "-c", STEP_UNDER_KFP, f"sqlite:///{tmp_path / 'mlflow.db'}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=True,
    )
    wanted = "no MLflow run for pipeline run run-42"
    if not json_lines:
        assert f"[KFP Executor {wanted}" in done.stdout
        return
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    [warning] = [line for line in lines if wanted in line["message"]]
    assert warning["level"] == "WARNING" and warning["name"] == "cartridge.loop"
    assert (warning["game"], warning["run"]) == ("tictactoe", "run-42")
    assert warning["time"].endswith("+00:00")
    assert "KFP Executor" not in done.stdout  # every line is JSON now


def test_log_fields_nest_and_leave_out_empty_values():
    import logging

    from cartridge.logs import ContextFields, log_fields

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    with log_fields(game="connect4", run="r1"), log_fields(iteration=3, model=""):
        ContextFields().filter(record)
    assert (record.game, record.run, record.iteration) == ("connect4", "r1", 3)
    assert not hasattr(record, "model")
    outside = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    ContextFields().filter(outside)
    assert not hasattr(outside, "game")


def test_a_pushgateway_that_is_away_costs_a_warning_not_the_step(caplog):
    import time

    from pydantic import ValidationError

    from cartridge.pipeline_metrics import push
    from cartridge.settings import Endpoints

    started = time.monotonic()
    with caplog.at_level("WARNING"):
        sent = push("http://127.0.0.1:9", "connect4", {"cartridge_selfplay_games": 3})
    assert sent is False and time.monotonic() - started < 10
    assert "metrics not pushed to http://127.0.0.1:9" in caplog.text
    assert push("", "connect4", {"cartridge_selfplay_games": 3}) is False  # none set
    with pytest.raises(KeyError):  # a series nobody declared cannot be pushed
        push("http://127.0.0.1:9", "connect4", {"cartridge_made_up": 1})
    with pytest.raises(ValidationError, match="pushgateway_url"):
        Endpoints(pushgateway_url="pushgateway:9091")
