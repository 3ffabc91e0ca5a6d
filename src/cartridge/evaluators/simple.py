"""Evaluators that need no network: a flat prior, and random playouts."""

import numpy as np

from cartridge.evaluators._rollout import RolloutRunner
from cartridge.evaluators.base import check_planes
from cartridge.games import Game


class UniformEvaluator:
    """Zero logits (uniform priors over legal moves) and zero value: pure search."""

    def __init__(self, game: Game):
        self.game = game

    def evaluate(self, planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = len(planes)
        return (np.zeros((batch, self.game.num_actions), np.float32), np.zeros(batch, np.float32))


class RolloutEvaluator:
    """Uniform priors and the mean result of `rollouts` random playouts per position."""

    def __init__(self, game: Game, rollouts: int = 1, seed: int = 0):
        if rollouts < 1:
            raise ValueError(f"rollouts must be at least 1, got {rollouts}")
        self.game = game
        self.rollouts = rollouts
        self._runner = RolloutRunner(game.game_id, seed)

    def evaluate(self, planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        planes = check_planes(planes, self.game.planes_shape)
        values = self._runner.values(planes, self.rollouts)
        return np.zeros((len(planes), self.game.num_actions), np.float32), values
