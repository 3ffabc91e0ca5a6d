"""Compile, run locally (kfp.local), or submit (kfp.Client) the AlphaZero pipeline: the
one place that drives KFP itself."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

from kfp import compiler

from kfp_pipelines.alphazero import DEFAULT_IMAGE, build_pipeline

log = logging.getLogger(__name__)
PIPELINE_FILE = "cartridge-alphazero.yaml"


def compile_pipeline(out_dir: str | Path, iterations: int, image: str = DEFAULT_IMAGE) -> Path:
    """Write the pipeline YAML (an IR PipelineSpec) for the KFP UI or `kfp.Client`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / PIPELINE_FILE
    compiler.Compiler().compile(build_pipeline(iterations, image), str(path))
    return path


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
        build_pipeline(iterations)(**arguments)
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


def submit(
    host: str,
    arguments: dict,
    iterations: int,
    image: str,
    experiment: str,
    cron: str | None = None,
    run_name: str | None = None,
) -> dict:
    """Create a run (or, with `cron`, a recurring run) on a KFP cluster."""
    import tempfile

    import kfp

    client = kfp.Client(host=host)
    with tempfile.TemporaryDirectory() as workdir:
        package = compile_pipeline(workdir, iterations, image)
        if cron:
            experiment_id = client.create_experiment(experiment).experiment_id
            job = client.create_recurring_run(
                experiment_id=experiment_id,
                job_name=run_name or "cartridge-alphazero",
                cron_expression=cron,
                pipeline_package_path=str(package),
                params=arguments,
                max_concurrency=1,
            )
            return {"recurring_run_id": job.recurring_run_id}
        run = client.create_run_from_pipeline_package(
            str(package), arguments=arguments, experiment_name=experiment, run_name=run_name
        )
        return {"run_id": run.run_id}
