"""Triton Inference Server from the serving side: its model repository and its model control.

Publishing copies a registered version's ONNX file into the Triton model repository
(S3, or a folder) as version N, N being its registry version, next to the game's
`config.pbtxt` from `triton_models/`; loading asks Triton to serve the newest version.
Promotion, rollback and the web app all go through here.

Every call has a timeout and failures become `TritonUnavailable` (the server does not
answer) or `ModelUnavailable` (it answers but the model is not loaded), so callers can
turn them into a 503 or a "no champion yet" instead of hanging or crashing.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from cartridge.evaluators.triton_model import (
    ModelUnavailable,
    TritonUnavailable,
    host_port,
    plain_reason,
)
from cartridge.model_metadata import VALUE_DISCOUNT_KEY, parse_value_discount
from cartridge.names import triton_model_name, version_uri

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parents[3] / "triton_models"


def triton_url() -> str | None:
    """Triton's HTTP endpoint from CARTRIDGE_TRITON_URL (`cartridge stack env` sets it)."""
    return os.environ.get("CARTRIDGE_TRITON_URL") or None


def _close_quietly(client) -> None:
    try:
        client.close()
    except Exception:  # closing a client whose server is gone may fail; nothing to do
        pass


@dataclass(frozen=True)
class ModelState:
    model: str
    version: str | None
    state: str | None
    reason: str | None = None


class TritonControl:
    """Model control over Triton's HTTP API (explicit model-control mode).

    Safe to share between threads: tritonclient's HTTP client is gevent-based and must
    stay on the thread that made it (shared, it fails with "Cannot switch to a different
    thread" or never returns), so each thread gets its own. Every call has a deadline:
    `timeout` seconds to connect and for an answer, `load_timeout` for a load or unload,
    which Triton answers once the model is (un)loaded. A client whose call failed is
    dropped, so the next call after a restart of Triton connects afresh.
    """

    def __init__(self, url: str, timeout: float = 5.0, load_timeout: float = 60.0):
        if timeout <= 0 or load_timeout <= 0:
            raise ValueError("Triton timeouts must be positive")
        self.url = url
        self.timeout = timeout
        self.load_timeout = max(load_timeout, timeout)
        self._local = threading.local()
        self._lock = threading.Lock()  # guards the list of clients only, never a call
        self._clients: list = []

    def _client(self, slow: bool):
        key = "slow" if slow else "quick"
        client = getattr(self._local, key, None)
        if client is None:
            client = triton_http.InferenceServerClient(
                host_port(self.url),
                connection_timeout=self.timeout,
                network_timeout=self.load_timeout if slow else self.timeout,
            )
            setattr(self._local, key, client)
            with self._lock:
                self._clients.append(client)
        return client

    def _drop(self, slow: bool) -> None:
        key = "slow" if slow else "quick"
        client = getattr(self._local, key, None)
        setattr(self._local, key, None)
        if client is not None:
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)
            _close_quietly(client)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            _close_quietly(client)

    def _call(self, what: str, method: str, *args, slow: bool = False):
        try:
            return getattr(self._client(slow), method)(*args)
        except InferenceServerException as error:
            raise ModelUnavailable(
                f"Triton at {self.url} refused to {what}: {plain_reason(error)}"
            ) from error
        except Exception as error:  # socket errors, timeouts, gevent's own exceptions
            self._drop(slow)
            raise TritonUnavailable(
                f"Triton at {self.url} is not reachable: {plain_reason(error)}"
            ) from error

    def ready(self) -> bool:
        try:
            return bool(self._call("say whether it is ready", "is_server_ready"))
        except (TritonUnavailable, ModelUnavailable):
            return False

    def load(self, game_name: str) -> None:
        """Load (or reload) the game's model; Triton picks the newest version in the
        repository, so this is how a promotion or a rollback reaches the server."""
        name = triton_model_name(game_name)
        self._call(f"load {name}", "load_model", name, slow=True)

    def unload(self, game_name: str) -> None:
        """Stop serving the game's model (its files stay in the repository)."""
        name = triton_model_name(game_name)
        self._call(f"unload {name}", "unload_model", name, slow=True)

    def model_state(self, game_name: str) -> ModelState:
        """The serving state of the game's newest version in Triton's repository index."""
        name = triton_model_name(game_name)
        index = self._call("list its repository", "get_model_repository_index")
        entries = [entry for entry in index if entry.get("name") == name]
        if not entries:
            return ModelState(name, None, None, "not in the model repository")
        ready = [entry for entry in entries if entry.get("state") == "READY"]
        entry = max(ready or entries, key=lambda item: int(item.get("version") or 0))
        return ModelState(name, entry.get("version"), entry.get("state"), entry.get("reason"))

    def value_discount(self, game_name: str) -> float:
        """The served version's value discount, from the parameters publication writes
        into its config (none: a model trained without one)."""
        name = triton_model_name(game_name)
        config = self._call(f"give the config of {name}", "get_model_config", name)
        entry = config.get("parameters", {}).get(VALUE_DISCOUNT_KEY)
        return parse_value_discount(
            entry.get("string_value") if entry else None, f"Triton config of {name}"
        )

    def published_games(self) -> list[str]:
        """Games whose model folder exists in the repository."""
        index = self._call("list its repository", "get_model_repository_index")
        prefix = triton_model_name("")
        return sorted(
            {e["name"].removeprefix(prefix) for e in index if e["name"].startswith(prefix)}
        )


