"""What Triton serves follows the MLflow registry, on the session's real stack: an alias
moved with MlflowClient (what the MLflow UI does) is served, through the webhook within
10 s and through the periodic pass without it; a web app that was down catches up; an
unservable version is refused with the old champion kept."""

import json
import time
import uuid

import mlflow
import pytest
import requests
from conftest import RECONCILE_SECONDS, fresh_served_model

from cartridge.games import load
from cartridge.promotion import promote
from cartridge.serving.reconcile import REFUSED_TAG, reconcile_game
from cartridge.serving.triton import TritonControl
from cartridge.serving.webhooks import WEBHOOK_NAME, sign
from cartridge.stack import up
from cartridge.stack.config import load_or_create_credentials
from cartridge.stack.manager import _load_state, _stop
from cartridge.tracking import log_and_register, use_tracking

GAME = "othello"
NAME = f"cartridge-{GAME}"


def _register(client, onnx_file):
    mlflow.set_experiment("reconcile-test")
    with mlflow.start_run():
        return log_and_register(client, onnx_file, load(GAME), {})[1]


def _served(stack) -> tuple[str | None, str | None]:
    control = TritonControl(stack.triton_url)
    try:
        state = control.model_state(GAME)
    finally:
        control.close()
    return state.version, state.state


def _wait_served(stack, version, seconds) -> float:
    """Seconds until Triton serves `version` READY; fails after `seconds`."""
    started = time.monotonic()
    while _served(stack) != (version, "READY"):
        assert time.monotonic() - started < seconds, f"v{version} not served: {_served(stack)}"
        time.sleep(0.2)
    return time.monotonic() - started


def _webhook_deliveries(stack) -> float:
    text = requests.get(f"{stack.web_url}/metrics", timeout=5).text
    line = f'cartridge_webhook_deliveries_total{{game="{GAME}"}} '
    return sum(float(row.split()[-1]) for row in text.splitlines() if row.startswith(line))


@pytest.fixture
def champion(stack_env, onnx_models):
    """A fresh othello entry with v1 champion and served; returns (client, v1)."""
    client = use_tracking(stack_env.mlflow_url)
    fresh_served_model(client, stack_env, GAME)
    first = _register(client, onnx_models[GAME][0])
    assert promote(client, GAME, first).triton_error is None
    return client, first


def _our_webhook(client):
    return next(hook for hook in client.list_webhooks() if hook.name == WEBHOOK_NAME)


def test_an_alias_moved_in_mlflow_is_served_through_the_webhook(stack_env, champion, onnx_models):
    client, first = champion
    _our_webhook(client)  # the web app registered it at its start
    second = _register(client, onnx_models[GAME][0])
    before = _webhook_deliveries(stack_env)
    client.set_registered_model_alias(NAME, "champion", second)
    took = _wait_served(stack_env, second, 10)
    assert _webhook_deliveries(stack_env) > before  # MLflow called; not only the pass
    lineage = requests.get(f"{stack_env.web_url}/api/model/{GAME}", timeout=10).json()
    assert lineage["champion"]["version"] == second and lineage["champion"]["in_sync"]
    # A rollback in the MLflow UI is the same path: the newer folder is withdrawn.
    client.set_registered_model_alias(NAME, "champion", first)
    took = max(took, _wait_served(stack_env, first, 10))
    print(f"webhook: served {took:.1f} s after the alias moved")


def test_without_the_webhook_the_periodic_pass_serves_the_alias(stack_env, champion, onnx_models):
    client, _ = champion
    hook = _our_webhook(client)
    second = _register(client, onnx_models[GAME][0])
    client.update_webhook(hook.webhook_id, status="DISABLED")
    time.sleep(3)  # MLflow's cached webhook list (2 s on the local stack) expires
    try:
        before = _webhook_deliveries(stack_env)
        client.set_registered_model_alias(NAME, "champion", second)
        took = _wait_served(stack_env, second, RECONCILE_SECONDS + 10)
        assert _webhook_deliveries(stack_env) == before
    finally:
        client.update_webhook(hook.webhook_id, status="ACTIVE")
    print(f"periodic pass ({RECONCILE_SECONDS} s): served {took:.1f} s after the alias moved")


def test_a_web_app_that_was_down_catches_up_at_start(stack_env, champion, onnx_models):
    client, _ = champion
    second = _register(client, onnx_models[GAME][0])
    _stop("web", _load_state(stack_env)["web"])
    try:
        client.set_registered_model_alias(NAME, "champion", second)  # nobody listening
        time.sleep(2)
        assert _served(stack_env)[0] != second
    finally:
        up(stack_env)
    _wait_served(stack_env, second, 20)  # the first pass at start


