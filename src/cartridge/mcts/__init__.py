"""Batched PUCT Monte Carlo tree search over the Cython game engines."""

from cartridge.mcts._search import BatchedMCTS
from cartridge.mcts.config import SearchConfig

__all__ = ["BatchedMCTS", "SearchConfig"]
