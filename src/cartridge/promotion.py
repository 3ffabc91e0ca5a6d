"""Promotion: move the registry's aliases, then bring serving in line with them.

Alias `champion` moves to the promoted version and `previous` keeps the champion before
it (the rollback target). What Triton serves then follows the alias: a reconcile pass
(`cartridge.serving.reconcile`) publishes the champion into the Triton model
repository, withdraws the other versions and loads it, exactly as a move of the alias
in the MLflow UI is served. Every step checks the current state first, so a promotion
that is retried, or interrupted and finished by the next pass, ends in the same
state. Whether to promote is the gate's call (`cartridge.arena.gate`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from cartridge.arena.gate import GateDecision
from cartridge.arena.stats import MatchResult
from cartridge.names import CHALLENGER, CHAMPION, PREVIOUS, registered_model_name
from cartridge.serving import triton
from cartridge.serving.reconcile import reconcile_game
from cartridge.tracking import alias_version

log = logging.getLogger(__name__)
GATE_CHAMPION_TAG = "gate_champion"


class ChampionMoved(ValueError):
    """The champion is no longer the one the gate played: the verdict no longer holds."""


class PromotionResult(BaseModel):
    game: str
    champion: str | None
    previous: str | None
    changed: bool
    triton_model: str | None = None
    triton_error: str | None = None


def promote(
    client: MlflowClient,
    game_name: str,
    version: str | None = None,
    match: MatchResult | None = None,
    decision: GateDecision | None = None,
    repository: str | None = None,
    triton_url: str | None = None,
    gated: bool = False,
) -> PromotionResult:
    """Make `version` (default: the challenger) the champion and publish it to Triton
    (the one at `triton_url`, else CARTRIDGE_TRITON_URL's, if any).

    `gated`: promote only if the champion is still the one the gate played against
    `version` (its `gate_champion` tag), else ChampionMoved and nothing changes: another
    run, or a person in the MLflow UI, moved it meanwhile. (MLflow has no atomic
    compare-and-set of aliases; the check is made just before the move.)"""
    name = registered_model_name(game_name)
    version = str(version or alias_version(client, game_name, CHALLENGER) or "")
    if not version:
        raise ValueError(f"{name} has no version with alias {CHALLENGER!r} to promote")
    found = client.get_model_version(name, version)  # fails clearly for an unknown version
    current = alias_version(client, game_name, CHAMPION)
    if gated and current != version:
        played = found.tags.get(GATE_CHAMPION_TAG)
        if played is None:
            raise ValueError(f"{name} v{version} has no gate verdict to promote on")
        if (None if played == "none" else played) != current:
            raise ChampionMoved(
                f"{name}: the gate played v{version} against "
                f"{'random' if played == 'none' else 'v' + played}, but the champion is now "
                f"{'v' + current if current else 'none'}; nothing promoted"
            )
    changed = current != version
    if changed:
        if current is not None:
            client.set_registered_model_alias(name, PREVIOUS, current)
        client.set_registered_model_alias(name, CHAMPION, version)
        client.set_model_version_tag(name, version, "promoted_at", _now())
    record_arena(client, game_name, version, match, decision)
    return PromotionResult(
        game=game_name,
        champion=version,
        previous=alias_version(client, game_name, PREVIOUS),
        changed=changed,
        triton_model=triton.model_folder(game_name, repository),
        triton_error=_serve(client, game_name, repository, triton_url),
    )


def rollback(
    client: MlflowClient,
    game_name: str,
    repository: str | None = None,
    triton_url: str | None = None,
) -> PromotionResult:
    """Restore `previous` as champion and withdraw the demoted version from Triton, so the
    repository's newest version is the restored champion again."""
    name = registered_model_name(game_name)
    previous = alias_version(client, game_name, PREVIOUS)
    if previous is None:
        raise ValueError(f"{name} has no {PREVIOUS!r} version to roll back to")
    demoted = alias_version(client, game_name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.delete_registered_model_alias(name, PREVIOUS)
    if demoted is not None and demoted != previous:
        client.set_model_version_tag(name, demoted, "rolled_back_at", _now())
    return PromotionResult(
        game=game_name,
        champion=previous,
        previous=None,
        changed=True,
        triton_model=triton.model_folder(game_name, repository),
        triton_error=_serve(client, game_name, repository, triton_url),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _serve(
    client: MlflowClient, game_name: str, repository: str | None, url: str | None
) -> str | None:
    """Reconcile the game now, telling the Triton at `url` (None: CARTRIDGE_TRITON_URL's;
    '': none). Returns why the champion is not served yet, or None: the registry is
    already updated, and a down server is caught up by the next reconcile pass, so a
    promotion is not undone by it."""
    url = triton.triton_url() if url is None else url
    control = triton.TritonControl(url) if url else None
    try:
        outcome = reconcile_game(client, control, game_name, repository)
    finally:
        if control is not None:
            control.close()
    problem = outcome.refused or outcome.error
    if problem:
        log.warning("promotion is done but %s is not served yet: %s", game_name, problem)
    return problem


def record_arena(
    client: MlflowClient,
    game_name: str,
    version: str,
    match: MatchResult | None,
    decision: GateDecision | None,
) -> None:
    """Write an arena result and the gate's verdict as tags on a model version."""
    tags = {}
    if match is not None:
        tags.update(
            {
                "arena_opponent": match.player2,
                "arena_games": str(match.games),
                "arena_wins": str(match.wins),
                "arena_draws": str(match.draws),
                "arena_losses": str(match.losses),
                "arena_score": f"{match.score:.4f}",
                "arena_ci95": f"{match.ci95[0]:.4f},{match.ci95[1]:.4f}",
                "arena_elo": f"{match.elo_diff:.1f}",
            }
        )
        if match.solver_optimal_fraction is not None:
            tags["solver_optimal_fraction"] = f"{match.solver_optimal_fraction:.4f}"
            tags["solver_result_fraction"] = f"{match.solver_result_fraction:.4f}"
    if decision is not None:
        tags["gate"] = decision.reason
        # The champion this verdict is about; promotion checks it is still the champion.
        tags[GATE_CHAMPION_TAG] = decision.champion or "none"
        if decision.solver is not None:
            tags["gate_solver_optimal_fraction"] = f"{decision.solver.challenger:.4f}"
            tags["gate_champion_solver_optimal_fraction"] = f"{decision.solver.champion:.4f}"
            tags["gate_solver_z"] = f"{decision.solver.z:.2f}"
    name = registered_model_name(game_name)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if decision is not None:  # the registry UI's one line on this version
        client.update_model_version(name, version, description=_verdict_line(match, decision))
    if match is not None:
        _log_arena_metrics(client, game_name, version, match)


def _verdict_line(match: MatchResult | None, decision: GateDecision) -> str:
    verdict = "passed the gate" if decision.promote else "kept out by the gate"
    if match is None:
        return f"{verdict}: {decision.reason}"
    return (
        f"{verdict} against {match.player2}: {match.wins}W {match.draws}D {match.losses}L, "
        f"score {match.score:.3f}; {decision.reason}"
    )


def _log_arena_metrics(
    client: MlflowClient, game_name: str, version: str, match: MatchResult
) -> None:
    """The arena result as metrics of the training run that made the version, so MLflow
    can chart and compare them across runs (tags are text only)."""
    import math
    import time

    from mlflow.entities import Metric

    found = client.get_model_version(registered_model_name(game_name), version)
    run_id = found.run_id or found.tags.get("run_id")
    if not run_id:
        return
    values = {
        "arena_score": match.score,
        "arena_games": match.games,
        "arena_wins": match.wins,
        "arena_draws": match.draws,
        "arena_losses": match.losses,
        "arena_elo": match.elo_diff,
        "solver_optimal_fraction": match.solver_optimal_fraction,
        "solver_result_fraction": match.solver_result_fraction,
    }
    from cartridge.arena.ratings import registry_ratings, version_player

    rating = registry_ratings(client, game_name).get(version_player(version))
    if rating is not None:  # over every arena game stored for the game, `random` = 0
        values.update({"rating": rating.elo, "rating_low": rating.low, "rating_high": rating.high})
    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), now, 0)
        for key, value in values.items()
        if value is not None and math.isfinite(float(value))
    ]
    client.log_batch(run_id, metrics=metrics)
