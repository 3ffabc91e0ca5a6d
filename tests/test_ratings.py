"""Bradley-Terry ratings over every stored arena game, anchored at `random` = 0."""

import math

import pytest

from cartridge.arena.ratings import PairResult, fit_ratings


def elo_of(score: float) -> float:
    return 400 * math.log10(score / (1 - score))


def test_one_long_match_gives_the_elo_of_its_score():
    rated = fit_ratings([PairResult("v1", "random", wins=760, draws=0, games=1000)])
    assert rated["random"].elo == 0
    # The prior's one virtual draw moves 1,000 games' score by a hair.
    assert rated["v1"].elo == pytest.approx(elo_of(760.5 / 1001), abs=0.01)
    assert rated["v1"].low < rated["v1"].elo < rated["v1"].high
    assert 40 < rated["v1"].high - rated["v1"].low < 60  # +-1.96 standard errors
    assert rated["v1"].games == 1000


def test_ratings_chain_through_every_match_and_draws_count_half():
    rated = fit_ratings(
        [
            PairResult("v1", "random", wins=7600, draws=0, games=10000),
            PairResult("v2", "v1", wins=5400, draws=2000, games=10000),  # scores 0.64
        ]
    )
    assert rated["v2"].elo - rated["v1"].elo == pytest.approx(elo_of(0.64), abs=3)


def test_a_challenger_that_drew_every_game_rates_as_its_opponent_not_zero():
    """A gate match's Elo alone says 0 for all draws; over every game, the challenger
    sits where the champion it drew sits."""
    rated = fit_ratings(
        [
            PairResult("v1", "random", wins=40, draws=0, games=40),
            PairResult("v2", "v1", wins=0, draws=40, games=40),
        ]
    )
    assert math.isfinite(rated["v1"].elo) and rated["v1"].elo > 300
    assert rated["v2"].elo == pytest.approx(rated["v1"].elo, abs=60)
    assert rated["v2"].elo > 250


def test_bad_results_are_refused():
    with pytest.raises(ValueError, match="cannot play itself"):
        fit_ratings([PairResult("v1", "v1", 1, 0, 2)])
    with pytest.raises(ValueError, match="impossible result"):
        fit_ratings([PairResult("v1", "random", 3, 0, 2)])
    assert fit_ratings([]) == {}


def test_a_round_robin_plays_each_pair_once_and_feeds_the_ratings(embedded_env, tmp_path):
    import mlflow
    import torch

    from cartridge.arena.ratings import play_round_robin, registry_ratings
    from cartridge.games import load
    from cartridge.networks import build_network, export_onnx
    from cartridge.settings import GateSettings
    from cartridge.tracking import ensure_experiment, log_and_register, use_tracking

    client = use_tracking(f"sqlite:///{tmp_path / 'rr.db'}")
    # Artifacts beside the database, not in ./mlruns of whatever directory pytest runs in.
    mlflow.set_experiment(experiment_id=ensure_experiment(client, "tictactoe"))
    game = load("tictactoe")
    for seed in range(3):
        torch.manual_seed(seed)
        path = export_onnx(build_network(game), game, tmp_path / f"m{seed}.onnx")
        with mlflow.start_run():
            log_and_register(client, path, game, {})
    assert play_round_robin(client, "tictactoe", 3, games=2, simulations=4) == 3
    assert play_round_robin(client, "tictactoe", 3, games=2, simulations=4) == 0  # bounded
    tags = client.get_model_version("cartridge-tictactoe", "3").tags
    assert {"round_robin_v1", "round_robin_v2"} <= set(tags)
    wins, draws, games = (int(x) for x in tags["round_robin_v1"].split(","))
    assert games == 2 and wins + draws <= 2
    rated = registry_ratings(client, "tictactoe")
    assert {"v1", "v2", "v3"} <= set(rated) and rated["v3"].games == 4
    with pytest.raises(ValueError, match="at least 2 versions"):
        GateSettings(round_robin_versions=1)
