import math

import pytest
import torch
from conftest import fresh_registered_model, fresh_served_model

from cartridge import storage
from cartridge.arena.gate import GateDecision, SolverComparison, decide, sprt_llr
from cartridge.arena.stats import summarize
from cartridge.games import load
from cartridge.networks import build_network, export_onnx
from cartridge.promotion import ChampionMoved, promote, record_arena, rollback
from cartridge.serving.triton import TritonControl
from cartridge.settings import GateSettings
from cartridge.tracking import log_and_register, use_tracking


def test_lcb_gate():
    gate = GateSettings(threshold=0.55)
    assert decide(summarize("c", "k", "tictactoe", 80, 10, 10), gate).promote
    assert not decide(summarize("c", "k", "tictactoe", 12, 8, 0), gate).promote  # 0.6, wide CI
    assert "lower bound" in decide(summarize("c", "k", "tictactoe", 5, 5, 0), gate).reason


def test_sprt_gate():
    gate = GateSettings(method="sprt", elo0=0, elo1=35)
    strong = decide(summarize("c", "k", "connect4", 70, 30, 0), gate)
    assert strong.promote and strong.llr > math.log(19)
    weak = decide(summarize("c", "k", "connect4", 30, 70, 0), gate)
    assert not weak.promote and "rejects" in weak.reason
    unclear = decide(summarize("c", "k", "connect4", 11, 10, 0), gate)
    assert not unclear.promote and "inconclusive" in unclear.reason
    assert sprt_llr(summarize("c", "k", "connect4", 10, 0, 0), 0, 35) == math.inf
    with pytest.raises(ValueError):
        GateSettings(threshold=1.5)


def test_solver_z_gate():
    gate = GateSettings(threshold=0.55, solver_z=1.96)
    won = summarize("c", "k", "connect4", 80, 10, 10)  # passes the match gate
    close = summarize("c", "k", "connect4", 30, 24, 6)  # 0.55, lower bound below 0.55
    lost = summarize("c", "k", "connect4", 24, 30, 6)

    def solver(only_challenger, only_champion):
        champion = 0.80
        gain = (only_challenger - only_champion) / 400
        return SolverComparison(
            challenger=champion + gain,
            champion=champion,
            positions=400,
            only_challenger=only_challenger,
            only_champion=only_champion,
        )

    assert solver(30, 10).z == pytest.approx(20 / 40**0.5)
    worse = decide(won, gate, solver(5, 25))  # z -3.65
    assert not worse.promote and "fewer optimal moves" in worse.reason
    better = decide(close, gate, solver(25, 5))
    assert better.promote and "more optimal moves" in better.reason and "z +3.65" in better.reason
    assert not decide(lost, gate, solver(25, 5)).promote  # better moves, but lost the match
    # 8 more optimal moves among 400 can be the positions' luck: the match decides.
    assert decide(won, gate, solver(10, 18)).promote
    assert not decide(close, gate, solver(18, 10)).promote
    assert solver(0, 0).z == 0.0
    # Without a threshold (0, the default) the solver has no say.
    assert decide(won, GateSettings(), solver(0, 40)).promote
    assert not decide(close, gate).promote and decide(close, gate).solver is None
    for z in (-1, 11):
        with pytest.raises(ValueError, match="solver_z"):
            GateSettings(solver_z=z)


def _register(client, game, seed, value_discount=1.0):
    torch.manual_seed(seed)
    path = export_onnx(
        build_network(game), game, f"/tmp/promo-{seed}-{id(client)}.onnx", value_discount
    )
    import mlflow

    mlflow.set_experiment("promotion-test")
    with mlflow.start_run():
        return log_and_register(client, path, game, {"seed": str(seed)})[1]


