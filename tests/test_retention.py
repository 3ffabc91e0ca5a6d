"""Retention (`cartridge gc`) against the real local stack: what is in use stays, the
rest leaves S3, the registry and the Triton repository, also while training and
promotion run."""

import threading
import time

import numpy as np
import pytest
from conftest import fresh_served_model
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from cartridge import storage
from cartridge.games import load
from cartridge.loop import checkpoint_of
from cartridge.networks import network_for
from cartridge.promotion import promote
from cartridge.replay import ReplayShard, ShardMetadata, write_shard
from cartridge.retention import collect, logged_model_id
from cartridge.serving import triton
from cartridge.settings import RetentionSettings
from cartridge.tracking import use_tracking
from cartridge.training import TrainConfig, resolve_window, train

GAME = "othello"
EVERYTHING_OLD = RetentionSettings(
    keep_versions=1, keep_iterations=1, keep_failed_days=1, min_age_minutes=0
)


def _random_shard(folder, seed: int) -> None:
    """A small valid Othello shard (training only needs its shapes right)."""
    game = load(GAME)
    rng = np.random.default_rng(seed)
    count = 32
    legal = rng.random((count, game.num_actions)) < 0.5
    legal[:, 0] = True
    policy = legal / legal.sum(axis=1, keepdims=True)
    metadata = ShardMetadata(
        game=GAME,
        model="uniform",
        simulations=1,
        seed=seed,
        games=1,
        positions=count,
        first_player_wins=1,
        draws=0,
        second_player_wins=0,
        config={},
        package_version="test",
    )
    write_shard(
        folder,
        ReplayShard(
            planes=rng.integers(0, 2, (count, *game.planes_shape), dtype=np.uint8),
            policy=policy.astype(np.float32),
            outcome=rng.choice([-1.0, 1.0], count).astype(np.float32),
            legal_mask=legal,
            metadata=metadata,
        ),
    )


def _play_iteration(root: str, run: str, iteration: int, tmp_path) -> str:
    local = tmp_path / f"shard-{run}-{iteration}"
    _random_shard(local, iteration)
    location = storage.join(root, GAME, run, f"iter-{iteration:06d}", "shard-000")
    storage.upload_dir(local, location)
    time.sleep(1.1)  # LastModified has one-second resolution; iterations are ordered by it
    return location


def _train(stack, shards, checkpoint_dir, pipeline_run_id) -> str:
    config = TrainConfig(
        game=GAME,
        steps=2,
        batch_size=16,
        seed=1,
        network=network_for(GAME, 1, 8),
        device="cpu",
    )
    result = train(
        config,
        shards,
        checkpoint_dir=checkpoint_dir,
        tracking_uri=stack.mlflow_url,
        pipeline_run_id=pipeline_run_id,
    )
    return str(result.model_version)


def _pipeline_run(client, pipeline_run_id: str, status: str, window: int = 2) -> None:
    from cartridge.tracking import ensure_experiment

    run = client.create_run(
        ensure_experiment(client, GAME),
        tags={"kind": "pipeline", "pipeline_run_id": pipeline_run_id, "game": GAME},
    )
    client.log_param(run.info.run_id, "replay_window", str(window))
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)


def _forget_pipeline_runs(client) -> None:
    """The replay window kept is the largest any of the game's pipeline runs asked for:
    the session's other tests' runs are deleted so that this test's runs decide it."""
    experiment = client.get_experiment_by_name(f"cartridge-{GAME}")
    if experiment is not None:
        for run in client.search_runs([experiment.experiment_id], "tags.kind = 'pipeline'"):
            client.delete_run(run.info.run_id)


@pytest.fixture
def stores(stack_env):
    """An MLflow client on an Othello registry of its own (no versions, no pipeline
    runs), and fresh replay and checkpoint roots."""
    client = use_tracking(stack_env.mlflow_url)
    fresh_served_model(client, stack_env, GAME)
    _forget_pipeline_runs(client)
    base = f"s3://{stack_env.bucket}/gc-{time.time_ns()}"
    return client, base, f"{base}/replay", f"{base}/checkpoints"


def _artifacts_left(location: str) -> list:
    return get_artifact_repository(location).list_artifacts()


