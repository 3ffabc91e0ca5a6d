"""Minibatches drawn from the replay window, with symmetry augmentation on the device."""

from __future__ import annotations

import torch

from cartridge.games import Game
from cartridge.games.symmetry import permutations
from cartridge.training.data import ReplayData


class BatchSampler:
    """Uniform sampling with replacement from the whole window, the AlphaZero way.

    The window lives on the training device (copied once through pinned memory on
    CUDA), planes as uint8, so a batch costs one gather and a cast. Each sample
    gets an independent random symmetry, applied as a gather with precomputed
    index tables, to planes and target policy alike. All randomness comes from
    `generator`, whose state the checkpoint saves.
    """

    def __init__(
        self,
        data: ReplayData,
        game: Game,
        device: torch.device,
        generator: torch.Generator,
        augment: bool,
    ):
        self.device = device
        self.generator = generator
        self.augment = augment and game.num_symmetries > 1
        self.size = len(data)
        pin = device.type == "cuda"
        self.planes = self._to_device(torch.from_numpy(data.planes), pin)
        self.policy = self._to_device(torch.from_numpy(data.policy), pin)
        self.outcome = self._to_device(torch.from_numpy(data.outcome), pin)
        cell_perms, action_perms = permutations(game)
        self.cell_perms = torch.from_numpy(cell_perms).to(device)
        self.action_perms = torch.from_numpy(action_perms).to(device)
        self.num_symmetries = game.num_symmetries

    def _to_device(self, tensor: torch.Tensor, pin: bool) -> torch.Tensor:
        if pin:
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=pin)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index = torch.randint(self.size, (batch_size,), generator=self.generator).to(self.device)
        planes = self.planes[index]
        policy = self.policy[index]
        outcome = self.outcome[index]
        if self.augment:
            symmetry = torch.randint(
                self.num_symmetries, (batch_size,), generator=self.generator
            ).to(self.device)
            b, c, h, w = planes.shape
            cells = self.cell_perms[symmetry][:, None, :].expand(b, c, h * w)
            planes = torch.gather(planes.reshape(b, c, h * w), 2, cells).reshape(b, c, h, w)
            policy = torch.gather(policy, 1, self.action_perms[symmetry])
        return planes.float(), policy, outcome
