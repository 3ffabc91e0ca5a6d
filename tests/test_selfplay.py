import json

import numpy as np
import pytest

from cartridge.evaluators import UniformEvaluator
from cartridge.evaluators.onnx_model import OnnxEvaluator
from cartridge.games import load
from cartridge.replay import ShardError, read_shard, write_shard
from cartridge.selfplay import SelfPlayConfig, play_selfplay


def make_shard(name="tictactoe", games=12, sims=32, seed=0, parallel=5, evaluator=None):
    game = load(name)
    config = SelfPlayConfig.for_game(game, games, sims, parallel_games=parallel)
    return play_selfplay(game, evaluator or UniformEvaluator(game), config, seed=seed)


def test_shard_contents_are_consistent():
    shard = make_shard("connect4", games=10)
    meta = shard.metadata
    assert meta.games == 10 and meta.positions == len(shard)
    assert meta.first_player_wins + meta.draws + meta.second_player_wins == 10
    assert shard.planes.dtype == np.uint8 and shard.planes.shape[1:] == (2, 6, 7)
    np.testing.assert_allclose(shard.policy.sum(axis=1), 1.0, rtol=1e-5)
    assert not (shard.policy * ~shard.legal_mask).any()  # no visits to illegal moves
    assert set(np.unique(shard.outcome)) <= {-1.0, 0.0, 1.0}
    # Each game starts from the empty board, so the number of empty boards is the games.
    assert (shard.planes.reshape(len(shard), -1).sum(axis=1) == 0).sum() == 10


def test_outcomes_are_from_the_movers_view():
    # One game a shard; a two-simulation search plays almost at random, so the seeds
    # give both drawn and decided games, and both kinds are checked.
    seen = set()
    for seed in range(40):
        outcome = make_shard("tictactoe", games=1, sims=2, parallel=1, seed=seed).outcome
        if outcome[0] == 0:
            assert not outcome.any()  # a draw is 0 for both sides
            seen.add("draw")
        else:
            # Outcomes alternate sign ply by ply, and the last mover made the final move:
            # it won.
            assert np.all(outcome[1:] == -outcome[:-1])
            assert outcome[-1] == 1.0
            seen.add("decided")
        if seen == {"draw", "decided"}:
            break
    assert seen == {"draw", "decided"}


def test_discounted_targets_shrink_with_the_distance_to_the_end():
    game = load("tictactoe")
    config = SelfPlayConfig.for_game(game, 6, 32, value_discount=0.9, parallel_games=1)
    assert config.search.value_discount == 0.9
    shard = play_selfplay(game, UniformEvaluator(game), config, seed=3)
    # Games are stored one after another; each starts from the empty board.
    starts = np.flatnonzero(shard.planes.reshape(len(shard), -1).sum(axis=1) == 0)
    decisive = 0
    for begin, end in zip(starts, [*starts[1:], len(shard)], strict=True):
        outcome = shard.outcome[begin:end]
        if not outcome.any():
            continue  # a draw is 0 at any distance
        decisive += 1
        plies_left = np.arange(len(outcome), 0, -1)
        np.testing.assert_allclose(np.abs(outcome), 0.9**plies_left, rtol=1e-6)
        assert outcome[-1] == pytest.approx(0.9)  # the winner's last move
        assert np.all(np.sign(outcome[1:]) == -np.sign(outcome[:-1]))
    assert decisive > 0


