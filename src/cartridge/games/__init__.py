"""Game engines behind one interface: `load(name)` gives a `Game`, whose states play."""

from cartridge.games._games import GAME_NAMES, Game, State, perft


def load(name: str) -> Game:
    """The game called `name` (one of GAME_NAMES); ValueError naming the choices otherwise."""
    return Game(name)


__all__ = ["GAME_NAMES", "Game", "State", "load", "perft"]
