"""MLflow registry webhooks: a moved alias reaches serving at once.

MLflow (3.x) POSTs `model_version_alias.created` / `.deleted` events, signed the
Standard Webhooks way: header `X-MLflow-Signature: v1,<base64 HMAC-SHA256>` over
`<delivery id>.<timestamp>.<body>` with the webhook's secret, plus
`X-MLflow-Delivery-Id` and `X-MLflow-Timestamp`. A delivery can be lost (the receiver
was down), so the periodic reconcile pass stands behind every webhook.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time

from mlflow.tracking import MlflowClient

from cartridge.games import GAME_NAMES
from cartridge.names import registered_model_name

log = logging.getLogger(__name__)
WEBHOOK_NAME = "cartridge-serving"
EVENTS = ("model_version_alias.created", "model_version_alias.deleted")
SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
TOLERANCE_SECONDS = 300  # older (or later) deliveries are refused: no replays


class BadSignature(ValueError):
    """A delivery that was not signed with our secret, or too long ago."""


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers, body: bytes, now: float | None = None) -> None:
    """BadSignature unless `body` and `headers` are a fresh delivery signed with `secret`."""
    delivery_id = headers.get(DELIVERY_HEADER) or ""
    timestamp = headers.get(TIMESTAMP_HEADER) or ""
    given = headers.get(SIGNATURE_HEADER) or ""
    if not (delivery_id and timestamp.isdigit() and given):
        raise BadSignature("the delivery id, timestamp or signature header is missing")
    if abs((now if now is not None else time.time()) - int(timestamp)) > TOLERANCE_SECONDS:
        raise BadSignature("the delivery's timestamp is too far from now")
    expected = sign(secret, delivery_id, timestamp, body)
    # Several space-separated signatures are allowed (a secret being rotated).
    if not any(hmac.compare_digest(expected, s) for s in given.split()):
        raise BadSignature("the signature does not match")


def game_of_event(body: bytes) -> str | None:
    """The game whose champion a delivered alias event may have moved; None for an event
    that concerns no game of ours (another model, another alias, another entity)."""
    try:
        event = json.loads(body)
        data = event.get("data") or {}
        name = data.get("name")
        entity = event.get("entity")
    except (ValueError, AttributeError):
        return None
    if entity != "model_version_alias":
        return None
    games = {registered_model_name(game): game for game in GAME_NAMES}
    return games.get(name)


def ensure_webhook(client: MlflowClient, url: str, secret: str) -> str:
    """Our webhook in MLflow, created or brought up to date (url, secret, events);
    returns its id. Idempotent, so every reconciler replica may call it at start."""
    from mlflow.entities.webhook import WebhookEvent

    events = [WebhookEvent.from_str(e) for e in EVENTS]
    found = [hook for hook in client.list_webhooks() if hook.name == WEBHOOK_NAME]
    if found:
        hook = found[0]
        client.update_webhook(
            hook.webhook_id, url=url, events=events, secret=secret, status="ACTIVE"
        )
        return hook.webhook_id
    hook = client.create_webhook(
        WEBHOOK_NAME,
        url,
        events,
        description="Moves of a cartridge-<game> alias: Triton serves the new champion.",
        secret=secret,
    )
    log.info("MLflow webhook %s -> %s", hook.webhook_id, url)
    return hook.webhook_id