class ServedDiscounts:
    """Each game's served value discount, read from Triton at most once per `ttl`
    seconds: moves stay one network round trip each, and a promotion's new setting
    arrives within `ttl`. No lock is held while Triton is asked (threads that find the
    value stale at once may each ask); with Triton down, a discount read before is kept
    until Triton answers again."""

    def __init__(self, control: TritonControl, ttl: float = 10.0):
        self._control = control
        self._ttl = ttl
        self._lock = threading.Lock()
        self._read: dict[str, tuple[float, float]] = {}  # game -> (when, discount)

    def get(self, game_name: str) -> float:
        with self._lock:
            known = self._read.get(game_name)
        if known is not None and time.monotonic() - known[0] < self._ttl:
            return known[1]
        try:
            discount = self._control.value_discount(game_name)
        except (TritonUnavailable, ModelUnavailable):
            if known is None:
                raise
            discount = known[1]  # the move itself will say whether Triton is back
        with self._lock:
            self._read[game_name] = (time.monotonic(), discount)
        return discount


def triton_repository() -> str:
    """Where Triton's model repository lives: CARTRIDGE_TRITON_REPOSITORY, else the bucket's
    `triton/` prefix."""
    bucket = os.environ.get("CARTRIDGE_BUCKET", "cartridge")
    return os.environ.get("CARTRIDGE_TRITON_REPOSITORY", f"s3://{bucket}/triton")


def triton_templates() -> tuple[Path, list[Path]]:
    """The config folder for the Triton that reads the repository, and any files each
    version needs beside `model.onnx`.

    CARTRIDGE_TRITON_BACKEND=onnxruntime (the default: the cluster's official image)
    uses `triton_models/cartridge_<game>/`; `python` (the local stack's server, which has
    only the python backend) uses `triton_models/local/` and its `model.py`."""
    root = Path(os.environ.get("CARTRIDGE_TRITON_TEMPLATES", TEMPLATES))
    backend = os.environ.get("CARTRIDGE_TRITON_BACKEND", "onnxruntime")
    if backend == "onnxruntime":
        return root, []
    if backend == "python":
        return root / "local", [root / "local" / "model.py"]
    raise ValueError(f"CARTRIDGE_TRITON_BACKEND must be 'onnxruntime' or 'python', got {backend!r}")


def model_folder(game_name: str, repository: str | None = None) -> str:
    from cartridge import storage  # boto3: only the publishing side needs it, not web pods

    return storage.join(repository or triton_repository(), triton_model_name(game_name))


class Unservable(ValueError):
    """A registry version that cannot be served as its game's model."""


