"""Triton serving: the evaluator against the session's real Triton, the bot's replay rules,
and self-play whose network runs in Triton."""

import json

import numpy as np
import pytest
import requests
from typer.testing import CliRunner

from cartridge.cli import app
from cartridge.evaluators import make_evaluator
from cartridge.evaluators.onnx_model import OnnxEvaluator
from cartridge.evaluators.triton_model import TritonEvaluator
from cartridge.games import load
from cartridge.serving import bot
from cartridge.serving.triton import (
    ModelUnavailable,
    ServedDiscounts,
    TritonControl,
    TritonUnavailable,
)


def _positions(game, count, seed=0):
    """Planes of positions reached by random play."""
    rng = np.random.default_rng(seed)
    planes = []
    for _ in range(count):
        state = game.new_initial_state()
        for _ in range(rng.integers(0, 8)):
            if state.is_terminal():
                break
            state = state.apply(int(rng.choice(state.legal_actions())))
        planes.append(state.planes())
    return np.stack(planes)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_triton_evaluator_matches_onnxruntime(served_champions, local_stack, onnx_models, protocol):
    game = load("connect4")
    url = local_stack.triton_grpc_url if protocol == "grpc" else local_stack.triton_url
    calls = []
    remote = TritonEvaluator(game, url, protocol=protocol, on_call=lambda s, n: calls.append(n))
    planes = _positions(game, 37)
    logits, values = remote.evaluate(planes)
    expected_logits, expected_values = OnnxEvaluator(game, onnx_models["connect4"][0]).evaluate(
        planes
    )
    np.testing.assert_allclose(logits, expected_logits, atol=1e-5)
    np.testing.assert_allclose(values, expected_values, atol=1e-5)
    assert values.shape == (37,) and logits.flags.writeable
    assert remote.last_version == served_champions["connect4"] and calls == [37]
    with pytest.raises(ValueError, match="expected planes"):
        remote.evaluate(np.zeros((2, 2, 3, 3), np.float32))
    remote.close()


def test_triton_errors_are_classified(served_champions, local_stack):
    with pytest.raises(ModelUnavailable, match="does not serve"):
        TritonEvaluator(load("connect4"), local_stack.triton_grpc_url, model="nope").evaluate(
            _positions(load("connect4"), 1)
        )
    for protocol in ("grpc", "http"):
        nobody = TritonEvaluator(load("connect4"), "127.0.0.1:9", protocol=protocol, timeout=2)
        with pytest.raises(TritonUnavailable, match="127.0.0.1:9"):
            nobody.evaluate(_positions(load("connect4"), 1))
    with pytest.raises(TritonUnavailable):
        TritonControl("http://127.0.0.1:9", timeout=1).load("connect4")
    assert not TritonControl("http://127.0.0.1:9", timeout=1).ready()
    with pytest.raises(ValueError, match="protocol"):
        TritonEvaluator(load("connect4"), "127.0.0.1:9", protocol="smtp")


def test_served_discounts_come_from_the_served_config(served_champions, local_stack):
    discounts = ServedDiscounts(TritonControl(local_stack.triton_url), ttl=60)
    assert discounts.get("connect4") == 1.0  # exported without a discount
    with pytest.raises(ModelUnavailable, match="cartridge_checkers"):
        discounts.get("checkers")  # a model Triton does not have


def test_make_evaluator_triton_specs(monkeypatch, local_stack):
    game = load("tictactoe")
    monkeypatch.delenv("CARTRIDGE_TRITON_GRPC_URL", raising=False)
    with pytest.raises(ValueError, match="CARTRIDGE_TRITON_GRPC_URL"):
        make_evaluator("triton", game)
    monkeypatch.setenv("CARTRIDGE_TRITON_GRPC_URL", local_stack.triton_grpc_url)
    assert make_evaluator("triton", game).protocol == "grpc"
    http = make_evaluator(f"triton:{local_stack.triton_url}", game)
    assert (http.protocol, http.url) == ("http", local_stack.triton_url.removeprefix("http://"))
    for bad in ("triton:ftp://x:1", "triton:grpc://nohost", "tritonish"):
        with pytest.raises(ValueError):
            make_evaluator(bad, game)


