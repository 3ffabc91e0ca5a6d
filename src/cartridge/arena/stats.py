"""Match statistics: score, its 95% confidence interval and the implied Elo difference."""

import math

from pydantic import BaseModel

Z_95 = 1.959963984540054


class MatchResult(BaseModel):
    """Results for player1 against player2."""

    player1: str
    player2: str
    game: str
    games: int
    wins: int
    losses: int
    draws: int
    score: float
    ci95: tuple[float, float]
    elo_diff: float
    elo_ci95: tuple[float, float]
    solver_optimal_fraction: float | None = None
    solver_result_fraction: float | None = None
    solver_positions: int | None = None


def elo_from_score(score: float) -> float:
    """Elo difference implied by an expected score; +/-inf at 1 and 0."""
    if score <= 0.0:
        return -math.inf
    if score >= 1.0:
        return math.inf
    return -400.0 * math.log10(1.0 / score - 1.0)


def summarize(
    player1: str, player2: str, game: str, wins: int, losses: int, draws: int
) -> MatchResult:
    """Score = (wins + draws / 2) / games, with a normal interval on the per-game
    score variance (wins, draws and losses as a trinomial), clipped to [0, 1]."""
    games = wins + losses + draws
    if games == 0:
        raise ValueError("no games were played")
    score = (wins + 0.5 * draws) / games
    variance = (wins * (1 - score) ** 2 + draws * (0.5 - score) ** 2 + losses * score**2) / games
    half_width = Z_95 * math.sqrt(variance / games)
    low, high = max(0.0, score - half_width), min(1.0, score + half_width)
    return MatchResult(
        player1=player1,
        player2=player2,
        game=game,
        games=games,
        wins=wins,
        losses=losses,
        draws=draws,
        score=score,
        ci95=(low, high),
        elo_diff=elo_from_score(score),
        elo_ci95=(elo_from_score(low), elo_from_score(high)),
    )
