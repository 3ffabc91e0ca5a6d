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


ROUND_ROBIN_TAG = "round_robin_v"  # + the older version: "wins,draws,games" of the newer


def version_player(version: str) -> str:
    return f"v{version}"


def play_round_robin(
    client, game_name: str, versions: int, games: int, simulations: int, seed: int = 0
) -> int:
    """Play every pair among the `versions` newest registered versions that has not
    played yet (bounded: at most versions*(versions-1)/2 matches, each pair once), and
    store each result on the newer version as tag `round_robin_v<older>`. Returns how
    many matches were played."""
    from cartridge.arena.match import play_match
    from cartridge.arena.players import make_player
    from cartridge.games import load
    from cartridge.names import registered_model_name, version_uri

    if versions < 2 or games < 1:
        raise ValueError("a round robin needs at least 2 versions and 1 game a pair")
    name = registered_model_name(game_name)
    found = client.search_model_versions(f"name = '{name}'")
    recent = sorted(found, key=lambda v: int(v.version))[-versions:]
    game = load(game_name)
    played = 0
    for k, newer in enumerate(recent):
        for older in recent[:k]:
            key = f"{ROUND_ROBIN_TAG}{older.version}"
            if key in newer.tags:
                continue
            match = play_match(
                game,
                make_player(version_uri(game_name, newer.version), game, simulations, seed=seed),
                make_player(version_uri(game_name, older.version), game, simulations, seed=seed),
                games,
                seed=seed,
            )
            value = f"{match.wins},{match.draws},{match.games}"
            client.set_model_version_tag(name, newer.version, key, value)
            played += 1
    return played


def registry_ratings(client, game_name: str) -> dict[str, Rating]:
    """Ratings from every arena result stored on the game's registered versions (the
    tags the gate writes), keyed `v<N>` (and `random`, `perfect`)."""
    from cartridge.names import registered_model_name

    results = []
    for version in client.search_model_versions(f"name = '{registered_model_name(game_name)}'"):
        tags = version.tags
        for key, value in tags.items():
            if key.startswith(ROUND_ROBIN_TAG):
                wins, draws, games = (int(part) for part in value.split(","))
                older = version_player(key.removeprefix(ROUND_ROBIN_TAG))
                results.append(
                    PairResult(version_player(version.version), older, wins, draws, games)
                )
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
