"""Self-play data generation."""

from cartridge.selfplay.config import SelfPlayConfig
from cartridge.selfplay.play import play_selfplay

__all__ = ["SelfPlayConfig", "play_selfplay"]
