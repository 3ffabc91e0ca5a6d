"""One AlphaZero iteration as steps: what each Kubeflow component runs.

The components in `kfp_pipelines/` are thin shells around these functions, so the
same steps run under `kfp.local` here and on a cluster. Each step takes the run's
settings (`cartridge.settings`) and the endpoints it talks to by keyword. Each is safe
to retry: self-play shards are immutable and found again by name, training resumes
from its checkpoint, and promotion checks the registry before it changes anything.

Replay layout: `<replay_root>/<game>/<pipeline run>/iter-000007/shard-003/`; the replay
window is the game's last K iterations, whichever runs played them.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ValidationError

from cartridge import storage
from cartridge.logs import pipeline_step
from cartridge.names import (
    CHALLENGER,
    CHAMPION,
    registered_model_name,
    triton_model_name,
    version_of,
    version_uri,
)
from cartridge.settings import (
    SETTING_GROUPS,
    Endpoints,
    GateSettings,
    RetentionSettings,
    SelfPlaySettings,
    Settings,
    TrainingSettings,
    check_run,
    problems,
)
from cartridge.tracking import alias_version, ensure_experiment, use_tracking

log = logging.getLogger(__name__)


def shard_location(
    replay_root: str, game_name: str, run_id: str, iteration: int, shard: int
) -> str:
    return storage.join(
        replay_root, game_name, run_id, f"iter-{iteration:06d}", f"shard-{shard:03d}"
    )


def champion_version(client: MlflowClient, game_name: str, uri: str) -> str | None:
    """The version a `models:/name/N` URI names; for an empty URI, the registry's current
    champion (None before the first promotion)."""
    return version_of(uri) if uri else alias_version(client, game_name, CHAMPION)


@pipeline_step
def plan_selfplay(
    game_name: str, champion: str, shards: list, *, endpoints: Endpoints
) -> list[dict]:
    """The self-play fan-out: one item per shard, each naming the champion to play with,
    so every shard of an iteration uses the same network."""
    client = use_tracking(endpoints.mlflow_tracking_uri)
    uri = version_uri(game_name, champion_version(client, game_name, champion))
    return [{"shard": int(shard), "champion": uri} for shard in shards]


def check_parameters(game_name: str, params: dict) -> dict[str, Settings]:
    """A run's flat parameters as settings groups; ValueError naming every bad one.

    The KFP UI accepts any value of a parameter's declared type, so the first step
    checks them all: a bad gate setting must fail the run in seconds, not after an
    iteration of self-play and training."""
    found: list[str] = []
    params = dict(params)
    iterations = params.pop("iterations", 1)
    if not isinstance(iterations, int) or iterations < 1:
        found.append(f"iterations: must be a whole number of at least 1, got {iterations!r}")
    groups: dict[str, Settings] = {}
    for key, model in SETTING_GROUPS.items():
        names = model.parameter_fields()
        try:
            groups[key] = model.from_parameters({k: v for k, v in params.items() if k in names})
        except ValidationError as error:
            found += problems(error, model)
    known = {name for model in SETTING_GROUPS.values() for name in model.parameter_fields()}
    found += [f"{name}: not a pipeline parameter" for name in sorted(set(params) - known)]
    try:
        check_run(game_name, groups)
    except ValueError as error:
        found.insert(0, str(error))
    if found:
        raise ValueError("bad pipeline parameters: " + "; ".join(found))
    return groups


@pipeline_step
def begin_pipeline_run(
    game_name: str, pipeline_run_id: str, params: dict, *, endpoints: Endpoints
) -> str:
    """Check the run's parameters and open the pipeline's own MLflow run, parent of
    every training run; returns its id."""
    import mlflow

    groups = check_parameters(game_name, params)
    logged = {"iterations": params.get("iterations", 1)}
    for settings in groups.values():
        logged.update(settings.parameters())
    client = use_tracking(endpoints.mlflow_tracking_uri)
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
        params=[mlflow.entities.Param(k, str(v)) for k, v in sorted(logged.items())],
    )
    return run.info.run_id


@pipeline_step
def finish_pipeline_run(
    game_name: str,
    pipeline_run_id: str,
    succeeded: bool,
    message: str = "",
    *,
    endpoints: Endpoints,
) -> None:
    """Close the pipeline's MLflow run; on failure also close any training run the failed
    step left RUNNING (a killed pod cannot do it itself). KFP's final status names only
    the failed group, so the run is pointed at for the failing step's own logs."""
    client = use_tracking(endpoints.mlflow_tracking_uri)
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