@pytest.mark.timeout(600)
def test_gc_keeps_what_is_in_use_and_deletes_the_rest(stack_env, stores, tmp_path):
    client, base, replay, checkpoints = stores
    repository = f"s3://{stack_env.bucket}/triton"
    runs = {"finished": "FINISHED", "failed": "FAILED", "running": "RUNNING"}
    for pipeline_run_id, status in runs.items():
        _pipeline_run(client, pipeline_run_id, status)
    shards = [_play_iteration(replay, "finished", i, tmp_path) for i in (1, 2, 3)]
    # An interrupted upload: array files, no metadata.
    uncommitted = storage.join(replay, GAME, "finished", "iter-000003", "shard-001")
    storage.upload_file(tmp_path / "shard-finished-3" / "planes.npy", f"{uncommitted}/planes.npy")

    trained_in = ["finished", "finished", "failed", "failed", "running"]
    versions = [
        _train(stack_env, shards[-1:], f"{checkpoints}/{GAME}/{run}/iter-{i:06d}", run)
        for i, run in enumerate(trained_in)
    ]
    for promoted in versions[1:4]:  # v2, v3, v4 each champion in turn
        promote(client, GAME, promoted, repository=repository)
    triton.publish(GAME, versions[0], repository)  # a stray folder the pass must withdraw
    doomed = client.get_model_version(f"cartridge-{GAME}", versions[0])
    doomed_model = client.get_logged_model(logged_model_id(doomed)).artifact_location
    doomed_run = client.get_run(doomed.run_id).info.artifact_uri
    assert _artifacts_left(doomed_model) and _artifacts_left(f"{doomed_run}/checkpoint")

    def plan(policy, dry_run=True):
        report = collect(
            client,
            [GAME],
            policy,
            replay_root=replay,
            checkpoint_root=checkpoints,
            repository=repository,
            dry_run=dry_run,
        )
        assert not report.errors
        return {(d.kind, d.target) for d in report.deletions}

    expected = {
        ("model-version", f"cartridge-{GAME} v{versions[0]}"),
        # The pipeline runs asked for a window of 2: iterations 2 and 3 stay.
        ("replay-iteration", storage.join(replay, GAME, "finished", "iter-000001")),
        ("uncommitted-shard", uncommitted),
        ("checkpoints", f"{checkpoints}/{GAME}/finished"),
    }
    # By default nothing younger than an hour goes: everything here is in progress.
    assert plan(RetentionSettings()) == set()
    before = storage.list_keys(base)
    assert plan(EVERYTHING_OLD) == expected
    assert storage.list_keys(base) == before  # a dry run deletes nothing
    assert plan(EVERYTHING_OLD, dry_run=False) == expected

    numbers = {v.version for v in client.search_model_versions(f"name = 'cartridge-{GAME}'")}
    assert numbers == set(versions[1:])  # ever champion (v2), aliases (v3, v4), newest (v5)
    assert not _artifacts_left(doomed_model)
    assert not _artifacts_left(f"{doomed_run}/checkpoint")
    published = storage.list_children(triton.model_folder(GAME, repository))
    assert [p.rsplit("/", 1)[-1] for p in published] == [versions[3]]
    control = triton.TritonControl(stack_env.triton_url)
    state = control.model_state(GAME)
    control.close()
    assert (state.version, state.state) == (versions[3], "READY")
    assert resolve_window(f"{replay}/{GAME}", 99) == shards[1:]  # whole shards, no partial
    left = {
        key.split("/")[-3] for key in storage.list_keys(f"{checkpoints}/{GAME}") if "/iter-" in key
    }
    assert left == {"failed", "running"}  # a failed run may be retried; a running one resumes
    assert checkpoint_of(client, GAME, versions[4], tmp_path)  # kept versions keep weights
    assert plan(EVERYTHING_OLD, dry_run=False) == set()  # the next pass finds nothing


@pytest.mark.timeout(600)
def test_gc_running_all_the_time_never_deletes_what_training_or_promotion_uses(
    stack_env, stores, tmp_path
):
    client, _, replay, checkpoints = stores
    _pipeline_run(client, "live", "RUNNING", window=1)
    stop, passes, errors = threading.Event(), [], []
    # Everything older than 6 s is fair game. Age is what protects a write in progress
    # (with 0, a pass deletes the array files of a shard whose upload has not reached
    # its metadata yet: seen here); the default is an hour.
    policy = EVERYTHING_OLD.model_copy(update={"min_age_minutes": 0.1})

    def collect_forever():
        while not stop.is_set():
            try:
                report = collect(
                    client,
                    [GAME],
                    policy,
                    replay_root=replay,
                    checkpoint_root=checkpoints,
                )
                errors.extend(report.errors)
                passes.append(report)
            except Exception as error:  # noqa: BLE001 - the assertion below names it
                errors.append(repr(error))

    collector = threading.Thread(target=collect_forever, daemon=True)
    collector.start()
    try:
        for iteration in range(1, 5):
            _play_iteration(replay, "live", iteration, tmp_path)
            window = resolve_window(f"{replay}/{GAME}", 1)
            version = _train(
                stack_env, window, f"{checkpoints}/{GAME}/live/iter-{iteration:06d}", "live"
            )
            if iteration % 2 == 0:  # odd versions are never champion: collectable
                result = promote(client, GAME, version)
                assert result.triton_error is None, result.triton_error
                assert result.champion == version
    finally:
        stop.set()
        collector.join(timeout=120)
    assert not errors, errors
    assert len(passes) >= 3
    deleted = {d.kind for report in passes for d in report.deletions}
    assert {"model-version", "replay-iteration"} <= deleted  # it did collect meanwhile
    # The run is still running: its checkpoints stay; the champion's files are whole.
    assert len(storage.list_children(f"{checkpoints}/{GAME}/live")) == 4
    assert checkpoint_of(client, GAME, version, tmp_path)


def test_gc_command_lists_in_a_dry_run_and_refuses_bad_settings(stack_env):
    import json

    from typer.testing import CliRunner

    from cartridge.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["gc", "--dry-run", "--json", "--game", GAME])
    assert listed.exit_code == 0, listed.output
    report = json.loads(listed.stdout)
    assert report["dry_run"] is True and report["errors"] == []
    assert all(d["game"] == GAME for d in report["deletions"])
    for option, value in (("--keep-versions", "0"), ("--min-age-minutes", "-1")):
        refused = runner.invoke(app, ["gc", option, value])
        assert refused.exit_code == 2 and option in refused.output
        assert "Traceback" not in refused.output
