import pytest
import torch

from cartridge.games import load
from cartridge.networks import build_network, export_onnx


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory):
    """A freshly initialised network per game, exported to ONNX once per session."""
    directory = tmp_path_factory.mktemp("models")
    paths = {}
    for name in ("tictactoe", "connect4", "othello"):
        torch.manual_seed(0)
        game = load(name)
        model = build_network(game)
        paths[name] = (export_onnx(model, game, directory / f"{name}.onnx"), model)
    return paths
