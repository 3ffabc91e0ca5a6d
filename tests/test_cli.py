import json

from typer.testing import CliRunner

from cartridge.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_perft_prints_one_integer():
    result = invoke("perft", "--game", "othello", "--depth", "5")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "1396"


def test_selfplay_writes_a_verified_shard(tmp_path):
    out = tmp_path / "shard"
    result = invoke(
        "selfplay",
        "--game",
        "tictactoe",
        "--games",
        6,
        "--sims",
        16,
        "--out",
        out,
        "--seed",
        3,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    inspected = invoke("shard", "inspect", out)
    assert inspected.exit_code == 0
    meta = json.loads(inspected.stdout)
    assert meta["games"] == 6 and meta["seed"] == 3 and meta["simulations"] == 16
    again = invoke(
        "selfplay", "--game", "tictactoe", "--games", 6, "--sims", 16, "--out", out, "--quiet"
    )
    assert again.exit_code == 2 and "immutable" in again.output


def test_selfplay_with_model_records_its_checksum(tmp_path, onnx_models):
    model = onnx_models["connect4"][0]
    out = tmp_path / "shard"
    result = invoke(
        "selfplay",
        "--game",
        "connect4",
        "--games",
        2,
        "--sims",
        8,
        "--out",
        out,
        "--model",
        model,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["model"] == str(model) and len(meta["model_sha256"]) == 64


def test_bad_inputs_exit_2_with_a_reason(tmp_path):
    unknown = invoke("perft", "--game", "chess", "--depth", "1")
    assert unknown.exit_code == 2 and "chess" in unknown.output
    (tmp_path / "bad").mkdir()
    bad_shard = invoke("shard", "inspect", tmp_path / "bad")
    assert bad_shard.exit_code == 2 and "metadata.json is missing" in bad_shard.output
    bad_model = invoke(
        "selfplay",
        "--game",
        "connect4",
        "--games",
        1,
        "--sims",
        1,
        "--out",
        tmp_path / "s",
        "--model",
        tmp_path / "none.onnx",
        "--quiet",
    )
    assert bad_model.exit_code == 2 and "does not exist" in bad_model.output
    bad_player = invoke(
        "arena", "--game", "tictactoe", "--player1", "nobody", "--player2", "random", "--json"
    )
    assert bad_player.exit_code == 2 and "unknown player" in bad_player.output


def test_arena_json():
    result = invoke(
        "arena",
        "--game",
        "tictactoe",
        "--player1",
        "mcts",
        "--player2",
        "random",
        "--games",
        10,
        "--sims",
        200,
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["wins"] + report["draws"] + report["losses"] == 10
    assert report["losses"] == 0
    assert 0.0 <= report["ci95"][0] <= report["score"] <= report["ci95"][1] <= 1.0


def test_bench_mcts_json():
    result = invoke(
        "bench", "mcts", "--game", "connect4", "--sims", 50, "--trees", 4, "--repeats", 1, "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["sims_per_sec"] > 0 and report["python_puct_sims_per_sec"] > 0


def test_bench_selfplay_json(onnx_models):
    result = invoke(
        "bench",
        "selfplay",
        "--game",
        "tictactoe",
        "--model",
        onnx_models["tictactoe"][0],
        "--games",
        8,
        "--sims",
        8,
        "--parallel",
        4,
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ratio"] > 0 and report["parallel_games"] == 4


def test_init_model_writes_onnx(tmp_path):
    out = tmp_path / "m.onnx"
    result = invoke("init-model", "--game", "othello", "--out", out, "--blocks", 1, "--channels", 8)
    assert result.exit_code == 0, result.output
    from cartridge.evaluators.onnx_model import OnnxEvaluator
    from cartridge.games import load

    OnnxEvaluator(load("othello"), out)
