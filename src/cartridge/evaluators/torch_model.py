"""torch evaluator: a policy-value module on CPU or CUDA."""

import numpy as np
import torch
from torch import nn

from cartridge.evaluators.base import check_planes
from cartridge.games import Game


class TorchEvaluator:
    """Evaluates with a torch module in eval mode; CUDA when asked for and present."""

    def __init__(self, game: Game, model: nn.Module, device: str = "cpu"):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        self.game = game
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def evaluate(self, planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        planes = check_planes(planes, self.game.planes_shape)
        batch = torch.from_numpy(planes).to(self.device, non_blocking=True)
        logits, values = self.model(batch)
        return (logits.float().cpu().numpy(), values.float().reshape(-1).cpu().numpy())
