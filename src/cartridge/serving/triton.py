"""Talking to Triton Inference Server: where it is, whether it answers, which models it serves.

Every call has a timeout and failures become `TritonUnavailable` (the server does not
answer) or `ModelUnavailable` (it answers but the model is not loaded), so callers can
turn them into a 503 or a "no champion yet" instead of hanging or crashing.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from cartridge.model_metadata import VALUE_DISCOUNT_KEY, parse_value_discount


class TritonUnavailable(RuntimeError):
    """Triton did not answer (not running, unreachable, or timed out)."""


class ModelUnavailable(RuntimeError):
    """Triton answers but does not serve the model (not loaded, or no version in the
    repository)."""


def model_name(game_name: str) -> str:
    return f"cartridge_{game_name}"


def triton_url() -> str | None:
    """Triton's HTTP endpoint from CARTRIDGE_TRITON_URL (`cartridge stack env` sets it)."""
    return os.environ.get("CARTRIDGE_TRITON_URL") or None


def host_port(url: str) -> str:
    """tritonclient wants host:port; accept the http:// (or grpc://) form people copy."""
    for scheme in ("http://", "https://", "grpc://"):
        url = url.removeprefix(scheme)
    return url.rstrip("/")


@dataclass(frozen=True)
class ModelState:
    model: str
    version: str | None
    state: str | None
    reason: str | None = None


class TritonControl:
    """Model control over Triton's HTTP API (explicit model-control mode)."""

    def __init__(self, url: str, timeout: float = 5.0):
        self.url = url
        self._client = triton_http.InferenceServerClient(
            host_port(url), connection_timeout=timeout, network_timeout=max(timeout, 30.0)
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, what: str, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except InferenceServerException as error:
            raise ModelUnavailable(f"Triton at {self.url} refused to {what}: {error}") from error
        except Exception as error:  # socket errors, timeouts, gevent's own exceptions
            raise TritonUnavailable(f"Triton at {self.url} is not reachable: {error}") from error

    def ready(self) -> bool:
        try:
            return bool(self._client.is_server_ready())
        except Exception:
            return False

    def load(self, game_name: str) -> None:
        """Load (or reload) the game's model; Triton picks the newest version in the
        repository, so this is how a promotion or a rollback reaches the server."""
        self._call("load " + model_name(game_name), self._client.load_model, model_name(game_name))

    def unload(self, game_name: str) -> None:
        """Stop serving the game's model (its files stay in the repository)."""
        self._call(
            "unload " + model_name(game_name), self._client.unload_model, model_name(game_name)
        )

    def model_state(self, game_name: str) -> ModelState:
        """The serving state of the game's newest version in Triton's repository index."""
        name = model_name(game_name)
        index = self._call("list its repository", self._client.get_model_repository_index)
        entries = [entry for entry in index if entry.get("name") == name]
        if not entries:
            return ModelState(name, None, None, "not in the model repository")
        ready = [entry for entry in entries if entry.get("state") == "READY"]
        entry = max(ready or entries, key=lambda item: int(item.get("version") or 0))
        return ModelState(name, entry.get("version"), entry.get("state"), entry.get("reason"))

    def value_discount(self, game_name: str) -> float:
        """The served version's value discount, from the parameters publication writes
        into its config (none: a model trained without one)."""
        name = model_name(game_name)
        config = self._call(f"give the config of {name}", self._client.get_model_config, name)
        entry = config.get("parameters", {}).get(VALUE_DISCOUNT_KEY)
        return parse_value_discount(
            entry.get("string_value") if entry else None, f"Triton config of {name}"
        )

    def published_games(self) -> list[str]:
        """Games whose model folder exists in the repository."""
        index = self._call("list its repository", self._client.get_model_repository_index)
        prefix = "cartridge_"
        return sorted(
            {e["name"].removeprefix(prefix) for e in index if e["name"].startswith(prefix)}
        )


class ServedDiscounts:
    """Each game's served value discount, read from Triton at most once per `ttl`
    seconds: moves stay one network round trip each, and a promotion's new setting
    arrives within `ttl`."""

    def __init__(self, control: TritonControl, ttl: float = 10.0):
        self._control = control
        self._ttl = ttl
        self._lock = threading.Lock()
        self._read: dict[str, tuple[float, float]] = {}  # game -> (when, discount)

    def get(self, game_name: str) -> float:
        with self._lock:
            when, discount = self._read.get(game_name, (-float("inf"), 1.0))
            if time.monotonic() - when >= self._ttl:
                discount = self._control.value_discount(game_name)
                self._read[game_name] = (time.monotonic(), discount)
            return discount


def notify_triton(game_name: str, url: str | None = None) -> str | None:
    """Ask Triton (if one is configured) to load the game's newest published version.

    Returns None on success or when no Triton is configured, else the reason it
    failed: the registry and the repository are already updated at that point, and the
    web app loads the model on its next request, so a down server must not undo a
    promotion."""
    url = url or triton_url()
    if url is None:
        return None
    control = TritonControl(url)
    try:
        control.load(game_name)
        return None
    except (TritonUnavailable, ModelUnavailable) as error:
        return str(error)
    finally:
        control.close()
