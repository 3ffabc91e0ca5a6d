"""Ratings over every arena game stored for a game, not a chain of single matches.

A Bradley-Terry model on the Elo scale, P(a beats b) = 1 / (1 + 10^((R_b - R_a) / 400)),
fitted by maximum likelihood to all results at once (gate matches, games against
`random` and `perfect`), anchored at `random` = 0, as BayesElo and Minigo rate their
generations. A draw counts half a win for each side. Every player also gets one
virtual draw against the anchor (BayesElo's prior): a player that won every game
still gets a finite rating, pulled toward the anchor as much as one game weighs.
Intervals are 95% from the curvature of the likelihood (the observed information).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

ANCHOR = "random"
SCALE = 400.0 / math.log(10.0)  # Elo points per natural-log unit of strength
PRIOR_DRAWS = 1.0


@dataclass(frozen=True)
class PairResult:
    """`games` between `a` and `b`: `a` won `wins`, drew `draws`, lost the rest."""

    a: str
    b: str
    wins: int
    draws: int
    games: int


class Rating(BaseModel):
    player: str
    elo: float
    low: float  # 95% interval
    high: float
    games: int  # real games, not the prior's


def fit_ratings(results: list[PairResult], anchor: str = ANCHOR) -> dict[str, Rating]:
    """Every player's rating, `anchor` at 0. Players with no path of games to the
    anchor still get one (through the prior), with a wide interval."""
    for result in results:
        if result.a == result.b:
            raise ValueError(f"{result.a} cannot play itself")
        if min(result.wins, result.draws, result.games) < 0 or result.wins + result.draws > (
            result.games
        ):
            raise ValueError(f"impossible result {result}")
    players = sorted({p for r in results for p in (r.a, r.b)} - {anchor})
    if not players:
        return {}
    index = {player: k for k, player in enumerate(players)}
    pairs = [(r.a, r.b, r.wins + r.draws / 2, float(r.games)) for r in results if r.games]
    pairs += [(player, anchor, PRIOR_DRAWS / 2, PRIOR_DRAWS) for player in players]
    strength = np.zeros(len(players))  # natural-log units; the anchor is fixed at 0
    for _ in range(100):
        gradient, hessian = _derivatives(pairs, index, strength)
        step = np.linalg.solve(hessian, gradient)
        strength -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    _, hessian = _derivatives(pairs, index, strength)
    spread = np.sqrt(np.diag(np.linalg.inv(-hessian)))
    games = {player: 0 for player in players}
    for r in results:
        for player in (r.a, r.b):
            if player in games:
                games[player] += r.games
    ratings = {anchor: Rating(player=anchor, elo=0.0, low=0.0, high=0.0, games=0)}
    for player, k in index.items():
        elo, margin = strength[k] * SCALE, 1.96 * spread[k] * SCALE
        ratings[player] = Rating(
            player=player, elo=elo, low=elo - margin, high=elo + margin, games=games[player]
        )
    return ratings


def _derivatives(pairs, index, strength):
    """Gradient and Hessian of the log-likelihood in the players' strengths."""
    gradient = np.zeros(len(index))
    hessian = np.zeros((len(index), len(index)))
    for a, b, points, games in pairs:
        sa = strength[index[a]] if a in index else 0.0
        sb = strength[index[b]] if b in index else 0.0
        p = 1.0 / (1.0 + math.exp(sb - sa))
        weight = games * p * (1.0 - p)
        for player, sign in ((a, 1.0), (b, -1.0)):
            if player in index:
                gradient[index[player]] += sign * (points - games * p)
                hessian[index[player], index[player]] -= weight
        if a in index and b in index:
            hessian[index[a], index[b]] += weight
            hessian[index[b], index[a]] += weight
    return gradient, hessian


def version_player(version: str) -> str:
    return f"v{version}"


def registry_ratings(client, game_name: str) -> dict[str, Rating]:
    """Ratings from every arena result stored on the game's registered versions (the
    tags the gate writes), keyed `v<N>` (and `random`, `perfect`)."""
    from cartridge.names import registered_model_name

    results = []
    for version in client.search_model_versions(f"name = '{registered_model_name(game_name)}'"):
        tags = version.tags
        if "arena_games" not in tags or "arena_opponent" not in tags:
            continue
        opponent = tags["arena_opponent"]
        if opponent.startswith("models:/"):
            opponent = version_player(opponent.rsplit("/", 1)[-1])
        results.append(
            PairResult(
                a=version_player(version.version),
                b=opponent,
                wins=int(tags.get("arena_wins", 0)),
                draws=int(tags.get("arena_draws", 0)),
                games=int(tags["arena_games"]),
            )
        )
    return fit_ratings(results)
