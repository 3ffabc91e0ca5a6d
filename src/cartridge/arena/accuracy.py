"""How often a player picks a move the exact solver rates best, on a fixed position set."""

from __future__ import annotations

import numpy as np

from cartridge.arena.players import Player
from cartridge.games import Game, State
from cartridge.solvers import action_values

POSITIONS_SEED = 20261126  # fixed, so the metric is comparable across runs and models
# The gate's own set. Choosing champions by their share on the reported set would
# inflate the reported share (the best of many noisy scores on one test set).
GATE_POSITIONS_SEED = 20261127


def solver_positions(game: Game, count: int, seed: int = POSITIONS_SEED) -> list[State]:
    """`count` positions after 0-24 random plies where the choice matters: not finished,
    and not every legal move equally good (such positions would count as free hits)."""
    rng = np.random.default_rng(seed)
    positions: list[State] = []
    while len(positions) < count:
        state = game.new_initial_state()
        for _ in range(int(rng.integers(0, 25))):
            state = state.apply(int(rng.choice(state.legal_actions())))
            if state.is_terminal():
                break
        if state.is_terminal():
            continue
        values = set(action_values(state).values())
        if len(values) > 1:
            positions.append(state)
    return positions


def solver_agreement(player: Player, positions: list[State]) -> tuple[float, float]:
    """Two shares of `positions`, from one move per position:

    - optimal: `player`'s move has the solver's best value. Strict for Connect 4,
      whose solver scores a quicker win higher, so a slower win counts as a miss.
    - keeps result: the move keeps the game-theoretic result (win, draw or loss) of
      the best move, the measure most published Connect 4 benchmarks quote.
    """
    optimal, keeps_result = judge_moves(player, positions)
    return float(optimal.mean()), float(keeps_result.mean())


def optimal_moves(player: Player, positions: list[State]) -> np.ndarray:
    """Per position, whether `player`'s move has the solver's best value."""
    return judge_moves(player, positions)[0]


def judge_moves(player: Player, positions: list[State]) -> tuple[np.ndarray, np.ndarray]:
    """Per position, whether `player`'s move is optimal and whether it keeps the result
    (the two readings of `solver_agreement`)."""
    chosen = player.choose(positions)
    optimal, keeps_result = [], []
    for state, action in zip(positions, chosen, strict=True):
        values = action_values(state)
        best = max(values.values())
        optimal.append(values[action] == best)
        keeps_result.append(np.sign(values[action]) == np.sign(best))
    return np.array(optimal, dtype=bool), np.array(keeps_result, dtype=bool)


def solver_optimal_fraction(player: Player, positions: list[State]) -> float:
    """Share of `positions` where `player`'s move has the solver's best value."""
    return solver_agreement(player, positions)[0]


def losses_to_perfect_play(game: Game, player: Player) -> tuple[int, int]:
    """Play `player` from both seats against every line of perfect play (each optimal
    reply, every first move when it moves second). Returns (lines played, lines lost):
    zero losses means it plays perfectly. TicTacToe only: the tree is small enough."""
    if game.name != "tictactoe":
        raise ValueError("exhaustive perfect-play checks are for tictactoe")
    from cartridge.solvers import optimal_actions

    finished: list[tuple[State, int]] = []
    frontier = [(game.new_initial_state(), seat) for seat in (0, 1)]
    while frontier:
        to_search = [(s, seat) for s, seat in frontier if s.current_player == seat]
        moves = player.choose([s for s, _ in to_search]) if to_search else []
        successors = [(s.apply(a), seat) for (s, seat), a in zip(to_search, moves, strict=True)]
        for state, seat in frontier:
            if state.current_player != seat:
                replies = optimal_actions(state) if state.ply else state.legal_actions()
                successors += [(state.apply(a), seat) for a in replies]
        frontier = []
        for state, seat in successors:
            (finished if state.is_terminal() else frontier).append((state, seat))
    losses = sum(state.result(seat) < 0 for state, seat in finished)
    return len(finished), losses


def add_solver_accuracy(match, player: Player, game: Game, count: int) -> None:
    """Record `player`'s solver-optimal and result-keeping shares in `match`."""
    positions = solver_positions(game, count)
    match.solver_optimal_fraction, match.solver_result_fraction = solver_agreement(
        player, positions
    )
    match.solver_positions = len(positions)
