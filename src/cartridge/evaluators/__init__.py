"""Leaf evaluators for the search, all behind `Evaluator.evaluate(planes)`.

`make_evaluator` turns a command-line spec into one: `uniform`, `rollout`, or
the path of an `.onnx` model (onnxruntime). The torch evaluator takes a module
object and is built directly (`TorchEvaluator`).
"""

from pathlib import Path

from cartridge.evaluators.base import Evaluator
from cartridge.evaluators.simple import RolloutEvaluator, UniformEvaluator
from cartridge.games import Game


def make_evaluator(spec: str, game: Game, *, threads: int = 1, seed: int = 0) -> Evaluator:
    """`uniform`, `rollout`, or a path to an ONNX model file."""
    if spec == "uniform":
        return UniformEvaluator(game)
    if spec == "rollout":
        return RolloutEvaluator(game, seed=seed)
    if spec.endswith(".onnx"):
        from cartridge.evaluators.onnx_model import OnnxEvaluator

        return OnnxEvaluator(game, Path(spec), threads=threads)
    raise ValueError(f"unknown evaluator {spec!r}: use 'uniform', 'rollout' or a .onnx path")


__all__ = ["Evaluator", "RolloutEvaluator", "UniformEvaluator", "make_evaluator"]
