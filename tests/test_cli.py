import json

import pytest
from typer.testing import CliRunner

from cartridge.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line(result) -> bool:
    """The README's promise for bad input: exit status 2 and one line saying why."""
    lines = result.output.strip().splitlines()
    return result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ")


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
    capped = invoke(
        "selfplay", "--game", "tictactoe", "--games", 6, "--sims", 16, "--out", tmp_path / "c",
        "--full-search-fraction", 0.5, "--fast-sims", 4, "--quiet",
    )  # fmt: skip
    assert capped.exit_code == 0, capped.output
    config = json.loads(invoke("shard", "inspect", tmp_path / "c").stdout)["config"]
    assert (config["full_search_fraction"], config["fast_simulations"]) == (0.5, 4)


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
    assert one_line(unknown), unknown.output
    assert "chess" in unknown.output
    (tmp_path / "bad").mkdir()
    bad_shard = invoke("shard", "inspect", tmp_path / "bad")
    assert one_line(bad_shard), bad_shard.output
    assert "metadata.json is missing" in bad_shard.output
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
    assert one_line(bad_model), bad_model.output
    assert "does not exist" in bad_model.output
    bad_player = invoke(
        "arena", "--game", "tictactoe", "--player1", "nobody", "--player2", "random", "--json"
    )
    assert one_line(bad_player), bad_player.output
    assert "unknown player" in bad_player.output
    for discount in ("0.3", "1.2"):
        bad_discount = invoke(
            "selfplay", "--game", "tictactoe", "--games", 1, "--sims", 1,
            "--out", tmp_path / "d", "--value-discount", discount, "--quiet",
        )  # fmt: skip
        assert one_line(bad_discount), bad_discount.output
        assert "--value-discount" in bad_discount.output
    assert not (tmp_path / "d").exists()
    bad_weight = invoke(
        "selfplay", "--game", "tictactoe", "--games", 1, "--sims", 1,
        "--out", tmp_path / "w", "--search-value-weight", "-0.5", "--quiet",
    )  # fmt: skip
    assert one_line(bad_weight), bad_weight.output
    assert "--search-value-weight" in bad_weight.output
    assert not (tmp_path / "w").exists()
    slow_fast = invoke(
        "selfplay", "--game", "tictactoe", "--games", 1, "--sims", 8, "--out", tmp_path / "f",
        "--full-search-fraction", 0.5, "--fast-sims", 8, "--quiet",
    )  # fmt: skip
    assert one_line(slow_fast), slow_fast.output
    assert "fast_simulations (8) must be below" in slow_fast.output
    assert not (tmp_path / "f").exists()
    # A bad gate setting is refused before any self-play is spent on the run.
    for command in (["pipeline", "run", "--local"], ["pipeline", "submit", "--host", "x"]):
        for option, value in (
            ("--gate-method", "coinflip"),
            ("--threshold", "1.5"),
            ("--search-value-weight", "1.5"),
            ("--train-from", "newest"),
            ("--gate-solver-z", "11"),
            ("--random-opening-plies", "-1"),
            ("--td-steps", "513"),
        ):
            refused = invoke(*command, option, value)
            assert one_line(refused), refused.output
            assert option in refused.output, refused.output
    bad_solver_z = invoke("gate", "--game", "connect4", "--solver-z", "-1")
    assert one_line(bad_solver_z), bad_solver_z.output
    assert "--solver-z" in bad_solver_z.output
    bad_gate = invoke("gate", "--game", "tictactoe", "--method", "best-of-3")
    assert one_line(bad_gate), bad_gate.output
    assert "'best-of-3' is not one of" in bad_gate.output


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
    assert (report["simulations_per_tree"], report["trees"], report["repeats"]) == (50, 4, 1)
    assert report["sims_per_sec_runs"] == [report["sims_per_sec"]]  # the median of one run
    # The C-level tree beats the dict-based Python PUCT by a wide margin on any machine.
    assert report["speedup_vs_python"] > 2
    # Computed from the unrounded rates: the printed ones may round it differently.
    assert report["speedup_vs_python"] == pytest.approx(
        report["sims_per_sec"] / report["python_puct_sims_per_sec"], abs=0.06
    )


