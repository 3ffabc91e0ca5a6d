"""Run settings: one typed home per group, from which the CLI options, the pipeline's
parameters and the steps' inputs are all derived."""

import pytest
import typer
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from pydantic import ValidationError

from cartridge.cli import app
from cartridge.settings import (
    SETTING_GROUPS,
    Endpoints,
    GateSettings,
    SelfPlaySettings,
    TrainingSettings,
    problems,
)
from kfp_pipelines.alphazero import pipeline_parameters
from kfp_pipelines.runner import compile_pipeline


def test_parameters_arrive_as_text_and_come_back_typed():
    # kfp.local hands ints over as floats, a cluster as text inside a struct.
    settings = SelfPlaySettings.from_parameters(
        {"games_per_shard": "12.0", "simulations": 40.0, "value_discount": "0.97"}
    )
    assert (settings.games, settings.simulations, settings.value_discount) == (12, 40, 0.97)
    assert isinstance(settings.games, int)
    assert settings.parameters()["games_per_shard"] == 12
    gate = GateSettings.from_parameters({"gate_method": "sprt", "arena_games": "10"})
    assert (gate.method, gate.games) == ("sprt", 10)


def test_bad_parameters_are_named_as_users_type_them():
    with pytest.raises(ValidationError) as bad:
        SelfPlaySettings.from_parameters({"games_per_shard": "2.5", "td_steps": 600})
    found = problems(bad.value, SelfPlaySettings)
    assert any(p.startswith("games_per_shard: ") for p in found), found
    assert any(p.startswith("td_steps: ") for p in found), found
    with pytest.raises(ValueError, match="has no parameter nope"):
        TrainingSettings.from_parameters({"nope": 1})
    with pytest.raises(ValidationError, match="at least 8 channels"):
        TrainingSettings(network_channels=4)
    with pytest.raises(ValidationError, match="fast_simulations \\(30\\) must be below"):
        SelfPlaySettings(simulations=30, full_search_fraction=0.5, fast_simulations=30)


def test_settings_are_frozen():
    settings = TrainingSettings()
    with pytest.raises(ValidationError):
        settings.steps = 3


def test_the_pipeline_signature_is_derived_from_the_settings(tmp_path):
    path = compile_pipeline(tmp_path, iterations=1, image="reg/cartridge:1")
    spec = json_format.ParseDict(
        next(yaml.safe_load_all(path.read_text())), pipeline_spec_pb2.PipelineSpec()
    )
    declared = spec.root.input_definitions.parameters
    expected = {"game", "shards", "seed", "seed_with_run_id"}
    for model in (*SETTING_GROUPS.values(), Endpoints):
        expected |= set(model.parameter_fields())
    assert set(declared) == expected
    assert [name for name, _, _ in pipeline_parameters()][:3] == ["game", "shards", "seed"]
    # One set of defaults: the run form shows the settings' own.
    for model in (*SETTING_GROUPS.values(), Endpoints):
        for name, value in model().parameters().items():
            default = json_format.MessageToDict(declared[name].default_value)
            assert default == value, name
    assert "elo0" not in declared  # statistics of the gate, not a run parameter


def _options(*path):
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return {opt for param in command.params for opt in param.opts}


@pytest.mark.parametrize(
    "path, groups",
    [
        (("pipeline", "run"), ("selfplay", "training", "gate")),
        (("pipeline", "submit"), ("selfplay", "training", "gate")),
        (("selfplay",), ("selfplay",)),
        (("gate",), ("gate",)),
    ],
)
def test_every_setting_is_an_option_of_the_commands_that_take_it(path, groups):
    options = _options(*path)
    for group in groups:
        for name in SETTING_GROUPS[group].parameter_fields():
            assert "--" + name.replace("_", "-") in options, (path, name)


def test_selfplay_triton_takes_a_grpc_address_or_nothing(tmp_path):
    from cartridge.shard_writer import write_selfplay_shard

    assert Endpoints().selfplay_triton == ""
    assert Endpoints(selfplay_triton="grpc://triton.cartridge.svc:8001").selfplay_triton
    for bad in ("triton.cartridge.svc:8001", "http://triton:8000", "grpc://triton", "grpc://:1"):
        with pytest.raises(ValidationError, match="selfplay_triton"):
            Endpoints(selfplay_triton=bad)
    # Triton serves registry versions: a file or an alias cannot be pinned there.
    for model in ("/tmp/model.onnx", "models:/cartridge-tictactoe@champion"):
        with pytest.raises(ValueError, match="Triton evaluates registry models"):
            write_selfplay_shard(
                "tictactoe", str(tmp_path / "shard"), SelfPlaySettings(games=1),
                model=model, triton="grpc://127.0.0.1:1",
            )  # fmt: skip
