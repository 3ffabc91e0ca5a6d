"""Training: replay window in, verified ONNX challenger registered in MLflow out."""

from cartridge.training.config import TrainConfig
from cartridge.training.data import DataError, load_replay, resolve_window
from cartridge.training.trainer import Preempted, TrainingError, TrainResult, train

__all__ = [
    "DataError",
    "Preempted",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "load_replay",
    "resolve_window",
    "train",
]