def _inferences(stack, model):
    """Positions Triton has evaluated for `model` since it loaded (its statistics API)."""
    stats = requests.get(f"{stack.triton_url}/v2/models/{model}/stats", timeout=10).json()
    return sum(entry["inference_count"] for entry in stats["model_stats"])


def test_selfplay_can_evaluate_through_triton(served_champions, stack_env, tmp_path):
    out = tmp_path / "shard"
    before = _inferences(stack_env, "cartridge_connect4")
    result = CliRunner().invoke(
        app,
        [
            "selfplay",
            "--game",
            "connect4",
            "--games",
            "4",
            "--sims",
            "16",
            "--out",
            str(out),
            "--evaluator",
            "triton",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["games"] == 4 and metadata["model"] == "triton"
    # Every recorded position was searched, each search evaluating positions on Triton.
    assert _inferences(stack_env, "cartridge_connect4") - before >= metadata["positions"]


def test_replay_rejects_bad_games():
    game = load("tictactoe")
    with pytest.raises(bot.IllegalMoves, match=r"move 2 \(4\) is illegal"):
        bot.replay(game, [4, 4])
    with pytest.raises(bot.IllegalMoves, match="after the end"):
        bot.replay(game, [0, 3, 1, 4, 2, 5])
    with pytest.raises(bot.IllegalMoves, match="longer than any"):
        bot.replay(game, list(range(10)))
    with pytest.raises(bot.IllegalMoves, match="illegal"):
        bot.replay(load("connect4"), [7])


def test_positions_are_described_from_the_top_row():
    connect4 = bot.position("connect4", [3, 3, 4])
    assert connect4.board[5][3:5] == [1, 1] and connect4.board[4][3] == 2
    assert connect4.to_play == 1 and connect4.legal_actions == list(range(7))
    won = bot.position("tictactoe", [0, 3, 1, 4, 2])
    assert (won.over, won.winner, won.result, won.legal_actions) == (
        True,
        0,
        "first_player_won",
        [],
    )
    draw = bot.position("tictactoe", [0, 1, 2, 4, 3, 5, 7, 6, 8])
    assert (draw.over, draw.winner, draw.result) == (True, None, "draw")
    othello = bot.game_info(load("othello"))
    assert othello["pass_action"] == 64 and othello["players"] == ["Black", "White"]


def test_reply_plays_a_legal_move_and_leaves_finished_games_alone(onnx_models):
    evaluator = OnnxEvaluator(load("tictactoe"), onnx_models["tictactoe"][0])
    reply = bot.reply("tictactoe", [4], 50, evaluator)
    assert reply.bot_move in range(9) and reply.bot_move != 4
    assert abs(sum(reply.policy) - 1) < 1e-5 and reply.policy[4] == 0
    assert reply.position.moves == [4, reply.bot_move] and -1 <= reply.value <= 1
    finished = bot.reply("tictactoe", [0, 3, 1, 4, 2], 50, evaluator)
    assert finished.bot_move is None and finished.position.over
    with pytest.raises(ValueError, match="level"):
        bot.reply("tictactoe", [], 0, evaluator)
    # Level 1, the lowest the API offers, is the network alone: its priors choose.
    alone = bot.reply("tictactoe", [4], 1, evaluator)
    assert alone.bot_move in range(9) and alone.bot_move != 4 and alone.policy[4] == 0
    assert abs(sum(alone.policy) - 1) < 1e-5
    assert alone.policy[alone.bot_move] == max(alone.policy)
    # X wins at once with 2: the search's value of that win is the model's discount.
    assert bot.reply("tictactoe", [0, 3, 1, 4], 200, evaluator).value > 0.9
    discounted = bot.reply("tictactoe", [0, 3, 1, 4], 200, evaluator, value_discount=0.5)
    assert discounted.bot_move == 2 and 0.4 < discounted.value < 0.55


def test_the_bot_plays_proven_results_and_stops_searching(onnx_models):
    calls = []

    class Counting(OnnxEvaluator):
        def evaluate(self, planes):
            calls.append(len(planes))
            return super().evaluate(planes)

    evaluator = Counting(load("tictactoe"), onnx_models["tictactoe"][0])
    # X wins at once with 2: the tree proves it, the search stops, the value is exact
    # and the policy is the winning move alone, whatever the network thinks.
    win = bot.reply("tictactoe", [0, 3, 1, 4], 800, evaluator)
    assert (win.bot_move, win.value) == (2, 1.0)
    assert win.policy[2] == 1.0
    assert len(calls) < 800 // bot.LEAVES_PER_CALL
    # O to move after X's fork (X holds two open lines): every move loses, and the
    # bot says so exactly, discounted by the plies to the loss.
    lost = bot.reply("tictactoe", [0, 4, 8, 2, 6], 1600, evaluator, value_discount=0.9)
    assert lost.value == pytest.approx(-0.9 * 0.9)


def test_the_readme_kserve_request_answers_with_policy_and_value(
    served_champions, local_stack, stack_env
):
    """The README's curl example, run as written against the session's Triton."""
    import re
    import subprocess
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- kserve-example -->", 1)[1]
    command = re.search(r"```bash\n(.*?)```", block, re.S).group(1)
    assert "http://127.0.0.1:8000/" in command  # the local stack's default port
    command = command.replace("http://127.0.0.1:8000", local_stack.triton_url)
    answer = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=30, check=True
    )
    reply = json.loads(answer.stdout)
    outputs = {o["name"]: o for o in reply["outputs"]}
    assert outputs["policy_logits"]["shape"] == [1, 9] and outputs["value"]["shape"] == [1, 1]
    assert -1 <= outputs["value"]["data"][0] <= 1
    assert reply["model_name"] == "cartridge_tictactoe"
    assert reply["model_version"] == served_champions["tictactoe"]
    # The same numbers as the model file gives for the same position.
    game = load("tictactoe")
    state = game.new_initial_state().apply(4).apply(0)
    logits, value = make_evaluator(
        str(_champion_file(local_stack, served_champions["tictactoe"])), game
    ).evaluate(state.planes()[None])
    np.testing.assert_allclose(outputs["policy_logits"]["data"], logits[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs["value"]["data"], value, rtol=1e-4, atol=1e-5)


def _champion_file(stack, version):
    """The served version's model.onnx, read back from the Triton repository."""
    import tempfile
    from pathlib import Path

    from cartridge import storage

    target = Path(tempfile.mkdtemp()) / "model.onnx"
    return storage.download_file(
        f"s3://{stack.bucket}/triton/cartridge_tictactoe/{version}/model.onnx", target
    )


def test_selfplay_of_a_registry_version_on_triton_is_pinned_to_it(
    served_champions, stack_env, tmp_path
):
    """What the pipeline's self-play step does with `selfplay_triton`: the served
    champion's version plays there; any other version is refused, not silently
    replaced by the one Triton serves."""
    from cartridge.evaluators.triton_model import ModelUnavailable
    from cartridge.settings import SelfPlaySettings
    from cartridge.shard_writer import write_selfplay_shard

    version = served_champions["connect4"]
    settings = SelfPlaySettings(games=2, simulations=8)
    triton = f"grpc://{stack_env.triton_grpc_url}"
    before = _inferences(stack_env, "cartridge_connect4")
    played = write_selfplay_shard(
        "connect4", str(tmp_path / "served"), settings,
        model=f"models:/cartridge-connect4/{version}", triton=triton,
    )  # fmt: skip
    assert played.model == f"models:/cartridge-connect4/{version}"
    assert played.model_sha256 is None  # no file here: Triton ran it
    assert _inferences(stack_env, "cartridge_connect4") - before >= played.positions
    other = str(int(version) + 1)
    with pytest.raises(ModelUnavailable, match="does not serve"):
        write_selfplay_shard(
            "connect4", str(tmp_path / "other"), settings,
            model=f"models:/cartridge-connect4/{other}", triton=triton,
        )  # fmt: skip
    assert not (tmp_path / "other").exists()  # nothing half-written