def test_playout_cap_records_only_full_searches():
    game = load("connect4")
    config = SelfPlayConfig.for_game(
        game, 8, 40, value_discount=0.9, parallel_games=4, full_search_fraction=0.3
    )
    assert config.fast_search_simulations == 10
    calls = []

    class Counting(UniformEvaluator):
        def evaluate(self, planes):
            calls.append(len(planes))
            return super().evaluate(planes)

    shard = play_selfplay(game, Counting(game), config, seed=2)
    capped_leaves, fast_batches = sum(calls), max(calls)
    calls.clear()
    plain_config = SelfPlayConfig.for_game(game, 8, 40, parallel_games=4)
    plain = play_selfplay(game, Counting(game), plain_config, seed=2)
    # Roughly 30% of the moves are recorded; games are not shorter for it.
    assert 0.1 * len(plain) < len(shard) < 0.6 * len(plain)
    assert shard.metadata.positions == len(shard) and shard.metadata.games == 8
    assert shard.metadata.config["full_search_fraction"] == 0.3
    # 0.3 x 40 + 0.7 x 10 = 19 simulations a move on average instead of 40: fewer
    # network evaluations by about half or more (terminal leaves need none).
    assert 0.15 < capped_leaves / sum(calls) < 0.7
    # The value target still discounts by the real distance to the end of the game.
    decisive = shard.outcome[shard.outcome != 0]
    exponents = np.log(np.abs(decisive)) / np.log(0.9)
    np.testing.assert_allclose(exponents, np.round(exponents), atol=1e-4)
    assert (np.round(exponents) >= 1).all()
    assert fast_batches == 4  # the fast searches batch every running game
    again = play_selfplay(game, UniformEvaluator(game), config, seed=2)
    np.testing.assert_array_equal(again.policy, shard.policy)


def test_search_value_weight_mixes_the_root_value_into_the_target():
    game = load("connect4")

    class PieceCount(UniformEvaluator):
        """Uniform priors and a value that depends on the position, so q is not 0."""

        def evaluate(self, planes):
            logits, _ = super().evaluate(planes)
            return logits, np.tanh(planes[:, 0].sum(axis=(1, 2)) - planes[:, 1].sum(axis=(1, 2)))

    def targets(weight):
        config = SelfPlayConfig.for_game(
            game, 6, 24, value_discount=0.9, parallel_games=3, search_value_weight=weight
        )
        return play_selfplay(game, PieceCount(game), config, seed=5)

    result_only, search_only, mixed = targets(0.0), targets(1.0), targets(0.25)
    # The target does not change play: the same seed plays the same games.
    np.testing.assert_array_equal(result_only.planes, search_only.planes)
    np.testing.assert_array_equal(result_only.policy, mixed.policy)
    q = search_only.outcome
    assert np.abs(q).max() <= 1 and len(np.unique(np.round(q, 4))) > 10
    np.testing.assert_allclose(mixed.outcome, 0.75 * result_only.outcome + 0.25 * q, atol=1e-6)
    assert mixed.metadata.config["search_value_weight"] == 0.25
    for weight in (-0.1, 1.5):
        with pytest.raises(ValueError, match="search_value_weight"):
            SelfPlayConfig.for_game(game, 4, 8, search_value_weight=weight)


def test_td_steps_bootstrap_the_value_target_from_the_search_later_in_the_game():
    from cartridge.selfplay.play import _GameRecord, _value_targets

    search_value = [0.1, 0.2, 0.3, 0.4]
    record = _GameRecord(ply=[0, 1, 2, 3])
    record.root_values = {ply: (ply % 2, q) for ply, q in enumerate(search_value)}

    def targets(td_steps, weight=0.0):
        return _value_targets(1.0, record, 4, 0.9, weight, td_steps)

    # Two plies on the same player moves; past the end, the game's result as before.
    np.testing.assert_allclose(targets(2), [0.3 * 0.81, 0.4 * 0.81, 0.9**2, -0.9])
    # One ply on, the other player's value, so its sign flips.
    np.testing.assert_allclose(targets(1), [-0.2 * 0.9, -0.3 * 0.9, -0.4 * 0.9, -0.9])
    np.testing.assert_allclose(targets(0), [0.9**4, -(0.9**3), 0.9**2, -0.9])
    mixed = 0.5 * np.array(targets(2)) + 0.5 * np.array(search_value)
    np.testing.assert_allclose(targets(2, weight=0.5), mixed)

    game = load("connect4")
    config = SelfPlayConfig.for_game(game, 4, 16, value_discount=0.9, parallel_games=2)
    plain = play_selfplay(game, UniformEvaluator(game), config, seed=3)
    bootstrapped = play_selfplay(
        game, UniformEvaluator(game), config.model_copy(update={"td_steps": 4}), seed=3
    )
    np.testing.assert_array_equal(plain.planes, bootstrapped.planes)
    # Uniform values back up to small search values, unlike most game results.
    assert np.abs(bootstrapped.outcome).mean() < np.abs(plain.outcome).mean()
    assert bootstrapped.metadata.config["td_steps"] == 4
    for steps in (-1, 513):
        with pytest.raises(ValueError, match="td_steps"):
            SelfPlayConfig.for_game(game, 4, 8, td_steps=steps)


