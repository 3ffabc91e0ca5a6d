"""The web app under play: move latency (p50/p99), status codes and resident memory, the
figures behind docs/RELIABILITY.md's load rows and the web container's memory limits.

Usage: .venv/bin/python benchmarks/web_load.py [--clients 200] [--seconds 60]
       [--level 200] [--honour-retry-after] [--with-training] [--game G] [--json OUT]
Runs against the local stack that `cartridge stack up` started (its web app's PID from
`cartridge stack status`), on every game that has a champion. --with-training runs a
Connect 4 `cartridge train` on the same cores throughout and reports its steps per
second alone and under the load (from its MLflow metrics). Prints one JSON report.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cartridge.benchmarking.web_load import web_under_load  # noqa: E402
from cartridge.stack import StackConfig, client_environment, status  # noqa: E402

CLI = [sys.executable, "-m", "cartridge"]


def _training_step(client, run_id: str) -> int:
    history = client.get_metric_history(run_id, "loss")
    return max((m.step for m in history), default=0)


def _start_training(workdir: Path, env: dict) -> tuple[subprocess.Popen, str]:
    """A long Connect 4 training run on a fresh shard; returns it and its MLflow run."""
    from cartridge.tracking import use_tracking

    shard = workdir / "shard"
    subprocess.run(
        [*CLI, "selfplay", "--game", "connect4", "--games", "32", "--sims", "16",
         "--out", str(shard)],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    client = use_tracking(env["MLFLOW_TRACKING_URI"])
    since = int(time.time() * 1000)
    process = subprocess.Popen(
        [*CLI, "train", "--game", "connect4", "--shard", str(shard), "--steps", "1000000",
         "--checkpoint-dir", str(workdir / "ckpt"), "--no-register"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    experiment = client.get_experiment_by_name("cartridge-connect4")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        experiment = experiment or client.get_experiment_by_name("cartridge-connect4")
        runs = client.search_runs(
            [experiment.experiment_id], f"attributes.start_time >= {since}", max_results=1
        ) if experiment else []  # fmt: skip
        if runs and _training_step(client, runs[0].info.run_id) > 0:
            return process, runs[0].info.run_id
        time.sleep(1)
    process.kill()
    sys.exit("the training run did not start logging within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--level", type=int, default=64)
    parser.add_argument("--honour-retry-after", action="store_true")
    parser.add_argument("--with-training", action="store_true")
    parser.add_argument("--game", action="append", help="Only these games (repeatable).")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    config = StackConfig.from_env()
    web = status(config)["web"]
    if web.pid is None or not web.healthy:
        sys.exit("the local stack's web app is not running: cartridge stack up")
    games = [
        game
        for game in args.game or ("tictactoe", "connect4", "othello")
        if requests.get(f"{web.url}/api/model/{game}", timeout=10).json().get("champion")
    ]
    if not games:
        sys.exit("no game has a champion to play against")
    report: dict = {
        "games": games,
        "clients": args.clients,
        "level": args.level,
        "honour_retry_after": args.honour_retry_after,
    }
    training = None
    with tempfile.TemporaryDirectory(prefix="cartridge-load-") as workdir:
        if args.with_training:
            from cartridge.tracking import use_tracking

            env = {**os.environ, **client_environment(config)}
            training, run_id = _start_training(Path(workdir), env)
            client = use_tracking(env["MLFLOW_TRACKING_URI"])
            alone_seconds = min(30.0, args.seconds / 2)
            first = _training_step(client, run_id)
            time.sleep(alone_seconds)
            before = _training_step(client, run_id)
            report["training_steps_per_second_alone"] = round((before - first) / alone_seconds, 2)
        try:
            result = web_under_load(
                web.url,
                web.pid,
                games,
                clients=args.clients,
                seconds=args.seconds,
                level=args.level,
                honour_retry_after=args.honour_retry_after,
            )
            if training is not None:
                after = _training_step(client, run_id)
                report["training_steps_per_second_under_load"] = round(
                    (after - before) / result.seconds, 2
                )
        finally:
            if training is not None:
                os.killpg(training.pid, signal.SIGKILL)
                training.wait(timeout=30)
    report.update(result.as_dict())
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
