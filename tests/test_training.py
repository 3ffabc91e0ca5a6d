import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import onnxruntime as ort
import pytest
import torch

from cartridge import storage
from cartridge.evaluators import UniformEvaluator
from cartridge.evaluators.torch_model import TorchEvaluator
from cartridge.games import load
from cartridge.networks import build_network, default_network_config
from cartridge.replay import read_shard, write_shard
from cartridge.selfplay import SelfPlayConfig, play_selfplay
from cartridge.tracking import ensure_experiment, use_tracking
from cartridge.training import DataError, TrainConfig, TrainingError, resolve_window, train
from cartridge.training import checkpoint as checkpoints

CLI = str(Path(sys.executable).with_name("cartridge"))


@pytest.fixture(scope="module")
def shard_dirs(tmp_path_factory):
    """Real self-play shards: two TicTacToe, one Connect 4."""
    root = tmp_path_factory.mktemp("replay")
    dirs = {}
    for name, game_name, seed in (
        ("ttt-a", "tictactoe", 1),
        ("ttt-b", "tictactoe", 2),
        ("c4", "connect4", 3),
    ):
        game = load(game_name)
        config = SelfPlayConfig.for_game(game, 24, 24, parallel_games=24)
        dirs[name] = write_shard(
            root / name, play_selfplay(game, UniformEvaluator(game), config, seed=seed)
        )
    return dirs


def run_training(home, shards, tracking_uri, steps=30, init_checkpoint=None, **options):
    config = TrainConfig(
        game="tictactoe", steps=steps, batch_size=32, checkpoint_every=10, log_every=5, **options
    )
    return train(
        config,
        [str(s) for s in shards],
        checkpoint_dir=str(home / "ckpt"),
        tracking_uri=tracking_uri,
        iteration=3,
        pipeline_run_id="kfp-123",
        init_checkpoint=init_checkpoint,
    )


def test_train_on_the_stack_registers_a_challenger_in_s3(stack_env, shard_dirs, tmp_path):
    # Shards and checkpoints on S3 too, as in the cluster.
    shard_uris = []
    for name in ("ttt-a", "ttt-b"):
        uri = f"s3://{stack_env.bucket}/replay/tictactoe/iter-000001/{name}"
        storage.upload_dir(shard_dirs[name], uri)
        shard_uris.append(uri)
    config = TrainConfig(
        game="tictactoe", steps=25, batch_size=32, checkpoint_every=10, log_every=5
    )
    checkpoint_dir = f"s3://{stack_env.bucket}/checkpoints/test-{time.time_ns()}"
    result = train(
        config,
        shard_uris,
        checkpoint_dir=checkpoint_dir,
        tracking_uri=stack_env.mlflow_url,
        iteration=1,
    )
    assert result.steps == 25 and result.model_version is not None
    assert checkpoints.exists(checkpoint_dir)

    client = use_tracking(stack_env.mlflow_url)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["game"] == "tictactoe" and run.data.tags["iteration"] == "1"
    assert shard_uris[0] in run.data.tags["shards"]
    assert run.data.params["batch_size"] == "32"
    history = client.get_metric_history(result.run_id, "loss")
    assert [m.step for m in history] == list(range(1, 26))

    version = client.get_model_version_by_alias("cartridge-tictactoe", "challenger")
    assert version.version == str(result.model_version)
    assert version.tags["run_id"] == result.run_id and version.tags["game"] == "tictactoe"

    # MLflow's own loader, through the alias, gives a model onnxruntime runs.
    mlflow.set_tracking_uri(stack_env.mlflow_url)
    model = mlflow.onnx.load_model("models:/cartridge-tictactoe@challenger")
    session = ort.InferenceSession(model.SerializeToString())
    logits, values = session.run(None, {"planes": np.zeros((3, 2, 3, 3), np.float32)})
    assert logits.shape == (3, 9) and values.shape == (3,)

    # The artifacts really live in the bucket, under the server's artifact root.
    keys = storage.list_keys(f"s3://{stack_env.bucket}/mlflow")
    assert any(k.endswith("model.onnx") for k in keys)
    assert any(k.endswith("checkpoint/checkpoint.pt") for k in keys)


def _played(root, *names):
    """Shard directories written in the order given (one file each, a second apart)."""
    for age, name in enumerate(reversed(names)):
        path = Path(root, name, "shard-000", "metadata.json")
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (time.time() - 10 * age, time.time() - 10 * age))