def test_bench_mcts_with_the_solver_and_a_gumbel_root():
    result = invoke(
        "bench", "mcts", "--game", "tictactoe", "--sims", 400, "--trees", 2, "--repeats", 1,
        "--mcts-solver", "--root-search", "gumbel", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["solver"], report["root_search"]) == (True, "gumbel")
    assert report["sims_per_sec"] > 0
    bad = invoke("bench", "mcts", "--game", "tictactoe", "--root-search", "alphabeta")
    assert bad.exit_code == 2 and "alphabeta" in bad.output


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
    assert (report["games"], report["simulations"], report["parallel_games"]) == (8, 8, 4)
    # Batches hold at most one leaf per game searched together.
    assert 1 <= report["mean_batch"] <= 4
    # Self-play does the raw network's work plus the search's: slower than the bound.
    assert 0 < report["ratio"] < 1


def test_init_model_writes_onnx(tmp_path):
    out = tmp_path / "m.onnx"
    result = invoke("init-model", "--game", "othello", "--out", out, "--blocks", 1, "--channels", 8)
    assert result.exit_code == 0, result.output
    import onnx

    from cartridge.evaluators.onnx_model import OnnxEvaluator
    from cartridge.games import load

    OnnxEvaluator(load("othello"), out)
    graph = onnx.load(str(out)).graph
    convolutions = [node for node in graph.node if node.op_type == "Conv"]
    # A stem, two per residual block, one per head: the sizes asked for took effect.
    assert len(convolutions) == 1 + 2 * 1 + 2
    weights = {tensor.name: tuple(tensor.dims) for tensor in graph.initializer}
    assert weights[convolutions[0].input[1]] == (8, 2, 3, 3)


def test_train_argument_errors(embedded_env, tmp_path):
    no_data = invoke("train", "--game", "tictactoe", "--steps", 5)
    assert no_data.exit_code == 2 and "either --shard" in no_data.output
    no_game = invoke("train", "--shard", tmp_path)
    assert no_game.exit_code == 2 and "--game is required" in no_game.output
    resume = invoke("train", "--resume")
    assert resume.exit_code == 2 and "--checkpoint-dir" in resume.output
    missing = invoke("train", "--resume", "--checkpoint-dir", tmp_path / "none")
    assert missing.exit_code == 2 and "no checkpoint" in missing.output
    empty_root = tmp_path / "replay"
    empty_root.mkdir()
    window = invoke("train", "--game", "tictactoe", "--replay", empty_root, "--window", 2)
    assert window.exit_code == 2 and "holds no iterations" in window.output