def test_proven_positions_take_their_exact_value_as_target():
    from cartridge.selfplay.play import _GameRecord, _value_targets

    record = _GameRecord(ply=[0, 1, 2])
    record.root_values = {0: (0, 0.2), 1: (1, -1.0), 2: (0, 0.9)}
    record.proven = {1, 2}
    # Ply 0 mixes result and search; the proven plies are exact, whatever the result.
    np.testing.assert_allclose(
        _value_targets(-1.0, record, 3, 0.9, 0.5, 0), [0.5 * -(0.9**3) + 0.5 * 0.2, -1.0, 0.9]
    )


def _tictactoe_state(planes):
    """The TicTacToe position of a recorded plane pair (side to move first)."""
    mine, theirs = planes[0].reshape(-1), planes[1].reshape(-1)
    x_to_move = mine.sum() == theirs.sum()
    x, o = (mine, theirs) if x_to_move else (theirs, mine)
    cells = ["X" if x[k] else "O" if o[k] else "." for k in range(9)]
    rows = "\n".join(" ".join(cells[r * 3 : r * 3 + 3]) for r in range(3))
    return load("tictactoe").parse_board(rows + ("\nX to move" if x_to_move else "\nO to move"))


@pytest.mark.parametrize("solver", [True, False])
def test_solver_makes_late_value_targets_exact(solver):
    from test_mcts import negamax

    game = load("tictactoe")
    config = SelfPlayConfig.for_game(game, 16, 300, solver=solver, search_value_weight=1.0)
    shard = play_selfplay(game, UniformEvaluator(game), config, seed=5)
    assert shard.metadata.config["search"]["solver"] is solver
    late = [
        (target, negamax(_tictactoe_state(planes), 1.0))
        for planes, target in zip(shard.planes, shard.outcome, strict=True)
        if planes.sum() >= 5  # four empty cells or fewer: 300 simulations settle them
    ]
    assert len(late) > 20
    exact = sum(target == truth for target, truth in late)
    if solver:
        assert exact == len(late)
    else:  # sample means of uniform leaves: only finished-game lines come out exact
        assert exact < len(late) / 2


def test_random_openings_start_games_a_few_moves_deep():
    from cartridge.selfplay.play import _random_opening

    game = load("connect4")
    rng = np.random.default_rng(0)
    starts = [_random_opening(game, 6, rng) for _ in range(300)]
    assert {s.ply for s in starts} == set(range(7))
    assert not any(s.is_terminal() for s in starts)
    assert _random_opening(game, 0, rng).ply == 0
    config = SelfPlayConfig.for_game(game, 24, 16, parallel_games=8, random_opening_plies=6)
    shard = play_selfplay(game, UniformEvaluator(game), config, seed=4)
    # Only games with no random move start on the empty board (1 in 7 on average).
    empty_boards = (shard.planes.reshape(len(shard), -1).sum(axis=1) == 0).sum()
    assert 0 < empty_boards < 12
    again = play_selfplay(game, UniformEvaluator(game), config, seed=4)
    np.testing.assert_array_equal(again.planes, shard.planes)
    for plies in (-1, 65):
        with pytest.raises(ValueError, match="random_opening_plies"):
            SelfPlayConfig.for_game(game, 4, 8, random_opening_plies=plies)


def test_playout_cap_validation():
    game = load("tictactoe")
    with pytest.raises(ValueError, match="fast_simulations"):
        SelfPlayConfig.for_game(game, 4, 8, full_search_fraction=0.5, fast_simulations=8)
    with pytest.raises(ValueError, match="fast_simulations"):
        SelfPlayConfig.for_game(game, 4, 1, full_search_fraction=0.5)
    for fraction in (0, 1.5):
        with pytest.raises(ValueError, match="full_search_fraction"):
            SelfPlayConfig.for_game(game, 4, 8, full_search_fraction=fraction)
    tiny = SelfPlayConfig.for_game(game, 1, 8, full_search_fraction=0.01, parallel_games=1)
    shard = play_selfplay(game, UniformEvaluator(game), tiny, seed=0)
    assert shard.planes.shape[1:] == (2, 3, 3) and len(shard) == shard.metadata.positions


