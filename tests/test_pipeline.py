import json
import re
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
from cartridge.deploy.images import TRAINING_IMAGE
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
    assert images == {"reg/cartridge:1", TRAINING_IMAGE}  # training on the CUDA image
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


def test_submit_creates_runs_of_a_named_pipeline_version_through_kfp_client():
    # No KFP cluster can run here: the client is the one mock in this suite.
    with mock.patch("kfp.Client") as client_class:
        client = client_class.return_value
        client.get_pipeline_id.return_value = None
        client.upload_pipeline.return_value.pipeline_id = "pipe-1"
        client.list_pipeline_versions.return_value.pipeline_versions = None
        client.upload_pipeline_version.return_value.pipeline_version_id = "ver-1"
        client.create_experiment.return_value.experiment_id = "exp-1"
        client.run_pipeline.return_value.run_id = "run-1"
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
        placed = json.loads(result.stdout)
        version = placed.pop("pipeline_version")
        assert placed == {"pipeline_id": "pipe-1", "version_id": "ver-1", "run_id": "run-1"}
        assert re.fullmatch(r"0\.1\.0-[0-9a-f]{12}", version)
        client_class.assert_called_once_with(host="http://kfp:8080")
        # The KFP UI lists the pipeline by name, each release a version of it.
        assert client.upload_pipeline.call_args.kwargs["pipeline_name"] == "cartridge-alphazero"
        package, name = client.upload_pipeline_version.call_args.args
        assert name == version and client.upload_pipeline_version.call_args.kwargs == {
            "pipeline_id": "pipe-1"
        }
        experiment_id, _ = client.run_pipeline.call_args.args
        kwargs = client.run_pipeline.call_args.kwargs
        assert experiment_id == "exp-1"
        assert (kwargs["pipeline_id"], kwargs["version_id"]) == ("pipe-1", "ver-1")
        arguments = kwargs["params"]
        assert arguments["seed_with_run_id"] is True
        assert arguments["game"] == "connect4"
        assert arguments["shards"] == list(range(8))
        assert arguments["triton_url"] == "http://triton.cartridge.svc:8000"
        assert arguments["full_search_fraction"] == 0.25
        assert arguments["fast_simulations"] == 0
        assert arguments["search_value_weight"] == 0.5
        assert arguments["train_from"] == "champion"
        assert arguments["gate_solver_z"] == 0.02
        assert arguments["random_opening_plies"] == 8
        assert arguments["td_steps"] == 6

        # The same package again is the same version: nothing is uploaded twice.
        client.get_pipeline_id.return_value = "pipe-1"
        existing = mock.Mock(pipeline_version_id="ver-1")
        client.list_pipeline_versions.return_value.pipeline_versions = [existing]
        client.upload_pipeline.reset_mock()
        client.upload_pipeline_version.reset_mock()
        client.create_recurring_run.return_value.recurring_run_id = "rec-1"
        result = runner.invoke(
            app, ["pipeline", "submit", "--host", "http://kfp:8080", "--cron", "0 0 */6 * * *"]
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["recurring_run_id"] == "rec-1"
        assert not client.upload_pipeline.called and not client.upload_pipeline_version.called
        _, kwargs = client.create_recurring_run.call_args
        assert kwargs["cron_expression"] == "0 0 */6 * * *" and kwargs["max_concurrency"] == 1
        assert kwargs["no_catchup"] is True
        assert (kwargs["pipeline_id"], kwargs["version_id"]) == ("pipe-1", "ver-1")


def test_submit_refuses_a_cron_kfp_would_misread_before_contacting_it():
    with mock.patch("kfp.Client") as client_class:
        for cron, reason in (
            ("0 */6 * * *", "KFP's cron has six, seconds first: did you mean '0 0 */6 * * *'?"),
            ("0 0 25 * * *", "hour '25': 25 is outside 0-23"),
            ("@every six hours", "bad duration"),
        ):
            result = runner.invoke(
                app, ["pipeline", "submit", "--host", "http://kfp:8080", "--cron", cron]
            )
            assert result.exit_code == 2, result.output
            assert reason in " ".join(result.output.split()), result.output
        assert not client_class.called


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


class _PushgatewayStandIn:
    """Records what the steps push (PUT /metrics/job/<job>/<label>/<value>...): the
    Pushgateway's API, which no binary here can serve."""

    def __init__(self):
        import http.server
        import threading

        pushes = self.pushes = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                pushes.append((self.path, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def values(self, path: str) -> list[dict[str, float]]:
        from prometheus_client.parser import text_string_to_metric_families

        return [
            {s.name: s.value for f in text_string_to_metric_families(body) for s in f.samples}
            for pushed, body in self.pushes
            if pushed == path
        ]


def test_local_pipeline_run_promotes_a_champion(stack_env, tmp_path):
    """Two iterations on Othello, self-play's network calls on the stack's Triton (the
    first iteration has no champion yet and plays with uniform priors)."""
    fresh_served_model(use_tracking(stack_env.mlflow_url), stack_env, "othello")
    gateway = _PushgatewayStandIn()
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
            selfplay_triton=f"grpc://{stack_env.triton_grpc_url}",
            pushgateway_url=gateway.url,
        ),
        iterations=2,
        pipeline_root=tmp_path / "kfp",
    )
    gateway.server.shutdown()
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
    shard = json.loads(metadata.read_text())
    config = shard["config"]
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
    # Iteration 2 played iteration 1's challenger on Triton if it won its gate (pinned to
    # its version: no model file in the step, so no file checksum in the shard), else
    # uniform priors. An 8-game gate against random can go either way; the Triton pin
    # itself is tested without chance in test_serving. (Triton's request counters
    # cannot tell: they go with the version when a newer one is served.)
    promoted = "promoted_at" in first_version.tags
    uniform = "uniform"
    expected = f"models:/cartridge-othello/{first_version.version}" if promoted else uniform
    assert (shard["model"], shard["model_sha256"]) == (expected, None)
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
    # Prometheus's view (through the Pushgateway): each shard's rate, each iteration.
    group = "/metrics/job/cartridge-pipeline/game/othello"
    for shard in (0, 1):
        pushed = gateway.values(f"{group}/shard/{shard}")
        assert len(pushed) == 2 and all(p["cartridge_selfplay_games"] == 4 for p in pushed)
        assert all(p["cartridge_selfplay_positions_per_second"] > 0 for p in pushed)
    first, second = gateway.values(group)
    assert (first["cartridge_pipeline_iteration"], second["cartridge_pipeline_iteration"]) == (
        1,
        2,
    )
    assert second["cartridge_pipeline_train_loss"] > 0
    assert 0 <= second["cartridge_pipeline_arena_score"] <= 1
    behind = int(second_version.version) - int(champion.version)
    assert second["cartridge_pipeline_iterations_since_promotion"] == behind


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
        "mcts_solver": "true",  # a KFP boolean reaches the step as text
        "root_search": "gumbel",
        "train_steps": 1,
        "reanalyse_fraction": 0.25,
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
                "mcts_solver": "maybe",
                "root_search": "alphazero",
                "reanalyse_fraction": 1.5,
                "reanalyse_simulations": 0,
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
        "mcts_solver: Input should be a valid boolean",
        "root_search: Input should be 'puct' or 'gumbel'",
        "reanalyse_fraction: Input should be less than or equal to 1",
        "reanalyse_simulations",
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


def test_recurring_runs_play_new_games_and_local_runs_repeat_theirs(stack_env, tmp_path):
    """What KFP hands the self-play step for its run id and `seed_with_run_id`: two runs
    with the same seed play different games, unless the run id is left out."""
    from cartridge.loop import selfplay_step
    from cartridge.replay import read_metadata
    from cartridge.settings import Endpoints, SelfPlaySettings

    endpoints = Endpoints(
        mlflow_tracking_uri=stack_env.mlflow_url,
        s3_endpoint=stack_env.s3_url,
        triton_url="",
        replay_root=str(tmp_path / "replay"),
        checkpoint_root=str(tmp_path / "checkpoints"),
    )
    settings = SelfPlaySettings(games=4, simulations=8)

    def play(run_id, seed_with_run_id):
        where = selfplay_step(
            "tictactoe", 1, 0, "", settings=settings, endpoints=endpoints,
            pipeline_run_id=run_id, seed=5, seed_with_run_id=seed_with_run_id,
        )  # fmt: skip
        metadata = read_metadata(where)
        return metadata.seed, {name: info.sha256 for name, info in metadata.arrays.items()}

    first, second = play("run-a", True), play("run-b", True)
    assert first[0] != second[0] and first[1] != second[1]
    assert play("run-c", False) == play("run-d", False)


def test_the_run_id_reaches_the_seeds_in_the_compiled_pipeline(compiled):
    from cartridge.deploy.contract import CompiledPipeline

    pipeline = CompiledPipeline.parse(compiled[2])
    parameters = pipeline.spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["seed_with_run_id"]["defaultValue"] is True
    for component in ("comp-selfplay", "comp-train"):
        tasks = pipeline.tasks_calling(component)
        assert tasks, component
        for task in tasks:
            inputs = task["inputs"]["parameters"]
            assert (
                inputs["pipeline_run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
            )
            assert "seed_with_run_id" in inputs["seed_with_run_id"]["componentInputParameter"]
