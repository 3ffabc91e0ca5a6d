"""One AlphaZero iteration as steps: what each Kubeflow component runs.

The components in `kfp_pipelines/` are thin shells around these functions, so the
same steps run under `kfp.local` here and on a cluster. Each step is safe to retry:
self-play shards are immutable and found again by name, training resumes from its
checkpoint, and promotion checks the registry before it changes anything.

Replay layout: `<replay_root>/<game>/<pipeline run>/iter-000007/shard-003/`; the replay
window is the game's last K iterations, whichever runs played them.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Literal

from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cartridge import storage
from cartridge.tracking import (
    CHALLENGER,
    ensure_experiment,
    fetch_onnx,
    registered_model_name,
    use_tracking,
)

log = logging.getLogger(__name__)


def connect(mlflow_tracking_uri: str, s3_endpoint: str) -> None:
    """Point this process at the pipeline's MLflow and S3 (keys come from the environment,
    a Kubernetes secret in the cluster)."""
    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    if s3_endpoint:
        os.environ["AWS_ENDPOINT_URL"] = s3_endpoint
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", s3_endpoint)


def shard_location(
    replay_root: str, game_name: str, run_id: str, iteration: int, shard: int
) -> str:
    return storage.join(
        replay_root, game_name, run_id, f"iter-{iteration:06d}", f"shard-{shard:03d}"
    )


def champion_version(game_name: str, uri: str) -> str | None:
    """The version a `models:/name/N` URI names; for an empty URI, the registry's current
    champion (None before the first promotion)."""
    if uri:
        return str(uri).rsplit("/", 1)[-1]
    client = use_tracking(os.environ.get("MLFLOW_TRACKING_URI", ""))
    try:
        return client.get_model_version_by_alias(
            registered_model_name(game_name), "champion"
        ).version
    except MlflowException:
        return None


def champion_uri(game_name: str, version: str | None) -> str:
    return f"models:/{registered_model_name(game_name)}/{version}" if version else ""


def plan_selfplay(game_name: str, champion: str, shards: list) -> list[dict]:
    """The self-play fan-out: one item per shard, each naming the champion to play with,
    so every shard of an iteration uses the same network."""
    uri = champion_uri(game_name, champion_version(game_name, champion))
    return [{"shard": int(shard), "champion": uri} for shard in shards]


class PipelineParameters(BaseModel):
    """What a run may be started with. The KFP UI accepts any value of the declared
    type, so the first step checks them all: a bad gate setting must fail the run in
    seconds, not after an iteration of self-play and training."""

    model_config = ConfigDict(extra="forbid")

    iterations: int = Field(ge=1)
    games_per_shard: int = Field(ge=1)
    simulations: int = Field(ge=1)
    value_discount: float = Field(ge=0.5, le=1.0)
    full_search_fraction: float = Field(gt=0, le=1)
    fast_simulations: int = Field(ge=0)
    search_value_weight: float = Field(ge=0, le=1)
    td_steps: int = Field(ge=0, le=512)
    random_opening_plies: int = Field(ge=0, le=64)
    train_steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    replay_window: int = Field(ge=1)
    train_from: Literal["latest", "champion"]
    arena_games: int = Field(ge=2)
    gate_method: Literal["lcb", "sprt"]
    gate_threshold: float = Field(gt=0, lt=1)
    gate_solver_z: float = Field(ge=0, le=10)


def check_parameters(game_name: str, params: dict) -> None:
    """ValueError naming every bad parameter, or None."""
    from cartridge.games import GAME_NAMES

    problems = []
    if game_name not in GAME_NAMES:
        problems.append(f"game: {game_name!r} is not one of {', '.join(GAME_NAMES)}")
    try:
        checked = PipelineParameters(**params)
    except ValidationError as error:
        problems += [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]
    else:
        if not problems:  # the self-play step's own config owns the rules across fields
            from cartridge.games import load
            from cartridge.selfplay import SelfPlayConfig

            try:
                SelfPlayConfig.for_game(
                    load(game_name),
                    checked.games_per_shard,
                    checked.simulations,
                    checked.value_discount,
                    full_search_fraction=checked.full_search_fraction,
                    fast_simulations=checked.fast_simulations or None,
                    search_value_weight=checked.search_value_weight,
                    td_steps=checked.td_steps,
                    random_opening_plies=checked.random_opening_plies,
                )
            except ValidationError as error:
                problems += [e["msg"].removeprefix("Value error, ") for e in error.errors()]
        from cartridge.solvers import require_solver

        try:
            if checked.gate_solver_z:
                require_solver(game_name, "the gate's solver check")
        except ValueError as error:
            problems.append(f"gate_solver_z: {error}; use 0")
    if problems:
        raise ValueError("bad pipeline parameters: " + "; ".join(problems))


def begin_pipeline_run(game_name: str, pipeline_run_id: str, params: dict) -> str:
    """The pipeline's own MLflow run, parent of every training run; returns its id."""
    import mlflow

    check_parameters(game_name, params)
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


