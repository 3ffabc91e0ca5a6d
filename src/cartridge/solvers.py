"""Exact game values where a full search is cheap: TicTacToe by memoised negamax."""

from functools import cache

from cartridge.games import State


@cache
def negamax_value(state: State) -> int:
    """Game-theoretic value for the side to move: +1 win, 0 draw, -1 loss."""
    if state.is_terminal():
        return int(state.result(state.current_player))
    return max(-negamax_value(state.apply(a)) for a in state.legal_actions())


def action_values(state: State) -> dict[int, int]:
    """Exact value of each legal action for the side to move."""
    if state.game.name != "tictactoe":
        raise ValueError(f"exact solving is only cheap for tictactoe, not {state.game.name}")
    return {a: -negamax_value(state.apply(a)) for a in state.legal_actions()}


def optimal_actions(state: State) -> list[int]:
    """Every action that keeps the best game-theoretic value."""
    values = action_values(state)
    best = max(values.values())
    return [a for a, v in values.items() if v == best]