def test_promotion_and_rollback_on_the_stack(stack_env):
    game = load("othello")
    client = use_tracking(stack_env.mlflow_url)
    fresh_served_model(client, stack_env, "othello")
    repository = f"s3://{stack_env.bucket}/triton"
    folder = f"{repository}/cartridge_othello"
    first = _register(client, game, 1, value_discount=0.95)
    match = summarize("challenger", "random", "othello", 9, 1, 0)
    result = promote(
        client,
        "othello",
        match=match,
        decision=decide(match, GateSettings()),
        repository=repository,
    )
    assert result.champion == first and result.previous is None and result.changed
    keys = storage.list_keys(folder)
    assert f"{folder}/{first}/model.onnx" in keys and f"{folder}/config.pbtxt" in keys
    assert f"{folder}/{first}/model.py" in keys  # the local Triton's python backend
    triton = TritonControl(stack_env.triton_url)
    assert result.triton_error is None
    assert triton.model_state("othello").version == first
    assert triton.model_state("othello").state == "READY"
    # The served config tells searching clients how the served values were trained.
    assert triton.value_discount("othello") == 0.95
    tags = client.get_model_version("cartridge-othello", first).tags
    assert tags["arena_wins"] == "9" and tags["arena_opponent"] == "random" and "gate" in tags
    # What the MLflow UI shows: a description of the model, one line per judged version,
    # and the arena's result as metrics of the training run (chartable, not only text).
    described = client.get_registered_model("cartridge-othello").description
    assert "Othello" in described and "`planes` float32 [batch, 2, 8, 8]" in described
    version = client.get_model_version("cartridge-othello", first)
    assert version.description.startswith("passed the gate against random: 9W 0D 1L")
    metrics = client.get_run(version.run_id).data.metrics
    assert metrics["arena_wins"] == 9 and metrics["arena_score"] == pytest.approx(0.9)

    second = _register(client, game, 2)
    result = promote(client, "othello", repository=repository)  # the challenger by default
    assert (result.champion, result.previous) == (second, first)
    assert triton.model_state("othello").version == second
    assert triton.value_discount("othello") == 1.0
    again = promote(client, "othello", version=second, repository=repository)
    assert not again.changed and (again.champion, again.previous) == (second, first)
    assert f"{folder}/{second}/model.onnx" in storage.list_keys(folder)

    restored = rollback(client, "othello", repository=repository)
    assert restored.champion == first and restored.triton_error is None
    assert triton.model_state("othello").version == first
    assert triton.value_discount("othello") == 0.95
    assert client.get_model_version_by_alias("cartridge-othello", "champion").version == first
    keys = storage.list_keys(folder)
    assert f"{folder}/{first}/model.onnx" in keys
    assert not any(k.startswith(f"{folder}/{second}/") for k in keys)
    with pytest.raises(ValueError, match="no 'previous' version"):
        rollback(client, "othello", repository=repository)


def test_promoting_nothing_is_refused(stack_env):
    client = use_tracking(stack_env.mlflow_url)
    with pytest.raises(ValueError, match="no version with alias 'challenger'"):
        promote(client, "connect4-unregistered-never", repository="s3://cartridge/triton")


