"""One AlphaZero iteration as steps: what each Kubeflow component runs.

The components in `kfp_pipelines/` are thin shells around these functions, so the
same steps run under `kfp.local` here and on a cluster. Each step is safe to retry:
self-play shards are immutable and found again by name, training resumes from its
checkpoint, and promotion checks the registry before it changes anything.

Replay layout: `<replay_root>/<pipeline run>/iter-000007/shard-003/`, so the replay
window of a run is its last K iterations.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from mlflow.exceptions import MlflowException

from cartridge import storage
from cartridge.tracking import ensure_experiment, registered_model_name, use_tracking

log = logging.getLogger(__name__)


def connect(mlflow_tracking_uri: str, s3_endpoint: str) -> None:
    """Point this process at the pipeline's MLflow and S3 (keys come from the environment,
    a Kubernetes secret in the cluster)."""
    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    if s3_endpoint:
        os.environ["AWS_ENDPOINT_URL"] = s3_endpoint
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", s3_endpoint)


def shard_location(replay_root: str, run_id: str, iteration: int, shard: int) -> str:
    return storage.join(replay_root, run_id, f"iter-{iteration:06d}", f"shard-{shard:03d}")


def _champion_onnx(game_name: str, directory: Path) -> str | None:
    from cartridge.tracking import fetch_onnx

    try:
        return str(fetch_onnx(f"models:/{registered_model_name(game_name)}@champion", directory))
    except MlflowException:
        return None  # no champion yet: the first iteration searches with uniform priors


def begin_pipeline_run(game_name: str, pipeline_run_id: str, params: dict) -> str:
    """The pipeline's own MLflow run, parent of every training run; returns its id."""
    import mlflow

    client = use_tracking(os.environ.get("MLFLOW_TRACKING_URI", ""))
    experiment_id = ensure_experiment(client, game_name)
    existing = client.search_runs(
        [experiment_id], f"tags.pipeline_run_id = '{pipeline_run_id}' and tags.kind = 'pipeline'"
    )
    if existing:  # a retried step: reuse the run
        return existing[0].info.run_id
    run = client.create_run(
        experiment_id,
        run_name=f"pipeline-{pipeline_run_id}",
        tags={"pipeline_run_id": pipeline_run_id, "kind": "pipeline", "game": game_name},
    )
    client.log_batch(
        run.info.run_id,
        params=[mlflow.entities.Param(k, str(v)) for k, v in sorted(params.items())],
    )
    return run.info.run_id


def finish_pipeline_run(run_id: str, succeeded: bool, message: str = "") -> None:
    client = use_tracking(os.environ.get("MLFLOW_TRACKING_URI", ""))
    if message:
        client.set_tag(run_id, "failure", message[:4900])
    client.set_terminated(run_id, "FINISHED" if succeeded else "FAILED")


def selfplay_step(
    game_name: str,
    iteration: int,
    shard: int,
    games: int,
    simulations: int,
    replay_root: str,
    pipeline_run_id: str,
    seed: int,
) -> str:
    """Play one shard with the current champion (uniform priors before the first one)."""
    from cartridge.evaluators import make_evaluator
    from cartridge.games import load
    from cartridge.replay import sha256_file, write_shard
    from cartridge.selfplay import SelfPlayConfig, play_selfplay

    destination = shard_location(replay_root, pipeline_run_id, iteration, shard)
    if storage.is_s3(destination) and storage.list_keys(destination):
        log.info("shard %s already written (a retry); keeping it", destination)
        return destination
    game = load(game_name)
    with tempfile.TemporaryDirectory(prefix="cartridge-selfplay-") as workdir:
        model = _champion_onnx(game_name, Path(workdir))
        evaluator = make_evaluator(model or "uniform", game)
        config = SelfPlayConfig.for_game(game, games, simulations)
        result = play_selfplay(
            game,
            evaluator,
            config,
            seed=seed * 1000 + iteration * 100 + shard,
            model=f"models:/{registered_model_name(game_name)}@champion" if model else "uniform",
            model_sha256=sha256_file(Path(model)) if model else None,
        )
        local = write_shard(Path(workdir) / "shard", result)
        storage.copy_dir(local, destination)
    return destination


def train_step(
    game_name: str,
    iteration: int,
    replay_root: str,
    pipeline_run_id: str,
    window: int,
    steps: int,
    batch_size: int,
    checkpoint_root: str,
    parent_run_id: str,
    seed: int,
) -> str:
    """Train on the run's last `window` iterations, starting from the champion's weights;
    a retry resumes from the step's checkpoint. Returns the registered version."""
    from cartridge.training import TrainConfig, resolve_window, train
    from cartridge.training import checkpoint as checkpoints

    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    checkpoint_dir = storage.join(
        checkpoint_root, game_name, pipeline_run_id, f"iter-{iteration:06d}"
    )
    resume = checkpoints.exists(checkpoint_dir)
    shards = resolve_window(storage.join(replay_root, pipeline_run_id), window)
    config = TrainConfig(game=game_name, steps=steps, batch_size=batch_size, seed=seed + iteration)
    with tempfile.TemporaryDirectory(prefix="cartridge-train-") as workdir:
        init = None if resume else _champion_checkpoint(game_name, Path(workdir))
        result = train(
            config,
            shards,
            checkpoint_dir=checkpoint_dir,
            tracking_uri=tracking_uri,
            resume=resume,
            iteration=iteration,
            pipeline_run_id=pipeline_run_id,
            init_checkpoint=init,
            parent_run_id=parent_run_id,
        )
    return str(result.model_version)


def _champion_checkpoint(game_name: str, directory: Path) -> str | None:
    """The torch checkpoint logged by the champion's training run, if there is a champion."""
    import mlflow

    client = use_tracking(os.environ.get("MLFLOW_TRACKING_URI", ""))
    try:
        version = client.get_model_version_by_alias(registered_model_name(game_name), "champion")
    except MlflowException:
        return None
    run_id = version.tags.get("run_id") or version.run_id
    return mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="checkpoint/checkpoint.pt", dst_path=str(directory)
    )


def arena_step(
    game_name: str, games: int, simulations: int, method: str, threshold: float, seed: int
) -> bool:
    """Challenger vs champion (vs random at first); the results become tags on the
    challenger's version whatever the outcome. Returns whether the gate passed."""
    from cartridge.promotion import GateConfig, evaluate_challenger, record_arena

    client = use_tracking(os.environ.get("MLFLOW_TRACKING_URI", ""))
    gate = GateConfig(method=method, threshold=threshold)
    match, decision, version = evaluate_challenger(
        client, game_name, gate, games, simulations, seed
    )
    record_arena(client, game_name, version, match, decision)
    log.info("challenger v%s: %s", version, decision.reason)
    return decision.promote


def promote_step(game_name: str) -> str:
    """Promote the challenger (the gate passed) and publish it to Triton; returns the champion."""
    from cartridge.promotion import promote

    client = use_tracking(os.environ.get("MLFLOW_TRACKING_URI", ""))
    return str(promote(client, game_name).champion)