def test_train_from_a_replay_window_prints_json(embedded_env, tmp_path):
    root = tmp_path / "replay"
    for iteration, seed in (("iter-000001", 1), ("iter-000002", 2), ("iter-000003", 3)):
        out = root / iteration / "shard-0"
        assert (
            invoke(
                "selfplay",
                "--game",
                "tictactoe",
                "--games",
                4,
                "--sims",
                8,
                "--out",
                out,
                "--seed",
                seed,
                "--quiet",
            ).exit_code
            == 0
        )
    result = invoke(
        "train",
        "--game",
        "tictactoe",
        "--replay",
        root,
        "--window",
        2,
        "--steps",
        5,
        "--batch-size",
        8,
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["steps"] == 5 and report["model_version"] is not None
    from cartridge.tracking import use_tracking

    run = use_tracking(f"sqlite:///{embedded_env / 'mlflow.db'}").get_run(report["run_id"])
    assert "iter-000001" not in run.data.tags["shards"]
    assert "iter-000002" in run.data.tags["shards"] and "iter-000003" in run.data.tags["shards"]
    # The window is the run's MLflow dataset input, as the MLflow UI shows inputs.
    [window] = run.inputs.dataset_inputs
    assert window.dataset.name == "tictactoe-replay-window"
    assert json.loads(window.dataset.source) == {"uri": root.resolve().as_uri()}
    assert {tag.key: tag.value for tag in window.tags}["shards"] == "2"


def test_bench_train_json():
    result = invoke(
        "bench", "train", "--game", "tictactoe", "--batch-size", 16, "--steps", 3, "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["device"] == "cpu" and (report["batch_size"], report["steps"]) == (16, 3)
    assert report["network"]["kind"] == "mlp"  # TicTacToe's own network
    for kind in ("trainer", "bare"):
        per_step = report[f"{kind}_ms_per_step"] / 1000
        assert report[f"{kind}_samples_per_sec"] == pytest.approx(16 / per_step, rel=0.01, abs=1)
    assert report["ratio"] == pytest.approx(
        report["bare_ms_per_step"] / report["trainer_ms_per_step"], abs=0.002
    )


def test_play_in_the_terminal_explains_bad_moves():
    # The person tries cells in turn; malformed and taken cells are refused and asked again.
    result = runner.invoke(
        app,
        ["play", "--game", "tictactoe", "--against", "perfect"],
        input="z9\na1\nb2\nc3\nc1\nb1\na3\na2\nc2\nb3\n",
    )
    assert result.exit_code == 0, result.output
    assert "malformed tictactoe move 'z9'" in result.output
    assert "perfect plays" in result.output
    assert result.output.strip().splitlines()[-1] in ("draw", "you lose")


@pytest.mark.parametrize(
    "arguments, reason",
    [
        (["promote", "--game", "tictactoe", "--version", "999"], "version=999) not found"),
        (
            ["arena", "--game", "tictactoe", "--games", "2", "--player2", "random",
             "--player1", "models:/cartridge-tictactoe@nonexistent"],
            "cartridge-tictactoe not found",
        ),
    ],
)  # fmt: skip
def test_what_the_registry_refuses_is_one_line(embedded_env, arguments, reason):
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: MLflow registry: ") and reason in result.output
    assert "Traceback" not in result.output and len(result.output.splitlines()) == 1


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, onnx_models):
    """A truncated shard, another game's ONNX file and a file that is no ONNX at all."""
    from cartridge.evaluators import UniformEvaluator
    from cartridge.games import load
    from cartridge.replay import write_shard
    from cartridge.selfplay import SelfPlayConfig, play_selfplay

    root = tmp_path_factory.mktemp("bad")
    game = load("tictactoe")
    shard = write_shard(
        root / "shard",
        play_selfplay(game, UniformEvaluator(game), SelfPlayConfig.for_game(game, 4, 8), seed=1),
    )
    planes = shard / "planes.npy"
    planes.write_bytes(planes.read_bytes()[:100])
    (root / "garbage.onnx").write_text("not a model")
    return {
        "shard": str(shard),
        "othello": str(onnx_models["othello"][0]),
        "garbage": str(root / "garbage.onnx"),
        "checkpoints": str(root / "checkpoints"),
    }


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["shard", "inspect", "{shard}"], "planes.npy fails its sha256 check"),
        (
            ["train", "--game", "tictactoe", "--shard", "{shard}", "--steps", "2",
             "--checkpoint-dir", "{checkpoints}"],
            "corrupt shard",
        ),
        (
            ["arena", "--game", "tictactoe", "--player1", "model:{othello}", "--player2",
             "random", "--games", "2"],
            "expects planes ['batch', 2, 8, 8], but tictactoe positions are [2, 3, 3]",
        ),
        (
            ["arena", "--game", "tictactoe", "--player1", "model:{garbage}", "--player2",
             "random", "--games", "2"],
            "is not a loadable ONNX model",
        ),
        (["selfplay", "--game", "tictactoe", "--games", "0", "--out", "{checkpoints}"], "--games"),
    ],
)  # fmt: skip
def test_bad_files_and_settings_are_one_line_and_exit_2(arguments, says, bad_files):
    result = runner.invoke(app, [part.format(**bad_files) for part in arguments])
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split()) and one_line(result), result.output
