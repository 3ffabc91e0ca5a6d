"""Evaluator that sends positions to Triton Inference Server (HTTP or gRPC).

The same network as `OnnxEvaluator`, served remotely: the web app's search uses it,
and self-play on a cluster can share one GPU Triton between many CPU workers. Each
thread keeps its own client (the HTTP client is not thread-safe, and a gRPC channel per
thread avoids head-of-line waits), so connections are reused across calls.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from cartridge.evaluators.base import check_planes
from cartridge.games import Game
from cartridge.model_metadata import INPUT_NAME, OUTPUT_NAMES
from cartridge.names import triton_model_name


class TritonUnavailable(RuntimeError):
    """Triton did not answer (not running, unreachable, or timed out)."""


class ModelUnavailable(RuntimeError):
    """Triton answers but does not serve the model (not loaded, or no version in the
    repository)."""


def plain_reason(error: BaseException) -> str:
    """An error's text without the object reprs some clients put in it ("<... at
    0x7f...>"), which say nothing to a user and leak process internals."""
    text = re.sub(r"<[^<>]*0x[0-9a-fA-F]+[^<>]*>", "(client object)", str(error))
    return re.sub(r" ?\(?(at )?0x[0-9a-fA-F]+\)?", "", text).strip() or type(error).__name__


def host_port(url: str) -> str:
    """tritonclient wants host:port; accept the http:// (or grpc://) form people copy."""
    for scheme in ("http://", "https://", "grpc://"):
        url = url.removeprefix(scheme)
    return url.rstrip("/")


# Status text Triton uses when the server is reachable but the model is not served.
_MODEL_MISSING = ("not found", "unavailable model", "is not ready", "unknown model")


class TritonEvaluator:
    """`evaluate(planes)` through Triton's `cartridge_<game>` model.

    `url` is `host:port` (or `http://host:port`); `protocol` is `grpc` or `http`.
    `timeout` bounds each call in seconds. `on_call(seconds, batch)` is told about
    every successful call (the web app turns it into a latency histogram).
    `last_version` is the model version that answered this thread's latest call.
    `version` pins the model version asked for: Triton refuses the call (ModelUnavailable)
    while it serves another, so a caller that must play one network never gets a mix.
    """

    def __init__(
        self,
        game: Game,
        url: str,
        protocol: str = "grpc",
        model: str | None = None,
        timeout: float = 10.0,
        on_call: Callable[[float, int], None] | None = None,
        version: str = "",
    ):
        if protocol not in ("grpc", "http"):
            raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.game = game
        self.url = host_port(url)
        self.protocol = protocol
        self.model = model or triton_model_name(game.name)
        self.timeout = timeout
        self.on_call = on_call
        self.version = str(version or "")
        self._local = threading.local()
        self._clients: list = []
        self._lock = threading.Lock()

    @property
    def last_version(self) -> str | None:
        return getattr(self._local, "version", None)

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                client = triton_grpc.InferenceServerClient(self.url)
            else:
                client = triton_http.InferenceServerClient(
                    self.url, connection_timeout=self.timeout, network_timeout=self.timeout
                )
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def evaluate(self, planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        planes = check_planes(planes, self.game.planes_shape)
        module = triton_grpc if self.protocol == "grpc" else triton_http
        tensor = module.InferInput(INPUT_NAME, list(planes.shape), "FP32")
        tensor.set_data_from_numpy(planes)
        outputs = [module.InferRequestedOutput(name) for name in OUTPUT_NAMES]
        started = time.perf_counter()
        try:
            if self.protocol == "grpc":
                result = self._client().infer(
                    self.model,
                    [tensor],
                    model_version=self.version,
                    outputs=outputs,
                    client_timeout=self.timeout,
                )
                self._local.version = result.get_response().model_version
            else:
                result = self._client().infer(
                    self.model, [tensor], model_version=self.version, outputs=outputs
                )
                self._local.version = result.get_response().get("model_version")
        except InferenceServerException as error:
            raise self._classify(error) from error
        except Exception as error:  # connection refused, reset, timeouts from the HTTP stack
            self._drop_client()
            raise TritonUnavailable(
                f"Triton at {self.url} is not reachable: {plain_reason(error)}"
            ) from error
        if self.on_call is not None:
            self.on_call(time.perf_counter() - started, len(planes))
        # The client wraps the response buffer read-only; the search writes into priors.
        logits = np.array(result.as_numpy(OUTPUT_NAMES[0]), dtype=np.float32)
        values = np.array(result.as_numpy(OUTPUT_NAMES[1]), dtype=np.float32).reshape(-1)
        return logits, values

    def _classify(self, error: InferenceServerException) -> Exception:
        text = f"{error.status() or ''} {error.message() or ''}".lower()
        if any(marker in text for marker in _MODEL_MISSING):
            return ModelUnavailable(
                f"Triton at {self.url} does not serve {self.model}: {plain_reason(error)}"
            )
        self._drop_client()
        return TritonUnavailable(f"Triton at {self.url} failed the request: {plain_reason(error)}")

    def _drop_client(self) -> None:
        """Forget this thread's client so the next call reconnects from scratch."""
        client = getattr(self._local, "client", None)
        if client is not None:
            self._local.client = None
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)
            try:
                client.close()
            except Exception:
                pass

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:
                pass
