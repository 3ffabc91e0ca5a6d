"""No credential reaches a log, and no other origin reads the API.

The log test runs after the pipeline, promotion and reconcile tests (files run in name
order), so the session stack's logs hold a full local run: S3 store, MLflow, Triton and
web app logs, with webhook deliveries, promotions and moves."""

import json
import re

import requests


def _secrets(stack) -> dict[str, str]:
    found = json.loads((stack.stack_dir / "credentials.json").read_text())
    security = (stack.stack_dir / "security.toml").read_text()
    for number, key in enumerate(re.findall(r'key = "([^"]+)"', security)):
        found[f"seaweedfs jwt key {number}"] = key
    return {name: value for name, value in found.items() if value}


def test_no_log_holds_a_credential(local_stack, served_champions):
    # One more of everything that logs: a move, a readiness check, a bad webhook.
    web = local_stack.web_url
    requests.post(f"{web}/api/move", json={"game": "tictactoe", "moves": [4]}, timeout=30)
    requests.get(f"{web}/readyz", timeout=30)
    requests.post(f"{web}/api/webhooks/mlflow", data=b"{}", timeout=30)
    secrets = _secrets(local_stack)
    assert {"access_key", "secret_key", "webhook_secret"} <= set(secrets)
    logs = [p for p in local_stack.home.rglob("*") if p.is_file() and p.suffix == ".log"]
    assert len(logs) >= 4, logs  # s3, mlflow, triton, web at least
    leaks = [
        f"{path.name}: {name}"
        for path in logs
        for name, value in secrets.items()
        if value in path.read_text(errors="replace")
    ]
    assert not leaks


def test_other_origins_get_no_cors_grant(local_stack, served_champions):
    """The UI is served from the API's own origin (the app itself, or the Ingress's one
    host), so the API grants no other origin: a browser on another site can neither
    read its answers nor pass the preflight a JSON POST needs."""
    web = local_stack.web_url
    origin = {"Origin": "https://elsewhere.example"}
    preflight = requests.options(
        f"{web}/api/move",
        headers={**origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"},
        timeout=30,
    )  # fmt: skip
    read = requests.get(f"{web}/api/games", headers=origin, timeout=30)
    assert read.status_code == 200
    for answer in (preflight, read):
        granted = {k.lower() for k in answer.headers if k.lower().startswith("access-control-")}
        assert not granted, answer.headers
