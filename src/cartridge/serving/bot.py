"""The bot behind the web API: replay a game from its moves, then search for a reply.

Requests are stateless (the moves so far travel with every request), so any replica
can answer any request and nothing is lost when one restarts. The search is the same
PUCT as self-play and the arena, with the network evaluated by whatever evaluator the
caller passes (Triton in the web app), and with the MCTS-solver always on: a result the
tree proves is played as proven (a forced win taken, a proven loss avoided while a
move is left) and the search stops there, so a decided position costs fewer calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel

from cartridge import games
from cartridge.evaluators import Evaluator
from cartridge.games import Game, State, load
from cartridge.mcts import BatchedMCTS, SearchConfig

# Leaves gathered per evaluator call: fewer round trips to Triton per move, at a
# small cost in search quality from virtual loss.
LEAVES_PER_CALL = 16
LEVELS = (25, 100, 200, 400, 800)
DEFAULT_LEVEL = 200
MAX_LEVEL = 1600


class IllegalMoves(ValueError):
    """The moves do not make a legal game (an illegal move, or a move after the end)."""


class Position(BaseModel):
    """A replayed game as clients see it; the web API returns it as it is."""

    moves: list[int]
    board: list[list[int]]
    to_play: int
    legal_actions: list[int]
    over: bool
    winner: int | None
    result: Literal["ongoing", "draw", "first_player_won", "second_player_won"]


@dataclass(frozen=True)
class BotReply:
    bot_move: int | None
    policy: list[float]
    value: float
    position: Position


def game_info(game: Game) -> dict:
    """What a client needs to draw the board and number the actions."""
    description = games.describe(game.name)
    return {
        "name": game.name,
        "title": description.title,
        "rows": game.height,
        "cols": game.width,
        "num_actions": game.num_actions,
        "pass_action": description.pass_action,
        "drop_columns": description.drop_columns,
        "players": list(description.players),
        "rules": description.rules,
        "levels": list(LEVELS),
        "default_level": DEFAULT_LEVEL,
    }


def replay(game: Game, moves: list[int]) -> State:
    """The state after `moves`; IllegalMoves names the first bad one."""
    if len(moves) > game.max_game_length:
        raise IllegalMoves(
            f"{len(moves)} moves is longer than any {game.name} game "
            f"({game.max_game_length} at most)"
        )
    state = game.new_initial_state()
    for number, action in enumerate(moves, start=1):
        if state.is_terminal():
            raise IllegalMoves(f"move {number} ({action}) comes after the end of the game")
        if action not in state.legal_actions():
            raise IllegalMoves(
                f"move {number} ({action}) is illegal; legal actions were {state.legal_actions()}"
            )
        state = state.apply(action)
    return state


def describe(state: State, moves: list[int]) -> Position:
    game = state.game
    board = np.zeros((game.height, game.width), dtype=int)
    board[state.stones(0)] = 1
    board[state.stones(1)] = 2
    over = state.is_terminal()
    winner = None
    result = "ongoing"
    if over:
        first = state.returns()[0]
        winner = None if first == 0 else (0 if first > 0 else 1)
        result = {None: "draw", 0: "first_player_won", 1: "second_player_won"}[winner]
    return Position(
        moves=list(moves),
        board=board.tolist(),
        to_play=state.current_player,
        legal_actions=[] if over else state.legal_actions(),
        over=over,
        winner=winner,
        result=result,
    )


def position(game_name: str, moves: list[int]) -> Position:
    game = load(game_name)
    return describe(replay(game, moves), moves)


def reply(
    game_name: str,
    moves: list[int],
    level: int,
    evaluator: Evaluator,
    value_discount: float = 1.0,
) -> BotReply:
    """Search `level` simulations from the position after `moves` and play the most
    visited move (a proven root: a move that keeps its result, and the policy is on
    those moves only); a finished game is returned as it is, with no bot move.
    `value_discount` is the one the served model was trained with. Level 1 is the
    network alone: its one simulation evaluates the root and visits no move, so the
    priors choose."""
    if not 1 <= level <= MAX_LEVEL:
        raise ValueError(f"level must be between 1 and {MAX_LEVEL} simulations, got {level}")
    game = load(game_name)
    state = replay(game, moves)
    if state.is_terminal():
        return BotReply(None, [0.0] * game.num_actions, 0.0, describe(state, moves))
    config = SearchConfig(
        leaves_per_tree=LEAVES_PER_CALL, value_discount=value_discount, solver=True
    )
    search = BatchedMCTS(game, 1, config)
    search.reset(0, state)
    search.run(evaluator, level)
    if search.visit_counts(0).sum() > 0:
        policy = search.policy(0, temperature=1.0)
        action = int(search.select_action(0, temperature=0.0))
    else:
        policy = search.priors(0)
        action = int(np.argmax(policy))
    value = float(search.root_value(0))
    after = [*moves, action]
    return BotReply(action, [float(p) for p in policy], value, describe(state.apply(action), after))
