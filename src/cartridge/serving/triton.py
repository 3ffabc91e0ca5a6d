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

from cartridge import storage
from cartridge.evaluators.triton_model import ModelUnavailable, TritonUnavailable, host_port
from cartridge.model_metadata import VALUE_DISCOUNT_KEY, parse_value_discount
from cartridge.names import triton_model_name, version_uri

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parents[3] / "triton_models"


def triton_url() -> str | None:
    """Triton's HTTP endpoint from CARTRIDGE_TRITON_URL (`cartridge stack env` sets it)."""
    return os.environ.get("CARTRIDGE_TRITON_URL") or None


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
        self._call(
            "load " + triton_model_name(game_name),
            self._client.load_model,
            triton_model_name(game_name),
        )

    def unload(self, game_name: str) -> None:
        """Stop serving the game's model (its files stay in the repository)."""
        self._call(
            "unload " + triton_model_name(game_name),
            self._client.unload_model,
            triton_model_name(game_name),
        )

    def model_state(self, game_name: str) -> ModelState:
        """The serving state of the game's newest version in Triton's repository index."""
        name = triton_model_name(game_name)
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
        name = triton_model_name(game_name)
        config = self._call(f"give the config of {name}", self._client.get_model_config, name)
        entry = config.get("parameters", {}).get(VALUE_DISCOUNT_KEY)
        return parse_value_discount(
            entry.get("string_value") if entry else None, f"Triton config of {name}"
        )

    def published_games(self) -> list[str]:
        """Games whose model folder exists in the repository."""
        index = self._call("list its repository", self._client.get_model_repository_index)
        prefix = triton_model_name("")
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
    """Ask Triton at `url` (None: CARTRIDGE_TRITON_URL's; '': none) to load the game's
    newest published version.

    Returns None on success or when no Triton is configured, else the reason it
    failed: the registry and the repository are already updated at that point, and the
    web app loads the model on its next request, so a down server must not undo a
    promotion."""
    if url is None:
        url = triton_url()
    if not url:
        return None
    control = TritonControl(url)
    try:
        control.load(game_name)
        return None
    except (TritonUnavailable, ModelUnavailable) as error:
        return str(error)
    finally:
        control.close()


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
    return storage.join(repository or triton_repository(), triton_model_name(game_name))


def publish(game_name: str, version: str, repository: str | None = None) -> str:
    """Copy registry version `version`'s ONNX file and the game's config into the Triton
    repository; returns the model's folder. Re-publishing the same version rewrites the
    same objects. Reads the registry through the process's MLflow tracking URI."""
    from cartridge.tracking import fetch_onnx

    folder = model_folder(game_name, repository)
    templates, version_files = triton_templates()
    config = templates / triton_model_name(game_name) / "config.pbtxt"
    for required in (config, *version_files):
        if not required.is_file():
            raise FileNotFoundError(f"no Triton template at {required}")
    with tempfile.TemporaryDirectory(prefix="cartridge-publish-") as workdir:
        onnx_file, value_discount = _single_file(
            fetch_onnx(version_uri(game_name, version), Path(workdir))
        )
        served_config = Path(workdir) / "config.pbtxt"
        served_config.write_text(config.read_text() + _parameters(value_discount))
        # The config goes last: a Triton polling the repository sees a complete version.
        _put(onnx_file, storage.join(folder, str(version), "model.onnx"))
        for extra in version_files:
            _put(extra, storage.join(folder, str(version), extra.name))
        _put(served_config, storage.join(folder, "config.pbtxt"))
    return folder


def withdraw(game_name: str, version: str, repository: str | None = None) -> None:
    """Delete a version's folder, so the repository's newest version is an older one."""
    storage.delete_prefix(storage.join(model_folder(game_name, repository), str(version)))


def _parameters(value_discount: float) -> str:
    """The served version's search setting, for clients that search with the model.
    Triton serves only the newest version, so the model-level config can describe it."""
    return (
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
    if storage.is_s3(destination):
        storage.upload_file(local, destination)
    else:
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        Path(destination).write_bytes(local.read_bytes())
