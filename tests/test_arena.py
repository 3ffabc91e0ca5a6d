import math

import numpy as np
import pytest

from cartridge.arena import make_player, play_match, summarize
from cartridge.arena.stats import elo_from_score
from cartridge.games import load
from cartridge.solvers import action_values


def test_statistics_on_known_results():
    even = summarize("a", "b", "tictactoe", wins=50, losses=50, draws=0)
    assert even.score == 0.5 and even.elo_diff == 0.0
    # Per-game score variance is 0.25, so the half-width is 1.96 * 0.5 / 10.
    assert even.ci95 == pytest.approx((0.5 - 0.098, 0.5 + 0.098), abs=1e-3)
    assert even.elo_ci95[0] == pytest.approx(-elo_from_score(0.598), abs=0.5)

    strong = summarize("a", "b", "tictactoe", wins=75, losses=25, draws=0)
    assert strong.elo_diff == pytest.approx(190.85, abs=0.01)  # 400 log10(3)

    drawn = summarize("a", "b", "tictactoe", wins=0, losses=0, draws=10)
    assert drawn.score == 0.5 and drawn.ci95 == (0.5, 0.5)

    perfect = summarize("a", "b", "tictactoe", wins=10, losses=0, draws=0)
    assert perfect.score == 1.0 and math.isinf(perfect.elo_diff)
    with pytest.raises(ValueError, match="no games"):
        summarize("a", "b", "tictactoe", 0, 0, 0)


def test_perfect_tictactoe_player_never_loses():
    game = load("tictactoe")
    result = play_match(
        game, make_player("perfect", game, 0, seed=1), make_player("random", game, 0, seed=2), 40
    )
    assert result.losses == 0 and result.wins > 20


def test_search_beats_random_at_connect4_from_both_seats():
    game = load("connect4")
    result = play_match(
        game, make_player("mcts:rollout", game, 200), make_player("random", game, 0), 8
    )
    assert result.games == 8
    assert result.score >= 0.875


@pytest.mark.parametrize("root_search", ["puct", "gumbel"])
def test_search_players_take_the_solver_and_gumbel_root(root_search):
    game = load("tictactoe")
    player = make_player("mcts", game, 2000, solver=True, root_search=root_search)
    assert player.config.solver and player.config.root_search == root_search
    assert player.config.gumbel_scale == 0.0  # plays, does not explore
    # With proofs, a search player never loses TicTacToe to perfect play.
    result = play_match(game, player, make_player("perfect", game, 0, seed=3), 10)
    assert result.losses == 0
    with pytest.raises(ValueError, match="root_search"):
        make_player("mcts", game, 10, root_search="alphabeta")


def test_seats_alternate_and_openings_repeat():
    game = load("tictactoe")
    perfect = make_player("perfect", game, 0)
    # From the empty board, perfect play against itself always draws.
    assert play_match(game, perfect, perfect, 4, opening_plies=0).draws == 4
    # Random openings can be lost already; but each is played once from each seat by
    # equal players, so every win is paid back by a loss.
    result = play_match(game, perfect, perfect, 40, opening_plies=3, seed=5)
    assert result.wins == result.losses > 0


def test_unknown_players_are_refused():
    game = load("connect4")
    with pytest.raises(ValueError, match="unknown player 'alphabeta'"):
        make_player("alphabeta", game, 10)
    with pytest.raises(
        ValueError, match=r"the perfect player needs an exact solver, which othello"
    ):
        make_player("perfect", load("othello"), 10)
    with pytest.raises(ValueError, match=r"\(solved games: tictactoe, connect4\)"):
        action_values(load("othello").new_initial_state())
    with pytest.raises(FileNotFoundError):
        make_player("model:/nowhere.onnx", game, 10)


def test_registry_models_play_through_their_uri(stack_env, onnx_models, tmp_path, monkeypatch):
    import tempfile

    import mlflow

    from cartridge.tracking import log_and_register, use_tracking

    game = load("tictactoe")
    client = use_tracking(stack_env.mlflow_url)
    mlflow.set_experiment("arena-test")
    with mlflow.start_run():
        _, version = log_and_register(client, onnx_models["tictactoe"][0], game, {"test": "1"})
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(downloads))
    player = make_player("models:/cartridge-tictactoe@challenger", game, 50)
    assert list(downloads.iterdir()) == []  # the session holds the model; the file is gone
    result = play_match(game, player, make_player("random", game, 0), 4)
    assert result.games == 4 and player.name.endswith("@challenger")
    assert client.get_model_version_by_alias("cartridge-tictactoe", "challenger").version == str(
        version
    )


