"""The one interface every network evaluator implements."""

from typing import Protocol

import numpy as np


class Evaluator(Protocol):
    """Scores a batch of positions from the side to move.

    `evaluate(planes[B, C, H, W] float32)` returns `(policy_logits[B, A], value[B])`,
    value in [-1, 1]. The search calls it once per step for all pending leaves.
    """

    def evaluate(self, planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def check_planes(planes: np.ndarray, expected_shape: tuple[int, ...]) -> np.ndarray:
    """Contiguous float32 planes of shape [B, *expected_shape]; ValueError otherwise."""
    planes = np.ascontiguousarray(planes, dtype=np.float32)
    if planes.ndim != 4 or planes.shape[1:] != tuple(expected_shape):
        raise ValueError(
            f"expected planes of shape [B, {', '.join(map(str, expected_shape))}], "
            f"got {list(planes.shape)}"
        )
    return planes