def test_same_seed_same_shard(tmp_path):
    first = write_shard(tmp_path / "a", make_shard(seed=4))
    second = write_shard(tmp_path / "b", make_shard(seed=4))
    third = write_shard(tmp_path / "c", make_shard(seed=5))
    for name in ("planes.npy", "policy.npy", "outcome.npy", "legal_mask.npy", "metadata.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (first / "policy.npy").read_bytes() != (third / "policy.npy").read_bytes()


def test_shard_round_trip(tmp_path):
    shard = make_shard()
    write_shard(tmp_path / "s", shard)
    loaded = read_shard(tmp_path / "s")
    for name in ("planes", "policy", "outcome", "legal_mask"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(shard, name))
    meta = json.loads((tmp_path / "s" / "metadata.json").read_text())
    assert meta["game"] == "tictactoe" and meta["simulations"] == 32 and meta["seed"] == 0
    assert meta["model"] == "uniform" and meta["package_version"]
    assert len(meta["arrays"]["planes"]["sha256"]) == 64


def test_shards_are_immutable(tmp_path):
    write_shard(tmp_path / "s", make_shard())
    with pytest.raises(FileExistsError, match="immutable"):
        write_shard(tmp_path / "s", make_shard(seed=1))


@pytest.fixture
def shard_dir(tmp_path):
    return write_shard(tmp_path / "shard", make_shard())


def test_truncated_array_is_refused(shard_dir):
    path = shard_dir / "policy.npy"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ShardError, match="policy.npy fails its sha256 check"):
        read_shard(shard_dir)


def test_modified_array_is_refused(shard_dir):
    path = shard_dir / "outcome.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="outcome.npy fails its sha256 check"):
        read_shard(shard_dir)


def test_missing_pieces_are_refused(shard_dir, tmp_path):
    (shard_dir / "legal_mask.npy").unlink()
    with pytest.raises(ShardError, match="missing legal_mask.npy"):
        read_shard(shard_dir)
    with pytest.raises(ShardError, match="metadata.json is missing"):
        read_shard(tmp_path / "nowhere")


def test_bad_metadata_is_refused(shard_dir):
    meta_path = shard_dir / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(meta_path.read_text()[:40])
    with pytest.raises(ShardError, match="not valid shard metadata"):
        read_shard(shard_dir)
    meta_path.write_text(json.dumps({**meta, "game": "chess"}))
    with pytest.raises(ShardError, match="unknown game 'chess'"):
        read_shard(shard_dir)
    meta_path.write_text(json.dumps({**meta, "positions": meta["positions"] + 1}))
    with pytest.raises(ShardError, match="metadata says"):
        read_shard(shard_dir)


def test_selfplay_with_an_onnx_model(onnx_models):
    game = load("connect4")
    evaluator = OnnxEvaluator(game, onnx_models["connect4"][0])
    shard = make_shard("connect4", games=4, sims=16, parallel=4, evaluator=evaluator)
    assert shard.metadata.games == 4 and len(shard) >= 4 * 7


def test_selfplay_config_validation():
    game = load("othello")
    with pytest.raises(ValueError):
        SelfPlayConfig.for_game(game, 0, 10)
    with pytest.raises(ValueError):
        SelfPlayConfig.for_game(game, 10, 10, parallel_games=0)
    assert SelfPlayConfig.for_game(game, 1, 1).search.dirichlet_epsilon == 0.25


