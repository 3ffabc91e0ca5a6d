"""Training settings, validated before any data is read."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cartridge.games import GAME_NAMES
from cartridge.networks import NetworkConfig
from cartridge.settings import ReanalyseFraction, ReanalyseSimulations


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    game: str
    steps: int = Field(ge=1, le=10_000_000)
    batch_size: int = Field(256, ge=1, le=65536)
    learning_rate: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(1e-4, ge=0, le=1)
    grad_clip: float = Field(1.0, gt=0, description="Max global gradient norm.")
    value_loss_weight: float = Field(1.0, ge=0)
    augment: bool = Field(True, description="Apply a random board symmetry to each sample.")
    seed: int = 0
    checkpoint_every: int = Field(100, ge=1, description="Steps between checkpoints.")
    log_every: int = Field(10, ge=1, description="Steps per batched metric upload.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    network: NetworkConfig | None = None
    reanalyse_fraction: ReanalyseFraction = 0.0
    reanalyse_simulations: ReanalyseSimulations = 32

    def model_post_init(self, _context) -> None:
        if self.game not in GAME_NAMES:
            raise ValueError(f"unknown game {self.game!r}; choose one of {', '.join(GAME_NAMES)}")