@pipeline_step
def selfplay_step(
    game_name: str,
    iteration: int,
    shard: int,
    champion: str,
    *,
    settings: SelfPlaySettings,
    endpoints: Endpoints,
    pipeline_run_id: str,
    seed: int,
    seed_with_run_id: bool = False,
) -> str:
    """Play one shard with the champion named by the `champion` URI (uniform priors
    while there is none); returns where the shard is. The champion runs here, or on
    the Triton that `endpoints.selfplay_triton` names. The shard's seed comes from
    `seed`, the iteration and the shard, and with `seed_with_run_id` the KFP run id
    too, so recurring runs do not replay each other's games (`cartridge.seeds`)."""
    from cartridge.seeds import derive_seed
    from cartridge.shard_writer import write_selfplay_shard

    destination = shard_location(
        endpoints.replay_root, game_name, pipeline_run_id, iteration, shard
    )
    import time

    from cartridge import pipeline_metrics

    client = use_tracking(endpoints.mlflow_tracking_uri)
    version = champion_version(client, game_name, champion)
    started = time.perf_counter()
    with storage.endpoint(endpoints.s3_endpoint):
        played = write_selfplay_shard(
            game_name,
            destination,
            settings,
            model=version_uri(game_name, version) or None,
            seed=derive_seed(
                seed, pipeline_run_id if seed_with_run_id else "", "selfplay", iteration, shard
            ),
            keep_existing=True,
            triton=endpoints.selfplay_triton if version else "",
        )
    if played is not None:  # None: a retry found the shard written
        seconds = time.perf_counter() - started
        pipeline_metrics.push(
            endpoints.pushgateway_url,
            game_name,
            {
                "cartridge_selfplay_positions_per_second": played.positions / seconds,
                "cartridge_selfplay_positions": played.positions,
                "cartridge_selfplay_games": played.games,
            },
            shard=str(shard),
        )
    return destination


@pipeline_step
def train_step(
    game_name: str,
    iteration: int,
    champion: str,
    *,
    settings: TrainingSettings,
    endpoints: Endpoints,
    pipeline_run_id: str,
    parent_run_id: str,
    seed: int,
    seed_with_run_id: bool = False,
    device: str = "auto",
) -> str:
    """Train on the game's last `window` iterations (this run's and, at its start, the
    previous runs') and register a challenger; a retry resumes from the step's
    checkpoint. Returns the registered version's URI.

    `train_from` "latest" continues from the newest trained model (alias
    `challenger`), promoted or not: as in AlphaGo Zero, the optimisation never
    restarts and the gate only decides which network plays self-play and is served.
    Restarting from the champion after a rejected challenger throws that
    iteration's training away. "champion" starts from the champion's weights, for
    when the newest model is known bad (after a rollback).

    `device` "cuda" (what a step that requests a GPU passes) fails at once when no GPU
    is visible, rather than training for hours on the CPU."""
    from cartridge.networks import network_for
    from cartridge.seeds import derive_seed
    from cartridge.training import TrainConfig, resolve_window, train
    from cartridge.training import checkpoint as checkpoints
    from cartridge.training.trainer import select_device

    select_device(device)  # before anything is read or logged
    client = use_tracking(endpoints.mlflow_tracking_uri)
    champion_number = champion_version(client, game_name, champion)
    checkpoint_dir = storage.join(
        endpoints.checkpoint_root, game_name, pipeline_run_id, f"iter-{iteration:06d}"
    )
    config = TrainConfig(
        game=game_name,
        steps=settings.steps,
        batch_size=settings.batch_size,
        seed=derive_seed(seed, pipeline_run_id if seed_with_run_id else "", "train", iteration),
        network=network_for(game_name, settings.blocks, settings.channels),
        device=device,
        reanalyse_fraction=settings.reanalyse_fraction,
        reanalyse_simulations=settings.reanalyse_simulations,
    )
    with (
        storage.endpoint(endpoints.s3_endpoint),
        tempfile.TemporaryDirectory(prefix="cartridge-train-") as workdir,
    ):
        resume = checkpoints.exists(checkpoint_dir)
        shards = resolve_window(storage.join(endpoints.replay_root, game_name), settings.window)
        start = None
        if not resume:
            start = _starting_version(client, game_name, champion_number, settings.train_from)
        init = checkpoint_of(client, game_name, start, Path(workdir)) if start else None
        result = train(
            config,
            shards,
            checkpoint_dir=checkpoint_dir,
            tracking_uri=endpoints.mlflow_tracking_uri,
            resume=resume,
            iteration=iteration,
            pipeline_run_id=pipeline_run_id,
            init_checkpoint=init,
            init_model=version_uri(game_name, start),
            parent_run_id=parent_run_id,
        )
    return version_uri(game_name, str(result.model_version))