def test_an_interrupted_shard_is_skipped_reported_and_rewritten(stack_env, tmp_path, caplog):
    """A shard is whole only once its metadata, written last, is there: what a killed
    step or a vanished store leaves is never read as a shard, the replay window says
    it skipped it, and the step's retry replaces it with a whole one."""
    import uuid

    from cartridge import storage
    from cartridge.settings import SelfPlaySettings
    from cartridge.shard_writer import holds_shard, write_selfplay_shard
    from cartridge.training.data import resolve_window

    root = f"s3://{stack_env.bucket}/interrupted-{uuid.uuid4().hex[:8]}"
    whole, broken = f"{root}/iter-000001/shard-000", f"{root}/iter-000001/shard-001"
    settings = SelfPlaySettings(games=2, simulations=8)
    write_selfplay_shard("tictactoe", whole, settings, seed=1)
    # What an upload cut off before its metadata leaves: arrays and no metadata.json.
    local = tmp_path / "partial"
    write_shard(local, make_shard(games=2, sims=8, seed=2))
    for name in ("planes.npy", "policy.npy"):
        storage.upload_file(local / name, f"{broken}/{name}")
    assert not holds_shard(broken)
    with caplog.at_level("WARNING"):
        assert resolve_window(root, 1) == [whole]
    assert "skipping 1 uncommitted shard" in caplog.text and broken in caplog.text
    # The retry (keep_existing, as a retried pipeline step) writes a whole shard there.
    played = write_selfplay_shard("tictactoe", broken, settings, seed=2, keep_existing=True)
    assert played is not None and holds_shard(broken)
    assert resolve_window(root, 1) == [whole, broken]
    # A whole shard is kept on a retry, and refused otherwise.
    assert write_selfplay_shard("tictactoe", broken, settings, keep_existing=True) is None
    with pytest.raises(FileExistsError, match="immutable"):
        write_selfplay_shard("tictactoe", broken, settings)


def test_a_corrupt_shard_in_the_store_is_named_by_its_uri(stack_env, tmp_path):
    import uuid

    from typer.testing import CliRunner

    from cartridge import storage
    from cartridge.cli import app

    uri = f"s3://{stack_env.bucket}/corrupt-{uuid.uuid4().hex[:8]}/shard-000"
    local = tmp_path / "shard"
    write_shard(local, make_shard(games=2, sims=8))
    data = bytearray((local / "outcome.npy").read_bytes())
    data[-1] ^= 0xFF
    (local / "outcome.npy").write_bytes(bytes(data))
    storage.upload_dir(local, uri)
    result = CliRunner().invoke(app, ["shard", "inspect", uri])
    assert result.exit_code == 2
    assert f"{uri}/outcome.npy fails its sha256 check" in " ".join(result.output.split())
    assert "cartridge-inspect-" not in result.output


@pytest.mark.timeout(300)
def test_a_store_killed_mid_upload_delays_the_shard_but_it_lands_whole(
    stack_env, tmp_path, monkeypatch
):
    """The object store SIGKILLed after a shard's first file went up, and started again
    5 s later: the remaining uploads wait for it and the shard lands whole."""
    import os
    import signal
    import threading
    import time
    import uuid

    import psutil

    from cartridge import storage
    from cartridge.settings import SelfPlaySettings
    from cartridge.shard_writer import holds_shard, write_selfplay_shard
    from cartridge.stack import up
    from cartridge.stack.manager import _load_state

    destination = f"s3://{stack_env.bucket}/store-killed-{uuid.uuid4().hex[:8]}/shard-000"
    record = _load_state(stack_env)["s3"]
    real_upload, uploaded, restarted = storage.upload_file, [], threading.Event()

    def restart_later():
        time.sleep(5)
        up(stack_env)
        restarted.set()

    def upload_then_kill(local, uri):
        real_upload(local, uri)
        uploaded.append(uri)
        if len(uploaded) == 1:
            members = [psutil.Process(record.pid), *psutil.Process(record.pid).children(True)]
            os.killpg(record.pid, signal.SIGKILL)
            psutil.wait_procs(members, timeout=10)
            threading.Thread(target=restart_later, daemon=True).start()

    monkeypatch.setattr(storage, "upload_file", upload_then_kill)
    played = write_selfplay_shard(
        "tictactoe", destination, SelfPlaySettings(games=2, simulations=8), seed=3
    )
    assert restarted.wait(60) and len(uploaded) == 5  # four arrays, then the metadata
    assert uploaded[-1].endswith("metadata.json") and holds_shard(destination)
    local = storage.download_dir(destination, tmp_path / "copy")
    assert read_shard(local).metadata == played
