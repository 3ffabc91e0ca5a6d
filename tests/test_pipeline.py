import json
import signal
import subprocess
import sys
import time
from unittest import mock

import pytest
import yaml
from conftest import fresh_registered_model, fresh_served_model
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from typer.testing import CliRunner

from cartridge import storage
from cartridge.cli import app
from cartridge.serving.triton import TritonControl
from cartridge.tracking import ensure_experiment, use_tracking
from kfp_pipelines.runner import compile_pipeline, run_local

runner = CliRunner()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = compile_pipeline(tmp_path_factory.mktemp("yaml"), iterations=2, image="reg/cartridge:1")
    documents = list(yaml.safe_load_all(path.read_text()))
    spec = json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec())
    platform = documents[1] if len(documents) > 1 else {}
    return spec, platform, path.read_text()


def test_compiled_yaml_is_a_pipeline_spec_with_the_cluster_settings(compiled):
    spec, platform, text = compiled
    assert spec.pipeline_info.name == "cartridge-alphazero"
    executors = spec.deployment_spec.fields["executors"].struct_value.fields
    train = [e for name, e in executors.items() if name.startswith("exec-train")]
    assert len(train) == 2  # two unrolled iterations
    resources = json_format.MessageToDict(train[0])["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "1"
    assert resources["resourceMemoryLimit"] == "32Gi"
    selfplay = json_format.MessageToDict(executors["exec-selfplay"])["container"]["resources"]
    assert selfplay["resourceCpuRequest"] == "1"  # one search thread, one onnxruntime thread
    images = {json_format.MessageToDict(e)["container"]["image"] for e in executors.values()}
    assert images == {"reg/cartridge:1"}
    assert "pip install" not in text  # install_kfp_package=False: nothing installed at run time
    # The exit task runs after the loop's group whatever its outcome. (Membership is
    # checked first: indexing a protobuf map creates the entry it looks up.)
    assert set(spec.root.dag.tasks) == {"exit-handler-1", "finish"}
    finish = spec.root.dag.tasks["finish"]
    assert list(finish.dependent_tasks) == ["exit-handler-1"]
    assert finish.trigger_policy.strategy == finish.trigger_policy.ALL_UPSTREAM_TASKS_COMPLETED
    loop_dags = [c for name, c in spec.components.items() if name.startswith("comp-for-loop")]
    assert {c.dag.tasks[t].component_ref.name for c in loop_dags for t in c.dag.tasks} == {
        "comp-selfplay",
        "comp-selfplay-2",
    }
    assert "parallelismLimit: 4" in text
    assert "maxRetryCount: 3" in text and "backoffDuration: 60s" in text
    assert "PipelineTaskFinalStatus" in text or "exit-handler" in text
    kubernetes = json.dumps(platform)
    assert "cloud.google.com/gke-spot" in kubernetes and "cartridge/pool" in kubernetes
    assert "cartridge-s3" in kubernetes  # S3 keys from a secret, not from the YAML


def test_compile_command(tmp_path):
    result = runner.invoke(
        app, ["pipeline", "compile", "--out", str(tmp_path), "--iterations", "1"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cartridge-alphazero.yaml").is_file()


def test_submit_creates_runs_through_kfp_client():
    # No KFP cluster can run here: the client is the one mock in this suite.
    with mock.patch("kfp.Client") as client_class:
        client = client_class.return_value
        client.create_run_from_pipeline_package.return_value.run_id = "run-1"
        result = runner.invoke(
            app,
            [
                "pipeline",
                "submit",
                "--host",
                "http://kfp:8080",
                "--game",
                "connect4",
                "--iterations",
                "2",
                "--full-search-fraction",
                "0.25",
                "--search-value-weight",
                "0.5",
                "--train-from",
                "champion",
                "--gate-solver-z",
                "0.02",
                "--random-opening-plies",
                "8",
                "--td-steps",
                "6",
            ],
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {"run_id": "run-1"}
        client_class.assert_called_once_with(host="http://kfp:8080")
        _, kwargs = client.create_run_from_pipeline_package.call_args
        assert kwargs["arguments"]["game"] == "connect4"
        assert kwargs["arguments"]["shards"] == list(range(8))
        assert kwargs["arguments"]["triton_url"] == "http://triton.cartridge.svc:8000"
        assert kwargs["arguments"]["full_search_fraction"] == 0.25
        assert kwargs["arguments"]["fast_simulations"] == 0
        assert kwargs["arguments"]["search_value_weight"] == 0.5
        assert kwargs["arguments"]["train_from"] == "champion"
        assert kwargs["arguments"]["gate_solver_z"] == 0.02
        assert kwargs["arguments"]["random_opening_plies"] == 8
        assert kwargs["arguments"]["td_steps"] == 6

        client.create_experiment.return_value.experiment_id = "exp-1"
        client.create_recurring_run.return_value.recurring_run_id = "rec-1"
        result = runner.invoke(
            app, ["pipeline", "submit", "--host", "http://kfp:8080", "--cron", "0 0 */6 * * *"]
        )
        assert json.loads(result.stdout) == {"recurring_run_id": "rec-1"}
        _, kwargs = client.create_recurring_run.call_args
        assert kwargs["cron_expression"] == "0 0 */6 * * *" and kwargs["max_concurrency"] == 1


def _arguments(stack, game, **overrides):
    arguments = {
        "game": game,
        "shards": [0, 1],
        "games_per_shard": 24,
        "simulations": 32,
        "train_steps": 60,
        "batch_size": 64,
        "replay_window": 2,
        "arena_games": 16,
        "arena_simulations": 64,
        "mlflow_tracking_uri": stack.mlflow_url,
        "s3_endpoint": stack.s3_url,
        "triton_url": stack.triton_url,
        "replay_root": f"s3://{stack.bucket}/replay",
        "checkpoint_root": f"s3://{stack.bucket}/checkpoints",
    }
    arguments.update(overrides)
    return arguments


def _pipeline_runs(stack, game):
    client = use_tracking(stack.mlflow_url)
    experiment_id = ensure_experiment(client, game)
    return client, client.search_runs([experiment_id], "tags.kind = 'pipeline'")


def test_local_pipeline_run_promotes_a_champion(stack_env, tmp_path):
    fresh_served_model(use_tracking(stack_env.mlflow_url), stack_env, "othello")
    run_local(
        _arguments(
            stack_env,
            "othello",
            games_per_shard=4,
            simulations=8,
            train_steps=20,
            arena_games=8,
            arena_simulations=32,
            gate_threshold=0.01,
            value_discount=0.95,
            full_search_fraction=0.5,
            fast_simulations=3,
            search_value_weight=0.5,
            random_opening_plies=4,
            td_steps=3,
            round_robin_versions=2,
        ),
        iterations=2,
        pipeline_root=tmp_path / "kfp",
    )
    client, runs = _pipeline_runs(stack_env, "othello")
    latest = max(runs, key=lambda r: r.info.start_time)
    assert latest.info.status == "FINISHED"
    children = client.search_runs(
        [latest.info.experiment_id], f"tags.mlflow.parentRunId = '{latest.info.run_id}'"
    )
    assert sorted(r.data.tags["iteration"] for r in children) == ["1", "2"]
    champion = client.get_model_version_by_alias("cartridge-othello", "champion")
    assert champion.tags["arena_games"] == "8" and "gate" in champion.tags
    pipeline_id = latest.data.tags["pipeline_run_id"]
    shards = storage.list_children(f"s3://{stack_env.bucket}/replay/othello/{pipeline_id}")
    assert [s.rsplit("/", 1)[-1] for s in shards] == ["iter-000001", "iter-000002"]
    metadata = storage.download_file(
        f"{shards[-1]}/shard-000/metadata.json", tmp_path / "metadata.json"
    )
    config = json.loads(metadata.read_text())["config"]
    assert config["search"]["value_discount"] == 0.95
    assert (config["full_search_fraction"], config["fast_simulations"]) == (0.5, 3)
    assert (config["search_value_weight"], config["random_opening_plies"]) == (0.5, 4)
    assert config["td_steps"] == 3
    second = next(r for r in children if r.data.tags["iteration"] == "2")
    [window] = client.get_run(second.info.run_id).inputs.dataset_inputs
    source = json.loads(window.dataset.source)["uri"]
    assert source.startswith(f"s3://{stack_env.bucket}/replay/othello")
    first = next(r for r in children if r.data.tags["iteration"] == "1")
    first_version = client.search_model_versions(f"run_id = '{first.info.run_id}'")[0]
    second_version = client.search_model_versions(f"run_id = '{second.info.run_id}'")[0]
    # The second gate's round robin played the pair the gate had not (v2 against v1).
    assert f"round_robin_v{first_version.version}" in second_version.tags
    # Training goes on from the newest model (the default `train_from`).
    assert second.data.tags["initial_weights"] == (
        f"models:/cartridge-othello/{first_version.version}"
    )
    triton = storage.list_keys(f"s3://{stack_env.bucket}/triton/cartridge_othello")
    assert (
        f"s3://{stack_env.bucket}/triton/cartridge_othello/{champion.version}/model.onnx" in triton
    )
    served = TritonControl(stack_env.triton_url).model_state("othello")
    assert (served.version, served.state) == (champion.version, "READY")
    # What the KFP UI shows of each iteration: metrics, a Markdown summary, the model.
    reports = sorted((tmp_path / "kfp").rglob("report*/executor_output.json"))
    assert len(reports) == 2, sorted(str(p) for p in (tmp_path / "kfp").rglob("*"))[:50]
    iterations = set()
    for path in reports:
        artifacts = json.loads(path.read_text())["artifacts"]
        metrics = artifacts["metrics"]["artifacts"][0]["metadata"]
        assert metrics["selfplay_games"] == 8  # two shards of four
        assert metrics["train_loss"] > 0 and metrics["promoted"] in (0, 1)
        assert {"arena_score", "arena_wins", "rating", "rating_low", "rating_high"} <= set(metrics)
        model = artifacts["model"]["artifacts"][0]["metadata"]
        assert model["model_uri"].startswith("models:/cartridge-othello/")
        assert model["triton_model"] == "cartridge_othello" and model["mlflow_run_id"]
        summary = next(path.parent.rglob("summary")).read_text()
        assert "| self-play | 8 games" in summary
        iterations.add(int(summary.split("iteration ", 1)[1].split(":", 1)[0]))
    assert iterations == {1, 2}


def test_a_failing_step_fails_the_run_and_promotes_nothing(stack_env, tmp_path):
    fresh_registered_model(use_tracking(stack_env.mlflow_url), "connect4")
    with pytest.raises(RuntimeError, match="FAILURE"):
        run_local(
            _arguments(
                stack_env, "connect4", replay_root="s3://no-such-bucket-for-cartridge/replay"
            ),
            iterations=1,
            pipeline_root=tmp_path / "kfp",
        )
    client, runs = _pipeline_runs(stack_env, "connect4")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "failure" in runs[0].data.tags
    versions = client.search_model_versions("name='cartridge-connect4'")
    assert not any("champion" in v.aliases for v in versions)


def test_a_stopped_local_run_is_marked_killed_in_mlflow(stack_env, tmp_path):
    """A Ctrl-C or `kill` stops kfp.local before its exit handler runs; the runs it
    leaves must not stay RUNNING in MLflow forever."""
    arguments = _arguments(stack_env, "tictactoe", games_per_shard=4000, simulations=64)
    script = (
        "import json, sys; from pathlib import Path; from kfp_pipelines.runner import run_local; "
        "run_local(json.loads(sys.argv[1]), 1, Path(sys.argv[2]))"
    )
    started = time.time() * 1000
    log = tmp_path / "run.log"
    with log.open("w") as sink:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-c", script, json.dumps(arguments), str(tmp_path / "kfp")],
            # kfp.local sends log records to stdout while its own logging is set up, and
            # to stderr otherwise: where the warning lands depends on when the signal came.
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while not [
            r for r in _pipeline_runs(stack_env, "tictactoe")[1] if r.info.start_time >= started
        ]:
            assert time.monotonic() < deadline and process.poll() is None, log.read_text()
            time.sleep(0.5)
        time.sleep(3)  # into self-play
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        process.kill()
    assert process.returncode != 0
    output = log.read_text()
    assert "marked MLflow run(s)" in output and "KILLED" in output, output[-3000:]
    runs = [r for r in _pipeline_runs(stack_env, "tictactoe")[1] if r.info.start_time >= started]
    assert [r.info.status for r in runs] == ["KILLED"]
    assert runs[0].data.tags["failure"] == "the local pipeline run was stopped"


def test_bad_parameters_fail_the_first_step_before_any_selfplay(stack_env, tmp_path, capfd):
    from cartridge.loop import check_parameters

    before = len(_pipeline_runs(stack_env, "othello")[1])
    replay_root = f"s3://{stack_env.bucket}/replay-bad-parameters"
    with pytest.raises(RuntimeError, match="FAILURE"):
        run_local(
            _arguments(stack_env, "othello", gate_method="coinflip", replay_root=replay_root),
            iterations=1,
            pipeline_root=tmp_path / "kfp",
        )
    logs = capfd.readouterr()
    assert "gate_method: Input should be 'lcb' or 'sprt'" in logs.out + logs.err
    assert len(_pipeline_runs(stack_env, "othello")[1]) == before
    assert storage.list_keys(replay_root) == []
    good = {
        "iterations": 1,
        "games_per_shard": 1,
        "simulations": 1,
        "value_discount": 1.0,
        "full_search_fraction": 1.0,
        "fast_simulations": 0,
        "search_value_weight": 0.0,
        "random_opening_plies": 0,
        "td_steps": 0,
        "train_steps": 1,
        "batch_size": 1,
        "replay_window": 1,
        "train_from": "latest",
        "arena_games": 2,
        "gate_method": "sprt",
        "gate_threshold": 0.5,
        "gate_solver_z": 0.02,
    }
    check_parameters("connect4", good)
    with pytest.raises(ValueError) as bad:
        check_parameters(
            "go",
            {
                **good,
                "value_discount": 0.2,
                "batch_size": 0,
                "extra": 1,
                "search_value_weight": 2,
                "td_steps": -1,
                "train_from": "newest",
            },
        )
    for problem in (
        "game: 'go'",
        "value_discount",
        "batch_size",
        "extra",
        "search_value_weight",
        "td_steps",
        "train_from: Input should be 'latest' or 'champion'",
    ):
        assert problem in str(bad.value)
    with pytest.raises(
        ValueError,
        match="gate_solver_z: the gate's solver check needs an exact solver, which othello",
    ):
        check_parameters("othello", good)
    check_parameters("othello", {**good, "gate_solver_z": 0.0})
    with pytest.raises(ValueError, match=r"fast_simulations \(1\) must be below simulations"):
        check_parameters("connect4", {**good, "full_search_fraction": 0.5})


def test_network_size_applies_to_resnet_games_only(compiled):
    from cartridge.networks import network_for

    assert network_for("tictactoe", 2, 32).kind == "mlp"
    small = network_for("connect4", 2, 32)
    assert (small.kind, small.blocks, small.channels) == ("resnet", 2, 32)
    assert network_for("othello", None, None).blocks == 5
    spec, _, _ = compiled
    parameters = spec.root.input_definitions.parameters
    assert {
        "network_blocks",
        "network_channels",
        "replay_window",
        "gate_threshold",
        "value_discount",
        "full_search_fraction",
        "fast_simulations",
        "td_steps",
    } <= set(parameters)


def test_pipeline_run_prints_progress_and_keeps_kfp_logs_in_a_file(stack_env, isolated_home):
    """`cartridge pipeline run --local` shows what `make demo` shows (training steps and
    losses, the arena's verdict), not kfp.local's hundreds of lines, which go to a file."""
    import os

    # A registry of its own: other tests register versions without a training checkpoint.
    fresh_served_model(use_tracking(stack_env.mlflow_url), stack_env, "othello")
    command = [
        sys.executable, "-m", "cartridge", "pipeline", "run", "--local", "--game", "othello",
        "--iterations", "1", "--shards", "1", "--games-per-shard", "4", "--sims", "8",
        "--train-steps", "40", "--batch-size", "32", "--arena-games", "2", "--arena-sims", "8",
        "--network-blocks", "1", "--network-channels", "8",
    ]  # fmt: skip
    result = subprocess.run(
        command, env=dict(os.environ), capture_output=True, text=True, timeout=600
    )
    shown = result.stdout + result.stderr
    assert result.returncode == 0, shown[-3000:]
    assert "training step 40/40" in shown and "arena v" in shown, shown
    assert len(shown.strip().splitlines()) < 30, shown
    logs = list((isolated_home / "kfp" / "logs").glob("run-*.log"))
    assert len(logs) == 1 and logs[0].name in shown
    full = logs[0].read_text()
    assert len(full.splitlines()) > 100 and "finished with status" in full