def _starting_version(
    client: MlflowClient, game_name: str, champion: str | None, train_from: str
) -> str | None:
    """The version whose weights training starts from (None: fresh weights)."""
    if train_from == "champion":
        return champion
    return alias_version(client, game_name, CHALLENGER) or champion


def checkpoint_of(
    client: MlflowClient, game_name: str, version_number: str, directory: Path
) -> str:
    """The torch checkpoint logged by the training run that produced a model version;
    FileNotFoundError naming the version when it has none (registered by hand)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name = registered_model_name(game_name)
    version = client.get_model_version(name, version_number)
    run_id = version.tags.get("run_id") or version.run_id
    try:
        return mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="checkpoint/checkpoint.pt", dst_path=str(directory)
        )
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise FileNotFoundError(
            f"{name} v{version_number} has no training checkpoint to continue from (run "
            f"{run_id or '-'} logged none; a version registered by hand?): train from "
            "another version (train_from champion) or register one made by training"
        ) from error


@pipeline_step
def arena_step(
    game_name: str, challenger: str, *, settings: GateSettings, endpoints: Endpoints, seed: int
) -> bool:
    """The version `challenger` (this run's training output) vs the champion (vs random
    at first); the results and the champion played become tags on the challenger's
    version whatever the outcome. Returns whether the gate passed."""
    from cartridge.arena.gate import evaluate_challenger
    from cartridge.promotion import record_arena

    client = use_tracking(endpoints.mlflow_tracking_uri)
    match, decision, version = evaluate_challenger(
        client, game_name, settings, seed, challenger=version_of(challenger)
    )
    record_arena(client, game_name, version, match, decision)
    log.info("challenger v%s: %s", version, decision.reason)
    if settings.round_robin:
        from cartridge.arena.ratings import play_round_robin

        played = play_round_robin(
            client, game_name, settings.round_robin, settings.games, settings.simulations, seed
        )
        log.info(
            "round robin among the %d newest versions: %d new matches", settings.round_robin, played
        )
    return decision.promote


@pipeline_step
def promote_step(game_name: str, challenger: str, *, endpoints: Endpoints) -> str:
    """Promote the challenger the gate passed, if the champion is still the one the gate
    played (another run or a person may have moved it since); returns the champion's
    URI, the unchanged one when the promotion was refused."""
    from cartridge.promotion import ChampionMoved, promote

    client = use_tracking(endpoints.mlflow_tracking_uri)
    try:
        with storage.endpoint(endpoints.s3_endpoint):
            result = promote(
                client,
                game_name,
                champion_version(client, game_name, challenger),
                triton_url=endpoints.triton_url,
                gated=True,
            )
    except ChampionMoved as refused:
        print(f"not promoted: {refused}")  # the step's log in the KFP UI
        log.warning("%s", refused)
        return version_uri(game_name, champion_version(client, game_name, ""))
    return version_uri(game_name, result.champion)


@pipeline_step
def keep_step(game_name: str, *, endpoints: Endpoints) -> str:
    """The gate failed: the champion stays; returns its URI ('' while there is none)."""
    client = use_tracking(endpoints.mlflow_tracking_uri)
    return version_uri(game_name, champion_version(client, game_name, ""))


@pipeline_step
def gc_step(game_name: str, *, settings: RetentionSettings, endpoints: Endpoints) -> str:
    """The run's last step: retention (`cartridge.retention`) for its game, so a
    recurring pipeline keeps its storage bounded without anything else scheduled.
    Returns the report as JSON; a deletion that failed is left for the next pass."""
    from cartridge.retention import collect

    client = use_tracking(endpoints.mlflow_tracking_uri)
    with storage.endpoint(endpoints.s3_endpoint):
        report = collect(
            client,
            [game_name],
            settings,
            replay_root=endpoints.replay_root,
            checkpoint_root=endpoints.checkpoint_root,
        )
    print(report.summary())  # the step's log in the KFP UI
    return report.model_dump_json()


def _push_report(
    gateway: str,
    game_name: str,
    iteration: int,
    metrics: dict[str, float],
    challenger: str | None,
    champion: str | None,
) -> None:
    """The iteration's figures for Prometheus (`cartridge.pipeline_metrics`). Each
    iteration registers one version, so the challengers trained since the champion are
    the difference of their version numbers (all of them before any champion)."""
    import time

    from cartridge import pipeline_metrics

    values = {
        f"cartridge_pipeline_{key}": value
        for key, value in metrics.items()
        if f"cartridge_pipeline_{key}" in pipeline_metrics.SERIES
    }
    if challenger:
        since = int(challenger) - int(champion) if champion else int(challenger)
        values["cartridge_pipeline_iterations_since_promotion"] = max(since, 0)
    values["cartridge_pipeline_iteration"] = iteration
    values["cartridge_pipeline_last_success_timestamp_seconds"] = time.time()
    pipeline_metrics.push(gateway, game_name, values)


TRAINING_LOSSES = ("loss", "policy_loss", "value_loss")
ARENA_METRICS = (
    "arena_score",
    "arena_wins",
    "arena_draws",
    "arena_losses",
    "arena_elo",
    "solver_optimal_fraction",
    "rating",
    "rating_low",
    "rating_high",
)


class IterationReport(BaseModel):
    """One iteration as the KFP UI shows it: scalar metrics, a Markdown summary, and
    the trained model's registry coordinates."""

    metrics: dict[str, float]
    markdown: str
    model_uri: str
    model_metadata: dict[str, str]


