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


def _ephemeral_range() -> tuple[int, int]:
    from pathlib import Path

    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_stack_ports():
    """A block of 20 free ports: S3 and weed's helpers (15), MLflow, Triton's HTTP, gRPC
    and metrics, and the web app."""
    import random

    rng = random.Random()
    # Below the kernel's ephemeral range: a port there can be taken at any moment as
    # the local end of some outgoing connection (seen under load: a restarted Triton
    # found its metrics port held by a client socket).
    low, _ = _ephemeral_range()
    while True:
        s3 = rng.randrange(10000, low - 20, 20)
        if _ports_free("127.0.0.1", range(s3, s3 + 20)):
            return {
                "s3_port": s3,
                "mlflow_port": s3 + 15,
                "triton_port": s3 + 16,
                "web_port": s3 + 19,
            }


RECONCILE_SECONDS = 15


def make_stack_config(home):
    from cartridge.stack import StackConfig

    return StackConfig(home=home, **free_stack_ports())


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory):
    """The real local stack (S3 store, MLflow, Triton, web app) for the whole session,
    on free ports."""
    from cartridge.stack import down, up

    config = make_stack_config(tmp_path_factory.mktemp("stack") / ".cartridge")
    patch = pytest.MonkeyPatch()
    # The web app's periodic reconcile pass, shorter than the 30 s default so that the
    # tests of a missed webhook end sooner.
    patch.setenv("CARTRIDGE_RECONCILE_SECONDS", str(RECONCILE_SECONDS))
    up(config)
    patch.undo()
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


def fresh_served_model(client, config, game_name):
    """An empty registry entry and an empty Triton folder for `game_name`, and Triton no
    longer serving it: a re-created registry entry numbers its versions from 1 again,
    so stale version folders would outrank the new ones."""
    import time

    from cartridge import storage
    from cartridge.serving.triton import TritonControl

    fresh_registered_model(client, game_name)
    control = TritonControl(config.triton_url)
    # Unload before deleting: Triton's index lists only what the repository holds.
    if control.model_state(game_name).state == "READY":
        control.unload(game_name)
        deadline = time.monotonic() + 30
        # Unloading is asynchronous: wait until it is over, not only begun.
        while control.model_state(game_name).state in ("READY", "UNLOADING"):
            assert time.monotonic() < deadline, f"Triton keeps serving {game_name}"
            time.sleep(0.1)
    control.close()
    storage.delete_prefix(f"s3://{config.bucket}/triton/cartridge_{game_name}/")


@pytest.fixture(scope="session")
def champion_cache():
    """game -> the version `served_champions` last promoted, across modules."""
    return {}


def _still_served(client, config, game_name, version) -> bool:
    """Whether `version` is still the registry's champion and what Triton serves."""
    from cartridge.names import CHAMPION
    from cartridge.serving.triton import TritonControl
    from cartridge.tracking import alias_version

    if alias_version(client, game_name, CHAMPION) != version:
        return False
    control = TritonControl(config.triton_url)
    try:
        state = control.model_state(game_name)
    finally:
        control.close()
    return (state.version, state.state) == (version, "READY")


@pytest.fixture(scope="module")
def served_champions(local_stack, onnx_models, champion_cache):
    """Fresh TicTacToe and Connect 4 champions, promoted and loaded in the session's
    Triton; returns their registry versions. The game's Triton folder is cleared first:
    a re-created registry entry numbers its versions from 1 again. Champions an earlier
    module had promoted are kept when no test since has replaced them."""
    import mlflow

    from cartridge.promotion import promote
    from cartridge.stack import client_environment
    from cartridge.tracking import log_and_register, use_tracking

    patch = pytest.MonkeyPatch()
    for key, value in client_environment(local_stack).items():
        patch.setenv(key, value)
    client = use_tracking(local_stack.mlflow_url)
    mlflow.set_experiment("serving-test")
    versions = {}
    for name in ("tictactoe", "connect4"):
        cached = champion_cache.get(name)
        if cached and _still_served(client, local_stack, name, cached):
            versions[name] = cached
            continue
        fresh_served_model(client, local_stack, name)
        with mlflow.start_run():
            _, version = log_and_register(client, onnx_models[name][0], load(name), {})
        result = promote(client, name, version)
        assert result.triton_error is None, result.triton_error
        versions[name] = champion_cache[name] = version
    yield versions
    patch.undo()