def test_replay_window_spans_pipeline_runs_in_play_order(tmp_path):
    # Run "b" started after run "a" had played two iterations: the window follows play
    # order, not names, and reaches back into the earlier run.
    _played(tmp_path, "a/iter-000001", "a/iter-000002", "b/iter-000001", "b/iter-000002")
    (tmp_path / "a" / "notes.txt").write_text("not an iteration")
    (tmp_path / "a" / "iter-000003" / "partial").mkdir(parents=True)  # no metadata.json
    (tmp_path / "a" / "iter-000003" / "partial" / "policy.npy").write_bytes(b"x")
    window = resolve_window(str(tmp_path), 3)
    assert [Path(s).relative_to(tmp_path).parts[:2] for s in window] == [
        ("a", "iter-000002"),
        ("b", "iter-000001"),
        ("b", "iter-000002"),
    ]
    assert len(resolve_window(str(tmp_path), 99)) == 4
    # One run's own folder works the same way: its iterations are one level down.
    assert len(resolve_window(str(tmp_path / "a"), 1)) == 1
    with pytest.raises(DataError, match="at least 1"):
        resolve_window(str(tmp_path), 0)
    with pytest.raises(DataError, match="holds no iterations"):
        resolve_window(str(tmp_path / "a" / "iter-000003"), 1)
    with pytest.raises(DataError, match="cannot list"):
        resolve_window(str(tmp_path / "missing"), 1)


def test_replay_window_on_s3_orders_by_last_modified(stack_env, tmp_path):
    root = f"s3://{stack_env.bucket}/replay-window-{time.time_ns()}"
    (tmp_path / "metadata.json").write_bytes(b"{}")
    for name in ("z-first/iter-000009", "a-second/iter-000001"):
        storage.upload_dir(tmp_path, storage.join(root, name, "shard-000"))
        time.sleep(1.1)  # LastModified has one-second resolution
    window = resolve_window(root, 1)
    assert window == [storage.join(root, "a-second/iter-000001/shard-000")]