def publish(game_name: str, version: str, repository: str | None = None) -> str:
    """Copy registry version `version`'s ONNX file and the game's config into the Triton
    repository; returns the model's folder. Re-publishing the same version rewrites the
    same objects. Reads the registry through the process's MLflow tracking URI.
    Unservable (nothing written) when the version has no ONNX artifact or its tensors
    are not the game's."""
    from cartridge import storage

    folder = model_folder(game_name, repository)
    templates, version_files = triton_templates()
    config = templates / triton_model_name(game_name) / "config.pbtxt"
    for required in (config, *version_files):
        if not required.is_file():
            raise FileNotFoundError(f"no Triton template at {required}")
    with tempfile.TemporaryDirectory(prefix="cartridge-publish-") as workdir:
        onnx_file, value_discount = _checked_model(game_name, version, Path(workdir))
        served_config = Path(workdir) / "config.pbtxt"
        served_config.write_text(config.read_text() + _parameters(value_discount, version))
        # The config goes last: a Triton polling the repository sees a complete version.
        _put(onnx_file, storage.join(folder, str(version), "model.onnx"))
        for extra in version_files:
            _put(extra, storage.join(folder, str(version), extra.name))
        _put(served_config, storage.join(folder, "config.pbtxt"))
    return folder


def _checked_model(game_name: str, version: str, workdir: Path) -> tuple[Path, float]:
    """The version's ONNX file with its weights inline, once it is known to take and
    give the game's tensors, and its value discount."""
    from mlflow.exceptions import MlflowException

    from cartridge.evaluators.onnx_model import OnnxEvaluator
    from cartridge.games import load
    from cartridge.tracking import fetch_onnx

    try:
        downloaded = fetch_onnx(version_uri(game_name, version), workdir)
    except FileNotFoundError as error:
        raise Unservable(f"v{version} has no ONNX model: {error}") from error
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise  # the registry did not answer: not the version's fault
        raise Unservable(f"v{version}'s model artifact is missing: {error.message}") from error
    single, value_discount = _single_file(downloaded)
    try:
        OnnxEvaluator(load(game_name), single)  # the same check every player makes
    except ValueError as error:
        raise Unservable(f"v{version} is not a {game_name} model: {error}") from error
    return single, value_discount


def withdraw(game_name: str, version: str, repository: str | None = None) -> None:
    """Delete a version's folder, so the repository's newest version is an older one."""
    from cartridge import storage

    storage.delete_prefix(storage.join(model_folder(game_name, repository), str(version)))


PUBLISHED_LINE = "# Published for registry version "


def published_version(game_name: str, repository: str | None = None) -> str | None:
    """The version the model's config was last written for. The config goes last, so a
    publication cut short leaves the previous version's config: its version folder may
    exist, but it is not published until this names it."""
    from cartridge import storage

    location = storage.join(model_folder(game_name, repository), "config.pbtxt")
    try:
        if storage.is_s3(location):
            with tempfile.TemporaryDirectory(prefix="cartridge-config-") as workdir:
                text = storage.download_file(location, Path(workdir) / "config.pbtxt").read_text()
        else:
            text = Path(location).read_text()
    except FileNotFoundError:
        return None
    except storage.StorageError as error:
        if "does not exist" in str(error):
            return None
        raise
    found = [line for line in text.splitlines() if line.startswith(PUBLISHED_LINE)]
    return found[-1].removeprefix(PUBLISHED_LINE).strip() if found else None


def _parameters(value_discount: float, version: str) -> str:
    """The served version's search setting, for clients that search with the model.
    Triton serves only the newest version, so the model-level config can describe it."""
    return (
        f"\n{PUBLISHED_LINE}{version}"
        "\n# Written at publication: the served version's value discount (its values are\n"
        "# discounted results, so searches must back them up with the same factor).\n"
        f'parameters: {{ key: "{VALUE_DISCOUNT_KEY}" '
        f'value: {{ string_value: "{value_discount!r}" }} }}\n'
    )


def _single_file(onnx_file: Path) -> tuple[Path, float]:
    """The model with its weights inline, and its value discount. MLflow stores ONNX
    weights as external data beside the graph, but Triton loads `model.onnx` alone from
    its version folder."""
    import onnx

    model = onnx.load(str(onnx_file))  # pulls the external data in
    single = onnx_file.with_name("model-single.onnx")
    onnx.save_model(model, str(single), save_as_external_data=False)
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    return single, parse_value_discount(metadata.get(VALUE_DISCOUNT_KEY), f"{onnx_file} metadata")


def _put(local: Path, destination: str) -> None:
    from cartridge import storage

    if storage.is_s3(destination):
        storage.upload_file(local, destination)
    else:
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        Path(destination).write_bytes(local.read_bytes())
