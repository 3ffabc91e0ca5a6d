"""The starting network's losses on window positions it trained on and on ones it never saw.

Continuous training starts each run from the previous run's weights on a window that
overlaps the previous one: most positions were trained on already, the newest were
not. Before the first step, the same network's losses on the two parts separate what
it learned from what it memorised. The unseen losses are the honest measure of what it
learned; a value loss far lower on seen positions means each position is trained on
too often for the data the loop makes (too many steps per iteration for the games
played), and the time of those extra steps fits the outcomes of old games.
"""

from __future__ import annotations

import numpy as np
import torch

from cartridge.training.data import ReplayData
from cartridge.training.losses import alphazero_loss

# Enough to read a gap of tens of percent (a few percent standard error); one to two
# seconds of two CPU cores for a 5x64 ResNet, next to ~15-45 s of training an iteration.
MAX_POSITIONS = 2048
BATCH = 1024


def starting_losses(
    model: torch.nn.Module,
    data: ReplayData,
    trained_on: set[str],
    device: torch.device,
) -> dict[str, float]:
    """`seen_*` / `unseen_*` policy and value losses of `model` as it is now, on the
    window's positions from shards in `trained_on` and from the others, with the
    positions each part holds (`seen_positions`, `unseen_positions`). A part with no
    positions has no losses. Evenly spaced positions, no augmentation, no randomness:
    the training's random stream is left as it was."""
    trained = data.from_sources(trained_on)
    seen, unseen = np.flatnonzero(trained), np.flatnonzero(~trained)
    losses = {"seen_positions": float(len(seen)), "unseen_positions": float(len(unseen))}
    was_training = model.training
    model.eval()
    try:
        for part, indices in (("seen", seen), ("unseen", unseen)):
            if len(indices):
                policy, value = _losses(model, data, _spread(indices), device)
                losses[f"{part}_policy_loss"] = policy
                losses[f"{part}_value_loss"] = value
    finally:
        model.train(was_training)
    return losses


def _spread(indices: np.ndarray) -> np.ndarray:
    if len(indices) <= MAX_POSITIONS:
        return indices
    return indices[np.linspace(0, len(indices) - 1, MAX_POSITIONS).astype(np.int64)]


@torch.no_grad()
def _losses(model, data: ReplayData, indices: np.ndarray, device) -> tuple[float, float]:
    policy_total = value_total = 0.0
    for start in range(0, len(indices), BATCH):
        chunk = indices[start : start + BATCH]
        planes = torch.from_numpy(data.planes[chunk]).to(device).float()
        target_policy = torch.from_numpy(data.policy[chunk]).to(device)
        target_value = torch.from_numpy(data.outcome[chunk]).to(device)
        logits, values = model(planes)
        _, policy, value = alphazero_loss(logits, values, target_policy, target_value, 1.0)
        policy_total += float(policy) * len(chunk)
        value_total += float(value) * len(chunk)
    return policy_total / len(indices), value_total / len(indices)