def test_gate_command_promotes_the_first_challenger_that_beats_random(stack_env):
    import json

    from typer.testing import CliRunner

    from cartridge.cli import app

    client = use_tracking(stack_env.mlflow_url)
    fresh_registered_model(client, "tictactoe")
    version = _register(client, load("tictactoe"), 7)
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["gate", "--game", "tictactoe", "--games", "20", "--sims", "200", "--promote", "--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["challenger"] == version and report["match"]["player2"] == "random"
    assert report["decision"]["promote"] and report["promotion"]["champion"] == version
    retry = runner.invoke(app, ["gate", "--game", "tictactoe", "--json"])
    assert json.loads(retry.stdout)["decision"]["reason"] == "the challenger is already champion"
    no_previous = runner.invoke(app, ["promote", "--game", "tictactoe", "--rollback"])
    assert no_previous.exit_code == 2 and "no 'previous' version" in no_previous.output

    # With a solver check both networks are measured on the gate's own positions.
    from cartridge.arena import make_player
    from cartridge.arena.accuracy import GATE_POSITIONS_SEED, optimal_moves, solver_positions

    second = _register(client, load("tictactoe"), 8)
    weighed = runner.invoke(
        app,
        ["gate", "--game", "tictactoe", "--games", "4", "--sims", "16"]
        + ["--solver-z", "1.96", "--json"],
    )
    assert weighed.exit_code == 0, weighed.output
    decision = json.loads(weighed.stdout)["decision"]
    positions = solver_positions(load("tictactoe"), 400, GATE_POSITIONS_SEED)
    new, old = (
        optimal_moves(
            make_player(f"models:/cartridge-tictactoe/{n}", load("tictactoe"), 16), positions
        )
        for n in (second, version)
    )
    solver = decision["solver"]
    assert (solver["challenger"], solver["champion"]) == (
        pytest.approx(new.mean()),
        pytest.approx(old.mean()),
    )
    assert (solver["only_challenger"], solver["only_champion"]) == (
        (new & ~old).sum(),
        (old & ~new).sum(),
    )
    assert solver["positions"] == 400 and "gate positions, z " in decision["reason"]
    # Promoted or not, the arena record carries both shares and the z score.
    record_arena(client, "tictactoe", second, None, GateDecision.model_validate(decision))
    tags = client.get_model_version("cartridge-tictactoe", second).tags
    assert float(tags["gate_solver_optimal_fraction"]) == pytest.approx(new.mean(), abs=1e-4)
    assert float(tags["gate_champion_solver_optimal_fraction"]) == pytest.approx(
        old.mean(), abs=1e-4
    )
    assert float(tags["gate_solver_z"]) == pytest.approx(
        GateDecision.model_validate(decision).solver.z, abs=0.01
    )
    othello = runner.invoke(app, ["gate", "--game", "othello", "--solver-z", "2"])
    assert othello.exit_code == 2 and "which othello does not have" in othello.output


def test_two_runs_racing_to_promote_one_is_refused(stack_env):
    """Two runs' gates both played v1; the first promotes its challenger, so the second
    verdict no longer holds and the second promotion changes nothing."""
    from cartridge.arena.gate import GateDecision
    from cartridge.loop import promote_step
    from cartridge.settings import Endpoints

    game = load("othello")
    client = use_tracking(stack_env.mlflow_url)
    fresh_served_model(client, stack_env, "othello")
    first = _register(client, game, 1)
    promote(client, "othello", first)
    second, third = _register(client, game, 2), _register(client, game, 3)
    played_first = GateDecision(promote=True, reason="won", champion=first)
    for challenger in (second, third):
        record_arena(client, "othello", challenger, None, played_first)
    endpoints = Endpoints(
        mlflow_tracking_uri=stack_env.mlflow_url,
        s3_endpoint=stack_env.s3_url,
        triton_url=stack_env.triton_url,
    )
    uri = "models:/cartridge-othello/{}".format
    assert promote_step("othello", uri(second), endpoints=endpoints) == uri(second)
    assert promote_step("othello", uri(third), endpoints=endpoints) == uri(second)  # refused
    champion = client.get_model_version_by_alias("cartridge-othello", "champion")
    assert champion.version == second
    assert client.get_model_version_by_alias("cartridge-othello", "previous").version == first
    with pytest.raises(ChampionMoved, match=f"against v{first}, but the champion is now"):
        promote(client, "othello", third, gated=True)
    # A version the gate never judged is not promoted on a gate's say either.
    fourth = _register(client, game, 4)
    with pytest.raises(ValueError, match="no gate verdict"):
        promote(client, "othello", fourth, gated=True)


class _Killed(BaseException):
    """The promoting process dying at that point: nothing after it runs."""


def _raise_killed(*args, **kwargs):
    raise _Killed()


def _kill_at(monkeypatch, where: str, client):
    """Make the promotion die at `where`, one of its steps."""
    from cartridge.serving import triton

    if where == "between the two aliases":
        real = client.set_registered_model_alias

        def set_alias(name, alias, version):
            if alias == "champion":
                raise _Killed(where)
            return real(name, alias, version)

        monkeypatch.setattr(client, "set_registered_model_alias", set_alias)
    elif where == "after the alias moved":
        monkeypatch.setattr(triton, "publish", _raise_killed)
    elif where == "with the model file written, not its config":
        real_put = triton._put

        def put(local, destination):
            if destination.endswith("config.pbtxt"):
                raise _Killed(where)
            return real_put(local, destination)

        monkeypatch.setattr(triton, "_put", put)
    elif where == "before Triton's load":
        monkeypatch.setattr(triton.TritonControl, "load", _raise_killed)
    else:
        raise AssertionError(where)


KILL_POINTS = [
    "between the two aliases",
    "after the alias moved",
    "with the model file written, not its config",
    "before Triton's load",
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("where", KILL_POINTS)
def test_a_promotion_killed_at_any_step_is_finished_by_the_next_pass_or_a_rerun(
    where, stack_env, monkeypatch
):
    """Afterwards the registry's champion, the Triton repository's newest version and
    what Triton serves (with the config written for it) agree: on the new champion
    once a reconcile pass has run or the promotion is rerun, and never on a mix. (The
    web app's own reconciler, woken by MLflow's webhook, may finish it first.)"""
    from cartridge.serving.reconcile import reconcile_game

    game = load("othello")
    client = use_tracking(stack_env.mlflow_url)
    fresh_served_model(client, stack_env, "othello")
    repository = f"s3://{stack_env.bucket}/triton"
    old = _register(client, game, 11, value_discount=0.9)
    promote(client, "othello", old, repository=repository)
    new = _register(client, game, 12)  # value discount 1.0
    with monkeypatch.context() as patch:
        _kill_at(patch, where, client)
        with pytest.raises(_Killed):
            promote(client, "othello", new, repository=repository)

    def agreement():
        champion = client.get_model_version_by_alias("cartridge-othello", "champion").version
        folders = storage.list_children(f"{repository}/cartridge_othello")
        newest = max((int(f.rsplit("/", 1)[-1]) for f in folders), default=None)
        control = TritonControl(stack_env.triton_url)
        try:
            state = control.model_state("othello")
            served = state.version if state.state == "READY" else None
            discount = control.value_discount("othello")
        finally:
            control.close()
        assert discount == {old: 0.9, new: 1.0}.get(served), (served, discount)
        return champion, str(newest), served

    control = TritonControl(stack_env.triton_url)
    outcome = reconcile_game(client, control, "othello", repository)
    control.close()
    assert outcome.error is None and outcome.in_sync, outcome
    if where == "between the two aliases":  # the champion never moved; a rerun moves it
        assert agreement() == (old, old, old)
        result = promote(client, "othello", new, repository=repository)
        assert (result.champion, result.previous, result.triton_error) == (new, old, None)
    assert agreement() == (new, new, new)
    again = promote(client, "othello", new, repository=repository)  # a rerun is a no-op
    assert not again.changed and again.triton_error is None
    assert agreement() == (new, new, new)


def test_a_publication_cut_short_is_published_again(stack_env, tmp_path, monkeypatch):
    """Deterministic, on a repository no reconciler watches: the version folder written
    but not the config naming it is not taken for published."""
    from cartridge.serving import triton
    from cartridge.serving.reconcile import reconcile_game

    game = load("othello")
    client = use_tracking(stack_env.mlflow_url)
    fresh_served_model(client, stack_env, "othello")
    repository = str(tmp_path / "repository")
    old = _register(client, game, 21, value_discount=0.9)
    new = _register(client, game, 22)
    triton.publish("othello", old, repository)
    client.set_registered_model_alias("cartridge-othello", "champion", new)
    with monkeypatch.context() as patch:
        _kill_at(patch, "with the model file written, not its config", client)
        with pytest.raises(_Killed):
            reconcile_game(client, None, "othello", repository)
    folder = tmp_path / "repository" / "cartridge_othello"
    assert (folder / new / "model.onnx").is_file()
    assert triton.published_version("othello", repository) == old
    outcome = reconcile_game(client, None, "othello", repository)
    assert f"published v{new}" in outcome.actions, outcome
    assert triton.published_version("othello", repository) == new
    assert 'string_value: "1.0"' in (folder / "config.pbtxt").read_text()
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [new]
