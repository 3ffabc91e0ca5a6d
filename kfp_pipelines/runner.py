"""Compile, run locally (kfp.local), or submit (kfp.Client) the AlphaZero pipeline: the
one place that drives KFP itself."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

from kfp import compiler

from cartridge import __version__
from cartridge.deploy.images import PIPELINE_IMAGE, TRAINING_IMAGE
from kfp_pipelines.alphazero import build_pipeline

log = logging.getLogger(__name__)
PIPELINE_NAME = "cartridge-alphazero"
PIPELINE_FILE = f"{PIPELINE_NAME}.yaml"


def compile_pipeline(
    out_dir: str | Path,
    iterations: int,
    image: str = PIPELINE_IMAGE,
    training_image: str = TRAINING_IMAGE,
    training_gpus: int = 1,
) -> Path:
    """Write the pipeline YAML (an IR PipelineSpec) for the KFP UI or `kfp.Client`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / PIPELINE_FILE
    pipeline = build_pipeline(iterations, image, training_image, training_gpus)
    compiler.Compiler().compile(pipeline, str(path))
    return path


def proto_problems(path: Path) -> list[str]:
    """Parse the IR with the installed pipeline-spec and kfp-kubernetes protos,
    refusing unknown fields, as the KFP server does when a run is created."""
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2

    from cartridge.deploy.contract import CompiledPipeline

    compiled = CompiledPipeline.read(path)
    problems = []
    try:
        json_format.ParseDict(compiled.spec, pipeline_spec_pb2.PipelineSpec())
    except json_format.ParseError as error:
        problems.append(f"PipelineSpec: {str(error).splitlines()[0]}")
    for name, config in sorted(compiled.kubernetes.items()):
        try:
            json_format.ParseDict(config, kubernetes_executor_config_pb2.KubernetesExecutorConfig())
        except json_format.ParseError as error:
            problems.append(f"{name}: {str(error).splitlines()[0]}")
    return problems


def run_local(arguments: dict, iterations: int, pipeline_root: Path) -> None:
    """Run the pipeline here with kfp.local: every component in a subprocess of this
    interpreter (which has the package), parameters as on a cluster."""
    from kfp import local

    from cartridge.loop import abandon_pipeline_runs

    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        raise_on_error=True,
    )
    started_ms = int(time.time() * 1000)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        # No GPU here: training asks for none and runs on the CPU.
        build_pipeline(iterations, training_gpus=0)(**arguments)
    except KeyboardInterrupt:
        closed = abandon_pipeline_runs(
            arguments["game"], arguments["mlflow_tracking_uri"], started_ms
        )
        log.warning("pipeline stopped; marked MLflow run(s) %s KILLED", ", ".join(closed))
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_local_logged(
    arguments: dict, iterations: int, pipeline_root: Path, log_path: Path, report
) -> None:
    """`run_local` with kfp.local's own output (hundreds of lines an iteration, its
    components' included) sent to `log_path`, while `report(console)` is called every
    two seconds with a console on the terminal, for progress worth reading."""
    import os
    import sys
    import threading

    from rich.console import Console

    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    console = Console(file=terminal, highlight=False)
    saved = [os.dup(1), os.dup(2)]
    done = threading.Event()

    def poll() -> None:
        while not done.wait(2.0):
            try:
                report(console)
            except Exception as error:  # progress must never stop the run
                console.print(f"(progress unavailable: {error})")

    with open(log_path, "w") as log:
        # At the descriptor level, so the component subprocesses write there too.
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        poller = threading.Thread(target=poll, name="pipeline-progress", daemon=True)
        poller.start()
        try:
            run_local(arguments, iterations, pipeline_root)
        finally:
            done.set()
            poller.join(timeout=30)
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)
    report(console)
    terminal.close()


def _interrupt(signum, _frame) -> None:
    """SIGTERM (a `kill`, a closing terminal) stops a local run the way Ctrl-C does.
    Ctrl-C reaches the running step's process too (one process group); a SIGTERM sent
    to this process alone is passed on, or kfp.local would wait for the step to end."""
    import psutil

    for step in psutil.Process().children(recursive=True):
        step.terminate()
    raise KeyboardInterrupt(f"signal {signum}")


def version_name(package: Path) -> str:
    """The pipeline version a compiled package is uploaded as: the release, and a hash
    of the package, which names the images by tag or digest. A new release (or new
    images, or another iteration count) is a new version; submitting the same package
    again reuses its version."""
    import hashlib

    return f"{__version__}-{hashlib.sha256(package.read_bytes()).hexdigest()[:12]}"


def upload(client, package: Path) -> tuple[str, str, str]:
    """(pipeline id, version id, version name) of `package` as a version of the named
    pipeline `cartridge-alphazero`, uploading what the server does not have yet."""
    import json

    name = version_name(package)
    pipeline_id = client.get_pipeline_id(PIPELINE_NAME)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(
            str(package),
            pipeline_name=PIPELINE_NAME,
            description="Cartridge AlphaZero: self-play, training, arena and gated promotion.",
        ).pipeline_id
    same_name = json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]}
    )
    found = client.list_pipeline_versions(pipeline_id, filter=same_name).pipeline_versions
    if found:
        return pipeline_id, found[0].pipeline_version_id, name
    version = client.upload_pipeline_version(str(package), name, pipeline_id=pipeline_id)
    return pipeline_id, version.pipeline_version_id, name


def submit(
    host: str,
    arguments: dict,
    iterations: int,
    experiment: str,
    *,
    image: str = PIPELINE_IMAGE,
    training_image: str = TRAINING_IMAGE,
    training_gpus: int = 1,
    cron: str | None = None,
    run_name: str | None = None,
    wait_seconds: int = 0,
) -> dict:
    """Upload the pipeline as a version of the named pipeline, then create a run of
    that version (or, with `cron`, a recurring run: six-field KFP cron, one run at a
    time, no catching up on runs missed while paused or down). With `wait_seconds`,
    wait that long for the run to end and report its state."""
    import tempfile

    import kfp

    from cartridge.schedule import check_cron

    schedule = check_cron(cron) if cron is not None else None
    if schedule and wait_seconds:
        raise ValueError("a recurring run has no end to wait for: drop the wait or the cron")
    client = kfp.Client(host=host)
    with tempfile.TemporaryDirectory() as workdir:
        package = compile_pipeline(workdir, iterations, image, training_image, training_gpus)
        pipeline_id, version_id, version = upload(client, package)
    experiment_id = client.create_experiment(experiment).experiment_id
    placed = {"pipeline_id": pipeline_id, "pipeline_version": version, "version_id": version_id}
    if schedule:
        job = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=run_name or PIPELINE_NAME,
            cron_expression=schedule,
            max_concurrency=1,
            no_catchup=True,
            params=arguments,
            pipeline_id=pipeline_id,
            version_id=version_id,
        )
        return {**placed, "recurring_run_id": job.recurring_run_id}
    run = client.run_pipeline(
        experiment_id,
        run_name or f"{PIPELINE_NAME} {version}",
        params=arguments,
        pipeline_id=pipeline_id,
        version_id=version_id,
    )
    placed["run_id"] = run.run_id
    if wait_seconds:
        try:
            ended = client.wait_for_run_completion(run.run_id, timeout=wait_seconds)
        except TimeoutError:
            raise RuntimeError(
                f"run {run.run_id} still running after {wait_seconds} s (it goes on)"
            ) from None
        placed["state"] = ended.state
    return placed
