"""Reanalysis (MuZero Reanalyze, Schrittwieser et al. 2021): fresh targets for old games.

A replay window holds games played by older networks, and their targets say what
those networks' searches believed: a position recorded in iteration 3 still teaches
iteration 3's policy in iteration 9. Before a training step, a share of the batch's
positions is searched again with the network being trained, and the search's policy
and value replace the recorded ones for those rows.

The search is Gumbel root search without Gumbel noise (the completed-Q policy is a
good target from few simulations, and no sampling is needed: nothing is played) with
MCTS-solver on (positions near the end get their exact value). It has no random
input, so the reanalysed targets follow from the network and the batch alone, and a
run with the same seed reproduces them exactly.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from cartridge.games import Game
from cartridge.mcts import BatchedMCTS, SearchConfig


class _TrainingNetwork:
    """The model being trained as a search evaluator: eval mode (batch norm uses its
    running statistics) for the call only, no gradients."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.model = model
        self.device = device

    def evaluate(self, planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                logits, values = self.model(torch.from_numpy(planes).to(self.device))
        finally:
            self.model.train(was_training)
        return logits.float().cpu().numpy(), values.float().reshape(-1).cpu().numpy()


class Reanalyser:
    """Replaces the targets of the first `round(fraction * batch_size)` rows of each
    batch (rows are drawn at random, so the first ones are a random share)."""

    def __init__(
        self,
        game: Game,
        model: torch.nn.Module,
        device: torch.device,
        *,
        fraction: float,
        batch_size: int,
        simulations: int,
        value_discount: float,
    ):
        self.rows = round(fraction * batch_size)
        self.simulations = simulations
        self.network = _TrainingNetwork(model, device)
        self.seconds = 0.0  # time spent reanalysing, for the run's metrics
        self.search = (
            BatchedMCTS(
                game,
                self.rows,
                SearchConfig(
                    root_search="gumbel",
                    gumbel_scale=0.0,
                    solver=True,
                    value_discount=value_discount,
                ),
            )
            if self.rows
            else None
        )

    def __call__(
        self, planes: torch.Tensor, policy: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's policy and value targets, the first rows reanalysed."""
        if not self.rows:
            return policy, value
        began = time.perf_counter()
        fresh_policy, fresh_value = self.targets(planes[: self.rows].cpu().numpy())
        policy, value = policy.clone(), value.clone()
        policy[: self.rows] = torch.from_numpy(fresh_policy).to(policy.device, policy.dtype)
        value[: self.rows] = torch.from_numpy(fresh_value).to(value.device, value.dtype)
        self.seconds += time.perf_counter() - began
        return policy, value

    def targets(self, planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Search policy (float32 [rows, actions]) and root value (float32 [rows]) of
        each position, searched from scratch with the current weights."""
        self.search.reset_from_planes(np.ascontiguousarray(planes, dtype=np.float32))
        self.search.run(self.network, self.simulations)
        policy = np.stack([self.search.policy(i) for i in range(len(planes))])
        value = np.array([self.search.root_value(i) for i in range(len(planes))], np.float32)
        return policy, value