def finish_pipeline_run(
    game_name: str, pipeline_run_id: str, succeeded: bool, message: str = ""
) -> None:
    """Close the pipeline's MLflow run; on failure also close any training run the failed
    step left RUNNING (a killed pod cannot do it itself). KFP's final status names only
    the failed group, so the run is pointed at for the failing step's own logs."""
    client = use_tracking(os.environ.get("MLFLOW_TRACKING_URI", ""))
    experiment_id = ensure_experiment(client, game_name)
    runs = client.search_runs(
        [experiment_id], f"tags.pipeline_run_id = '{pipeline_run_id}' and tags.kind = 'pipeline'"
    )
    if not runs:
        log.warning(
            "no MLflow run for pipeline run %s: it failed before starting one", pipeline_run_id
        )
        return
    parent = runs[0].info.run_id
    if succeeded:
        client.set_terminated(parent, "FINISHED")
        return
    reason = message or "a pipeline step failed"
    _close_with_children(
        client,
        experiment_id,
        parent,
        "FAILED",
        f"{reason} (see the failed step's logs in KFP run {pipeline_run_id})",
    )


def abandon_pipeline_runs(game_name: str, tracking_uri: str, since_ms: int) -> list[str]:
    """Mark KILLED the pipeline runs a stopped local run leaves RUNNING (those begun at
    or after `since_ms`), with their running training runs: the exit handler that would
    close them dies with the process. Returns the closed pipeline runs' ids."""
    client = use_tracking(tracking_uri)
    experiment_id = ensure_experiment(client, game_name)
    stopped = client.search_runs(
        [experiment_id],
        "tags.kind = 'pipeline' and attributes.status = 'RUNNING' "
        f"and attributes.start_time >= {int(since_ms)}",
    )
    for run in stopped:
        _close_with_children(
            client, experiment_id, run.info.run_id, "KILLED", "the local pipeline run was stopped"
        )
    return [run.info.run_id for run in stopped]


def _close_with_children(client, experiment_id: str, parent: str, status: str, reason: str):
    """End `parent` with `status` and a `failure` tag, and every training run under it
    still RUNNING (a killed pod or process cannot end its own)."""
    client.set_tag(parent, "failure", reason[:4900])
    for child in client.search_runs(
        [experiment_id],
        f"tags.mlflow.parentRunId = '{parent}' and attributes.status = 'RUNNING'",
    ):
        client.set_terminated(child.info.run_id, status)
    client.set_terminated(parent, status)


def selfplay_step(
    game_name: str,
    iteration: int,
    shard: int,
    games: int,
    simulations: int,
    replay_root: str,
    pipeline_run_id: str,
    seed: int,
    champion: str | None,
    value_discount: float = 1.0,
    full_search_fraction: float = 1.0,
    fast_simulations: int = 0,
    search_value_weight: float = 0.0,
    random_opening_plies: int = 0,
    td_steps: int = 0,
) -> str:
    """Play one shard with the champion (uniform priors before there is one).
    `fast_simulations` 0 means the default share of `simulations`."""
    from cartridge.evaluators import make_evaluator
    from cartridge.games import load
    from cartridge.replay import sha256_file, write_shard
    from cartridge.selfplay import SelfPlayConfig, play_selfplay

    destination = shard_location(replay_root, game_name, pipeline_run_id, iteration, shard)
    if storage.is_s3(destination) and storage.list_keys(destination):
        log.info("shard %s already written (a retry); keeping it", destination)
        return destination
    game = load(game_name)
    name = registered_model_name(game_name)
    with tempfile.TemporaryDirectory(prefix="cartridge-selfplay-") as workdir:
        model = str(fetch_onnx(f"models:/{name}/{champion}", Path(workdir))) if champion else None
        evaluator = make_evaluator(model or "uniform", game)
        config = SelfPlayConfig.for_game(
            game,
            games,
            simulations,
            value_discount,
            full_search_fraction=full_search_fraction,
            fast_simulations=fast_simulations or None,
            search_value_weight=search_value_weight,
            random_opening_plies=random_opening_plies,
            td_steps=td_steps,
        )
        result = play_selfplay(
            game,
            evaluator,
            config,
            seed=seed * 1000 + iteration * 100 + shard,
            model=f"models:/{name}/{champion}" if champion else "uniform",
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
    champion: str | None,
    blocks: int | None = None,
    channels: int | None = None,
    train_from: str = "latest",
) -> str:
    """Train on the game's last `window` iterations (this run's and, at its start, the
    previous runs') and register a challenger; a retry resumes from the step's
    checkpoint. Returns the registered version's URI.

    `train_from` "latest" continues from the newest trained model (alias
    `challenger`), promoted or not: as in AlphaGo Zero, the optimisation never
    restarts and the gate only decides which network plays self-play and is served.
    Restarting from the champion after a rejected challenger throws that
    iteration's training away. "champion" starts from the champion's weights, for
    when the newest model is known bad (after a rollback)."""
    from cartridge.training import TrainConfig, resolve_window, train
    from cartridge.training import checkpoint as checkpoints

    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    checkpoint_dir = storage.join(
        checkpoint_root, game_name, pipeline_run_id, f"iter-{iteration:06d}"
    )
    resume = checkpoints.exists(checkpoint_dir)
    shards = resolve_window(storage.join(replay_root, game_name), window)
    config = TrainConfig(
        game=game_name,
        steps=steps,
        batch_size=batch_size,
        seed=seed + iteration,
        network=network_for(game_name, blocks, channels),
    )
    with tempfile.TemporaryDirectory(prefix="cartridge-train-") as workdir:
        start = None if resume else _starting_version(game_name, champion, train_from)
        init = checkpoint_of(game_name, start, Path(workdir)) if start else None
        result = train(
            config,
            shards,
            checkpoint_dir=checkpoint_dir,
            tracking_uri=tracking_uri,
            resume=resume,
            iteration=iteration,
            pipeline_run_id=pipeline_run_id,
            init_checkpoint=init,
            init_model=champion_uri(game_name, start),
            parent_run_id=parent_run_id,
        )
    return champion_uri(game_name, str(result.model_version))


