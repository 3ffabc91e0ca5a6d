"""Game engines behind one interface: `load(name)` gives a `Game`, whose states play;
`describe(name)` gives what the rest of Cartridge needs to know about it."""

from cartridge.games._games import GAME_NAMES, Game, State, perft
from cartridge.games.describe import SOLVED_GAMES, GameDescription, describe


def load(name: str) -> Game:
    """The game called `name` (one of GAME_NAMES); ValueError naming the choices otherwise."""
    return Game(name)


__all__ = [
    "GAME_NAMES",
    "SOLVED_GAMES",
    "Game",
    "GameDescription",
    "State",
    "describe",
    "load",
    "perft",
]
