import numpy as np
import pytest
import torch

from cartridge.evaluators import RolloutEvaluator, UniformEvaluator, make_evaluator
from cartridge.evaluators.onnx_model import OnnxEvaluator
from cartridge.evaluators.torch_model import TorchEvaluator
from cartridge.games import GAME_NAMES, load


def random_positions(game, count, seed=0):
    rng = np.random.default_rng(seed)
    planes = []
    while len(planes) < count:
        state = game.new_initial_state()
        while not state.is_terminal() and len(planes) < count:
            planes.append(state.planes())
            state = state.apply(int(rng.choice(state.legal_actions())))
    return np.stack(planes)


@pytest.mark.parametrize("name", GAME_NAMES)
def test_uniform_evaluator_shapes(name):
    game = load(name)
    logits, values = UniformEvaluator(game).evaluate(random_positions(game, 5))
    assert logits.shape == (5, game.num_actions) and not logits.any()
    assert values.shape == (5,) and not values.any()


def test_rollout_values_are_exact_for_finished_games():
    game = load("connect4")
    state = game.new_initial_state()
    for move in [0, 0, 1, 1, 2, 2, 3]:  # X completes the bottom row
        state = state.apply(move)
    _, values = RolloutEvaluator(game, rollouts=8).evaluate(state.planes()[None])
    assert values[0] == -1.0  # the side to move has lost


def test_rollout_values_are_averages_in_range_and_seeded():
    game = load("othello")
    planes = random_positions(game, 16)
    a = RolloutEvaluator(game, rollouts=4, seed=1).evaluate(planes)[1]
    b = RolloutEvaluator(game, rollouts=4, seed=1).evaluate(planes)[1]
    np.testing.assert_array_equal(a, b)
    assert np.all(np.abs(a) <= 1.0) and np.all(np.isin(a * 4, np.arange(-4, 5)))


@pytest.mark.parametrize("name", GAME_NAMES)
def test_onnx_matches_torch(name, onnx_models):
    game = load(name)
    path, model = onnx_models[name]
    planes = random_positions(game, 33)
    onnx_logits, onnx_values = OnnxEvaluator(game, path, threads=2).evaluate(planes)
    torch_logits, torch_values = TorchEvaluator(game, model).evaluate(planes)
    assert onnx_logits.shape == (33, game.num_actions) and onnx_values.shape == (33,)
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)
    np.testing.assert_allclose(onnx_values, torch_values, atol=1e-4)
    assert np.all(np.abs(onnx_values) <= 1.0)


def test_onnx_evaluator_refuses_bad_models(tmp_path, onnx_models):
    game = load("connect4")
    with pytest.raises(FileNotFoundError):
        OnnxEvaluator(game, tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        OnnxEvaluator(game, junk)
    with pytest.raises(ValueError, match="connect4 positions are"):
        OnnxEvaluator(game, onnx_models["othello"][0])
    evaluator = OnnxEvaluator(game, onnx_models["connect4"][0])
    with pytest.raises(ValueError, match="expected planes of shape"):
        evaluator.evaluate(np.zeros((2, 2, 8, 8), np.float32))


def test_torch_evaluator_refuses_missing_cuda(onnx_models):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present on this machine")
    with pytest.raises(ValueError, match="CUDA is not available"):
        TorchEvaluator(load("tictactoe"), onnx_models["tictactoe"][1], device="cuda")


def test_make_evaluator_specs(onnx_models):
    game = load("tictactoe")
    assert isinstance(make_evaluator("uniform", game), UniformEvaluator)
    assert isinstance(make_evaluator("rollout", game), RolloutEvaluator)
    assert isinstance(make_evaluator(str(onnx_models["tictactoe"][0]), game), OnnxEvaluator)
    with pytest.raises(ValueError, match="unknown evaluator"):
        make_evaluator("resnet", game)


def test_onnx_models_carry_the_value_discount_they_were_trained_with(tmp_path, onnx_models):
    import onnx

    from cartridge.arena import make_player
    from cartridge.model_metadata import VALUE_DISCOUNT_KEY
    from cartridge.networks import build_network, export_onnx

    game = load("connect4")
    assert OnnxEvaluator(game, onnx_models["connect4"][0]).value_discount == 1.0
    path = export_onnx(build_network(game), game, tmp_path / "discounted.onnx", 0.97)
    assert OnnxEvaluator(game, path).value_discount == 0.97
    # Every player of the file backs up values with the same discount.
    assert make_player(f"model:{path}", game, 10).config.value_discount == 0.97
    assert make_player(f"model:{onnx_models['connect4'][0]}", game, 10).config.value_discount == 1

    for bad in ("1.5", "0", "fast"):
        model = onnx.load(str(path))
        model.metadata_props[0].value = bad
        onnx.save(model, str(tmp_path / "bad.onnx"))
        with pytest.raises(ValueError, match=f"{VALUE_DISCOUNT_KEY}='{bad}' is not a discount"):
            OnnxEvaluator(game, tmp_path / "bad.onnx")
    with pytest.raises(ValueError, match="value_discount must be in"):
        export_onnx(build_network(game), game, tmp_path / "never.onnx", 0.0)
