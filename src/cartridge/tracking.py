"""MLflow tracking and the model registry, the same code for a server and for embedded use.

With MLFLOW_TRACKING_URI set (a cluster's MLflow, or `cartridge stack env`), runs
go to that server, whose artifacts live in S3. Without it, and with no local
stack running, MLflow runs embedded: a SQLite file and a local artifact folder
under the state directory. Only the tracking URI differs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import mlflow
import numpy as np
import onnx
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

from cartridge.games import Game
from cartridge.model_metadata import INPUT_NAME, OUTPUT_NAMES
from cartridge.names import CHALLENGER, experiment_name, registered_model_name

MAX_METRICS_PER_BATCH = 1000  # MLflow's per-request limit


def resolve_tracking_uri(home: Path, explicit: str | None = None) -> str:
    """Explicit URI, else MLFLOW_TRACKING_URI, else embedded SQLite under `home`."""
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(home / 'mlflow.db').resolve()}"


def use_tracking(tracking_uri: str) -> MlflowClient:
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def alias_version(client: MlflowClient, game_name: str, alias: str) -> str | None:
    """The version an alias of the game's registered model names; None when it names
    none (or the model is not registered yet)."""
    try:
        return str(
            client.get_model_version_by_alias(registered_model_name(game_name), alias).version
        )
    except MlflowException:
        return None


def ensure_experiment(client: MlflowClient, game_name: str) -> str:
    """The game's experiment id. An embedded (SQLite) store keeps artifacts in
    `mlartifacts/` next to its database file; a server decides for itself."""
    name = experiment_name(game_name)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if client.tracking_uri.startswith("sqlite:///"):
        database = Path(client.tracking_uri.removeprefix("sqlite:///"))
        location = (database.parent / "mlartifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


class MetricBuffer:
    """Collects per-step metrics and sends them with `log_batch`, about 100x cheaper
    per point than one request each."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client = client
        self.run_id = run_id
        self.pending: list[Metric] = []

    def add(self, step: int, values: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in values.items()]

    def flush(self) -> None:
        while self.pending:
            chunk = self.pending[:MAX_METRICS_PER_BATCH]
            self.client.log_batch(self.run_id, metrics=chunk)
            self.pending = self.pending[MAX_METRICS_PER_BATCH:]


def onnx_signature(game: Game) -> ModelSignature:
    """Explicit tensor signature: `planes` in; `policy_logits` and `value` out; batch is -1."""
    channels, height, width = game.planes_shape
    return ModelSignature(
        inputs=Schema(
            [TensorSpec(np.dtype(np.float32), (-1, channels, height, width), INPUT_NAME)]
        ),
        outputs=Schema(
            [
                TensorSpec(np.dtype(np.float32), (-1, game.num_actions), OUTPUT_NAMES[0]),
                TensorSpec(np.dtype(np.float32), (-1,), OUTPUT_NAMES[1]),
            ]
        ),
    )


def log_and_register(
    client: MlflowClient, onnx_path: Path, game: Game, tags: dict[str, str]
) -> tuple[str, str]:
    """Log the ONNX model to the active run, register it as a new version of
    `cartridge-<game>` with the given tags, and point alias `challenger` at it.

    Returns (model URI inside the run, registered version).
    """
    info = mlflow.onnx.log_model(
        onnx.load(str(onnx_path)),
        name="model",
        signature=onnx_signature(game),
        input_example=None,
    )
    name = registered_model_name(game.name)
    version = mlflow.register_model(info.model_uri, name, tags=tags)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    registered = client.get_registered_model(name)
    if not registered.description:
        client.update_registered_model(name, description=model_description(game))
    # As text, as the registry's REST API and every `models:/name/N` URI have it (the
    # embedded SQLite store hands back an int).
    return info.model_uri, str(version.version)


def model_description(game: Game) -> str:
    """What a registered model is, for the MLflow registry UI."""
    from cartridge.games import describe
    from cartridge.names import triton_model_name

    channels, height, width = game.planes_shape
    return (
        f"AlphaZero policy-value network for {describe(game.name).title}, trained by "
        f"Cartridge's pipeline. ONNX: `{INPUT_NAME}` float32 [batch, {channels}, {height}, "
        f"{width}] (the side to move's stones, then the opponent's) -> `{OUTPUT_NAMES[0]}` "
        f"[batch, {game.num_actions}] and `{OUTPUT_NAMES[1]}` [batch] in [-1, 1] for the "
        f"side to move. Alias `challenger`: newest trained; `champion`: served by Triton "
        f"as `{triton_model_name(game.name)}` (it follows the alias); `previous`: the "
        "rollback target. Version tags carry the lineage and arena results."
    )


def fetch_onnx(model_uri: str, directory: Path) -> Path:
    """Download a registered or logged ONNX model (`models:/name@alias`, `models:/name/3`,
    `runs:/...`) and return the path of its .onnx file."""
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(directory))
    )
    found = sorted(local.rglob("*.onnx")) if local.is_dir() else [local]
    if not found:
        raise FileNotFoundError(f"{model_uri} holds no .onnx file")
    return found[0]