def test_perfect_connect4_player_beats_search_from_both_seats():
    game = load("connect4")
    result = play_match(
        game, make_player("perfect", game, 0), make_player("mcts:rollout", game, 200), 4
    )
    assert result.losses == 0 and result.wins >= 3


def test_solver_accuracy_on_a_fixed_position_set():
    from cartridge.arena.accuracy import (
        judge_moves,
        solver_agreement,
        solver_optimal_fraction,
        solver_positions,
    )
    from cartridge.solvers import action_values

    game = load("connect4")
    positions = solver_positions(game, 40)
    assert positions == solver_positions(game, 40)  # fixed by its seed
    assert all(len(set(action_values(s).values())) > 1 for s in positions)
    assert solver_optimal_fraction(make_player("perfect", game, 0), positions) == 1.0
    assert solver_optimal_fraction(make_player("random", game, 0), positions) < 0.8
    optimal, keeps_result = solver_agreement(make_player("mcts:rollout", game, 50), positions)
    assert 0 < optimal <= keeps_result < 1  # a best move always keeps the result
    per_move = judge_moves(make_player("mcts:rollout", game, 50), positions)
    assert [float(judged.mean()) for judged in per_move] == [optimal, keeps_result]
    assert not (per_move[0] & ~per_move[1]).any()


def test_connect4_positions_are_valued_from_their_network_planes():
    from cartridge.arena.accuracy import solver_positions
    from cartridge.solvers import connect4_values_from_planes

    game = load("connect4")
    positions = solver_positions(game, 12)
    assert {s.ply % 2 for s in positions} == {0, 1}  # both sides to move are covered
    for state in positions:
        assert connect4_values_from_planes(state.planes()) == action_values(state)
    with pytest.raises(ValueError, match=r"shape \(2, 6, 7\)"):
        connect4_values_from_planes(np.zeros((2, 3, 3)))


def test_connect4_deciding_stone_follows_the_solver_score():
    from cartridge.solvers import connect4_deciding_stone

    game = load("connect4")
    first_wins_next = game.new_initial_state()
    for action in (0, 0, 1, 1, 2, 2):  # the first player wins on stone 7 with column 3
        first_wins_next = first_wins_next.apply(action)
    best = max(action_values(first_wins_next).values())
    assert connect4_deciding_stone(first_wins_next.ply, best) == 7
    second_wins_next = game.new_initial_state()
    for action in (6, 0, 0, 1, 1, 2, 2):  # now the second player wins on stone 8
        second_wins_next = second_wins_next.apply(action)
    assert connect4_deciding_stone(7, max(action_values(second_wins_next).values())) == 8
    open_three = game.new_initial_state()
    for action in (1, 1, 2, 2, 3):  # the second player can block one end, not both
        open_three = open_three.apply(action)
    best = max(action_values(open_three).values())
    assert best < 0 and connect4_deciding_stone(open_three.ply, best) == 7
    assert connect4_deciding_stone(12, 0) is None


def test_arena_json_reports_solver_accuracy_for_connect4():
    from typer.testing import CliRunner

    from cartridge.cli import app

    result = CliRunner().invoke(
        app,
        [
            "arena",
            "--game",
            "connect4",
            "--player1",
            "mcts",
            "--player2",
            "random",
            "--games",
            "2",
            "--sims",
            "50",
            "--solver-positions",
            "20",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(result.stdout)
    assert report["solver_positions"] == 20 and 0.0 <= report["solver_optimal_fraction"] <= 1.0
    assert report["solver_optimal_fraction"] <= report["solver_result_fraction"] <= 1.0


def test_exhaustive_perfect_play_check():
    from cartridge.arena.accuracy import losses_to_perfect_play

    game = load("tictactoe")
    lines, losses = losses_to_perfect_play(game, make_player("perfect", game, 0))
    assert lines > 50 and losses == 0
    lines, losses = losses_to_perfect_play(game, make_player("random", game, 0))
    assert losses > 0
    with pytest.raises(ValueError, match="tictactoe"):
        losses_to_perfect_play(load("connect4"), make_player("random", game, 0))


def test_network_players_use_the_cores_a_cgroup_quota_allows(tmp_path, onnx_models):
    import os

    from cartridge.cpus import available_cpus

    cores = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    for text, expected in (
        ("max 100000", cores),
        ("50000 100000", 1),  # half a core still needs one thread
        ("150000 100000", min(cores, 2)),
        ("not a quota", cores),
    ):
        cpu_max.write_text(text)
        assert available_cpus(cpu_max) == expected, text
    assert available_cpus(tmp_path / "missing") == cores
    player = make_player(f"model:{onnx_models['connect4'][0]}", load("connect4"), 10, threads=1)
    assert player.evaluator.session.get_session_options().intra_op_num_threads == 1