@pipeline_step
def iteration_report(
    game_name: str,
    iteration: int,
    challenger: str,
    champion: str,
    *,
    endpoints: Endpoints,
    pipeline_run_id: str,
) -> IterationReport:
    """What iteration `iteration` did: its self-play shards' games and results, the
    training run's final losses, the arena's result on the challenger, and whether it
    became champion. Read back from S3 and MLflow, where the steps wrote it."""
    from cartridge.replay import METADATA_FILE, read_metadata

    client = use_tracking(endpoints.mlflow_tracking_uri)
    version_number = version_of(challenger)
    totals = dict.fromkeys(
        ("games", "positions", "first_player_wins", "draws", "second_player_wins"), 0
    )
    root = storage.join(endpoints.replay_root, game_name, pipeline_run_id, f"iter-{iteration:06d}")
    with storage.endpoint(endpoints.s3_endpoint), tempfile.TemporaryDirectory() as workdir:
        for shard in storage.list_children(root):
            storage.download_file(storage.join(shard, METADATA_FILE), Path(workdir) / METADATA_FILE)
            metadata = read_metadata(workdir)
            for key in totals:
                totals[key] += getattr(metadata, key)
    metrics = {f"selfplay_{key}": float(value) for key, value in totals.items()}
    version = client.get_model_version(registered_model_name(game_name), version_number)
    run_id = version.run_id or version.tags.get("run_id") or ""
    # The training run holds its losses, and the gate logged the arena's result and the
    # version's rating there too (`promotion.record_arena`).
    trained = client.get_run(run_id).data.metrics if run_id else {}
    metrics.update({f"train_{k}": trained[k] for k in TRAINING_LOSSES if k in trained})
    if "samples_per_sec" in trained:
        metrics["train_samples_per_second"] = trained["samples_per_sec"]
    metrics.update({k: trained[k] for k in ARENA_METRICS if k in trained})
    tags = version.tags
    promoted = version_of(champion) == version_number
    metrics["promoted"] = 1.0 if promoted else 0.0
    champion_number = version_of(champion)
    rows = [
        (
            "self-play",
            f"{totals['games']} games, {totals['positions']} positions "
            f"(X {totals['first_player_wins']} / draw {totals['draws']} / "
            f"O {totals['second_player_wins']})",
        ),
        (
            "training",
            ", ".join(
                f"{k.removeprefix('train_')} {v:.4f}"
                for k, v in metrics.items()
                if k.startswith("train_")
            )
            or "-",
        ),
        ("arena", tags.get("gate", "-")),
        ("champion", f"v{champion_number}" if champion_number else "none yet"),
    ]
    markdown = "\n".join(
        [
            f"### {game_name}, iteration {iteration}: challenger v{version_number} "
            f"{'promoted' if promoted else 'kept out'}",
            "",
            "| step | outcome |",
            "| --- | --- |",
            *[f"| {step} | {text.replace('|', '/')} |" for step, text in rows],
        ]
    )
    _push_report(endpoints.pushgateway_url, game_name, iteration, metrics, version_number,
                 champion_number)  # fmt: skip
    return IterationReport(
        metrics=metrics,
        markdown=markdown,
        model_uri=challenger,
        model_metadata={
            "registered_model": registered_model_name(game_name),
            "registry_version": version_number or "",
            "mlflow_run_id": run_id,
            "promoted": str(promoted).lower(),
            "champion_version": champion_number or "",
            # Triton's version folders are registry numbers: the champion is served as
            # this model at `champion_version` (once the reconciler has loaded it).
            "triton_model": triton_model_name(game_name),
        },
    )
