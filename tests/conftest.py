import pytest
import torch

from cartridge.games import load
from cartridge.networks import build_network, export_onnx


@pytest.fixture(autouse=True)
def isolated_home(monkeypatch, tmp_path):
    """Each test's state directory is its own, so a stack a developer left running in
    the checkout is never picked up by the commands under test."""
    monkeypatch.setenv("CARTRIDGE_HOME", str(tmp_path / ".cartridge"))
    return tmp_path / ".cartridge"


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


def _ports_free(host, ports):
    import socket

    for port in ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True


def free_stack_ports():
    """An S3 port whose block of 15 (weed's helper ports) is free, and a free MLflow port."""
    import random

    rng = random.Random()
    while True:
        s3 = rng.randrange(20000, 60000, 20)
        mlflow = s3 + 17
        if _ports_free("127.0.0.1", [*range(s3, s3 + 15), mlflow]):
            return s3, mlflow


def make_stack_config(home):
    from cartridge.stack import StackConfig

    s3_port, mlflow_port = free_stack_ports()
    return StackConfig(home=home, s3_port=s3_port, mlflow_port=mlflow_port)


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory):
    """A real S3 store and MLflow server for the whole session, on free ports."""
    from cartridge.stack import down, up

    config = make_stack_config(tmp_path_factory.mktemp("stack") / ".cartridge")
    up(config)
    yield config
    down(config)


@pytest.fixture
def stack_env(local_stack, monkeypatch):
    """This test's MLflow and S3 clients talk to the session stack."""
    from cartridge.stack import client_environment

    for key, value in client_environment(local_stack).items():
        monkeypatch.setenv(key, value)
    return local_stack


@pytest.fixture
def embedded_env(monkeypatch, tmp_path):
    """No tracking server: MLflow runs embedded under this test's home."""
    for key in (
        "MLFLOW_TRACKING_URI",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CARTRIDGE_HOME", str(tmp_path / ".cartridge"))
    return tmp_path / ".cartridge"


def fresh_registered_model(client, game_name):
    """Start a test from an empty registry entry for `game_name` (the session stack is shared)."""
    from mlflow.exceptions import MlflowException

    try:
        client.delete_registered_model(f"cartridge-{game_name}")
    except MlflowException:
        pass
