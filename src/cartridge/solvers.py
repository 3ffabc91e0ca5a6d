"""Exact move values: TicTacToe by memoised negamax, Connect 4 by the bitbully solver.

Both answer the same question, "how good is each legal move for the side to
move", so the perfect arena player and the solver-accuracy metric use one call.
"""

from functools import cache

import numpy as np

from cartridge.games import SOLVED_GAMES, State, load


def require_solver(game_name: str, needed_by: str) -> None:
    """Refuse, naming what needed it, a game that has no exact solver."""
    if game_name not in SOLVED_GAMES:
        raise ValueError(
            f"{needed_by} needs an exact solver, which {game_name} does not have "
            f"(solved games: {', '.join(SOLVED_GAMES)})"
        )


@cache
def negamax_value(state: State) -> int:
    """Game-theoretic value for the side to move: +1 win, 0 draw, -1 loss."""
    if state.is_terminal():
        return int(state.result(state.current_player))
    return max(-negamax_value(state.apply(a)) for a in state.legal_actions())


def action_values(state: State) -> dict[int, int]:
    """Exact value of each legal action for the side to move (higher is better).

    TicTacToe: +1 win, 0 draw, -1 loss. Connect 4: bitbully's score, positive for a
    win (larger = sooner), 0 for a draw, negative for a loss.
    """
    if state.is_terminal():
        raise ValueError("the game is over: no moves to value")
    require_solver(state.game.name, "valuing moves exactly")
    return _VALUERS[state.game.name](state)


def _tictactoe_values(state: State) -> dict[int, int]:
    return {a: -negamax_value(state.apply(a)) for a in state.legal_actions()}


def _connect4_values(state: State) -> dict[int, int]:
    return _connect4_scores(state.stones(0), state.stones(1))


def connect4_values_from_planes(planes: np.ndarray) -> dict[int, int]:
    """`action_values` of the Connect 4 position a network input encodes.

    Replay shards keep positions as planes ([mine, theirs] from the side to move), not
    as states; this values them without a move sequence. The side to move follows
    from the stone count: the first player moves when it is even.
    """
    planes = np.asarray(planes)
    expected = load("connect4").planes_shape
    if planes.shape != expected:
        raise ValueError(f"expected Connect 4 planes of shape {expected}, got {planes.shape}")
    mine, theirs = planes.astype(bool)
    first_to_move = int(mine.sum() + theirs.sum()) % 2 == 0
    return _connect4_scores(*((mine, theirs) if first_to_move else (theirs, mine)))


def connect4_deciding_stone(ply: int, score: int) -> int | None:
    """The stone (1-42) with which perfect play from a position `ply` stones deep ends
    the game, given the solver's best score there; None when it is a draw.

    The solver scores a win as (43 - stones before the winning one) // 2, so from the
    winner's side: stone 43 - 2s for the first player (odd stones), 44 - 2s for the
    second. A negative score is the opponent's win.
    """
    if not score:
        return None
    first_player_wins = (score > 0) == (ply % 2 == 0)
    return 44 - 2 * abs(score) - first_player_wins


def _connect4_scores(first: np.ndarray, second: np.ndarray) -> dict[int, int]:
    import bitbully

    cells = first.astype(np.int8) + 2 * second.astype(np.int8)
    board = bitbully.Board.from_array(cells.tolist())
    return {int(a): int(v) for a, v in _connect4_solver().score_all_moves(board).items()}


@cache
def _connect4_solver():
    import bitbully

    return bitbully.BitBully()  # loads its opening book once per process


# One entry per game that `games.describe` says has a solver.
_VALUERS = {"tictactoe": _tictactoe_values, "connect4": _connect4_values}


def optimal_actions(state: State) -> list[int]:
    """Every action that keeps the best game-theoretic value."""
    values = action_values(state)
    best = max(values.values())
    return [a for a, v in values.items() if v == best]
