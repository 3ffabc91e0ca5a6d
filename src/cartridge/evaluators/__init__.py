"""Leaf evaluators for the search, all behind `Evaluator.evaluate(planes)`.

`make_evaluator` turns a command-line spec into one: `uniform`, `rollout`, the path
of an `.onnx` model (onnxruntime), or `triton` (the game's model on Triton). The
torch evaluator takes a module object and is built directly (`TorchEvaluator`).
"""

import os
from pathlib import Path

from cartridge.evaluators.base import Evaluator
from cartridge.evaluators.simple import RolloutEvaluator, UniformEvaluator
from cartridge.games import Game


def make_evaluator(
    spec: str, game: Game, *, threads: int = 1, seed: int = 0, version: str = ""
) -> Evaluator:
    """`uniform`, `rollout`, a path to an ONNX model file, or `triton`.

    `triton` uses CARTRIDGE_TRITON_GRPC_URL (gRPC; `cartridge stack env` sets it);
    `triton:grpc://HOST:PORT` or `triton:http://HOST:PORT` name the server, and
    `version` the model version it must answer with (any it serves when empty)."""
    if spec == "uniform":
        return UniformEvaluator(game)
    if spec == "rollout":
        return RolloutEvaluator(game, seed=seed)
    if spec.endswith(".onnx"):
        from cartridge.evaluators.onnx_model import OnnxEvaluator

        return OnnxEvaluator(game, Path(spec), threads=threads)
    if spec == "triton" or spec.startswith("triton:"):
        return _triton_evaluator(spec, game, version)
    raise ValueError(
        f"unknown evaluator {spec!r}: use 'uniform', 'rollout', a .onnx path or "
        "'triton[:grpc://HOST:PORT|:http://HOST:PORT]'"
    )


def _triton_evaluator(spec: str, game: Game, version: str = "") -> Evaluator:
    from cartridge.evaluators.triton_model import TritonEvaluator

    address = spec.removeprefix("triton").removeprefix(":")
    if not address:
        address = os.environ.get("CARTRIDGE_TRITON_GRPC_URL", "")
        if not address:
            raise ValueError(
                "evaluator 'triton' needs CARTRIDGE_TRITON_GRPC_URL (see `cartridge stack "
                "env`) or an address: triton:grpc://HOST:PORT or triton:http://HOST:PORT"
            )
        address = "grpc://" + address
    protocol, separator, host_port = address.partition("://")
    if not separator or protocol not in ("grpc", "http") or ":" not in host_port:
        raise ValueError(
            f"bad Triton address {address!r}: use grpc://HOST:PORT or http://HOST:PORT"
        )
    return TritonEvaluator(game, host_port, protocol=protocol, version=version)


__all__ = ["Evaluator", "RolloutEvaluator", "UniformEvaluator", "make_evaluator"]