def test_embedded_mode_uses_the_same_code(embedded_env, shard_dirs):
    home = embedded_env
    tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    home.mkdir(parents=True, exist_ok=True)
    result = run_training(home, [shard_dirs["ttt-a"]], tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.onnx.load_model("models:/cartridge-tictactoe@challenger")
    assert [o.name for o in model.graph.output] == ["policy_logits", "value"]
    assert result.model_version == "1"  # this test's own registry: the first version
    assert (home / "mlartifacts").is_dir()


def test_the_model_records_the_value_discount_of_most_of_its_data(
    embedded_env, shard_dirs, tmp_path
):
    """A window may straddle a change of --value-discount; the model is tagged with (and
    its ONNX file carries) the discount of most positions, which its players then use."""
    from cartridge.arena import make_player

    game = load("tictactoe")
    config = SelfPlayConfig.for_game(game, 48, 24, value_discount=0.9, parallel_games=24)
    discounted = write_shard(
        tmp_path / "discounted", play_selfplay(game, UniformEvaluator(game), config, seed=4)
    )
    home = embedded_env
    home.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    run_training(home, [shard_dirs["ttt-a"], discounted], tracking_uri, steps=5)
    version = use_tracking(tracking_uri).get_model_version_by_alias(
        "cartridge-tictactoe", "challenger"
    )
    assert version.tags["value_discount"] == "0.9"
    mlflow.set_tracking_uri(tracking_uri)
    player = make_player("models:/cartridge-tictactoe@challenger", game, 10)
    assert player.config.value_discount == 0.9


def _runs(tracking_uri):
    client = use_tracking(tracking_uri)
    experiment = client.get_experiment_by_name("cartridge-tictactoe")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def _versions(tracking_uri):
    return use_tracking(tracking_uri).search_model_versions("name='cartridge-tictactoe'")


def test_nan_loss_fails_the_run_and_registers_nothing(embedded_env, shard_dirs, tmp_path):
    shard = read_shard(shard_dirs["ttt-a"])
    shard.policy[:] = np.nan  # well-formed files, poisoned numbers
    poisoned = write_shard(tmp_path / "poisoned", shard)
    tracking_uri = f"sqlite:///{tmp_path / 'nan.db'}"
    with pytest.raises(TrainingError, match="diverged at step 1: loss nan"):
        run_training(tmp_path, [poisoned], tracking_uri)
    (run,) = _runs(tracking_uri)
    assert run.info.status == "FAILED" and "diverged at step 1" in run.data.tags["failure"]
    assert _versions(tracking_uri) == []


def test_corrupt_shard_fails_the_run_and_registers_nothing(embedded_env, shard_dirs, tmp_path):
    broken = tmp_path / "broken"
    write_shard(broken, read_shard(shard_dirs["ttt-a"]))
    policy = broken / "policy.npy"
    policy.write_bytes(policy.read_bytes()[:100])
    tracking_uri = f"sqlite:///{tmp_path / 'corrupt.db'}"
    with pytest.raises(DataError, match="corrupt shard .*sha256"):
        run_training(tmp_path, [broken], tracking_uri)
    (run,) = _runs(tracking_uri)
    assert run.info.status == "FAILED"
    assert _versions(tracking_uri) == []


def test_other_games_data_and_empty_inputs_are_refused(embedded_env, shard_dirs, tmp_path):
    tracking_uri = f"sqlite:///{tmp_path / 'mismatch.db'}"
    with pytest.raises(DataError, match="holds connect4 positions; this run trains tictactoe"):
        run_training(tmp_path, [shard_dirs["c4"]], tracking_uri)
    with pytest.raises(DataError, match="no replay shards"):
        run_training(tmp_path / "empty", [], tracking_uri)
    assert {r.info.status for r in _runs(tracking_uri)} == {"FAILED"}


def test_existing_checkpoint_needs_resume(embedded_env, shard_dirs, tmp_path):
    tracking_uri = f"sqlite:///{tmp_path / 'twice.db'}"
    run_training(tmp_path, [shard_dirs["ttt-a"]], tracking_uri, steps=10)
    with pytest.raises(FileExistsError, match="pass --resume"):
        run_training(tmp_path, [shard_dirs["ttt-a"]], tracking_uri, steps=10)


def test_initial_weights_must_fit(embedded_env, shard_dirs, tmp_path):
    tracking_uri = f"sqlite:///{tmp_path / 'init.db'}"
    first = run_training(tmp_path / "a", [shard_dirs["ttt-a"]], tracking_uri, steps=5)
    # Same game, same network: accepted. Connect 4 weights: refused.
    config = TrainConfig(game="connect4", steps=5, batch_size=8)
    with pytest.raises(TrainingError, match="is for tictactoe, not connect4"):
        train(
            config,
            [str(shard_dirs["c4"])],
            checkpoint_dir=str(tmp_path / "c"),
            tracking_uri=tracking_uri,
            init_checkpoint=first.checkpoint,
        )


def _checkpoint_without(location, key: str, directory) -> str:
    """The checkpoint at `location` saved again under `directory` without `key`, as
    checkpoints written before that entry existed look."""
    saved = checkpoints.load(str(location))
    del saved[key]
    checkpoints.save(str(directory), saved)
    return checkpoints.checkpoint_location(str(directory))


def _adam_steps(location) -> set[int]:
    state = checkpoints.load(str(location))["optimizer"]["state"]
    return {int(values["step"]) for values in state.values()}


def test_initial_weights_bring_their_optimizer_state(embedded_env, shard_dirs, tmp_path):
    tracking_uri = f"sqlite:///{tmp_path / 'moments.db'}"
    first = run_training(tmp_path / "a", [shard_dirs["ttt-a"]], tracking_uri, steps=5)
    second = run_training(
        tmp_path / "b",
        [shard_dirs["ttt-a"]],
        tracking_uri,
        steps=3,
        init_checkpoint=first.checkpoint,
    )
    # AdamW's per-weight statistics go on from where the first run left them.
    assert _adam_steps(first.checkpoint) == {5} and _adam_steps(second.checkpoint) == {8}
    client = use_tracking(tracking_uri)
    assert client.get_run(first.run_id).data.tags["optimizer_state"] == "fresh"
    assert client.get_run(second.run_id).data.tags["optimizer_state"] == "carried"

    # Weights saved without optimizer state (older checkpoints): a fresh optimizer.
    third = run_training(
        tmp_path / "c",
        [shard_dirs["ttt-a"]],
        tracking_uri,
        steps=3,
        init_checkpoint=_checkpoint_without(first.checkpoint, "optimizer", tmp_path / "w"),
    )
    assert _adam_steps(third.checkpoint) == {3}
    assert client.get_run(third.run_id).data.tags["optimizer_state"] == "fresh"

    # A state whose moments have other shapes is refused before any step.
    broken = checkpoints.load(first.checkpoint)
    moments = broken["optimizer"]["state"][0]
    moments["exp_avg"] = torch.zeros(3, 3)
    checkpoints.save(str(tmp_path / "x"), broken)
    with pytest.raises(TrainingError, match="optimizer state does not fit parameter 0"):
        run_training(
            tmp_path / "d",
            [shard_dirs["ttt-a"]],
            tracking_uri,
            steps=3,
            init_checkpoint=checkpoints.checkpoint_location(str(tmp_path / "x")),
        )


def test_the_starting_network_is_measured_on_seen_and_unseen_positions(
    embedded_env, shard_dirs, tmp_path
):
    tracking_uri = f"sqlite:///{tmp_path / 'heldout.db'}"
    client = use_tracking(tracking_uri)
    # Long enough on one small shard to memorise its outcomes.
    first = run_training(
        tmp_path / "a",
        [shard_dirs["ttt-a"]],
        tracking_uri,
        steps=300,
        learning_rate=1e-2,
        augment=False,
    )
    assert "seen_value_loss" not in client.get_run(first.run_id).data.metrics
    second = run_training(
        tmp_path / "b",
        [shard_dirs["ttt-a"], shard_dirs["ttt-b"]],
        tracking_uri,
        steps=2,
        init_checkpoint=first.checkpoint,
    )
    metrics = client.get_run(second.run_id).data.metrics
    # Logged before the first step: the first run's network on its own shard (seen)
    # and on the shard it never trained on (unseen).
    history = client.get_metric_history(second.run_id, "unseen_value_loss")
    assert [m.step for m in history] == [0]
    assert metrics["seen_value_loss"] < 0.7 * metrics["unseen_value_loss"]
    assert metrics["seen_policy_loss"] < metrics["unseen_policy_loss"]
    sizes = [len(read_shard(shard_dirs[name])) for name in ("ttt-a", "ttt-b")]
    assert (metrics["seen_positions"], metrics["unseen_positions"]) == tuple(sizes)
    assert metrics["samples_per_unseen_position"] == pytest.approx(2 * 32 / sizes[1])

    # The same numbers from the first run's final weights, computed directly.
    game = load("tictactoe")
    network = build_network(game, default_network_config(game))
    network.load_state_dict(checkpoints.load(first.checkpoint)["model"])
    evaluator = TorchEvaluator(game, network.eval())
    for part, name in (("seen", "ttt-a"), ("unseen", "ttt-b")):
        shard = read_shard(shard_dirs[name])
        logits, values = evaluator.evaluate(shard.planes.astype(np.float32))
        log_policy = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        policy_loss = -(shard.policy * log_policy).sum(1).mean()
        value_loss = ((values.reshape(-1) - shard.outcome) ** 2).mean()
        assert metrics[f"{part}_policy_loss"] == pytest.approx(policy_loss, rel=1e-3)
        assert metrics[f"{part}_value_loss"] == pytest.approx(value_loss, rel=1e-3)

    # Every shard seen: only the seen part. Older checkpoints without the list: neither.
    third = run_training(
        tmp_path / "c",
        [shard_dirs["ttt-a"]],
        tracking_uri,
        steps=2,
        init_checkpoint=first.checkpoint,
    )
    logged = client.get_run(third.run_id).data.metrics
    assert "seen_value_loss" in logged and "unseen_value_loss" not in logged
    assert logged["unseen_positions"] == 0 and "samples_per_unseen_position" not in logged
    fourth = run_training(
        tmp_path / "d",
        [shard_dirs["ttt-b"]],
        tracking_uri,
        steps=2,
        init_checkpoint=_checkpoint_without(first.checkpoint, "shards", tmp_path / "w"),
    )
    assert not {"seen_value_loss", "unseen_value_loss"} & set(
        client.get_run(fourth.run_id).data.metrics
    )


def test_training_continues_from_the_newest_model_or_the_champion(
    embedded_env, shard_dirs, tmp_path, monkeypatch
):
    from cartridge.loop import train_step
    from cartridge.names import version_uri
    from cartridge.settings import Endpoints, TrainingSettings

    tracking_uri = f"sqlite:///{tmp_path / 'lineage.db'}"
    replay_root = tmp_path / "replay"
    shutil.copytree(shard_dirs["ttt-a"], replay_root / "tictactoe" / "run" / "iter-1" / "shard-0")
    endpoints = Endpoints(
        mlflow_tracking_uri=tracking_uri,
        s3_endpoint="",
        replay_root=str(replay_root),
        checkpoint_root=str(tmp_path / "checkpoints"),
    )

    def step(iteration, champion, train_from="latest"):
        uri = train_step(
            "tictactoe",
            iteration,
            version_uri("tictactoe", champion),
            settings=TrainingSettings(
                replay_window=1, train_steps=3, batch_size=16, train_from=train_from
            ),
            endpoints=endpoints,
            pipeline_run_id="run",
            parent_run_id="",
            seed=0,
        )
        version = client.get_model_version("cartridge-tictactoe", uri.rsplit("/", 1)[-1])
        return version.version, client.get_run(version.tags["run_id"]).data.tags

    client = use_tracking(tracking_uri)
    first, tags = step(1, None)
    assert tags["initial_weights"] == ""  # nothing trained yet: fresh weights
    assert tags["optimizer_state"] == "fresh"
    client.set_registered_model_alias("cartridge-tictactoe", "champion", first)
    second, tags = step(2, first)
    assert tags["initial_weights"] == f"models:/cartridge-tictactoe/{first}"
    assert tags["optimizer_state"] == "carried"  # the logged checkpoint holds it
    # The second was not promoted; training goes on from it all the same.
    third, tags = step(3, first)
    assert tags["initial_weights"] == f"models:/cartridge-tictactoe/{second}"
    _, tags = step(4, first, train_from="champion")
    assert tags["initial_weights"] == f"models:/cartridge-tictactoe/{first}"
    version = client.get_model_version("cartridge-tictactoe", third)
    assert version.tags["initial_weights"] == f"models:/cartridge-tictactoe/{second}"
    # The settings refuse a bad choice before any step can run with it.
    with pytest.raises(ValueError, match="Input should be 'latest' or 'champion'"):
        step(5, first, train_from="newest")


# ---------------------------------------------------------------- kill and resume


def _train_command(home, shard, checkpoint_dir, steps):
    return [
        CLI,
        "train",
        "--game",
        "tictactoe",
        "--shard",
        str(shard),
        "--steps",
        str(steps),
        "--batch-size",
        "64",
        "--checkpoint-every",
        "25",
        "--checkpoint-dir",
        str(checkpoint_dir),
        "--home",
        str(home),
        "--seed",
        "5",
        "--quiet",
        "--no-register",
    ]


def _env(home):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
    return env


STEPS = 1500


@pytest.fixture(scope="module")
def uninterrupted(shard_dirs, tmp_path_factory):
    home = tmp_path_factory.mktemp("reference")
    subprocess.run(
        _train_command(home, shard_dirs["ttt-a"], home / "ckpt", STEPS),
        env=_env(home),
        check=True,
        capture_output=True,
    )
    return checkpoints.load(str(home / "ckpt" / "latest.pt"))


def _wait_for_checkpoint(process, location, timeout=120):
    deadline = time.monotonic() + timeout
    while not checkpoints.exists(location):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_resume_after_a_kill_matches_an_uninterrupted_run(
    kill, shard_dirs, tmp_path, uninterrupted, stack_env
):
    home = tmp_path
    env = _env(home)
    if kill == signal.SIGTERM:
        # Spot preemption, with checkpoints on S3 as in the cluster.
        env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
        checkpoint_dir = f"s3://{stack_env.bucket}/checkpoints/resume-{time.time_ns()}"
    else:
        checkpoint_dir = str(home / "ckpt")
    command = _train_command(home, shard_dirs["ttt-a"], checkpoint_dir, STEPS)
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_checkpoint(process, checkpoint_dir)
        process.send_signal(kill)
        code = process.wait(timeout=120)
    finally:
        process.kill()
    assert code == (143 if kill == signal.SIGTERM else -signal.SIGKILL)
    interrupted_at = checkpoints.load(checkpoints.checkpoint_location(checkpoint_dir))["step"]
    assert 0 < interrupted_at < STEPS

    subprocess.run(
        [
            CLI,
            "train",
            "--resume",
            "--checkpoint-dir",
            checkpoint_dir,
            "--home",
            str(home),
            "--quiet",
            "--no-register",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    resumed = checkpoints.load(checkpoints.checkpoint_location(checkpoint_dir))
    assert resumed["step"] == uninterrupted["step"] == STEPS
    assert resumed["run_id"] != uninterrupted["run_id"]
    for name, tensor in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    runs = _runs(env["MLFLOW_TRACKING_URI"])
    assert [r.info.status for r in runs] == ["FINISHED"]  # the same run, finished


def test_onnx_that_disagrees_with_torch_is_refused(onnx_models, shard_dirs):
    from cartridge.networks import build_network
    from cartridge.training.data import load_replay
    from cartridge.training.trainer import verify_onnx

    game = load("tictactoe")
    path, model = onnx_models["tictactoe"]
    data = load_replay([str(shard_dirs["ttt-a"])], "tictactoe")
    assert verify_onnx(model, path, game, data) < 1e-4
    torch.manual_seed(99)
    other = build_network(game)  # different weights, same shapes
    with pytest.raises(TrainingError, match="ONNX export disagrees with torch"):
        verify_onnx(other, path, game, data)


def test_a_version_without_a_checkpoint_is_named_when_training_would_continue_from_it(
    embedded_env, onnx_models, tmp_path
):
    from cartridge.loop import checkpoint_of
    from cartridge.tracking import log_and_register

    client = use_tracking(f"sqlite:///{tmp_path / 'hand.db'}")
    mlflow.set_experiment(experiment_id=ensure_experiment(client, "tictactoe"))
    with mlflow.start_run():
        _, version = log_and_register(client, onnx_models["tictactoe"][0], load("tictactoe"), {})
    with pytest.raises(FileNotFoundError, match=f"v{version} has no training checkpoint"):
        checkpoint_of(client, "tictactoe", version, tmp_path / "download")


def test_runs_are_tagged_with_the_commit_the_code_was_built_from(monkeypatch):
    import subprocess

    from cartridge.training.trainer import git_commit

    # An image has no .git: the commit it was built from arrives as a build argument.
    monkeypatch.setenv("CARTRIDGE_GIT_COMMIT", "0123abc")
    assert git_commit() == "0123abc"
    monkeypatch.delenv("CARTRIDGE_GIT_COMMIT")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()
    assert git_commit() == head


@pytest.mark.timeout(300)
@pytest.mark.parametrize("server", ["s3", "mlflow"])
def test_training_rides_out_a_restart_of_the_store_or_mlflow(
    server, stack_env, shard_dirs, tmp_path
):
    """The object store or MLflow SIGKILLed mid-run and started again 8 s later: the
    checkpoint write and the metric uploads wait for it (with backoff) and the run
    finishes with every step's metrics, nothing lost."""
    import threading

    import psutil

    from cartridge.stack import up
    from cartridge.stack.manager import _load_state

    record = _load_state(stack_env)[server]
    restarted = threading.Event()
    steps = 40

    def restart_later():
        time.sleep(8)
        up(stack_env)
        restarted.set()

    def on_step(step):
        time.sleep(0.2)  # slow enough that the outage spans checkpoints and uploads
        if step == 6:
            members = [psutil.Process(record.pid), *psutil.Process(record.pid).children(True)]
            os.killpg(record.pid, signal.SIGKILL)
            psutil.wait_procs(members, timeout=10)
            threading.Thread(target=restart_later, daemon=True).start()

    config = TrainConfig(
        game="tictactoe", steps=steps, batch_size=16, checkpoint_every=10, log_every=5
    )
    result = train(
        config,
        [str(shard_dirs["ttt-a"])],
        checkpoint_dir=f"s3://{stack_env.bucket}/checkpoints/fault-{server}-{time.time_ns()}",
        tracking_uri=stack_env.mlflow_url,
        on_step=on_step,
    )
    assert restarted.wait(60)
    assert result.steps == steps and result.model_version
    client = use_tracking(stack_env.mlflow_url)
    for key in ("loss", "value_loss"):
        logged = [m.step for m in client.get_metric_history(result.run_id, key)]
        assert sorted(logged) == list(range(1, steps + 1)), (key, logged)
    assert checkpoints.exists(result.checkpoint.rsplit("/", 1)[0])
    assert client.get_run(result.run_id).info.status == "FINISHED"


# --- Reanalysis -------------------------------------------------------------------------

C4_WIN_IN_ONE = """
. . . . . . .
. . . . . . .
. . . . . . .
. . . . . . .
O O O . . . .
X X X . . . .
X to move
"""


def _reanalyser(fraction=0.5, batch_size=4, simulations=64):
    from cartridge.networks import NetworkConfig
    from cartridge.training.reanalyse import Reanalyser

    game = load("connect4")
    torch.manual_seed(0)
    model = build_network(game, NetworkConfig(kind="resnet", blocks=1, channels=8))
    model.train()
    reanalyser = Reanalyser(
        game,
        model,
        torch.device("cpu"),
        fraction=fraction,
        batch_size=batch_size,
        simulations=simulations,
        value_discount=1.0,
    )
    return game, model, reanalyser


def test_reanalysis_replaces_the_targets_of_a_share_of_the_batch():
    game, model, reanalyse = _reanalyser()
    rng = np.random.default_rng(0)
    states = [game.parse_board(C4_WIN_IN_ONE)]
    while len(states) < 4:  # and some positions of random play
        state = game.new_initial_state()
        for _ in range(int(rng.integers(0, 12))):
            state = state.apply(int(rng.choice(state.legal_actions())))
        states.append(state)
    planes = torch.from_numpy(np.stack([s.planes() for s in states]))
    old_policy, old_value = torch.full((4, 7), 1 / 7), torch.full((4,), 0.5)
    policy, value = reanalyse(planes, old_policy, old_value)
    # Two of four rows searched again: the win in one is proven, the other is a search's.
    assert reanalyse.rows == 2
    assert value[0] == 1.0 and policy[0].tolist() == np.eye(7)[3].tolist()
    assert value[1] != 0.5 and -1 <= value[1] <= 1
    assert policy[1].sum().item() == pytest.approx(1.0, abs=1e-5)
    assert (policy[1][~torch.from_numpy(states[1].legal_mask())] == 0).all()
    torch.testing.assert_close(policy[2:], old_policy[2:])
    torch.testing.assert_close(value[2:], old_value[2:])
    torch.testing.assert_close(old_value, torch.full((4,), 0.5))  # the inputs are kept
    assert model.training  # the search borrowed eval mode and gave it back
    again_policy, again_value = _reanalyser()[2](planes, old_policy, old_value)
    torch.testing.assert_close(again_policy, policy)
    torch.testing.assert_close(again_value, value)


def test_reanalysis_refuses_planes_it_cannot_search():
    game, _, reanalyse = _reanalyser()
    finished = game.parse_board(C4_WIN_IN_ONE).apply(3)
    with pytest.raises(ValueError, match="finished game"):
        reanalyse.targets(np.stack([finished.planes()] * 2))
    with pytest.raises(ValueError, match="do not show connect4"):
        reanalyse.targets(np.zeros((2, 2, 3, 3), np.float32))
    _, _, off = _reanalyser(fraction=0.0)
    policy, value = torch.rand(4, 7), torch.rand(4)
    assert off(torch.zeros(4, 2, 6, 7), policy, value) == (policy, value)


def test_reanalysis_in_training_is_reproducible_from_the_seed(embedded_env, shard_dirs, tmp_path):
    embedded_env.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{embedded_env / 'mlflow.db'}"
    weights = {}
    for name, fraction, seed in (("a", 0.25, 1), ("b", 0.25, 1), ("off", 0.0, 1), ("c", 0.25, 2)):
        home = tmp_path / name
        home.mkdir()
        result = run_training(
            home,
            [shard_dirs["ttt-a"]],
            tracking_uri,
            steps=10,
            seed=seed,
            reanalyse_fraction=fraction,
            reanalyse_simulations=16,
        )
        weights[name] = checkpoints.load(result.checkpoint)["model"]
        if fraction:
            history = use_tracking(tracking_uri).get_metric_history(
                result.run_id, "reanalyse_time_share"
            )
            assert history and all(0 < m.value < 1 for m in history)

    def same(x, y):
        return all(torch.equal(weights[x][k], weights[y][k]) for k in weights[x])

    assert same("a", "b")
    assert not same("a", "off")  # the targets did change
    assert not same("a", "c")
