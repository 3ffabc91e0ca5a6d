"""Head-to-head evaluation of players."""

from cartridge.arena.match import play_match
from cartridge.arena.players import make_player
from cartridge.arena.stats import MatchResult, summarize

__all__ = ["MatchResult", "make_player", "play_match", "summarize"]
