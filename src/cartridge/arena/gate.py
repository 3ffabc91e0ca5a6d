"""The gate: does a challenger replace the champion?

The challenger plays the champion (or `random` while there is none) with both seats
and no noise; the match's score, and where a solver exists its paired test, decide
(see `GateSettings`). Nothing here moves an alias: `cartridge.promotion` does that.
"""

from __future__ import annotations

import math

from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from cartridge.arena.stats import MatchResult
from cartridge.names import CHALLENGER, CHAMPION, registered_model_name, version_uri
from cartridge.settings import GateSettings
from cartridge.tracking import alias_version


class SolverComparison(BaseModel):
    """Solver-optimal moves of challenger and champion on the gate's position set."""

    challenger: float  # share of positions where its move is optimal
    champion: float
    positions: int
    only_challenger: int  # positions where only the challenger's move is optimal
    only_champion: int

    @property
    def z(self) -> float:
        """McNemar's statistic, signed: positive when the challenger is better."""
        discordant = self.only_challenger + self.only_champion
        if discordant == 0:
            return 0.0
        return (self.only_challenger - self.only_champion) / math.sqrt(discordant)


class GateDecision(BaseModel):
    promote: bool
    reason: str
    llr: float | None = None
    solver: SolverComparison | None = None
    champion: str | None = None  # the champion version the gate played (None: `random`)


def _expected_score(elo: float) -> float:
    return 1.0 / (1.0 + 10.0 ** (-elo / 400.0))


def sprt_llr(result: MatchResult, elo0: float, elo1: float) -> float:
    """Log-likelihood ratio of elo1 over elo0 for the match, normal approximation on
    the per-game score (wins, draws and losses as a trinomial)."""
    n = result.games
    score = result.score
    variance = (
        result.wins * (1 - score) ** 2
        + result.draws * (0.5 - score) ** 2
        + result.losses * score**2
    ) / n
    s0, s1 = _expected_score(elo0), _expected_score(elo1)
    if variance == 0.0:  # every game the same result: all the evidence points one way
        return math.inf if score > (s0 + s1) / 2 else -math.inf
    return n * (s1 - s0) * (2 * score - s0 - s1) / (2 * variance)


def decide(
    result: MatchResult, gate: GateSettings, solver: SolverComparison | None = None
) -> GateDecision:
    """The match's verdict, then, with a `solver` comparison and a `solver_z`, the
    solver's say (see GateSettings)."""
    decision = _match_decision(result, gate)
    if solver is None or not gate.solver_z:
        return decision
    shares = (
        f"solver-optimal {solver.challenger:.1%} vs champion {solver.champion:.1%} "
        f"on {solver.positions} gate positions, z {solver.z:+.2f}"
    )
    promote = decision.promote
    if solver.z < -gate.solver_z:
        promote, shares = False, f"{shares}: fewer optimal moves, kept out"
    elif solver.z > gate.solver_z and result.score >= 0.5 and not promote:
        promote, shares = True, f"{shares}: more optimal moves and not behind, promoted"
    return GateDecision(
        promote=promote, reason=f"{decision.reason}; {shares}", llr=decision.llr, solver=solver
    )


def _match_decision(result: MatchResult, gate: GateSettings) -> GateDecision:
    if gate.method == "lcb":
        low = result.ci95[0]
        passed = low > gate.threshold
        return GateDecision(
            promote=passed,
            reason=f"score {result.score:.3f}, 95% lower bound {low:.3f} "
            f"{'>' if passed else '<='} {gate.threshold}",
        )
    llr = sprt_llr(result, gate.elo0, gate.elo1)
    upper = math.log((1 - gate.beta) / gate.alpha)
    lower = math.log(gate.beta / (1 - gate.alpha))
    if llr >= upper:
        verdict, passed = f"accepts Elo +{gate.elo1:g}", True
    elif llr <= lower:
        verdict, passed = f"rejects (Elo {gate.elo0:g} more likely)", False
    else:
        verdict, passed = "is inconclusive after these games", False
    return GateDecision(
        promote=passed,
        llr=llr,
        reason=f"SPRT LLR {llr:.2f} in [{lower:.2f}, {upper:.2f}] {verdict}",
    )


def evaluate_challenger(
    client: MlflowClient,
    game_name: str,
    gate: GateSettings,
    seed: int = 0,
    solver_positions: int = 200,
    challenger: str | None = None,
) -> tuple[MatchResult | None, GateDecision, str]:
    """Play `challenger` (default: the version alias `challenger` names) against the
    champion (against `random` while there is none) and apply the gate. Versions are
    pinned by number, so an alias moving mid-match cannot change who plays, and the
    decision names the champion it played (`GateDecision.champion`), for promotion to
    check it is still the one. Returns (match, decision, challenger version); no match
    when the challenger already is the champion (a retried pipeline step)."""
    from cartridge.arena import make_player, play_match
    from cartridge.games import describe, load
    from cartridge.solvers import require_solver

    if gate.solver_z:
        require_solver(game_name, "the gate's solver check")
    game = load(game_name)
    name = registered_model_name(game_name)
    challenger = challenger or alias_version(client, game_name, CHALLENGER)
    if challenger is None:
        raise ValueError(f"{name} has no version with alias {CHALLENGER!r} to evaluate")
    client.get_model_version(name, challenger)  # fails clearly for a version that does not exist
    champion = alias_version(client, game_name, CHAMPION)
    if champion == challenger:
        return (
            None,
            GateDecision(
                promote=False, reason="the challenger is already champion", champion=champion
            ),
            challenger,
        )
    player1 = make_player(version_uri(game_name, challenger), game, gate.simulations, seed=seed)
    opponent = version_uri(game_name, champion) or "random"
    player2 = make_player(opponent, game, gate.simulations, seed=seed + 1)
    match = play_match(game, player1, player2, gate.games, seed=seed)
    if describe(game_name).arena_solver_check and solver_positions:
        from cartridge.arena.accuracy import add_solver_accuracy

        add_solver_accuracy(match, player1, game, solver_positions)
    solver = None
    if gate.solver_z and champion:
        solver = _compare_on_gate_positions(game, player1, player2, gate.solver_positions)
    decision = decide(match, gate, solver).model_copy(update={"champion": champion})
    return match, decision, challenger


def _compare_on_gate_positions(game, challenger, champion, count: int) -> SolverComparison:
    """Both match players' networks on the gate's positions, reseeded alike: a search
    player breaks ties with its random stream, so players that have just played a
    match would not answer alike."""
    from cartridge.arena.accuracy import GATE_POSITIONS_SEED, optimal_moves, solver_positions

    positions = solver_positions(game, count, GATE_POSITIONS_SEED)
    new, old = (optimal_moves(player.reseeded(0), positions) for player in (challenger, champion))
    return SolverComparison(
        challenger=float(new.mean()),
        champion=float(old.mean()),
        positions=len(positions),
        only_challenger=int((new & ~old).sum()),
        only_champion=int((old & ~new).sum()),
    )
