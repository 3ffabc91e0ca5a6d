"""What each game says about itself beyond its rules engine.

Everything outside `games/` that varies by game (the web UI's title and rules text,
the default network, self-play's noise and sampling, the arena's openings, whether an
exact solver exists, Triton's tensor shapes) asks `describe(name)` instead of keeping
a table of its own, so adding a game is one entry here plus its engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from cartridge.games._games import GAME_NAMES, Game


@dataclass(frozen=True)
class NetworkDefaults:
    """The network a game trains unless told otherwise (`kind` mlp or resnet)."""

    kind: str
    blocks: int = 5
    channels: int = 64


@dataclass(frozen=True)
class GameDescription:
    name: str
    title: str
    rules: str
    players: tuple[str, str]
    planes_shape: tuple[int, int, int]
    num_actions: int
    pass_action: int | None  # the "no move" action, where the rules have one
    drop_columns: bool  # actions name columns and a stone falls (the UI draws drops)
    network: NetworkDefaults
    # Dirichlet alpha roughly 10 / typical number of legal moves, capped at 1.
    dirichlet_alpha: float
    # Plies sampled at temperature 1: the opening, where diversity pays.
    temperature_moves: int
    arena_opening_plies: int  # random plies before an arena game, shared by each pair
    has_solver: bool  # an exact solver values every move (see `cartridge.solvers`)
    # The arena reports solver-optimal move shares. TicTacToe champions are checked
    # exhaustively against perfect play instead, which says more.
    arena_solver_check: bool


_DETAILS = {
    "tictactoe": dict(
        passes=False,
        drop_columns=False,
        title="Tic-tac-toe",
        rules="Players take turns marking an empty cell of a 3x3 grid. Three marks in "
        "a row, column or diagonal win; a full grid without a line is a draw.",
        players=("X", "O"),
        network=NetworkDefaults(kind="mlp"),  # nine cells: no spatial patterns to share
        dirichlet_alpha=1.0,
        temperature_moves=4,
        arena_opening_plies=1,
        has_solver=True,
        arena_solver_check=False,
    ),
    "connect4": dict(
        passes=False,
        drop_columns=True,
        title="Connect 4",
        rules="Players take turns dropping a disc into one of 7 columns; it falls to the "
        "lowest empty cell. Four discs in a row, column or diagonal win; a full board is "
        "a draw.",
        players=("X", "O"),
        network=NetworkDefaults(kind="resnet", blocks=5, channels=64),
        dirichlet_alpha=1.0,
        temperature_moves=10,
        arena_opening_plies=2,
        has_solver=True,
        arena_solver_check=True,
    ),
    "othello": dict(
        passes=True,
        drop_columns=False,
        title="Othello",
        rules="Players place a disc that brackets a straight line of opponent discs, which "
        "flip. With no such move a player passes; the game ends when neither can move, and "
        "the player with more discs wins.",
        players=("Black", "White"),
        network=NetworkDefaults(kind="resnet", blocks=5, channels=64),
        dirichlet_alpha=0.5,
        temperature_moves=20,
        arena_opening_plies=4,
        has_solver=False,
        arena_solver_check=False,
    ),
}


@cache
def describe(name: str) -> GameDescription:
    """The game called `name`; ValueError naming the choices otherwise."""
    game = Game(name)
    details = dict(_DETAILS[name])
    passes = details.pop("passes")
    return GameDescription(
        name=name,
        planes_shape=tuple(game.planes_shape),
        num_actions=game.num_actions,
        pass_action=game.num_actions - 1 if passes else None,  # the engine's last action
        **details,
    )


SOLVED_GAMES = tuple(name for name in GAME_NAMES if describe(name).has_solver)