def _starting_version(game_name: str, champion: str | None, train_from: str) -> str | None:
    """The version whose weights training starts from (None: fresh weights)."""
    if train_from == "champion":
        return champion
    if train_from != "latest":
        raise ValueError(f"train_from must be 'latest' or 'champion', got {train_from!r}")
    client = use_tracking(os.environ.get("MLFLOW_TRACKING_URI", ""))
    try:
        return client.get_model_version_by_alias(
            registered_model_name(game_name), CHALLENGER
        ).version
    except MlflowException:
        return champion


def network_for(game_name: str, blocks: int | None, channels: int | None):
    """The game's default network, resized when it is a ResNet and a size is given (the
    TicTacToe MLP has no blocks or channels)."""
    from cartridge.games import load
    from cartridge.networks import NetworkConfig, default_network_config

    network = default_network_config(load(game_name))
    if network.kind != "resnet":
        return network
    sizes = {k: int(v) for k, v in (("blocks", blocks), ("channels", channels)) if v}
    return NetworkConfig.model_validate({**network.model_dump(), **sizes})


def checkpoint_of(game_name: str, version_number: str, directory: Path) -> str:
    """The torch checkpoint logged by the training run that produced a model version."""
    import mlflow

    client = use_tracking(os.environ.get("MLFLOW_TRACKING_URI", ""))
    version = client.get_model_version(registered_model_name(game_name), version_number)
    run_id = version.tags.get("run_id") or version.run_id
    return mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="checkpoint/checkpoint.pt", dst_path=str(directory)
    )


def arena_step(
    game_name: str,
    games: int,
    simulations: int,
    method: str,
    threshold: float,
    seed: int,
    solver_z: float = 0.0,
) -> bool:
    """Challenger vs champion (vs random at first); the results become tags on the
    challenger's version whatever the outcome. Returns whether the gate passed.
    `solver_z` 0 leaves the solver out of the gate (see GateConfig)."""
    from cartridge.promotion import GateConfig, evaluate_challenger, record_arena

    client = use_tracking(os.environ.get("MLFLOW_TRACKING_URI", ""))
    gate = GateConfig(method=method, threshold=threshold, solver_z=solver_z)
    match, decision, version = evaluate_challenger(
        client, game_name, gate, games, simulations, seed
    )
    record_arena(client, game_name, version, match, decision)
    log.info("challenger v%s: %s", version, decision.reason)
    return decision.promote


def promote_step(game_name: str, challenger: str) -> str:
    """Promote the challenger (the gate passed) and publish it to Triton; returns the
    champion's URI."""
    from cartridge.promotion import promote

    client = use_tracking(os.environ.get("MLFLOW_TRACKING_URI", ""))
    version = champion_version(game_name, challenger)
    return champion_uri(game_name, promote(client, game_name, version).champion)


def keep_step(game_name: str) -> str:
    """The gate failed: the champion stays; returns its URI ('' while there is none)."""
    return champion_uri(game_name, champion_version(game_name, ""))
