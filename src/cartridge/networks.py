"""Policy-value networks and their ONNX export.

Every network maps planes [B, C, H, W] to (policy_logits [B, A], value [B]) with
the value squashed into [-1, 1]: the same contract as the search's evaluators, so
a torch module, its ONNX export and a Triton model are interchangeable.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from cartridge.games import Game, describe
from cartridge.model_metadata import INPUT_NAME, OUTPUT_NAMES, VALUE_DISCOUNT_KEY

ONNX_OPSET = 18


class NetworkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["mlp", "resnet"]
    hidden: int = Field(128, ge=8, le=4096, description="MLP hidden width.")
    layers: int = Field(2, ge=1, le=8, description="MLP hidden layers.")
    blocks: int = Field(5, ge=1, le=40, description="ResNet residual blocks.")
    channels: int = Field(64, ge=8, le=512, description="ResNet channels.")


def default_network_config(game: Game) -> NetworkConfig:
    """The network the game describes as its own (`games.describe`)."""
    defaults = describe(game.name).network
    if defaults.kind == "mlp":
        return NetworkConfig(kind="mlp")
    return NetworkConfig(kind="resnet", blocks=defaults.blocks, channels=defaults.channels)


def network_for(game_name: str, blocks: int | None = None, channels: int | None = None):
    """The network to train for a game: its default, resized when it is a ResNet and a
    size is given (0 or None: the default's). The TicTacToe MLP has no blocks or
    channels, so sizes leave it as it is. Every command and pipeline step asks here."""
    network = default_network_config(Game(game_name))
    sizes = {k: int(v) for k, v in (("blocks", blocks), ("channels", channels)) if v}
    if network.kind != "resnet" or not sizes:
        return network
    return NetworkConfig.model_validate({**network.model_dump(), **sizes})


class PolicyValueMLP(nn.Module):
    def __init__(self, game: Game, hidden: int, layers: int):
        super().__init__()
        width = int(torch.tensor(game.planes_shape).prod())
        trunk: list[nn.Module] = [nn.Flatten()]
        for _ in range(layers):
            trunk += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.trunk = nn.Sequential(*trunk)
        self.policy = nn.Linear(hidden, game.num_actions)
        self.value = nn.Linear(hidden, 1)

    def forward(self, planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(planes)
        return self.policy(features), torch.tanh(self.value(features)).squeeze(-1)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class PolicyValueResNet(nn.Module):
    """AlphaZero's tower: a 3x3 stem, residual blocks, and small convolutional heads."""

    def __init__(self, game: Game, blocks: int, channels: int):
        super().__init__()
        planes, height, width = game.planes_shape
        area = height * width
        self.stem = nn.Sequential(
            nn.Conv2d(planes, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        self.tower = nn.Sequential(*[ResidualBlock(channels) for _ in range(blocks)])
        self.policy = nn.Sequential(
            nn.Conv2d(channels, 2, 1, bias=False),
            nn.BatchNorm2d(2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * area, game.num_actions),
        )
        self.value = nn.Sequential(
            nn.Conv2d(channels, 1, 1, bias=False),
            nn.BatchNorm2d(1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(area, 64),
            nn.ReLU(),
            nn.Linear(64, 1),
            nn.Tanh(),
        )

    def forward(self, planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.tower(self.stem(planes))
        return self.policy(features), self.value(features).squeeze(-1)


def build_network(game: Game, config: NetworkConfig | None = None) -> nn.Module:
    config = config or default_network_config(game)
    if config.kind == "mlp":
        return PolicyValueMLP(game, config.hidden, config.layers)
    return PolicyValueResNet(game, config.blocks, config.channels)


def export_onnx(
    model: nn.Module, game: Game, path: str | Path, value_discount: float = 1.0
) -> Path:
    """Write `model` as ONNX (fixed opset, dynamic batch axis, the standard tensor names).

    Uses torch's `torch.export`-based exporter, the supported path since the
    TorchScript one was deprecated; the weights are stored inside the one file.
    `value_discount` goes into the file's metadata, so the model carries what its
    values mean wherever it is copied (registry, Triton, a local file).
    """
    if not 0 < value_discount <= 1:
        raise ValueError(f"value_discount must be in (0, 1], got {value_discount}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    example = torch.zeros((2, *game.planes_shape), dtype=torch.float32)
    # The exporter logs optional torchvision ops it skips and torch-internal deprecations.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(
                model,
                (example,),
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                opset_version=ONNX_OPSET,
                dynamo=True,
                verbose=False,
            )
    finally:
        model.train(was_training)
    program.model.metadata_props[VALUE_DISCOUNT_KEY] = repr(float(value_discount))
    program.save(str(path), external_data=False)
    return path