def test_an_unservable_champion_is_refused_and_the_old_one_kept(stack_env, champion, onnx_models):
    client, first = champion
    # Connect 4's network registered as an Othello version: wrong tensors for the game.
    stranger = _register(client, onnx_models["connect4"][0])
    client.set_registered_model_alias(NAME, "champion", stranger)
    deadline = time.monotonic() + 10
    while REFUSED_TAG not in client.get_model_version(NAME, stranger).tags:
        assert time.monotonic() < deadline, "the version was not refused"
        time.sleep(0.2)
    assert "not a othello model" in client.get_model_version(NAME, stranger).tags[REFUSED_TAG]
    assert _served(stack_env) == (first, "READY")  # the old champion stays
    lineage = requests.get(f"{stack_env.web_url}/api/model/{GAME}", timeout=10).json()
    assert lineage["champion"]["version"] == stranger and not lineage["champion"]["in_sync"]
    assert lineage["champion"]["triton"]["version"] == first
    assert "not a othello model" in lineage["champion"]["serving_refused"]
    # A pass of its own says the same, and changes nothing.
    outcome = reconcile_game(client, TritonControl(stack_env.triton_url), GAME)
    assert outcome.refused and outcome.served == first and not outcome.actions


def test_webhook_deliveries_must_be_signed(stack_env):
    url = f"{stack_env.web_url}/api/webhooks/mlflow"
    secret = load_or_create_credentials(stack_env).webhook_secret
    body = json.dumps(
        {"entity": "model_version_alias", "action": "created", "data": {"name": "other"}}
    ).encode()
    delivery, stamp = str(uuid.uuid4()), str(int(time.time()))
    headers = {"X-MLflow-Delivery-Id": delivery, "X-MLflow-Timestamp": stamp}
    unsigned = requests.post(url, data=body, headers=headers, timeout=5)
    assert unsigned.status_code == 401
    forged = sign("not-the-secret", delivery, stamp, body)
    bad = requests.post(
        url, data=body, headers={**headers, "X-MLflow-Signature": forged}, timeout=5
    )
    assert bad.status_code == 401 and "does not match" in bad.json()["detail"]
    stale = str(int(time.time()) - 3600)
    old = {**headers, "X-MLflow-Timestamp": stale}
    replayed = requests.post(
        url,
        data=body,
        headers={**old, "X-MLflow-Signature": sign(secret, delivery, stale, body)},
        timeout=5,
    )
    assert replayed.status_code == 401 and "timestamp" in replayed.json()["detail"]
    good = {**headers, "X-MLflow-Signature": sign(secret, delivery, stamp, body)}
    accepted = requests.post(url, data=body, headers=good, timeout=5)
    assert accepted.status_code == 202 and accepted.json() == {"accepted": True, "game": None}


def test_the_reconciler_runs_as_a_service_of_its_own(stack_env, champion, tmp_path):
    """`cartridge reconcile --serve`, as the cluster's reconciler Deployment runs it."""
    import os
    import socket
    import subprocess
    import sys

    client, first = champion
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret = "reconciler-test-secret"
    env = {
        **os.environ,
        "CARTRIDGE_RECONCILE_SECONDS": "600",  # the first pass, then only on webhooks
        "CARTRIDGE_WEBHOOK_SECRET": secret,
    }
    env.pop("CARTRIDGE_WEBHOOK_URL", None)  # MLflow's webhook stays the web app's
    log = (tmp_path / "reconciler.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "cartridge", "reconcile", "--serve", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "reconciler.log").read_text()
            try:
                serving = requests.get(f"{url}/api/serving", timeout=2).json()
                if GAME in serving:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "no first pass"
            time.sleep(0.5)
        assert serving[GAME]["champion"] == first and serving[GAME]["served"] == first
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        body = json.dumps(
            {"entity": "model_version_alias", "action": "created", "data": {"name": NAME}}
        ).encode()
        delivery, stamp = str(uuid.uuid4()), str(int(time.time()))
        headers = {
            "X-MLflow-Delivery-Id": delivery,
            "X-MLflow-Timestamp": stamp,
            "X-MLflow-Signature": sign(secret, delivery, stamp, body),
        }
        accepted = requests.post(
            f"{url}/api/webhooks/mlflow", data=body, headers=headers, timeout=5
        )
        assert accepted.status_code == 202 and accepted.json()["game"] == GAME
        assert requests.get(f"{url}/api/move", timeout=5).status_code == 404  # no game API
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
