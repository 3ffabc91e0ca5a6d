"""What the web app shows about a game's model: the champion's lineage and training curves.

Everything comes from the MLflow registry and tracking server, the same records the
pipeline writes, so the browser shows exactly what the MLflow UI shows.
"""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from cartridge.names import CHAMPION, experiment_name, registered_model_name
from cartridge.serving.reconcile import REFUSED_TAG

TRAINING_METRICS = ("loss", "policy_loss", "value_loss")
MAX_TRAINING_RUNS = 100


def _arena(tags: dict[str, str]) -> dict | None:
    if "arena_score" not in tags:
        return None
    low, _, high = tags.get("arena_ci95", "").partition(",")
    solver = tags.get("solver_optimal_fraction")
    keeps_result = tags.get("solver_result_fraction")
    return {
        "opponent": tags.get("arena_opponent"),
        "games": int(tags.get("arena_games", 0)),
        "wins": int(tags.get("arena_wins", 0)),
        "draws": int(tags.get("arena_draws", 0)),
        "losses": int(tags.get("arena_losses", 0)),
        "score": float(tags["arena_score"]),
        "ci95": [float(low), float(high)] if high else None,
        "elo": float(tags["arena_elo"]) + 0.0 if "arena_elo" in tags else None,  # no -0
        "solver_optimal_fraction": float(solver) if solver else None,
        "solver_result_fraction": float(keeps_result) if keeps_result else None,
        "gate": tags.get("gate"),
    }


def champion_lineage(client: MlflowClient, game_name: str, ui_url: str) -> dict | None:
    """The champion's registry version, promotion time, arena record, training run and
    parameters; None when the game has no champion yet."""
    name = registered_model_name(game_name)
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    run_id = version.run_id or version.tags.get("run_id")
    parameters: dict[str, str] = {}
    run_url = None
    if run_id:
        try:
            run = client.get_run(run_id)
            parameters = dict(run.data.params)
            run_url = f"{ui_url}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
        except MlflowException:
            pass  # the run was deleted; the version still stands
    return {
        "version": version.version,
        "promoted_at": version.tags.get("promoted_at"),
        "run_id": run_id,
        "run_url": run_url,
        "registry_url": f"{ui_url}/#/models/{name}/versions/{version.version}",
        "arena": _arena(version.tags),
        "parameters": parameters,
        "serving_refused": version.tags.get(REFUSED_TAG),
    }


def training_stats(client: MlflowClient, game_name: str) -> dict:
    """Loss curves of the training runs in order, on one cumulative step axis, and each
    registered version's arena record."""
    experiment = client.get_experiment_by_name(experiment_name(game_name))
    training: dict[str, list[list[float]]] = {metric: [] for metric in TRAINING_METRICS}
    if experiment is not None:
        runs = client.search_runs(
            [experiment.experiment_id],
            "metrics.loss >= 0",
            order_by=["attributes.start_time DESC"],
            max_results=MAX_TRAINING_RUNS,
        )
        offset = 0
        for run in reversed(runs):
            last_step = 0
            for metric in TRAINING_METRICS:
                history = client.get_metric_history(run.info.run_id, metric)
                for point in sorted(history, key=lambda p: p.step):
                    training[metric].append([offset + point.step, point.value])
                    last_step = max(last_step, point.step)
            offset += last_step
    arena = []
    name = registered_model_name(game_name)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION).version
    except MlflowException:
        champion = None
    for version in client.search_model_versions(f"name = '{name}'"):
        record = _arena(version.tags)
        if record is not None:
            arena.append(
                {
                    "version": version.version,
                    "score": record["score"],
                    "elo": record["elo"],
                    "solver_optimal_fraction": record["solver_optimal_fraction"],
                    "champion": version.version == champion,
                }
            )
    arena.sort(key=lambda item: int(item["version"]))
    return {
        "game": game_name,
        "training": training,
        "arena": arena,
        "ratings": _ratings(client, game_name),
    }


def _ratings(client: MlflowClient, game_name: str) -> list[dict]:
    """Every rated version's Bradley-Terry rating (`random` = 0) with its interval."""
    from cartridge.arena.ratings import registry_ratings

    rated = registry_ratings(client, game_name)
    versions = [r for name, r in rated.items() if name.startswith("v") and name[1:].isdigit()]
    return [
        {"version": r.player[1:], "elo": r.elo, "low": r.low, "high": r.high, "games": r.games}
        for r in sorted(versions, key=lambda r: int(r.player[1:]))
    ]
